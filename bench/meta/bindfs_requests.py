#!/usr/bin/env python3
"""FUSE requests bindfs receives per metadata operation (issue 17, session 12; src/fuse/README.md,
"bindfs's open+close and listings").

Usage (root): bindfs_requests.py [--files 5000] [--workers 1] [--layout tree|flat] [--work DIR]

Mounts `bindfs -f -d BACKING MNT` (the bench's bindfs target, plus libfuse 2's debug log, which
prints one "unique: N, opcode: NAME" line per request), runs the bench's meta_worker
(bench/meta/meta_worker.c, `--size 1024 --pause --drop-caches`) on it, and prints per phase the
requests per operation by opcode and the error replies by errno, from the part of the log written
during the phase (read 0.3 s after it so late FORGETs count). The worker exits 1 on the first
failing call, so a phase that ran did the same work as on every other target. skyfs counts its
own requests (`/metrics`, the bench's "daemon cost" tables); this is the same figure for bindfs.
"""

import argparse
import collections
import json
import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def mounted(path):
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == path for line in f)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--layout", choices=("tree", "flat"), default="tree")
    parser.add_argument("--work", default="/tmp/bindfs-requests")
    args = parser.parse_args()
    subprocess.run(["rm", "-rf", args.work], check=True)
    backing, mnt = os.path.join(args.work, "backing"), os.path.join(args.work, "mnt")
    os.makedirs(backing)
    os.makedirs(mnt)
    worker = os.path.join(args.work, "meta_worker")
    subprocess.run(["gcc", "-O2", "-o", worker, os.path.join(HERE, "meta_worker.c"), "-lpthread"],
                   check=True)
    log_path = os.path.join(args.work, "bindfs-debug.log")
    log = open(log_path, "w")
    daemon = subprocess.Popen(["bindfs", "-f", "-d", backing, mnt], stdout=log, stderr=log)
    deadline = time.time() + 30
    while not mounted(mnt):
        if daemon.poll() is not None or time.time() > deadline:
            daemon.kill()
            sys.exit(f"bindfs_requests: bindfs did not mount on {mnt}: see {log_path}")
        time.sleep(0.05)
    try:
        directory = os.path.join(mnt, "w")
        os.makedirs(directory)
        child = subprocess.Popen(
            [worker, directory, str(args.files), str(args.workers), args.layout, "--size", "1024",
             "--pause", "--drop-caches"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        marks, results = [], {}
        for line in child.stdout:
            record = json.loads(line)
            if "next" in record:
                time.sleep(0.3)
                log.flush()
                marks.append((record["next"], os.path.getsize(log_path)))
                child.stdin.write("go\n")
                child.stdin.flush()
            else:
                results[record["phase"]] = record
        if child.wait() != 0:
            sys.exit("bindfs_requests: meta_worker failed (its message is above)")
        time.sleep(0.3)
        marks.append(("end", os.path.getsize(log_path)))
    finally:
        daemon.terminate()
        daemon.wait()
        if mounted(mnt):
            subprocess.run(["umount", "-l", mnt], check=False)
    with open(log_path, "rb") as f:
        text = f.read()
    print(f"| {args.layout} w{args.workers} phase | ops/s | requests per operation | error replies |")
    print("|---|--:|---|---|")
    for (phase, start), (_, end) in zip(marks, marks[1:]):
        result = results[phase]
        ops = result["ops"]
        part = text[start:end]
        opcodes = collections.Counter(m.decode() for m in re.findall(rb"opcode: (\w+)", part))
        errors = collections.Counter(m.decode() for m in re.findall(rb"error: (-\d+ [^,\n]*)", part))
        by_opcode = ", ".join(f"{name} {count / ops:.3g}" for name, count in opcodes.most_common())
        errs = ", ".join(f"{e} x{n}" for e, n in errors.most_common()) or "none"
        print(f"| {phase} | {ops / max(result['seconds'], 1e-9):.0f} | {by_opcode} | {errs} |")


if __name__ == "__main__":
    main()
