"""skyfs-uring / skyfs in bench tables (.md): geometric mean of the rates of the 20 rows create,
stat, open-close, readdir, rename x flat, tree x w1, w4, and of the daemon CPU us/op.
Usage: python3 summary.py TABLE.md..."""
import re, sys, math
def num(t):
    t=t.strip().split(" ")[0]
    m={"k":1e3,"M":1e6}
    return float(t[:-1])*m[t[-1]] if t[-1] in m else float(t)
rows=[f"meta-{f}-{o}-w{w}" for f in ("flat","tree") for o in ("create","stat","open-close","readdir","rename") for w in (1,4)]
for path in sys.argv[1:]:
    rate={}; cpu={}
    for line in open(path):
        c=[x.strip() for x in line.strip().strip("|").split("|")]
        if len(c)>=6 and c[0] in rows and c[1]=="ops/s": rate[c[0]]=(num(c[3]),num(c[4]))
        if len(c)>=7 and c[0] in rows and c[1]!="ops/s" and c[1] and c[1][0].isdigit(): cpu[c[0]]=(float(c[1]),float(c[4]))
    r=[rate[k][1]/rate[k][0] for k in rows]
    g=math.exp(sum(map(math.log,r))/len(r))
    cr=[cpu[k][1]/cpu[k][0] for k in rows if cpu[k][0]>0 and cpu[k][1]>0]
    gc=math.exp(sum(map(math.log,cr))/len(cr))
    tot=sum(cpu[k][1] for k in rows)/sum(cpu[k][0] for k in rows)
    w1=[x for k,x in zip(rows,r) if k.endswith("w1")]; w4=[x for k,x in zip(rows,r) if k.endswith("w4")]
    gm=lambda v: math.exp(sum(map(math.log,v))/len(v))
    load=re.search(r"load average ([\d.]+) at the start, ([\d.]+) at the end", open(path).read())
    print(f"{path.split('/')[-1]}: load {load.group(1)}-{load.group(2)}; uring/dev rate geo {g:.2f}x (w1 {gm(w1):.2f}x, w4 {gm(w4):.2f}x, ahead {sum(x>1 for x in r)}/20); CPU/op geo {gc:.2f}x ({len(cr)} rows), sum-ratio {tot:.2f}x")
