"""git add + commit on several mounts, alternating (issue 13; src/cluster/README.md, "git add +
commit of 200 small files").

python3 bench/cluster/git_ab.py ROUNDS N NAME=MOUNTPOINT ...: in each round, each mount in turn (the
order reversed every other round) runs bench/cluster/git_small_files.py with N files; prints each
run's line with the load average, then per mount the range and median of add + commit, and each
mount's median over the first one's.
"""
import os, statistics, subprocess, sys

rounds, n = int(sys.argv[1]), sys.argv[2]
targets = [a.split("=", 1) for a in sys.argv[3:]]
script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "git_small_files.py")
totals = {name: [] for name, _ in targets}
for r in range(rounds):
    order = targets if r % 2 == 0 else list(reversed(targets))
    for name, mnt in order:
        load = open("/proc/loadavg").read().split()[0]
        out = subprocess.run(["python3", script, mnt, n], check=True, capture_output=True,
                             text=True).stdout.strip()
        totals[name].append(float(out.rsplit(" ", 1)[1]))
        print(f"round {r} {name}: {out} (load {load})", flush=True)
first = statistics.median(totals[targets[0][0]])
for name, _ in targets:
    t = totals[name]
    print(f"{name}: add + commit {min(t):.2f}-{max(t):.2f} s (median {statistics.median(t):.2f}), "
          f"{statistics.median(t) / first:.1f}x {targets[0][0]}")
