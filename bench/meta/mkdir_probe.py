#!/usr/bin/env python3
"""Where the time of the meta-tree mkdir phase goes (issue 17, session 12; bench/README.md,
"The tree family's mkdir and rmdir rows").

Usage (root): mkdir_probe.py [--checkout DIR] [--http on|off] [--rounds 3] [--files 5000]
    [--idle 8] [--work /tmp/mkdir-probe]

Mounts one skyfs checkout as the bench does (`mount MNT --data DATA --http 127.0.0.1:0|off
--transport dev`; with the endpoint on, /metrics is fetched every second and right before each
probe, as the harness reads its FUSE counters), runs the bench's meta_worker flat w1 and flat w4
(`--size 1024`), then, per round, 64 timed mkdirs of the tree layout's leaves (tree/dA/dB) from
this process in four settings:

  idle      after --idle seconds without any request (the other targets' turn in the bench)
  scraped   right after a /metrics fetch (http on) or at once (off)
  settled   0.3 s after the previous setting's rmdirs
  again     at once after `settled`

Each prints the total, the slowest three operations (us), and the daemon's CPU during the 64
operations per thread kind (its JS thread, V8's workers, tokio, io_uring workers, others).
"""

import argparse
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))


def threads_cpu(pid):
    """{thread kind: run time ns} from /proc/PID/task/*/schedstat, by the thread's comm."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                comm = f.read().strip()
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                ns = int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            continue
        kind = ("js" if tid == str(pid) else "v8" if comm.startswith("V8") else
                "tokio" if comm.startswith("tokio") else "iou" if comm.startswith("iou") else comm)
        out[(kind, tid)] = ns
    return out


def cpu_delta(before, after):
    kinds = {}
    for key, ns in after.items():
        kinds[key[0]] = kinds.get(key[0], 0) + ns - before.get(key, 0)
    return {k: round(v / 1000) for k, v in sorted(kinds.items()) if v > 0}


def mounted(path):
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == path and "fuse.skyfs" in line for line in f)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkout", default=os.path.dirname(os.path.dirname(HERE)))
    parser.add_argument("--http", choices=["on", "off"], default="on")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--idle", type=float, default=8)
    parser.add_argument("--work", default="/tmp/mkdir-probe")
    args = parser.parse_args()
    subprocess.run(["rm", "-rf", args.work], check=True)
    mnt, data = os.path.join(args.work, "mnt"), os.path.join(args.work, "data")
    os.makedirs(mnt)
    os.makedirs(data)
    worker = os.path.join(args.work, "meta_worker")
    subprocess.run(["gcc", "-O2", "-pthread", "-o", worker, os.path.join(HERE, "meta_worker.c")],
                   check=True)
    log = open(os.path.join(args.work, "daemon.log"), "w+")
    http = ["--http", "127.0.0.1:0"] if args.http == "on" else ["--http", "off"]
    proc = subprocess.Popen(["deno", "run", "-A", "mod.ts", "mount", mnt, "--data", data, *http,
                             "--transport", "dev"], cwd=args.checkout, stdin=subprocess.DEVNULL,
                            stdout=log, stderr=log)
    stop = threading.Event()
    try:
        deadline = time.time() + 60
        while not mounted(mnt):
            if proc.poll() is not None or time.time() > deadline:
                sys.exit(f"mkdir_probe: mount failed, see {log.name}")
            time.sleep(0.05)
        url = None
        while args.http == "on" and url is None and time.time() < deadline:
            log.seek(0)
            for line in log.read().splitlines():
                if "http: listening on " in line:
                    url = line.split("http: listening on ")[1].split()[0] + "/metrics"
            time.sleep(0.05)

        def scrape():
            if url:
                urllib.request.urlopen(url).read()

        def scraper():
            while not stop.wait(1.0):
                try:
                    scrape()
                except OSError:
                    pass

        threading.Thread(target=scraper, daemon=True).start()
        with open(os.path.join(mnt, ".warm"), "wb") as f:
            f.write(b"x" * (1 << 20))
        os.remove(os.path.join(mnt, ".warm"))
        for layout, workers in (("flat", 1), ("flat", 4)):
            d = os.path.join(mnt, f"meta-{layout}-w{workers}")
            os.makedirs(d)
            child = subprocess.Popen([worker, d, str(args.files), str(workers), layout, "--size",
                                      "1024", "--pause"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
            for line in child.stdout:
                if "next" in json.loads(line):
                    scrape()
                    child.stdin.write("go\n")
                    child.stdin.flush()
            child.wait()
            os.rmdir(d)
        tree = os.path.join(mnt, "tree")
        os.makedirs(tree)
        for a in range(8):
            os.makedirs(os.path.join(tree, f"d{a}"))
        leaves = [os.path.join(tree, f"d{i // 8}", f"d{i % 8}") for i in range(64)]
        for round_no in range(args.rounds):
            for setting in ("idle", "scraped", "settled", "again"):
                if setting == "idle":
                    stop.set()  # nothing reaches the daemon meanwhile (as for the other targets)
                    time.sleep(args.idle)
                    stop.clear()
                    threading.Thread(target=scraper, daemon=True).start()
                elif setting == "scraped":
                    scrape()
                elif setting == "settled":
                    time.sleep(0.3)
                before = threads_cpu(proc.pid)
                times = []
                t0 = time.perf_counter()
                for leaf in leaves:
                    s = time.perf_counter_ns()
                    os.mkdir(leaf, 0o755)
                    times.append((time.perf_counter_ns() - s) // 1000)
                total = time.perf_counter() - t0
                cpu = cpu_delta(before, threads_cpu(proc.pid))
                for leaf in leaves:
                    os.rmdir(leaf)
                with open("/proc/loadavg") as f:
                    load = f.read().split()[0]
                print(json.dumps({
                    "http": args.http, "round": round_no, "setting": setting,
                    "ops_per_s": round(64 / total), "ms": round(total * 1000, 1),
                    "slowest_us": sorted(times)[-3:], "median_us": sorted(times)[32],
                    "cpu_us_per_op": round(sum(cpu.values()) / 64),
                    "cpu_us_by_thread": cpu, "load": float(load),
                }), flush=True)
    finally:
        stop.set()
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if mounted(mnt):
            subprocess.run(["umount", "-l", mnt], check=False)


if __name__ == "__main__":
    main()
