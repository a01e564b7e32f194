/**
 * The backend store for cluster mode (DESIGN.md section 5): where chunk objects live durably.
 * A chunk written is an immutable object named by (inode, chunk index, version); nothing ever
 * overwrites an object, so a reader holding an old chunk map still reads a whole old version.
 * Implementations: a directory (a shared disk, or a directory shared by nodes on one machine)
 * here, and S3 in backend_s3.ts.
 * @module
 */

import { DurationHistogram } from "../duration_histogram.ts";
import { monotonicSeconds } from "../io/libc.ts";
import { join } from "node:path";
import { Errno, FsError } from "../fs_error.ts";
import type { IoEngine } from "../io/types.ts";
import { createPortableEngine } from "../io/portable.ts";
import {
  fstat,
  ftruncate,
  O_CLOEXEC,
  O_CREAT,
  O_DIRECT,
  O_DIRECTORY,
  O_EXCL,
  O_RDONLY,
  O_WRONLY,
} from "../io/libc.ts";
import { addressOf, DIRECT_ALIGN_BYTES, takeBuffer } from "./buffer_pool.ts";

/** Smaller objects are written through the page cache (O_DIRECT gains nothing there). */
const DIRECT_MIN_BYTES = 64 << 10;

/** The store of immutable objects. Every method may reject (EIO at the edges). */
export interface BackendStore {
  readonly kind: string;
  /** Store `data` under `key` durably before resolving (a crash after it keeps the object).
   * The caller may reuse `data` once the promise settled. */
  put(key: string, data: Uint8Array): Promise<void>;
  /** The object's bytes, or undefined if there is none. The caller owns them: it may hand a
   * chunk-sized result to `recycleBuffer` (buffer_pool.ts) once nothing else holds it. */
  get(key: string): Promise<Uint8Array | undefined>;
  /** Remove the object (nothing if absent). */
  delete(key: string): Promise<void>;
  /** Keys under `prefix` with their last-modified time in ms since the epoch. */
  list(prefix: string): Promise<{ key: string; modifiedMs: number }[]>;
  close(): Promise<void>;
}

/** Chunk object names: `c/<ino hex>/<index>/<version>`; listing `c/<ino hex>/` finds a file's. */
export function chunkObjectKey(ino: number, index: number, version: string): string {
  return `c/${ino.toString(16)}/${index}/${version}`;
}

/** The inverse of chunkObjectKey; undefined for a foreign key. */
export function parseChunkObjectKey(
  key: string,
): { ino: number; index: number; version: string } | undefined {
  const match = /^c\/([0-9a-f]+)\/(\d+)\/([0-9a-z-]+)$/.exec(key);
  if (!match) return undefined;
  return { ino: parseInt(match[1], 16), index: Number(match[2]), version: match[3] };
}

/**
 * Objects as files under a directory. A put writes a temporary file, fdatasyncs it, renames it
 * into place and fsyncs the directory, so a reader (any node) sees either no object or all of it.
 * Object reads and writes go through the process's IoEngine (src/io), like every other disk I/O.
 */
export class DirBackend implements BackendStore {
  readonly kind = "dir";
  readonly root: string;
  readonly #io: IoEngine;
  /** Objects are written with O_DIRECT until the file system refuses it. */
  #direct = true;

  constructor(root: string, io: IoEngine = createPortableEngine()) {
    this.root = root;
    this.#io = io;
  }

  /** `io`: the process's engine (the caller keeps owning it). Default: the portable engine. */
  static async open(root: string, io?: IoEngine): Promise<DirBackend> {
    await Deno.mkdir(join(root, "tmp"), { recursive: true });
    return new DirBackend(root, io);
  }

  #path(key: string): string {
    if (key.includes("..") || key.startsWith("/")) {
      throw new RangeError(`Backend key ${JSON.stringify(key)} must be relative without ".."`);
    }
    return join(this.root, "o", key);
  }

  async put(key: string, data: Uint8Array): Promise<void> {
    const io = this.#io;
    const path = this.#path(key);
    const dir = path.slice(0, path.lastIndexOf("/"));
    await Deno.mkdir(dir, { recursive: true });
    const tmp = join(this.root, "tmp", `${crypto.randomUUID()}`);
    // O_DIRECT when the bytes allow it (a chunk from buffer_pool.ts: aligned, with room to
    // round up): the object goes from the buffer to the disk, not through the page cache. A
    // buffered write copied every uploaded byte into fresh page-cache pages, half of a writing
    // node's CPU (issue 13; `dd bs=4M conv=fsync` of 1 GiB here: 2.1 s of system CPU buffered,
    // 0.4 s with oflag=direct). The object is read back rarely (a peer's miss), from disk then.
    const padded = Math.ceil(data.length / DIRECT_ALIGN_BYTES) * DIRECT_ALIGN_BYTES;
    const direct = this.#direct && data.length >= DIRECT_MIN_BYTES &&
      addressOf(data) % DIRECT_ALIGN_BYTES === 0 &&
      data.byteOffset + padded <= data.buffer.byteLength;
    let fd = -1;
    if (direct) {
      try {
        fd = await io.open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_DIRECT, 0o644);
      } catch (error) {
        // A file system without O_DIRECT (tmpfs): buffered from now on.
        if (!(error instanceof FsError && error.errno === Errno.EINVAL)) throw error;
        this.#direct = false;
      }
    }
    try {
      if (fd >= 0) {
        // Whole blocks from the buffer (bytes past the object are cut off again), then one
        // fdatasync for the data and the size.
        const blocks = new Uint8Array(data.buffer, data.byteOffset, padded);
        for (let written = 0; written < padded;) {
          written += await io.write(fd, blocks.subarray(written), written);
        }
        if (padded !== data.length) ftruncate(fd, data.length);
        await io.fsync(fd, { datasync: true });
      } else {
        fd = await io.open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644);
        // One linked write + fdatasync; a short write (not expected for a regular file) is
        // finished and synced separately.
        let written = await io.writeAndSync(fd, data, 0);
        if (written < data.length) {
          while (written < data.length) {
            written += await io.write(fd, data.subarray(written), written);
          }
          await io.fsync(fd, { datasync: true });
        }
      }
    } finally {
      if (fd >= 0) await io.close(fd);
    }
    await io.rename(tmp, path);
    const dirFd = await io.open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    try {
      await io.fsync(dirFd);
    } finally {
      await io.close(dirFd);
    }
  }

  async get(key: string): Promise<Uint8Array | undefined> {
    const io = this.#io;
    let fd: number;
    try {
      fd = await io.open(this.#path(key), O_RDONLY | O_CLOEXEC);
    } catch (error) {
      if (error instanceof FsError && error.errno === Errno.ENOENT) return undefined;
      throw error;
    }
    try {
      // A pooled buffer for a chunk: a fresh 4 MiB one is zeroed and faults in page by page
      // (most of a reading node's CPU in a cold first read, issue 13).
      const bytes = takeBuffer(fstat(fd).size);
      let done = 0;
      while (done < bytes.length) {
        const n = await io.read(fd, bytes.subarray(done), done);
        if (n === 0) break; // truncated under us: objects are immutable, so never expected
        done += n;
      }
      return done === bytes.length ? bytes : bytes.subarray(0, done);
    } finally {
      await io.close(fd);
    }
  }

  async delete(key: string): Promise<void> {
    try {
      await this.#io.unlink(this.#path(key));
    } catch (error) {
      if (!(error instanceof FsError && error.errno === Errno.ENOENT)) throw error;
    }
  }

  async list(prefix: string): Promise<{ key: string; modifiedMs: number }[]> {
    const out: { key: string; modifiedMs: number }[] = [];
    const base = join(this.root, "o");
    const walk = async (rel: string): Promise<void> => {
      let entries: Deno.DirEntry[];
      try {
        entries = await Array.fromAsync(Deno.readDir(join(base, rel)));
      } catch (error) {
        if (error instanceof Deno.errors.NotFound) return;
        throw error;
      }
      for (const entry of entries) {
        const key = rel === "" ? entry.name : `${rel}/${entry.name}`;
        // Descend only where the prefix can still match.
        if (!key.startsWith(prefix) && !prefix.startsWith(key)) continue;
        if (entry.isDirectory) await walk(key);
        else if (key.startsWith(prefix)) {
          const st = await Deno.stat(join(base, key));
          out.push({ key, modifiedMs: st.mtime?.getTime() ?? 0 });
        }
      }
    };
    await walk("");
    return out.sort((a, b) => a.key < b.key ? -1 : a.key > b.key ? 1 : 0);
  }

  async close(): Promise<void> {}
}

/**
 * Open a backend from a URL: a path or `dir:///path` for DirBackend, or
 * `s3://bucket?endpoint=http://host:port&region=...` (credentials from AWS_ACCESS_KEY_ID and
 * AWS_SECRET_ACCESS_KEY) for S3, or `http://host:port` for a directory served by
 * backend_http.ts (requests aborted after `timeoutMs`).
 */
export async function openBackend(
  spec: string,
  io?: IoEngine,
  options: { timeoutMs?: number } = {},
): Promise<BackendStore> {
  if (spec.startsWith("http://")) {
    // A directory served over HTTP (backend_http.ts): another zone's store in the local
    // emulation of distant clouds.
    const { HttpBackend } = await import("./backend_http.ts");
    return new HttpBackend(spec, options.timeoutMs);
  }
  if (spec.startsWith("s3://")) {
    const { S3Backend } = await import("./backend_s3.ts");
    return S3Backend.fromUrl(spec);
  }
  const path = spec.startsWith("dir://") ? spec.slice("dir://".length) : spec;
  if (!path.startsWith("/")) {
    throw new RangeError(
      `--backend "${spec}" is neither an absolute path, dir:///path, s3:// nor http://`,
    );
  }
  return await DirBackend.open(path, io);
}

/** The operations of a BackendStore, in the order of CountedBackend's series. */
export const BACKEND_OPS = ["put", "get", "delete", "list"] as const;

/**
 * A BackendStore that counts requests, errors and their time per operation for /metrics (arrays
 * allocated once; the wrapped call's promise is awaited, no other is made).
 */
export class CountedBackend implements BackendStore {
  readonly inner: BackendStore;
  readonly requests = new Float64Array(BACKEND_OPS.length);
  readonly errors = new Float64Array(BACKEND_OPS.length);
  readonly durations = new DurationHistogram(BACKEND_OPS.length);

  constructor(inner: BackendStore) {
    this.inner = inner;
  }

  get kind(): string {
    return this.inner.kind;
  }

  async #count<T>(op: number, call: Promise<T>): Promise<T> {
    const started = monotonicSeconds();
    try {
      return await call;
    } catch (error) {
      this.errors[op]++;
      throw error;
    } finally {
      this.requests[op]++;
      this.durations.observe(monotonicSeconds() - started, op);
    }
  }

  put(key: string, data: Uint8Array): Promise<void> {
    return this.#count(0, this.inner.put(key, data));
  }

  get(key: string): Promise<Uint8Array | undefined> {
    return this.#count(1, this.inner.get(key));
  }

  delete(key: string): Promise<void> {
    return this.#count(2, this.inner.delete(key));
  }

  list(prefix: string): Promise<{ key: string; modifiedMs: number }[]> {
    return this.#count(3, this.inner.list(prefix));
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}
