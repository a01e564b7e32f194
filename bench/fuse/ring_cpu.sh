#!/usr/bin/env bash
# Daemon CPU per operation of one loop on one mount, with the daemon and the loop pinned (issue 17,
# src/fuse/README.md, "Daemon CPU per request on the ring"): mounts CHECKOUT's skyfs with
# --transport T --cache-seconds 0 --http off under `taskset -c DCPU`, runs N stats (stat_loop.c:
# LOOKUP + 2 GETATTR each) or N open+close (open_close_loop.c) of one file under `taskset -c CCPU`,
# and prints the daemon's CPU (sum of its threads' schedstat run time) per operation.
#
# Usage (root): bench/fuse/ring_cpu.sh CHECKOUT dev|uring stat|open-close N [DCPU] [CCPU]
set -u
co=$1; tr=$2; loop=$3; n=$4; dcpu=${5:-0-1}; ccpu=${6:-0-1}
repo="$(cd "$(dirname "$0")/../.." && pwd)"
w=$(mktemp -d /var/tmp/skyfs-ring-cpu-XXXXXX); mkdir -p "$w/mnt" "$w/data"
case $loop in
  stat) gcc -O2 -o "$w/loop" "$repo/bench/fuse/stat_loop.c" ;;
  open-close) gcc -O2 -o "$w/loop" "$repo/bench/fuse/open_close_loop.c" ;;
  *) echo "loop is stat or open-close" >&2; exit 2 ;;
esac
cd "$co"
taskset -c "$dcpu" env SKYFS_DEBUG=1 deno run -A mod.ts mount "$w/mnt" --data "$w/data" \
  --http off --transport "$tr" --cache-seconds 0 >"$w/log" 2>&1 &
d=$!
for _ in $(seq 300); do grep -q " $w/mnt " /proc/self/mountinfo && break; sleep 0.1; done
echo hello >"$w/mnt/f"
"$w/loop" "$w/mnt/f" 2000 >/dev/null # warm-up
sleep 0.3
cpu() { local t=0 f; for f in /proc/$d/task/*/schedstat; do t=$((t + $(cut -d' ' -f1 "$f"))); done; echo $t; }
c0=$(cpu)
r=$(taskset -c "$ccpu" "$w/loop" "$w/mnt/f" "$n")
sleep 0.2
c1=$(cpu)
echo "$tr $loop daemon-cpu $dcpu loop-cpu $ccpu: $r; daemon CPU $(((c1 - c0) / n / 1000)) us/op;" \
  "load $(cut -d' ' -f1 /proc/loadavg)"
kill -USR2 $d; sleep 0.3
grep "skyfs: requests" "$w/log" | tail -1
fusermount3 -u "$w/mnt"; wait $d; rm -rf "$w"
