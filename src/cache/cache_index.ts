/**
 * Which chunk versions a node holds in its local files, persisted in `<dataDir>/cache.log` (an
 * append-only file of checksummed records, written through the process's `IoEngine`) so the
 * cache survives a restart. Each row has the CRC-32 of the bytes written locally; a row is trusted
 * only after the bytes are read back and match (once per process).
 *
 * The rows live in memory; `set` and `delete` append a record (group-committed, never awaited by
 * the read or write path: a get on a read hit must stay a Map lookup, measured: a prepared SQLite
 * query there cost more than the 1 MiB pread it guarded). Use times (`touch`) only change memory
 * and reach the log in batches (`flushUse`, at most every few seconds and at close): after a
 * crash the LRU order is a little older, which only changes eviction order. A record lost to a
 * crash only makes the cache forget a chunk (fetched again) or keep a row whose bytes fail their
 * CRC check (fetched again). `open` replays the log and rewrites it with only the live rows (a
 * torn tail is cut that way too); so does `set` once the log has grown past several times that.
 *
 * Eviction is LRU over whole chunks, skipping inodes that are open on this node: reads of one
 * file cluster in time and a chunk is 4 MiB, so the bookkeeping stays small; a scan larger than
 * the cache flushes it (ARC or LRU-2 would resist that; not needed yet).
 * @module
 */

import type { IoEngine } from "../io/types.ts";
import { ByteReader, ByteWriter } from "../meta/log_codec.ts";
import { LogWriter, readWholeFile, replaceFile, scanFrames } from "../meta/log_file.ts";

export interface CachedChunk {
  ino: number;
  index: number;
  version: string;
  length: number;
  crc: number;
  usedMs: number;
}

/** Use times are written to the log at most this often (and at close). */
const FLUSH_USE_MS = 5_000;
/** The log is rewritten with only the live rows once it is larger than this... */
const MIN_REWRITE_BYTES = 1 << 20;
/** ...and than this many times the live rows' records. */
const REWRITE_FACTOR = 4;
const MAGIC = new TextEncoder().encode("skyfs-cache");
const FORMAT = 1;

const enum Rec {
  Header = 1,
  Set = 2,
  Delete = 3,
  Use = 4,
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export class CacheIndex {
  readonly path: string;
  readonly #rows = new Map<number, Map<number, CachedChunk>>();
  readonly #touched = new Set<CachedChunk>();
  #io: IoEngine | undefined;
  #log: LogWriter | undefined;
  #bytes = 0;
  #count = 0;
  #lastFlushMs = Date.now();
  #rewriting: Promise<void> | undefined;
  #warned = false;

  /** `path` is the log file; nothing is read until `open`. */
  constructor(path: string) {
    this.path = path;
  }

  /** Load the rows kept by the last run and start a fresh log holding only them. An old
   * `cache.db` (SQLite, earlier builds) beside it is removed: the chunks it listed are
   * fetched again when read. */
  async open(io: IoEngine): Promise<void> {
    this.#io = io;
    const old = this.path.replace(/\.log$/, ".db");
    if (old !== this.path) {
      for (const suffix of ["", "-wal", "-shm"]) await io.unlink(old + suffix).catch(() => {});
    }
    const bytes = await readWholeFile(io, this.path);
    if (bytes !== undefined) this.#replay(bytes);
    await this.#rewrite();
  }

  #replay(bytes: Uint8Array): void {
    let header = false;
    scanFrames(bytes, (payload) => {
      const r = new ByteReader(payload);
      const type = r.u8();
      if (!header) {
        const magic = type === Rec.Header ? r.bytes() : new Uint8Array(0);
        if (magic.length !== MAGIC.length || !magic.every((b, i) => b === MAGIC[i])) {
          throw new Error(`"${this.path}" is not a skyfs cache index: move it away`);
        }
        const format = r.u32();
        if (format !== FORMAT) {
          throw new Error(
            `Cache index "${this.path}" has format ${format}, this skyfs reads ${FORMAT}: remove it (the cache is refilled)`,
          );
        }
        header = true;
        return;
      }
      if (type === Rec.Set) {
        this.#remember({
          ino: r.f64(),
          index: r.f64(),
          version: decoder.decode(r.bytes()),
          length: r.f64(),
          crc: r.f64(),
          usedMs: r.f64(),
        });
      } else if (type === Rec.Delete) {
        const ino = r.f64();
        const index = r.f64();
        const row = this.get(ino, index);
        if (row) this.#forget(row);
      } else if (type === Rec.Use) {
        for (let n = r.u32(); n > 0; n--) {
          const row = this.get(r.f64(), r.f64());
          const usedMs = r.f64();
          if (row) row.usedMs = usedMs;
        }
      }
    });
  }

  /** Replace the log with a header and one record per live row; later appends go there. */
  #rewrite(): Promise<void> {
    if (this.#rewriting) return this.#rewriting;
    const io = this.#io!;
    const write = async (captured: Uint8Array[]) => {
      const w = new ByteWriter();
      w.u8(Rec.Header);
      w.bytes(MAGIC);
      w.u32(FORMAT);
      const parts = [w.frame()];
      for (const ofInode of this.#rows.values()) {
        for (const row of ofInode.values()) parts.push(setRecord(row));
      }
      parts.push(...captured);
      let bytes = 0;
      const fd = await replaceFile(io, this.path, async (append) => {
        for (const part of parts) {
          await append(part);
          bytes += part.length;
        }
      }, { keepOpen: true });
      return { fd: fd!, bytes };
    };
    const log = this.#log;
    const running = (async () => {
      if (log === undefined) {
        const { fd, bytes } = await write([]);
        // A failed append only loses that record (the row is refetched or rechecked after a
        // restart); later ones go on.
        this.#log = new LogWriter(io, fd, bytes, { onRollback: () => {} });
        return;
      }
      // Rows are snapshotted inside the switch, after the last write to the old file: records
      // written before it are in the rows, and nothing is written to the old file after it.
      await log.switchFile(() => write([]));
    })().finally(() => this.#rewriting = undefined);
    this.#rewriting = running;
    return running;
  }

  #append(frame: Uint8Array): void {
    const log = this.#log;
    if (log === undefined) return; // not open (a test without a cache log)
    log.append(frame).catch((error) => {
      if (this.#warned) return;
      this.#warned = true;
      console.error(
        `skyfs: cache index "${this.path}" cannot be written (${
          (error as Error).message
        }): cached chunks are fetched again after a restart`,
      );
    });
    if (
      this.#rewriting === undefined && log.bytes > MIN_REWRITE_BYTES &&
      log.bytes > REWRITE_FACTOR * this.#count * 64
    ) {
      this.#rewrite().catch(() => {});
    }
  }

  #remember(chunk: CachedChunk): void {
    const old = this.get(chunk.ino, chunk.index);
    // Before looking up the inode's map: forgetting its only row drops the map.
    if (old) this.#forget(old);
    let ofInode = this.#rows.get(chunk.ino);
    if (!ofInode) this.#rows.set(chunk.ino, ofInode = new Map());
    ofInode.set(chunk.index, chunk);
    this.#bytes += chunk.length;
    this.#count++;
  }

  #forget(chunk: CachedChunk): void {
    const ofInode = this.#rows.get(chunk.ino);
    if (!ofInode?.delete(chunk.index)) return;
    if (ofInode.size === 0) this.#rows.delete(chunk.ino);
    this.#touched.delete(chunk);
    this.#bytes -= chunk.length;
    this.#count--;
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
    this.#remember(row);
    this.#append(setRecord(row));
  }

  touch(ino: number, index: number): void {
    const row = this.get(ino, index);
    if (!row) return;
    row.usedMs = Date.now();
    this.#touched.add(row);
    if (row.usedMs - this.#lastFlushMs >= FLUSH_USE_MS) this.flushUse();
  }

  /** Append the use times changed since the last flush, in one record. */
  flushUse(): void {
    this.#lastFlushMs = Date.now();
    if (this.#touched.size === 0) return;
    const w = new ByteWriter(16 + this.#touched.size * 24);
    w.u8(Rec.Use);
    w.u32(this.#touched.size);
    for (const row of this.#touched) {
      w.f64(row.ino);
      w.f64(row.index);
      w.f64(row.usedMs);
    }
    this.#touched.clear();
    this.#append(w.frame());
  }

  delete(ino: number, index: number): void {
    const old = this.get(ino, index);
    if (!old) return;
    this.#forget(old);
    const w = new ByteWriter(32);
    w.u8(Rec.Delete);
    w.f64(ino);
    w.f64(index);
    this.#append(w.frame());
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

  /** Flush use times and wait until every record is written, then close the log. */
  async close(): Promise<void> {
    this.flushUse();
    await this.#rewriting?.catch(() => {});
    await this.#log?.close();
    this.#log = undefined;
  }
}

function setRecord(row: CachedChunk): Uint8Array {
  const version = encoder.encode(row.version);
  const w = new ByteWriter(64 + version.length);
  w.u8(Rec.Set);
  w.f64(row.ino);
  w.f64(row.index);
  w.bytes(version);
  w.f64(row.length);
  w.f64(row.crc);
  w.f64(row.usedMs);
  return w.frame();
}
