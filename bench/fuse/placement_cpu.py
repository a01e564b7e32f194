#!/usr/bin/env python3
"""Daemon CPU per stat or open+close with the client and the daemon on one CPU, on two, or where
the scheduler puts them (src/fuse/README.md, "Where a cheap request's time goes").

Usage (root): PIN=same|diff|free placement_cpu.py TREE stat|open FILES LOOPS [KEY=VALUE ...]
TREE is a checkout (mounted with `mod.ts mount --http off`, `--cache-seconds 0` for stat, so a
stat is a GETATTR of the root, a LOOKUP and a GETATTR) or "bindfs" (`bindfs -f`, attr and entry
timeouts 0 for stat). KEY=VALUE pairs go to the daemon's environment (SKYFS_FUSE_TRANSPORT=dev).
PIN=same: the daemon (all threads) and this client on CPU 0; diff: the daemon on 0, the client
on 1; free (default): no pinning. Prints daemon CPU (all threads' schedstat) per operation, the
rate and context switches per operation, and the daemon's debug line (SKYFS_DEBUG=1).
"""

import os, sys, time, subprocess
tree, mode, n, loops = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
env = dict(os.environ)
pin = os.environ.get("PIN")
for kv in sys.argv[5:]:
    k, v = kv.split("=", 1); env[k] = v
def cpu_ns(pid):
    t = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try: t += int(open(f"/proc/{pid}/task/{tid}/schedstat").read().split()[0])
        except FileNotFoundError: pass
    return t
def ctx(pid):
    v = iv = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            for line in open(f"/proc/{pid}/task/{tid}/status"):
                if line.startswith("voluntary_ctxt"): v += int(line.split()[1])
                if line.startswith("nonvoluntary_ctxt"): iv += int(line.split()[1])
        except FileNotFoundError: pass
    return v + iv
w = f"/tmp/placement-cpu-{os.getpid()}"; os.makedirs(f"{w}/mnt"); os.makedirs(f"{w}/data")
args = ["deno", "run", "-A", "--quiet", "mod.ts", "mount", f"{w}/mnt", "--data", f"{w}/data", "--http", "off"]
if mode == "stat": args += ["--cache-seconds", "0"]
if tree == "bindfs":
    args = ["bindfs", "-f"] + (["-o", "attr_timeout=0,entry_timeout=0"] if mode == "stat" else []) + [f"{w}/data", f"{w}/mnt"]
p = subprocess.Popen(args, cwd=(tree if tree != "bindfs" else "/tmp"), env=env, stdin=subprocess.DEVNULL, stdout=open(f"{w}/log","w"), stderr=subprocess.STDOUT)
try:
    for _ in range(300):
        if os.path.ismount(f"{w}/mnt"): break
        time.sleep(0.05)
    if pin == "same":
        os.sched_setaffinity(0, {0}); subprocess.run(["taskset", "-a", "-p", "-c", "0", str(p.pid)], stdout=subprocess.DEVNULL)
    elif pin == "diff":
        os.sched_setaffinity(0, {1}); subprocess.run(["taskset", "-a", "-p", "-c", "0", str(p.pid)], stdout=subprocess.DEVNULL)
    names = [f"{w}/mnt/f{i}" for i in range(n)]
    for name in names:
        with open(name, "wb") as f: f.write(b"x" * 1024)
    for name in names: os.stat(name)
    for name in names: os.close(os.open(name, os.O_RDONLY))
    time.sleep(0.3)
    c0, s0, t0 = cpu_ns(p.pid), ctx(p.pid), time.perf_counter()
    for _ in range(loops):
        if mode == "stat":
            for name in names: os.stat(name)
        else:
            for name in names: os.close(os.open(name, os.O_RDONLY))
    dt = time.perf_counter() - t0
    time.sleep(0.2)
    ops = n * loops
    print(f"{tree} {mode} {' '.join(sys.argv[5:])}: {(cpu_ns(p.pid)-c0)/ops/1000:.1f} us/op cpu, {ops/dt:.0f} ops/s, {(ctx(p.pid)-s0)/ops:.2f} switches/op", flush=True)
finally:
    subprocess.run(["fusermount3", "-u", f"{w}/mnt"])
    try: p.wait(timeout=20)
    except subprocess.TimeoutExpired: p.kill()
    for line in open(f"{w}/log"):
        if "parked waits" in line: print("   ", line.strip()[-260:])
    subprocess.run(["rm", "-rf", w])
