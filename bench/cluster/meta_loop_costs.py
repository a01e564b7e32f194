"""Per-operation context switches and CPU of a cluster's processes around one python loop.

python3 bench/cluster/meta_loop_costs.py CLUSTER_PID MOUNTPOINT
    [--op open+close|stat|touch|unlink|mkdir|readdir] [--n 1000] [--entries 100] [--tag TAG]
    [--threads]

CLUSTER_PID is the `deno task cluster` (src/cluster/cluster_main.ts) process; its children are
found by their command line: `meta serve --id ID` (a CURP replica) and `mount` (a node). The loop
runs --n operations of --op in a new directory of MOUNTPOINT (open+close, stat and unlink first
create the files, outside the measurement; readdir creates --entries files once and lists that
directory --n times with os.listdir) and prints, per operation, the p50/p90 latency and for each process the
context switches (voluntary + involuntary, summed over its threads from
/proc/PID/task/*/status; a thread that ends during the loop is not counted) and the CPU time (utime + stime of /proc/PID/stat, so 10 ms granularity
over the whole loop: use --n 1000 or more).
"""
import argparse, os, statistics, sys, time

CLK = os.sysconf("SC_CLK_TCK")
NAMES = {}  # thread id -> name (comm)


def children(pid):
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if int(fields[1]) != pid:
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        args = [a.decode(errors="replace") for a in args]
        if "serve" in args and "--id" in args:
            out.append((int(entry), "replica " + args[args.index("--id") + 1]))
        elif "mount" in args:
            out.append((int(entry), "mount " + os.path.basename(args[args.index("mount") + 1])))
    return sorted(out, key=lambda p: p[1])


def sample(pid):
    """({thread id: context switches}, CPU seconds) of one process."""
    switches = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith("Name:"):
                        NAMES[tid] = line.split(None, 1)[1].strip()
                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                        switches[tid] = switches.get(tid, 0) + int(line.split()[1])
        except OSError:
            pass  # the thread ended meanwhile
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return switches, (int(fields[11]) + int(fields[12])) / CLK


def switches_between(before, after):
    """Context switches of the threads alive at the end (a thread that ended during the loop
    takes its count with it: an undercount, never negative)."""
    return sum(n - before.get(tid, 0) for tid, n in after.items())


def switches_by_name(before, after):
    """Context switches per thread name (main thread "deno", "tokio-runtime-w", "iou-wrk-*")."""
    out = {}
    for tid, n in after.items():
        name = NAMES.get(tid, "?")
        if name.startswith("iou-wrk-"):
            name = "iou-wrk"
        out[name] = out.get(name, 0) + n - before.get(tid, 0)
    return sorted(out.items(), key=lambda kv: -kv[1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("cluster_pid", type=int)
    parser.add_argument("mountpoint")
    parser.add_argument("--op", default="open+close", choices=["open+close", "stat", "touch", "unlink", "mkdir", "readdir"])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--entries", type=int, default=100, help="files in the listed directory (readdir)")
    parser.add_argument("--tag", default="")
    parser.add_argument("--threads", action="store_true",
                        help="also split each process's context switches by thread name")
    a = parser.parse_args()
    procs = children(a.cluster_pid)
    if not any(name.startswith("mount") for _, name in procs):
        sys.exit(f"meta_loop_costs: no mount among the children of {a.cluster_pid}: pass the "
                 f"pid of `deno task cluster` (src/cluster/cluster_main.ts)")
    d = os.path.join(a.mountpoint, f"costs-{a.tag or 'x'}-{os.getpid()}")
    os.mkdir(d)
    names = [os.path.join(d, f"f{i}") for i in range(a.n)]
    if a.op == "touch":
        op = lambda p: os.close(os.open(p, os.O_CREAT | os.O_WRONLY, 0o644))
    elif a.op == "mkdir":
        op = os.mkdir
    elif a.op == "readdir":
        for i in range(a.entries):
            os.close(os.open(os.path.join(d, f"e{i}"), os.O_CREAT | os.O_WRONLY, 0o644))
        time.sleep(1)
        names = [d] * a.n
        op = os.listdir
    else:
        for p in names:
            os.close(os.open(p, os.O_CREAT | os.O_WRONLY, 0o644))
        time.sleep(1)  # let the creates' background work (commits, releases) settle
        op = {"open+close": lambda p: os.close(os.open(p, os.O_RDONLY)), "stat": os.stat,
              "unlink": os.unlink}[a.op]
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    before = {pid: sample(pid) for pid, _ in procs}
    times = []
    for p in names:
        t = time.perf_counter()
        op(p)
        times.append((time.perf_counter() - t) * 1000)
    after = {pid: sample(pid) for pid, _ in procs}
    times.sort()
    tag = f"{a.tag}: " if a.tag else ""
    print(f"{tag}{a.op} x{a.n}: p50 {statistics.median(times):.3f} ms, "
          f"p90 {times[int(len(times) * 0.9)]:.3f} ms (load {load})")
    for pid, name in procs:
        cs = switches_between(before[pid][0], after[pid][0]) / a.n
        cpu = (after[pid][1] - before[pid][1]) * 1000 / a.n
        print(f"{tag}  {name:<12} {cs:6.2f} context switches/op  {cpu:6.3f} ms CPU/op")
        if a.threads:
            split = switches_by_name(before[pid][0], after[pid][0])
            print(f"{tag}    " + ", ".join(f"{n} {c / a.n:.2f}" for n, c in split if c > 0))


if __name__ == "__main__":
    main()
