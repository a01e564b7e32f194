/**
 * Which chunk versions a node holds in its local files, persisted in `<dataDir>/cache.db`
 * (node:sqlite) so the cache survives a restart. Each row has the CRC-32 of the bytes written
 * locally; a row is trusted only after the bytes are read back and match (once per process).
 *
 * Eviction is LRU over whole chunks, skipping inodes that are open on this node: reads of one
 * file cluster in time and a chunk is 4 MiB, so the bookkeeping stays small; a scan larger than
 * the cache flushes it (ARC or LRU-2 would resist that; not needed yet).
 * @module
 */

import { DatabaseSync } from "node:sqlite";

export interface CachedChunk {
  ino: number;
  index: number;
  version: string;
  length: number;
  crc: number;
  usedMs: number;
}

export class CacheIndex {
  readonly #db: DatabaseSync;
  #bytes = 0;

  constructor(path: string) {
    this.#db = new DatabaseSync(path);
    this.#db.exec(
      `PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;
       CREATE TABLE IF NOT EXISTS chunk (ino INTEGER, idx INTEGER, version TEXT, length INTEGER,
         crc INTEGER, used INTEGER, PRIMARY KEY (ino, idx));`,
    );
    const row = this.#db.prepare("SELECT COALESCE(SUM(length), 0) AS n FROM chunk").get() as {
      n: number;
    };
    this.#bytes = Number(row.n);
  }

  /** Bytes of chunk data the index accounts for. */
  get bytes(): number {
    return this.#bytes;
  }

  get(ino: number, index: number): CachedChunk | undefined {
    const row = this.#db.prepare(
      "SELECT version, length, crc, used FROM chunk WHERE ino = ? AND idx = ?",
    ).get(ino, index) as
      | { version: string; length: number; crc: number; used: number }
      | undefined;
    if (!row) return undefined;
    return {
      ino,
      index,
      version: row.version,
      length: Number(row.length),
      crc: Number(row.crc),
      usedMs: Number(row.used),
    };
  }

  /** Every chunk cached for `ino`. */
  ofInode(ino: number): CachedChunk[] {
    return (this.#db.prepare("SELECT idx FROM chunk WHERE ino = ?").all(ino) as { idx: number }[])
      .map((r) => this.get(ino, Number(r.idx))!);
  }

  set(chunk: Omit<CachedChunk, "usedMs">): void {
    const old = this.get(chunk.ino, chunk.index);
    this.#db.prepare("INSERT OR REPLACE INTO chunk VALUES (?, ?, ?, ?, ?, ?)").run(
      chunk.ino,
      chunk.index,
      chunk.version,
      chunk.length,
      chunk.crc,
      Date.now(),
    );
    this.#bytes += chunk.length - (old?.length ?? 0);
  }

  touch(ino: number, index: number): void {
    this.#db.prepare("UPDATE chunk SET used = ? WHERE ino = ? AND idx = ?").run(
      Date.now(),
      ino,
      index,
    );
  }

  delete(ino: number, index: number): void {
    const old = this.get(ino, index);
    if (!old) return;
    this.#db.prepare("DELETE FROM chunk WHERE ino = ? AND idx = ?").run(ino, index);
    this.#bytes -= old.length;
  }

  deleteInode(ino: number): void {
    for (const chunk of this.ofInode(ino)) this.delete(ino, chunk.index);
  }

  /** Least recently used chunks first, at most `limit`. */
  oldest(limit: number): CachedChunk[] {
    return (this.#db.prepare("SELECT ino, idx FROM chunk ORDER BY used LIMIT ?").all(limit) as {
      ino: number;
      idx: number;
    }[]).map((r) => this.get(Number(r.ino), Number(r.idx))!);
  }

  close(): void {
    this.#db.close();
  }
}
