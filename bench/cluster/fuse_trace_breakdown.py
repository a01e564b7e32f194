"""Per FUSE request breakdown of a mount's `SKYFS_DEBUG=meta,fuse` trace (src/cluster/README.md,
"Cost of a cluster operation").

python3 bench/cluster/fuse_trace_breakdown.py TRACE: for the loops of bench/cluster/meta_loops.py
(touch, create + 1 KiB + close, open + close, unlink, mkdir, 300 each by default), split by
phase at the first CREATE, the 2nd 300th CREATE, the first UNLINK and the first MKDIR of the loop
directory; per opcode of each phase: requests per operation, p50 time in the daemon, p50 of it
spent in metadata commands issued during the request (and which kinds), p50 of the rest, and the
p50 idle time before the request (the kernel's and the program's side, and the daemon's wake-up).
"""
import sys, re, statistics, collections

fuse_re = re.compile(r"skyfs: fuse @([0-9.]+) (\S+) node (\d+) ([0-9.]+) ms.*idle before ([0-9.]+) ms")
meta_re = re.compile(r"skyfs: meta @([0-9.]+) (fast|slow|read)( \(refused\))? ([0-9.]+) ms")
events = []
for line in open(sys.argv[1]):
    m = fuse_re.search(line)
    if m:
        events.append(("fuse", float(m.group(1)), m.group(2), float(m.group(4)), float(m.group(5))))
        continue
    m = meta_re.search(line)
    if m:
        events.append(("meta", float(m.group(1)), m.group(2), float(m.group(4)), 0.0))
n = int(sys.argv[2]) if len(sys.argv) > 2 else 300
# Phases, from the loop's own requests: the loop directory's MKDIR starts everything.
phase = None; creates = 0; counts = collections.Counter()
stats = collections.defaultdict(lambda: collections.defaultdict(list))
metas = [e for e in events if e[0] == "meta"]
started = False
for e in events:
    if e[0] != "fuse": continue
    _, end, op, dur, idle = e
    if op == "MKDIR" and not started:
        started = True; phase = "touch"; continue
    if not started: continue
    if op == "CREATE":
        creates += 1
        phase = "touch" if creates <= n else "create+1KiB+close"
    elif op == "OPEN" and phase == "create+1KiB+close":
        phase = "open+close"
    elif op == "UNLINK" and phase != "unlink":
        phase = "unlink"
    elif op == "MKDIR" and phase != "mkdir":
        phase = "mkdir"
    begin = end - dur
    inside = [m for m in metas if begin <= m[1] <= end + 0.001]
    meta_ms = sum(m[3] for m in inside)
    kinds = "+".join(sorted(m[2] for m in inside)) or "-"
    s = stats[phase][op]
    s.append((dur, meta_ms, dur - meta_ms, idle, kinds))
for ph in ["touch", "create+1KiB+close", "open+close", "unlink", "mkdir"]:
    if ph not in stats: continue
    print(f"{ph}:")
    for op, rows in sorted(stats[ph].items(), key=lambda kv: -len(kv[1])):
        med = lambda i: statistics.median(r[i] for r in rows)
        kinds = collections.Counter(r[4] for r in rows).most_common(2)
        print(f"  {op:10s} {len(rows)/n:5.2f}/op  daemon {med(0):6.3f} ms  meta {med(1):6.3f}  rest {med(2):6.3f}  idle before {med(3):6.3f}  meta kinds {kinds}")
