#!/bin/bash
CO=$1; TAG=$2; B=/tmp/h7p/ab-$TAG; rm -rf $B; mkdir -p $B/mnt $B/data
source /tmp/env.sh
cd $CO && deno run -A --quiet mod.ts mount $B/mnt --data $B/data --http off > $B/log 2>&1 &
for i in $(seq 100); do mountpoint -q $B/mnt && break; sleep 0.2; done
PID=$(pgrep -f "mod.ts mount $B/mnt" | head -1)
python3 - $B/mnt $PID $TAG <<'PY'
import os,sys,time
m,pid,tag=sys.argv[1],int(sys.argv[2]),sys.argv[3]
def cpu():
    t=0
    for tid in os.listdir(f'/proc/{pid}/task'):
        try: t+=int(open(f'/proc/{pid}/task/{tid}/schedstat').read().split()[0])
        except: pass
    return t/1e3
os.mkdir(m+'/d'); N=3000
for i in range(N):
    with open(f'{m}/d/f{i}','wb') as f: f.write(b'x'*1024)
time.sleep(0.3); c=cpu()
for i in range(N): os.rename(f'{m}/d/f{i}', f'{m}/d/g{i}')
time.sleep(0.2); r=(cpu()-c)/N; c=cpu()
for i in range(N): os.unlink(f'{m}/d/g{i}')
time.sleep(0.2); u=(cpu()-c)/N
print(f"{tag} rename {r:.0f} unlink {u:.0f} us/op load {open('/proc/loadavg').read().split()[0]}", flush=True)
PY
fusermount3 -u $B/mnt; sleep 1; pgrep -f "mod.ts mount $B/mnt" && echo STILL
