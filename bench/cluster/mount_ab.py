"""Mount CPU and p50 per touch and per unlink, two or more mounts alternating (src/cluster/README.md,
"Session 11: the mount's CPU around a proposal").

python3 bench/cluster/mount_ab.py N ROUNDS NAME=PID:MOUNTPOINT ...: in each round, each mount in turn
(the order reversed every other round) gets N touches (create + close) then N unlinks in a new
directory; prints p50/p90 and the mount process's CPU (utime + stime of /proc/PID/stat, 10 ms
granularity: use N of 1000 or more) per operation, then the range and median over the rounds.
"""
import os, sys, time, statistics
CLK=os.sysconf("SC_CLK_TCK")
N=int(sys.argv[1]); rounds=int(sys.argv[2])
targets=[]
for a in sys.argv[3:]:
    name,rest=a.split("=",1); pid,mnt=rest.split(":",1); targets.append((name,int(pid),mnt))
def cpu(pid):
    with open(f"/proc/{pid}/stat") as f: x=f.read().rsplit(")",1)[1].split()
    return (int(x[11])+int(x[12]))/CLK
def load(): return open("/proc/loadavg").read().split()[0]
def loop(pid, f, names):
    ts=[]; c0=cpu(pid); w0=time.perf_counter()
    for n in names:
        t=time.perf_counter(); f(n); ts.append((time.perf_counter()-t)*1000)
    c1=cpu(pid); ts.sort()
    return statistics.median(ts), ts[int(len(ts)*0.9)], (c1-c0)*1000/len(names)
res={}
for r in range(rounds):
    order=targets if r%2==0 else list(reversed(targets))
    for name,pid,mnt in order:
        d=os.path.join(mnt,f"ab-{r}-{os.getpid()}"); os.mkdir(d)
        names=[os.path.join(d,f"t{i}") for i in range(N)]
        l0=load()
        t=loop(pid, lambda p: os.close(os.open(p, os.O_CREAT|os.O_WRONLY, 0o644)), names)
        u=loop(pid, os.unlink, names)
        os.rmdir(d)
        print(f"round {r} {name}: touch p50 {t[0]:.2f} p90 {t[1]:.2f} ms, mount CPU {t[2]:.3f} ms/op; unlink p50 {u[0]:.2f} p90 {u[1]:.2f} ms, mount CPU {u[2]:.3f} ms/op; load {l0}->{load()}", flush=True)
        res.setdefault(name,[]).append((t,u))
for name,v in res.items():
    tp=[x[0][0] for x in v]; tc=[x[0][2] for x in v]; up=[x[1][0] for x in v]; uc=[x[1][2] for x in v]
    print(f"{name}: touch p50 {min(tp):.2f}-{max(tp):.2f} (median {statistics.median(tp):.2f}), CPU {min(tc):.3f}-{max(tc):.3f} (median {statistics.median(tc):.3f}); unlink p50 {min(up):.2f}-{max(up):.2f} (median {statistics.median(up):.2f}), CPU {min(uc):.3f}-{max(uc):.3f} (median {statistics.median(uc):.3f}) ms/op")
