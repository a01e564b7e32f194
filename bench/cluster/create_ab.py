"""Mount CPU per create + 1 KiB write + close (the bench's meta-flat-create-w1 row), two or more
mounts alternating (src/cluster/README.md, "Session 13: the mount's CPU per create").

python3 bench/cluster/create_ab.py N ROUNDS [--store PID,PID,...] [--op OP [--via MOUNTPOINT]]
    NAME=PID:MOUNTPOINT ...

In each round, each mount in turn (the order reversed every other round) gets N creates
(open(O_CREAT|O_EXCL|O_WRONLY), write 1 KiB, close, as bench/meta/meta_worker.c's create phase) in
a new directory, then the files are unlinked (not measured). Prints per mount and round the rate,
p50/p90, the mount process's CPU per create (utime + stime of /proc/PID/stat, all threads; split into
the JS thread's, from its schedstat in ns, and the other threads': io_uring workers, thread pool,
V8 helpers) and,
with --store, the CPU of those processes (the CURP replicas) summed per create; then the range and
median over the rounds. Load average at the start and end of each loop.

--op picks another operation (default `create`): `open-close` (os.open O_RDONLY + close of N files
the mount created before the loop, opened once before too), `stat` (os.stat of those N files; the
kernel's attribute cache may answer them), `stat-remote` (os.stat of N files another mount, --via,
created before the loop: the measured mount's kernel has not seen them, so each is a LOOKUP).
"""
import os, statistics, sys, time

args = sys.argv[1:]
store = []
if "--store" in args:
    i = args.index("--store")
    store = [int(p) for p in args[i + 1].split(",")]
    del args[i:i + 2]
op = "create"
if "--op" in args:
    i = args.index("--op")
    op = args[i + 1]
    del args[i:i + 2]
via = None
if "--via" in args:
    i = args.index("--via")
    via = args[i + 1]
    del args[i:i + 2]
assert op in ("create", "open-close", "stat", "stat-remote"), op
assert op != "stat-remote" or via, "stat-remote needs --via MOUNTPOINT"
N = int(args[0])
rounds = int(args[1])
targets = []
for a in args[2:]:
    name, rest = a.split("=", 1)
    pid, mnt = rest.split(":", 1)
    targets.append((name, int(pid), mnt))
DATA = bytes(range(256)) * 4


CLK = os.sysconf("SC_CLK_TCK")


def cpu_ns(pid):
    """CPU ns of a process, all threads, those that ended too (utime + stime of /proc/PID/stat:
    10 ms ticks, so use N of 1000 or more)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1_000_000_000 // CLK


def cpu_split(pid):
    """(JS thread (/proc/PID/task/PID/schedstat, in ns), the other threads: the io_uring workers
    doing the local files' kernel work (iou-wrk-*, which come and go), Deno's thread pool, V8's
    helpers) CPU ns of a process."""
    with open(f"/proc/{pid}/task/{pid}/schedstat") as f:
        js = int(f.read().split()[0])
    return js, cpu_ns(pid) - js
def load():
    with open("/proc/loadavg") as f:
        return f.read().split()[0]


def create(path):
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o644)
    os.write(fd, DATA)
    os.close(fd)


def open_close(path):
    os.close(os.open(path, os.O_RDONLY | os.O_CLOEXEC))


do = {"create": create, "open-close": open_close, "stat": os.stat, "stat-remote": os.stat}[op]
res = {}
for r in range(rounds):
    order = targets if r % 2 == 0 else list(reversed(targets))
    for name, pid, mnt in order:
        d = os.path.join(mnt, f"cab-{r}-{name}-{os.getpid()}")
        names = [os.path.join(d, f"f{i}") for i in range(N)]
        if op == "stat-remote":
            os.mkdir(os.path.join(via, os.path.basename(d)))
            for p in names:
                create(os.path.join(via, os.path.basename(d), os.path.basename(p)))
            time.sleep(0.5)  # the watch events reach the measured mount
        else:
            os.mkdir(d)
        if op in ("open-close", "stat"):
            for p in names:
                create(p)
                os.close(os.open(p, os.O_RDONLY))
        l0 = load()
        ts = []
        c0 = cpu_split(pid)
        s0 = sum(cpu_ns(p) for p in store)
        w0 = time.perf_counter()
        for p in names:
            t = time.perf_counter()
            do(p)
            ts.append((time.perf_counter() - t) * 1000)
        wall = time.perf_counter() - w0
        c1 = cpu_split(pid)
        s1 = sum(cpu_ns(p) for p in store)
        ts.sort()
        split = [(b - a) / 1000 / N for a, b in zip(c0, c1)]
        row = (N / wall, statistics.median(ts), ts[int(N * 0.9)], sum(split),
               (s1 - s0) / 1000 / N, *split)
        print(f"round {r} {name}: {row[0]:.0f}/s, p50 {row[1]:.2f} p90 {row[2]:.2f} ms, "
              f"mount CPU {row[3]:.0f} us/{op} (JS thread {split[0]:.0f}, other threads "
              f"{split[1]:.0f})" +
              (f", store CPU {row[4]:.0f} us/{op}" if store else "") +
              f"; load {l0}->{load()}", flush=True)
        res.setdefault(name, []).append(row)
        for p in names:
            os.unlink(p)
        os.rmdir(d)


def span(xs, fmt):
    return f"{fmt.format(min(xs))}-{fmt.format(max(xs))} (median {fmt.format(statistics.median(xs))})"


for name, rows in res.items():
    cols = list(zip(*rows))
    print(f"{name}: {span(cols[0], '{:.0f}')}/s, p50 {span(cols[1], '{:.2f}')} ms, "
          f"mount CPU {span(cols[3], '{:.0f}')} us/{op}, JS thread {span(cols[5], '{:.0f}')}, "
          f"other threads {span(cols[6], '{:.0f}')}" +
          (f", store CPU {span(cols[4], '{:.0f}')} us/{op}" if store else ""))
