/**
 * Durable replica state in a data directory: the cluster identity, hard state (term, vote), the
 * log, the witness pool and the latest snapshot, all fsync'd before the replica sends what depends
 * on them (core.ts `Ready`).
 *
 * Files: cluster.json (which cluster and replica this directory belongs to); log.bin, one
 * append-only file of frames (as in wire.ts) holding hard state, witness pool, entry and truncate
 * records, so one fdatasync per Ready covers all of them (a torn frame at the end, left by a crash
 * mid-write, is cut off at open); snapshot.bin, the state machine up to an index, as a sequence of
 * pieces (snapshot_pieces.ts; earlier builds wrote one frame, still read). Storing a snapshot
 * writes snapshot.bin, then rewrites log.bin with only what follows it (each atomically: write a
 * temporary, fsync, rename, fsync the directory), so the log stays bounded. A crash between the
 * two leaves a log whose entries up to the snapshot are skipped at open.
 *
 * A snapshot installed from the leader is stored before anything else (the Ready's messages wait
 * for it). A compaction (the replica's own snapshot) is written in the background, one piece at a
 * time, while appends to log.bin go on; the next persist after it is durable rewrites log.bin.
 * A 35 MB store took 1.3 s to encode as one frame, with every append and message of the replica
 * waiting behind it: on all replicas at once, as they compact at the same index.
 *
 * All of it goes through the process's `IoEngine` (src/io), so the replica's event loop keeps
 * serving the network while the disk syncs.
 * @module
 */

import { join } from "node:path";
import type { IoEngine } from "../../io/types.ts";
import { O_CREAT, O_DIRECTORY, O_RDONLY, O_RDWR, O_TRUNC, O_WRONLY } from "../../io/libc.ts";
import { Errno, FsError } from "../../fs_error.ts";
import {
  CHECKED_VERSION,
  checkedPayloadWhole,
  decodePayload,
  encodeCheckedFrame,
  encodeUnboundedFrame,
} from "./wire.ts";
import { idKey } from "./command.ts";
import { concat, LogWriter, zeroFrom } from "../log_file.ts";
import type { Entry, PersistentState, Ready, Snapshot, WitnessRecord } from "./core.ts";
import { SnapshotAssembler, type SnapshotPart, SnapshotPieces } from "./snapshot_pieces.ts";

export interface ClusterIdentity {
  /** The whole replica set as "id=host:port,..." sorted: a directory serves one cluster. */
  cluster: string;
  id: string;
}

/** Position of the first entry with an index >= `index` in `entries` (ascending by index), or
 * -1 when there is none: a binary search, O(1) when `index` follows the last entry. */
export function firstFrom(entries: readonly { index: number }[], index: number): number {
  if (entries.length === 0 || entries[entries.length - 1].index < index) return -1;
  let lo = 0;
  let hi = entries.length - 1; // entries[hi].index >= index
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (entries[mid].index >= index) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}

export class DataDirError extends Error {
  override name = "DataDirError";
}

const encoder = new TextEncoder();

/** fsync a directory, so that names created or renamed in it survive power loss. */
async function fsyncDir(io: IoEngine, path: string): Promise<void> {
  const fd = await io.open(path, O_RDONLY | O_DIRECTORY);
  try {
    await io.fsync(fd);
  } finally {
    await io.close(fd);
  }
}

/** Replace `name` in `dir` whole: write a temporary, fdatasync it (one linked submission),
 * rename it over the old file, fsync the directory. */
async function writeAtomic(
  io: IoEngine,
  dir: string,
  name: string,
  content: string | Uint8Array,
): Promise<void> {
  const tmp = join(dir, `${name}.tmp`);
  const bytes = typeof content === "string" ? encoder.encode(content) : content;
  const fd = await io.open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0o644);
  try {
    await io.writeAndSync(fd, bytes, 0);
  } finally {
    await io.close(fd);
  }
  await io.rename(tmp, join(dir, name));
  await fsyncDir(io, dir);
}

/** The whole file, or undefined when it does not exist. */
async function readWhole(io: IoEngine, path: string): Promise<Uint8Array | undefined> {
  let fd: number;
  try {
    fd = await io.open(path, O_RDONLY);
  } catch (error) {
    if (error instanceof FsError && error.errno === Errno.ENOENT) return undefined;
    throw error;
  }
  try {
    // Grow the buffer until a read comes back short: no separate size query, no race with it.
    let bytes = new Uint8Array(64 * 1024);
    let length = 0;
    for (;;) {
      const n = await io.read(fd, bytes.subarray(length), length);
      length += n;
      if (length < bytes.length) return bytes.subarray(0, length);
      const bigger = new Uint8Array(bytes.length * 2);
      bigger.set(bytes);
      bytes = bigger;
    }
  } finally {
    await io.close(fd);
  }
}

async function readJson(io: IoEngine, path: string): Promise<unknown> {
  try {
    const bytes = await readWhole(io, path);
    if (bytes === undefined) return undefined;
    return decodePayload(new Uint8Array([1, ...bytes]));
  } catch (error) {
    throw new DataDirError(`Cannot read "${path}": ${(error as Error).message}`);
  }
}

interface LogRecord {
  base?: number;
  hard?: { term: number; votedFor?: string };
  pool?: WitnessRecord[];
  poolAdd?: WitnessRecord[];
  poolRemove?: string[];
  truncate?: number;
  entry?: Entry;
}

/** A frame as in wire.ts but without its size limit: a snapshot may be large. */
function encodeRecord(body: unknown): Uint8Array {
  return encodeUnboundedFrame(body); // version 2; version 1 (JSON) files are still read
}

/** One record of snapshot.bin. */
interface SnapshotRecord {
  /** Earlier builds: the whole snapshot in one record. */
  snapshot?: Snapshot;
  snapshotPiece?: { index: number; term: number; piece: number; last: boolean; data: SnapshotPart };
}

async function readSnapshot(io: IoEngine, path: string): Promise<Snapshot | undefined> {
  const bytes = await readWhole(io, path);
  if (bytes === undefined) return undefined;
  const assembler = new SnapshotAssembler();
  let at = 0;
  for (let n = 0; at + 4 <= bytes.length; n++) {
    const length = new DataView(bytes.buffer, bytes.byteOffset + at).getUint32(0);
    if (length < 1 || at + 4 + length > bytes.length) break;
    const record = decodePayload(bytes.subarray(at + 4, at + 4 + length)) as SnapshotRecord;
    at += 4 + length;
    if (record.snapshot !== undefined && n === 0 && at === bytes.length) return record.snapshot;
    const piece = record.snapshotPiece;
    if (piece === undefined || piece.piece !== n) break;
    assembler.add(piece.data);
    if (piece.last && at === bytes.length) {
      return { index: piece.index, term: piece.term, kv: assembler.finish() };
    }
  }
  // Written to a temporary and renamed only once whole: anything else is damage.
  throw new DataDirError(`"${path}" (${bytes.length} bytes) is not one whole snapshot`);
}

/** Write all of `bytes` at `offset`. */
async function writeFully(io: IoEngine, fd: number, bytes: Uint8Array, offset: number) {
  let written = 0;
  while (written < bytes.length) {
    const n = await io.write(fd, bytes.subarray(written), offset + written);
    if (n <= 0) throw new Error(`write of ${bytes.length} bytes at ${offset} wrote ${n}`);
    written += n;
  }
}

/**
 * Replace `dir/snapshot.bin` with `snapshot`, atomically, encoding and writing one piece at a
 * time so the event loop serves the network in between. Stops early, leaving only the temporary,
 * and returns false once `abandoned()` says so.
 */
async function writeSnapshot(
  io: IoEngine,
  dir: string,
  snapshot: Snapshot,
  abandoned: () => boolean,
): Promise<boolean> {
  const tmp = join(dir, "snapshot.bin.tmp");
  const fd = await io.open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0o644);
  try {
    const pieces = new SnapshotPieces(snapshot.kv);
    let offset = 0;
    for (let piece = 0;; piece++) {
      if (abandoned()) return false;
      const { data, last } = pieces.piece(piece);
      const { index, term } = snapshot;
      const bytes = encodeRecord({ snapshotPiece: { index, term, piece, last, data } });
      await writeFully(io, fd, bytes, offset);
      offset += bytes.length;
      if (last) break;
    }
    await io.fsync(fd, { datasync: true });
  } finally {
    await io.close(fd);
  }
  if (abandoned()) return false;
  await io.rename(tmp, join(dir, "snapshot.bin"));
  await fsyncDir(io, dir);
  return true;
}

/** What log.bin holds, replayed; `goodBytes` ends the last whole frame. */
function replayLog(
  bytes: Uint8Array,
  logPath: string,
  start: { hard: LogRecord["hard"]; pool: WitnessRecord[] },
): {
  base: number;
  log: Entry[];
  /** Each entry's frame as stored, for rewriting the log without encoding it again. */
  frames: Uint8Array[];
  hard: LogRecord["hard"];
  pool: WitnessRecord[];
  goodBytes: number;
} {
  let { hard, pool } = start;
  let base = 0;
  let log: Entry[] = [];
  let frames: Uint8Array[] = [];
  let at = 0;
  // Frame by frame so that the offset of the last whole frame is known.
  while (at + 4 <= bytes.length) {
    const length = new DataView(bytes.buffer, bytes.byteOffset + at, 4).getUint32(0);
    // No frame is empty: zeros are the room a mapped log grew ahead (LogWriter), its end.
    if (length === 0 || at + 4 + length > bytes.length) break;
    const payload = bytes.subarray(at + 4, at + 4 + length);
    // A checked frame failing its CRC is a torn tail (a crash before the page cache reached the
    // disk): the log ends before it.
    if (payload[0] === CHECKED_VERSION && !checkedPayloadWhole(payload)) break;
    let record: LogRecord;
    try {
      record = decodePayload(payload) as LogRecord;
    } catch (error) {
      throw new DataDirError(
        `"${logPath}" has an unreadable frame at byte ${at}: ${(error as Error).message} ` +
          `(written by another skyfs build? run that build, or restore the directory)`,
      );
    }
    if (record.base !== undefined) {
      base = record.base;
      log = [];
      frames = [];
    } else if (record.hard !== undefined) hard = record.hard;
    else if (record.pool !== undefined) pool = record.pool;
    else if (record.poolAdd !== undefined) {
      const added = new Set(record.poolAdd.map((r) => idKey(r.command)));
      pool = pool.filter((r) => !added.has(idKey(r.command))).concat(record.poolAdd);
    } else if (record.poolRemove !== undefined) {
      const removed = new Set(record.poolRemove);
      pool = pool.filter((r) => !removed.has(idKey(r.command)));
    } else if (record.truncate !== undefined) {
      log.splice(record.truncate - base - 1);
      frames.splice(record.truncate - base - 1);
    } else if (record.entry !== undefined) {
      if (record.entry.index !== base + log.length + 1) {
        throw new DataDirError(
          `"${logPath}" holds entry ${record.entry.index} after ${
            base + log.length
          }: the log is corrupt`,
        );
      }
      log.push(record.entry);
      frames.push(bytes.slice(at, at + 4 + length));
    }
    at += 4 + length;
  }
  return { base, log, frames, hard, pool, goodBytes: at };
}

/** How log.bin is written (config `curp.log_writes`): "mapped" copies frames into a shared
 * mapping of the file (LogWriterOptions.mapped: in the page cache once the copy ends, surviving
 * kill -9 of the process, with no write request handed to an io-wq worker); "engine" writes them
 * through the I/O engine. Either way durability against power loss is the fdatasync after. */
export type LogWrites = "mapped" | "engine";

export interface StorageOptions {
  /** Default "mapped". */
  logWrites?: LogWrites;
}

/**
 * The replica's data directory. Every read and write goes through the process's `IoEngine`
 * (src/io: io_uring where the kernel allows it), so an fdatasync never blocks the event loop;
 * log.bin's frames go through a `LogWriter` (src/meta/log_file.ts), copied into a shared mapping
 * of the file by default (`LogWrites`).
 *
 * Two steps per Ready: `write` puts it in log.bin (the page cache: it survives kill -9 of the
 * process once it resolves), `durable` resolves once every Ready written so far is on disk: one
 * fdatasync covers every write made before it starts, and writes go on while it runs (group
 * commit). `persist` is both. `write` calls must not overlap (the server runs them one after
 * another).
 */
export class ReplicaStorage {
  readonly dir: string;
  readonly #io: IoEngine;
  readonly #writer: LogWriter;
  /** Bytes of log.bin now (entries since the last snapshot). */
  get logBytes(): number {
    return this.#writer.bytes;
  }
  /** Whether log.bin is written through a shared mapping ("mapped") or the engine. */
  get logWrites(): LogWrites {
    return this.#writer.mapped ? "mapped" : "engine";
  }
  /** The latest hard state and pool, rewritten at the head of a compacted log. */
  #hard: { term: number; votedFor?: string } | undefined;
  /** The pool as stored, by command id. */
  #pool = new Map<string, WitnessRecord>();
  /** Every entry log.bin holds (after its base), as its stored frame: a rewrite copies them. */
  #entries: { index: number; frame: Uint8Array }[];
  /** The write in progress, which close() waits for. */
  #running: Promise<void> | undefined;
  /** Written frames that promise something and no fdatasync started since covers. */
  #unsynced = false;
  /** The latest fdatasync started (settled when none is needed). */
  #lastSync: Promise<void> = Promise.resolve();
  /** The writer's promise behind `#lastSync`: callers during an fdatasync share the next one. */
  #lastWriterSync: Promise<void> | undefined;
  /** Index of the last entry written, and of the last one an fdatasync that completed covered. */
  #writtenIndex: number;
  #durableIndex: number;
  /** The compaction being written in the background, and the newest one waiting for it. */
  #background: Promise<void> | undefined;
  #nextCompaction: Snapshot | undefined;
  /** Set to make the background writer stop (an installed snapshot replaces it, or close). */
  #abandonCompaction = false;
  /** Index of a compaction now durable in snapshot.bin that log.bin still holds entries of. */
  #compactedTo: number | undefined;
  /** Set when a write failed: what is on disk is then unknown until a reopen cuts it back. */
  #failed: unknown;
  #closed = false;
  /** fdatasync/fsync calls (monotonic; for status and benchmarks): one per `durable` that
   * needed one (shared by every Ready written before it), two per log rewrite and two per
   * snapshot written. */
  fsyncs = 0;
  /** Writes that needed no fdatasync: the Ready only removed witness records. */
  unsyncedWrites = 0;
  /** Called when a background compaction fails (the replica keeps its longer log). */
  onCompactionError: (error: unknown) => void = () => {};

  private constructor(
    dir: string,
    io: IoEngine,
    writer: LogWriter,
    entries: { index: number; frame: Uint8Array }[],
    state: PersistentState,
  ) {
    this.dir = dir;
    this.#io = io;
    this.#writer = writer;
    this.#entries = entries;
    this.#writtenIndex = this.#durableIndex = entries.at(-1)?.index ?? state.snapshot?.index ?? 0;
    this.#hard = { term: state.term, votedFor: state.votedFor };
    this.#pool = new Map(state.pool.map((r) => [idKey(r.command), r]));
  }

  /** Open (creating if empty) the directory for `identity`; refuse one of another cluster. */
  static async open(
    dir: string,
    identity: ClusterIdentity,
    io: IoEngine,
    options: StorageOptions = {},
  ): Promise<{ storage: ReplicaStorage; state: PersistentState }> {
    const logWrites = options.logWrites ?? "mapped";
    if (logWrites !== "mapped" && logWrites !== "engine") {
      throw new RangeError(
        `curp.log_writes is ${JSON.stringify(logWrites)}: set it to mapped or engine`,
      );
    }
    Deno.mkdirSync(dir, { recursive: true }); // once per process start; no engine op for mkdir
    const idPath = join(dir, "cluster.json");
    const stored = await readJson(io, idPath) as ClusterIdentity | undefined;
    if (stored === undefined) {
      await writeAtomic(io, dir, "cluster.json", JSON.stringify(identity) + "\n");
    } else if (stored.cluster !== identity.cluster || stored.id !== identity.id) {
      throw new DataDirError(
        `Data directory "${dir}" belongs to replica "${stored.id}" of cluster "${stored.cluster}", ` +
          `not replica "${identity.id}" of "${identity.cluster}": pass that --id and --peers, ` +
          `or use an empty --data directory`,
      );
    }
    // Written by earlier builds; log.bin's records override them.
    const hard = await readJson(io, join(dir, "hard_state.json")) as LogRecord["hard"];
    const pool = (await readJson(io, join(dir, "pool.json")) ?? []) as WitnessRecord[];
    const snapshot = await readSnapshot(io, join(dir, "snapshot.bin"));
    const logPath = join(dir, "log.bin");
    const bytes = await readWhole(io, logPath) ?? new Uint8Array(0);
    const replayed = replayLog(bytes, logPath, { hard, pool });
    let log = replayed.log;
    let frames = replayed.frames;
    if (snapshot !== undefined && snapshot.index > replayed.base) {
      // A crash between writing the snapshot and rewriting the log (or a compaction stored in the
      // background and not yet folded in): drop what it covers, everything if the log does not
      // continue it.
      const at = log.findIndex((e) => e.index === snapshot.index);
      const continues = at >= 0 && log[at].term === snapshot.term;
      log = continues ? log.slice(at + 1) : [];
      frames = continues ? frames.slice(at + 1) : [];
    }
    // Zeros after the last frame are the room a mapped log grew ahead, not a torn tail.
    if (replayed.goodBytes < bytes.length && !zeroFrom(bytes, replayed.goodBytes)) {
      // A torn tail from a crash mid-append: keep the whole frames (the engine has no
      // ftruncate, and a tail left behind a shorter append could read as a frame).
      await writeAtomic(io, dir, "log.bin", bytes.subarray(0, replayed.goodBytes));
    }
    const fd = await io.open(logPath, O_RDWR | O_CREAT, 0o644);
    let writer: LogWriter;
    try {
      // What an earlier process copied into its mapping (or wrote) survived it in the page
      // cache, but may not be on disk yet: this replica answers as if it were.
      await io.fsync(fd, { datasync: true });
      writer = await LogWriter.open(io, fd, replayed.goodBytes, {
        mapped: logWrites === "mapped",
      });
    } catch (error) {
      await io.close(fd).catch(() => {});
      throw error;
    }
    const state = {
      term: replayed.hard?.term ?? 0,
      votedFor: replayed.hard?.votedFor,
      log,
      pool: replayed.pool,
      snapshot,
    };
    const entries = log.map((e, i) => ({ index: e.index, frame: frames[i] }));
    const storage = new ReplicaStorage(dir, io, writer, entries, state);
    storage.fsyncs++;
    // log.bin still holds what the snapshot covers: the first persist rewrites it.
    if (snapshot !== undefined && snapshot.index > replayed.base) {
      storage.#compactedTo = snapshot.index;
    }
    return { storage, state };
  }

  /** `write`, then `onWritten`, then `durable`: the Ready and every earlier one on disk. */
  async persist(ready: Ready, onWritten?: () => void): Promise<void> {
    await this.write(ready);
    onWritten?.();
    await this.durable();
  }

  /** Step 1 of `Ready`, up to the page cache: hard state, snapshot or log changes, pool, copied
   * into log.bin (they survive kill -9 of the process once it resolves); `durable` then makes
   * them survive power loss. An installed snapshot and a log rewrite are durable when it
   * resolves. A `compaction` is only started (see `Ready`). A rejection leaves the directory in
   * an unknown state: stop the replica and reopen it. */
  write(ready: Ready): Promise<void> {
    if (this.#closed) return Promise.reject(new Error(`Replica storage "${this.dir}" is closed`));
    if (this.#failed !== undefined) return Promise.reject(this.#failed);
    if (this.#running !== undefined) {
      // Our own bug: two writes at once could reorder appends.
      throw new Error("ReplicaStorage.write called while another write runs");
    }
    const running = this.#write(ready).catch((error) => {
      this.#failed = error;
      throw error;
    }).finally(() => {
      this.#running = undefined;
    });
    this.#running = running;
    return running;
  }

  /** Resolves once everything `write` wrote so far is on disk: at once when nothing written
   * since the last fdatasync needs one, else with the fdatasync that starts now or, while one
   * runs, the next one (shared by every caller until it starts). Rejects as `write` does. */
  durable(): Promise<void> {
    if (this.#failed !== undefined) return Promise.reject(this.#failed);
    if (!this.#unsynced) return this.#lastSync;
    this.#unsynced = false;
    const index = this.#writtenIndex;
    const sync = this.#writer.sync();
    if (sync !== this.#lastWriterSync) this.fsyncs++;
    this.#lastWriterSync = sync;
    this.#lastSync = sync.then(() => {
      this.#durableIndex = Math.max(this.#durableIndex, index);
    }, (error) => {
      this.#failed ??= error;
      throw error;
    });
    this.#lastSync.catch(() => {}); // the caller that waits sees it; nobody may wait
    return this.#lastSync;
  }

  /** Whether something written needs an fdatasync that `durable` has not started yet. */
  get unsynced(): boolean {
    return this.#unsynced;
  }

  /** Index of the last log entry known to be on disk (entries up to it need no fdatasync). */
  get durableIndex(): number {
    return this.#durableIndex;
  }

  async #write(ready: Ready): Promise<void> {
    if (ready.snapshot !== undefined) return await this.#install(ready);
    const frames: Uint8Array[] = [];
    if (ready.hardState !== undefined) {
      frames.push(encodeCheckedFrame({ hard: ready.hardState }));
      this.#hard = ready.hardState;
    }
    if (ready.truncateFrom !== undefined) {
      frames.push(encodeCheckedFrame({ truncate: ready.truncateFrom }));
      // Every Ready with entries names the first as truncateFrom: mostly nothing to drop, and a
      // scan from the front cost O(log since the last compaction) per append.
      const at = firstFrom(this.#entries, ready.truncateFrom);
      if (at >= 0) this.#entries.length = at;
      this.#writtenIndex = Math.min(this.#writtenIndex, ready.truncateFrom - 1);
      this.#durableIndex = Math.min(this.#durableIndex, ready.truncateFrom - 1);
    }
    for (const entry of ready.entries) {
      const frame = encodeCheckedFrame({ entry });
      frames.push(frame);
      this.#entries.push({ index: entry.index, frame });
      this.#writtenIndex = entry.index;
    }
    let poolAdded = false;
    if (ready.pool !== undefined) {
      const changes = this.#poolChanges(ready.pool);
      poolAdded = changes.added;
      frames.push(...changes.frames);
    }
    if (this.#compactedTo !== undefined) {
      // A compaction became durable: this write puts the log anew without what it covers
      // (durable when it resolves, with everything written before).
      await this.#rewriteLog(this.#compactedTo);
      this.#compactedTo = undefined;
    } else if (frames.length > 0) {
      const onlyRemovals = ready.hardState === undefined && ready.truncateFrom === undefined &&
        ready.entries.length === 0 && !poolAdded;
      // Records leaving the pool (their commands applied) promise nothing: a crash that forgets
      // the removal brings the record back, and it leaves again when the replica re-applies the
      // command (a replica never holds a record of a command it executed). So no fdatasync: this
      // is the Ready of every commit on the leader and of every heartbeat that moves a follower's
      // commit index, and fsyncing it put one more disk flush in front of each `synced` reply.
      if (onlyRemovals) this.unsyncedWrites++;
      else this.#unsynced = true;
      await this.#writer.append(frames.length === 1 ? frames[0] : concat(frames));
    }
    if (ready.compaction !== undefined) this.#compact(ready.compaction);
  }

  /** The pool as changes since the last one stored: a record added (or re-accepted in a newer
   * term) and ids removed. Writing the whole pool each time would cost O(pool) per proposal. */
  #poolChanges(pool: WitnessRecord[]): { frames: Uint8Array[]; added: boolean } {
    const next = new Map(pool.map((r) => [idKey(r.command), r]));
    const add = pool.filter((r) => this.#pool.get(idKey(r.command))?.term !== r.term);
    const remove = [...this.#pool.keys()].filter((k) => !next.has(k));
    this.#pool = next;
    const frames: Uint8Array[] = [];
    if (add.length > 0) frames.push(encodeCheckedFrame({ poolAdd: add }));
    if (remove.length > 0) frames.push(encodeCheckedFrame({ poolRemove: remove }));
    return { frames, added: add.length > 0 };
  }

  /** A snapshot from the leader: stored, then a log holding only what follows it. */
  async #install(ready: Ready): Promise<void> {
    const { log, ...snapshot } = ready.snapshot!;
    this.#abandonCompaction = true; // older than this one
    this.#nextCompaction = undefined;
    await this.#background;
    this.#abandonCompaction = false;
    this.#compactedTo = undefined;
    await writeSnapshot(this.#io, this.dir, snapshot, () => false);
    this.fsyncs += 2;
    if (ready.hardState !== undefined) this.#hard = ready.hardState;
    if (ready.pool !== undefined) {
      this.#pool = new Map(ready.pool.map((r) => [idKey(r.command), r]));
    }
    this.#entries = log.map((entry) => ({
      index: entry.index,
      frame: encodeCheckedFrame({ entry }),
    }));
    await this.#rewriteLog(snapshot.index);
  }

  /** Replace log.bin with base `index`, the hard state, the pool and the entries after `index`:
   * a new file, durable when this resolves, and with it everything written before. */
  async #rewriteLog(index: number): Promise<void> {
    const at = firstFrom(this.#entries, index + 1);
    this.#entries = at < 0 ? [] : this.#entries.slice(at);
    const frames = [encodeCheckedFrame({ base: index })];
    if (this.#hard !== undefined) frames.push(encodeCheckedFrame({ hard: this.#hard }));
    frames.push(encodeCheckedFrame({ pool: [...this.#pool.values()] }));
    for (const e of this.#entries) frames.push(e.frame);
    const joined = concat(frames);
    await this.#writer.switchFile(async () => {
      await writeAtomic(this.#io, this.dir, "log.bin", joined);
      this.fsyncs += 2; // the file's fdatasync, then its directory's fsync
      const fd = await this.#io.open(join(this.dir, "log.bin"), O_RDWR);
      return { fd, bytes: joined.length };
    });
    this.#unsynced = false;
    this.#writtenIndex = this.#durableIndex = this.#entries.at(-1)?.index ?? index;
  }

  /** Write `snapshot` in the background (after the one being written, if any: only the newest
   * waiting one is kept). */
  #compact(snapshot: Snapshot): void {
    this.#nextCompaction = snapshot;
    if (this.#background !== undefined) return;
    this.#background = (async () => {
      while (this.#nextCompaction !== undefined && !this.#abandonCompaction && !this.#closed) {
        const next = this.#nextCompaction;
        this.#nextCompaction = undefined;
        try {
          const stored = await writeSnapshot(
            this.#io,
            this.dir,
            next,
            () => this.#abandonCompaction || this.#closed,
          );
          if (stored) {
            this.#compactedTo = next.index;
            this.fsyncs += 2;
          }
        } catch (error) {
          // The log still holds every entry: nothing is lost, the log just stays longer.
          this.onCompactionError(error);
        }
      }
    })().finally(() => this.#background = undefined);
  }

  /** Settles when no compaction is being written in the background (tests). */
  get compacting(): Promise<void> {
    return this.#background ?? Promise.resolve();
  }

  /** Wait for the write and fdatasync in progress, stop a background compaction, then close log.bin. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#running?.catch(() => {});
    await this.#background;
    await this.#lastSync.catch(() => {});
    await this.#writer.close().catch(() => {});
  }
}
