"""Where `git add` + `git commit` spend their time on a mount, per FUSE request type and per
metadata command (issue 13; src/cluster/README.md, "git add + commit").

python3 bench/cluster/git_trace.py MNT TRACE [N]: as bench/cluster/git_small_files.py (N files,
default 200, of 200 B-3 KiB in 10 directories, then `git init`, `git add -A`, `git commit`), on a
mount started with `SKYFS_DEBUG=meta,fuse` whose stderr goes to TRACE (`deno run -A
src/cluster/cluster_main.ts --nodes 1`: `<cluster dir>/logs/<node>.err`). The trace lines written
while `git add` and while `git commit` ran are split out, and for each phase it prints per FUSE
opcode: requests, their daemon time (sum and p50), the metadata commands that ran inside them (by
path: read, fast, slow) and the idle time before them; then the phase's metadata commands by path
and by the kinds of keys they wrote, and the watch events the node did not recognise as its own
(each makes the key leave the namespace cache; a directory entry also bumps the kernel's epoch).
"""
import collections, os, random, re, statistics, subprocess, sys, time

mnt, trace = sys.argv[1], sys.argv[2]
n = int(sys.argv[3]) if len(sys.argv) > 3 else 200
d = os.path.join(mnt, f"git-{os.getpid()}-{int(time.time() * 1000)}")
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
    time.sleep(0.3)  # lets the trace of the previous phase reach the file
    start = os.path.getsize(trace)
    t = time.perf_counter()
    subprocess.run(["git", *cmd], cwd=d, env=env, check=True)
    took = time.perf_counter() - t
    time.sleep(0.3)
    return took, start, os.path.getsize(trace)


init = timed("init", "-q")
add = timed("add", "-A")
commit = timed("commit", "-q", "-m", "small files")
print(f"git: init {init[0]:.2f} add {add[0]:.2f} commit {commit[0]:.2f} "
      f"total {add[0] + commit[0]:.2f}")

fuse_re = re.compile(r"skyfs: fuse @([0-9.]+) (\S+) node (\d+) ([0-9.]+) ms(.*), idle before ([0-9.]+) ms")
watch_re = re.compile(r"skyfs: watch @([0-9.]+) (other (\S{4})|epoch)")
meta_re = re.compile(r"skyfs: meta @([0-9.]+) (fast|slow|read)( \(refused\))? ([0-9.]+) ms: ([^;]*)")


def what(parts):
    # The kinds of keys a command writes: "put fs/I..." style items, tag letter after the prefix.
    written = [p for p in parts.split(", ") if p.startswith(("put ", "delete ", "merge "))]
    if not written:
        return "read-only"
    kinds = []
    for p in written:
        verb, key = p.split(" ", 1)
        kinds.append(f"{verb} {key[:4]}")
    return "+".join(sorted(set(kinds)))


def phase(name, start, end):
    with open(trace, "rb") as f:
        f.seek(start)
        text = f.read(end - start).decode(errors="replace")
    fuse, meta, watch = [], [], collections.Counter()
    for line in text.splitlines():
        m = watch_re.search(line)
        if m:
            watch[m.group(3) or "epoch"] += 1
            continue
        m = fuse_re.search(line)
        if m:
            fuse.append((float(m.group(1)), m.group(2), float(m.group(4)), bool(m.group(5)),
                         float(m.group(6))))
            continue
        m = meta_re.search(line)
        if m:
            meta.append((float(m.group(1)), m.group(2), float(m.group(4)), what(m.group(5))))
    print(f"{name}: {len(fuse)} FUSE requests, {len(meta)} metadata commands")
    rows = collections.defaultdict(list)
    for at, op, dur, failed, idle in fuse:
        inside = [m for m in meta if at - dur - 0.001 <= m[0] <= at + 0.001]
        rows[op].append((dur, idle, failed, collections.Counter(m[1] for m in inside)))
    total_daemon = sum(r[0] for rs in rows.values() for r in rs)
    total_idle = sum(r[1] for rs in rows.values() for r in rs)
    print(f"  daemon {total_daemon:.0f} ms, idle between requests {total_idle:.0f} ms")
    for op, rs in sorted(rows.items(), key=lambda kv: -sum(r[0] for r in kv[1])):
        metas = collections.Counter()
        for r in rs:
            metas.update(r[3])
        errors = sum(1 for r in rs if r[2])
        print(f"  {op:12s} {len(rs):5d} ({errors:4d} err)  daemon sum {sum(r[0] for r in rs):7.0f} ms"
              f" p50 {statistics.median(r[0] for r in rs):6.3f}  idle sum {sum(r[1] for r in rs):6.0f}"
              f"  meta {dict(metas)}")
    by_path = collections.defaultdict(list)
    for m in meta:
        by_path[m[1]].append(m[2])
    for path, ms in sorted(by_path.items()):
        print(f"  meta {path:5s} {len(ms):5d}  sum {sum(ms):7.0f} ms  p50 {statistics.median(ms):6.3f}")
    print(f"  watch events not recognised as own, by key kind, and epoch bumps: {dict(watch)}")
    by_what = collections.Counter(m[3] for m in meta)
    for w, c in by_what.most_common(12):
        print(f"    {c:5d}  {w}")


phase("add", add[1], add[2])
phase("commit", commit[1], commit[2])
