#!/bin/bash
CO=$1; PORT=$2; N=${3:-1000}
W=/tmp/h4tx-$PORT; rm -rf $W; mkdir -p $W/mnt $W/data
source /tmp/env.sh
(cd $CO && exec deno run -A --quiet mod.ts mount $W/mnt --data $W/data --http 127.0.0.1:$PORT --transport dev) > $W/log 2>&1 &
PID=$!
for i in $(seq 100); do grep -q " $W/mnt " /proc/self/mountinfo && break; sleep 0.1; done
python3 - "$W/mnt" "$N" "$PORT" "$PID" <<'PY'
import os,sys,urllib.request,time
mnt,n,port,pid=sys.argv[1],int(sys.argv[2]),sys.argv[3],sys.argv[4]
def cpu():
    t=0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try: t+=int(open(f"/proc/{pid}/task/{tid}/schedstat").read().split()[0])
        except FileNotFoundError: pass
    return t
def tx():
    t=urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
    return {l.split()[0]:float(l.split()[1]) for l in t.splitlines() if l.startswith("skyfs_meta_transactions_total") or l.startswith("skyfs_fuse_requests_total")}
for j in range(16): os.mkdir(f"{mnt}/d{j}")
for i in range(n):
    with open(f"{mnt}/d{i%16}/f{i}","wb") as f: f.write(b"x"*1024)
for i in range(n): os.stat(f"{mnt}/d{i%16}/f{i}")
time.sleep(1.5)
a=tx(); c0=cpu()
for i in range(n): os.rename(f"{mnt}/d{i%16}/f{i}", f"{mnt}/d{(i+1)%16}/r{i}")
time.sleep(0.3)
b=tx(); c1=cpu()
print("cpu us/op", round((c1-c0)/1000/n,1))
for k in sorted(b):
    dv=b[k]-a.get(k,0)
    if dv: print(f"{k.split('{')[0]}{k.split(',')[0].split('{')[1] if 'op=' in k else ''} {dv/n:.2f}/rename")
PY
kill -TERM $PID; wait $PID || true
rm -rf $W
