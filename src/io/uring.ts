/**
 * The io_uring I/O engine: every operation becomes one SQE of a single ring, submissions made in
 * one turn of the event loop go to the kernel in one io_uring_enter (flushed from a microtask),
 * and completions are harvested many at a time, so JS crosses into native code a few times per
 * batch instead of once per I/O (FACTS.md: a `nonblocking` call costs about 13 us).
 *
 * How completions come back: the submit call itself (one synchronous FFI call that submits with
 * one io_uring_enter) copies out whatever completed inline (page-cache reads usually do) and, when
 * nothing did, waits up to `spinUs` for a first completion from io-wq (ext4 buffered writes,
 * fsync): it polls the ring for the first `pollUs`, then sleeps in a timed io_uring_enter. Writes to buffered regular
 * files carry IOSQE_ASYNC (see `writesAsync`); the ring is SINGLE_ISSUER | DEFER_TASKRUN. If ops
 * are still in the kernel after that, one `nonblocking` call waits on the ring's eventfd; when it
 * returns, a synchronous reap takes every completion that has arrived. lib/uring/skyfs_uring.h
 * documents the native side.
 * @module
 */

import { Errno, FsError } from "../fs_error.ts";
import type { IoEngine, StatxResult } from "./types.ts";
import {
  addressOf,
  AT_FDCWD,
  CQE_BYTES,
  defaultLibraryPath,
  FD_DIRECT,
  FD_REGULAR,
  HEAD_ASYNC,
  HEAD_LINK,
  IORING_FSYNC_DATASYNC,
  IORING_SETUP_COOP_TASKRUN,
  IORING_SETUP_DEFER_TASKRUN,
  IORING_SETUP_SQE128,
  loadUringLibrary,
  Op,
  OP_BYTES,
  OP_NAMES,
  pointerOf,
  RING_SETUPS,
  type RingSetup,
  SETUP_SQE128,
  SETUP_TASKRUN_FLAG,
  STATX_BASIC_STATS,
  type UringLibrary,
  type UringSymbols,
} from "./uring_native.ts";
import { SpinPolicy } from "./uring_spin.ts";

export interface UringEngineOptions {
  /** Operations in the kernel at once; callers beyond it wait for a slot. Default 256. */
  queueDepth?: number;
  /** Path of libskyfs_uring.so. Default lib/uring/build/ of this tree (config io.uring_lib). */
  libraryPath?: string;
  /** shutdown() cancels what is still in flight after this long. Default 5000 ms. */
  shutdownCancelAfterMs?: number;
  /**
   * How long a submit may block the JS thread in the kernel waiting for a first completion when
   * none came inline, in microseconds, before the engine learns better (uring_spin.ts); 0 never
   * blocks (completions then always come through a `nonblocking` wait). Default 50.
   */
  spinUs?: number;
  /** The longest spin the engine may learn, in microseconds. Default 300 (a 1 MiB ext4 write). */
  maxSpinUs?: number;
  /**
   * The first part of a spin polls the ring (yielding the CPU between looks) instead of sleeping
   * in a timed io_uring_enter, whose timer costs VM exits; in microseconds, 0 never polls.
   * Default 20 (lib/uring/skyfs_uring.h SKYFS_URING_POLL_NS).
   */
  pollUs?: number;
  /**
   * Send writes to buffered regular files with IOSQE_ASYNC (see `UringEngine.writesAsync`).
   * Default true; false only to measure the difference (bench/io/write_paths.ts).
   */
  asyncBufferedWrites?: boolean;
  /**
   * The ring's task-work setup: "defer" (IORING_SETUP_SINGLE_ISSUER | DEFER_TASKRUN: this thread
   * runs completions at its next kernel entry, so io-wq workers do not post them), "coop"
   * (COOP_TASKRUN) or "plain"; an older kernel gets the next one down. Default "defer" (measured
   * best for buffered writes, src/io/README.md); the others exist to measure against it.
   */
  ringSetup?: RingSetup;
  /**
   * Room for a ring client's operations (`attachClient`: FUSE over io_uring), which then ride
   * in this engine's submissions; more than 0 also gives the ring 128-byte SQEs
   * (IORING_SETUP_SQE128, which the client's URING_CMD needs) and, on a "coop" ring,
   * TASKRUN_FLAG. Default 0: no client, 64-byte SQEs.
   */
  clientSlots?: number;
}

/**
 * Something else that puts operations of its own on the engine's ring: FUSE over io_uring
 * (src/fuse/transport_uring.ts), whose replies then go to the kernel in the same io_uring_enter
 * as the disk I/O of the same event-loop turn. Its operations may wait in the kernel for ever (a
 * FUSE entry waits for the next request): they never count as in flight, so the engine neither
 * spins nor waits for them, and shutdown() does not wait for them either.
 */
export interface RingClient {
  /** A completion of one of the client's operations, with the tag it staged (0 .. 2^31-1).
   * Called from inside the engine's reap: it may stage operations, never reap. */
  complete(tag: number, res: number): void;
}

/** What a client drives the shared ring with (`UringEngine.attachClient`). */
export interface RingPort {
  /** Stages one operation (a `struct skyfs_uring_op`) for the next submit of this turn, which a
   * microtask makes (one io_uring_enter for the client's and the engine's operations). */
  stage(
    opcode: number,
    fd: number,
    addr: number,
    length: number,
    flags: number,
    offset: bigint,
    mode: number,
    tag: number,
  ): void;
  /** Something staged, or completions to reap (posted, or flagged as task work): shared
   * memory, no syscall. */
  ready(): boolean;
  /** Submits what is staged (or reaps when nothing is) now; returns the client's completions
   * handled. */
  pump(): number;
  /** Resolves once a completion of the client was handled, or wake() was called; the engine's
   * one off-thread wait on the ring's eventfd serves both. */
  park(): Promise<void>;
  /** Ends a park(). */
  wake(): void;
  /** The IORING_SETUP_* flags of the ring. */
  setupFlags(): number;
  /** The ring's task-work setup. */
  readonly ringSetup: RingSetup;
}

/** JS<->native crossings, for the benchmark's "crossings per completed I/O". */
export interface UringStats {
  /** Operations handed to the kernel (SQEs submitted). */
  submissions: number;
  /** Operations completed (a linked write+fsync counts two; internal cancels none). */
  completions: number;
  /** Synchronous submit calls: one io_uring_enter each. */
  submitCalls: number;
  /** Synchronous reap calls (with DEFER_TASKRUN one non-waiting io_uring_enter each, else none). */
  reapCalls: number;
  /** `nonblocking` wait calls (about 13 us each). */
  waitCalls: number;
  /** SQEs the native side prepared with IOSQE_ASYNC (writes to buffered regular files). */
  asyncWrites: number;
  /** fcntl(F_GETFL)+fstat calls that learned how to write to an fd (one synchronous call each). */
  fdProbes: number;
  /** Operations of the ring client (attachClient) submitted with the engine's submit calls. */
  clientSubmissions: number;
  /** Submit calls that carried the client's operations and the engine's together (one
   * io_uring_enter where there would have been two rings' each). */
  sharedSubmits: number;
}

const O_CLOEXEC = 0o2000000;
const O_DIRECT = 0o40000;
const SOCK_CLOEXEC = 0o2000000;
const MSG_NOSIGNAL = 0x4000;
const MSG_WAITALL = 0x100;
/**
 * How many writes an fd's learned write mode serves before it is learned again: bounds how long a
 * stale answer lives when the fd was closed and its number reused outside the engine, or O_DIRECT
 * was switched with fcntl(F_SETFL). One fcntl+fstat (about 1 us) per this many writes.
 */
const FD_RELEARN_WRITES = 4096;
/** fds beyond this are not tracked: their writes never get IOSQE_ASYNC. */
const FD_TABLE_MAX = 1 << 20;
/** The kernel caps one read or write at this many bytes (MAX_RW_COUNT); longer ones continue.
 * Never applied to a fallocate length. */
const MAX_RW_BYTES = 0x7ffff000;
const IOV_MAX = 1024;
const STATX_BYTES = 256;
/** user_data of internal cancel requests: no slot. */
const CANCEL_TAG = 0xffffffff;
/** High word of the user_data of a ring client's operations (an engine slot's is 0). */
const CLIENT_HIGH = 1;

const U32 = 0x1_0000_0000;

const enum Result {
  /** Resolve with the CQE result. */
  Count,
  /** Resolve with undefined. */
  Void,
}

/** One operation from the call until its completion; it holds the buffers the kernel uses. */
interface Request {
  opcode: number;
  link: boolean;
  fd: number;
  offset: number;
  addr: number;
  addr2: number;
  length: number;
  flags: number;
  mode: number;
  result: Result;
  /** Bytes done by earlier parts of a read or write that the kernel cut short. */
  done: number;
  /** Kept referenced so the GC cannot free memory the kernel still writes or reads. */
  keep: unknown;
  /** For error messages: a path, or undefined to describe fd, length and offset. */
  what: string | undefined;
  resolve: (value: number | undefined) => void;
  reject: (error: Error) => void;
}

/** A group of requests that must reach the kernel together (a linked pair), or one request. */
type Group = Request[];
const SETTLED_GROUP: Group = [];

const enum State {
  Open,
  Closing,
  Closed,
}

const encoder = new TextEncoder();

/** A NUL-terminated copy of a path in its own ArrayBuffer, whose bytes never move. */
function cPath(path: string): Uint8Array {
  if (path.includes("\0")) {
    throw new FsError(Errno.EINVAL, `path ${JSON.stringify(path)} contains a NUL byte`);
  }
  const bytes = encoder.encode(path);
  const out = new Uint8Array(new ArrayBuffer(bytes.length + 1));
  out.set(bytes);
  return out;
}

function checkOffset(offset: number): void {
  // -1 would mean "the file position" to io_uring: never let it through by accident.
  if (!Number.isSafeInteger(offset) || offset < 0) {
    throw new FsError(Errno.EINVAL, `offset ${offset} is not a non-negative integer`);
  }
}

function parseStatx(raw: ArrayBuffer): StatxResult {
  const view = new DataView(raw);
  return {
    mode: view.getUint16(28, true),
    ino: Number(view.getBigUint64(32, true)),
    size: Number(view.getBigUint64(40, true)),
    blocks: Number(view.getBigUint64(48, true)),
  };
}

/**
 * Opens an io_uring engine. Throws FsError when io_uring cannot be used here: ENOSYS (no
 * io_uring in the kernel), EPERM (io_uring_disabled sysctl, seccomp, a container), ENOENT (the
 * library is not built), or the errno of whatever else failed; the message names the fix.
 */
export function openUringEngine(options: UringEngineOptions = {}): UringEngine {
  const depth = options.queueDepth ?? 256;
  if (!Number.isInteger(depth) || depth < 1 || depth > 4096) {
    throw new RangeError(`queueDepth ${depth} is out of range: use 1..4096`);
  }
  const spin = new SpinPolicy({
    baseUs: options.spinUs ?? 50,
    maxUs: options.maxSpinUs ?? Math.max(300, options.spinUs ?? 50),
  });
  const library = loadUringLibrary(options.libraryPath ?? defaultLibraryPath());
  const symbols = library.symbols;
  const error = new Int32Array(1);
  // SQ over twice the depth: room for a full batch plus a cancel even beside SQEs a transient
  // EAGAIN left queued; the CQ (twice the SQ) cannot overflow with depth + 1 in the kernel.
  const setup = options.ringSetup ?? "defer";
  if (!(setup in RING_SETUPS)) {
    library.close();
    throw new RangeError(`ringSetup "${setup}" is unknown: use defer, coop or plain`);
  }
  const clientSlots = options.clientSlots ?? 0;
  if (!Number.isInteger(clientSlots) || clientSlots < 0 || clientSlots > 65536) {
    library.close();
    throw new RangeError(`clientSlots ${clientSlots} is out of range: use 0..65536`);
  }
  // TASKRUN_FLAG on a "defer" ring: a submit that mutes the eventfd for the completions it reaps
  // itself (skyfs_uring_submit_reap) sees task work that came meanwhile in shared memory, where
  // it would otherwise need one more io_uring_enter.
  // A client (FUSE over io_uring) needs 128-byte SQEs, and TASKRUN_FLAG on a "coop" ring too,
  // so that its idle spin sees flagged work in shared memory.
  const ring = symbols.skyfs_uring_open_with(
    (depth + clientSlots) * 2 + 2,
    RING_SETUPS[setup] |
      (setup === "defer" || (setup === "coop" && clientSlots > 0) ? SETUP_TASKRUN_FLAG : 0) |
      (clientSlots > 0 ? SETUP_SQE128 : 0),
    new Uint8Array(error.buffer),
  );
  if (ring === null) {
    library.close();
    const errno = -error[0];
    const hint = errno === Errno.EPERM
      ? "io_uring is forbidden here (sysctl kernel.io_uring_disabled, seccomp or a container)"
      : errno === Errno.ENOSYS
      ? "this kernel has no io_uring"
      : "io_uring_queue_init failed";
    throw new FsError(errno, `${hint}; set SKYFS_IO=portable to use the portable engine`);
  }
  if (options.pollUs !== undefined) {
    if (!(options.pollUs >= 0 && options.pollUs <= 1_000_000)) {
      symbols.skyfs_uring_close(ring);
      library.close();
      throw new RangeError(`pollUs ${options.pollUs} is out of range: use 0..1000000`);
    }
    symbols.skyfs_uring_set_poll_ns(ring, Math.round(options.pollUs * 1000));
  }
  const missing = symbols.skyfs_uring_probe(ring);
  if (missing !== -1) {
    symbols.skyfs_uring_close(ring);
    library.close();
    const what = missing >= 0 ? `operation "${OP_NAMES[missing]}"` : `probing (errno ${-missing})`;
    throw new FsError(
      missing >= 0 ? Errno.ENOSYS : -missing,
      `this kernel's io_uring lacks ${what}; set SKYFS_IO=portable to use the portable engine`,
    );
  }
  return new UringEngine(
    library,
    ring,
    depth,
    spin,
    options.shutdownCancelAfterMs ?? 5000,
    options.asyncBufferedWrites ?? true,
    symbols.skyfs_uring_probe_net(ring) === -1,
    clientSlots,
  );
}

export class UringEngine implements IoEngine {
  readonly kind = "io_uring" as const;
  readonly queueDepth: number;
  /**
   * Whether this kernel's io_uring has the socket ops (splice, recv, send, accept, connect):
   * src/cluster's zero-copy peer transport needs them; disk I/O does not.
   */
  readonly socketOps: boolean;

  #library: UringLibrary;
  #native: UringSymbols;
  #ring: Deno.PointerObject;
  #state = State.Open;
  #shutdownCancelAfterMs: number;

  /** Requests by slot; a slot number is the request's user_data. */
  #slots: (Request | undefined)[];
  #freeSlots: Int32Array;
  #freeCount: number;
  /** Groups waiting for slots, in arrival order, from #waitersHead on. */
  #waiters: Group[] = [];
  #waitersHead = 0;

  /** Records of `struct skyfs_uring_op` staged for the next submit. */
  #opWords: Uint32Array;
  #opPointer: Deno.PointerObject;
  #staged = 0;
  /** Of the staged ops, the ring client's. */
  #stagedClient = 0;
  #clientSlots: number;
  #client: RingClient | undefined;
  /** Resolves the client's park(). */
  #clientParked: (() => void) | undefined;
  /** Completions of the client handled since the engine opened. */
  #clientHandled = 0;
  /** Staged ops that are not socket ops (only those may spin). */
  #stagedDisk = 0;
  #flushScheduled = false;
  #flush = () => this.#submitStaged();

  #cqeWords: Int32Array;
  #cqePointer: Deno.PointerObject;
  #cqeCapacity: number;
  /** Requests the kernel holds (slot requests plus internal cancels). */
  #inKernel = 0;
  #waitPromise: Promise<void> | undefined;
  #onWake = (rc: number) => this.#woken(rc);
  #retryTimer: ReturnType<typeof setTimeout> | undefined;

  #spin: SpinPolicy;

  #cancelRequested = false;
  #shutdownPromise: Promise<void> | undefined;
  #idle: (() => void) | undefined;

  #stats: UringStats = {
    submissions: 0,
    completions: 0,
    submitCalls: 0,
    reapCalls: 0,
    waitCalls: 0,
    asyncWrites: 0,
    fdProbes: 0,
    clientSubmissions: 0,
    sharedSubmits: 0,
  };

  /**
   * How to write to each fd, by fd number: 0 unknown; +n writes get IOSQE_ASYNC (a buffered
   * regular file), -n do not (O_DIRECT, a FIFO, a socket); n counts down to the next re-learn.
   */
  #fdWriteMode = new Int32Array(64);
  #asyncBufferedWrites: boolean;
  #setupFlags: number;

  constructor(
    library: UringLibrary,
    ring: Deno.PointerObject,
    depth: number,
    spin: SpinPolicy,
    shutdownCancelAfterMs: number,
    asyncBufferedWrites: boolean,
    socketOps: boolean,
    clientSlots = 0,
  ) {
    this.socketOps = socketOps;
    this.#clientSlots = clientSlots;
    this.#asyncBufferedWrites = asyncBufferedWrites;
    this.#setupFlags = library.symbols.skyfs_uring_setup_flags(ring);
    this.#library = library;
    this.#native = library.symbols;
    this.#ring = ring;
    this.queueDepth = depth;
    this.#shutdownCancelAfterMs = shutdownCancelAfterMs;
    this.#spin = spin;
    this.#slots = new Array(depth).fill(undefined);
    this.#freeSlots = new Int32Array(depth);
    for (let i = 0; i < depth; i++) this.#freeSlots[i] = depth - 1 - i;
    this.#freeCount = depth;
    const opBuffer = new ArrayBuffer((depth + 2 + clientSlots) * OP_BYTES);
    this.#opWords = new Uint32Array(opBuffer);
    this.#opPointer = pointerOf(opBuffer);
    this.#cqeCapacity = this.#native.skyfs_uring_entries(ring) * 2;
    const cqeBuffer = new ArrayBuffer(this.#cqeCapacity * CQE_BYTES);
    this.#cqeWords = new Int32Array(cqeBuffer);
    this.#cqePointer = pointerOf(cqeBuffer);
  }

  /** Operations holding a slot (staged, in the kernel, or being continued). */
  get inFlight(): number {
    return this.queueDepth - this.#freeCount;
  }

  /** Operations waiting for a slot. */
  get queued(): number {
    let count = 0;
    for (let i = this.#waitersHead; i < this.#waiters.length; i++) {
      count += this.#waiters[i].length;
    }
    return count;
  }

  /** A copy of the crossing counters since the engine opened. */
  stats(): UringStats {
    if (this.#state !== State.Closed) {
      this.#stats.asyncWrites = this.#native.skyfs_uring_async_count(this.#ring);
    }
    return { ...this.#stats };
  }

  /** Which task-work setup the ring got: "defer", "coop" or "plain" (see `ringSetup`). */
  get ringSetup(): RingSetup {
    return this.#setupFlags & IORING_SETUP_DEFER_TASKRUN
      ? "defer"
      : this.#setupFlags & IORING_SETUP_COOP_TASKRUN
      ? "coop"
      : "plain";
  }

  /**
   * Puts a ring client (FUSE over io_uring) on this engine's ring: its operations are staged
   * beside the engine's and go to the kernel in the same io_uring_enter, and its completions are
   * handed to `client.complete` by whichever reap finds them. Undefined when the ring cannot
   * carry them (opened without `clientSlots` or with too few for `slots`, the engine closing,
   * or a client already attached): the client then opens a ring of its own.
   */
  attachClient(client: RingClient, slots: number): RingPort | undefined {
    if (
      this.#client !== undefined || this.#state !== State.Open || slots > this.#clientSlots ||
      (this.#setupFlags & IORING_SETUP_SQE128) === 0
    ) {
      return undefined;
    }
    this.#client = client;
    const ringSetup = this.ringSetup;
    return {
      stage: (opcode, fd, addr, length, flags, offset, mode, tag) =>
        this.#stageClient(opcode, fd, addr, length, flags, offset, mode, tag),
      ready: () => this.#clientReady(),
      pump: () => this.#pumpClient(),
      park: () => this.#parkClient(),
      wake: () => this.#wakeClient(),
      setupFlags: () => this.#setupFlags,
      ringSetup,
    };
  }

  open(path: string, flags: number, mode = 0o600): Promise<number> {
    return this.#closed("open") ??
      this.#pathOp(Op.OPENAT, path, flags | O_CLOEXEC, mode, Result.Count) as Promise<number>;
  }

  close(fd: number): Promise<void> {
    const closed = this.#closed("close");
    if (closed) return closed;
    this.#forgetFd(fd);
    return (
      this.#one(Op.CLOSE, fd, 0, 0, 0, 0, 0, undefined, Result.Void) as Promise<void>
    );
  }

  forgetFd(fd: number): void {
    this.#forgetFd(fd);
  }

  /**
   * Whether writes to `fd` are sent with IOSQE_ASYNC: yes for a buffered regular file, no for
   * O_DIRECT and anything else. For fds opened through this engine it comes from the open flags;
   * for others it is learned once with fcntl(F_GETFL) and fstat, then cached until `close()`
   * (or the next open that returns the same fd number) and re-learned every 4096 writes.
   */
  writesAsync(fd: number): boolean {
    return this.#writeMode(fd) > 0;
  }

  read(fd: number, into: Uint8Array, offset: number): Promise<number> {
    return this.#closed("read") ?? this.#rw(Op.READ, fd, into, offset);
  }

  write(fd: number, data: Uint8Array, offset: number): Promise<number> {
    return this.#closed("write") ?? this.#rw(Op.WRITE, fd, data, offset);
  }

  async readv(fd: number, into: Uint8Array[], offset: number): Promise<number> {
    await this.#closed("readv");
    const total = into.reduce((sum, part) => sum + part.byteLength, 0);
    const n = await this.#vector(Op.READV, fd, into, offset);
    // The kernel may stop early (a signal, a page-cache race): finish with plain reads, so a
    // short count means end of file as with read().
    if (n === 0 || n === total) return n;
    return n + await this.#finishVector(Op.READ, fd, into, offset, n);
  }

  async writev(fd: number, data: Uint8Array[], offset: number): Promise<number> {
    await this.#closed("writev");
    const total = data.reduce((sum, part) => sum + part.byteLength, 0);
    const n = await this.#vector(Op.WRITEV, fd, data, offset);
    if (n === 0 || n === total) return n;
    return n + await this.#finishVector(Op.WRITE, fd, data, offset, n);
  }

  fsync(fd: number, options?: { datasync?: boolean }): Promise<void> {
    const flags = options?.datasync ? IORING_FSYNC_DATASYNC : 0;
    return this.#closed("fsync") ??
      this.#one(Op.FSYNC, fd, 0, 0, 0, 0, flags, undefined, Result.Void) as Promise<void>;
  }

  /**
   * pwrite then fdatasync as one linked pair (IOSQE_IO_LINK): one submission, and the sync starts
   * only after the write succeeded. If the kernel cut the write short it cancels the sync; the
   * rest of the write and a separate sync then follow.
   */
  writeAndSync(fd: number, data: Uint8Array, offset: number): Promise<number> {
    const closed = this.#closed("writeAndSync");
    if (closed) return closed;
    try {
      checkOffset(offset);
    } catch (error) {
      return Promise.reject(error);
    }
    const write = this.#request(Op.WRITE, fd, offset, addressOf(data), 0, data.byteLength, 0, 0);
    write.keep = data;
    write.link = true;
    const sync = this.#request(Op.FSYNC, fd, 0, 0, 0, 0, IORING_FSYNC_DATASYNC, 0);
    sync.result = Result.Void;
    const written = new Promise<number>((resolve, reject) => {
      write.resolve = resolve as (value: number | undefined) => void;
      write.reject = reject;
    });
    const synced = new Promise<void>((resolve, reject) => {
      sync.resolve = resolve as (value: number | undefined) => void;
      sync.reject = reject;
    });
    this.#admit([write, sync]);
    return Promise.allSettled([written, synced]).then(([w, s]) => {
      if (w.status === "rejected") throw w.reason;
      if (s.status === "fulfilled") return w.value;
      const cancelled = s.reason instanceof FsError && s.reason.errno === Errno.ECANCELED;
      if (!cancelled || this.#cancelRequested) throw s.reason;
      // Not this.fsync(): the pair was accepted, so its sync must run even while closing.
      return this.#one(Op.FSYNC, fd, 0, 0, 0, 0, IORING_FSYNC_DATASYNC, undefined, Result.Void)
        .then(() => w.value);
    });
  }

  fallocate(fd: number, mode: number, offset: number, length: number): Promise<void> {
    const closed = this.#closed("fallocate");
    if (closed) return closed;
    try {
      checkOffset(offset);
      checkOffset(length);
    } catch (error) {
      return Promise.reject(error);
    }
    return this.#one(
      Op.FALLOCATE,
      fd,
      offset,
      0,
      0,
      length,
      mode,
      undefined,
      Result.Void,
    ) as Promise<
      void
    >;
  }

  async statx(path: string): Promise<StatxResult> {
    await this.#closed("statx");
    const raw = new ArrayBuffer(STATX_BYTES);
    const bytes = cPath(path);
    await this.#one(
      Op.STATX,
      AT_FDCWD,
      0,
      addressOf(bytes),
      addressOf(new Uint8Array(raw)),
      0,
      0,
      [bytes, raw],
      Result.Void,
      JSON.stringify(path),
      STATX_BASIC_STATS,
    );
    return parseStatx(raw);
  }

  unlink(path: string): Promise<void> {
    return this.#closed("unlink") ??
      this.#pathOp(Op.UNLINKAT, path, 0, 0, Result.Void) as Promise<void>;
  }

  async rename(from: string, to: string): Promise<void> {
    await this.#closed("rename");
    const fromBytes = cPath(from);
    const toBytes = cPath(to);
    await this.#one(
      Op.RENAMEAT,
      AT_FDCWD,
      0,
      addressOf(fromBytes),
      addressOf(toBytes),
      0,
      0,
      [fromBytes, toBytes],
      Result.Void,
      `${JSON.stringify(from)} -> ${JSON.stringify(to)}`,
    );
  }

  // ---- sockets and pipes (src/cluster's peer transport; see socketOps) ----

  /** recv(2) into `into` (flags: MSG_WAITALL to fill it unless the peer closes or fails). */
  recv(fd: number, into: Uint8Array, flags = 0): Promise<number> {
    return this.#closed("recv") ??
      this.#one(
        Op.RECV,
        fd,
        0,
        addressOf(into),
        0,
        into.byteLength,
        flags,
        into,
        Result.Count,
      ) as Promise<number>;
  }

  /**
   * Two recv(2)s on one socket linked in one submission (IOSQE_IO_LINK): `first` is filled
   * (MSG_WAITALL) before `second` starts, with no return to JS in between (a frame header,
   * then its payload). Resolves to the two byte counts; when `first` comes back short (the peer
   * closed), `second` is cancelled and counts -1.
   */
  async recvPair(fd: number, first: Uint8Array, second: Uint8Array): Promise<[number, number]> {
    await this.#closed("recv");
    const a = this.#request(Op.RECV, fd, 0, addressOf(first), 0, first.byteLength, MSG_WAITALL, 0);
    a.keep = first;
    a.link = true;
    const b = this.#request(
      Op.RECV,
      fd,
      0,
      addressOf(second),
      0,
      second.byteLength,
      MSG_WAITALL,
      0,
    );
    b.keep = second;
    const results = [a, b].map((request) =>
      new Promise<number>((resolve, reject) => {
        request.resolve = resolve as (value: number | undefined) => void;
        request.reject = reject;
      })
    );
    this.#admit([a, b]);
    const [x, y] = await Promise.allSettled(results);
    if (x.status === "rejected") throw x.reason;
    if (y.status === "fulfilled") return [x.value, y.value];
    const cancelled = y.reason instanceof FsError && y.reason.errno === Errno.ECANCELED;
    if (cancelled && x.value < first.byteLength) return [x.value, -1];
    throw y.reason;
  }

  /** send(2) of `data` (MSG_NOSIGNAL is added: a closed peer is EPIPE, not a signal). */
  send(fd: number, data: Uint8Array, flags = 0): Promise<number> {
    return this.#closed("send") ??
      this.#one(
        Op.SEND,
        fd,
        0,
        addressOf(data),
        0,
        data.byteLength,
        flags | MSG_NOSIGNAL,
        data,
        Result.Count,
      ) as Promise<number>;
  }

  /** accept4(2) on a listening socket; resolves to the new connection's fd (close-on-exec). */
  accept(fd: number): Promise<number> {
    return this.#closed("accept") ??
      this.#one(Op.ACCEPT, fd, 0, 0, 0, 0, SOCK_CLOEXEC, undefined, Result.Count) as Promise<
        number
      >;
  }

  /** connect(2) of socket `fd` to a `struct sockaddr` (src/io/libc.ts sockaddrIn). */
  connect(fd: number, sockaddr: Uint8Array): Promise<void> {
    const bytes = sockaddr.slice(); // its own ArrayBuffer: the kernel reads it later
    return this.#closed("connect") ??
      this.#one(
        Op.CONNECT,
        fd,
        0,
        addressOf(bytes),
        0,
        bytes.byteLength,
        0,
        bytes,
        Result.Void,
      ) as Promise<void>;
  }

  /**
   * splice(2) of up to `length` bytes from `fdIn` (at `offsetIn`, or -1 for a pipe or socket)
   * to `fdOut` (at `offsetOut`, or -1). One of the two must be a pipe. Resolves to the bytes
   * moved (short at end of file, or when the pipe is full).
   */
  splice(
    fdIn: number,
    offsetIn: number,
    fdOut: number,
    offsetOut: number,
    length: number,
  ): Promise<number> {
    return this.#closed("splice") ??
      this.#one(
        Op.SPLICE,
        fdIn,
        offsetIn,
        fdOut,
        offsetOut,
        length,
        0,
        undefined,
        Result.Count,
      ) as Promise<number>;
  }

  /**
   * `length` bytes of file `fd` from `offset` to socket `socket` without passing through user
   * space: file -> pipe -> socket, two splices per piece of at most the pipe's capacity
   * (`pipeBytes`), the page-cache pages referenced, not copied. Up to 16 pieces go to the
   * kernel as one linked chain, which one io-wq worker runs from end to end without coming
   * back to JS between pieces. `pipe` is [read end, write end], empty on entry and again on
   * success; after a failure it may hold bytes: close it. Rejects with the errno of the splice
   * that failed (EPIPE, ECONNRESET: the peer left), or EIO when the file ended early.
   */
  async spliceToSocket(
    fd: number,
    offset: number,
    length: number,
    pipe: [number, number],
    pipeBytes: number,
    socket: number,
  ): Promise<void> {
    await this.#closed("splice");
    checkOffset(offset);
    // At most a quarter of the slots: a chain waiting for slots held by ops that wait for the
    // peer (a recv) would never start.
    const chain = Math.max(1, Math.min(16, Math.floor(this.queueDepth / 8)));
    let done = 0; // bytes taken from the file, in order
    let inPipe = 0; // of which not yet sent
    const settle = (request: Request) =>
      new Promise<number>((resolve, reject) => {
        request.resolve = resolve as (value: number | undefined) => void;
        request.reject = reject;
      });
    const cancelled = (reason: unknown) =>
      reason instanceof FsError && reason.errno === Errno.ECANCELED && !this.#cancelRequested;
    while (done < length) {
      const requests: Request[] = [];
      const sizes: number[] = [];
      for (let at = done; at < length && sizes.length < chain;) {
        // A pipe holds whole pages: a piece starting inside a page fits only to the boundary.
        const n = Math.min(pipeBytes - ((offset + at) % 4096), length - at);
        const fill = this.#request(Op.SPLICE, fd, offset + at, pipe[1], -1, n, 0, 0);
        const drain = this.#request(Op.SPLICE, pipe[0], -1, socket, -1, n, 0, 0);
        fill.link = true;
        drain.link = true;
        fill.what = `fd ${fd}, ${n} bytes at ${offset + at} -> pipe`;
        drain.what = `pipe -> socket ${socket}, ${n} bytes`;
        requests.push(fill, drain);
        sizes.push(n);
        at += n;
      }
      requests[requests.length - 1].link = false;
      const results = requests.map(settle);
      this.#admit(requests);
      const settled = await Promise.allSettled(results);
      // In order: a short splice or a failure cancels the rest of the chain (the next round
      // goes on from there); a short drain leaves its bytes in the pipe, in order, ahead of
      // anything filled after. A fill of nothing is the end of the file.
      let ended = false;
      let short = false;
      let failure: unknown;
      for (let i = 0; i < sizes.length; i++) {
        const [f, d] = [settled[2 * i], settled[2 * i + 1]];
        if (f.status === "rejected") {
          if (!cancelled(f.reason)) failure ??= f.reason;
          break;
        }
        if (short && f.value > 0) {
          // Bytes after a gap would be sent: the stream is wrong, the caller must close it.
          throw new FsError(Errno.EIO, `splice of fd ${fd} went on past a short piece`);
        }
        done += f.value;
        inPipe += f.value;
        if (f.value === 0) ended = true;
        if (f.value < sizes[i]) short = true;
        if (d.status === "fulfilled") inPipe -= d.value;
        else if (!cancelled(d.reason)) failure ??= d.reason;
      }
      if (failure) throw failure;
      while (inPipe > 0) {
        const moved = await this.splice(pipe[0], -1, socket, -1, inPipe);
        if (moved === 0) throw new FsError(Errno.EPIPE, `splice to socket ${socket} moved nothing`);
        inPipe -= moved;
      }
      if (ended) {
        throw new FsError(Errno.EIO, `fd ${fd} ended at ${offset + done}, ${length - done} early`);
      }
    }
  }

  /**
   * Stops accepting operations, waits for those already accepted, then frees the ring. With
   * `cancel: true` (or once `shutdownCancelAfterMs` has passed) what is still in the kernel is
   * cancelled (it rejects with ECANCELED; disk I/O already running still finishes) and what was
   * waiting for a slot is rejected without being submitted.
   */
  shutdown(options: { cancel?: boolean } = {}): Promise<void> {
    this.#shutdownPromise ??= this.#shutdown();
    if (options.cancel) this.#cancelAll();
    return this.#shutdownPromise;
  }

  async #shutdown(): Promise<void> {
    this.#state = State.Closing;
    const timer = setTimeout(() => this.#cancelAll(), this.#shutdownCancelAfterMs);
    try {
      if (!this.#isIdle()) await new Promise<void>((resolve) => this.#idle = resolve);
    } finally {
      clearTimeout(timer);
    }
    if (this.#retryTimer !== undefined) clearTimeout(this.#retryTimer);
    // A client still parked (it should have closed first) is let go: no wait may follow.
    this.#unparkClient();
    if (this.#waitPromise) {
      this.#native.skyfs_uring_wake(this.#ring);
      await this.#waitPromise;
    }
    this.#stats.asyncWrites = this.#native.skyfs_uring_async_count(this.#ring);
    this.#state = State.Closed;
    this.#native.skyfs_uring_close(this.#ring);
    this.#library.close();
  }

  // ---- building requests ----

  #request(
    opcode: number,
    fd: number,
    offset: number,
    addr: number,
    addr2: number,
    length: number,
    flags: number,
    mode: number,
  ): Request {
    return {
      opcode,
      link: false,
      fd,
      offset,
      addr,
      addr2,
      length,
      flags,
      mode,
      result: Result.Count,
      done: 0,
      keep: undefined,
      what: undefined,
      resolve: noop,
      reject: noop,
    };
  }

  #one(
    opcode: number,
    fd: number,
    offset: number,
    addr: number,
    addr2: number,
    length: number,
    flags: number,
    keep: unknown,
    result: Result,
    what?: string,
    mode = 0,
  ): Promise<number | undefined> {
    // Continuations of accepted operations (vector tails, a writeAndSync's separate sync) may
    // still run while closing; the public methods refuse new work through #closed().
    if (this.#state === State.Closed) return Promise.reject(this.#closedError(OP_NAMES[opcode]));
    const request = this.#request(opcode, fd, offset, addr, addr2, length, flags, mode);
    request.keep = keep;
    request.result = result;
    request.what = what;
    const promise = new Promise<number | undefined>((resolve, reject) => {
      request.resolve = resolve;
      request.reject = reject;
    });
    if (this.#waitersHead === this.#waiters.length && this.#freeCount > 0) {
      this.#stage(request, this.#takeSlot(request)); // the common case, without an array
    } else {
      this.#waiters.push([request]);
    }
    return promise;
  }

  #rw(opcode: number, fd: number, view: Uint8Array, offset: number): Promise<number> {
    if (!Number.isSafeInteger(offset) || offset < 0) {
      return Promise.reject(
        new FsError(Errno.EINVAL, `offset ${offset} is not a non-negative integer`),
      );
    }
    return this.#one(
      opcode,
      fd,
      offset,
      addressOf(view),
      0,
      view.byteLength,
      0,
      view,
      Result.Count,
    ) as Promise<number>;
  }

  #pathOp(
    opcode: number,
    path: string,
    flags: number,
    mode: number,
    result: Result,
  ): Promise<number | undefined> {
    let bytes: Uint8Array;
    try {
      bytes = cPath(path);
    } catch (error) {
      return Promise.reject(error);
    }
    return this.#one(
      opcode,
      AT_FDCWD,
      0,
      addressOf(bytes),
      0,
      0,
      flags,
      bytes,
      result,
      JSON.stringify(path),
      mode,
    );
  }

  #vector(opcode: number, fd: number, views: Uint8Array[], offset: number): Promise<number> {
    try {
      checkOffset(offset);
      if (views.length > IOV_MAX) {
        throw new FsError(Errno.EINVAL, `${views.length} buffers exceed IOV_MAX (${IOV_MAX})`);
      }
    } catch (error) {
      return Promise.reject(error);
    }
    // struct iovec { void *base; size_t len; } in a buffer of its own, kept with the views.
    const iovecs = new ArrayBuffer(Math.max(1, views.length) * 16);
    const words = new Uint32Array(iovecs);
    views.forEach((view, i) => {
      const address = addressOf(view);
      words[i * 4] = address >>> 0;
      words[i * 4 + 1] = (address / U32) >>> 0;
      words[i * 4 + 2] = view.byteLength >>> 0;
      words[i * 4 + 3] = (view.byteLength / U32) >>> 0;
    });
    return this.#one(
      opcode,
      fd,
      offset,
      addressOf(new Uint8Array(iovecs)),
      0,
      views.length,
      0,
      [views, iovecs],
      Result.Count,
    ) as Promise<number>;
  }

  /** Finishes a vector op the kernel cut short after `skip` bytes, with plain reads or writes. */
  async #finishVector(
    opcode: number,
    fd: number,
    views: Uint8Array[],
    offset: number,
    skip: number,
  ): Promise<number> {
    let done = 0;
    let position = 0;
    for (const view of views) {
      const end = position + view.byteLength;
      if (end > skip) {
        const part = view.subarray(Math.max(0, skip - position));
        const n = await this.#rw(opcode, fd, part, offset + skip + done);
        done += n;
        if (n < part.byteLength) break;
      }
      position = end;
    }
    return done;
  }

  // ---- slots, staging, submission ----

  /** Gives the requests slots and stages them together, or queues them behind earlier waiters. */
  #admit(requests: Request[]): void {
    if (this.#waitersHead === this.#waiters.length && this.#freeCount >= requests.length) {
      for (const request of requests) this.#stage(request, this.#takeSlot(request));
    } else {
      this.#waiters.push(requests);
    }
  }

  #takeSlot(request: Request): number {
    const slot = this.#freeSlots[--this.#freeCount];
    this.#slots[slot] = request;
    return slot;
  }

  /** Writes one `struct skyfs_uring_op` record (see uring_native.ts OpWord). */
  #stage(request: Request, userData: number): void {
    const w = this.#staged++ * (OP_BYTES / 4);
    const words = this.#opWords;
    const { offset, addr, addr2 } = request;
    // Only data transfers are capped (and continued); a fallocate's length is a range, which
    // the cap used to cut to 2 GiB - 4 KiB without a word (issue 18).
    const length = request.opcode === Op.FALLOCATE
      ? request.length
      : Math.min(request.length - request.done, MAX_RW_BYTES);
    let head = request.opcode | (request.link ? HEAD_LINK : 0);
    if (
      (request.opcode === Op.WRITE || request.opcode === Op.WRITEV) && this.#asyncFor(request.fd)
    ) {
      head |= HEAD_ASYNC;
    }
    if (request.opcode < Op.SPLICE) this.#stagedDisk++;
    words[w] = head;
    words[w + 1] = request.fd >>> 0;
    // -1 (only splice passes it: "no offset") becomes all ones, as the kernel wants.
    words[w + 2] = offset >>> 0;
    words[w + 3] = offset < 0 ? 0xffffffff : (offset / U32) >>> 0;
    words[w + 4] = addr >>> 0;
    words[w + 5] = (addr / U32) >>> 0;
    words[w + 6] = addr2 >>> 0;
    words[w + 7] = addr2 < 0 ? 0xffffffff : (addr2 / U32) >>> 0;
    words[w + 8] = length >>> 0;
    words[w + 9] = (length / U32) >>> 0;
    words[w + 10] = request.flags >>> 0;
    words[w + 11] = request.mode >>> 0;
    words[w + 12] = userData;
    words[w + 13] = 0;
    words[w + 14] = 0;
    words[w + 15] = 0;
    this.#scheduleFlush();
  }

  /** Submit what is staged at the end of this turn (once per turn). */
  #scheduleFlush(): void {
    if (!this.#flushScheduled) {
      this.#flushScheduled = true;
      queueMicrotask(this.#flush);
    }
  }

  /**
   * One io_uring_enter for everything staged this turn (the ring client's operations too),
   * which also waits up to the spin time for a first completion when nothing completes inline
   * and disk operations were staged; then the reap of what completed.
   */
  #submitStaged(): void {
    this.#flushScheduled = false;
    const count = this.#staged;
    if (count === 0 || this.#state === State.Closed) return;
    const own = count - this.#stagedClient;
    this.#staged = 0;
    this.#stagedClient = 0;
    this.#inKernel += own;
    // Socket ops wait for the peer (a splice to a socket, a recv): a spin would burn the CPU the
    // other side needs, so a batch of only socket ops waits through the eventfd at once. So does
    // a batch of only the client's ops (a FUSE reply fetches the next request: no telling when).
    const spin = this.#stagedDisk > 0 ? this.#spin.next() : 0;
    this.#stagedDisk = 0;
    this.#stats.submitCalls++;
    this.#stats.submissions += own;
    this.#stats.clientSubmissions += count - own;
    if (own > 0 && own < count) this.#stats.sharedSubmits++;
    const reaped = this.#native.skyfs_uring_submit_reap(
      this.#ring,
      this.#opPointer,
      count,
      this.#cqePointer,
      this.#cqeCapacity,
      spin,
    );
    if (reaped < 0) {
      this.#submitFailed(count, -reaped);
      return;
    }
    const mine = reaped > 0 ? this.#complete(reaped) : 0;
    // A spin that saw nothing ran to its timeout, so it started `spin` ago: no clock on hits.
    // One ended by the client's completion alone (a FUSE request) says nothing either way.
    if (spin > 0 && (mine > 0 || reaped === 0)) {
      this.#spin.spun(mine > 0 ? 0 : performance.now() - spin / 1e6, mine > 0);
    }
    if (this.#native.skyfs_uring_sq_pending(this.#ring) > 0) this.#retryLater();
    if (this.#waitPromise === undefined && (this.#inKernel > 0 || this.#clientParked)) {
      this.#armWait();
    }
  }

  /** The ring refused the whole batch (a bug in SQ sizing, or a dying ring): fail its requests. */
  #submitFailed(count: number, errno: number): void {
    const words = this.#opWords.slice(0, count * (OP_BYTES / 4)); // the client may stage anew
    let client = 0;
    for (let i = 0; i < count; i++) {
      const tag = words[i * (OP_BYTES / 4) + 12];
      if (words[i * (OP_BYTES / 4) + 13] === CLIENT_HIGH) {
        client++;
        this.#clientHandled++;
        this.#client?.complete(tag, -errno);
        continue;
      }
      this.#inKernel--;
      if (tag !== CANCEL_TAG) this.#finish(tag, -errno);
    }
    if (client > 0) this.#unparkClient();
    this.#admitWaiters();
    if (this.#state === State.Closing && this.#isIdle()) this.#idle?.();
  }

  /** SQEs the kernel refused for now (EAGAIN/EBUSY) are re-sent by the next reap; force one. */
  #retryLater(): void {
    if (this.#retryTimer !== undefined) return;
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = undefined;
      this.#stats.reapCalls++;
      const reaped = this.#native.skyfs_uring_reap(this.#ring, this.#cqePointer, this.#cqeCapacity);
      if (reaped > 0) this.#complete(reaped);
      if (this.#native.skyfs_uring_sq_pending(this.#ring) > 0) this.#retryLater();
    }, 1);
  }

  /** Clears the eventfd, reaps, and if requests remain in the kernel waits off-thread. */
  #armWait(afterWake = false): void {
    this.#stats.reapCalls++;
    const reaped = this.#native.skyfs_uring_prepare_wait(
      this.#ring,
      this.#cqePointer,
      this.#cqeCapacity,
    );
    if (reaped > 0 && this.#complete(reaped) > 0 && afterWake) this.#spin.woke(performance.now());
    if (this.#inKernel === 0 && this.#clientParked === undefined) return;
    this.#stats.waitCalls++;
    this.#waitPromise = this.#native.skyfs_uring_wait(this.#ring).then(this.#onWake);
  }

  #woken(_rc: number): void {
    // Whatever the return code (0, or -EINTR from a signal), the next step is the same: reap,
    // then wait again if anything is still in the kernel.
    this.#waitPromise = undefined;
    if (this.#state === State.Closed) return;
    this.#armWait(true);
  }

  /** Settles the requests of `count` completions copied into the CQE buffer, and hands the
   * client's to it; returns how many were the engine's own (internal cancels included). */
  #complete(count: number): number {
    const words = this.#cqeWords;
    let own = 0;
    for (let i = 0; i < count; i++) {
      const userData = words[i * 4] >>> 0;
      const res = words[i * 4 + 2];
      if (words[i * 4 + 1] === CLIENT_HIGH) {
        this.#clientHandled++;
        this.#client?.complete(userData, res);
        continue;
      }
      own++;
      this.#inKernel--;
      if (userData === CANCEL_TAG) continue;
      this.#stats.completions++;
      this.#finish(userData, res);
    }
    if (own < count) this.#unparkClient();
    this.#admitWaiters();
    if (this.#state === State.Closing && this.#isIdle()) this.#idle?.();
    return own;
  }

  // ---- the ring client (attachClient) ----

  #stageClient(
    opcode: number,
    fd: number,
    addr: number,
    length: number,
    flags: number,
    offset: bigint,
    mode: number,
    tag: number,
  ): void {
    if (this.#state === State.Closed) return;
    const w = this.#staged++ * (OP_BYTES / 4);
    this.#stagedClient++;
    const words = this.#opWords;
    words[w] = opcode;
    words[w + 1] = fd >>> 0;
    words[w + 2] = Number(offset & 0xffffffffn);
    words[w + 3] = Number(offset >> 32n);
    words[w + 4] = addr >>> 0;
    words[w + 5] = (addr / U32) >>> 0;
    words[w + 6] = 0;
    words[w + 7] = 0;
    words[w + 8] = length >>> 0;
    words[w + 9] = 0;
    words[w + 10] = flags >>> 0;
    words[w + 11] = mode >>> 0;
    words[w + 12] = tag >>> 0;
    words[w + 13] = CLIENT_HIGH;
    words[w + 14] = 0;
    words[w + 15] = 0;
    this.#scheduleFlush();
  }

  #clientReady(): boolean {
    return this.#state !== State.Closed &&
      (this.#staged > 0 || this.#native.skyfs_uring_cq_ready(this.#ring) > 0);
  }

  #pumpClient(): number {
    const before = this.#clientHandled;
    if (this.#state === State.Closed) return 0;
    if (this.#staged > 0) {
      this.#submitStaged();
      return this.#clientHandled - before;
    }
    // A submit of nothing, not skyfs_uring_reap: on a COOP ring the reap only reads the CQ ring,
    // and task work the kernel flagged (a FUSE request on its way) stays unrun; the submit
    // enters the kernel when the flag is up (liburing's cq_ring_needs_flush), which runs it.
    for (;;) {
      this.#stats.reapCalls++;
      const reaped = this.#native.skyfs_uring_submit_reap(
        this.#ring,
        this.#opPointer,
        0,
        this.#cqePointer,
        this.#cqeCapacity,
        0,
      );
      if (reaped <= 0) break;
      this.#complete(reaped);
      if (reaped < this.#cqeCapacity) break;
    }
    if (this.#native.skyfs_uring_sq_pending(this.#ring) > 0) this.#retryLater();
    return this.#clientHandled - before;
  }

  #parkClient(): Promise<void> {
    if (this.#state === State.Closed) return Promise.resolve();
    const before = this.#clientHandled;
    if (this.#staged > 0) this.#submitStaged();
    if (this.#clientHandled !== before) return Promise.resolve();
    return new Promise<void>((resolve) => {
      this.#clientParked = resolve;
      // With a wait already running (the engine's ops in the kernel) it serves the client too:
      // it was armed after a clear of the eventfd, so nothing posted since is missed.
      if (this.#waitPromise === undefined) this.#armWait();
    });
  }

  #wakeClient(): void {
    if (this.#clientParked === undefined) return;
    this.#unparkClient();
    if (this.#waitPromise !== undefined) this.#native.skyfs_uring_wake(this.#ring);
  }

  #unparkClient(): void {
    const resolve = this.#clientParked;
    if (resolve === undefined) return;
    this.#clientParked = undefined;
    resolve();
  }

  #finish(slot: number, res: number): void {
    const request = this.#slots[slot]!;
    const opcode = request.opcode;
    if (opcode === Op.READ || opcode === Op.WRITE) {
      // pread/pwrite semantics over a kernel that may stop early: continue a partial transfer,
      // and report the bytes done if a later part fails.
      if (res > 0) {
        request.done += res;
        if (request.done < request.length && !this.#cancelRequested) {
          request.link = false;
          request.offset += res;
          request.addr += res;
          this.#stage(request, slot);
          return;
        }
        res = request.done;
      } else if (request.done > 0) {
        res = request.done;
      }
    } else if (opcode === Op.OPENAT) {
      if (res >= 0) this.#learnFd(res, (request.flags & O_DIRECT) === 0);
    } else if (opcode === Op.CLOSE) {
      this.#forgetFd(request.fd);
    }
    this.#slots[slot] = undefined;
    this.#freeSlots[this.#freeCount++] = slot;
    if (res < 0) request.reject(this.#error(request, -res));
    else request.resolve(request.result === Result.Void ? undefined : res);
  }

  // ---- how to write to each fd ----

  /**
   * IOSQE_ASYNC skips the inline attempt of a write: ext4 cannot write to the page cache without
   * possibly blocking, so a buffered write always ends up on an io-wq worker anyway, and going
   * there at once measured 1.2x faster at queue depth 32 (src/io/README.md). An O_DIRECT write
   * can be issued inline, so it must not get the flag (measured slower with it).
   */
  #asyncFor(fd: number): boolean {
    const mode = this.#writeMode(fd);
    if (mode === 0 || !this.#asyncBufferedWrites) return false;
    // Count down towards the next re-learn (see FD_RELEARN_WRITES).
    this.#fdWriteMode[fd] = mode > 0 ? mode - 1 : mode + 1;
    return mode > 0;
  }

  /** The fd's entry in #fdWriteMode, learned first if unknown; 0 if it cannot be known. */
  #writeMode(fd: number): number {
    if (fd < 0 || fd >= FD_TABLE_MAX) return 0;
    const mode = fd < this.#fdWriteMode.length ? this.#fdWriteMode[fd] : 0;
    if (mode !== 0) return mode;
    this.#stats.fdProbes++;
    const bits = this.#native.skyfs_uring_fd_mode(fd);
    // Not an open fd: the write itself will fail with EBADF; nothing to cache.
    if (bits < 0) return 0;
    this.#learnFd(fd, (bits & FD_DIRECT) === 0 && (bits & FD_REGULAR) !== 0);
    return this.#fdWriteMode[fd];
  }

  #learnFd(fd: number, asyncWrites: boolean): void {
    if (fd >= FD_TABLE_MAX) return;
    if (fd >= this.#fdWriteMode.length) {
      let size = this.#fdWriteMode.length;
      while (size <= fd) size *= 2;
      const grown = new Int32Array(size);
      grown.set(this.#fdWriteMode);
      this.#fdWriteMode = grown;
    }
    this.#fdWriteMode[fd] = asyncWrites ? FD_RELEARN_WRITES : -FD_RELEARN_WRITES;
  }

  #forgetFd(fd: number): void {
    if (fd >= 0 && fd < this.#fdWriteMode.length) this.#fdWriteMode[fd] = 0;
  }

  #admitWaiters(): void {
    while (this.#waitersHead < this.#waiters.length) {
      const group = this.#waiters[this.#waitersHead];
      if (this.#freeCount < group.length) break;
      this.#waiters[this.#waitersHead++] = SETTLED_GROUP; // drop the references
      for (const request of group) this.#stage(request, this.#takeSlot(request));
    }
    if (this.#waitersHead === this.#waiters.length && this.#waitersHead > 0) {
      this.#waiters = [];
      this.#waitersHead = 0;
    }
  }

  #cancelAll(): void {
    if (this.#state === State.Closed || this.#cancelRequested) return;
    this.#cancelRequested = true;
    const waiters = this.#waiters.slice(this.#waitersHead);
    this.#waiters = [];
    this.#waitersHead = 0;
    for (const group of waiters) {
      for (const request of group) {
        request.reject(this.#error(request, Errno.ECANCELED));
      }
    }
    if (this.#inKernel > 0 || this.#staged > 0) {
      const cancel = this.#request(Op.CANCEL_ALL, -1, 0, 0, 0, 0, 0, 0);
      this.#stage(cancel, CANCEL_TAG);
      this.#submitStaged();
    }
    if (this.#state === State.Closing && this.#isIdle()) this.#idle?.();
  }

  #isIdle(): boolean {
    return this.#freeCount === this.queueDepth && this.#inKernel === 0 && this.#staged === 0 &&
      this.#waitersHead === this.#waiters.length;
  }

  #error(request: Request, errno: number): FsError {
    const what = request.what ??
      `fd ${request.fd}${
        request.length > 0 ? `, ${request.length} bytes at ${request.offset - request.done}` : ""
      }`;
    return new FsError(errno, `io_uring ${OP_NAMES[request.opcode]} ${what}`);
  }

  /** A rejection for a public call after shutdown() began, else undefined. */
  #closed(operation: string): Promise<never> | undefined {
    return this.#state === State.Open ? undefined : Promise.reject(this.#closedError(operation));
  }

  #closedError(operation: string): FsError {
    return new FsError(
      Errno.ECANCELED,
      `io_uring ${operation} after shutdown(): the engine is closed, open a new one`,
    );
  }
}

function noop(): void {}
