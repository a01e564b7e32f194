/**
 * The FUSE server: reads requests from a FuseDevice, dispatches each through a table built once
 * to the Vfs, and answers every request exactly once (errors included, EIO for our own bugs).
 * @module
 */

import { setImmediate } from "node:timers";
import { Errno, errnoOf, FsError } from "../fs_error.ts";
import type { Ctx, Vfs } from "../vfs/types.ts";
import { dirHandlers } from "./dir.ts";
import { entryHandlers } from "./entry.ts";
import { fileHandlers } from "./file.ts";
import { FuseCounters } from "./counters.ts";
import { monotonicSeconds } from "../io/libc.ts";
import { lockHandlers } from "./lock.ts";
import type { FuseDevice } from "./session.ts";
import { DevTransport, nextTurn } from "./transport_dev.ts";
import type { FuseRing } from "./transport_uring.ts";
import {
  decodeInitIn,
  decodeRequest,
  finishReply,
  INC_EPOCH_MINOR,
  InitFlag,
  InitFlag2,
  initReply,
  KERNEL_MINOR_VERSION,
  KERNEL_VERSION,
  notifyIncEpoch,
  notifyInvalInode,
  Opcode,
  opcodeNames,
  recycleReply,
  type Request,
  statfsReply,
  statusReply,
  u64,
  type Validity,
} from "./wire.ts";
import { xattrHandlers } from "./xattr.ts";

/** Largest WRITE payload we accept; the kernel splits bigger writes (needs MAX_PAGES). */
export const MAX_WRITE = 1 << 20;
/** How long unmount waits for requests still being handled before the Vfs is destroyed (lock
 * waits are aborted first, so only requests doing work are waited for). */
const DRAIN_TIMEOUT_MS = 5000;

/** FUSE's root node id (the root inode: the kernel holds it without a lookup). */
const ROOT_NODE_ID = 1;
/** Requests whose reply can leave a name (dentry, positive or negative) in the kernel's cache,
 * in the directory of their node id (RENAME and RENAME2 also in their new directory). */
const NAMING_OPS = new Set<number>([
  Opcode.LOOKUP,
  Opcode.READDIRPLUS,
  Opcode.CREATE,
  Opcode.MKNOD,
  Opcode.MKDIR,
  Opcode.SYMLINK,
  Opcode.LINK,
  Opcode.UNLINK,
  Opcode.RMDIR,
  Opcode.RENAME,
  Opcode.RENAME2,
]);
/** Directories tracked for `invalidateEntriesIn` before every bump is sent regardless. */
const MAX_NAMED_DIRS = 100_000;

/** Where the reply to one request goes: the transport that delivered it (src/fuse/README.md,
 * "Transports"). `reply` null: the request gets none (FORGET, INTERRUPT, or an undecodable one);
 * `unique` is 0 when the header could not be read. Called exactly once per request. */
export type ReplySink = (reply: Uint8Array | null, unique: bigint) => void;

export interface ServerOptions {
  /** FUSE over io_uring: a ring opened before the mount (transport_uring.ts). When the kernel
   * offers FUSE_OVER_IO_URING in INIT, the server takes it and moves requests to the ring;
   * otherwise it stays on /dev/fuse and calls `onTransport` with the reason. */
  ring?: FuseRing;
  /** Called once the transport is known: after INIT ("dev" with a reason when a ring was given
   * but not used), and again with "dev" and a reason if the ring fails to register. */
  onTransport?: (transport: "dev" | "uring", detail: string) => void;
  /** Seconds the kernel may cache entries and attributes. Default 10 s each. */
  validity?: Validity;
  /** Negotiate FUSE passthrough when the kernel offers it (needs CAP_SYS_ADMIN). Default false. */
  passthrough?: boolean;
  /** Let the kernel cache directory listings across opens (FOPEN_CACHE_DIR). Only safe when
   * every change to the namespace goes through this kernel (not in cluster mode). Default true. */
  cacheDirs?: boolean;
  /** Microseconds the reader looks for the next request before it parks in the poll hop:
   * event-loop turns, or, when no handler is pending, one ppoll of /dev/fuse and the event
   * loop's epoll fds on the JS thread (see README "Idle spin"). 0 parks at once. Default 50. */
  idleSpinUs?: number;
  /** Microseconds the /dev/fuse reader, after the idle spin and with no handler pending, blocks
   * the JS thread in one poll of /dev/fuse and the event loop's epoll fds before it parks in
   * the thread-pool hop (README "Parking on the JS thread"). 0 = never. Default 0: the park
   * delays tokio tasks queued by other event-loop work (HTTP replies: 1-2 ms, measured). */
  parkUs?: number;
  /** Take POSIX, OFD and flock locks in the daemon (FUSE_POSIX_LOCKS, FUSE_FLOCK_LOCKS) instead
   * of leaving them to the kernel's own lock table. Needed where other nodes must see the locks
   * (a cluster); on one node the kernel's table is exact (README "Locks"). Default false. */
  daemonLocks?: boolean;
  /** Called once INIT is negotiated. */
  onInit?: (negotiated: Negotiated) => void;
  /** Called for each request failure that is our bug (not an FsError). */
  onInternalError?: (opcode: string, error: unknown) => void;
  /** Called for each request answered EIO with an FsError: the store below failed (a backend
   * unreachable, a checksum mismatch), which the user cannot see from the errno alone. */
  onIoError?: (opcode: string, error: FsError) => void;
  /** Called after each reply with one line: time (ms since the process started), opcode, node
   * id, the daemon's time on the request, and the idle time since the previous reply (the
   * kernel's and the program's side). Debug only (config log.debug containing "fuse"). */
  trace?: (line: string) => void;
}

/** What a handler sees: the Vfs, the caller, cache validity and the device for passthrough. */
export interface OpContext {
  vfs: Vfs;
  ctx: Ctx;
  validity: Validity;
  server: FuseServer;
}

/** A handler returns the reply (with room for the out header) or null when none is sent; at
 * once when it has it without waiting (the server then answers in the same call, no promise),
 * else as a promise. */
export type Handler = (
  op: OpContext,
  request: Request,
) => Promise<Uint8Array | null> | Uint8Array | null;

export interface HandlerEntry {
  name: string;
  handle: Handler;
}

/** The negotiated INIT parameters. */
export interface Negotiated {
  minor: number;
  flags: number;
  flags2: number;
  passthrough: boolean;
}

function buildTable(): Map<number, HandlerEntry> {
  const table = new Map<number, HandlerEntry>();
  const groups = [entryHandlers, fileHandlers, dirHandlers, xattrHandlers, lockHandlers, {
    [Opcode.STATFS]: async (op: OpContext, req: Request) =>
      statfsReply(await op.vfs.statfs(req.header.nodeid)),
    [Opcode.ACCESS]: async (op: OpContext, req: Request) => {
      await op.vfs.access(op.ctx, req.header.nodeid, req.view.getUint32(0, true));
      return statusReply(req.header.unique, 0);
    },
  }];
  for (const group of groups) {
    for (const [opcode, handle] of Object.entries(group)) {
      const code = Number(opcode);
      table.set(code, { name: opcodeNames.get(code) ?? `OP${code}`, handle: handle as Handler });
    }
  }
  return table;
}

const table = buildTable();

/** FUSE_OVER_IO_URING: bit 41 of the 64 INIT flags, bit 9 of flags2. */
export const OVER_IO_URING_FLAG2 = 1 << 9;

/**
 * Passthrough backing files: one backing id per inode, shared by all of its open handles and
 * closed when the last one is released (the kernel requires one backing file per inode). The
 * kernel also refuses to mix cached and passthrough opens of one inode, so the first open decides
 * the inode's mode and later opens follow it until the last one is released; cached opens are
 * counted here for that reason.
 *
 * With `keepIds` (the Vfs keeps closed local fds, LocalStore.keepClosed) the id of an inode whose
 * last handle went is kept with its local fd and closed when that fd is (`localClosed`): the
 * next passthrough open of the inode reuses it instead of a BACKING_OPEN and a BACKING_CLOSE. A
 * kept id decides nothing: the kernel drops its own reference to the backing file at the last
 * release of the inode's passthrough files (before it sends RELEASE), so the next open's reply
 * decides the inode's mode afresh, and a cached open leaves the kept id unused.
 */
export class BackingFiles {
  #byIno = new Map<number, { id: number; handles: number; writers: number }>();
  #cachedByIno = new Map<number, number>();
  #inoByFh = new Map<number, { ino: number; passthrough: boolean; writable: boolean }>();
  /** Ids of inodes with no handle, kept while their local fd is (`keepIds`). */
  #kept = new Map<number, number>();
  #device: FuseDevice;
  #keepIds: boolean;
  /** BACKING_OPEN and BACKING_CLOSE ioctls made (for tests and /metrics). */
  readonly stats = { opened: 0, closed: 0, reused: 0 };

  constructor(device: FuseDevice, keepIds = false) {
    this.#device = device;
    this.#keepIds = keepIds;
  }

  /**
   * Decide how handle `fh` of `ino` is opened: the passthrough backing id to use, or undefined
   * for a cached open. `fd` is the Vfs's local fd when it allows passthrough for this open;
   * `writable`: the handle may write (and map the file shared and writable).
   */
  open(ino: number, fh: number, fd: number | undefined, writable = false): number | undefined {
    let entry = this.#byIno.get(ino);
    if (!entry && (fd === undefined || this.#cachedByIno.has(ino))) {
      this.#cachedByIno.set(ino, (this.#cachedByIno.get(ino) ?? 0) + 1);
      this.#inoByFh.set(fh, { ino, passthrough: false, writable });
      return undefined;
    }
    if (!entry) {
      let id = this.#kept.get(ino);
      if (id !== undefined) {
        this.#kept.delete(ino);
        this.stats.reused++;
      } else {
        id = this.#device.backingOpen(fd!);
        if (id < 0) throw new FsError(-id, `FUSE_DEV_IOC_BACKING_OPEN of fd ${fd}`);
        this.stats.opened++;
      }
      entry = { id, handles: 0, writers: 0 };
      this.#byIno.set(ino, entry);
    }
    entry.handles++;
    if (writable) entry.writers++;
    this.#inoByFh.set(fh, { ino, passthrough: true, writable });
    return entry.id;
  }

  /** Whether `open(ino, fh, fd)` would answer with passthrough (nothing is changed). */
  wouldPassthrough(ino: number, fd: number | undefined): boolean {
    return this.#byIno.has(ino) || (fd !== undefined && !this.#cachedByIno.has(ino));
  }

  /**
   * Some handle of `ino` may change its data through passthrough without telling anyone: stores
   * into a shared writable mapping go to the local file's pages, and the kernel neither sends a
   * request nor drops the attributes it cached (a passthrough write() does drop them). Their
   * attributes must then not be cached (attr_valid 0), so each stat reaches the daemon, which
   * reads size and mtime from the local file (issue 18 point 2).
   */
  hasWriter(ino: number): boolean {
    return (this.#byIno.get(ino)?.writers ?? 0) > 0;
  }

  /** Forget handle `fh`; the last passthrough handle of an inode closes its backing id, or keeps
   * it until its local fd is closed (`keepIds`). */
  release(fh: number): void {
    const held = this.#inoByFh.get(fh);
    if (held === undefined) return;
    this.#inoByFh.delete(fh);
    if (!held.passthrough) {
      const left = this.#cachedByIno.get(held.ino)! - 1;
      if (left > 0) this.#cachedByIno.set(held.ino, left);
      else this.#cachedByIno.delete(held.ino);
      return;
    }
    const entry = this.#byIno.get(held.ino)!;
    if (held.writable) entry.writers--;
    if (--entry.handles > 0) return;
    this.#byIno.delete(held.ino);
    if (this.#keepIds) this.#kept.set(held.ino, entry.id);
    else this.#close(entry.id);
  }

  /** The Vfs closed the local fd of `ino`: a backing id kept with it goes too. */
  localClosed(ino: number): void {
    const id = this.#kept.get(ino);
    if (id === undefined) return;
    this.#kept.delete(ino);
    this.#close(id);
  }

  /** Backing ids kept for inodes with no handle (for tests). */
  get keptCount(): number {
    return this.#kept.size;
  }

  #close(id: number): void {
    this.stats.closed++;
    this.#device.backingClose(id);
  }
}

export class FuseServer {
  readonly device: FuseDevice;
  readonly vfs: Vfs;
  /** Cache validity of replies; a mount may shorten it from onInit, before any other request. */
  validity: Validity;
  readonly backing: BackingFiles;
  readonly cacheDirs: boolean;
  /** The daemon keeps the locks (a cluster node): every close must reach it as FLUSH. */
  readonly daemonLocks: boolean;
  negotiated?: Negotiated;
  #options: ServerOptions;
  #inFlight = 0;
  #wakeReader?: () => void;
  #interruptible = new Map<bigint, AbortController>();
  /** Requests served, parked waits (poll or eventfd, through the thread pool), requests the
   * idle spin found, requests read after a park on the JS thread (fuse.park_us), and the idle
   * spin's own waits on the JS thread and the requests that ended them; the transports count
   * them. */
  readonly loopStats = {
    requests: 0,
    wakeups: 0,
    spinHits: 0,
    parkedOnThread: 0,
    spinParks: 0,
    spinParkHits: 0,
  };
  readonly idleSpinMs: number;
  /** Whole milliseconds for poll(): parkUs rounded up (a poll timeout has ms resolution). */
  readonly parkSyncMs: number;
  /** INIT took FUSE_OVER_IO_URING: the /dev/fuse reader stops and the ring takes over. */
  #uringNegotiated = false;
  /** Which transport carries requests now. */
  transport: "dev" | "uring" = "dev";
  /** Requests, errors, durations and bytes for /metrics (src/http reads them at scrape time). */
  readonly counters = new FuseCounters();
  /** Notifications written and skipped because the kernel held nothing they would drop (read by
   * tests; src/cluster/README.md, "What the other mounts pay for a change"). */
  readonly notifyStats = { invalInode: 0, invalInodeSkipped: 0, epoch: 0, epochSkipped: 0 };
  #destroyed = false;
  /** Inodes whose attributes are to be invalidated at the next turn (`invalidateAttributes`). */
  #staleAttributes = new Set<number>();
  /** Directories in which the kernel may hold a name (positive or negative dentry) stamped with
   * the current entry epoch: every request that can leave one names its directory here, when it
   * arrives and again when it is answered. An epoch bump empties it; undefined: too many to
   * track, every bump is sent. See `invalidateEntriesIn`. */
  #namedDirs: Set<number> | undefined = new Set();
  /** Open directory handles, by directory. A READDIRPLUS entry is stamped with the epoch read
   * when the kernel parses the reply, which may follow a bump written after the reply: such a
   * directory stays in `#namedDirs` across bumps until its last handle is released (after the
   * program's last getdents returned), and once more then. */
  #openDirs = new Map<number, number>();

  constructor(device: FuseDevice, vfs: Vfs, options: ServerOptions = {}) {
    this.device = device;
    this.vfs = vfs;
    this.validity = options.validity ?? { entrySeconds: 10, attrSeconds: 10 };
    this.#options = options;
    // The Vfs tells when it closes a local fd it kept (LocalStore.keepClosed): backing ids are
    // kept as long (false: it keeps none, and each id goes with the inode's last handle).
    const keepIds = vfs.onLocalClosed?.((ino) => this.backing.localClosed(ino)) ?? false;
    this.backing = new BackingFiles(device, keepIds);
    this.cacheDirs = options.cacheDirs ?? true;
    this.daemonLocks = options.daemonLocks ?? false;
    this.idleSpinMs = (options.idleSpinUs ?? 50) / 1000;
    this.parkSyncMs = Math.ceil((options.parkUs ?? 0) / 1000);
  }

  /** Cache validity for replies carrying the attributes of `ino` (see BackingFiles.hasWriter). */
  validityFor(ino: number): Validity {
    if (!this.backing.hasWriter(ino)) return this.validity;
    return { entrySeconds: this.validity.entrySeconds, attrSeconds: 0 };
  }

  /**
   * Tell the kernel to drop its cached attributes of `ino` (FUSE_NOTIFY_INVAL_INODE, pages kept).
   * Sent on a later turn of the event loop (`setImmediate`: after the microtasks that write the
   * reply of the request that caused it), never from inside a handler: a notification written
   * while the kernel waits for that reply could contend for the locks it holds. Not
   * `setTimeout(0)`: a timer costs 3-20 us of CPU against 0.2-2 us (measured here), on every
   * rename, unlink and link.
   */
  invalidateAttributes(ino: number): void {
    // Nothing in flight: no reply with attributes read before the change can still come, so an
    // inode the kernel does not hold now needs nothing, and no turn is taken (an idle node pays
    // this for every inode other nodes change).
    if (this.#inFlight === 0 && !this.#kernelHolds(ino)) {
      this.notifyStats.invalInodeSkipped++;
      return;
    }
    if (this.#staleAttributes.size === 0) setImmediate(() => this.#flushStaleAttributes());
    this.#staleAttributes.add(ino);
  }

  #kernelHolds(ino: number): boolean {
    return ino === ROOT_NODE_ID || this.vfs.knownToKernel(ino);
  }

  /** Writes the notifications `invalidateAttributes` gathered in one turn, each inode once. An
   * inode the kernel holds no reference to (no counted lookup: `Vfs.knownToKernel`; the root
   * always counts) caches nothing: the kernel would answer ENOENT, so nothing is written. That
   * is decided here, when the notice would be written, not when it was asked for: a LOOKUP
   * answered in between (with attributes read before the change) makes the inode known. */
  #flushStaleAttributes(): void {
    for (const ino of this.#staleAttributes) {
      if (!this.#kernelHolds(ino)) {
        this.notifyStats.invalInodeSkipped++;
        continue;
      }
      this.notifyStats.invalInode++;
      // ENOENT: the kernel holds no such inode; nothing was cached.
      this.device.writeMessage(notifyInvalInode(ino, -1, 0) as Uint8Array<ArrayBuffer>);
    }
    this.#staleAttributes.clear();
  }

  /**
   * `invalidateAttributes` written at once, from inside the handler of a request for `ino`
   * whose reply must reach the kernel after it: the OPEN of a cluster node
   * (OpenResult.attributesStale). Safe there: for attributes only (offset -1) the kernel bumps
   * the inode's attribute version and marks its attributes stale under the inode's spinlock
   * (fuse_reverse_inval_inode); it takes no inode or page lock, and an OPEN without O_TRUNC
   * holds none while it waits. A negative result (ENOENT: the kernel holds no such inode;
   * ENODEV: unmounted) means there was nothing to invalidate.
   */
  invalidateAttributesNow(ino: number): void {
    this.device.writeMessage(notifyInvalInode(ino, -1, 0) as Uint8Array<ArrayBuffer>);
  }

  /**
   * Tell the kernel that any dentry it cached may be stale (FUSE_NOTIFY_INC_EPOCH): each is
   * looked up again at its next use. Costs the kernel no lock, so it is written at once, even
   * while a request this daemon has not answered holds a directory lock. False (nothing sent)
   * before INIT or when the kernel predates 7.44; entries then expire by their timeout only.
   */
  invalidateAllEntries(): boolean {
    if ((this.negotiated?.minor ?? 0) < INC_EPOCH_MINOR) return false;
    this.device.writeMessage(notifyIncEpoch() as Uint8Array<ArrayBuffer>);
    this.notifyStats.epoch++;
    // Every name cached so far is stamped with an older epoch now: none needs another bump,
    // but for listings whose replies the kernel may not have parsed yet (`#openDirs`).
    this.#namedDirs = new Set(this.#openDirs.keys());
    return true;
  }

  /**
   * Names changed elsewhere in `dirs`: `invalidateAllEntries` if the kernel may hold a name in
   * one of them stamped with the current epoch, else nothing (false). The kernel can only hold
   * such a name if a request for that directory (LOOKUP, READDIRPLUS, CREATE, MKNOD, MKDIR,
   * SYMLINK, LINK, UNLINK, RMDIR, RENAME) arrived since the last bump: a name given before it is
   * looked up again at its next use anyway. So a node that does not look at the directories
   * another node works in pays no bump per change there, and its kernel keeps the names (and
   * with them the inodes and pages) it holds elsewhere.
   */
  invalidateEntriesIn(dirs: Iterable<number>): boolean {
    const named = this.#namedDirs;
    if (named !== undefined) {
      let any = false;
      for (const dir of dirs) {
        if (named.has(dir)) {
          any = true;
          break;
        }
      }
      if (!any) {
        this.notifyStats.epochSkipped++;
        return false;
      }
    }
    return this.invalidateAllEntries();
  }

  /** A directory handle was released: its READDIRPLUS replies were all parsed by now. */
  #releasedDir(dir: number): void {
    const open = this.#openDirs.get(dir) ?? 0;
    if (open <= 1) this.#openDirs.delete(dir);
    else this.#openDirs.set(dir, open - 1);
    this.#namedDirs?.add(dir);
  }

  /** A request that can leave a dentry in the kernel names its directory (`#namedDirs`). */
  #noteNamed(request: Request): void {
    const named = this.#namedDirs;
    if (named === undefined) return;
    const opcode = request.header.opcode;
    if (!NAMING_OPS.has(opcode)) return;
    named.add(request.header.nodeid);
    // RENAME and RENAME2 move a dentry into their fuse_rename_in's newdir.
    if (opcode === Opcode.RENAME || opcode === Opcode.RENAME2) named.add(u64(request.view, 0));
    if (named.size > MAX_NAMED_DIRS) this.#namedDirs = undefined;
  }

  /** Requests served, poll wake-ups (requests per wake-up = batching achieved) and requests
   * found by the idle spin (each saved a wake-up) so far. */
  get stats(): {
    requests: number;
    wakeups: number;
    spinHits: number;
    parkedOnThread: number;
    spinParks: number;
    spinParkHits: number;
  } {
    return { ...this.loopStats };
  }

  /** Requests served so far by operation name, most frequent first. */
  requestCounts(): [string, number][] {
    const counts: [string, number][] = [];
    this.counters.requests.forEach((count, opcode) => {
      if (count > 0) counts.push([opcodeNames.get(opcode) ?? `OP${opcode}`, count]);
    });
    return counts.sort((a, b) => b[1] - a[1]);
  }

  /** Requests being handled now. */
  get inFlight(): number {
    return this.#inFlight;
  }

  /** Resolves when a request finishes (or at once if none is being handled). */
  requestFinished(): Promise<void> {
    if (this.#inFlight === 0) return Promise.resolve();
    return new Promise<void>((resolve) => this.#wakeReader = resolve);
  }

  /** The daemon unmounted the file system: a ring transport stops taking requests, so that
   * serve() can finish (see FuseRing.requestStop). */
  stopTransport(): void {
    this.#options.ring?.requestStop();
  }

  /** True once INIT negotiated FUSE over io_uring (the /dev/fuse reader then hands over). */
  get uringNegotiated(): boolean {
    return this.#uringNegotiated;
  }

  /** Serve until the file system is unmounted. Resolves after the Vfs is destroyed. */
  async serve(): Promise<void> {
    // INIT (and anything before the ring is ready) comes through /dev/fuse; the reader returns
    // "switch" right after an INIT that took FUSE_OVER_IO_URING.
    const dev = new DevTransport(this.device, this);
    const outcome = await dev.run(true);
    if (outcome === "switch") {
      await nextTurn(); // the INIT reply is written; the kernel now accepts ring registrations
      const ring = this.#options.ring!;
      const failed = ring.start(this.device, this);
      if (failed === undefined) {
        this.transport = "uring";
        this.#options.onTransport?.("uring", ring.describe());
        await ring.run();
      } else {
        // The kernel turned io_uring off for this connection (fc->io_uring = 0) and serves
        // /dev/fuse again.
        this.#options.onTransport?.("dev", failed);
        await dev.run(false);
      }
    }
    // Let requests still being handled finish (a write's attributes must reach the store)
    // before the Vfs flushes and closes; their replies go nowhere, the connection is gone.
    for (const controller of this.#interruptible.values()) controller.abort(); // lock waits
    const deadline = Date.now() + DRAIN_TIMEOUT_MS;
    while (this.#inFlight > 0 && Date.now() < deadline) {
      await new Promise<void>((resolve) => {
        this.#wakeReader = resolve;
        setTimeout(resolve, 50);
      });
    }
    // Replies of the requests above went out (or failed: the connection is gone); now no SQE of
    // the ring is in the kernel any more.
    await this.#options.ring?.close();
    await this.#destroy();
  }

  async #destroy(): Promise<void> {
    if (this.#destroyed) return;
    this.#destroyed = true;
    for (const controller of this.#interruptible.values()) controller.abort();
    await this.vfs.destroy();
  }

  /**
   * Handle one request that a transport delivered: counts it, runs it, and hands its one reply
   * to `send`. The transport must not reuse `buffer` before `send` was called.
   */
  handleRequest(buffer: Uint8Array, send: ReplySink): void {
    this.loopStats.requests++;
    let request: Request;
    try {
      request = decodeRequest(buffer);
    } catch (error) {
      this.#options.onInternalError?.("decode", error);
      send(null, 0n); // without a valid header there is no unique to answer
      return;
    }
    const started = monotonicSeconds();
    this.#noteNamed(request);
    let result: Promise<Uint8Array | null> | Uint8Array | null;
    try {
      result = this.#dispatch(request);
    } catch (error) {
      this.#finish(request, started, send, this.#failed(request, error), true);
      return;
    }
    if (!(result instanceof Promise)) {
      // Answered without waiting (a GETATTR or LOOKUP from memory): no promise, no turn.
      this.#finish(request, started, send, result, false);
      return;
    }
    this.#inFlight++;
    result.then(
      (reply) => this.#finish(request, started, send, reply, false),
      (error) => this.#finish(request, started, send, this.#failed(request, error), true),
    ).finally(() => {
      this.#inFlight--;
      const wake = this.#wakeReader;
      this.#wakeReader = undefined;
      wake?.();
    });
  }

  /** The error reply of a failed request (reporting our bugs and I/O errors). */
  #failed(request: Request, error: unknown): Uint8Array {
    const { header } = request;
    if (!(error instanceof FsError)) {
      this.#options.onInternalError?.(opcodeNames.get(header.opcode) ?? "?", error);
    } else if (error.errno === Errno.EIO) {
      this.#options.onIoError?.(opcodeNames.get(header.opcode) ?? "?", error);
    }
    return statusReply(header.unique, errnoOf(error));
  }

  /** Count a handled request and send its one reply. Never throws. */
  #finish(
    request: Request,
    started: number,
    send: ReplySink,
    reply: Uint8Array | null,
    failed: boolean,
  ): void {
    const { header } = request;
    const unique = header.unique;
    // Again at the reply: an epoch bump while the request was handled emptied the set.
    this.#noteNamed(request);
    if (header.opcode === Opcode.OPENDIR && !failed) {
      this.#openDirs.set(header.nodeid, (this.#openDirs.get(header.nodeid) ?? 0) + 1);
    } else if (header.opcode === Opcode.RELEASEDIR) this.#releasedDir(header.nodeid);
    this.counters.record(header.opcode, monotonicSeconds() - started, failed);
    if (this.#options.trace) this.#traceRequest(header.opcode, header.nodeid, started, failed);
    if (reply === null) {
      send(null, unique);
      return;
    }
    // A length of 0: the handler left the out header to us (error replies come finished).
    if ((reply[0] | reply[1] | reply[2] | reply[3]) === 0) finishReply(reply, unique, 0);
    send(reply, unique);
    recycleReply(reply);
  }

  #lastReplyAt = 0;

  #traceRequest(opcode: number, nodeid: number, started: number, failed: boolean): void {
    const now = monotonicSeconds();
    const idle = this.#lastReplyAt === 0 ? 0 : Math.max(0, started - this.#lastReplyAt);
    this.#lastReplyAt = now;
    this.#options.trace!(
      `skyfs: fuse @${performance.now().toFixed(3)} ${opcodeNames.get(opcode) ?? opcode} ` +
        `node ${nodeid} ${((now - started) * 1000).toFixed(3)} ms` +
        `${failed ? " (error)" : ""}, idle before ${(idle * 1000).toFixed(3)} ms`,
    );
  }

  #dispatch(request: Request): Promise<Uint8Array | null> | Uint8Array | null {
    const { header } = request;
    switch (header.opcode) {
      case Opcode.INIT:
        return this.#init(request);
      case Opcode.DESTROY:
        return this.#destroy().then(() => statusReply(header.unique, 0));
      case Opcode.INTERRUPT:
        this.#interruptible.get(request.view.getBigUint64(0, true))?.abort();
        return null;
    }
    const entry = table.get(header.opcode);
    if (!entry) return statusReply(header.unique, Errno.ENOSYS);
    const ctx: Ctx = { uid: header.uid, gid: header.gid, pid: header.pid };
    if (header.opcode === Opcode.SETLKW) {
      const controller = new AbortController();
      ctx.signal = controller.signal;
      this.#interruptible.set(header.unique, controller);
      return Promise.resolve(
        entry.handle({ vfs: this.vfs, ctx, validity: this.validity, server: this }, request),
      ).finally(() => this.#interruptible.delete(header.unique));
    }
    return entry.handle({ vfs: this.vfs, ctx, validity: this.validity, server: this }, request);
  }

  #init(request: Request): Uint8Array {
    const init = decodeInitIn(request.view);
    if (init.major !== KERNEL_VERSION) {
      throw new FsError(Errno.EPROTO, `kernel FUSE major ${init.major} unsupported`);
    }
    const locks = this.#options.daemonLocks ? InitFlag.POSIX_LOCKS | InitFlag.FLOCK_LOCKS : 0;
    const wanted = InitFlag.ASYNC_READ | locks | InitFlag.ATOMIC_O_TRUNC |
      InitFlag.BIG_WRITES | InitFlag.DO_READDIRPLUS |
      InitFlag.READDIRPLUS_AUTO | InitFlag.ASYNC_DIO | InitFlag.PARALLEL_DIROPS |
      InitFlag.MAX_PAGES | InitFlag.CACHE_SYMLINKS | InitFlag.EXPLICIT_INVAL_DATA |
      InitFlag.HANDLE_KILLPRIV_V2 | InitFlag.EXPORT_SUPPORT | InitFlag.INIT_EXT;
    const flags = init.flags & wanted;
    const passthrough = Boolean(
      this.#options.passthrough && (init.flags & InitFlag.INIT_EXT) &&
        (init.flags2 & InitFlag2.PASSTHROUGH),
    );
    const ring = this.#options.ring;
    const uring = ring !== undefined && Boolean(init.flags & InitFlag.INIT_EXT) &&
      Boolean(init.flags2 & OVER_IO_URING_FLAG2);
    const flags2 = (passthrough ? InitFlag2.PASSTHROUGH : 0) | (uring ? OVER_IO_URING_FLAG2 : 0);
    const minor = Math.min(init.minor, KERNEL_MINOR_VERSION);
    if (ring !== undefined && !uring) {
      this.#options.onTransport?.(
        "dev",
        "the kernel did not offer FUSE_OVER_IO_URING in INIT (enable_uring was turned off?)",
      );
    } else if (ring === undefined) {
      this.#options.onTransport?.("dev", "");
    }
    this.#uringNegotiated = uring;
    this.negotiated = { minor, flags, flags2, passthrough };
    this.#options.onInit?.(this.negotiated);
    return initReply({
      minor,
      maxReadahead: init.maxReadahead,
      flags,
      flags2,
      maxBackground: 128,
      congestionThreshold: 96,
      maxWrite: MAX_WRITE,
      timeGran: 1,
      maxPages: MAX_WRITE / 4096,
      maxStackDepth: passthrough ? 1 : 0,
    });
  }
}
