#!/usr/bin/env python3
"""Latency of one FUSE request that comes after a pause, checkouts side by side (src/fuse/README.md,
"Parking on the JS thread").

Usage (root): park_gap.py --variant main=/work/main --variant branch=/work/h7 \\
    [--env branch:SKYFS_FUSE_PARK_US=1000] [--rounds 3] [--n 2000] [--gaps 0,100,300,700]
    [--work /tmp/park-gap]

Each round mounts every variant in turn (reverse order every other round; `deno run -A
CHECKOUT/mod.ts mount --http off --transport dev` on a fresh data directory). For each gap (us) a
loop of --n lookups of new names (os.path.exists: one LOOKUP each) runs, busy-waiting the gap
between them, so a request comes after the 50 us idle spin has ended but (below 1 ms) within the
park on the JS thread. Prints the median and p90 latency of one lookup and the daemon's context
switches per lookup (all threads, /proc/PID/task/*/status), median over the rounds.
"""
import argparse, os, statistics, subprocess, sys, time


def switches(pid):
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                total += sum(int(l.split()[1]) for l in f if "ctxt_switches:" in l)
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total


def mounted(path):
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == path and "fuse.skyfs" in line for line in f)


def loop(directory, n, gap_ns, tag):
    lat = []
    for i in range(n):
        t = time.perf_counter_ns()
        while time.perf_counter_ns() - t < gap_ns:
            pass
        path = os.path.join(directory, f"{tag}-{i}")
        t0 = time.perf_counter_ns()
        os.path.exists(path)
        lat.append(time.perf_counter_ns() - t0)
    lat.sort()
    return lat[len(lat) // 2] / 1000, lat[len(lat) * 9 // 10] / 1000


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--variant", action="append", required=True)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--gaps", default="0,100,300,700")
    p.add_argument("--work", default="/tmp/park-gap")
    p.add_argument("--env", action="append", default=[],
                   help="NAME:VAR=VALUE, an environment variable for one variant's daemon")
    a = p.parse_args()
    variants = [v.split("=", 1) for v in a.variant]
    gaps = [int(g) for g in a.gaps.split(",")]
    envs = {}
    for item in a.env:
        name, assignment = item.split(":", 1)
        var, value = assignment.split("=", 1)
        envs.setdefault(name, {})[var] = value
    res = {}  # (variant, gap) -> [(p50, p90, switches/op)]
    for r in range(a.rounds):
        for name, checkout in (variants if r % 2 == 0 else variants[::-1]):
            base = os.path.join(a.work, f"{name}-r{r}")
            subprocess.run(["rm", "-rf", base], check=True)
            mnt, data = os.path.join(base, "mnt"), os.path.join(base, "data")
            os.makedirs(mnt)
            os.makedirs(data)
            log = open(base + ".log", "w")
            proc = subprocess.Popen(["deno", "run", "-A", "--quiet", "mod.ts", "mount", mnt,
                                     "--data", data, "--http", "off", "--transport", "dev"],
                                    cwd=checkout, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                    env={**os.environ, **envs.get(name, {})})
            deadline = time.time() + 60
            while not mounted(mnt):
                if proc.poll() is not None or time.time() > deadline:
                    proc.kill()
                    sys.exit(f"park_gap: the mount of {checkout} failed: see {log.name}")
                time.sleep(0.05)
            try:
                d = os.path.join(mnt, "d")
                os.mkdir(d)
                for gap in gaps:
                    s0 = switches(proc.pid)
                    p50, p90 = loop(d, a.n, gap * 1000, f"g{gap}")
                    s1 = switches(proc.pid)
                    res.setdefault((name, gap), []).append((p50, p90, (s1 - s0) / a.n))
            finally:
                proc.terminate()
                proc.wait(30)
            with open("/proc/loadavg") as f:
                print(f"round {r} {name} done, load {f.read().split()[0]}", file=sys.stderr)
    print("| gap us | " + " | ".join(f"{n} p50 us (range) | {n} p90 us | {n} switches/op"
                                     for n, _ in variants) + " |")
    print("|" + "---|" * (1 + 3 * len(variants)))
    for gap in gaps:
        cells = []
        for n, _ in variants:
            v = res[(n, gap)]
            p50 = [x[0] for x in v]
            cells += [f"{statistics.median(p50):.1f} ({min(p50):.1f}-{max(p50):.1f})",
                      f"{statistics.median(x[1] for x in v):.1f}",
                      f"{statistics.median(x[2] for x in v):.2f}"]
        print(f"| {gap} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
