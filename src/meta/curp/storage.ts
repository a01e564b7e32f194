/**
 * Durable replica state in a data directory: the cluster identity, hard state (term, vote), the
 * log (an append-only file of entry and truncate records) and the witness pool, all fsync'd before
 * the replica sends what depends on them (core.ts `Ready`).
 *
 * Files: cluster.json (which cluster and replica this directory belongs to), hard_state.json and
 * pool.json (replaced atomically: write temporary, fsync, rename, fsync the directory), log.bin
 * (frames as in wire.ts; a torn frame at the end, left by a crash mid-write, is cut off at open).
 * @module
 */

import { join } from "node:path";
import { decodePayload, encodeFrame, FrameReader } from "./wire.ts";
import type { Entry, PersistentState, Ready } from "./core.ts";

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

function writeAtomic(dir: string, name: string, text: string): void {
  const tmp = join(dir, `${name}.tmp`);
  const file = Deno.openSync(tmp, { write: true, create: true, truncate: true });
  try {
    const bytes = new TextEncoder().encode(text);
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

/** JSON with byte strings as {"$b"}: the wire codec without the frame header. */
function toJson(value: unknown): string {
  const frame = encodeFrame(value);
  return new TextDecoder().decode(frame.subarray(5));
}

export class ReplicaStorage {
  readonly dir: string;
  #log: Deno.FsFile;

  private constructor(dir: string, log: Deno.FsFile) {
    this.dir = dir;
    this.#log = log;
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
    const hard = readJson(join(dir, "hard_state.json")) as
      | { term: number; votedFor?: string }
      | undefined;
    const pool = (readJson(join(dir, "pool.json")) ?? []) as PersistentState["pool"];
    const logPath = join(dir, "log.bin");
    const log: Entry[] = [];
    let goodBytes = 0;
    try {
      const bytes = Deno.readFileSync(logPath);
      const reader = new FrameReader();
      let at = 0;
      // Feed frame by frame so that the offset of the last whole frame is known.
      while (at + 4 <= bytes.length) {
        const length = new DataView(bytes.buffer, bytes.byteOffset + at, 4).getUint32(0);
        if (at + 4 + length > bytes.length) break;
        const [payload] = reader.push(bytes.subarray(at, at + 4 + length));
        const record = decodePayload(payload) as { truncate?: number; entry?: Entry };
        if (record.truncate !== undefined) log.splice(record.truncate - 1);
        else if (record.entry !== undefined) {
          if (record.entry.index !== log.length + 1) {
            throw new DataDirError(
              `"${logPath}" holds entry ${record.entry.index} after ${log.length}: the log is corrupt`,
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
    const file = Deno.openSync(logPath, { read: true, write: true, create: true });
    file.truncateSync(goodBytes); // a torn tail from a crash mid-append
    file.seekSync(goodBytes, Deno.SeekMode.Start);
    return {
      storage: new ReplicaStorage(dir, file),
      state: { term: hard?.term ?? 0, votedFor: hard?.votedFor, log, pool },
    };
  }

  /** Step 1 of `Ready`: hard state, log truncation and entries, pool; all fsync'd on return. */
  persist(ready: Ready): void {
    if (ready.hardState !== undefined) {
      writeAtomic(this.dir, "hard_state.json", JSON.stringify(ready.hardState) + "\n");
    }
    const frames: Uint8Array[] = [];
    if (ready.truncateFrom !== undefined) {
      frames.push(encodeFrame({ truncate: ready.truncateFrom }));
    }
    for (const entry of ready.entries) frames.push(encodeFrame({ entry }));
    if (frames.length > 0) {
      let total = 0;
      for (const f of frames) total += f.length;
      const joined = new Uint8Array(total);
      let at = 0;
      for (const f of frames) {
        joined.set(f, at);
        at += f.length;
      }
      at = 0;
      while (at < joined.length) at += this.#log.writeSync(joined.subarray(at));
      this.#log.syncDataSync();
    }
    if (ready.pool !== undefined) writeAtomic(this.dir, "pool.json", toJson(ready.pool) + "\n");
  }

  close(): void {
    try {
      this.#log.close();
    } catch { /* closed */ }
  }
}
