/**
 * EmbeddedKV: the durable single-node MetaKV backend, one SQLite file through node:sqlite.
 *
 * Layout: `kv` holds the current value of every key; `events` holds one row per changed key per
 * revision (the watch history, with the previous key-value so watchers can ask for prevKv);
 * `leases` holds granted leases; `meta` holds the format version and counters. The revision is
 * not stored per transaction: it is the newest revision in `events` (or the compacted revision
 * when history is empty), so a write costs only the kv and event rows it changes.
 *
 * Everything runs synchronously on the JS thread with one connection, so nothing interleaves
 * inside a method: a transaction is evaluated and applied without yielding. A second SQLite file,
 * `<path>-lock`, is held with an exclusive lock while the store is open, so a second process
 * opening the same store gets a clear "in use" error (the lock dies with the process, even on
 * kill -9). A worker thread (embedded_checkpointer.ts) copies the log into the database file, so
 * those copies and their fsyncs do not stall the JS thread.
 *
 * Durability (see `sync`): journal_mode=WAL with synchronous=NORMAL. A commit is a write(2) of
 * its pages to the -wal file, so it survives kill -9 of this process (the data is in the OS page
 * cache) but not power loss; `sync()` fdatasyncs the -wal file, which makes every commit so far
 * survive power loss as well. That fdatasync goes through the process's `IoEngine` (src/io,
 * io_uring where the kernel allows it). SQLite's own reads, writes and syncs of the database and
 * -wal files do not: node:sqlite offers no way to register a custom VFS, so SQLite calls
 * pread/pwrite/fsync itself (synchronously, on the thread that runs the statement).
 * @module
 */

import { DatabaseSync } from "node:sqlite";
import type { IoEngine } from "../io/types.ts";
import { openIoEngine } from "../io/mod.ts";
import { O_DIRECTORY, O_RDONLY } from "../io/libc.ts";
import { Worker } from "node:worker_threads";
import type { CheckpointerData, CheckpointerReply } from "./embedded_checkpointer.ts";
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

/** On-disk format written by this version. Bump it (and add a migration) on any schema change. */
export const EMBEDDED_FORMAT = 1;

export interface EmbeddedKVOptions {
  /** Bytes of disk kept in reserve for metadata writes when the disk is full. Default 4 MiB;
   * 0 for none. Ignored for ":memory:". */
  reserveBytes?: number;
  /** Milliseconds clock for lease expiry. Default: `performance.now` (monotonic). */
  clock?: () => number;
  /** Watch history kept, in revisions: older history is compacted automatically by the
   * background timer. 0 disables automatic compaction. Default 100,000. */
  historyRevisions?: number;
  /** How often the background timer checks lease expiry and history size. Default 250 ms. */
  timerIntervalMs?: number;
  /** How often the worker thread checkpoints the write-ahead log into the database file.
   * 0: no worker, SQLite checkpoints inline every 1,000 pages (stalls the caller). Default 200. */
  checkpointIntervalMs?: number;
  /** The process's I/O engine (`openIoEngine()`), through which `sync()` fdatasyncs the -wal file
   * and the directory is synced at open; the caller keeps owning it. Default: the store opens
   * its own engine and shuts it down on close (a second ring in a process that has one). */
  io?: IoEngine;
}

/** Open (creating if needed) the metadata store in the SQLite file `path` (":memory:" for a
 * throwaway store). Rejects if another process has it open or its format is newer than ours. */
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

const EMPTY = new Uint8Array(0);
const PUT = 0;
const DELETE = 1;
/** Revisions read from history per step when a watcher catches up, so one old watcher cannot
 * hold the event loop for long. */
const HISTORY_WINDOW_REVISIONS = 1024;
/** With the checkpoint worker, SQLite still checkpoints inline if the log reaches this many pages
 * (64 MiB), bounding the log when writes never pause long enough for the worker to catch up. */
const INLINE_CHECKPOINT_PAGES = 16384;
/** How long close() waits for the checkpoint worker to close its connection. */
const WORKER_CLOSE_TIMEOUT_MS = 5000;
/** Automatic compaction runs when history exceeds `historyRevisions` by this much, so that each
 * run deletes a bounded batch instead of one revision per tick. */
const COMPACTION_SLACK_REVISIONS = 1000;

const KV_COLUMNS = "key, value, create_rev, mod_rev, version, lease";
const KEY_COLUMNS = "key, NULL, create_rev, mod_rev, version, lease";
const EVENT_COLUMNS =
  "rev, key, type, value, create_rev, version, lease, prev_value, prev_create_rev, prev_mod_rev, prev_version, prev_lease";

/** A kv row as node:sqlite returns it with setReturnArrays(true), in KV_COLUMNS order. */
type KvRow = [Uint8Array, Uint8Array | null, number, number, number, number];
type EventRow = [
  number,
  Uint8Array,
  number,
  Uint8Array | null,
  number,
  number,
  number,
  Uint8Array | null,
  number | null,
  number | null,
  number | null,
  number | null,
];

type SqlParam = Uint8Array | number | string | null;

/** A prepared statement returning rows as arrays (setReturnArrays, which Node's typings lack). */
interface RowStatement {
  get<Row extends unknown[]>(...params: SqlParam[]): Row | undefined;
  all<Row extends unknown[]>(...params: SqlParam[]): Row[];
  run(...params: SqlParam[]): unknown;
}

interface Lease {
  ttlSeconds: number;
  expiresAtMs: number;
}

/** How a key range selects keys: one key, [key, end), or every key from `key` on. */
const enum Span {
  One,
  Between,
  ToEnd,
}

/** Where each numeric compare target sits in a KvRow. */
const COMPARE_COLUMNS = new Map<string, 2 | 3 | 4 | 5>([
  ["createRevision", 2],
  ["modRevision", 3],
  ["version", 4],
  ["lease", 5],
]);

function spanOf(rangeEnd: Uint8Array | undefined): Span {
  if (rangeEnd === undefined || rangeEnd.length === 0) return Span.One;
  if (rangeEnd.length === 1 && rangeEnd[0] === 0) return Span.ToEnd; // etcd's "\0": to the end
  return Span.Between;
}

function compareBytes(a: Uint8Array, b: Uint8Array): number {
  const n = a.length < b.length ? a.length : b.length;
  for (let i = 0; i < n; i++) {
    if (a[i] !== b[i]) return a[i] - b[i];
  }
  return a.length - b.length;
}

function inSpan(key: Uint8Array, start: Uint8Array, span: Span, end: Uint8Array): boolean {
  if (span === Span.One) return compareBytes(key, start) === 0;
  if (compareBytes(key, start) < 0) return false;
  return span === Span.ToEnd || compareBytes(key, end) < 0;
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

function rowToKv(row: KvRow): KeyValue {
  return {
    key: row[0],
    value: row[1] ?? EMPTY,
    createRevision: row[2],
    modRevision: row[3],
    version: row[4],
    lease: row[5],
  };
}

/** One registered watch. History up to `historyEnd` is read from the events table; live events
 * after it are queued by the store as transactions commit. */
class _Watch implements Watcher {
  /** Next history revision to read; history is done when it passes historyEnd. */
  historyNext: number;
  readonly queue: [WatchEvent[], number][] = [];
  scheduled = false;
  timer: ReturnType<typeof setTimeout> | undefined;
  cancelled = false;

  constructor(
    readonly store: EmbeddedKV,
    readonly key: Uint8Array,
    readonly span: Span,
    readonly end: Uint8Array,
    readonly startRevision: number,
    readonly historyEnd: number,
    readonly prevKv: boolean,
    readonly onEvents: (events: WatchEvent[], revision: number) => void,
  ) {
    this.historyNext = startRevision;
  }

  get catchingUp(): boolean {
    return this.historyNext <= this.historyEnd;
  }

  cancel(): void {
    if (this.cancelled) return;
    this.cancelled = true;
    this.queue.length = 0;
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.store._unwatch(this);
  }
}

/** The embedded MetaKV. Create with `openEmbeddedKV`. */
export class EmbeddedKV implements MetaKV {
  readonly path: string;
  readonly #db: DatabaseSync;
  /** Holds the exclusive lock on `<path>-lock`; undefined for ":memory:". */
  readonly #lockDb: DatabaseSync | undefined;
  #checkpointer: Worker | undefined;
  readonly #clock: () => number;
  readonly #historyRevisions: number;
  readonly #walPath: string | undefined;
  /** The engine sync() uses, and whether this store opened it (and so shuts it down). */
  #io: IoEngine | undefined;
  #ownsIo = false;
  /** The -wal file, opened once through the engine: sync() is on the fsync path of the file
   * system and must not open files. */
  #walFd: number | undefined;
  #reserve: SpaceReserve | undefined;
  #closed = false;
  readonly #timer: ReturnType<typeof setInterval>;

  #revision: number;
  #compactRevision: number;
  #nextLeaseId: number;
  readonly #leases = new Map<number, Lease>();
  /** Lower bound of every lease's expiry, so the lazy check is one comparison. */
  #nextExpiryMs = Infinity;
  readonly #watchers = new Set<_Watch>();

  // State of the write transaction in progress (only valid between #beginWrite and #endWrite).
  #writeRevision = 0;
  #writeSeq = 0;
  /** Events of the transaction in progress, collected only when someone watches. */
  #liveEvents: WatchEvent[] | null = null;

  #syncRunning: Promise<void> | undefined;
  #syncQueued: Promise<void> | undefined;

  readonly #s: ReturnType<typeof prepareStatements>;

  /** Use `openEmbeddedKV`; the constructor does the synchronous part of opening. */
  constructor(path: string, options: EmbeddedKVOptions = {}) {
    this.path = path;
    this.#clock = options.clock ?? (() => performance.now());
    this.#historyRevisions = options.historyRevisions ?? 100_000;
    const checkpointIntervalMs = options.checkpointIntervalMs ?? 200;
    const inMemory = path === ":memory:" || path === "";
    this.#lockDb = inMemory ? undefined : lockStore(path);
    let db: DatabaseSync;
    try {
      db = new DatabaseSync(path);
    } catch (error) {
      this.#lockDb?.close();
      throw new Error(`Cannot open metadata at "${path}": ${(error as Error).message}`);
    }
    this.#db = db;
    try {
      this.#walPath = initDatabase(
        db,
        path,
        checkpointIntervalMs > 0 ? INLINE_CHECKPOINT_PAGES : 1000,
      );
      this.#s = prepareStatements(db);
      this.#compactRevision = this.#metaNumber("compact_rev");
      this.#nextLeaseId = this.#metaNumber("next_lease_id");
      const newest = this.#s.maxEventRev.get<[number | null]>()![0];
      this.#revision = Math.max(1, this.#compactRevision, newest ?? 0);
      // Rows a catching-up watcher kept alive past a compaction before the last close.
      this.#s.compactEvents.run(this.#compactRevision);
      // Like etcd after a restart, every lease gets its full TTL again: its holder had no way
      // to keep it alive while the store was down.
      const now = this.#clock();
      for (const [id, ttlSeconds] of this.#s.allLeases.all<[number, number]>()) {
        this.#leases.set(id, { ttlSeconds, expiresAtMs: now + ttlSeconds * 1000 });
        this.#nextExpiryMs = Math.min(this.#nextExpiryMs, now + ttlSeconds * 1000);
      }
    } catch (error) {
      db.close();
      this.#lockDb?.close();
      throw error;
    }
    if (!inMemory && (options.reserveBytes ?? DEFAULT_RESERVE_BYTES) > 0) {
      this.#reserve = new SpaceReserve(
        `${path}-reserve`,
        options.reserveBytes ?? DEFAULT_RESERVE_BYTES,
      );
    }
    this.#timer = setInterval(() => this.#onTimer(), options.timerIntervalMs ?? 250);
    Deno.unrefTimer(this.#timer);
    if (this.#walPath !== undefined && checkpointIntervalMs > 0) {
      this.#checkpointer = startCheckpointer(path, checkpointIntervalMs);
    }
  }

  /** The asynchronous part of opening (openEmbeddedKV calls it): take the engine, open the -wal
   * file through it, and fsync the directory once, so the database and -wal files' names
   * survive power loss too (SQLite's own directory sync happens at its first sync, which NORMAL
   * delays). */
  async _openFiles(io: IoEngine | undefined): Promise<void> {
    if (this.#walPath === undefined) return;
    if (io === undefined) {
      io = await openIoEngine({ log: () => {} });
      this.#ownsIo = true;
    }
    this.#io = io;
    this.#walFd = await io.open(this.#walPath, O_RDONLY);
    const slash = this.path.lastIndexOf("/");
    const dir = slash < 0 ? "." : slash === 0 ? "/" : this.path.slice(0, slash);
    const fd = await io.open(dir, O_RDONLY | O_DIRECTORY);
    try {
      await io.fsync(fd);
    } finally {
      await io.close(fd);
    }
  }

  #metaNumber(name: string): number {
    const row = this.#s.getMeta.get<[number]>(name);
    if (row === undefined) throw new Error(`Metadata at "${this.path}" lacks "${name}"`);
    return row[0];
  }

  #checkOpen(): void {
    if (this.#closed) throw new Error(`Metadata store "${this.path}" is closed`);
  }

  /** Expire due leases now, so reads after a lease's deadline never see its keys. */
  #expireDue(): void {
    if (this.#clock() < this.#nextExpiryMs) return;
    const now = this.#clock();
    let next = Infinity;
    for (const [id, lease] of this.#leases) {
      if (lease.expiresAtMs <= now) this.#revokeSync(id);
      else if (lease.expiresAtMs < next) next = lease.expiresAtMs;
    }
    this.#nextExpiryMs = next;
  }

  #onTimer(): void {
    if (this.#closed) return;
    this.#reserve?.retake(this.#clock());
    try {
      this.#expireDue();
      const history = this.#revision - this.#compactRevision;
      if (
        this.#historyRevisions > 0 &&
        history > this.#historyRevisions + COMPACTION_SLACK_REVISIONS
      ) {
        this.#compactSync(this.#revision - this.#historyRevisions);
      }
    } catch (error) {
      // A background failure (disk full, I/O error) must not kill the process; the next
      // foreground call will meet the same error and report it to its caller.
      console.error(`skyfs: metadata background task failed: ${(error as Error).message}`);
    }
  }

  // ---- write transactions ----

  #beginWrite(): void {
    this.#s.begin.run();
    this.#writeRevision = this.#revision + 1;
    this.#writeSeq = 0;
    this.#liveEvents = this.#watchers.size > 0 ? [] : null;
  }

  /** Commit; the revision advances only if something changed (as etcd: a delete of nothing or a
   * lease grant is not a new revision). */
  #endWrite(): void {
    this.#s.commit.run();
    if (this.#writeSeq === 0) return;
    this.#revision = this.#writeRevision;
    const events = this.#liveEvents;
    this.#liveEvents = null;
    if (events !== null) this.#publish(events, this.#revision);
  }

  #abortWrite(): void {
    this.#liveEvents = null;
    if (this.#db.isTransaction) this.#s.rollback.run();
  }

  #write<T>(body: () => T): T {
    this.#beginWrite();
    let result: T;
    try {
      result = body();
      this.#endWrite();
    } catch (error) {
      this.#abortWrite();
      // A full disk must not stop the unlink or truncate that would free it: give the reserve
      // back to the file system and retry once (the transaction was rolled back entirely).
      if (isDiskFull(error) && this.#reserve?.release()) return this.#write(body);
      throw error;
    }
    return result;
  }

  /** The revision reads see: inside a write, its own revision once it has changed something. */
  #readRevision(): number {
    return this.#db.isTransaction && this.#writeSeq > 0 ? this.#writeRevision : this.#revision;
  }

  #getRow(key: Uint8Array): KvRow | undefined {
    return this.#s.getOne.get<KvRow>(key);
  }

  #recordEvent(type: number, key: Uint8Array, row: KvRow | null, prev: KvRow | undefined): void {
    const rev = this.#writeRevision;
    this.#s.insertEvent.run(
      rev,
      this.#writeSeq++,
      key,
      type,
      row === null ? null : row[1],
      row === null ? 0 : row[2],
      row === null ? 0 : row[4],
      row === null ? 0 : row[5],
      prev === undefined ? null : prev[1],
      prev === undefined ? null : prev[2],
      prev === undefined ? null : prev[3],
      prev === undefined ? null : prev[4],
      prev === undefined ? null : prev[5],
    );
    if (this.#liveEvents !== null) {
      const kv: KeyValue = row === null
        ? { key, value: EMPTY, createRevision: 0, modRevision: rev, version: 0, lease: 0 }
        : rowToKv(row);
      const event: WatchEvent = { type: type === PUT ? "put" : "delete", kv };
      if (prev !== undefined) event.prevKv = rowToKv(prev);
      this.#liveEvents.push(event);
    }
  }

  #putSync(request: PutRequest): PutResponse {
    checkKey(request.key, "Put key");
    checkBytes(request.value, "Put value");
    const lease = request.lease ?? 0;
    if (lease !== 0 && !this.#leases.has(lease)) {
      throw new Error(`Lease ${lease} not found: grant it with leaseGrant, or put without lease`);
    }
    const prev = this.#getRow(request.key);
    const rev = this.#writeRevision;
    const createRevision = prev === undefined ? rev : prev[2];
    const version = prev === undefined ? 1 : prev[4] + 1;
    this.#s.upsert.run(request.key, request.value, createRevision, rev, version, lease);
    // Copies: the caller may reuse its buffers after the call returns.
    const key = this.#liveEvents === null ? request.key : request.key.slice();
    const value = this.#liveEvents === null ? request.value : request.value.slice();
    this.#recordEvent(PUT, key, [key, value, createRevision, rev, version, lease], prev);
    return request.prevKv && prev !== undefined ? { prevKv: rowToKv(prev) } : {};
  }

  #deleteSync(request: DeleteRangeRequest): DeleteRangeResponse {
    checkKey(request.key, "Delete key");
    const span = spanOf(request.rangeEnd);
    let rows: KvRow[];
    if (span === Span.One) {
      const row = this.#getRow(request.key);
      rows = row === undefined ? [] : [row];
      if (row !== undefined) this.#s.deleteOne.run(request.key);
    } else if (span === Span.ToEnd) {
      rows = this.#s.rangeFrom.all<KvRow>(request.key, -1);
      if (rows.length > 0) this.#s.deleteFrom.run(request.key);
    } else {
      rows = this.#s.rangeBetween.all<KvRow>(request.key, request.rangeEnd!, -1);
      if (rows.length > 0) this.#s.deleteBetween.run(request.key, request.rangeEnd!);
    }
    for (const row of rows) this.#recordEvent(DELETE, row[0], null, row);
    return { deleted: rows.length, prevKvs: request.prevKv ? rows.map(rowToKv) : [] };
  }

  #rangeSync(request: RangeRequest): RangeResponse {
    checkKey(request.key, "Range key");
    const limit = request.limit ?? 0;
    if (!Number.isSafeInteger(limit) || limit < 0) {
      throw new RangeError(`Range limit must be a non-negative integer, got ${limit}`);
    }
    const s = this.#s;
    const key = request.key;
    const end = request.rangeEnd!;
    const span = spanOf(request.rangeEnd);
    const revision = this.#readRevision();
    if (request.countOnly) {
      const row = span === Span.One
        ? s.countOne.get<[number]>(key)
        : span === Span.ToEnd
        ? s.countFrom.get<[number]>(key)
        : s.countBetween.get<[number]>(key, end);
      return { kvs: [], more: false, count: row![0], revision };
    }
    const keysOnly = request.keysOnly === true;
    let rows: KvRow[];
    if (span === Span.One) {
      const row = (keysOnly ? s.getOneKeyOnly : s.getOne).get<KvRow>(key);
      rows = row === undefined ? [] : [row];
    } else {
      // One row past the limit tells whether there are more without counting.
      const fetch = limit === 0 ? -1 : limit + 1;
      rows = span === Span.ToEnd
        ? (keysOnly ? s.rangeFromKeysOnly : s.rangeFrom).all<KvRow>(key, fetch)
        : (keysOnly ? s.rangeBetweenKeysOnly : s.rangeBetween).all<KvRow>(key, end, fetch);
    }
    let more = false;
    let count = rows.length;
    if (limit > 0 && rows.length > limit) {
      rows.length = limit;
      more = true;
      // etcd's count is every key in the range, not only those returned.
      count = (span === Span.ToEnd
        ? s.countFrom.get<[number]>(key)
        : s.countBetween.get<[number]>(key, end))![0];
    }
    const kvs = new Array<KeyValue>(rows.length);
    for (let i = 0; i < rows.length; i++) kvs[i] = rowToKv(rows[i]);
    return { kvs, more, count, revision };
  }

  #compareHolds(compare: Compare): boolean {
    checkKey(compare.key, "Compare key");
    const row = this.#getRow(compare.key);
    let order: number;
    if (compare.target === "value") {
      checkBytes(compare.value, "Compare value");
      if (row === undefined) return false; // etcd: a missing key's value compares false always
      order = compareBytes(row[1] ?? EMPTY, compare.value);
    } else {
      const column = COMPARE_COLUMNS.get(compare.target);
      if (column === undefined) {
        throw new TypeError(`Unknown compare target ${describe(compare.target)}`);
      }
      if (typeof compare.value !== "number") {
        throw new TypeError(`Compare ${compare.target} value must be a number`);
      }
      order = (row === undefined ? 0 : row[column] as number) - compare.value;
    }
    switch (compare.result) {
      case "==":
        return order === 0;
      case "!=":
        return order !== 0;
      case "<":
        return order < 0;
      case ">":
        return order > 0;
      default:
        throw new TypeError(`Unknown compare result ${describe(compare.result)}`);
    }
  }

  #runOp(op: RequestOp): ResponseOp {
    if ("range" in op) return { range: this.#rangeSync(op.range) };
    if ("put" in op) return { put: this.#putSync(op.put) };
    if ("deleteRange" in op) return { deleteRange: this.#deleteSync(op.deleteRange) };
    throw new TypeError(`Unknown txn operation ${JSON.stringify(Object.keys(op))}`);
  }

  // ---- leases and compaction (synchronous parts) ----

  #revokeSync(id: number): void {
    this.#write(() => {
      const rows = this.#s.keysOfLease.all<KvRow>(id);
      for (const row of rows) {
        this.#s.deleteOne.run(row[0]);
        this.#recordEvent(DELETE, row[0], null, row);
      }
      this.#s.deleteLease.run(id);
    });
    this.#leases.delete(id);
  }

  #compactSync(revision: number): void {
    this.#compactRevision = revision;
    // A watcher still reading history keeps the rows it needs; they go at the next compaction.
    let floor = revision;
    for (const w of this.#watchers) {
      if (w.catchingUp && w.historyNext < floor) floor = w.historyNext;
    }
    this.#write(() => {
      this.#s.compactEvents.run(floor);
      this.#s.setMeta.run("compact_rev", revision);
    });
  }

  // ---- watch delivery ----

  #publish(events: WatchEvent[], revision: number): void {
    for (const w of this.#watchers) {
      let selected: WatchEvent[] | undefined;
      for (const event of events) {
        if (revision < w.startRevision || !inSpan(event.kv.key, w.key, w.span, w.end)) continue;
        selected ??= [];
        selected.push(
          w.prevKv || event.prevKv === undefined ? event : { type: event.type, kv: event.kv },
        );
      }
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
      const last = Math.min(w.historyNext + HISTORY_WINDOW_REVISIONS - 1, w.historyEnd);
      const batches = this.#readHistory(w, w.historyNext, last);
      w.historyNext = last + 1;
      for (const [events, revision] of batches) {
        if (w.cancelled) return;
        this.#call(w, events, revision);
      }
      if (w.catchingUp || w.queue.length > 0) {
        // Let other work run between history windows.
        w.scheduled = true;
        w.timer = setTimeout(() => {
          w.timer = undefined;
          this.#deliver(w);
        }, 0);
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

  #readHistory(w: _Watch, first: number, last: number): [WatchEvent[], number][] {
    const s = this.#s;
    const rows = w.span === Span.One
      ? s.historyOne.all<EventRow>(first, last, w.key)
      : w.span === Span.ToEnd
      ? s.historyFrom.all<EventRow>(first, last, w.key)
      : s.historyBetween.all<EventRow>(first, last, w.key, w.end);
    const batches: [WatchEvent[], number][] = [];
    for (const row of rows) {
      const rev = row[0];
      const kv: KeyValue = row[2] === PUT
        ? {
          key: row[1],
          value: row[3] ?? EMPTY,
          createRevision: row[4],
          modRevision: rev,
          version: row[5],
          lease: row[6],
        }
        : { key: row[1], value: EMPTY, createRevision: 0, modRevision: rev, version: 0, lease: 0 };
      const event: WatchEvent = { type: row[2] === PUT ? "put" : "delete", kv };
      if (w.prevKv && row[8] !== null) {
        event.prevKv = {
          key: row[1],
          value: row[7] ?? EMPTY,
          createRevision: row[8],
          modRevision: row[9]!,
          version: row[10]!,
          lease: row[11]!,
        };
      }
      const lastBatch = batches[batches.length - 1];
      if (lastBatch !== undefined && lastBatch[1] === rev) lastBatch[0].push(event);
      else batches.push([[event], rev]);
    }
    return batches;
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
      return Promise.resolve(this.#rangeSync(request));
    } catch (error) {
      return Promise.reject(error);
    }
  }

  put(request: PutRequest): Promise<PutResponse & { revision: number }> {
    try {
      this.#checkOpen();
      this.#expireDue();
      const response = this.#write(() => this.#putSync(request)) as PutResponse & {
        revision: number;
      };
      response.revision = this.#revision;
      return Promise.resolve(response);
    } catch (error) {
      return Promise.reject(error);
    }
  }

  deleteRange(
    request: DeleteRangeRequest,
  ): Promise<DeleteRangeResponse & { revision: number }> {
    try {
      this.#checkOpen();
      this.#expireDue();
      const response = this.#write(() => this.#deleteSync(request)) as DeleteRangeResponse & {
        revision: number;
      };
      response.revision = this.#revision;
      return Promise.resolve(response);
    } catch (error) {
      return Promise.reject(error);
    }
  }

  txn(request: TxnRequest): Promise<TxnResponse> {
    try {
      this.#checkOpen();
      this.#expireDue();
      return Promise.resolve(this.#txnSync(request));
    } catch (error) {
      return Promise.reject(error);
    }
  }

  #txnSync(request: TxnRequest): TxnResponse {
    const success = request.success ?? [];
    const failure = request.failure ?? [];
    // etcd refuses these whichever branch runs; so must we, or code that works here would fail
    // against etcd and CURP.
    checkNoDuplicateKeys(success);
    checkNoDuplicateKeys(failure);
    let succeeded = true;
    for (const compare of request.compare ?? []) {
      if (!this.#compareHolds(compare)) {
        succeeded = false;
        break;
      }
    }
    const ops = succeeded ? success : failure;
    const responses = new Array<ResponseOp>(ops.length);
    let writes = false;
    for (const op of ops) {
      if (!("range" in op)) writes = true;
    }
    if (!writes) {
      // Reads only: each statement sees the same state, as nothing can run in between.
      for (let i = 0; i < ops.length; i++) responses[i] = this.#runOp(ops[i]);
      return { succeeded, revision: this.#revision, responses };
    }
    this.#write(() => {
      for (let i = 0; i < ops.length; i++) responses[i] = this.#runOp(ops[i]);
    });
    return { succeeded, revision: this.#revision, responses };
  }

  watch(
    range: KeyRange,
    options: Omit<WatchOptions, "rangeEnd">,
    onEvents: (events: WatchEvent[], revision: number) => void,
  ): Watcher {
    this.#checkOpen();
    checkKey(range.key, "Watch key");
    this.#expireDue();
    const requested = options.startRevision ?? 0;
    if (!Number.isSafeInteger(requested) || requested < 0) {
      throw new RangeError(`Watch startRevision must be a non-negative integer, got ${requested}`);
    }
    const start = requested === 0 ? this.#revision + 1 : requested;
    if (start < this.#compactRevision) throw new CompactedError(this.#compactRevision);
    const span = spanOf(range.rangeEnd);
    const w = new _Watch(
      this,
      range.key.slice(),
      span,
      span === Span.Between ? range.rangeEnd!.slice() : EMPTY,
      start,
      this.#revision,
      options.prevKv === true,
      onEvents,
    );
    this.#watchers.add(w);
    if (w.catchingUp) this.#schedule(w);
    return w;
  }

  leaseGrant(ttlSeconds: number): Promise<LeaseGrantResponse> {
    try {
      this.#checkOpen();
      if (!Number.isSafeInteger(ttlSeconds) || ttlSeconds < 1) {
        throw new RangeError(`Lease TTL must be a whole number of seconds >= 1, got ${ttlSeconds}`);
      }
      this.#expireDue();
      // Ids are never reused, so a stale holder cannot keep someone else's lease alive.
      const id = this.#nextLeaseId;
      this.#write(() => {
        this.#s.insertLease.run(id, ttlSeconds);
        this.#s.setMeta.run("next_lease_id", id + 1);
      });
      this.#nextLeaseId = id + 1;
      const expiresAtMs = this.#clock() + ttlSeconds * 1000;
      this.#leases.set(id, { ttlSeconds, expiresAtMs });
      if (expiresAtMs < this.#nextExpiryMs) this.#nextExpiryMs = expiresAtMs;
      return Promise.resolve({ id, ttlSeconds });
    } catch (error) {
      return Promise.reject(error);
    }
  }

  leaseRevoke(id: number): Promise<void> {
    try {
      this.#checkOpen();
      this.#expireDue();
      if (!this.#leases.has(id)) throw new Error(`Lease ${id} not found (expired or revoked)`);
      this.#revokeSync(id);
      return Promise.resolve();
    } catch (error) {
      return Promise.reject(error);
    }
  }

  leaseKeepAlive(id: number): Promise<number> {
    try {
      this.#checkOpen();
      this.#expireDue();
      const lease = this.#leases.get(id);
      if (lease === undefined) {
        throw new Error(`Lease ${id} not found (expired or revoked): grant a new one`);
      }
      // Only later, so #nextExpiryMs stays a lower bound.
      lease.expiresAtMs = this.#clock() + lease.ttlSeconds * 1000;
      return Promise.resolve(lease.ttlSeconds);
    } catch (error) {
      return Promise.reject(error);
    }
  }

  compact(revision: number): Promise<void> {
    try {
      this.#checkOpen();
      if (!Number.isSafeInteger(revision) || revision > this.#revision) {
        throw new RangeError(
          `Cannot compact to revision ${revision}: the current revision is ${this.#revision}`,
        );
      }
      if (revision <= this.#compactRevision) throw new CompactedError(this.#compactRevision);
      this.#compactSync(revision);
      return Promise.resolve();
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /**
   * Make every commit so far survive power loss: fdatasync the -wal file.
   *
   * Why the -wal file alone is enough under synchronous=NORMAL (sqlite.org/pragma.html,
   * "synchronous", and sqlite.org/wal.html): a commit only appends frames to the -wal file. A
   * checkpoint (by the worker's connection, also NORMAL, or inline by ours) copies frames into
   * the database file: it syncs the -wal file before copying and the database file after. Only
   * once everything is copied does a writer start overwriting the -wal file from its beginning,
   * and it syncs the new -wal header before reusing it (frames of the old generation carry an
   * old salt, so recovery ignores them). So at any moment every commit is either in a synced
   * database file or among the current -wal frames, which our fdatasync covers. The -wal file is
   * never replaced while we are open (only the close of the last connection unlinks it, and our
   * connection outlives the worker's), so the handle cached at open stays valid; embedded_test.ts
   * checks its inode across checkpoints.
   * Concurrent callers share one fdatasync; a caller arriving during one waits for the next.
   */
  sync(): Promise<void> {
    if (this.#closed) return Promise.reject(new Error(`Metadata store "${this.path}" is closed`));
    if (this.#walPath === undefined) return Promise.resolve(); // ":memory:"
    if (this.#walFd === undefined) {
      return Promise.reject(
        new Error(`Metadata store "${this.path}" was not opened with openEmbeddedKV: cannot sync`),
      );
    }
    if (this.#syncRunning === undefined) return this.#startSync();
    this.#syncQueued ??= this.#syncRunning.then(() => {
      this.#syncQueued = undefined;
      return this.#startSync();
    }, () => {
      this.#syncQueued = undefined;
      return this.#startSync();
    });
    return this.#syncQueued;
  }

  #startSync(): Promise<void> {
    const running = this.#io!.fsync(this.#walFd!, { datasync: true }).finally(() => {
      if (this.#syncRunning === running) this.#syncRunning = undefined;
    });
    this.#syncRunning = running;
    return running;
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

  /** Stop timers and watchers and close the database (SQLite checkpoints and syncs on close). */
  /** Whether the disk-space reserve is held (false after a full disk used it, until it is back). */
  get reserveHeld(): boolean {
    return this.#reserve?.held ?? false;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#timer);
    for (const w of [...this.#watchers]) w.cancel();
    await Promise.allSettled([this.#syncRunning, this.#syncQueued]);
    if (this.#checkpointer !== undefined) await stopCheckpointer(this.#checkpointer);
    this.#checkpointer = undefined;
    if (this.#walFd !== undefined) await this.#io!.close(this.#walFd).catch(() => {});
    this.#walFd = undefined;
    if (this.#ownsIo) await this.#io!.shutdown();
    this.#io = undefined;
    // Last connection: SQLite checkpoints (syncing both files) and removes the log.
    this.#db.close();
    this.#lockDb?.close();
  }
}

/** etcd's rule (checkIntervals): within one branch, a key may be put at most once and may not be
 * both put and deleted. Branches are short, so a quadratic scan allocates nothing. */
function checkNoDuplicateKeys(ops: RequestOp[]): void {
  for (let i = 0; i < ops.length; i++) {
    const op = ops[i];
    if (!("put" in op)) continue;
    const key = op.put.key;
    for (let j = 0; j < ops.length; j++) {
      if (j === i) continue;
      const other = ops[j];
      let clash = false;
      if ("put" in other) {
        clash = j > i && compareBytes(other.put.key, key) === 0;
      } else if ("deleteRange" in other) {
        const d = other.deleteRange;
        clash = inSpan(key, d.key, spanOf(d.rangeEnd), d.rangeEnd ?? EMPTY);
      }
      if (clash) {
        throw new Error(
          `Txn writes key ${describe(key)} twice ` +
            `(two puts, or a put inside a deleteRange): etcd refuses this, merge the operations`,
        );
      }
    }
  }
}

/** Take the store's exclusive lock: an SQLite file in exclusive locking mode keeps its lock from
 * its first write until it is closed (or its process dies). */
function lockStore(path: string): DatabaseSync {
  const lockPath = `${path}-lock`;
  let lock: DatabaseSync | undefined;
  try {
    lock = new DatabaseSync(lockPath);
    lock.exec(
      "PRAGMA locking_mode=EXCLUSIVE; PRAGMA busy_timeout=0; PRAGMA journal_mode=MEMORY; " +
        "BEGIN EXCLUSIVE; COMMIT",
    );
    return lock;
  } catch (error) {
    lock?.close();
    const message = (error as Error).message;
    if (/locked|busy/i.test(message)) {
      throw new Error(
        `Metadata at "${path}" is in use by another process: stop the other skyfs daemon first`,
      );
    }
    throw new Error(`Cannot open metadata at "${path}": ${message} (lock file "${lockPath}")`);
  }
}

function startCheckpointer(path: string, intervalMs: number): Worker {
  const worker = new Worker(new URL("./embedded_checkpointer.ts", import.meta.url), {
    workerData: { path, intervalMs } satisfies CheckpointerData,
  });
  // Like the lease timer, the thread alone must not keep a process alive that forgot close().
  worker.unref();
  worker.on("message", (message: CheckpointerReply) => {
    if (typeof message === "object") {
      // The next checkpoint retries; meanwhile SQLite's inline checkpoint bounds the log.
      console.error(`skyfs: metadata checkpointer for "${path}": ${message.error}`);
    }
  });
  return worker;
}

async function stopCheckpointer(worker: Worker): Promise<void> {
  worker.ref(); // keep the process alive until the worker's connection is closed
  let timeout: ReturnType<typeof setTimeout> | undefined;
  await new Promise<void>((resolve) => {
    worker.on("message", (message: CheckpointerReply) => {
      if (message === "closed") resolve();
    });
    worker.on("exit", () => resolve());
    timeout = setTimeout(resolve, WORKER_CLOSE_TIMEOUT_MS);
    worker.postMessage("close");
  });
  clearTimeout(timeout);
  await worker.terminate();
}

/** Set up pragmas and schema; return the -wal path, or undefined for an in-memory database. */
function initDatabase(
  db: DatabaseSync,
  path: string,
  inlineCheckpointPages: number,
): string | undefined {
  let mode: string;
  try {
    db.exec("PRAGMA busy_timeout=0");
    mode = (db.prepare("PRAGMA journal_mode=WAL").get() as { journal_mode: string }).journal_mode;
    db.exec(
      "PRAGMA synchronous=NORMAL; PRAGMA temp_store=MEMORY; " +
        `PRAGMA wal_autocheckpoint=${inlineCheckpointPages}`,
    );
    db.exec("BEGIN IMMEDIATE");
  } catch (error) {
    const message = (error as Error).message;
    if (/locked|busy/i.test(message)) {
      throw new Error(
        `Metadata at "${path}" is in use by another process: stop the other skyfs daemon first`,
      );
    }
    throw new Error(`Cannot open metadata at "${path}": ${message}`);
  }
  if (mode !== "wal" && mode !== "memory") {
    throw new Error(`Metadata at "${path}" cannot use a write-ahead log (journal mode "${mode}")`);
  }
  try {
    const tables = new Set(
      (db.prepare("SELECT name FROM sqlite_schema WHERE type = 'table'").all() as {
        name: string;
      }[]).map((row) => row.name),
    );
    if (tables.size > 0 && !tables.has("meta")) {
      throw new Error(
        `"${path}" is an SQLite database but not skyfs metadata: choose another path`,
      );
    }
    if (tables.has("meta")) {
      const row = db.prepare("SELECT value FROM meta WHERE name = 'format'").get() as
        | { value: number }
        | undefined;
      const format = row?.value ?? 0;
      if (format > EMBEDDED_FORMAT) {
        throw new Error(
          `Metadata at "${path}" has format ${format}, newer than this skyfs (${EMBEDDED_FORMAT}): upgrade skyfs`,
        );
      }
      if (format < 1) throw new Error(`Metadata at "${path}" has no valid format number`);
    } else {
      db.exec(SCHEMA);
    }
    db.exec("COMMIT");
  } catch (error) {
    db.exec("ROLLBACK");
    throw error;
  }
  return mode === "wal" ? `${path}-wal` : undefined;
}

const SCHEMA = `
CREATE TABLE meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
INSERT INTO meta VALUES ('format', ${EMBEDDED_FORMAT}), ('compact_rev', 0), ('next_lease_id', 1);
CREATE TABLE kv (
  key BLOB PRIMARY KEY,
  value BLOB NOT NULL,
  create_rev INTEGER NOT NULL,
  mod_rev INTEGER NOT NULL,
  version INTEGER NOT NULL,
  lease INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX kv_lease ON kv (lease) WHERE lease != 0;
CREATE TABLE events (
  rev INTEGER NOT NULL,
  seq INTEGER NOT NULL,
  key BLOB NOT NULL,
  type INTEGER NOT NULL,
  value BLOB,
  create_rev INTEGER NOT NULL,
  version INTEGER NOT NULL,
  lease INTEGER NOT NULL,
  prev_value BLOB,
  prev_create_rev INTEGER,
  prev_mod_rev INTEGER,
  prev_version INTEGER,
  prev_lease INTEGER,
  PRIMARY KEY (rev, seq)
) WITHOUT ROWID;
CREATE TABLE leases (id INTEGER PRIMARY KEY, ttl_seconds INTEGER NOT NULL);
`;

function prepareStatements(db: DatabaseSync) {
  const statement = (sql: string): RowStatement => {
    const s = db.prepare(sql) as unknown as RowStatement & { setReturnArrays(on: boolean): void };
    s.setReturnArrays(true);
    return s;
  };
  const history = "SELECT " + EVENT_COLUMNS + " FROM events WHERE rev >= ?1 AND rev <= ?2 AND ";
  return {
    begin: db.prepare("BEGIN IMMEDIATE"),
    commit: db.prepare("COMMIT"),
    rollback: db.prepare("ROLLBACK"),
    getMeta: statement("SELECT value FROM meta WHERE name = ?"),
    setMeta: statement("UPDATE meta SET value = ?2 WHERE name = ?1"),
    maxEventRev: statement("SELECT max(rev) FROM events"),
    getOne: statement(`SELECT ${KV_COLUMNS} FROM kv WHERE key = ?`),
    getOneKeyOnly: statement(`SELECT ${KEY_COLUMNS} FROM kv WHERE key = ?`),
    rangeFrom: statement(`SELECT ${KV_COLUMNS} FROM kv WHERE key >= ?1 ORDER BY key LIMIT ?2`),
    rangeFromKeysOnly: statement(
      `SELECT ${KEY_COLUMNS} FROM kv WHERE key >= ?1 ORDER BY key LIMIT ?2`,
    ),
    rangeBetween: statement(
      `SELECT ${KV_COLUMNS} FROM kv WHERE key >= ?1 AND key < ?2 ORDER BY key LIMIT ?3`,
    ),
    rangeBetweenKeysOnly: statement(
      `SELECT ${KEY_COLUMNS} FROM kv WHERE key >= ?1 AND key < ?2 ORDER BY key LIMIT ?3`,
    ),
    countOne: statement("SELECT count(*) FROM kv WHERE key = ?"),
    countFrom: statement("SELECT count(*) FROM kv WHERE key >= ?"),
    countBetween: statement("SELECT count(*) FROM kv WHERE key >= ?1 AND key < ?2"),
    upsert: statement("INSERT OR REPLACE INTO kv VALUES (?, ?, ?, ?, ?, ?)"),
    deleteOne: statement("DELETE FROM kv WHERE key = ?"),
    deleteFrom: statement("DELETE FROM kv WHERE key >= ?"),
    deleteBetween: statement("DELETE FROM kv WHERE key >= ?1 AND key < ?2"),
    keysOfLease: statement(`SELECT ${KV_COLUMNS} FROM kv WHERE lease = ?1 AND lease != 0`),
    insertEvent: statement(
      "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    ),
    compactEvents: statement("DELETE FROM events WHERE rev < ?"),
    historyOne: statement(`${history}key = ?3 ORDER BY rev, seq`),
    historyFrom: statement(`${history}key >= ?3 ORDER BY rev, seq`),
    historyBetween: statement(`${history}key >= ?3 AND key < ?4 ORDER BY rev, seq`),
    allLeases: statement("SELECT id, ttl_seconds FROM leases"),
    insertLease: statement("INSERT INTO leases VALUES (?, ?)"),
    deleteLease: statement("DELETE FROM leases WHERE id = ?"),
  };
}

/** Default size of the metadata store's disk-space reserve. */
const DEFAULT_RESERVE_BYTES = 4 << 20;
/** How long after giving the reserve back before trying to take it again. */
const RESERVE_RETRY_MS = 5000;

function isDiskFull(error: unknown): boolean {
  const record = error as { errcode?: number; code?: string; message?: string } | undefined;
  // SQLITE_FULL is 13 (also as an extended code's low byte).
  return (record?.errcode !== undefined && (record.errcode & 0xff) === 13) ||
    record?.code === "ENOSPC" ||
    /database or disk is full|No space left/.test(record?.message ?? "");
}

/**
 * A file of really allocated bytes beside the store (written, not sparse, so tmpfs and ext4 both
 * count it). When the disk fills up, truncating it gives the store room for the transactions
 * that free space (unlink, truncate); it is written again once the disk has room.
 */
class SpaceReserve {
  readonly path: string;
  readonly bytes: number;
  held = false;
  #releasedAtMs = -Infinity;

  constructor(path: string, bytes: number) {
    this.path = path;
    this.bytes = bytes;
    this.retake(Infinity);
  }

  /** Give the space back; returns false if it was not held (nothing to give). */
  release(): boolean {
    if (!this.held) return false;
    try {
      Deno.truncateSync(this.path, 0);
    } catch {
      return false;
    }
    this.held = false;
    this.#releasedAtMs = -1; // set by the next retake() call's clock
    console.error(
      `skyfs: disk full: metadata reserve "${this.path}" released to record the change`,
    );
    return true;
  }

  /** Take the space again if not held and the disk has room; quietly retried later if not. */
  retake(nowMs: number): void {
    if (this.held) return;
    if (this.#releasedAtMs === -1) this.#releasedAtMs = nowMs;
    if (nowMs - this.#releasedAtMs < RESERVE_RETRY_MS) return;
    try {
      const info = Deno.statSync(this.path);
      if (info.size === this.bytes && (info.blocks ?? 0) * 512 >= this.bytes) {
        this.held = true;
        return;
      }
    } catch { /* not there yet */ }
    try {
      Deno.writeFileSync(this.path, new Uint8Array(this.bytes));
      this.held = true;
    } catch {
      try {
        Deno.truncateSync(this.path, 0);
      } catch { /* the next try will tell */ }
      this.#releasedAtMs = nowMs;
    }
  }
}
