#!/bin/bash
# Daemon CPU per listed name of a first listing, as the bench's readdir phase meets it (root).
# usage: bench/fuse/listing_cpu.sh CHECKOUT [NAMES] [ROUNDS]
# Mounts CHECKOUT (`mod.ts mount --http off`, fresh data directory under /tmp), creates NAMES
# files of 1 KiB in one directory, then ROUNDS times: drop_caches, open+close every file (the
# kernel holds every inode again), list the directory once (python os.listdir: glibc's 32 KiB
# getdents) and print the wall time and the daemon's CPU (all threads, /proc/PID/task/*/schedstat,
# read 0.2 s after the listing) per name. Run it on two checkouts in turn, alternating.
set -e
CHECKOUT=${1:?usage: listing_cpu.sh CHECKOUT [NAMES] [ROUNDS]}
N=${2:-5000}
R=${3:-3}
WORK=$(mktemp -d /tmp/listing-cpu-XXXXXX)
MNT=$WORK/mnt
DATA=$WORK/data
mkdir -p "$MNT" "$DATA"
cd "$CHECKOUT"
deno run -A --quiet mod.ts mount "$MNT" --data "$DATA" --http off >"$WORK/daemon.log" 2>&1 &
PID=$!
for _ in $(seq 600); do grep -q " $MNT " /proc/self/mountinfo && break; sleep 0.1; done
grep -q " $MNT " /proc/self/mountinfo || { echo "listing_cpu: the mount failed: see $WORK/daemon.log" >&2; kill $PID; exit 1; }
python3 - "$MNT" "$N" "$R" "$PID" <<'PY' || true
import os, sys, time
mnt, n, rounds, pid = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
d = os.path.join(mnt, "flat")
os.makedirs(d)
for i in range(n):
    with open(os.path.join(d, f"f{i:07d}"), "wb") as f:
        f.write(b"x" * 1024)
def cpu():
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            total += int(open(f"/proc/{pid}/task/{tid}/schedstat").read().split()[0])
        except OSError:
            pass
    return total
for r in range(rounds):
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")
    time.sleep(0.3)
    for i in range(n):
        os.close(os.open(os.path.join(d, f"f{i:07d}"), os.O_RDONLY))
    time.sleep(0.2)
    c0, t0 = cpu(), time.time()
    names = os.listdir(d)
    t1 = time.time()
    time.sleep(0.2)
    c1 = cpu()
    assert len(names) == n, len(names)
    print(f"round {r}: {n} names, {1e6 * (t1 - t0) / n:.2f} us/name wall, "
          f"daemon CPU {(c1 - c0) / 1e3 / n:.2f} us/name, load {open('/proc/loadavg').read().split()[0]}",
          flush=True)
PY
kill -TERM $PID
wait $PID || true
grep -q " $MNT " /proc/self/mountinfo && umount -l "$MNT"
rm -rf "$WORK"
