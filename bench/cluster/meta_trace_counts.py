"""Count fast / slow / refused metadata commands in a mount's SKYFS_DEBUG=meta trace.

python3 bench/cluster/meta_trace_counts.py TRACE: lines "skyfs: meta fast|slow|read [(refused)] ..."
grouped by kind: an entry added (put of a directory entry), removed (its delete), or other.
"""
import sys, re, collections
c = collections.Counter()
for line in open(sys.argv[1]):
    m = re.search(r"meta (?:@[0-9.]+ )?(fast|slow|read)( \(refused\))? ", line)
    if not m: continue
    kind = "entry removed" if "delete fs/D" in line else "entry added" if "put fs/D" in line else "other"
    c[(kind, m.group(1) + ("/refused" if m.group(2) else ""))] += 1
for k in sorted(c): print(sys.argv[1].split('/')[-1], k, c[k])
