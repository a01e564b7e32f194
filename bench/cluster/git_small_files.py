"""git add + commit of many small files on a mount (issue 13: small files in cluster mode).

python3 bench/cluster/git_small_files.py DIR [N]: in a new directory under DIR, writes N (200)
files of 200 B to 3 KiB in 10 subdirectories (not timed), then times `git init -q`,
`git add -A` and `git commit -q` in it. Prints one line: `git: init S add S commit S total S`
(seconds; total = add + commit).
"""
import os, random, subprocess, sys, time

base = sys.argv[1]
n = int(sys.argv[2]) if len(sys.argv) > 2 else 200
d = os.path.join(base, f"git-{os.getpid()}-{int(time.time() * 1000)}")
os.mkdir(d)
rng = random.Random(13)
for i in range(n):
    sub = os.path.join(d, f"dir{i % 10}")
    os.makedirs(sub, exist_ok=True)
    with open(os.path.join(sub, f"file{i}.txt"), "wb") as f:
        f.write(bytes(rng.getrandbits(8) for _ in range(rng.randint(200, 3072))))
env = dict(os.environ, GIT_AUTHOR_NAME="b", GIT_AUTHOR_EMAIL="b@x", GIT_COMMITTER_NAME="b",
           GIT_COMMITTER_EMAIL="b@x", GIT_CONFIG_NOSYSTEM="1", HOME=d)
def timed(*cmd):
    t = time.perf_counter()
    subprocess.run(["git", *cmd], cwd=d, env=env, check=True)
    return time.perf_counter() - t
init = timed("init", "-q")
add = timed("add", "-A")
commit = timed("commit", "-q", "-m", "small files")
print(f"git: init {init:.2f} add {add:.2f} commit {commit:.2f} total {add + commit:.2f}")
