"""The python create/unlink/mkdir loops of src/cluster/README.md ("Cost of a cluster operation").

python3 bench/cluster/meta_loops.py MOUNTPOINT TAG [N]: in a new directory, N (300) of each:
touch, create + 1 KiB + close, open + close, unlink, mkdir; prints p50 and p90 per operation.
"""
import os, sys, time, statistics
base = sys.argv[1]; tag = sys.argv[2]; N = int(sys.argv[3]) if len(sys.argv) > 3 else 300
d = os.path.join(base, f"loop-{tag}-{os.getpid()}")
os.mkdir(d)
def p50(f, names):
    ts = []
    for n in names:
        t = time.perf_counter(); f(n); ts.append((time.perf_counter() - t) * 1000)
    ts.sort()
    return f"{statistics.median(ts):.2f} ms (p90 {ts[int(len(ts)*0.9)]:.2f})"
res = {}
res["touch"] = p50(lambda n: os.close(os.open(os.path.join(d, "t" + n), os.O_CREAT | os.O_WRONLY, 0o644)), [str(i) for i in range(N)])
data = b"x" * 1024
def cw(n):
    fd = os.open(os.path.join(d, "c" + n), os.O_CREAT | os.O_WRONLY, 0o644); os.write(fd, data); os.close(fd)
res["create+1KiB+close"] = p50(cw, [str(i) for i in range(N)])
res["open+close"] = p50(lambda n: os.close(os.open(os.path.join(d, "c" + n), os.O_RDONLY)), [str(i) for i in range(N)])
res["unlink"] = p50(lambda n: os.unlink(os.path.join(d, "t" + n)), [str(i) for i in range(N)])
res["mkdir"] = p50(lambda n: os.mkdir(os.path.join(d, "m" + n)), [str(i) for i in range(N)])
for k, v in res.items(): print(f"{tag}: {k}: {v}")
