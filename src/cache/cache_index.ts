/**
 * Which chunk versions a node holds in its local files, persisted in `<dataDir>/cache.db`
 * (node:sqlite) so the cache survives a restart. Each row has the CRC-32 of the bytes written
 * locally; a row is trusted only after the bytes are read back and match (once per process).
 *
 * The rows live in memory and are written through to SQLite on set/delete: a read hit asks
 * `get` once per chunk per read, and a prepared SQLite query there cost more than the 1 MiB
 * pread it guarded (measured: local hits 0.33x ext4 page cache). Use times (`touch`) only
 * change memory and reach SQLite in batches (`flushUse`, at most every few seconds and at
 * close): after a crash the LRU order is a little older, which only changes eviction order.
 *
 * Eviction is LRU over whole chunks, skipping inodes that are open on this node: reads of one
 * file cluster in time and a chunk is 4 MiB, so the bookkeeping stays small; a scan larger than
 * the cache flushes it (ARC or LRU-2 would resist that; not needed yet).
 * @module
 */

import { DatabaseSync, type StatementSync } from "node:sqlite";

export interface CachedChunk {
  ino: number;
  index: number;
  version: string;
  length: number;
  crc: number;
  usedMs: number;
}

/** Use times are written to SQLite at most this often (and at close). */
const FLUSH_USE_MS = 5_000;

export class CacheIndex {
  readonly #db: DatabaseSync;
  readonly #rows = new Map<number, Map<number, CachedChunk>>();
  readonly #touched = new Set<CachedChunk>();
  readonly #insert: StatementSync;
  readonly #remove: StatementSync;
  readonly #use: StatementSync;
  #bytes = 0;
  #lastFlushMs = Date.now();

  constructor(path: string) {
    this.#db = new DatabaseSync(path);
    this.#db.exec(
      `PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;
       CREATE TABLE IF NOT EXISTS chunk (ino INTEGER, idx INTEGER, version TEXT, length INTEGER,
         crc INTEGER, used INTEGER, PRIMARY KEY (ino, idx));`,
    );
    this.#insert = this.#db.prepare("INSERT OR REPLACE INTO chunk VALUES (?, ?, ?, ?, ?, ?)");
    this.#remove = this.#db.prepare("DELETE FROM chunk WHERE ino = ? AND idx = ?");
    this.#use = this.#db.prepare("UPDATE chunk SET used = ? WHERE ino = ? AND idx = ?");
    const rows = this.#db.prepare("SELECT ino, idx, version, length, crc, used FROM chunk")
      .all() as {
        ino: number;
        idx: number;
        version: string;
        length: number;
        crc: number;
        used: number;
      }[];
    for (const row of rows) {
      this.#remember({
        ino: Number(row.ino),
        index: Number(row.idx),
        version: row.version,
        length: Number(row.length),
        crc: Number(row.crc),
        usedMs: Number(row.used),
      });
    }
  }

  #remember(chunk: CachedChunk): void {
    let ofInode = this.#rows.get(chunk.ino);
    if (!ofInode) this.#rows.set(chunk.ino, ofInode = new Map());
    const old = ofInode.get(chunk.index);
    if (old) this.#forget(old);
    ofInode.set(chunk.index, chunk);
    this.#bytes += chunk.length;
  }

  #forget(chunk: CachedChunk): void {
    const ofInode = this.#rows.get(chunk.ino);
    if (!ofInode?.delete(chunk.index)) return;
    if (ofInode.size === 0) this.#rows.delete(chunk.ino);
    this.#touched.delete(chunk);
    this.#bytes -= chunk.length;
  }

  /** Bytes of chunk data the index accounts for. */
  get bytes(): number {
    return this.#bytes;
  }

  get(ino: number, index: number): CachedChunk | undefined {
    return this.#rows.get(ino)?.get(index);
  }

  /** Every chunk cached for `ino`. */
  ofInode(ino: number): CachedChunk[] {
    return [...(this.#rows.get(ino)?.values() ?? [])];
  }

  set(chunk: Omit<CachedChunk, "usedMs">): void {
    const row = { ...chunk, usedMs: Date.now() };
    this.#insert.run(row.ino, row.index, row.version, row.length, row.crc, row.usedMs);
    this.#remember(row);
  }

  touch(ino: number, index: number): void {
    const row = this.get(ino, index);
    if (!row) return;
    row.usedMs = Date.now();
    this.#touched.add(row);
    if (row.usedMs - this.#lastFlushMs >= FLUSH_USE_MS) this.flushUse();
  }

  /** Write the use times changed since the last flush to SQLite. */
  flushUse(): void {
    this.#lastFlushMs = Date.now();
    if (this.#touched.size === 0) return;
    this.#db.exec("BEGIN");
    try {
      for (const row of this.#touched) this.#use.run(row.usedMs, row.ino, row.index);
      this.#db.exec("COMMIT");
    } catch (error) {
      this.#db.exec("ROLLBACK");
      throw error;
    }
    this.#touched.clear();
  }

  delete(ino: number, index: number): void {
    const old = this.get(ino, index);
    if (!old) return;
    this.#remove.run(ino, index);
    this.#forget(old);
  }

  deleteInode(ino: number): void {
    for (const chunk of this.ofInode(ino)) this.delete(ino, chunk.index);
  }

  /** Least recently used chunks first, at most `limit`. */
  oldest(limit: number): CachedChunk[] {
    const all: CachedChunk[] = [];
    for (const ofInode of this.#rows.values()) all.push(...ofInode.values());
    return all.sort((p, q) => p.usedMs - q.usedMs).slice(0, limit);
  }

  close(): void {
    this.flushUse();
    this.#db.close();
  }
}
