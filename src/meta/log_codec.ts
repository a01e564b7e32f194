/**
 * Binary writer and reader for the payloads of log frames (log_file.ts): big-endian u8/u32,
 * numbers as f64 (revisions, ids and lengths stay exact up to 2^53), byte strings as u32 length
 * plus bytes. The writer leaves room for the frame header so a record becomes a frame in place.
 * @module
 */

import { FRAME_HEADER_BYTES, sealFrame } from "./log_file.ts";

export class ByteWriter {
  #bytes: Uint8Array;
  #view: DataView;
  #at = FRAME_HEADER_BYTES;

  constructor(capacity = 256) {
    this.#bytes = new Uint8Array(Math.max(capacity, 64));
    this.#view = new DataView(this.#bytes.buffer);
  }

  /** Payload bytes written so far. */
  get length(): number {
    return this.#at - FRAME_HEADER_BYTES;
  }

  #room(n: number): void {
    if (this.#at + n <= this.#bytes.length) return;
    const bigger = new Uint8Array(Math.max(this.#bytes.length * 2, this.#at + n));
    bigger.set(this.#bytes.subarray(0, this.#at));
    this.#bytes = bigger;
    this.#view = new DataView(bigger.buffer);
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
    this.#view.setUint32(FRAME_HEADER_BYTES + at, value);
  }

  /** Overwrite an f64 written earlier at payload offset `at`. */
  setF64At(at: number, value: number): void {
    this.#view.setFloat64(FRAME_HEADER_BYTES + at, value);
  }

  /** The frame (header filled in) holding what was written; the writer must not be reused. */
  frame(): Uint8Array {
    return sealFrame(this.#bytes.subarray(0, this.#at));
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
