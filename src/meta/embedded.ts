/**
 * EmbeddedKV: the durable single-node MetaKV backend. All metadata lives in memory, in an ordered
 * B+ tree (npm sorted-btree) keyed by the key's bytes; every change is appended to a log file, and
 * a snapshot bounds the log. Every disk read, write and sync goes through the process's
 * `IoEngine` (src/io: io_uring where the kernel allows it).
 *
 * Files, beside `path` (DIR/meta.db by default): `<path>.snapshot` (the whole state at one log
 * sequence number, replaced atomically), `<path>.log` (one checksummed frame per transaction
 * since; a torn tail from a crash is cut off at open), `<path>-lock` (flock: a second process gets
 * a clear "in use" error; the kernel drops the lock when the holder dies, even on kill -9),
 * `<path>-reserve` (disk space kept for the transactions that free space on a full disk).
 *
 * Durability: a transaction is applied in memory at once (reads made afterwards see it), and its
 * promise resolves once its log frame is written to the kernel, so an acknowledged transaction
 * survives kill -9 of the process. Transactions committed while a write is in flight go out
 * together in the next single write (group commit). `sync()` fdatasyncs the log: everything
 * acknowledged so far then survives power loss. A read may see a transaction whose write is still
 * in flight (as a reader of ext4 may see a create the journal has not committed); if the process
 * dies then, the transaction was never acknowledged to its writer and is gone after the restart.
 * Watchers get a transaction's events once its record is written. A log write that fails (a full
 * disk once the reserve is used up, an I/O error) takes back in memory its transactions and every
 * later one not yet written, before their callers get the error; the store goes on serving, and
 * writes succeed again once the disk has room. The bytes such a write may have left are zeroed
 * (punched), so no stale frame can follow later ones; where that fails the store stops, and every
 * later call names the restart that recovers what was acknowledged.
 *
 * Compaction: once the log outgrows both `logCompactBytes` and the last snapshot, a snapshot of a
 * copy-on-write clone of the tree is written (in the background, in 1 MiB frames), then the log
 * is restarted with only what was written since the clone. Restart = read the snapshot, replay
 * the log; watch history is rebuilt from the log, so history older than the snapshot is gone
 * after a restart (watches cannot start before it: CompactedError).
 *
 * Requests are checked as etcd checks them, whichever branch runs: among them no key put twice
 * or both put and deleted in one branch (`checkNoDuplicateKeys`: pairwise up to 8 operations, by
 * sorting the puts above, so a transaction of a thousand keys costs no more per key than a short
 * one; pairwise everywhere until session 12: 15 us per put and delete at 1024 of each, 4 now).
 * @module
 */

import sortedBtree from "sorted-btree";
import type { IoEngine } from "../io/types.ts";
import { openIoEngine } from "../io/mod.ts";
import * as libc from "../io/libc.ts";
import { Errno, FsError } from "../fs_error.ts";
import { ByteArena, ByteReader, ByteWriter } from "./log_codec.ts";
import {
  lockFile,
  LogWriter,
  readWholeFile,
  replaceFile,
  scanFrames,
  zeroFrom,
} from "./log_file.ts";
import {
  CompactedError,
  type Compare,
  type DeleteRangeRequest,
  type DeleteRangeResponse,
  type KeyRange,
  type KeyValue,
  type LeaseGrantResponse,
  type MetaKV,
  type PutRequest,
  type PutResponse,
  type RangeRequest,
  type RangeResponse,
  type RequestOp,
  type ResponseOp,
  type TxnRequest,
  type TxnResponse,
  type Watcher,
  type WatchEvent,
  type WatchOptions,
} from "./kv.ts";

/** On-disk format written by this version. 1 was the SQLite file of earlier builds. */
export const EMBEDDED_FORMAT = 2;

export interface EmbeddedKVOptions {
  /** Bytes of disk kept in reserve for metadata writes when the disk is full. Default 4 MiB;
   * 0 for none. Ignored for ":memory:". */
  reserveBytes?: number;
  /** Milliseconds clock for lease expiry. Default: `performance.now` (monotonic). */
  clock?: () => number;
  /** Watch history kept in memory, in write revisions: older history is compacted automatically
   * by the background timer. 0 disables automatic compaction. Default 10,000. */
  historyRevisions?: number;
  /** How often the background timer checks lease expiry, history and log size. Default 250 ms. */
  timerIntervalMs?: number;
  /** The log is compacted (snapshot + new log) once it is larger than this and than the last
   * snapshot. Default 16 MiB. */
  logCompactBytes?: number;
  /** The process's I/O engine (`openIoEngine()`), through which every file of the store is read,
   * written and synced; the caller keeps owning it. Default: the store opens its own engine and
   * shuts it down on close (a second ring in a process that has one). */
  io?: IoEngine;
  /** How log records are written: "mapped" (default) copies them into a shared mapping of the
   * log file (LogWriterOptions.mapped: in the page cache when the copy ends, no io-wq worker);
   * "engine" writes them through the I/O engine. Both survive kill -9 once acknowledged. */
  logWrites?: "mapped" | "engine";
}

/** Open (creating if needed) the metadata store at `path` (":memory:" for a throwaway store).
 * Rejects if another process has it open or its format is not ours. */
export async function openEmbeddedKV(
  path: string,
  options: EmbeddedKVOptions = {},
): Promise<EmbeddedKV> {
  const kv = new EmbeddedKV(path, options);
  try {
    await kv._openFiles(options.io);
  } catch (error) {
    await kv.close();
    throw error;
  }
  return kv;
}

const sortedBtreeClass = sortedBtree.default;
type KeyTree = InstanceType<typeof sortedBtreeClass<string, KeyValue>>;

function newTree(): KeyTree {
  // Keys are latin1 strings (one char per byte): their order is the bytes' unsigned order.
  return new sortedBtreeClass<string, KeyValue>(
    undefined,
    (a: string, b: string) => a < b ? -1 : a > b ? 1 : 0,
  );
}

const EMPTY = new Uint8Array(0);
const MAGIC = new TextEncoder().encode("skyfs-meta");
/** Revisions delivered per step when a watcher catches up, so one old watcher cannot hold the
 * event loop for long. */
const HISTORY_WINDOW_REVISIONS = 1024;
/** Automatic history compaction runs when history exceeds `historyRevisions` by this much, so
 * that each run drops a batch instead of one revision per tick. */
const COMPACTION_SLACK_REVISIONS = 1000;
const DEFAULT_LOG_COMPACT_BYTES = 16 << 20;
/** Snapshot frames are cut at about this size. */
const SNAPSHOT_FRAME_BYTES = 1 << 20;
/** After a failed log compaction (say a full disk), wait this long before the next try. */
const COMPACT_RETRY_MS = 5000;

/** Frame types (first payload byte). */
const enum Rec {
  LogHeader = 1,
  Txn = 2,
  SnapshotHeader = 3,
  SnapshotKeys = 4,
  SnapshotEnd = 5,
}

/** Operations inside a Txn record. */
const enum Op {
  Put = 1,
  Delete = 2,
  LeaseGrant = 3,
  LeaseDrop = 4,
  Compact = 5,
}

/** Byte offset of the revision in a Txn record's payload (after type and seq). */
const TXN_REVISION_AT = 1 + 8;

interface Lease {
  ttlSeconds: number;
  expiresAtMs: number;
  keys: Set<string>;
}

/** What takes back a transaction applied in memory whose log write failed (and what a snapshot
 * subtracts to hold only written transactions): the state before it. */
interface Undo {
  revisionBefore: number;
  seqBefore: number;
  nextLeaseIdBefore: number;
  /** Keys it wrote, each with its entry before (undefined: absent), in the order written. */
  keys: [string, KeyValue | undefined][];
  /** Leases it granted or dropped, each with its state before. */
  leases: [number, Lease | undefined][];
}

interface HistoryRecord {
  revision: number;
  events: WatchEvent[];
}

/** How a key range selects keys: one key, [key, end), or every key from `key` on. */
const enum Span {
  One,
  Between,
  ToEnd,
}

function spanOf(rangeEnd: Uint8Array | undefined): Span {
  if (rangeEnd === undefined || rangeEnd.length === 0) return Span.One;
  if (rangeEnd.length === 1 && rangeEnd[0] === 0) return Span.ToEnd; // etcd's "\0": to the end
  return Span.Between;
}

/** The key's bytes as a latin1 string, the tree's key. */
function keyString(key: Uint8Array): string {
  if (key.length <= 4096) return String.fromCharCode.apply(null, key as unknown as number[]);
  let s = "";
  for (let i = 0; i < key.length; i += 4096) {
    s += String.fromCharCode.apply(null, key.subarray(i, i + 4096) as unknown as number[]);
  }
  return s;
}

function inSpan(key: string, start: string, span: Span, end: string): boolean {
  if (span === Span.One) return key === start;
  if (key < start) return false;
  return span === Span.ToEnd || key < end;
}

function checkKey(key: unknown, what: string): asserts key is Uint8Array {
  if (!(key instanceof Uint8Array) || key.length === 0) {
    throw new TypeError(`${what} must be a non-empty Uint8Array, got ${describe(key)}`);
  }
}

function checkBytes(value: unknown, what: string): asserts value is Uint8Array {
  if (!(value instanceof Uint8Array)) {
    throw new TypeError(`${what} must be a Uint8Array, got ${describe(value)}`);
  }
}

/** A value for an error message: printable keys as text, other bytes in hex. */
function describe(value: unknown): string {
  if (value instanceof Uint8Array) {
    if (value.length === 0) return "empty bytes";
    const printable = value.every((b) => b >= 0x20 && b < 0x7f);
    const shown = value.subarray(0, 64);
    const body = printable
      ? JSON.stringify(String.fromCharCode(...shown))
      : `0x${Array.from(shown, (b) => b.toString(16).padStart(2, "0")).join("")}`;
    return value.length > 64 ? `${body}... (${value.length} bytes)` : body;
  }
  return typeof value === "string" ? JSON.stringify(value) : String(value);
}

/** A stored entry as handed out: fresh buffers (one allocation), so a caller's edits cannot
 * reach the store. */
function copyKv(kv: KeyValue, keysOnly: boolean): KeyValue {
  const [key, value] = keysOnly ? [kv.key.slice(), EMPTY] : joined(kv.key, kv.value);
  return {
    key,
    value,
    createRevision: kv.createRevision,
    modRevision: kv.modRevision,
    version: kv.version,
    lease: kv.lease,
  };
}

/** Bytes of one buffer shared by the copies of a range's entries (see `copyKvs`). */
const RANGE_COPY_BYTES = 16 * 1024;

/** Copies of stored entries, as `copyKv` makes them, several sharing one buffer: a buffer is cut
 * at RANGE_COPY_BYTES, so a caller keeping one entry keeps at most that much alive. */
function copyKvs(found: KeyValue[], keysOnly: boolean): KeyValue[] {
  const out: KeyValue[] = new Array(found.length);
  let buffer = new Uint8Array(0);
  let at = 0;
  for (let i = 0; i < found.length; i++) {
    const kv = found[i];
    const valueBytes = keysOnly ? 0 : kv.value.length;
    const bytes = kv.key.length + valueBytes;
    if (bytes > RANGE_COPY_BYTES / 4) {
      out[i] = copyKv(kv, keysOnly);
      continue;
    }
    if (at + bytes > buffer.length) {
      buffer = new Uint8Array(RANGE_COPY_BYTES);
      at = 0;
    }
    buffer.set(kv.key, at);
    const key = buffer.subarray(at, at + kv.key.length);
    at += kv.key.length;
    let value = EMPTY;
    if (!keysOnly) {
      buffer.set(kv.value, at);
      value = buffer.subarray(at, at + valueBytes);
      at += valueBytes;
    }
    out[i] = {
      key,
      value,
      createRevision: kv.createRevision,
      modRevision: kv.modRevision,
      version: kv.version,
      lease: kv.lease,
    };
  }
  return out;
}

/** Copies of `key` and `value` sharing one buffer: one ArrayBuffer per stored key, not two. */
function joined(key: Uint8Array, value: Uint8Array): [Uint8Array, Uint8Array] {
  const both = new Uint8Array(key.length + value.length);
  both.set(key);
  both.set(value, key.length);
  return [both.subarray(0, key.length), both.subarray(key.length)];
}

function deletedKv(key: Uint8Array, revision: number): KeyValue {
  return { key, value: EMPTY, createRevision: 0, modRevision: revision, version: 0, lease: 0 };
}

/** One registered watch: history captured at creation (up to `historyEnd`), then live events
 * queued by the store as transactions commit. */
class _Watch implements Watcher {
  /** History records still to deliver, and the next one's index. */
  history: HistoryRecord[];
  historyNext = 0;
  readonly queue: [WatchEvent[], number][] = [];
  scheduled = false;
  timer: ReturnType<typeof setTimeout> | undefined;
  cancelled = false;

  constructor(
    readonly store: EmbeddedKV,
    readonly key: string,
    readonly span: Span,
    readonly end: string,
    readonly startRevision: number,
    history: HistoryRecord[],
    /** The last revision `history` covers; later ones arrive as they are written. */
    readonly historyEnd: number,
    readonly prevKv: boolean,
    readonly onEvents: (events: WatchEvent[], revision: number) => void,
  ) {
    this.history = history;
  }

  get catchingUp(): boolean {
    return this.historyNext < this.history.length;
  }

  cancel(): void {
    if (this.cancelled) return;
    this.cancelled = true;
    this.queue.length = 0;
    this.history = [];
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.store._unwatch(this);
  }
}

/** The embedded MetaKV. Create with `openEmbeddedKV`. */
export class EmbeddedKV implements MetaKV {
  readonly path: string;
  /** `PutRequest.owned` keeps the caller's buffers (see #putSync). */
  readonly keepsOwnedBuffers = true;
  readonly #inMemory: boolean;
  readonly #clock: () => number;
  readonly #historyRevisions: number;
  readonly #logCompactBytes: number;
  readonly #reserveBytes: number;
  readonly #mappedLog: boolean;
  #io: IoEngine | undefined;
  #ownsIo = false;
  #lockFd: number | undefined;
  #log: LogWriter | undefined;
  #reserve: SpaceReserve | undefined;
  #closed = false;
  readonly #timer: ReturnType<typeof setInterval>;

  #tree: KeyTree = newTree();
  #revision = 1;
  #compactRevision = 0;
  #nextLeaseId = 1;
  /** Sequence number of the last record (log frames are numbered; a snapshot covers up to one). */
  #seq = 0;
  readonly #leases = new Map<number, Lease>();
  /** Lower bound of every lease's expiry, so the lazy check is one comparison. */
  #nextExpiryMs = Infinity;
  readonly #watchers = new Set<_Watch>();
  /** Write revisions after the compacted one, oldest first. */
  #history: HistoryRecord[] = [];
  /** Where transaction records are written (one buffer for many: see ByteArena). */
  readonly #arena = new ByteArena();

  /** Transactions applied in memory whose log records are not written yet, oldest first. */
  readonly #unwritten: Undo[] = [];
  /** Newest revision whose record is written: history handed to a new watcher stops here, and
   * later events reach watchers once written (a failed write takes them back unseen). */
  #durableRevision = 1;

  // State of the write transaction in progress (only valid between #beginWrite and #endWrite).
  #writing = false;
  #undo: Undo | undefined;
  #writeRevision = 0;
  #events: WatchEvent[] = [];
  #record: ByteWriter | undefined;
  #recordOps = 0;

  /** Bytes of the last snapshot written or read. */
  #snapshotBytes = 0;
  #compacting: Promise<void> | undefined;
  #compactNotBeforeMs = 0;

  /** Use `openEmbeddedKV`; the constructor alone gives a working ":memory:" store. */
  constructor(path: string, options: EmbeddedKVOptions = {}) {
    this.path = path;
    this.#inMemory = path === ":memory:" || path === "";
    this.#clock = options.clock ?? (() => performance.now());
    this.#historyRevisions = options.historyRevisions ?? 10_000;
    this.#logCompactBytes = options.logCompactBytes ?? DEFAULT_LOG_COMPACT_BYTES;
    this.#reserveBytes = options.reserveBytes ?? DEFAULT_RESERVE_BYTES;
    this.#mappedLog = (options.logWrites ?? "mapped") === "mapped";
    this.#timer = setInterval(() => this.#onTimer(), options.timerIntervalMs ?? 250);
    Deno.unrefTimer(this.#timer);
  }

  get #snapshotPath(): string {
    return `${this.path}.snapshot`;
  }

  get #logPath(): string {
    return `${this.path}.log`;
  }

  /** The asynchronous part of opening (openEmbeddedKV calls it): lock, load the snapshot,
   * replay the log, and take the disk-space reserve. */
  async _openFiles(io: IoEngine | undefined): Promise<void> {
    if (this.#inMemory) return;
    if (io === undefined) {
      io = await openIoEngine({ log: () => {} });
      this.#ownsIo = true;
    }
    this.#io = io;
    try {
      await this.#refuseOldFormat(io);
      this.#lockFd = await lockFile(
        io,
        `${this.path}-lock`,
        () =>
          new Error(
            `Metadata at "${this.path}" is in use by another process: stop the other skyfs daemon first`,
          ),
      );
    } catch (error) {
      if (error instanceof FsError) {
        throw new Error(`Cannot open metadata at "${this.path}": ${error.message}`);
      }
      throw error;
    }
    const snapshot = await readWholeFile(io, this.#snapshotPath);
    const log = await readWholeFile(io, this.#logPath);
    if (snapshot === undefined && log !== undefined) {
      throw new Error(
        `Metadata log "${this.#logPath}" has no snapshot "${this.#snapshotPath}" beside it: restore the snapshot, or move both away to start empty`,
      );
    }
    if (snapshot !== undefined) this.#loadSnapshot(snapshot);
    else await this.#writeSnapshot(); // a new store: its empty state
    let goodBytes = 0;
    let needsCompaction = false;
    if (log !== undefined) {
      goodBytes = this.#replayLog(log).goodBytes;
      // Zeros after the last frame are room a mapped log's writer made ahead (fallocate), not
      // a torn tail: appends go on right after the last frame.
      if (goodBytes > 0 && goodBytes < log.length && !zeroFrom(log, goodBytes)) {
        console.error(
          `skyfs: metadata log "${this.#logPath}": cut a torn tail of ${
            log.length - goodBytes
          } bytes (a write cut short by a crash or a full disk; nothing acknowledged)`,
        );
        needsCompaction = true;
      }
      if (goodBytes > Math.max(this.#logCompactBytes, this.#snapshotBytes)) needsCompaction = true;
    }
    if (goodBytes === 0) {
      // No usable log yet: start one holding only its header.
      const header = encodeLogHeader();
      const fd = await replaceFile(io, this.#logPath, (append) => append(header), {
        keepOpen: true,
      });
      this.#log = await this.#newLogWriter(io, fd!, header.length);
    } else {
      const fd = await io.open(this.#logPath, libc.O_WRONLY | libc.O_CLOEXEC);
      this.#log = await this.#newLogWriter(io, fd, goodBytes);
    }
    // A torn tail is cut by restarting the log (the engine has no ftruncate, and bytes left
    // behind a shorter append could later read as frames).
    this.#durableRevision = this.#revision;
    if (needsCompaction) await this.#compactLog();
    if (this.#reserveBytes > 0) {
      this.#reserve = new SpaceReserve(io, `${this.path}-reserve`, this.#reserveBytes);
      await this.#reserve.take();
    }
  }

  async #refuseOldFormat(io: IoEngine): Promise<void> {
    let fd: number;
    try {
      fd = await io.open(this.path, libc.O_RDONLY | libc.O_CLOEXEC);
    } catch (error) {
      if (error instanceof FsError && error.errno === Errno.ENOENT) return;
      throw error;
    }
    const head = new Uint8Array(16);
    try {
      await io.read(fd, head, 0);
    } finally {
      await io.close(fd);
    }
    if (new TextDecoder().decode(head) === "SQLite format 3\0") {
      throw new Error(
        `Metadata at "${this.path}" is in format 1 (SQLite) of earlier skyfs builds; this build reads format ${EMBEDDED_FORMAT}: copy the files out with the earlier build and start with an empty --data directory`,
      );
    }
    throw new Error(
      `"${this.path}" exists and is not skyfs metadata (its files are "${this.path}.snapshot" and "${this.path}.log"): choose another path`,
    );
  }

  #newLogWriter(io: IoEngine, fd: number, bytes: number): Promise<LogWriter> {
    return LogWriter.open(io, fd, bytes, {
      mapped: this.#mappedLog,
      // A full disk must not stop the unlink or truncate that would free it: give the reserve
      // back to the file system and write the same bytes again.
      onWriteError: async (error) => isDiskFull(error) && (await this.#reserve?.release() ?? false),
      // The failed write's transactions and every later one not yet written are taken back,
      // before their callers hear of the error: memory again matches what the log holds.
      onRollback: () => this.#rollBack(),
    });
  }

  // ---- loading ----

  #loadSnapshot(bytes: Uint8Array): void {
    const path = this.#snapshotPath;
    let header = false;
    let ended = false;
    let keys = 0;
    const tree = newTree();
    const end = scanFrames(bytes, (payload) => {
      const r = new ByteReader(payload);
      const type = r.u8();
      if (!header) {
        if (type !== Rec.SnapshotHeader) throw damaged(path, "it does not start with a header");
        checkMagicAndFormat(r, path);
        this.#seq = r.f64();
        this.#revision = r.f64();
        this.#compactRevision = r.f64();
        this.#nextLeaseId = r.f64();
        const now = this.#clock();
        for (let n = r.u32(); n > 0; n--) {
          const id = r.f64();
          const ttlSeconds = r.f64();
          // Like etcd after a restart, every lease gets its full TTL again: its holder had no
          // way to keep it alive while the store was down.
          this.#leases.set(id, {
            ttlSeconds,
            expiresAtMs: now + ttlSeconds * 1000,
            keys: new Set(),
          });
          this.#nextExpiryMs = Math.min(this.#nextExpiryMs, now + ttlSeconds * 1000);
        }
        header = true;
      } else if (type === Rec.SnapshotKeys) {
        for (let n = r.u32(); n > 0; n--) {
          const [key, value] = joined(r.view(), r.view());
          const kv: KeyValue = {
            key,
            value,
            createRevision: r.f64(),
            modRevision: r.f64(),
            version: r.f64(),
            lease: r.f64(),
          };
          const name = keyString(key);
          tree.set(name, kv);
          if (kv.lease !== 0) this.#leases.get(kv.lease)?.keys.add(name);
          keys++;
        }
      } else if (type === Rec.SnapshotEnd) {
        if (r.f64() !== keys) throw damaged(path, "its key count does not match");
        ended = true;
        return false;
      } else {
        throw damaged(path, `it holds a record of type ${type}`);
      }
    });
    if (!ended) throw damaged(path, `it ends after ${end} of ${bytes.length} bytes`);
    this.#tree = tree;
    this.#snapshotBytes = bytes.length;
    // History before the snapshot is not kept across a restart (revision 1 is the empty store).
    if (this.#revision > 1) {
      this.#compactRevision = Math.max(this.#compactRevision, this.#revision + 1);
    }
  }

  /** Apply the log's records after the snapshot; returns where its whole frames end. */
  #replayLog(bytes: Uint8Array): { goodBytes: number } {
    const path = this.#logPath;
    let header = false;
    const goodBytes = scanFrames(bytes, (payload) => {
      const r = new ByteReader(payload);
      const type = r.u8();
      if (!header) {
        if (type !== Rec.LogHeader) throw damaged(path, "it does not start with a header");
        checkMagicAndFormat(r, path);
        header = true;
        return;
      }
      if (type !== Rec.Txn) throw damaged(path, `it holds a record of type ${type}`);
      const seq = r.f64();
      if (seq <= this.#seq) return; // covered by the snapshot (a crash between the two renames)
      if (seq !== this.#seq + 1) {
        throw damaged(path, `record ${seq} follows ${this.#seq}`);
      }
      this.#applyRecord(r);
      this.#seq = seq;
    });
    return { goodBytes: header ? goodBytes : 0 };
  }

  /** Replay one Txn record (after its seq) into the state, rebuilding watch history. */
  #applyRecord(r: ByteReader): void {
    const revision = r.f64();
    const events: WatchEvent[] = [];
    while (!r.done) {
      const op = r.u8();
      if (op === Op.Put) {
        const [key, value] = joined(r.view(), r.view());
        const kv: KeyValue = {
          key,
          value,
          createRevision: r.f64(),
          modRevision: revision,
          version: r.f64(),
          lease: r.f64(),
        };
        const name = keyString(key);
        const prev = this.#tree.get(name);
        this.#setKey(name, kv, prev);
        events.push(prev === undefined ? { type: "put", kv } : { type: "put", kv, prevKv: prev });
      } else if (op === Op.Delete) {
        const key = r.bytes();
        const name = keyString(key);
        const prev = this.#tree.get(name);
        if (prev === undefined) continue;
        this.#deleteKey(name, prev);
        events.push({ type: "delete", kv: deletedKv(prev.key, revision), prevKv: prev });
      } else if (op === Op.LeaseGrant) {
        const id = r.f64();
        const ttlSeconds = r.f64();
        const expiresAtMs = this.#clock() + ttlSeconds * 1000;
        this.#leases.set(id, { ttlSeconds, expiresAtMs, keys: new Set() });
        this.#nextExpiryMs = Math.min(this.#nextExpiryMs, expiresAtMs);
        this.#nextLeaseId = Math.max(this.#nextLeaseId, id + 1);
      } else if (op === Op.LeaseDrop) {
        this.#leases.delete(r.f64());
      } else if (op === Op.Compact) {
        this.#compactRevision = Math.max(this.#compactRevision, r.f64());
      } else {
        throw damaged(this.#logPath, `it holds an operation of type ${op}`);
      }
    }
    if (revision > this.#revision) {
      this.#revision = revision;
      if (events.length > 0) this.#history.push({ revision, events });
    }
  }

  // ---- tree bookkeeping shared by transactions and replay ----

  #setKey(name: string, kv: KeyValue, prev: KeyValue | undefined): void {
    this.#tree.set(name, kv);
    if (prev !== undefined && prev.lease !== 0) this.#leases.get(prev.lease)?.keys.delete(name);
    if (kv.lease !== 0) this.#leases.get(kv.lease)?.keys.add(name);
    this.#undo?.keys.push([name, prev]);
  }

  #deleteKey(name: string, prev: KeyValue): void {
    this.#tree.delete(name);
    if (prev.lease !== 0) this.#leases.get(prev.lease)?.keys.delete(name);
    this.#undo?.keys.push([name, prev]);
  }

  /** Grant or drop lease `id` (undefined), remembering its state before for a rollback. */
  #setLease(id: number, lease: Lease | undefined): void {
    this.#undo?.leases.push([id, this.#leases.get(id)]);
    if (lease === undefined) this.#leases.delete(id);
    else this.#leases.set(id, lease);
  }

  /** Take back every transaction not yet written, newest first (LogWriter's onRollback). */
  #rollBack(): void {
    for (let i = this.#unwritten.length - 1; i >= 0; i--) {
      const undo = this.#unwritten[i];
      // Leases first: a dropped lease must exist again before its keys come back.
      for (let j = undo.leases.length - 1; j >= 0; j--) {
        const [id, lease] = undo.leases[j];
        if (lease === undefined) this.#leases.delete(id);
        else this.#leases.set(id, lease);
      }
      for (let j = undo.keys.length - 1; j >= 0; j--) {
        const [name, before] = undo.keys[j];
        const now = this.#tree.get(name);
        if (now !== undefined && now.lease !== 0) this.#leases.get(now.lease)?.keys.delete(name);
        if (before === undefined) {
          this.#tree.delete(name);
        } else {
          this.#tree.set(name, before);
          if (before.lease !== 0) this.#leases.get(before.lease)?.keys.add(name);
        }
      }
      this.#revision = undo.revisionBefore;
      this.#seq = undo.seqBefore;
      this.#nextLeaseId = undo.nextLeaseIdBefore;
    }
    this.#unwritten.length = 0;
    this.#nextExpiryMs = 0; // a lease given back may be due: the next check looks at them all
    while (
      this.#history.length > 0 && this.#history[this.#history.length - 1].revision > this.#revision
    ) {
      this.#history.pop();
    }
  }

  /** [key, value] pairs of a range, in key order; at most `max` (0: all). */
  #pairs(start: string, span: Span, end: string, max: number): [string, KeyValue][] {
    if (span === Span.One) {
      const kv = this.#tree.get(start);
      return kv === undefined ? [] : [[start, kv]];
    }
    const high = span === Span.ToEnd ? this.#tree.maxKey() : end;
    // sorted-btree always includes `low` when present, so an empty [start, end) is ours to see.
    if (high === undefined || high < start || (span === Span.Between && high === start)) return [];
    return this.#tree.getRange(start, high, span === Span.ToEnd, max > 0 ? max : undefined);
  }

  #count(start: string, span: Span, end: string): number {
    if (span === Span.One) return this.#tree.has(start) ? 1 : 0;
    const high = span === Span.ToEnd ? this.#tree.maxKey() : end;
    if (high === undefined || high < start || (span === Span.Between && high === start)) return 0;
    return this.#tree.forRange(start, high, span === Span.ToEnd);
  }

  // ---- checks ----

  #checkOpen(): void {
    if (this.#closed) throw new Error(`Metadata store "${this.path}" is closed`);
    const failed = this.#log?.failed;
    if (failed !== undefined) {
      throw new Error(
        `Metadata store "${this.path}" stopped after a failed log write (${
          (failed as Error).message
        }): restart skyfs, which recovers every acknowledged transaction`,
      );
    }
  }

  /** Expire due leases now, so reads after a lease's deadline never see its keys. */
  #expireDue(): void {
    // No lease (every one-node mount): no clock read per call either (an op call, 0.1 us+).
    if (this.#nextExpiryMs === Infinity || this.#clock() < this.#nextExpiryMs) return;
    const now = this.#clock();
    let next = Infinity;
    for (const [id, lease] of this.#leases) {
      if (lease.expiresAtMs <= now) this.#revokeSync(id).catch(() => {});
      else if (lease.expiresAtMs < next) next = lease.expiresAtMs;
    }
    this.#nextExpiryMs = next;
  }

  #onTimer(): void {
    // Not before the log is open: a history compaction (or a lease revoked) while `_openFiles`
    // awaits would commit a transaction with no log to write it to, and its sequence number,
    // taken all the same, would leave a gap the next open refuses as damage.
    if (this.#closed || (!this.#inMemory && this.#log === undefined)) return;
    this.#reserve?.retakeLater();
    try {
      this.#checkOpen();
      this.#expireDue();
      const history = this.#revision - this.#compactRevision;
      if (
        this.#historyRevisions > 0 &&
        history > this.#historyRevisions + COMPACTION_SLACK_REVISIONS
      ) {
        this.#compactSync(this.#revision - this.#historyRevisions).catch(() => {});
      }
      this.#maybeCompactLog();
    } catch (error) {
      // A background failure must not kill the process; the next foreground call meets the
      // same error and reports it to its caller.
      console.error(`skyfs: metadata background task failed: ${(error as Error).message}`);
    }
  }

  #maybeCompactLog(): void {
    const log = this.#log;
    if (log === undefined || this.#compacting !== undefined) return;
    if (log.bytes <= Math.max(this.#logCompactBytes, this.#snapshotBytes)) return;
    if (performance.now() < this.#compactNotBeforeMs) return;
    this.#compactLog().catch((error) => {
      this.#compactNotBeforeMs = performance.now() + COMPACT_RETRY_MS;
      console.error(
        `skyfs: metadata log compaction of "${this.path}" failed, retrying in ${COMPACT_RETRY_MS} ms: ${
          (error as Error).message
        }`,
      );
    });
  }

  // ---- write transactions ----

  #beginWrite(): void {
    this.#writing = true;
    this.#writeRevision = this.#revision + 1;
    this.#events = [];
    this.#recordOps = 0;
    if (this.#inMemory) return;
    this.#undo = {
      revisionBefore: this.#revision,
      seqBefore: this.#seq,
      nextLeaseIdBefore: this.#nextLeaseId,
      keys: [],
      leases: [],
    };
    // In the store's arena (no buffer of its own per transaction), with room for a rename's or a
    // create's record (5-6 puts and deletes, 600-900 bytes) so that it rarely moves out of it.
    const w = new ByteWriter(1024, this.#arena);
    w.u8(Rec.Txn);
    w.f64(this.#seq + 1);
    w.f64(0); // the revision, known at the end
    this.#record = w;
  }

  /** Commit: the revision advances only if a key changed (as etcd: a delete of nothing or a
   * lease grant is not a new revision). Resolves once the record is written. */
  #endWrite(): Promise<void> {
    this.#writing = false;
    const events = this.#events;
    const changed = events.length > 0;
    const revision = changed ? this.#writeRevision : this.#revision;
    if (changed) {
      this.#revision = revision;
      this.#history.push({ revision, events });
    }
    const record = this.#record;
    const undo = this.#undo;
    this.#record = undefined;
    this.#undo = undefined;
    if (this.#recordOps === 0 || record === undefined || undo === undefined) {
      // ":memory:", or nothing to log: durable as it stands.
      if (changed) this.#published(events, revision);
      return Promise.resolve();
    }
    this.#seq++;
    record.setF64At(TXN_REVISION_AT, revision);
    this.#unwritten.push(undo);
    return this.#log!.append(record.frame()).then(() => {
      // Appends complete in order, so this transaction is the oldest unwritten one.
      this.#unwritten.shift();
      if (changed) this.#published(events, revision);
    });
  }

  /** A transaction's record is written: its events go to the watchers. */
  #published(events: WatchEvent[], revision: number): void {
    this.#durableRevision = revision;
    this.#publish(events, revision);
  }

  #recordPut(kv: KeyValue): void {
    this.#recordOps++;
    const w = this.#record;
    if (w === undefined) return;
    w.u8(Op.Put);
    w.bytes(kv.key);
    w.bytes(kv.value);
    w.f64(kv.createRevision);
    w.f64(kv.version);
    w.f64(kv.lease);
  }

  #recordDelete(key: Uint8Array): void {
    this.#recordOps++;
    const w = this.#record;
    if (w === undefined) return;
    w.u8(Op.Delete);
    w.bytes(key);
  }

  #recordOp(op: Op, a: number, b?: number): void {
    this.#recordOps++;
    const w = this.#record;
    if (w === undefined) return;
    w.u8(op);
    w.f64(a);
    if (b !== undefined) w.f64(b);
  }

  /** The revision reads see: inside a write, its own revision once it has changed something. */
  #readRevision(): number {
    return this.#writing && this.#events.length > 0 ? this.#writeRevision : this.#revision;
  }

  #putSync(request: PutRequest): PutResponse {
    const name = keyString(request.key);
    const prev = this.#tree.get(name);
    const rev = this.#writeRevision;
    // Copies (the caller may reuse its buffers), in one allocation (memory per key), unless the
    // caller handed its buffers over (`owned`: the namespace's encoded records, whose buffers its
    // cache holds too).
    const [key, value] = request.owned === true
      ? [request.key, request.value]
      : joined(request.key, request.value);
    const kv: KeyValue = {
      key,
      value,
      createRevision: prev === undefined ? rev : prev.createRevision,
      modRevision: rev,
      version: prev === undefined ? 1 : prev.version + 1,
      lease: request.lease ?? 0,
    };
    this.#setKey(name, kv, prev);
    this.#recordPut(kv);
    this.#events.push(prev === undefined ? { type: "put", kv } : { type: "put", kv, prevKv: prev });
    return request.prevKv && prev !== undefined ? { prevKv: copyKv(prev, false) } : {};
  }

  #deleteSync(request: DeleteRangeRequest): DeleteRangeResponse {
    const span = spanOf(request.rangeEnd);
    const start = keyString(request.key);
    const end = span === Span.Between ? keyString(request.rangeEnd!) : "";
    const pairs = this.#pairs(start, span, end, 0);
    const rev = this.#writeRevision;
    for (const [name, prev] of pairs) {
      this.#deleteKey(name, prev);
      this.#recordDelete(prev.key);
      this.#events.push({ type: "delete", kv: deletedKv(prev.key, rev), prevKv: prev });
    }
    return {
      deleted: pairs.length,
      prevKvs: request.prevKv ? pairs.map(([, kv]) => copyKv(kv, false)) : [],
    };
  }

  #rangeSync(request: RangeRequest): RangeResponse {
    const limit = request.limit ?? 0;
    const span = spanOf(request.rangeEnd);
    const start = keyString(request.key);
    const end = span === Span.Between ? keyString(request.rangeEnd!) : "";
    const revision = this.#readRevision();
    if (request.countOnly) {
      return { kvs: [], more: false, count: this.#count(start, span, end), revision };
    }
    const keysOnly = request.keysOnly === true;
    if (span === Span.One) {
      const kv = this.#tree.get(start);
      return {
        kvs: kv === undefined ? [] : [copyKv(kv, keysOnly)],
        more: false,
        count: kv ? 1 : 0,
        revision,
      };
    }
    const high = span === Span.ToEnd ? this.#tree.maxKey() : end;
    if (high === undefined || high < start || (span === Span.Between && high === start)) {
      return { kvs: [], more: false, count: 0, revision };
    }
    // One pass: the first `limit` entries, and etcd's count of every key in the range; then
    // their copies, packed into shared buffers of up to RANGE_COPY_BYTES (an ArrayBuffer per key
    // cost about 1 us each: a directory listing of 78 names spent a third of its time there).
    const found: KeyValue[] = [];
    const max = limit === 0 ? Infinity : limit;
    const count = this.#tree.forRange(start, high, span === Span.ToEnd, (_name, kv) => {
      if (found.length < max) found.push(kv);
    });
    return { kvs: copyKvs(found, keysOnly), more: count > found.length, count, revision };
  }

  #compareHolds(compare: Compare): boolean {
    const kv = this.#tree.get(keyString(compare.key));
    let order: number;
    if (compare.target === "value") {
      if (kv === undefined) return false; // etcd: a missing key's value compares false always
      order = compareBytes(kv.value, compare.value);
    } else {
      order = (kv === undefined ? 0 : kv[compare.target]) - compare.value;
    }
    switch (compare.result) {
      case "==":
        return order === 0;
      case "!=":
        return order !== 0;
      case "<":
        return order < 0;
      default:
        return order > 0;
    }
  }

  #runOp(op: RequestOp): ResponseOp {
    if ("range" in op) return { range: this.#rangeSync(op.range) };
    if ("put" in op) return { put: this.#putSync(op.put) };
    if ("deleteRange" in op) return { deleteRange: this.#deleteSync(op.deleteRange) };
    throw new TypeError("The embedded store has no merge operation (MetaKV.merges is false)");
  }

  /** Every check a branch's operations need, made before any of them runs, so a transaction
   * either applies whole or not at all (nothing to roll back). */
  #checkOps(ops: RequestOp[]): void {
    for (const op of ops) {
      if ("range" in op) {
        checkKey(op.range.key, "Range key");
        const limit = op.range.limit ?? 0;
        if (!Number.isSafeInteger(limit) || limit < 0) {
          throw new RangeError(`Range limit must be a non-negative integer, got ${limit}`);
        }
        if (op.range.rangeEnd !== undefined) checkBytes(op.range.rangeEnd, "Range end");
      } else if ("put" in op) {
        checkKey(op.put.key, "Put key");
        checkBytes(op.put.value, "Put value");
        const lease = op.put.lease ?? 0;
        if (lease !== 0 && !this.#leases.has(lease)) {
          throw new Error(
            `Lease ${lease} not found: grant it with leaseGrant, or put without lease`,
          );
        }
      } else if ("deleteRange" in op) {
        checkKey(op.deleteRange.key, "Delete key");
        if (op.deleteRange.rangeEnd !== undefined) {
          checkBytes(op.deleteRange.rangeEnd, "Delete range end");
        }
      } else {
        throw new TypeError(`Unknown txn operation ${JSON.stringify(Object.keys(op))}`);
      }
    }
  }

  #checkCompare(compare: Compare): void {
    checkKey(compare.key, "Compare key");
    if (compare.target === "value") {
      checkBytes(compare.value, "Compare value");
      if (compare.ignore !== undefined) {
        throw new TypeError("The embedded store has no value compare with ignore (no merges)");
      }
    } else {
      if (
        compare.target !== "version" && compare.target !== "createRevision" &&
        compare.target !== "modRevision" && compare.target !== "lease"
      ) {
        throw new TypeError(`Unknown compare target ${describe(compare.target)}`);
      }
      if (typeof compare.value !== "number") {
        throw new TypeError(`Compare ${compare.target} value must be a number`);
      }
    }
    const result = compare.result;
    if (result !== "==" && result !== "!=" && result !== "<" && result !== ">") {
      throw new TypeError(`Unknown compare result ${describe(compare.result)}`);
    }
  }

  // ---- leases and compaction (synchronous parts) ----

  #revokeSync(id: number): Promise<void> {
    const lease = this.#leases.get(id);
    this.#beginWrite();
    const rev = this.#writeRevision;
    if (lease !== undefined) {
      for (const name of [...lease.keys].sort()) {
        const prev = this.#tree.get(name)!;
        this.#deleteKey(name, prev);
        this.#recordDelete(prev.key);
        this.#events.push({ type: "delete", kv: deletedKv(prev.key, rev), prevKv: prev });
      }
    }
    this.#setLease(id, undefined);
    this.#recordOp(Op.LeaseDrop, id);
    return this.#endWrite();
  }

  #compactSync(revision: number): Promise<void> {
    this.#compactRevision = revision;
    // Watchers catching up hold their own copy of the history they still need.
    let drop = 0;
    while (drop < this.#history.length && this.#history[drop].revision < revision) drop++;
    if (drop > 0) this.#history.splice(0, drop);
    this.#beginWrite();
    this.#recordOp(Op.Compact, revision);
    return this.#endWrite();
  }

  // ---- log compaction ----

  /** Write a snapshot of the state as of now, then restart the log with what followed. */
  #compactLog(): Promise<void> {
    if (this.#compacting !== undefined) return this.#compacting;
    const running = this.#writeSnapshotAndLog().finally(() => {
      this.#compacting = undefined;
    });
    this.#compacting = running;
    return running;
  }

  async #writeSnapshotAndLog(): Promise<void> {
    const log = this.#log!;
    log.startCapture();
    try {
      await this.#writeSnapshot();
      await log.switchFile(async (captured) => {
        const logHeader = encodeLogHeader();
        let bytes = logHeader.length;
        const fd = await replaceFile(this.#io!, this.#logPath, async (append) => {
          await append(logHeader);
          for (const part of captured) {
            await append(part);
            bytes += part.length;
          }
        }, { keepOpen: true });
        return { fd: fd!, bytes };
      });
    } finally {
      log.stopCapture();
    }
  }

  /** Replace the snapshot file with the state as of record #seq (a copy-on-write clone of the
   * tree, so transactions go on while it is written). */
  async #writeSnapshot(): Promise<void> {
    // Only written transactions: the clone minus those whose records are still on their way (a
    // failed write takes them back, and the log will then hold other records under their seq).
    const tree = this.#tree.clone();
    const leases = new Map([...this.#leases].map(([id, lease]) => [id, lease.ttlSeconds]));
    let seq = this.#seq;
    let revision = this.#revision;
    let nextLeaseId = this.#nextLeaseId;
    for (let i = this.#unwritten.length - 1; i >= 0; i--) {
      const undo = this.#unwritten[i];
      for (let j = undo.leases.length - 1; j >= 0; j--) {
        const [id, lease] = undo.leases[j];
        if (lease === undefined) leases.delete(id);
        else leases.set(id, lease.ttlSeconds);
      }
      for (let j = undo.keys.length - 1; j >= 0; j--) {
        const [name, before] = undo.keys[j];
        if (before === undefined) tree.delete(name);
        else tree.set(name, before);
      }
      seq = undo.seqBefore;
      revision = undo.revisionBefore;
      nextLeaseId = undo.nextLeaseIdBefore;
    }
    const header = new ByteWriter();
    header.u8(Rec.SnapshotHeader);
    header.bytes(MAGIC);
    header.u32(EMBEDDED_FORMAT);
    header.f64(seq);
    header.f64(revision);
    header.f64(this.#compactRevision);
    header.f64(nextLeaseId);
    header.u32(leases.size);
    for (const [id, ttlSeconds] of leases) {
      header.f64(id);
      header.f64(ttlSeconds);
    }
    let snapshotBytes = 0;
    await replaceFile(this.#io!, this.#snapshotPath, async (append) => {
      const put = async (frame: Uint8Array) => {
        snapshotBytes += frame.length;
        await append(frame);
      };
      await put(header.frame());
      let keys = 0;
      let chunk: ByteWriter | undefined;
      let inChunk = 0;
      let countAt = 0;
      const flush = async () => {
        if (chunk === undefined) return;
        chunk.setU32At(countAt, inChunk);
        const frame = chunk.frame();
        chunk = undefined;
        await put(frame);
      };
      for (const [, kv] of tree.entries()) {
        if (chunk === undefined) {
          chunk = new ByteWriter(SNAPSHOT_FRAME_BYTES + 64 * 1024);
          chunk.u8(Rec.SnapshotKeys);
          countAt = chunk.length;
          chunk.u32(0);
          inChunk = 0;
        }
        chunk.bytes(kv.key);
        chunk.bytes(kv.value);
        chunk.f64(kv.createRevision);
        chunk.f64(kv.modRevision);
        chunk.f64(kv.version);
        chunk.f64(kv.lease);
        inChunk++;
        keys++;
        if (chunk.length >= SNAPSHOT_FRAME_BYTES) await flush();
      }
      await flush();
      const end = new ByteWriter();
      end.u8(Rec.SnapshotEnd);
      end.f64(keys);
      await put(end.frame());
    });
    this.#snapshotBytes = snapshotBytes;
  }

  // ---- watch delivery ----

  #publish(events: WatchEvent[], revision: number): void {
    for (const w of this.#watchers) {
      if (revision < w.startRevision || revision <= w.historyEnd) continue;
      const selected = selectEvents(w, events);
      if (selected === undefined) continue;
      w.queue.push([selected, revision]);
      this.#schedule(w);
    }
  }

  #schedule(w: _Watch): void {
    if (w.scheduled || w.cancelled) return;
    w.scheduled = true;
    // Never inside the caller's stack: a watcher callback may call back into the store.
    queueMicrotask(() => this.#deliver(w));
  }

  #deliver(w: _Watch): void {
    w.scheduled = false;
    if (w.cancelled || this.#closed) return;
    if (w.catchingUp) {
      const last = Math.min(w.historyNext + HISTORY_WINDOW_REVISIONS, w.history.length);
      for (; w.historyNext < last && !w.cancelled; w.historyNext++) {
        const record = w.history[w.historyNext];
        if (record.revision < w.startRevision) continue;
        const selected = selectEvents(w, record.events);
        if (selected !== undefined) this.#call(w, selected, record.revision);
      }
      if (w.catchingUp || w.queue.length > 0) {
        // Let other work run between history windows.
        w.scheduled = true;
        w.timer = setTimeout(() => {
          w.timer = undefined;
          this.#deliver(w);
        }, 0);
      } else {
        w.history = [];
      }
      return;
    }
    while (w.queue.length > 0 && !w.cancelled) {
      const [events, revision] = w.queue.shift()!;
      this.#call(w, events, revision);
    }
  }

  #call(w: _Watch, events: WatchEvent[], revision: number): void {
    try {
      w.onEvents(events, revision);
    } catch (error) {
      // The watcher's own bug: report it as uncaught, keep delivering to the others.
      reportError(error);
    }
  }

  /** Called by a watcher's cancel(). */
  _unwatch(w: _Watch): void {
    this.#watchers.delete(w);
  }

  // ---- MetaKV ----

  range(request: RangeRequest): Promise<RangeResponse> {
    try {
      this.#checkOpen();
      this.#expireDue();
      this.#checkOps([{ range: request }]);
      return Promise.resolve(this.#rangeSync(request));
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /**
   * `MetaKV.scan`: the entries with keys in [key, rangeEnd), in key order, handed to `visit` as
   * the store's own bytes (no copies, no KeyValue per entry; a listing of a directory spent most
   * of its time copying a range's entries, src/fuse/README.md "Listings"). The views are valid
   * only during the call and must not be changed.
   */
  scan(
    key: Uint8Array,
    rangeEnd: Uint8Array,
    visit: (key: Uint8Array, value: Uint8Array) => void,
  ): void {
    this.#checkOpen();
    this.#expireDue();
    const start = keyString(key);
    const end = keyString(rangeEnd);
    const high = this.#tree.maxKey();
    if (high === undefined || high < start || end <= start) return;
    this.#tree.forRange(start, end, false, (_name, kv) => {
      visit(kv.key, kv.value);
    });
  }

  async put(request: PutRequest): Promise<PutResponse & { revision: number }> {
    this.#checkOpen();
    this.#expireDue();
    this.#checkOps([{ put: request }]);
    this.#beginWrite();
    const response = this.#putSync(request) as PutResponse & { revision: number };
    const written = this.#endWrite();
    response.revision = this.#revision;
    await written;
    return response;
  }

  async deleteRange(
    request: DeleteRangeRequest,
  ): Promise<DeleteRangeResponse & { revision: number }> {
    this.#checkOpen();
    this.#expireDue();
    this.#checkOps([{ deleteRange: request }]);
    this.#beginWrite();
    const response = this.#deleteSync(request) as DeleteRangeResponse & { revision: number };
    const written = this.#endWrite();
    response.revision = this.#revision;
    await written;
    return response;
  }

  txn(request: TxnRequest): Promise<TxnResponse> {
    try {
      this.#checkOpen();
      this.#expireDue();
      return this.#txnSync(request);
    } catch (error) {
      return Promise.reject(error);
    }
  }

  #txnSync(request: TxnRequest): Promise<TxnResponse> {
    const success = request.success ?? [];
    const failure = request.failure ?? [];
    // etcd refuses these whichever branch runs; so must we, or code that works here would fail
    // against etcd and CURP.
    checkNoDuplicateKeys(success);
    checkNoDuplicateKeys(failure);
    const compares = request.compare ?? [];
    for (const compare of compares) this.#checkCompare(compare);
    let succeeded = true;
    for (const compare of compares) {
      if (!this.#compareHolds(compare)) {
        succeeded = false;
        break;
      }
    }
    const ops = succeeded ? success : failure;
    this.#checkOps(ops);
    const responses = new Array<ResponseOp>(ops.length);
    let writes = false;
    for (const op of ops) {
      if (!("range" in op)) writes = true;
    }
    if (!writes) {
      // Reads only: each sees the same state, as nothing can run in between.
      for (let i = 0; i < ops.length; i++) responses[i] = this.#runOp(ops[i]);
      return Promise.resolve({ succeeded, revision: this.#revision, responses });
    }
    this.#beginWrite();
    for (let i = 0; i < ops.length; i++) responses[i] = this.#runOp(ops[i]);
    const written = this.#endWrite();
    const response = { succeeded, revision: this.#revision, responses };
    return written.then(() => response);
  }

  watch(
    range: KeyRange,
    options: Omit<WatchOptions, "rangeEnd">,
    onEvents: (events: WatchEvent[], revision: number) => void,
  ): Watcher {
    if (this.#closed) throw new Error(`Metadata store "${this.path}" is closed`);
    checkKey(range.key, "Watch key");
    this.#expireDue();
    const requested = options.startRevision ?? 0;
    if (!Number.isSafeInteger(requested) || requested < 0) {
      throw new RangeError(`Watch startRevision must be a non-negative integer, got ${requested}`);
    }
    const start = requested === 0 ? this.#revision + 1 : requested;
    if (start < this.#compactRevision) throw new CompactedError(this.#compactRevision);
    const span = spanOf(range.rangeEnd);
    let history: HistoryRecord[] = [];
    const historyEnd = this.#durableRevision;
    if (start <= historyEnd) {
      let lo = 0;
      let hi = this.#history.length;
      while (lo < hi) {
        const mid = (lo + hi) >>> 1;
        if (this.#history[mid].revision < start) lo = mid + 1;
        else hi = mid;
      }
      let hi2 = lo;
      while (hi2 < this.#history.length && this.#history[hi2].revision <= historyEnd) hi2++;
      history = this.#history.slice(lo, hi2);
    }
    const w = new _Watch(
      this,
      keyString(range.key),
      span,
      span === Span.Between ? keyString(range.rangeEnd!) : "",
      start,
      history,
      historyEnd,
      options.prevKv === true,
      onEvents,
    );
    this.#watchers.add(w);
    if (w.catchingUp) this.#schedule(w);
    return w;
  }

  async leaseGrant(ttlSeconds: number): Promise<LeaseGrantResponse> {
    this.#checkOpen();
    if (!Number.isSafeInteger(ttlSeconds) || ttlSeconds < 1) {
      throw new RangeError(`Lease TTL must be a whole number of seconds >= 1, got ${ttlSeconds}`);
    }
    this.#expireDue();
    // Ids are never reused, so a stale holder cannot keep someone else's lease alive.
    this.#beginWrite();
    const id = this.#nextLeaseId++;
    const expiresAtMs = this.#clock() + ttlSeconds * 1000;
    this.#setLease(id, { ttlSeconds, expiresAtMs, keys: new Set() });
    if (expiresAtMs < this.#nextExpiryMs) this.#nextExpiryMs = expiresAtMs;
    this.#recordOp(Op.LeaseGrant, id, ttlSeconds);
    await this.#endWrite();
    return { id, ttlSeconds };
  }

  async leaseRevoke(id: number): Promise<void> {
    this.#checkOpen();
    this.#expireDue();
    if (!this.#leases.has(id)) throw new Error(`Lease ${id} not found (expired or revoked)`);
    await this.#revokeSync(id);
  }

  leaseKeepAlive(id: number): Promise<number> {
    try {
      this.#checkOpen();
      this.#expireDue();
      const lease = this.#leases.get(id);
      if (lease === undefined) {
        throw new Error(`Lease ${id} not found (expired or revoked): grant a new one`);
      }
      // Only later, so #nextExpiryMs stays a lower bound. Not logged: a restart renews every
      // lease anyway.
      lease.expiresAtMs = this.#clock() + lease.ttlSeconds * 1000;
      return Promise.resolve(lease.ttlSeconds);
    } catch (error) {
      return Promise.reject(error);
    }
  }

  async compact(revision: number): Promise<void> {
    this.#checkOpen();
    if (!Number.isSafeInteger(revision) || revision > this.#revision) {
      throw new RangeError(
        `Cannot compact to revision ${revision}: the current revision is ${this.#revision}`,
      );
    }
    if (revision <= this.#compactRevision) throw new CompactedError(this.#compactRevision);
    await this.#compactSync(revision);
  }

  /** Make every transaction acknowledged so far survive power loss: fdatasync the log (through
   * the engine). Concurrent callers share one fdatasync; one arriving during it waits for the
   * next. */
  sync(): Promise<void> {
    if (this.#closed) return Promise.reject(new Error(`Metadata store "${this.path}" is closed`));
    if (this.#inMemory) return Promise.resolve();
    if (this.#log === undefined) {
      return Promise.reject(
        new Error(`Metadata store "${this.path}" was not opened with openEmbeddedKV: cannot sync`),
      );
    }
    return this.#log.sync();
  }

  revision(): Promise<number> {
    try {
      this.#checkOpen();
      this.#expireDue();
      return Promise.resolve(this.#revision);
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /** Whether the disk-space reserve is held (false after a full disk used it, until it is back). */
  get reserveHeld(): boolean {
    return this.#reserve?.held ?? false;
  }

  /** Bytes of the log file and of the last snapshot (for tests and `skyfs status`). */
  get fileBytes(): { log: number; snapshot: number } {
    return { log: this.#log?.bytes ?? 0, snapshot: this.#snapshotBytes };
  }

  /** Write a snapshot and restart the log now (the timer does it when the log is large). */
  compactLog(): Promise<void> {
    if (this.#inMemory) return Promise.resolve();
    this.#checkOpen();
    return this.#compactLog();
  }

  /** Stop timers and watchers, wait for the log writes in flight, release the lock. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#timer);
    for (const w of [...this.#watchers]) w.cancel();
    await this.#compacting?.catch(() => {});
    await this.#log?.close();
    this.#log = undefined;
    await this.#reserve?.settle();
    if (this.#lockFd !== undefined) await this.#io!.close(this.#lockFd).catch(() => {});
    this.#lockFd = undefined;
    if (this.#ownsIo) await this.#io!.shutdown();
    this.#io = undefined;
  }
}

function selectEvents(w: _Watch, events: WatchEvent[]): WatchEvent[] | undefined {
  let selected: WatchEvent[] | undefined;
  for (const event of events) {
    if (!inSpan(keyString(event.kv.key), w.key, w.span, w.end)) continue;
    selected ??= [];
    selected.push(
      w.prevKv || event.prevKv === undefined ? event : { type: event.type, kv: event.kv },
    );
  }
  return selected;
}

function compareBytes(a: Uint8Array, b: Uint8Array): number {
  const n = a.length < b.length ? a.length : b.length;
  for (let i = 0; i < n; i++) {
    if (a[i] !== b[i]) return a[i] - b[i];
  }
  return a.length - b.length;
}

function encodeLogHeader(): Uint8Array {
  const w = new ByteWriter();
  w.u8(Rec.LogHeader);
  w.bytes(MAGIC);
  w.u32(EMBEDDED_FORMAT);
  return w.frame();
}

function checkMagicAndFormat(r: ByteReader, path: string): void {
  const magic = r.bytes();
  if (magic.length !== MAGIC.length || !magic.every((b, i) => b === MAGIC[i])) {
    throw new Error(`"${path}" is not skyfs metadata: choose another path`);
  }
  const format = r.u32();
  if (format > EMBEDDED_FORMAT) {
    throw new Error(
      `Metadata at "${path}" has format ${format}, newer than this skyfs (${EMBEDDED_FORMAT}): upgrade skyfs`,
    );
  }
  if (format < EMBEDDED_FORMAT) {
    throw new Error(`Metadata at "${path}" has format ${format}, which no skyfs wrote in a log`);
  }
}

function damaged(path: string, why: string): Error {
  return new Error(
    `Metadata file "${path}" is damaged (${why}): restore the data directory from a backup`,
  );
}

/** Branches up to this many operations are checked pairwise (no allocation); longer ones by
 * sorting their puts (the merged write-back's transactions put hundreds of keys). */
const PAIRWISE_MAX = 8;

/** etcd's rule (checkIntervals): within one branch, a key may be put at most once and may not be
 * both put and deleted. */
function checkNoDuplicateKeys(ops: RequestOp[]): void {
  if (ops.length <= PAIRWISE_MAX) checkPairwise(ops);
  else checkSorted(ops);
}

function writtenTwice(key: Uint8Array): Error {
  return new Error(
    `Txn writes key ${describe(key)} twice ` +
      `(two puts, or a put inside a deleteRange): etcd refuses this, merge the operations`,
  );
}

/** Every put against every other operation: quadratic, for short branches. */
function checkPairwise(ops: RequestOp[]): void {
  for (let i = 0; i < ops.length; i++) {
    const op = ops[i];
    if (!("put" in op)) continue;
    const key = op.put.key;
    if (!(key instanceof Uint8Array)) continue; // #checkOps names the problem
    for (let j = 0; j < ops.length; j++) {
      if (j === i) continue;
      const other = ops[j];
      let clash = false;
      if ("put" in other) {
        clash = j > i && other.put.key instanceof Uint8Array &&
          compareBytes(other.put.key, key) === 0;
      } else if ("deleteRange" in other) {
        const d = other.deleteRange;
        if (!(d.key instanceof Uint8Array)) continue;
        const span = spanOf(d.rangeEnd);
        // One key (every delete a namespace transaction makes): compare the bytes, no strings.
        if (span === Span.One) {
          clash = compareBytes(d.key, key) === 0;
        } else {
          clash = inSpan(
            keyString(key),
            keyString(d.key),
            span,
            span === Span.Between ? keyString(d.rangeEnd!) : "",
          );
        }
      }
      if (clash) throw writtenTwice(key);
    }
  }
}

/** The puts' keys sorted (n log n byte comparisons, no strings): a key put twice sits next to
 * itself, and a delete clashes if the first put at or after its start is inside it. */
function checkSorted(ops: RequestOp[]): void {
  const puts: Uint8Array[] = [];
  for (const op of ops) {
    // A key that is not bytes: #checkOps names the problem.
    if ("put" in op && op.put.key instanceof Uint8Array) puts.push(op.put.key);
  }
  if (puts.length === 0) return;
  puts.sort(compareBytes);
  for (let i = 1; i < puts.length; i++) {
    if (compareBytes(puts[i - 1], puts[i]) === 0) throw writtenTwice(puts[i]);
  }
  for (const op of ops) {
    if (!("deleteRange" in op)) continue;
    const d = op.deleteRange;
    if (!(d.key instanceof Uint8Array)) continue;
    // The first put not before the delete's start.
    let lo = 0;
    let hi = puts.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (compareBytes(puts[mid], d.key) < 0) lo = mid + 1;
      else hi = mid;
    }
    if (lo === puts.length) continue;
    const key = puts[lo];
    const span = spanOf(d.rangeEnd);
    const clash = span === Span.One
      ? compareBytes(key, d.key) === 0
      : span === Span.ToEnd || compareBytes(key, d.rangeEnd!) < 0;
    if (clash) throw writtenTwice(key);
  }
}

/** Default size of the metadata store's disk-space reserve. */
const DEFAULT_RESERVE_BYTES = 4 << 20;
/** How long after giving the reserve back before trying to take it again. */
const RESERVE_RETRY_MS = 5000;

function isDiskFull(error: unknown): boolean {
  return error instanceof FsError &&
    (error.errno === Errno.ENOSPC || error.errno === 122 /* EDQUOT */);
}

/**
 * A file of really allocated bytes beside the store (fallocate, or written where fallocate is
 * refused; not sparse, so tmpfs and ext4 both count it), all through the engine. When the disk
 * fills up, unlinking it gives the log room for the transactions that free space (unlink,
 * truncate); it is allocated again once the disk has room.
 */
class SpaceReserve {
  held = false;
  #releasedAtMs = -Infinity;
  #busy: Promise<void> | undefined;

  constructor(readonly io: IoEngine, readonly path: string, readonly bytes: number) {}

  /** Allocate it (or find it allocated); quietly not held when the disk has no room. */
  async take(): Promise<void> {
    try {
      const info = await this.io.statx(this.path);
      if (info.size === this.bytes && info.blocks * 512 >= this.bytes) {
        this.held = true;
        return;
      }
    } catch { /* not there yet */ }
    let fd: number | undefined;
    try {
      fd = await this.io.open(this.path, libc.O_WRONLY | libc.O_CREAT | libc.O_CLOEXEC, 0o600);
      try {
        await this.io.fallocate(fd, 0, 0, this.bytes);
      } catch (error) {
        if (!(error instanceof FsError) || error.errno !== Errno.EOPNOTSUPP) throw error;
        await writeFullyZeros(this.io, fd, this.bytes);
      }
      this.held = true;
    } catch {
      await this.io.unlink(this.path).catch(() => {});
      this.#releasedAtMs = performance.now();
    } finally {
      if (fd !== undefined) await this.io.close(fd).catch(() => {});
    }
  }

  /** Give the space back; false if it was not held (nothing to give). */
  async release(): Promise<boolean> {
    if (!this.held) return false;
    await this.#busy;
    if (!this.held) return false;
    try {
      await this.io.unlink(this.path);
    } catch {
      return false;
    }
    this.held = false;
    this.#releasedAtMs = performance.now();
    console.error(
      `skyfs: disk full: metadata reserve "${this.path}" released to record the change`,
    );
    return true;
  }

  /** From the timer: take the space again once it has been given back a while ago. */
  retakeLater(): void {
    if (this.held || this.#busy !== undefined) return;
    if (performance.now() - this.#releasedAtMs < RESERVE_RETRY_MS) return;
    this.#busy = this.take().finally(() => this.#busy = undefined);
  }

  /** Wait for a retake in progress (before closing the engine). */
  async settle(): Promise<void> {
    await this.#busy;
  }
}

async function writeFullyZeros(io: IoEngine, fd: number, bytes: number): Promise<void> {
  const zeros = new Uint8Array(Math.min(bytes, 1 << 20));
  for (let at = 0; at < bytes; at += zeros.length) {
    const n = Math.min(zeros.length, bytes - at);
    let done = 0;
    while (done < n) done += await io.write(fd, zeros.subarray(done, n), at + done);
  }
}
