/**
 * FUSE over io_uring (Linux 6.14+, `CONFIG_FUSE_IO_URING`, module parameter `enable_uring`): the
 * kernel hands requests to ring entries we registered and takes replies back as submissions, so
 * a request costs no read(), write() or poll() of its own. A reply and the fetch of the entry's
 * next request are one `FUSE_IO_URING_CMD_COMMIT_AND_FETCH` SQE; every SQE staged during one turn
 * of the event loop goes to the kernel in one `io_uring_enter` (a microtask), on the I/O engine's
 * ring together with the turn's disk I/O when the engine was opened for it
 * (`sharedRingOptions`, `UringEngine.attachClient`), else on a ring of our own. INIT, FORGET,
 * INTERRUPT and everything the daemon sends first (notifications, passthrough backing ids) stay
 * on /dev/fuse: a one-shot POLL_ADD on the /dev/fuse fd rides on the same ring, so one parked
 * wait covers both (src/fuse/README.md, "Transports").
 *
 * Layouts (include/uapi/linux/fuse.h, fs/fuse/dev_uring.c):
 * - per entry two iovecs: `struct fuse_uring_req_header` (in_out[128]: the fuse_in_header of a
 *   request, the fuse_out_header of its reply; op_in[128]: the request's first argument;
 *   ring_ent_in_out: u64 flags, u64 commit_id, u32 payload_sz, u32 pad, u64 reserved) and a
 *   payload buffer of at least max_write bytes (the other arguments, or the reply's arguments);
 * - the SQE (128 bytes, IORING_OP_URING_CMD on the /dev/fuse fd) carries cmd_op REGISTER (1) or
 *   COMMIT_AND_FETCH (2) and, in its command area, `struct fuse_uring_cmd_req` (u64 flags, u64
 *   commit_id, u16 qid);
 * - one queue per possible CPU; the kernel routes a request to the queue of the CPU its caller
 *   runs on, and switches from /dev/fuse to the ring once every queue has an entry registered.
 * @module
 */

import { close as closeFd, dup } from "../io/libc.ts";
import { Errno, errnoName, FsError } from "../fs_error.ts";
import {
  addressOf,
  alignedBuffer,
  CQE_BYTES,
  defaultLibraryPath,
  loadUringLibrary,
  Op,
  OP_BYTES,
  pointerOf,
  RING_SETUPS,
  type RingSetup,
  SETUP_SQE128,
  SETUP_TASKRUN_FLAG,
  type UringLibrary,
} from "../io/uring_native.ts";
import type { RingPort, UringEngine } from "../io/uring.ts";
import type { FuseServer } from "./server.ts";
import type { FuseDevice } from "./session.ts";
import { DevTransport, nextTurn } from "./transport_dev.ts";
import { statusReply } from "./wire.ts";

/** The kernel's switch for FUSE over io_uring. */
export const ENABLE_URING_PATH = "/sys/module/fuse/parameters/enable_uring";

const CMD_REGISTER = 1;
const CMD_COMMIT_AND_FETCH = 2;
/** Offsets in an entry's buffer: the header struct at 0, the payload at PAYLOAD_OFFSET. */
const OP_IN = 128;
const ENT_IN_OUT = 256;
const HEADER_BYTES = 288;
const IN_HEADER_SIZE = 40;
const OUT_HEADER_SIZE = 16;
/** Room before the payload to lay the in header and first argument in front of it, so that a
 * request is one contiguous view (the /dev/fuse layout the codec reads) without copying the
 * payload. */
const PAYLOAD_OFFSET = 512;
const POLLIN = 1;
/** user_data of the /dev/fuse POLL_ADD (entries use their index). */
const POLL_TAG = 0xffff_ffff;
/** Errors meaning the connection is gone (unmount, abort, daemon teardown). */
const GONE = new Set<number>([
  Errno.EBADF,
  107, /* ENOTCONN */
  103, /* ECONNABORTED */
  Errno.ECANCELED,
  Errno.ENODEV,
]);

/** Why FUSE over io_uring cannot run here (one line naming the fix), or undefined. */
export function uringUnavailable(): string | undefined {
  let text: string;
  try {
    text = Deno.readTextFileSync(ENABLE_URING_PATH);
  } catch {
    return `this kernel has no FUSE over io_uring (${ENABLE_URING_PATH} is missing: it needs ` +
      `Linux 6.14+ built with CONFIG_FUSE_IO_URING); set fuse.transport = "dev"`;
  }
  if (text.trim() !== "Y") {
    return `the kernel's FUSE over io_uring is off: run \`echo 1 > ${ENABLE_URING_PATH}\` ` +
      `as root, or set fuse.transport = "dev"`;
  }
  return undefined;
}

/** Number of possible CPUs (the kernel makes one queue per possible CPU). */
export function possibleCpus(): number {
  const text = Deno.readTextFileSync("/sys/devices/system/cpu/possible").trim();
  let highest = 0;
  for (const part of text.split(",")) {
    const ends = part.split("-").map(Number);
    highest = Math.max(highest, ...ends);
  }
  return highest + 1;
}

export interface FuseRingOptions {
  /** Ring entries per queue (config fuse.uring_depth). */
  depth: number;
  /** Largest request payload (the negotiated max_write). */
  payloadBytes: number;
  /** Queues; default one per possible CPU, which the kernel requires. */
  queues?: number;
  /** Task-work setup of the ring. Default "coop" (IORING_SETUP_COOP_TASKRUN with
   * TASKRUN_FLAG): the kernel hands a request to the daemon as task work; on a "plain" ring that
   * task work interrupts the JS thread with an IPI whenever it runs on another CPU (its idle spin
   * included), which on this VM cost about as much daemon CPU per request as the request itself
   * (src/fuse/README.md, "Daemon CPU per request on the ring"). A "coop" ring only flags the work:
   * the JS thread runs it at its next syscall (the event loop's epoll_wait mostly) or, when the
   * idle spin sees the flag (shared memory), at the reap's io_uring_enter; a parked thread is
   * still woken. */
  setup?: RingSetup;
  libraryPath?: string;
  /** The process's I/O engine: when it was opened with room for this ring's entries
   * (`clientSlots`, see `ringClientSlots`), the entries ride on its ring, and a reply goes to the
   * kernel in the same io_uring_enter as the disk I/O of the same event-loop turn; otherwise (or
   * without one) the transport opens a ring of its own. */
  engine?: UringEngine;
}

/** The engine's `clientSlots` a FUSE ring of `depth` entries per queue needs: every entry, the
 * /dev/fuse poll, and a spare. */
export function ringClientSlots(depth: number, queues = possibleCpus()): number {
  return queues * depth + 2;
}

/**
 * The I/O engine's options (UringEngineOptions) for a ring the FUSE entries will share: room for
 * them, and COOP_TASKRUN instead of the engine's default DEFER_TASKRUN: on a DEFER ring every
 * request's task work needs an io_uring_enter of its own, and the engine's muted submits write
 * the eventfd for requests that arrive meanwhile (1.59 enters and 0.71 writes per request
 * against 0.80 and none: src/fuse/README.md, "The replies share the engine's io_uring_enter").
 * (The other setups were measured with a temporary build; no knob is kept for them.)
 */
export function sharedRingOptions(
  depth: number,
  queues = possibleCpus(),
): { clientSlots: number; ringSetup: RingSetup } {
  return { clientSlots: ringClientSlots(depth, queues), ringSetup: "coop" };
}

interface Entry {
  index: number;
  qid: number;
  bytes: Uint8Array<ArrayBuffer>;
  view: DataView;
  /** struct iovec[2]: header, payload. */
  iov: BigUint64Array<ArrayBuffer>;
  iovAddr: number;
  commitId: bigint;
  live: boolean;
  /** The last completion of this entry was an error (see #failed). */
  failedBefore: boolean;
  send: (reply: Uint8Array | null, unique: bigint) => void;
}

/** Counts for SKYFS_DEBUG and the README's figures. */
export interface FuseRingStats {
  /** Submissions (each one io_uring_enter; on a "defer" ring every reap enters too; on a
   * "coop" ring a reap that finds task work flagged enters too, not counted here). */
  enters: number;
  /** Requests taken from ring entries. */
  requests: number;
  /** Times /dev/fuse turned readable while on the ring (FORGET, INTERRUPT). */
  devWakeups: number;
}

export class FuseRing {
  readonly queues: number;
  readonly depth: number;
  readonly setup: RingSetup;
  readonly stats: FuseRingStats = { enters: 0, requests: 0, devWakeups: 0 };
  /** The I/O engine's ring carries the entries (FuseRingOptions.engine); else #lib and #ring. */
  #port: RingPort | undefined;
  #lib: UringLibrary | undefined;
  #ring: Deno.PointerValue;
  #payloadBytes: number;
  #entries: Entry[] = [];
  #ops: Uint8Array<ArrayBuffer>;
  #opsView: DataView;
  #opsPointer: Deno.PointerObject;
  #staged = 0;
  #cqes: Uint8Array<ArrayBuffer>;
  #cqesView: DataView;
  #cqesPointer: Deno.PointerObject;
  #maxCqes: number;
  #flushQueued = false;
  #fd = -1;
  #server?: FuseServer;
  #dev?: DevTransport;
  #live = 0;
  #unmounted = false;
  #pollArmed = false;
  #waiting?: Promise<unknown>;
  /** start() is submitting the REGISTERs (shared ring): a failed one is noted here. */
  #registering = false;
  #registerError: number | undefined;
  /** start() failed on the engine's ring: its completions are ignored from then on. */
  #abandoned = false;
  #closed = false;
  /** requestStop() was called: the daemon is unmounting. */
  #stopping = false;

  private constructor(
    lib: UringLibrary | undefined,
    ring: Deno.PointerValue,
    options: Required<Omit<FuseRingOptions, "libraryPath" | "engine">>,
    engine?: UringEngine,
  ) {
    this.#lib = lib;
    this.#ring = ring;
    this.queues = options.queues;
    this.depth = options.depth;
    if (engine !== undefined) {
      this.#port = engine.attachClient({
        complete: (tag, res) => {
          // The engine's ring outlives us (see close()), and start() may have given up on it.
          if (this.#closed || this.#abandoned) return;
          this.#completion(tag, res);
        },
      }, ringClientSlots(this.depth, this.queues));
    }
    this.setup = this.#port?.ringSetup ?? options.setup;
    this.#payloadBytes = options.payloadBytes;
    const slots = this.queues * this.depth + 2;
    this.#ops = new Uint8Array(slots * OP_BYTES);
    this.#opsView = new DataView(this.#ops.buffer);
    this.#opsPointer = pointerOf(this.#ops.buffer);
    this.#maxCqes = slots * 2;
    this.#cqes = new Uint8Array(this.#maxCqes * CQE_BYTES);
    this.#cqesView = new DataView(this.#cqes.buffer);
    this.#cqesPointer = pointerOf(this.#cqes.buffer);
  }

  /**
   * Open the ring (before mounting, so that a failure is known before the kernel is told).
   * Throws an FsError whose message names the problem and the fix.
   */
  static open(options: FuseRingOptions): FuseRing {
    const unavailable = uringUnavailable();
    if (unavailable !== undefined) throw new FsError(Errno.EOPNOTSUPP, unavailable);
    const depth = options.depth;
    if (!Number.isInteger(depth) || depth < 1 || depth > 128) {
      throw new FsError(Errno.EINVAL, `fuse.uring_depth ${depth} is not an integer from 1 to 128`);
    }
    const queues = options.queues ?? possibleCpus();
    const setup = options.setup ?? "coop";
    if (options.engine !== undefined) {
      const shared = new FuseRing(undefined, null, {
        depth,
        queues,
        setup,
        payloadBytes: options.payloadBytes,
      }, options.engine);
      if (shared.shared) return shared;
    }
    const lib = loadUringLibrary(options.libraryPath ?? defaultLibraryPath());
    const error = new Int32Array(1);
    const entries = queues * depth + 2;
    const ring = lib.symbols.skyfs_uring_open_with(
      entries,
      RING_SETUPS[setup] | SETUP_SQE128 | SETUP_TASKRUN_FLAG,
      new Uint8Array(error.buffer),
    );
    if (ring === null) {
      lib.close();
      throw new FsError(
        -error[0],
        `cannot create the FUSE io_uring (${errnoName(-error[0])}; sysctl ` +
          `kernel.io_uring_disabled, seccomp or a container may forbid io_uring); set ` +
          `fuse.transport = "dev"`,
      );
    }
    return new FuseRing(lib, ring, { depth, queues, setup, payloadBytes: options.payloadBytes });
  }

  /** True when the entries ride on the I/O engine's ring (FuseRingOptions.engine). */
  get shared(): boolean {
    return this.#port !== undefined;
  }

  /** The IORING_SETUP_* flags the kernel gave the ring. */
  setupFlags(): number {
    return this.#port?.setupFlags() ?? this.#lib!.symbols.skyfs_uring_setup_flags(this.#ring);
  }

  describe(): string {
    return `io_uring, ${this.queues} queue${this.queues === 1 ? "" : "s"} x ${this.depth} ` +
      `entries (fuse.uring_depth), ${this.shared ? "on the I/O engine's ring" : "own ring"}`;
  }

  /**
   * Register every entry and arm the /dev/fuse poll; called right after the INIT reply that took
   * FUSE_OVER_IO_URING. Returns undefined, or why the kernel refused (it then serves /dev/fuse).
   */
  start(device: FuseDevice, server: FuseServer): string | undefined {
    // Our own descriptor: libfuse closes its fd when the daemon unmounts, and an SQE naming a
    // closed fd number (or one reused by another file) must never reach the kernel. Replies of
    // requests still being handled then go out through this one; close() closes it.
    this.#fd = dup(device.fd);
    if (this.#fd < 0) return "dup of the /dev/fuse fd failed";
    this.#server = server;
    this.#dev = new DevTransport(device, server);
    for (let qid = 0; qid < this.queues; qid++) {
      for (let i = 0; i < this.depth; i++) this.#entries.push(this.#newEntry(qid));
    }
    if (this.#port !== undefined) return this.#startShared(this.#port);
    for (const entry of this.#entries) {
      this.#stage(Op.URING_CMD, entry.iovAddr, 2, CMD_REGISTER, 0n, entry.qid, entry.index);
    }
    this.#armPoll();
    const n = this.#submitReap();
    if (n < 0) return `io_uring_enter failed: ${errnoName(-n)}`;
    // A REGISTER that worked completes only when a request arrives; one that failed completes
    // now with its error.
    for (let i = 0; i < n; i++) {
      const userData = this.#cqesView.getUint32(i * CQE_BYTES, true);
      const res = this.#cqesView.getInt32(i * CQE_BYTES + 8, true);
      if (userData !== POLL_TAG && res < 0) {
        return `FUSE_IO_URING_CMD_REGISTER failed: ${errnoName(-res)}`;
      }
    }
    this.#live = this.#entries.length;
    for (const entry of this.#entries) entry.live = true;
    this.#complete(n);
    return undefined;
  }

  /** start() on the engine's ring: a REGISTER that failed completes at once, in the pump. */
  #startShared(port: RingPort): string | undefined {
    this.#live = this.#entries.length;
    for (const entry of this.#entries) entry.live = true;
    this.#registering = true;
    for (const entry of this.#entries) {
      this.#stage(Op.URING_CMD, entry.iovAddr, 2, CMD_REGISTER, 0n, entry.qid, entry.index);
    }
    this.stats.enters++;
    port.pump();
    this.#registering = false;
    const errno = this.#registerError;
    if (errno !== undefined) {
      // The server serves /dev/fuse now, with its own reader: whatever the engine's reaps still
      // find of ours (entries that did register) must not drain /dev/fuse beside it.
      this.#abandoned = true;
      return `FUSE_IO_URING_CMD_REGISTER failed: ${errnoName(errno)}`;
    }
    this.#armPoll();
    return undefined;
  }

  /** Serve requests from the ring and /dev/fuse until the file system is unmounted. */
  async run(): Promise<void> {
    if (this.#port !== undefined) return await this.#runShared(this.#port);
    const server = this.#server!;
    const spinMs = server.idleSpinMs;
    const symbols = this.#lib!.symbols;
    while (!this.#done()) {
      if (this.#ready() && this.#pump() > 0) {
        await nextTurn(); // handlers run; their replies are staged and flushed by a microtask
        continue;
      }
      if (spinMs > 0 && await this.#spin(spinMs)) continue;
      if (this.#done()) break;
      // Park: clear the eventfd, reap once more (nothing is lost between the two), then wait
      // for the eventfd off-thread: one `nonblocking` call per idle period, not per request.
      this.#flushStaged();
      const n = symbols.skyfs_uring_prepare_wait(this.#ring, this.#cqesPointer, this.#maxCqes);
      this.stats.enters++;
      if (n > 0) {
        this.#complete(n);
        continue;
      }
      server.loopStats.wakeups++;
      this.#waiting = symbols.skyfs_uring_wait(this.#ring);
      await this.#waiting;
      this.#waiting = undefined;
    }
  }

  /** run() on the engine's ring: the same loop, with the engine's submit, reap and wait. */
  async #runShared(port: RingPort): Promise<void> {
    const server = this.#server!;
    const spinMs = server.idleSpinMs;
    while (!this.#done()) {
      if (this.#ready() && this.#pump() > 0) {
        await nextTurn();
        continue;
      }
      if (spinMs > 0 && await this.#spin(spinMs)) continue;
      if (this.#done()) break;
      server.loopStats.wakeups++;
      this.stats.enters++;
      this.#waiting = port.park();
      await this.#waiting;
      this.#waiting = undefined;
    }
  }

  /** Cancel what is left in the kernel and free the ring; call after run() and after the
   * requests still being handled replied. Safe to call twice, or without start(). On the
   * engine's ring nothing can be cancelled (the kernel ends FUSE entries only when the ring
   * goes, or the connection): our fd is closed, completions are ignored from now on, and the
   * entries end with the engine's shutdown(), which frees the ring; until then the connection
   * lives and requests the kernel still queues wait. */
  async close(): Promise<void> {
    if (this.#closed) return;
    if (this.#port !== undefined) {
      this.#closed = true;
      if (this.#waiting) this.#port.wake();
      this.#closeFd();
      return;
    }
    this.#closed = true;
    const symbols = this.#lib!.symbols;
    if (this.#waiting) {
      symbols.skyfs_uring_wake(this.#ring);
      await this.#waiting;
    }
    if (this.#entries.length > 0) {
      this.#stage(Op.CANCEL_ALL, 0, 0, 0, 0n, 0, 0);
      // Give cancellations a moment to complete (they complete inline for uring commands).
      for (let round = 0; round < 10; round++) {
        if (
          symbols.skyfs_uring_submit_reap(
              this.#ring,
              this.#opsPointer,
              this.#staged,
              this.#cqesPointer,
              this.#maxCqes,
              round === 0 ? 0 : 1_000_000,
            ) <= 0 && round > 0
        ) break;
        this.#staged = 0;
      }
    }
    symbols.skyfs_uring_close(this.#ring);
    this.#lib!.close();
    // The last reference to the /dev/fuse file (the ring's requests were cancelled with it):
    // the kernel ends the connection, and any request still queued fails for its caller.
    this.#closeFd();
  }

  #closeFd(): void {
    if (this.#fd >= 0) {
      try {
        closeFd(this.#fd);
      } catch { /* already gone with the connection: nothing left to release */ }
    }
    this.#fd = -1;
  }

  /** Something to submit, or completions to reap: posted ones, or (on a "defer" ring) ones the
   * kernel flagged (TASKRUN_FLAG) and the reap's enter will run. Shared memory, no syscall. */
  #ready(): boolean {
    if (this.#port !== undefined) return this.#port.ready();
    return this.#staged > 0 || this.#lib!.symbols.skyfs_uring_cq_ready(this.#ring) > 0;
  }

  #done(): boolean {
    return this.#unmounted || this.#live === 0 || this.#stopping;
  }

  /**
   * The daemon is unmounting (SIGTERM): leave run(), take no new requests (the kernel ends them
   * when the connection goes), and let the ones being handled reply through the ring. Needed
   * because the ring's waiting entries hold references to the /dev/fuse file: closing our fd does
   * not end the connection, as it does on the /dev/fuse transport, until close() cancels them
   * (a lazy unmount of a busy mount would otherwise keep the daemon waiting for ever).
   */
  requestStop(): void {
    if (this.#stopping || this.#closed) return;
    this.#stopping = true;
    if (this.#waiting === undefined) return;
    if (this.#port !== undefined) this.#port.wake();
    else this.#lib!.symbols.skyfs_uring_wake(this.#ring);
  }

  #newEntry(qid: number): Entry {
    const bytes = alignedBuffer(PAYLOAD_OFFSET + this.#payloadBytes);
    const base = addressOf(bytes);
    const iov = new BigUint64Array([
      BigInt(base),
      BigInt(HEADER_BYTES),
      BigInt(base + PAYLOAD_OFFSET),
      BigInt(this.#payloadBytes),
    ]);
    const entry: Entry = {
      index: this.#entries.length,
      qid,
      bytes,
      view: new DataView(bytes.buffer, bytes.byteOffset, PAYLOAD_OFFSET),
      iov,
      iovAddr: addressOf(iov),
      commitId: 0n,
      live: false,
      failedBefore: false,
      send: (reply) => this.#commit(entry, reply),
    };
    return entry;
  }

  #stage(
    opcode: number,
    addr: number,
    length: number,
    flags: number,
    offset: bigint,
    mode: number,
    userData: number,
  ): void {
    if (this.#port !== undefined) {
      // The cancel-all is never staged on the engine's ring (it would cancel the engine's ops).
      this.#port.stage(opcode, this.#fd, addr, length, flags, offset, mode, userData);
      return;
    }
    const dv = this.#opsView;
    const o = this.#staged++ * OP_BYTES;
    dv.setUint32(o, opcode, true); // opcode, no link, no async
    dv.setInt32(o + 4, opcode === Op.CANCEL_ALL ? 0 : this.#fd, true);
    dv.setBigUint64(o + 8, offset, true);
    dv.setUint32(o + 16, addr % 0x1_0000_0000, true);
    dv.setUint32(o + 20, Math.floor(addr / 0x1_0000_0000), true);
    dv.setBigUint64(o + 24, 0n, true);
    dv.setUint32(o + 32, length, true);
    dv.setUint32(o + 36, 0, true);
    dv.setUint32(o + 40, flags, true);
    dv.setUint32(o + 44, mode, true);
    dv.setUint32(o + 48, userData, true);
    dv.setUint32(o + 52, 0, true);
    dv.setBigUint64(o + 56, 0n, true);
  }

  #armPoll(): void {
    if (this.#pollArmed || this.#unmounted) return;
    this.#pollArmed = true;
    this.#stage(Op.POLL_ADD, 0, 0, POLLIN, 0n, 0, POLL_TAG);
  }

  /** Submit what is staged and copy out what has completed: one io_uring_enter. */
  #submitReap(): number {
    const n = this.#lib!.symbols.skyfs_uring_submit_reap(
      this.#ring,
      this.#opsPointer,
      this.#staged,
      this.#cqesPointer,
      this.#maxCqes,
      0,
    );
    if (this.#staged > 0 || this.setup === "defer") this.stats.enters++;
    if (n !== -Errno.EBUSY) this.#staged = 0;
    return n;
  }

  #flushStaged(): void {
    if (this.#staged === 0) return;
    const n = this.#submitReap();
    if (n > 0) this.#complete(n);
  }

  /** Submit staged replies and handle what completed; returns the completions handled. A
   * failing io_uring_enter (never seen; EBADF, ENOMEM) ends the ring's loop with one line, and
   * the server then falls back to /dev/fuse or finds the file system unmounted. */
  #pump(): number {
    if (this.#port !== undefined) {
      this.stats.enters++;
      return this.#port.pump();
    }
    let total = 0;
    for (;;) {
      const n = this.#submitReap();
      if (n < 0) {
        if (!this.#unmounted) console.error(`skyfs: FUSE io_uring submit failed: ${errnoName(-n)}`);
        this.#unmounted = true;
        return total;
      }
      this.#complete(n);
      total += n;
      if (n < this.#maxCqes) return total;
    }
  }

  #scheduleFlush(): void {
    if (this.#flushQueued || this.#port !== undefined) return; // the engine flushes its own

    this.#flushQueued = true;
    queueMicrotask(() => {
      this.#flushQueued = false;
      if (this.#closed) return;
      this.#pump();
    });
  }

  /** Event-loop turns, each followed by a look at the CQ ring (shared memory, no syscall on a
   * plain ring), for up to `spinMs`. True when a completion was handled. */
  async #spin(spinMs: number): Promise<boolean> {
    const until = performance.now() + spinMs;
    const before = this.stats.requests;
    do {
      await nextTurn();
      if (this.#done()) return false;
      // On the engine's ring the engine's own submits and reaps hand us requests too (a turn's
      // disk I/O reaped them): those count as found by the spin, which then starts over.
      if (this.stats.requests !== before) {
        this.#server!.loopStats.spinHits += this.stats.requests - before;
        return true;
      }
      if (this.#ready()) {
        const requests = this.stats.requests;
        if (this.#pump() > 0) {
          this.#server!.loopStats.spinHits += this.stats.requests - requests;
          return true;
        }
      }
    } while (performance.now() < until);
    return false;
  }

  /** Handle `n` completions copied into the CQE buffer. */
  #complete(n: number): void {
    const dv = this.#cqesView;
    for (let i = 0; i < n; i++) {
      this.#completion(dv.getUint32(i * CQE_BYTES, true), dv.getInt32(i * CQE_BYTES + 8, true));
    }
    if (this.#staged > 0) this.#scheduleFlush(); // a re-armed poll or re-registered entry
  }

  /** One completion: the /dev/fuse poll's or an entry's. */
  #completion(userData: number, res: number): void {
    if (userData === POLL_TAG) {
      this.#pollArmed = false;
      // On the engine's ring, the engine's cancel-all at its shutdown (after our close()).
      if (res === -Errno.ECANCELED && this.#port !== undefined) return;
      this.stats.devWakeups++;
      if (!this.#dev!.drain()) this.#unmounted = true;
      else this.#armPoll();
      return;
    }
    const entry = this.#entries[userData];
    if (entry === undefined) return; // the cancel-all
    if (res < 0) {
      if (this.#registering) {
        this.#registerError ??= -res;
        if (entry.live) {
          entry.live = false;
          this.#live--;
        }
        return;
      }
      this.#failed(entry, -res);
      return;
    }
    this.#deliver(entry);
  }

  #failed(entry: Entry, errno: number): void {
    if (GONE.has(errno) || this.#unmounted || this.#stopping || entry.failedBefore) {
      if (entry.live) {
        entry.live = false;
        this.#live--;
      }
      return;
    }
    // The kernel no longer knew the request (ENOENT: it was aborted) or refused the commit:
    // the entry is no longer registered, so register it again (once: a second failure in a row
    // retires it, so that a persistent error cannot spin).
    entry.failedBefore = true;
    this.#stage(Op.URING_CMD, entry.iovAddr, 2, CMD_REGISTER, 0n, entry.qid, entry.index);
  }

  /** Lay the request out as /dev/fuse would deliver it and hand it to the server. */
  #deliver(entry: Entry): void {
    entry.failedBefore = false;
    if (this.#stopping) return; // ended by the kernel when close() cancels the entries
    const view = entry.view;
    const len = view.getUint32(0, true);
    const payload = view.getUint32(ENT_IN_OUT + 16, true);
    entry.commitId = view.getBigUint64(ENT_IN_OUT + 8, true);
    const arg0 = len - IN_HEADER_SIZE - payload;
    this.stats.requests++;
    if (arg0 < 0 || arg0 > OP_IN || payload > this.#payloadBytes) {
      this.#commit(entry, statusReply(entry.commitId, Errno.EIO));
      return;
    }
    const bytes = entry.bytes;
    const start = PAYLOAD_OFFSET - IN_HEADER_SIZE - arg0;
    bytes.copyWithin(start, 0, IN_HEADER_SIZE);
    if (arg0 > 0) bytes.copyWithin(start + IN_HEADER_SIZE, OP_IN, OP_IN + arg0);
    this.#server!.handleRequest(bytes.subarray(start, PAYLOAD_OFFSET + payload), entry.send);
  }

  /** The reply into the entry's buffers, and COMMIT_AND_FETCH staged for this turn's submit. */
  #commit(entry: Entry, reply: Uint8Array | null): void {
    if (this.#closed || !entry.live) return;
    const out = reply ?? statusReply(entry.commitId, Errno.EIO);
    const bytes = entry.bytes;
    bytes.set(out.subarray(0, OUT_HEADER_SIZE), 0);
    const rest = out.byteLength - OUT_HEADER_SIZE;
    if (rest > 0) bytes.set(out.subarray(OUT_HEADER_SIZE), PAYLOAD_OFFSET);
    entry.view.setUint32(ENT_IN_OUT + 16, rest, true);
    this.#stage(
      Op.URING_CMD,
      entry.iovAddr,
      2,
      CMD_COMMIT_AND_FETCH,
      entry.commitId,
      entry.qid,
      entry.index,
    );
    this.#scheduleFlush();
  }
}
