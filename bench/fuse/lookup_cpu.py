#!/usr/bin/env python3
"""Daemon CPU per cheap request, checkouts side by side (src/fuse/README.md, "Daemon CPU per
request"). Each round mounts every variant in turn (reversed every other round) on a fresh data
directory, twice: with `--cache-seconds 0`, writes --files files of 1 KiB and stats each --loops
times (python os.stat; with no entry or attribute caching every stat is one LOOKUP and one
GETATTR): "stat-nocache"; then with the default cache, writes the files, stats each once, and
opens and closes each --loops times (os.open O_RDONLY + os.close: one OPEN and one RELEASE):
"open-close". Daemon CPU = the sum of its threads' run time (/proc/PID/task/*/schedstat) around
the loop (read 0.2 s after it), per operation.

Usage (root): lookup_cpu.py --variant base=/work/base --variant new=/work/h6 [--rounds 3]
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time


def cpu_ns(pid):
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except FileNotFoundError:
            pass
    return total


def one(checkout, files, loops, phase):
    work = tempfile.mkdtemp(prefix="lookup-cpu-")
    mnt, data = f"{work}/mnt", f"{work}/data"
    os.makedirs(mnt)
    os.makedirs(data)
    log = open(f"{work}/log", "w")
    proc = subprocess.Popen(
        ["deno", "run", "-A", "--quiet", "mod.ts", "mount", mnt, "--data", data, "--http", "off"]
        + (["--cache-seconds", "0"] if phase == "stat-nocache" else []), cwd=checkout, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    try:
        for _ in range(300):
            if os.path.ismount(mnt):
                break
            time.sleep(0.05)
        else:
            sys.exit(f"lookup_cpu: the mount of {checkout} failed: see {log.name}")
        names = [f"{mnt}/f{i}" for i in range(files)]
        for name in names:
            with open(name, "wb") as f:
                f.write(b"x" * 1024)
        for name in names:
            os.stat(name)
        time.sleep(0.3)
        start, t0 = cpu_ns(proc.pid), time.perf_counter()
        for _ in range(loops):
            if phase == "stat-nocache":
                for name in names:
                    os.stat(name)
            else:
                for name in names:
                    os.close(os.open(name, os.O_RDONLY))
        seconds = time.perf_counter() - t0
        time.sleep(0.2)
        used = cpu_ns(proc.pid) - start
        n = files * loops
        return used / n / 1000, n / seconds
    finally:
        subprocess.run(["fusermount3", "-u", mnt], check=False)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            subprocess.run(["umount", "-l", mnt], check=False)
        subprocess.run(["rm", "-rf", work], check=False)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--variant", action="append", required=True, help="NAME=CHECKOUT")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--loops", type=int, default=5)
    args = parser.parse_args()
    variants = [v.split("=", 1) for v in args.variant]
    phases = ["stat-nocache", "open-close"]
    results = {(name, phase): [] for name, _ in variants for phase in phases}
    for r in range(args.rounds):
        for name, checkout in (variants if r % 2 == 0 else variants[::-1]):
            for phase in phases:
                us, rate = one(checkout, args.files, args.loops, phase)
                load = open("/proc/loadavg").read().split()[0]
                results[(name, phase)].append((us, rate))
                print(f"round {r} {name} {phase}: {us:.1f} us/op, {rate:.0f} ops/s, load {load}",
                      file=sys.stderr)
    for (name, phase), rows in results.items():
        us = [u for u, _ in rows]
        rate = [x for _, x in rows]
        print(f"{name} {phase}: daemon CPU {statistics.median(us):.1f} us/op ({min(us):.1f}-"
              f"{max(us):.1f}), {statistics.median(rate):.0f} ops/s")


if __name__ == "__main__":
    main()
