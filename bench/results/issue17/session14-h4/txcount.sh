#!/bin/bash
# usage: txcount.sh CHECKOUT PORT N : transactions per unlink (stat'ed, closed files) through a mount
set -e
CO=$1; PORT=$2; N=${3:-1000}
W=/tmp/h4tx-$PORT; rm -rf $W; mkdir -p $W/mnt $W/data
source /tmp/env.sh
(cd $CO && exec deno run -A --quiet mod.ts mount $W/mnt --data $W/data --http 127.0.0.1:$PORT --transport dev) > $W/log 2>&1 &
PID=$!
for i in $(seq 100); do grep -q " $W/mnt " /proc/self/mountinfo && break; sleep 0.1; done
python3 - "$W/mnt" "$N" "$PORT" <<'PY'
import os,sys,urllib.request,time
mnt,n,port=sys.argv[1],int(sys.argv[2]),sys.argv[3]
def tx():
    t=urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
    return {l.split()[0]:float(l.split()[1]) for l in t.splitlines() if l.startswith("skyfs_meta_transactions_total") or l.startswith("skyfs_fuse_requests_total")}
d=os.path.join(mnt,"d"); os.mkdir(d)
for i in range(n):
    with open(f"{d}/f{i}","wb") as f: f.write(b"x"*1024)
for i in range(n): os.stat(f"{d}/f{i}")
time.sleep(1.5)
a=tx()
for i in range(n): os.unlink(f"{d}/f{i}")
time.sleep(0.5)
b=tx()
for k in sorted(b):
    dv=b[k]-a.get(k,0)
    if dv: print(f"{k} {dv/n:.2f}/unlink")
PY
kill -TERM $PID; wait $PID || true
