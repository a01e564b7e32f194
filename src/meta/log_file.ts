/**
 * Append-only files of checksummed frames, written through the process's `IoEngine` (src/io):
 * the disk format and group-commit writer under the embedded metadata store and the cache index.
 *
 * A frame is `u32 payload length, u32 CRC-32 of the payload, payload` (big-endian). Reading stops
 * at the first frame that is cut short or fails its CRC: that is a torn tail left by a crash
 * mid-write, and everything before it is whole. Whole files (snapshots) are replaced atomically:
 * write a temporary, fdatasync it, rename it over the old one, fsync the directory.
 * @module
 */

import { crc32 } from "node:zlib";
import type { IoEngine } from "../io/types.ts";
import * as libc from "../io/libc.ts";
import { Errno, FsError } from "../fs_error.ts";

/** Bytes before each frame's payload: length and CRC. */
export const FRAME_HEADER_BYTES = 8;
/** Largest payload accepted when reading: a longer length can only be garbage. */
const MAX_FRAME_PAYLOAD_BYTES = 1 << 30;

/** Fill in the header of a frame whose payload was written at `frame[8..]`. */
export function sealFrame(frame: Uint8Array): Uint8Array {
  const view = new DataView(frame.buffer, frame.byteOffset, FRAME_HEADER_BYTES);
  const payload = frame.subarray(FRAME_HEADER_BYTES);
  view.setUint32(0, payload.length);
  view.setUint32(4, crc32(payload));
  return frame;
}

/** A frame around `payload` (copied). */
export function encodeFrame(payload: Uint8Array): Uint8Array {
  const frame = new Uint8Array(FRAME_HEADER_BYTES + payload.length);
  frame.set(payload, FRAME_HEADER_BYTES);
  return sealFrame(frame);
}

/** Call `onFrame` with each whole frame's payload in order; returns the bytes those frames span
 * (where a torn tail, if any, starts). `onFrame` returning false stops early, the frame counted. */
export function scanFrames(
  bytes: Uint8Array,
  onFrame: (payload: Uint8Array) => boolean | void,
): number {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let at = 0;
  while (at + FRAME_HEADER_BYTES <= bytes.length) {
    const length = view.getUint32(at);
    const end = at + FRAME_HEADER_BYTES + length;
    // No frame is empty: zeros are a hole punched over a failed write (LogWriter).
    if (length === 0 || length > MAX_FRAME_PAYLOAD_BYTES || end > bytes.length) break;
    const payload = bytes.subarray(at + FRAME_HEADER_BYTES, end);
    if (crc32(payload) !== view.getUint32(at + 4)) break;
    at = end;
    if (onFrame(payload) === false) break;
  }
  return at;
}

/** The whole file through the engine, or undefined when it does not exist. */
export async function readWholeFile(io: IoEngine, path: string): Promise<Uint8Array | undefined> {
  let fd: number;
  try {
    fd = await io.open(path, libc.O_RDONLY | libc.O_CLOEXEC);
  } catch (error) {
    if (error instanceof FsError && error.errno === Errno.ENOENT) return undefined;
    throw error;
  }
  try {
    // Sized by one statx, then grown if the file grew meanwhile (a read that fills the buffer).
    let bytes = new Uint8Array(Math.max(4096, (await io.statx(path)).size + 1));
    let length = 0;
    for (;;) {
      const n = await io.read(fd, bytes.subarray(length), length);
      length += n;
      if (n === 0 || length < bytes.length) return bytes.subarray(0, length);
      const bigger = new Uint8Array(bytes.length * 2);
      bigger.set(bytes);
      bytes = bigger;
    }
  } finally {
    await io.close(fd);
  }
}

/** fsync a directory, so that names created or renamed in it survive power loss. */
export async function fsyncDirectory(io: IoEngine, path: string): Promise<void> {
  const fd = await io.open(path, libc.O_RDONLY | libc.O_DIRECTORY | libc.O_CLOEXEC);
  try {
    await io.fsync(fd);
  } finally {
    await io.close(fd);
  }
}

export function directoryOf(path: string): string {
  const slash = path.lastIndexOf("/");
  return slash < 0 ? "." : slash === 0 ? "/" : path.slice(0, slash);
}

/** Write every byte of `data` at `offset` (the engine may write short). */
export async function writeFully(
  io: IoEngine,
  fd: number,
  data: Uint8Array,
  offset: number,
): Promise<void> {
  let done = 0;
  while (done < data.length) {
    const n = await io.write(fd, done === 0 ? data : data.subarray(done), offset + done);
    if (n <= 0) {
      throw new FsError(Errno.EIO, `write of ${data.length} bytes at ${offset} made no progress`);
    }
    done += n;
  }
}

/**
 * Replace `path` whole with the chunks `write` produces: they go to `<path>.tmp` at increasing
 * offsets, which is then fdatasync'd, renamed over `path`, and the directory fsync'd. On failure
 * before the rename the temporary is removed and `path` is untouched. With `keepOpen` the new
 * file's fd (open for writing) is returned; a failed directory fsync after the rename is then
 * only logged, because the caller must switch to the file the name now points at.
 */
export async function replaceFile(
  io: IoEngine,
  path: string,
  write: (append: (chunk: Uint8Array) => Promise<void>) => Promise<void>,
  options: { keepOpen?: boolean } = {},
): Promise<number | undefined> {
  const tmp = `${path}.tmp`;
  const fd = await io.open(
    tmp,
    libc.O_WRONLY | libc.O_CREAT | libc.O_TRUNC | libc.O_CLOEXEC,
    0o600,
  );
  try {
    let offset = 0;
    await write(async (chunk) => {
      await writeFully(io, fd, chunk, offset);
      offset += chunk.length;
    });
    await io.fsync(fd, { datasync: true });
    await io.rename(tmp, path);
  } catch (error) {
    await io.close(fd).catch(() => {});
    await io.unlink(tmp).catch(() => {});
    throw error;
  }
  try {
    await fsyncDirectory(io, directoryOf(path));
  } catch (error) {
    if (!options.keepOpen) {
      await io.close(fd).catch(() => {});
      throw error;
    }
    console.error(`skyfs: fsync of the directory of "${path}" failed: ${(error as Error).message}`);
  }
  if (options.keepOpen) return fd;
  await io.close(fd);
  return undefined;
}

/**
 * Take an exclusive flock(2) on `path` (created if missing), held until the returned fd is closed
 * or the process dies (so kill -9 leaves no stale lock). Throws `inUse()` when another open file
 * holds it. flock is not disk I/O: one synchronous libc call.
 */
export async function lockFile(io: IoEngine, path: string, inUse: () => Error): Promise<number> {
  const fd = await io.open(path, libc.O_RDWR | libc.O_CREAT | libc.O_CLOEXEC, 0o600);
  try {
    libc.flock(fd, libc.LOCK_EX | libc.LOCK_NB);
  } catch (error) {
    await io.close(fd).catch(() => {});
    if (error instanceof FsError && error.errno === Errno.EAGAIN) throw inUse();
    throw error;
  }
  return fd;
}

export interface LogWriterOptions {
  /**
   * Called when a write fails; resolving true retries the same bytes at the same offset (for
   * example after freeing disk space), false gives up on them (see `onRollback`).
   */
  onWriteError?: (error: unknown) => Promise<boolean>;
  /**
   * Called synchronously when a write failed for good, just before every append not yet written
   * (the failed batch and all queued after it) is rejected: the owner undoes what they recorded.
   * The writer then punches a hole over the bytes the failed write may have left (so no stale
   * frame can follow later ones) and goes on at the same offset; if it cannot punch, it stops and
   * rejects every later append. Without this option a failed write always stops the writer.
   */
  onRollback?: (error: unknown) => void;
  /**
   * Write frames by copying them into a shared mapping of the file (MAP_SHARED) instead of
   * through the engine: the copy puts them in the page cache, where they survive kill -9 of this
   * process, without a write request that io_uring hands to an io-wq worker. The file is grown
   * ahead with fallocate (in the background once less than half a step is left; a step is the
   * file's size, from 64 KiB up to `mappedGrowBytes`; on ENOSPC only what the append needs), so no
   * store ever lands past its end (a store past it would raise SIGBUS); the zeros beyond the last frame read as
   * the end of the log (`scanFrames`). A failed fallocate is the failed write of `onWriteError`
   * and `onRollback` (nothing was copied, so there is nothing to punch). The writer's fd may be
   * write-only: the file is mapped through a read-write open of `/proc/self/fd/<fd>`.
   */
  mapped?: boolean;
  /** Bytes the file grows by at a time when mapped (default 8 MiB). */
  mappedGrowBytes?: number;
}

/** Virtual size of a log's mapping at first; doubled when the log outgrows it. */
const MAPPING_BYTES = 1 << 30;
const DEFAULT_GROW_BYTES = 8 << 20;
const MIN_GROW_BYTES = 64 << 10;
const PAGE_BYTES = 4096;

/** Whether every byte of `bytes` from `from` on is zero (a mapped log's room ahead). */
export function zeroFrom(bytes: Uint8Array, from: number): boolean {
  let at = from;
  while (at < bytes.length && (at & 7) !== 0) if (bytes[at++] !== 0) return false;
  const words = (bytes.length - at) >> 3;
  if (words > 0) {
    const view = new BigUint64Array(
      bytes.buffer.slice(bytes.byteOffset + at, bytes.byteOffset + at + words * 8),
    );
    for (let i = 0; i < words; i++) if (view[i] !== 0n) return false;
    at += words * 8;
  }
  while (at < bytes.length) if (bytes[at++] !== 0) return false;
  return true;
}

interface Waiter {
  resolve: () => void;
  reject: (error: unknown) => void;
}

/**
 * Group-commit appender of one log file: frames appended while a write is in flight (and those of
 * the same microtask checkpoint) go out together in the next single write. `append` resolves once
 * its bytes are written to the kernel (they survive kill -9 of this process); `sync` once every
 * byte appended so far is on disk (fdatasync). Writes never overlap, so the file never has a hole
 * before acknowledged bytes.
 */
export class LogWriter {
  readonly #io: IoEngine;
  readonly #options: LogWriterOptions;
  #fd: number;
  /** Offset of the next write. */
  #offset: number;
  #pending: Uint8Array[] = [];
  #pendingBytes = 0;
  #waiters: Waiter[] = [];
  #flushing = false;
  #scheduled = false;
  /** The write in progress, if any. */
  #inFlight: Promise<void> | undefined;
  /** While set, no new write starts (a file switch is in progress). */
  #paused: Promise<void> | undefined;
  #failed: unknown;
  /** Buffers written since `startCapture`, for a compaction's new file. */
  #capture: Uint8Array[] | undefined;
  #idle: (() => void)[] = [];
  #syncRunning: Promise<void> | undefined;
  #syncQueued: Promise<void> | undefined;
  /** Mapped mode: the file's mapping, its size as grown so far, and the growth in progress. */
  #mapping: libc.SharedMapping | undefined;
  #fileBytes = 0;
  #growing: Promise<void> | undefined;
  readonly #growBytes: number;

  /** Use `LogWriter.open` for a mapped writer; this constructor writes through the engine. */
  constructor(io: IoEngine, fd: number, offset: number, options: LogWriterOptions = {}) {
    this.#io = io;
    this.#fd = fd;
    this.#offset = offset;
    this.#options = options;
    this.#growBytes = options.mappedGrowBytes ?? DEFAULT_GROW_BYTES;
  }

  /** A writer appending at `offset` of the file open as `fd`; with `mapped`, the file is mapped
   * first. */
  static async open(
    io: IoEngine,
    fd: number,
    offset: number,
    options: LogWriterOptions = {},
  ): Promise<LogWriter> {
    const writer = new LogWriter(io, fd, offset, options);
    if (options.mapped) await writer.#map(fd);
    return writer;
  }

  /** Whether frames are copied into a shared mapping (see `LogWriterOptions.mapped`). */
  get mapped(): boolean {
    return this.#mapping !== undefined;
  }

  /** Map the file of `fd`, unmapping the previous file's mapping. */
  async #map(fd: number): Promise<void> {
    const fileBytes = libc.fstat(fd).size;
    const rw = await this.#io.open(`/proc/self/fd/${fd}`, libc.O_RDWR | libc.O_CLOEXEC);
    let mapping: libc.SharedMapping;
    try {
      let length = MAPPING_BYTES;
      while (length < fileBytes + this.#growBytes) length *= 2;
      mapping = libc.mapShared(rw, length);
    } finally {
      await this.#io.close(rw).catch(() => {});
    }
    if (this.#mapping !== undefined) libc.unmap(this.#mapping);
    this.#mapping = mapping;
    this.#fileBytes = fileBytes;
  }

  /** Mapped mode: make the file hold at least `end` bytes (and the mapping cover them). */
  async #makeRoom(end: number): Promise<void> {
    while (this.#fileBytes < end) {
      if (this.#growing !== undefined) {
        // A growth ahead that failed is tried again here, for just this append if need be.
        await this.#growing.catch(() => {});
        continue;
      }
      await this.#grow(end);
    }
  }

  /** Grow the file to a step past `end` (one fallocate through the engine; on ENOSPC, a second
   * one of just what `end` needs). */
  #grow(end: number): Promise<void> {
    const fd = this.#fd;
    const from = this.#fileBytes;
    const step = Math.min(this.#growBytes, Math.max(MIN_GROW_BYTES, from));
    let to = Math.ceil((end + step) / PAGE_BYTES) * PAGE_BYTES;
    const growing = (async () => {
      try {
        await this.#io.fallocate(fd, 0, from, to - from);
      } catch (error) {
        const needed = Math.ceil(end / PAGE_BYTES) * PAGE_BYTES;
        if (!(error instanceof FsError && error.errno === Errno.ENOSPC) || needed >= to) {
          throw error;
        }
        to = needed;
        await this.#io.fallocate(fd, 0, from, to - from);
      }
      if (fd !== this.#fd) return; // switched to another file meanwhile
      this.#fileBytes = Math.max(this.#fileBytes, to);
      const mapping = this.#mapping!;
      if (to > mapping.bytes.byteLength) {
        let length = mapping.bytes.byteLength;
        while (length < to) length *= 2;
        const rw = await this.#io.open(`/proc/self/fd/${fd}`, libc.O_RDWR | libc.O_CLOEXEC);
        try {
          const next = libc.mapShared(rw, length);
          libc.unmap(this.#mapping!);
          this.#mapping = next;
        } finally {
          await this.#io.close(rw).catch(() => {});
        }
      }
    })().finally(() => {
      if (this.#growing === growing) this.#growing = undefined;
    });
    this.#growing = growing;
    return growing;
  }

  /** Bytes in the current file once everything queued is written. */
  get bytes(): number {
    return this.#offset + this.#pendingBytes;
  }

  /** The error that stopped the writer, if any. */
  get failed(): unknown {
    return this.#failed;
  }

  append(frame: Uint8Array): Promise<void> {
    if (this.#failed !== undefined) return Promise.reject(this.#failed);
    this.#pending.push(frame);
    this.#pendingBytes += frame.length;
    const done = new Promise<void>((resolve, reject) => this.#waiters.push({ resolve, reject }));
    if (!this.#scheduled && !this.#flushing) {
      this.#scheduled = true;
      queueMicrotask(() => {
        this.#scheduled = false;
        void this.#flush();
      });
    }
    return done;
  }

  async #flush(): Promise<void> {
    if (this.#flushing) return;
    this.#flushing = true;
    try {
      while (this.#pending.length > 0 && this.#failed === undefined) {
        while (this.#paused !== undefined) await this.#paused;
        const parts = this.#pending;
        const waiters = this.#waiters;
        const bytes = parts.length === 1 ? parts[0] : concat(parts, this.#pendingBytes);
        this.#pending = [];
        this.#pendingBytes = 0;
        this.#waiters = [];
        this.#inFlight = this.#writeAt(bytes, this.#offset);
        try {
          await this.#inFlight;
        } catch (error) {
          this.#inFlight = undefined;
          // Synchronously: nothing may append between the undo and the rejections.
          this.#options.onRollback?.(error);
          const rejected = [...waiters, ...this.#waiters];
          this.#waiters = [];
          this.#pending = [];
          this.#pendingBytes = 0;
          for (const w of rejected) w.reject(error);
          if (!(await this.#punch(bytes.length)) || this.#options.onRollback === undefined) {
            this.#failed = error;
            for (const w of this.#waiters) w.reject(error);
            this.#waiters = [];
            this.#pending = [];
            this.#pendingBytes = 0;
            break;
          }
          continue;
        } finally {
          this.#inFlight = undefined;
        }
        this.#offset += bytes.length;
        this.#capture?.push(bytes);
        for (const w of waiters) w.resolve();
      }
    } finally {
      this.#flushing = false;
      for (const resolve of this.#idle.splice(0)) resolve();
    }
  }

  /** Zero what a failed write of `length` bytes at the current offset may have left. */
  async #punch(length: number): Promise<boolean> {
    if (this.#mapping !== undefined) return true; // a failed fallocate copied nothing
    try {
      await this.#io.fallocate(
        this.#fd,
        libc.FALLOC_FL_PUNCH_HOLE | libc.FALLOC_FL_KEEP_SIZE,
        this.#offset,
        length,
      );
      return true;
    } catch {
      return false;
    }
  }

  async #writeAt(bytes: Uint8Array, offset: number): Promise<void> {
    for (;;) {
      try {
        if (this.#mapping === undefined) {
          await writeFully(this.#io, this.#fd, bytes, offset);
          return;
        }
        const end = offset + bytes.length;
        if (end > this.#fileBytes) await this.#makeRoom(end);
        this.#mapping.bytes.set(bytes, offset);
        // Grow ahead in the background, so appends rarely wait for a fallocate.
        if (this.#growing === undefined && this.#fileBytes - end < this.#growBytes / 2) {
          this.#grow(end).catch(() => {}); // a failure shows when an append needs the room
        }
        return;
      } catch (error) {
        if (!(await this.#options.onWriteError?.(error))) throw error;
      }
    }
  }

  /** Resolves when nothing is being written and nothing is queued (or the writer failed). */
  async drain(): Promise<void> {
    while (this.#flushing || this.#scheduled || this.#pending.length > 0) {
      if (this.#failed !== undefined) return;
      await new Promise<void>((resolve) => this.#idle.push(resolve));
    }
  }

  /**
   * Make every byte appended so far durable: wait until it is written, then fdatasync. Callers
   * arriving during an fdatasync share the next one.
   */
  sync(): Promise<void> {
    if (this.#syncRunning === undefined) return this.#startSync();
    this.#syncQueued ??= this.#syncRunning.then(
      () => {
        this.#syncQueued = undefined;
        return this.#startSync();
      },
      () => {
        this.#syncQueued = undefined;
        return this.#startSync();
      },
    );
    return this.#syncQueued;
  }

  #startSync(): Promise<void> {
    const running = (async () => {
      // An empty append completes after every write queued or in flight before it.
      if (this.#flushing || this.#pending.length > 0) await this.append(new Uint8Array(0));
      if (this.#failed !== undefined) throw this.#failed;
      await this.#io.fsync(this.#fd, { datasync: true });
    })().finally(() => {
      if (this.#syncRunning === running) this.#syncRunning = undefined;
    });
    this.#syncRunning = running;
    return running;
  }

  /** Start keeping a copy of every buffer written from now on (see `switchFile`). */
  startCapture(): void {
    this.#capture = [];
  }

  stopCapture(): void {
    this.#capture = undefined;
  }

  /**
   * Move appends to a new file: waits for the write in flight, holds later ones, and calls
   * `create` with what was written since `startCapture`; `create` makes the new file (durably,
   * holding those bytes) and returns its fd and length. Appends queued meanwhile go to the new
   * file. If `create` throws, appends continue in the old file.
   */
  async switchFile(
    create: (captured: Uint8Array[]) => Promise<{ fd: number; bytes: number }>,
  ): Promise<void> {
    let release!: () => void;
    this.#paused = new Promise<void>((resolve) => release = resolve);
    try {
      while (this.#inFlight !== undefined) await this.#inFlight.catch(() => {});
      if (this.#failed !== undefined) throw this.#failed;
      const captured = this.#capture ?? [];
      this.#capture = undefined;
      const next = await create(captured);
      if (this.#mapping !== undefined) {
        while (this.#growing !== undefined) await this.#growing.catch(() => {});
        try {
          await this.#map(next.fd);
        } catch (error) {
          // The new file is the log now: go on writing it through the engine.
          libc.unmap(this.#mapping);
          this.#mapping = undefined;
          console.error(
            `skyfs: mapping the new log failed, writing it through the engine: ${
              (error as Error).message
            }`,
          );
        }
      }
      const old = this.#fd;
      this.#fd = next.fd;
      this.#offset = next.bytes;
      // An fdatasync still running on the old fd is harmless: its bytes are in the new file.
      await this.#io.close(old).catch(() => {});
    } finally {
      this.#capture = undefined;
      this.#paused = undefined;
      release();
    }
  }

  /** Wait for queued appends and the sync in progress, then close the file. */
  async close(): Promise<void> {
    await this.drain();
    await Promise.allSettled([this.#syncRunning, this.#syncQueued, this.#growing]);
    if (this.#mapping !== undefined) {
      libc.unmap(this.#mapping);
      this.#mapping = undefined;
      // A log closed cleanly ends at its last frame: drop the room grown ahead.
      if (this.#failed === undefined) {
        try {
          libc.ftruncate(this.#fd, this.#offset);
        } catch {
          // The zeros read as the end of the log anyway.
        }
      }
    }
    await this.#io.close(this.#fd).catch(() => {});
  }
}

/** The parts joined into one new buffer (`total`: their summed length, when known). */
export function concat(
  parts: Uint8Array[],
  total = parts.reduce((n, p) => n + p.length, 0),
): Uint8Array {
  const out = new Uint8Array(total);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}
