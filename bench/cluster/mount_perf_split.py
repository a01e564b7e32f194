"""Where a mount's CPU goes, from a perf profile (src/cluster/README.md, "Session 13: the mount's
CPU per create").

    deno run -A --v8-flags=--perf-basic-prof mod.ts mount MNT ...   # JS frames named in perf
    perf record -F 2999 -g -p PID -o perf.data -- sleep 12          # during a loop on MNT
    perf script -i perf.data -F comm,tid,ip,sym > perf.txt
    python3 bench/cluster/mount_perf_split.py perf.txt PID [US_PER_OP]

Each sample goes to one group: by thread (io_uring workers, Deno's thread pool, V8's helpers), and
on the JS thread by the innermost JS frame that a rule below names (the file or function the time
was spent under, syscalls included), else by what the native or kernel frames show. With
US_PER_OP (the CPU per operation measured beside it), each group's share in us per operation.
"""
import sys, collections, re
rules = [
 ("FUSE: reading requests (spin, park, thread-pool poll hop)", r"waitReadable|#spin|parkSyncUs|readRequest|nextTurn|transport_dev.ts:(33|47)"),
 ("FUSE: reply writes", r"writeMessage|transport_dev.ts:34|send file:///.*src/fuse/transport_dev"),
 ("CURP client: proposal encode + socket writes", r"#pump|encodeFrames|Packr|(?<!un)pack\.js|sendFrame|wire.ts:(124|147|153)"),
 ("CURP client: socket reads + decode (replies, synced, watch)", r"readLoop|decodeWire|unpack|FrameReader|push file:///.*src/meta/curp/wire|01_net.js"),
 ("watch events: own echoes and cache", r"#onWatchFrame|watched|node.ts|forgetMetadata"),
 ("local files through io_uring (engine)", r"uring.ts|uring_native"),
 ("chunk map / publish", r"chunk_map.ts|#publishNow|applyInTxn|upload|#inlineChunk|published"),
 ("namespace + CURP client bookkeeping", r"namespace.ts|curp_kv.ts|client_core.ts|kv.ts"),
 ("vfs, cluster data, local store, open records", r"src/vfs|src/cache|src/cluster"),
 ("FUSE server (parse, dispatch)", r"src/fuse"),
 ("timers", r"timers"),
]
krules = [
 ("kernel: TCP", r"tcp_|sock_|__sys_sendto|__sys_recvfrom|ip_"),
 ("kernel: FUSE device", r"fuse_"),
 ("kernel: io_uring", r"io_uring|io_submit|io_issue|io_wq"),
 ("kernel: scheduling, epoll, futex (waits and wake-ups)", r"schedule|epoll|futex|finish_task_switch|try_to_wake_up|exit_to_user_mode|irqentry|do_syscall"),
]
cats = collections.Counter()
total = 0
def flush(comm, tid, pid, frames):
    global total
    if not frames: return
    total += 1
    if comm.startswith("iou-wrk"): cats["thread: io_uring workers (local file create: ext4)"] += 1; return
    if comm.startswith("tokio"): cats["thread: Deno's thread pool (nonblocking FFI: FUSE poll, io_uring wait)"] += 1; return
    if comm != "deno" or tid != pid: cats[f"thread: {comm} (V8 GC/compiler)"] += 1; return
    for ip, sym in frames:
        if sym.startswith("JS:"):
            for name, rx in rules:
                if re.search(rx, sym):
                    cats["JS thread: " + name] += 1; return
    if any(s.startswith("JS:") for _, s in frames):
        cats["JS thread: other JS"] += 1; return
    syms = " ".join(s for _, s in frames[:12])
    if re.search(r"malloc|_int_free|cfree|unlink_chunk|calloc", frames[0][1]): cats["JS thread: malloc/free (no JS frame)"] += 1; return
    for name, rx in krules:
        if re.search(rx, syms): cats["JS thread, no JS frame: " + name] += 1; return
    cats["JS thread: V8/Deno native, unresolved (builtins, interpreter, event loop)"] += 1
pid = int(sys.argv[2])
comm = None; tid = 0; frames = []
for line in open(sys.argv[1]):
    if not line.strip():
        flush(comm, tid, pid, frames); comm = None; frames = []; continue
    if not line[0].isspace():
        m = re.match(r"(.*?)\s+(\d+)\s*$", line.rstrip()); comm = m.group(1).strip(); tid = int(m.group(2)); frames = []; continue
    p = line.strip().split(None, 1)
    frames.append((p[0], p[1] if len(p) > 1 else ""))
flush(comm, tid, pid, frames)
us = float(sys.argv[3]) if len(sys.argv) > 3 else 0
print("samples", total)
for k, v in sorted(cats.items(), key=lambda kv: -kv[1]):
    print(f"{v:6d} {100*v/total:5.1f}%" + (f" {us*v/total:6.0f} us" if us else "") + f"  {k}")
