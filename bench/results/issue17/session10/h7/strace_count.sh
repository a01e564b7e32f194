#!/bin/bash
# usage: count.sh CHECKOUT TAG
set -u
CO=$1; TAG=$2; B=/tmp/h7p/c-$TAG; rm -rf $B; mkdir -p $B/mnt $B/data
source /tmp/env.sh
cd $CO && deno run -A --quiet mod.ts mount $B/mnt --data $B/data --http off > $B/log 2>&1 &
for i in $(seq 100); do mountpoint -q $B/mnt && break; sleep 0.2; done
PID=$(pgrep -f "mod.ts mount $B/mnt" | head -1)
python3 - $B/mnt <<'PY'
import os,sys
m=sys.argv[1]; os.mkdir(m+'/d')
for i in range(1000):
    with open(f'{m}/d/f{i}','wb') as f: f.write(b'x'*1024)
PY
sleep 0.5
strace -c -f -p $PID -o $B/strace-rename 2>/dev/null & SP=$!; sleep 1
python3 -c "
import os,sys
m='$B/mnt'
for i in range(1000): os.rename(f'{m}/d/f{i}', f'{m}/d/g{i}')
"
sleep 0.5; kill -INT $SP; wait $SP 2>/dev/null
strace -c -f -p $PID -o $B/strace-unlink 2>/dev/null & SP=$!; sleep 1
python3 -c "
import os
m='$B/mnt'
for i in range(1000): os.unlink(f'{m}/d/g{i}')
"
sleep 0.5; kill -INT $SP; wait $SP 2>/dev/null
fusermount3 -u $B/mnt; sleep 1
pgrep -f "mod.ts mount $B/mnt" && echo "STILL RUNNING"
echo "== $TAG rename"; head -20 $B/strace-rename
echo "== $TAG unlink"; head -20 $B/strace-unlink
