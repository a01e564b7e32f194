/**
 * Durable replica state in a data directory: the cluster identity, hard state (term, vote), the
 * log, the witness pool and the latest snapshot, all fsync'd before the replica sends what depends
 * on them (core.ts `Ready`).
 *
 * Files: cluster.json (which cluster and replica this directory belongs to); log.bin, one
 * append-only file of frames (as in wire.ts) holding hard state, witness pool, entry and truncate
 * records, so one fdatasync per Ready covers all of them (a torn frame at the end, left by a crash
 * mid-write, is cut off at open); snapshot.bin, the state machine up to an index. Taking a snapshot
 * writes snapshot.bin, then rewrites log.bin with only what follows it (each atomically: write a
 * temporary, fsync, rename, fsync the directory), so the log stays bounded. A crash between the
 * two leaves a log whose entries up to the snapshot are skipped at open.
 * @module
 */

import { join } from "node:path";
import { decodePayload, encodeFrame, encodeJson } from "./wire.ts";
import { idKey } from "./command.ts";
import type { Entry, PersistentState, Ready, Snapshot, WitnessRecord } from "./core.ts";

export interface ClusterIdentity {
  /** The whole replica set as "id=host:port,..." sorted: a directory serves one cluster. */
  cluster: string;
  id: string;
}

export class DataDirError extends Error {
  override name = "DataDirError";
}

function fsyncDir(path: string): void {
  const dir = Deno.openSync(path, { read: true });
  try {
    dir.syncSync();
  } finally {
    dir.close();
  }
}

function writeAtomic(dir: string, name: string, content: string | Uint8Array): void {
  const tmp = join(dir, `${name}.tmp`);
  const file = Deno.openSync(tmp, { write: true, create: true, truncate: true });
  try {
    const bytes = typeof content === "string" ? new TextEncoder().encode(content) : content;
    let at = 0;
    while (at < bytes.length) at += file.writeSync(bytes.subarray(at));
    file.syncSync();
  } finally {
    file.close();
  }
  Deno.renameSync(tmp, join(dir, name));
  fsyncDir(dir);
}

function readJson(path: string): unknown {
  try {
    return decodePayload(
      new Uint8Array([1, ...new TextEncoder().encode(Deno.readTextFileSync(path))]),
    );
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return undefined;
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

function concat(parts: Uint8Array[]): Uint8Array {
  let total = 0;
  for (const p of parts) total += p.length;
  const out = new Uint8Array(total);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** A frame as in wire.ts but without its size limit: a snapshot may be large. */
function encodeRecord(body: unknown): Uint8Array {
  const json = new TextEncoder().encode(encodeJson(body));
  const out = new Uint8Array(5 + json.length);
  new DataView(out.buffer).setUint32(0, json.length + 1);
  out[4] = 1;
  out.set(json, 5);
  return out;
}

function readSnapshot(path: string): Snapshot | undefined {
  let bytes: Uint8Array;
  try {
    bytes = Deno.readFileSync(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return undefined;
    throw error;
  }
  const length = bytes.length >= 4 ? new DataView(bytes.buffer, bytes.byteOffset).getUint32(0) : 0;
  if (bytes.length < 5 || length !== bytes.length - 4) {
    throw new DataDirError(`"${path}" is ${bytes.length} bytes, not one whole snapshot record`);
  }
  return (decodePayload(bytes.subarray(4)) as { snapshot: Snapshot }).snapshot;
}

export class ReplicaStorage {
  readonly dir: string;
  #log: Deno.FsFile;
  /** The latest hard state and pool, rewritten at the head of a compacted log. */
  #hard: { term: number; votedFor?: string } | undefined;
  /** The pool as stored, by command id. */
  #pool = new Map<string, WitnessRecord>();

  private constructor(dir: string, log: Deno.FsFile, state: PersistentState) {
    this.dir = dir;
    this.#log = log;
    this.#hard = { term: state.term, votedFor: state.votedFor };
    this.#pool = new Map(state.pool.map((r) => [idKey(r.command), r]));
  }

  /** Open (creating if empty) the directory for `identity`; refuse one of another cluster. */
  static open(
    dir: string,
    identity: ClusterIdentity,
  ): { storage: ReplicaStorage; state: PersistentState } {
    Deno.mkdirSync(dir, { recursive: true });
    const idPath = join(dir, "cluster.json");
    const stored = readJson(idPath) as ClusterIdentity | undefined;
    if (stored === undefined) {
      writeAtomic(dir, "cluster.json", JSON.stringify(identity) + "\n");
    } else if (stored.cluster !== identity.cluster || stored.id !== identity.id) {
      throw new DataDirError(
        `Data directory "${dir}" belongs to replica "${stored.id}" of cluster "${stored.cluster}", ` +
          `not replica "${identity.id}" of "${identity.cluster}": pass that --id and --peers, ` +
          `or use an empty --data directory`,
      );
    }
    // Written by earlier builds; log.bin's records override them.
    let hard = readJson(join(dir, "hard_state.json")) as
      | { term: number; votedFor?: string }
      | undefined;
    let pool = (readJson(join(dir, "pool.json")) ?? []) as WitnessRecord[];
    const snapshot = readSnapshot(join(dir, "snapshot.bin"));
    const logPath = join(dir, "log.bin");
    let base = 0;
    let log: Entry[] = [];
    let goodBytes = 0;
    try {
      const bytes = Deno.readFileSync(logPath);
      let at = 0;
      // Frame by frame so that the offset of the last whole frame is known.
      while (at + 4 <= bytes.length) {
        const length = new DataView(bytes.buffer, bytes.byteOffset + at, 4).getUint32(0);
        if (at + 4 + length > bytes.length) break;
        const record = decodePayload(bytes.subarray(at + 4, at + 4 + length)) as LogRecord;
        if (record.base !== undefined) {
          base = record.base;
          log = [];
        } else if (record.hard !== undefined) hard = record.hard;
        else if (record.pool !== undefined) pool = record.pool;
        else if (record.poolAdd !== undefined) {
          const added = new Set(record.poolAdd.map((r) => idKey(r.command)));
          pool = pool.filter((r) => !added.has(idKey(r.command))).concat(record.poolAdd);
        } else if (record.poolRemove !== undefined) {
          const removed = new Set(record.poolRemove);
          pool = pool.filter((r) => !removed.has(idKey(r.command)));
        } else if (record.truncate !== undefined) log.splice(record.truncate - base - 1);
        else if (record.entry !== undefined) {
          if (record.entry.index !== base + log.length + 1) {
            throw new DataDirError(
              `"${logPath}" holds entry ${record.entry.index} after ${
                base + log.length
              }: the log is corrupt`,
            );
          }
          log.push(record.entry);
        }
        at += 4 + length;
      }
      goodBytes = at;
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) throw error;
    }
    if (snapshot !== undefined && snapshot.index > base) {
      // A crash between writing the snapshot and rewriting the log: drop what it covers, and
      // everything if the log does not continue it.
      const at = log.findIndex((e) => e.index === snapshot.index);
      const continues = at >= 0 && log[at].term === snapshot.term;
      log = continues ? log.slice(at + 1) : [];
    }
    const file = Deno.openSync(logPath, { read: true, write: true, create: true });
    file.truncateSync(goodBytes); // a torn tail from a crash mid-append
    file.seekSync(goodBytes, Deno.SeekMode.Start);
    const state = { term: hard?.term ?? 0, votedFor: hard?.votedFor, log, pool, snapshot };
    return { storage: new ReplicaStorage(dir, file, state), state };
  }

  /** Step 1 of `Ready`: hard state, snapshot or log changes, pool; all fsync'd on return. */
  persist(ready: Ready): void {
    if (ready.snapshot !== undefined) return this.#rewrite(ready);
    const frames: Uint8Array[] = [];
    if (ready.hardState !== undefined) frames.push(encodeFrame({ hard: ready.hardState }));
    if (ready.truncateFrom !== undefined) {
      frames.push(encodeFrame({ truncate: ready.truncateFrom }));
    }
    for (const entry of ready.entries) frames.push(encodeFrame({ entry }));
    if (ready.pool !== undefined) frames.push(...this.#poolChanges(ready.pool));
    if (ready.hardState !== undefined) this.#hard = ready.hardState;
    if (frames.length === 0) return;
    const joined = concat(frames);
    let at = 0;
    while (at < joined.length) at += this.#log.writeSync(joined.subarray(at));
    this.#log.syncDataSync();
  }

  /** The pool as changes since the last one stored: a record added (or re-accepted in a newer
   * term) and ids removed. Writing the whole pool each time would cost O(pool) per proposal. */
  #poolChanges(pool: WitnessRecord[]): Uint8Array[] {
    const next = new Map(pool.map((r) => [idKey(r.command), r]));
    const add = pool.filter((r) => this.#pool.get(idKey(r.command))?.term !== r.term);
    const remove = [...this.#pool.keys()].filter((k) => !next.has(k));
    this.#pool = next;
    const frames: Uint8Array[] = [];
    if (add.length > 0) frames.push(encodeFrame({ poolAdd: add }));
    if (remove.length > 0) frames.push(encodeFrame({ poolRemove: remove }));
    return frames;
  }

  /** Snapshot first, then a log holding only what follows it: the log stays bounded. */
  #rewrite(ready: Ready): void {
    const { log, ...snapshot } = ready.snapshot!;
    writeAtomic(this.dir, "snapshot.bin", encodeRecord({ snapshot }));
    if (ready.hardState !== undefined) this.#hard = ready.hardState;
    if (ready.pool !== undefined) {
      this.#pool = new Map(ready.pool.map((r) => [idKey(r.command), r]));
    }
    const frames = [encodeFrame({ base: snapshot.index })];
    if (this.#hard !== undefined) frames.push(encodeFrame({ hard: this.#hard }));
    frames.push(encodeFrame({ pool: [...this.#pool.values()] }));
    for (const entry of log) frames.push(encodeFrame({ entry }));
    const path = join(this.dir, "log.bin");
    writeAtomic(this.dir, "log.bin", concat(frames));
    this.#log.close();
    this.#log = Deno.openSync(path, { read: true, write: true });
    this.#log.seekSync(0, Deno.SeekMode.End);
  }

  close(): void {
    try {
      this.#log.close();
    } catch { /* closed */ }
  }
}
