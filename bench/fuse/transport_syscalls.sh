#!/usr/bin/env bash
# Syscalls of the skyfs daemon per FUSE request, for one transport (src/fuse/README.md,
# "Transport figures"): mounts skyfs with --transport T, attaches `strace -c -f` to the daemon,
# runs bench/meta/meta_worker.c (create, stat, open+close, readdir, rename, unlink of FILES files
# with W threads), and divides strace's counts by the requests the daemon counted (SKYFS_DEBUG).
#
# Usage (root): bench/fuse/transport_syscalls.sh dev|uring [FILES] [W]
set -euo pipefail
transport=$1; files=${2:-2000}; workers=${3:-1}
repo="$(cd "$(dirname "$0")/../.." && pwd)"
base="$(mktemp -d /var/tmp/skyfs-syscalls-XXXXXX)"
mkdir -p "$base/mnt" "$base/data"
gcc -O2 -pthread -o "$base/meta_worker" "$repo/bench/meta/meta_worker.c"
cd "$repo"
SKYFS_DEBUG=1 deno run -A mod.ts mount "$base/mnt" --data "$base/data" --http off \
  --transport "$transport" >"$base/log" 2>&1 &
daemon=$!
for _ in $(seq 300); do grep -q " $base/mnt " /proc/self/mountinfo && break; sleep 0.1; done
ls "$base/mnt" >/dev/null
strace -c -f -p "$daemon" -o "$base/strace.txt" &
tracer=$!
sleep 1
"$base/meta_worker" "$base/mnt" "$files" "$workers" flat --size 1024 >"$base/worker.txt"
kill -USR2 "$daemon" # the request counts so far
sleep 0.5
kill -INT "$tracer"
wait "$tracer" || true
umount "$base/mnt"
wait "$daemon" || true
python3 - "$base/log" "$base/strace.txt" "$transport" <<'PY'
import re, sys
log, trace, transport = sys.argv[1:]
line = next(l for l in open(log) if "skyfs: requests:" in l)
requests = sum(int(n) for n in re.findall(r"[A-Z_0-9]+ (\d+)", line.split(";")[0]))
calls = {}
for row in open(trace):
    p = row.split()
    if len(p) >= 5 and p[3].isdigit() and p[-1] != "total":
        calls[p[-1]] = int(p[3])
parked = re.search(r"parked waits (\d+)", line).group(1)
print(f"transport {transport}: {requests} requests, {sum(calls.values()) / requests:.2f} syscalls "
      f"per request, parked waits {int(parked) / requests:.3f} per request")
for name, n in sorted(calls.items(), key=lambda kv: -kv[1])[:8]:
    print(f"  {name:16} {n / requests:6.2f}")
PY
rm -rf "$base"
