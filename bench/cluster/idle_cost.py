"""What the other mounts of a cluster pay for a create (and an unlink) made on one mount
(src/cluster/README.md, "What the other mounts pay for a change").

python3 bench/cluster/idle_cost.py N ROUNDS [--store PID,...] [--look]
    NAME=PID:MOUNTPOINT ... -- NAME=PID:MOUNTPOINT ...

Before `--`: the creating mounts, which take turns (order reversed every other round); after it:
idle mounts, which only watch (a creating mount counts as idle during the others' turns). In each round each creating mount gets N creates (open(O_CREAT |
O_EXCL | O_WRONLY), write 1 KiB, close, as bench/cluster/create_ab.py) in a new directory, then N
unlinks of them. For every phase it prints the CPU per operation of the creating mount and of
every idle mount: all threads (utime + stime of /proc/PID/stat, 10 ms ticks: use N of 1000 or
more) and the JS thread alone (its schedstat, ns), and with --store the replicas' CPU. With
--look each idle mount lists its root and stats the new directory before the creates (its
kernel then holds names there, as a mount a person or a program looked at would).
"""
import os, statistics, sys, time

args = sys.argv[1:]
store = []
if "--store" in args:
    i = args.index("--store")
    store = [int(p) for p in args[i + 1].split(",")]
    del args[i:i + 2]
look = "--look" in args
if look:
    args.remove("--look")
N = int(args[0])
rounds = int(args[1])
rest = args[2:]
split_at = rest.index("--") if "--" in rest else len(rest)


def parse(items):
    out = []
    for a in items:
        name, spec = a.split("=", 1)
        pid, mnt = spec.split(":", 1)
        out.append((name, int(pid), mnt))
    return out


creators = parse(rest[:split_at])
idle = parse(rest[split_at + 1:])
DATA = bytes(range(256)) * 4
CLK = os.sysconf("SC_CLK_TCK")


def cpu(pid):
    """(all threads, those that ended too, JS thread) CPU ns of a process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    with open(f"/proc/{pid}/task/{pid}/schedstat") as f:
        js = int(f.read().split()[0])
    return (int(fields[11]) + int(fields[12])) * 1_000_000_000 // CLK, js


def load():
    with open("/proc/loadavg") as f:
        return f.read().split()[0]


def snapshot():
    return {pid: cpu(pid) for _, pid, _ in creators + idle}, sum(cpu(p)[0] for p in store)


def per_op(before, after, pid):
    return [(b - a) / 1000 / N for a, b in zip(before[0][pid], after[0][pid])]


res = {}


def report(r, phase, maker, before, after, wall, l0):
    parts = []
    for name, pid, _ in creators + idle:
        total, js = per_op(before, after, pid)
        role = "creator" if name == maker else "idle"
        parts.append(f"{name} ({role}) {total:.0f} us (JS {js:.0f})")
        res.setdefault((phase, name, role), []).append((total, js))
    st = (after[1] - before[1]) / 1000 / N
    if store:
        res.setdefault((phase, "store", ""), []).append((st, 0))
    print(f"round {r} {phase} on {maker}: {N / wall:.0f}/s; " + ", ".join(parts) +
          (f"; store {st:.0f} us" if store else "") + f"; load {l0}->{load()}", flush=True)


for r in range(rounds):
    order = creators if r % 2 == 0 else list(reversed(creators))
    for name, pid, mnt in order:
        d_name = f"idle-{r}-{name}-{os.getpid()}"
        d = os.path.join(mnt, d_name)
        os.mkdir(d)
        if look:
            time.sleep(0.5)  # the mkdir reaches the other mounts
            for _, _, other in idle:
                os.listdir(other)
                os.stat(os.path.join(other, d_name))
        names = [os.path.join(d, f"f{i}") for i in range(N)]
        time.sleep(0.5)
        l0 = load()
        before = snapshot()
        w0 = time.perf_counter()
        for p in names:
            fd = os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o644)
            os.write(fd, DATA)
            os.close(fd)
        wall = time.perf_counter() - w0
        time.sleep(0.5)  # the last watch events reach the idle mounts
        after = snapshot()
        report(r, "create", name, before, after, wall, l0)
        l0 = load()
        before = snapshot()
        w0 = time.perf_counter()
        for p in names:
            os.unlink(p)
        wall = time.perf_counter() - w0
        time.sleep(0.5)
        after = snapshot()
        report(r, "unlink", name, before, after, wall, l0)
        os.rmdir(d)


def span(xs):
    return f"{min(xs):.0f}-{max(xs):.0f} (median {statistics.median(xs):.0f})"


for (phase, name, role), rows in sorted(res.items()):
    total = [t for t, _ in rows]
    js = [j for _, j in rows]
    print(f"{phase} {name} {role}: {span(total)} us/op, JS thread {span(js)}")
