/**
 * Binary writer and reader for the payloads of log frames (log_file.ts): big-endian u8/u32,
 * numbers as f64 (revisions, ids and lengths stay exact up to 2^53), byte strings as u32 length
 * plus bytes. The writer leaves room for the frame header so a record becomes a frame in place.
 * @module
 */

import { FRAME_HEADER_BYTES, sealFrame } from "./log_file.ts";

/**
 * A buffer that writers take their frames from one after another (`new ByteWriter(n, arena)`):
 * one allocation for many small frames. An ArrayBuffer of its own per frame (backing store, its
 * accounting, a DataView) cost 2-3 us, the largest single item of an embedded store transaction
 * (src/fuse/README.md, "A rename's and an unlink's transaction"). A frame handed out is never
 * written again (later frames go after it, then into a new buffer), so whoever keeps one (a log
 * write in flight, a compaction's capture) keeps its bytes; it also keeps the arena's buffer
 * alive, which is why the buffer is small.
 */
export class ByteArena {
  bytes: Uint8Array;
  view: DataView;
  at = 0;
  readonly #size: number;

  constructor(size = 64 * 1024) {
    this.#size = size;
    this.bytes = new Uint8Array(size);
    this.view = new DataView(this.bytes.buffer);
  }

  /** @internal A writer starts at `at`: at least `need` bytes from there, in a new buffer if
   * this one has less left. */
  reserve(need: number): void {
    if (this.bytes.length - this.at >= need) return;
    this.bytes = new Uint8Array(Math.max(this.#size, need));
    this.view = new DataView(this.bytes.buffer);
    this.at = 0;
  }
}

export class ByteWriter {
  #bytes: Uint8Array;
  #view: DataView;
  /** Where the frame starts in #bytes (0 unless it is in an arena). */
  #start = 0;
  #at: number;
  /** The arena the frame is in, until it outgrows the room there (then a buffer of its own). */
  #arena: ByteArena | undefined;

  constructor(capacity = 256, arena?: ByteArena) {
    capacity = Math.max(capacity, 64);
    if (arena !== undefined) {
      arena.reserve(capacity);
      this.#arena = arena;
      this.#bytes = arena.bytes;
      this.#view = arena.view;
      this.#start = arena.at;
    } else {
      this.#bytes = new Uint8Array(capacity);
      this.#view = new DataView(this.#bytes.buffer);
    }
    this.#at = this.#start + FRAME_HEADER_BYTES;
  }

  /** Payload bytes written so far. */
  get length(): number {
    return this.#at - this.#start - FRAME_HEADER_BYTES;
  }

  #room(n: number): void {
    if (this.#at + n <= this.#bytes.length) return;
    const used = this.#at - this.#start;
    const capacity = this.#arena === undefined ? this.#bytes.length : used;
    const bigger = new Uint8Array(Math.max(capacity * 2, used + n, 64));
    bigger.set(this.#bytes.subarray(this.#start, this.#at));
    this.#bytes = bigger;
    this.#view = new DataView(bigger.buffer);
    this.#start = 0;
    this.#at = used;
    this.#arena = undefined;
  }

  u8(value: number): void {
    this.#room(1);
    this.#bytes[this.#at++] = value;
  }

  u32(value: number): void {
    this.#room(4);
    this.#view.setUint32(this.#at, value);
    this.#at += 4;
  }

  f64(value: number): void {
    this.#room(8);
    this.#view.setFloat64(this.#at, value);
    this.#at += 8;
  }

  bytes(value: Uint8Array): void {
    this.#room(4 + value.length);
    this.#view.setUint32(this.#at, value.length);
    this.#bytes.set(value, this.#at + 4);
    this.#at += 4 + value.length;
  }

  /** Overwrite a u32 written earlier at payload offset `at`. */
  setU32At(at: number, value: number): void {
    this.#view.setUint32(this.#start + FRAME_HEADER_BYTES + at, value);
  }

  /** Overwrite an f64 written earlier at payload offset `at`. */
  setF64At(at: number, value: number): void {
    this.#view.setFloat64(this.#start + FRAME_HEADER_BYTES + at, value);
  }

  /** The frame (header filled in) holding what was written; the writer must not be reused. In an
   * arena, the arena's next frame starts after it (8-byte aligned). */
  frame(): Uint8Array {
    const frame = sealFrame(this.#bytes.subarray(this.#start, this.#at));
    if (this.#arena !== undefined && this.#arena.bytes === this.#bytes) {
      this.#arena.at = Math.min((this.#at + 7) & ~7, this.#bytes.length);
    }
    this.#arena = undefined;
    return frame;
  }
}

export class ByteReader {
  readonly #bytes: Uint8Array;
  readonly #view: DataView;
  #at = 0;

  constructor(bytes: Uint8Array) {
    this.#bytes = bytes;
    this.#view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  get done(): boolean {
    return this.#at >= this.#bytes.length;
  }

  #need(n: number): void {
    if (this.#at + n > this.#bytes.length) {
      throw new RangeError(`record ends at byte ${this.#bytes.length}, needed ${this.#at + n}`);
    }
  }

  u8(): number {
    this.#need(1);
    return this.#bytes[this.#at++];
  }

  u32(): number {
    this.#need(4);
    const value = this.#view.getUint32(this.#at);
    this.#at += 4;
    return value;
  }

  f64(): number {
    this.#need(8);
    const value = this.#view.getFloat64(this.#at);
    this.#at += 8;
    return value;
  }

  /** Byte string as a view into the record (valid while the record's buffer is). */
  view(): Uint8Array {
    const length = this.u32();
    this.#need(length);
    const value = this.#bytes.subarray(this.#at, this.#at + length);
    this.#at += length;
    return value;
  }

  /** A copy: the record's buffer is not kept alive by what it decodes to. */
  bytes(): Uint8Array {
    const length = this.u32();
    this.#need(length);
    const value = this.#bytes.slice(this.#at, this.#at + length);
    this.#at += length;
    return value;
  }
}
