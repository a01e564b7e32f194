#!/usr/bin/env python3
"""Daemon CPU per metadata request, checkouts side by side (issue 17; src/fuse/README.md,
"Daemon CPU per request").

Usage (root): daemon_cpu.py --variant main=/work/main --variant branch=/work/h5 \\
    [--rounds 3] [--files 2000] [--dirs 2000] [--work /tmp/daemon-cpu] [--out DIR]
    [--data-root DIR] [--jobs flat-w1,flat-w4,tree-w1,dirs-w1] [--env NAME=KEY=VALUE ...]

Each round mounts every variant in turn (in reverse order every other round) (`deno run -A CHECKOUT/mod.ts mount --http off` on a
fresh data directory) and on each runs the bench's meta_worker (bench/meta/meta_worker.c,
`--size 1024 --pause`) for flat w1, flat w4 and tree w1, then a mkdir and an rmdir loop of
--dirs directories. Around every phase it reads the daemon's CPU time: the sum of its threads'
run time from /proc/PID/task/*/schedstat (io-wq workers included; utime+stime of /proc/PID/stat
when a thread ended during the phase), 0.2 s after the phase ended so that work the phase left
behind (FORGETs, purges) counts for it. Prints one table of medians and
ranges of CPU us per operation and ops/s; writes every measurement to OUT/raw.jsonl.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
JOBS = [("flat", 1), ("flat", 4), ("tree", 1)]


def cpu_sample(pid):
    """(run time in ns per thread id from /proc/PID/task/*/schedstat, utime+stime in ns from
    /proc/PID/stat, context switches per thread id from /proc/PID/task/*/status)."""
    threads = {}
    switches = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                threads[tid] = int(f.read().split()[0])
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                counts = {line.split(":")[0]: int(line.split()[1]) for line in f
                          if "ctxt_switches:" in line}
                switches[tid] = (counts["voluntary_ctxt_switches"],
                                 counts["nonvoluntary_ctxt_switches"])
        except (FileNotFoundError, ProcessLookupError):
            pass  # a thread that ended between the listing and the read
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    return threads, ticks * 1_000_000_000 // os.sysconf("SC_CLK_TCK"), switches


def switches_between(pid, start, end):
    """(voluntary context switches of the JS thread, its involuntary ones, all switches of the
    other threads) between two samples; a thread that ended during the phase loses its own."""
    main_vol, main_invol, rest = 0, 0, 0
    for tid, (vol, invol) in end[2].items():
        vol0, invol0 = start[2].get(tid, (0, 0))
        if tid == str(pid):
            main_vol += vol - vol0
            main_invol += invol - invol0
        else:
            rest += vol - vol0 + invol - invol0
    return main_vol, main_invol, rest


def cpu_between(start, end):
    """CPU ns between two samples: the threads' run times (ns resolution) when every thread of
    the start is still there, else (an io-wq worker ended, taking its time with it) the
    process's utime+stime (10 ms resolution, but it keeps the time of ended threads)."""
    (threads0, total0, _), (threads1, total1, _) = start, end
    if all(tid in threads1 for tid in threads0):
        return sum(ns - threads0.get(tid, 0) for tid, ns in threads1.items())
    return total1 - total0


def peak_rss_kib(pid):
    """The daemon's peak resident set (VmHWM, KiB), or None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return next((int(line.split()[1]) for line in f if line.startswith("VmHWM:")), None)
    except FileNotFoundError:
        return None


def mounted(path):
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == path and "fuse.skyfs" in line for line in f)


def mount(checkout, mnt, data, log, env=None):
    os.makedirs(mnt, exist_ok=True)
    os.makedirs(data, exist_ok=True)
    proc = subprocess.Popen(
        ["deno", "run", "-A", "--quiet", "mod.ts", "mount", mnt, "--data", data, "--http", "off"],
        cwd=checkout, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
        env={**os.environ, **(env or {})})
    deadline = time.time() + 60
    while not mounted(mnt):
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            sys.exit(f"daemon_cpu: the mount of {checkout} on {mnt} failed: see {log.name}")
        time.sleep(0.05)
    return proc


def unmount(proc, mnt):
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if mounted(mnt):
        subprocess.run(["umount", "-l", mnt], check=False)


def run_worker(worker, pid, directory, files, workers, layout):
    """meta_worker with --pause; returns {phase: (ops, seconds, cpu_ns)}."""
    os.makedirs(directory, exist_ok=True)
    child = subprocess.Popen(
        [worker, directory, str(files), str(workers), layout, "--size", "1024", "--pause"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    marks = []  # (phase, cpu at its start)
    results = {}
    for line in child.stdout:
        record = json.loads(line)
        if "next" in record:
            time.sleep(0.2)
            marks.append((record["next"], cpu_sample(pid)))
            child.stdin.write("\n")
            child.stdin.flush()
        else:
            results[record["phase"]] = (record["ops"], record["seconds"])
    if child.wait() != 0:
        sys.exit(f"daemon_cpu: meta_worker failed in {directory}")
    time.sleep(0.2)
    marks.append(("end", cpu_sample(pid)))
    out = {}
    for (phase, start), (_, end) in zip(marks, marks[1:]):
        if phase in results:
            out[phase] = (*results[phase], cpu_between(start, end),
                          switches_between(pid, start, end))
    return out


def run_dirs(pid, directory, count):
    os.makedirs(directory, exist_ok=True)
    names = [os.path.join(directory, f"d{i}") for i in range(count)]
    out = {}
    for phase, call in (("mkdir", lambda p: os.mkdir(p, 0o755)), ("rmdir", os.rmdir)):
        time.sleep(0.2)
        start = cpu_sample(pid)
        t0 = time.monotonic()
        for name in names:
            call(name)
        seconds = time.monotonic() - t0
        time.sleep(0.2)
        end = cpu_sample(pid)
        out[phase] = (count, seconds, cpu_between(start, end), switches_between(pid, start, end))
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--variant", action="append", required=True, help="NAME=CHECKOUT")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--dirs", type=int, default=2000)
    parser.add_argument("--work", default="/tmp/daemon-cpu")
    parser.add_argument("--out", default=None)
    parser.add_argument("--data-root", default=None,
                        help="where the data directories go (default: under --work); e.g. a "
                        "tmpfs, to take the data disk's journal (shared with other work) out")
    parser.add_argument("--jobs", default="flat-w1,flat-w4,tree-w1,dirs-w1",
                        help="comma-separated subset of flat-w1,flat-w4,tree-w1,dirs-w1")
    parser.add_argument("--env", action="append", default=[],
                        help="NAME=KEY=VALUE: an environment variable for variant NAME's daemon "
                        "only (e.g. semi=DENO_V8_FLAGS=--max-semi-space-size=32); repeatable")
    args = parser.parse_args()
    envs = {}
    for item in args.env:
        name, key, value = item.split("=", 2)
        envs.setdefault(name, {})[key] = value
    variants = [v.split("=", 1) for v in args.variant]
    wanted = args.jobs.split(",")
    unknown = [j for j in wanted if j not in ("flat-w1", "flat-w4", "tree-w1", "dirs-w1")]
    if unknown:
        sys.exit(f"daemon_cpu: unknown job {unknown[0]}: use flat-w1, flat-w4, tree-w1, dirs-w1")
    out_dir = args.out or args.work
    os.makedirs(out_dir, exist_ok=True)
    worker = os.path.join(args.work, "meta_worker")
    os.makedirs(args.work, exist_ok=True)
    subprocess.run(["gcc", "-O2", "-o", worker, os.path.join(HERE, "meta_worker.c"), "-lpthread"],
                   check=True)
    raw = open(os.path.join(out_dir, "raw.jsonl"), "a")
    rows = {}  # (job, phase) -> variant -> [(us_per_op, ops_per_s)]
    for round_no in range(args.rounds):
        # A B, then B A: a drift of the machine's load does not favour one variant.
        for name, checkout in (variants if round_no % 2 == 0 else variants[::-1]):
            base = os.path.join(args.work, f"{name}-r{round_no}")
            subprocess.run(["rm", "-rf", base], check=True)
            mnt, data = os.path.join(base, "mnt"), os.path.join(base, "data")
            if args.data_root:
                data = os.path.join(args.data_root, f"{name}-r{round_no}")
            with open(os.path.join(args.work, f"{name}-r{round_no}.log"), "w") as log:
                proc = mount(checkout, mnt, data, log, envs.get(name))
                try:
                    jobs = []
                    for layout, workers in JOBS:
                        job = f"{layout}-w{workers}"
                        if job not in wanted:
                            continue
                        jobs.append((job, run_worker(worker, proc.pid, os.path.join(mnt, job),
                                                     args.files, workers, layout)))
                    if "dirs-w1" in wanted:
                        jobs.append(("dirs-w1", run_dirs(proc.pid, os.path.join(mnt, "dirs"),
                                                         args.dirs)))
                finally:
                    rss = peak_rss_kib(proc.pid)
                    unmount(proc, mnt)
                    if args.data_root:
                        subprocess.run(["rm", "-rf", data], check=True)
            with open("/proc/loadavg") as f:
                load = f.read().split()[0]
            for job, phases in jobs:
                for phase, (ops, seconds, cpu, (cs_vol, cs_invol, cs_rest)) in phases.items():
                    us = cpu / 1000 / ops
                    rate = ops / seconds if seconds > 0 else 0
                    rows.setdefault((job, phase), {}).setdefault(name, []).append(
                        (us, rate, cs_vol / ops, cs_invol / ops, cs_rest / ops))
                    raw.write(json.dumps({
                        "round": round_no, "variant": name, "job": job, "phase": phase,
                        "ops": ops, "seconds": seconds, "cpu_us_per_op": round(us, 1),
                        "switches_per_op_js": round(cs_vol / ops, 2),
                        "involuntary_per_op_js": round(cs_invol / ops, 2),
                        "switches_per_op_other": round(cs_rest / ops, 2),
                        "load": float(load), "time": time.strftime("%H:%M:%S", time.gmtime()),
                    }) + "\n")
                    raw.flush()
            raw.write(json.dumps({"round": round_no, "variant": name, "peak_rss_kib": rss,
                                  "load": float(load)}) + "\n")
            print(f"round {round_no} {name} done, load {load}, peak RSS {rss} KiB",
                  file=sys.stderr)
    names = [name for name, _ in variants]
    head = "| job | phase | " + " | ".join(
        f"{n} CPU us/op | {n} ops/s | {n} JS thread switches/op vol+invol | {n} other threads" for n in names) + " | CPU ratio |"
    print(head)
    print("|" + "---|" * (2 + 4 * len(names) + 1))
    for (job, phase), by_variant in rows.items():
        cells = []
        medians = []
        for n in names:
            values = by_variant.get(n, [])
            us = [v[0] for v in values]
            rate = [v[1] for v in values]
            medians.append(statistics.median(us) if us else float("nan"))
            cells.append(f"{statistics.median(us):.0f} ({min(us):.0f}-{max(us):.0f})")
            cells.append(f"{statistics.median(rate):.0f}")
            vol = [v[2] for v in values]
            invol = [v[3] for v in values]
            other = [v[4] for v in values]
            cells.append(f"{statistics.median(vol):.2f} ({min(vol):.2f}-{max(vol):.2f}) + "
                         f"{statistics.median(invol):.2f} ({min(invol):.2f}-{max(invol):.2f})")
            cells.append(f"{statistics.median(other):.2f} ({min(other):.2f}-{max(other):.2f})")
        ratio = medians[-1] / medians[0] if medians[0] else float("nan")
        print(f"| {job} | {phase} | " + " | ".join(cells) + f" | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
