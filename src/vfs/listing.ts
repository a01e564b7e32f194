/**
 * A directory's listing as one buffer: the snapshot a directory handle takes at its first
 * readdir from offset 0. Each entry is a record in the layout of Linux's `struct fuse_dirent`
 * (ino u64, off u64, namelen u32, type u32, the name, zero padding to 8 bytes; little-endian),
 * so the FUSE adapter answers READDIR with one copy of a run of records and READDIRPLUS puts an
 * entry_out in front of each. Entry i (0 and 1 are "." and "..") carries off i + 1: the offset
 * the kernel passes back to continue after it.
 * @module
 */

import type { DirEntry } from "./types.ts";

/** Bytes of the fixed part of a record (`FUSE_NAME_OFFSET`). */
export const DIRENT_HEADER = 24;

/** Bytes of a record with a name of `nameLength` bytes. */
export function recordSize(nameLength: number): number {
  return (DIRENT_HEADER + nameLength + 7) & ~7;
}

export class DirListing {
  /** The records, back to back. */
  readonly bytes: Uint8Array;
  /** Where entry i's record starts; `starts[count]` is the end of the last. */
  readonly starts: Uint32Array;
  readonly count: number;
  readonly #view: DataView;

  constructor(bytes: Uint8Array, starts: Uint32Array, count: number) {
    this.bytes = bytes;
    this.starts = starts;
    this.count = count;
    this.#view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  ino(i: number): number {
    const at = this.starts[i];
    return this.#view.getUint32(at, true) + this.#view.getUint32(at + 4, true) * 2 ** 32;
  }

  /** The entry's S_IFMT bits. */
  type(i: number): number {
    return this.#view.getUint32(this.starts[i] + 20, true) << 12;
  }

  /** A view of the entry's name (not a copy). */
  name(i: number): Uint8Array {
    const at = this.starts[i];
    return this.bytes.subarray(
      at + DIRENT_HEADER,
      at + DIRENT_HEADER + this.#view.getUint32(at + 16, true),
    );
  }

  /** The first entry index at or after `offset` (the kernel's position). */
  first(offset: number): number {
    return Math.min(Math.max(0, offset), this.count);
  }

  /** The end of the longest run of entries from `from` whose records fit in `size` bytes. */
  fit(from: number, size: number): number {
    const limit = this.starts[from] + size;
    let low = from;
    let high = this.count;
    while (low < high) {
      const mid = (low + high + 1) >>> 1;
      if (this.starts[mid] <= limit) low = mid;
      else high = mid - 1;
    }
    return low;
  }

  /** Entries [from, to) as objects (callers outside FUSE, tests). */
  entries(from: number, to: number): DirEntry[] {
    const out: DirEntry[] = [];
    for (let i = from; i < to; i++) {
      out.push({ ino: this.ino(i), name: this.name(i), type: this.type(i), nextOffset: i + 1 });
    }
    return out;
  }
}

/**
 * Builds a listing entry by entry into a scratch buffer that doubles when full and is kept for
 * the next listing; `finish` copies the result out at its exact size. Fresh buffers per listing
 * (and their doubling) cost more than the rest of a listing of 5,000 names: each large
 * ArrayBuffer is zeroed and counted against the GC's external memory.
 */
export class DirListingBuilder {
  #bytes: Uint8Array;
  #view: DataView;
  #starts: Uint32Array;
  #count = 0;
  #at = 0;
  /** Whether this builder holds the shared scratch (another build may be waiting on a page of a
   * remote store's range read in between: it gets buffers of its own). */
  #shared: boolean;

  constructor() {
    this.#shared = !scratch.busy;
    if (this.#shared) {
      scratch.busy = true;
      this.#bytes = scratch.bytes;
      this.#starts = scratch.starts;
    } else {
      this.#bytes = new Uint8Array(4096);
      this.#starts = new Uint32Array(64);
    }
    this.#view = new DataView(this.#bytes.buffer);
  }

  /** Add an entry; its name is `source[nameAt, nameEnd)`; `type` the S_IFMT bits. */
  add(ino: number, type: number, source: Uint8Array, nameAt: number, nameEnd: number): void {
    const nameLength = nameEnd - nameAt;
    const size = recordSize(nameLength);
    if (this.#at + size > this.#bytes.length) this.#grow(this.#at + size);
    if (this.#count + 2 > this.#starts.length) {
      const starts = new Uint32Array(this.#starts.length * 2);
      starts.set(this.#starts);
      this.#starts = starts;
    }
    const at = this.#at;
    const view = this.#view;
    view.setUint32(at, ino >>> 0, true);
    view.setUint32(at + 4, Math.floor(ino / 2 ** 32), true);
    view.setUint32(at + 8, this.#count + 1, true);
    view.setUint32(at + 12, 0, true);
    view.setUint32(at + 16, nameLength, true);
    view.setUint32(at + 20, (type >>> 12) & 0xf, true);
    const bytes = this.#bytes;
    // Short names byte by byte: a subarray per entry for set() costs more than the copy.
    if (nameLength <= 32) {
      for (let k = 0; k < nameLength; k++) bytes[at + DIRENT_HEADER + k] = source[nameAt + k];
    } else {
      bytes.set(source.subarray(nameAt, nameEnd), at + DIRENT_HEADER);
    }
    // The padding (the scratch holds an earlier listing's bytes).
    for (let k = at + DIRENT_HEADER + nameLength; k < at + size; k++) bytes[k] = 0;
    this.#starts[this.#count] = at;
    this.#count++;
    this.#at = at + size;
  }

  /** The listing, copied out of the scratch; the builder must not be used after. */
  finish(): DirListing {
    this.#starts[this.#count] = this.#at;
    const listing = new DirListing(
      this.#bytes.slice(0, this.#at),
      this.#starts.slice(0, this.#count + 1),
      this.#count,
    );
    if (this.#shared) {
      // Kept for the next listing up to a bound: one huge directory must not pin its size.
      if (this.#bytes.length <= SCRATCH_KEEP_BYTES) scratch.bytes = this.#bytes;
      if (this.#starts.byteLength <= SCRATCH_KEEP_BYTES) scratch.starts = this.#starts;
      scratch.busy = false;
      this.#shared = false;
    }
    return listing;
  }

  /** Give the scratch back without a listing (the scan failed); nothing if `finish` ran. */
  abandon(): void {
    if (!this.#shared) return;
    scratch.busy = false;
    this.#shared = false;
  }

  #grow(need: number): void {
    let length = this.#bytes.length * 2;
    while (length < need) length *= 2;
    const bytes = new Uint8Array(length);
    bytes.set(this.#bytes.subarray(0, this.#at));
    this.#bytes = bytes;
    this.#view = new DataView(bytes.buffer);
  }
}

/** The largest scratch buffer kept between listings (about 30,000 short names). */
const SCRATCH_KEEP_BYTES = 1 << 20;

const scratch: { bytes: Uint8Array; starts: Uint32Array; busy: boolean } = {
  bytes: new Uint8Array(4096),
  starts: new Uint32Array(64),
  busy: false,
};
