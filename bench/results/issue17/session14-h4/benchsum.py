"""Summary of bench/main.ts --only meta --targets skyfs,bindfs runs, base (main) against h4."""
import json,glob,statistics,sys
runs={}
# The bench's JSON of each run, named <variant>-<run>.json beside this script.
import os
here=os.path.dirname(os.path.abspath(__file__))
for f in sorted(glob.glob(os.path.join(here,'*-full*.json'))):
    var=os.path.basename(f).split('-')[0]
    m=json.load(open(f))['measurements']
    for r in m:
        cpu=r.get('details',{}).get('daemon_cpu_us_per_op')
        if cpu is None: continue
        key=r['job']; tgt=r['target']
        name = var if tgt=='skyfs' else 'bindfs'
        runs.setdefault(key,{}).setdefault(name,[]).append((cpu,r['value']))
want=sys.argv[1:] or None
print("| job | base CPU us/op | h4 CPU us/op | h4/base | bindfs CPU us/op | h4/bindfs | base ops/s | h4 ops/s | bindfs ops/s |")
print("|---|--:|--:|--:|--:|--:|--:|--:|--:|")
for job,by in runs.items():
    if want and not any(w in job for w in want): continue
    def s(n, i=0, fmt="{:.0f}"):
        v=[x[i] for x in by.get(n,[])]
        if not v: return "—", float('nan')
        med=statistics.median(v)
        return (fmt.format(med)+f" ({fmt.format(min(v))}-{fmt.format(max(v))})"), med
    b,bm=s('base'); h,hm=s('h4'); bf,bfm=s('bindfs')
    br,_=s('base',1); hr,_=s('h4',1); bfr,_=s('bindfs',1)
    print(f"| {job} | {b} | {h} | {hm/bm:.2f}x | {bf} | {hm/bfm:.1f}x | {br.split(' ')[0]} | {hr.split(' ')[0]} | {bfr.split(' ')[0]} |")
