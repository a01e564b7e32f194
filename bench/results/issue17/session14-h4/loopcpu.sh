#!/bin/bash
# usage: loopcpu.sh CHECKOUT TAG N OPS : daemon CPU per op (schedstat of all threads) for
# create(+1KiB), stat, rename, unlink loops on a fresh mount (one python client)
set -e
CO=$1; TAG=$2; N=${3:-2000}
W=/tmp/h4loop-$TAG; rm -rf $W; mkdir -p $W/mnt $W/data
source /tmp/env.sh
(cd $CO && exec deno run -A --quiet mod.ts mount $W/mnt --data $W/data --http off --transport ${TRANSPORT:-dev}) > $W/log 2>&1 &
PID=$!
for i in $(seq 200); do grep -q " $W/mnt " /proc/self/mountinfo && break; sleep 0.1; done
python3 - "$W/mnt" "$N" "$PID" "$TAG" <<'PY'
import os,sys,time,json
mnt,n,pid,tag=sys.argv[1],int(sys.argv[2]),sys.argv[3],sys.argv[4]
def cpu():
    t=0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try: t+=int(open(f"/proc/{pid}/task/{tid}/schedstat").read().split()[0])
        except FileNotFoundError: pass
    return t
d=os.path.join(mnt,"d"); os.mkdir(d)
data=b"x"*1024
def create():
    for i in range(n):
        fd=os.open(f"{d}/f{i}",os.O_CREAT|os.O_WRONLY|os.O_EXCL,0o644); os.write(fd,data); os.close(fd)
def stat():
    for i in range(n): os.stat(f"{d}/f{i}")
def rename():
    for i in range(n): os.rename(f"{d}/f{i}",f"{d}/g{i}")
def unlink():
    for i in range(n): os.unlink(f"{d}/g{i}")
out={"tag":tag}
for name,fn in (("create",create),("stat",stat),("rename",rename),("unlink",unlink)):
    time.sleep(0.3); c0=cpu(); t0=time.monotonic(); fn(); el=time.monotonic()-t0; time.sleep(0.3); c1=cpu()
    out[name]=round((c1-c0)/1000/n,1); out[name+"_rate"]=round(n/el)
out["load"]=float(open("/proc/loadavg").read().split()[0])
print(json.dumps(out))
PY
kill -TERM $PID; wait $PID || true
rm -rf $W
