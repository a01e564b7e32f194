#!/usr/bin/env python3
"""Daemon CPU per cheap request through a mount: a loop of fstat (one GETATTR each) or open+close
(OPEN and RELEASE) (src/fuse/README.md, "GC, and where a cheap request's CPU goes").

Usage (root): cheap_loop.py TREE fstat|open FILES LOOPS [KEY=VALUE ...]
TREE is a checkout (mounted with `mod.ts mount --http off`; `--cache-seconds 0` for fstat) or
"bindfs" (`bindfs -f`, attribute timeout 0 for fstat). FILES files of 1 KiB are written and
stat'ed; for fstat each stays open (the client's fd, so the daemon holds its local file and
every fstat is one GETATTR), for open each is closed. After 1.5 s (the write-back timer) and one
untimed pass, LOOPS passes are timed. KEY=VALUE pairs go to the daemon's environment (e.g.
DENO_V8_FLAGS=--max-semi-space-size=64). Prints the daemon's CPU (all threads' schedstat) per
operation, the rate and the load average. PERF=FILE: `perf record -g` of the daemon over the
timed passes; STRACE=FILE: `strace -c -f` of it instead; LOG=FILE: the daemon's output.
"""

import os
import subprocess
import sys
import time

tree, mode, n, loops = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
if mode not in ("fstat", "open"):
    sys.exit("cheap_loop: MODE is fstat or open")
env = dict(os.environ)
for kv in sys.argv[5:]:
    k, v = kv.split("=", 1)
    env[k] = v


def cpu_ns(pid):
    t = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                t += int(f.read().split()[0])
        except FileNotFoundError:
            pass
    return t


w = f"/tmp/cheap-loop-{os.getpid()}"
os.makedirs(f"{w}/mnt")
os.makedirs(f"{w}/data")
args = ["deno", "run", "-A", "--quiet", "mod.ts", "mount", f"{w}/mnt", "--data", f"{w}/data",
        "--http", "off"]
if mode == "fstat":
    args += ["--cache-seconds", "0"]
if tree == "bindfs":
    args = ["bindfs", "-f"] + (["-o", "attr_timeout=0,entry_timeout=0"] if mode == "fstat"
                               else []) + [f"{w}/data", f"{w}/mnt"]
log = open(os.environ.get("LOG", f"{w}/log"), "w")
p = subprocess.Popen(args, cwd=(tree if tree != "bindfs" else "/tmp"), env=env,
                     stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
try:
    for _ in range(600):
        if os.path.ismount(f"{w}/mnt"):
            break
        time.sleep(0.05)
    names = [f"{w}/mnt/f{i}" for i in range(n)]
    for name in names:
        with open(name, "wb") as f:
            f.write(b"x" * 1024)
    for name in names:
        os.stat(name)
    fds = [os.open(name, os.O_RDONLY) for name in names] if mode == "fstat" else []
    time.sleep(1.5)
    for fd in fds:
        os.fstat(fd)
    for name in names:
        os.close(os.open(name, os.O_RDONLY))
    time.sleep(0.3)
    tracer = None
    if os.environ.get("PERF"):
        tracer = subprocess.Popen(["perf", "record", "-g", "-o", os.environ["PERF"], "-p",
                                   str(p.pid)], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
    elif os.environ.get("STRACE"):
        tracer = subprocess.Popen(["strace", "-c", "-f", "-o", os.environ["STRACE"], "-p",
                                   str(p.pid)], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
    if tracer:
        time.sleep(1)
    c0, t0 = cpu_ns(p.pid), time.perf_counter()
    for _ in range(loops):
        if mode == "fstat":
            for fd in fds:
                os.fstat(fd)
        else:
            for name in names:
                os.close(os.open(name, os.O_RDONLY))
    t1 = time.perf_counter()
    time.sleep(0.1)
    c1 = cpu_ns(p.pid)
    if tracer:
        tracer.send_signal(2)
        tracer.wait()
    ops = n * loops
    with open("/proc/loadavg") as f:
        load = f.read().split()[0]
    print(f"{tree} {mode}: {(c1 - c0) / 1000 / ops:.1f} us/op daemon CPU, "
          f"{ops / (t1 - t0):.0f} ops/s, load {load}", flush=True)
    for fd in fds:
        os.close(fd)
finally:
    p.terminate()
    try:
        p.wait(20)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
    subprocess.run(["fusermount3", "-u", f"{w}/mnt"], stderr=subprocess.DEVNULL)
    subprocess.run(["rm", "-rf", w])
