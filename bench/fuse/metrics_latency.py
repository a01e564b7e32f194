#!/usr/bin/env python3
"""Latency of HTTP GETs of /metrics while another process looks up a new name on the mount every
0.5 ms (src/fuse/README.md, "Where a cheap request's time goes": work of the event loop that is
not an fd can wait while the FUSE reader waits on the JS thread).

Usage (root): metrics_latency.py TREE PORT   (mounts TREE's mod.ts with --transport dev and
--http 127.0.0.1:PORT on a fresh directory, 150 GETs 3 ms apart; prints p50 and p90)
"""

import os, sys, time, subprocess, urllib.request
tree = sys.argv[1]; port = int(sys.argv[2])
w = f"/tmp/metrics-latency-{os.getpid()}"; os.makedirs(f"{w}/mnt"); os.makedirs(f"{w}/data")
env = dict(os.environ, SKYFS_FUSE_TRANSPORT="dev")
p = subprocess.Popen(["deno", "run", "-A", "--quiet", "mod.ts", "mount", f"{w}/mnt", "--data", f"{w}/data", "--http", f"127.0.0.1:{port}"], cwd=tree, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
lp = None
try:
    for _ in range(300):
        if os.path.ismount(f"{w}/mnt"): break
        time.sleep(0.05)
    for _ in range(100):
        try: urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read(); break
        except Exception: time.sleep(0.1)
    code = ("import os,sys,time\ni=0\nwhile True:\n  os.path.exists(sys.argv[1]+'/n%d'%i); i+=1\n"
            "  t=time.perf_counter()\n  while time.perf_counter()-t<5e-4: pass")
    lp = subprocess.Popen([sys.executable, "-c", code, f"{w}/mnt"])
    lat = []
    for _ in range(150):
        t = time.perf_counter(); urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read(); lat.append((time.perf_counter() - t) * 1000)
        time.sleep(0.003)
    lat.sort()
    print(f"{tree}: /metrics p50 {lat[len(lat)//2]:.2f} ms, p90 {lat[int(len(lat)*0.9)]:.2f} ms")
finally:
    if lp:
        lp.kill(); lp.wait()
    subprocess.run(["fusermount3", "-u", f"{w}/mnt"])
    try: p.wait(timeout=20)
    except subprocess.TimeoutExpired: p.kill()
    subprocess.run(["rm", "-rf", w])
