/**
 * Reused chunk-sized buffers for the fill and peer paths. A fresh 4 MiB ArrayBuffer is zeroed,
 * faults its pages in on first use and is collected later: in the peer benchmark that was about
 * a fifth of the time (allocation, page faults inside pread/recv, garbage collection).
 *
 * Rule: recycle a buffer only when nothing else holds it any more; a buffer recycled twice, or
 * while still being sent, would be handed to two users at once. Buffers of any other size are
 * ignored by `recycleBuffer`, so recycling a foreign buffer is harmless.
 * @module
 */

import { CHUNK_SIZE } from "./chunk_map.ts";

/** Room before the data for a frame header (the peer protocol's is 16 bytes). */
export const MAX_HEADROOM_BYTES = 64;
/** A pooled buffer's data starts at a multiple of this in memory (O_DIRECT writes need it). */
export const DIRECT_ALIGN_BYTES = 4096;
const POOLED_BYTES = CHUNK_SIZE + 2 * DIRECT_ALIGN_BYTES;
/** 16 x 4 MiB kept at most: readahead (8) plus chunks being served. */
const POOL_LIMIT = 16;

const free: ArrayBuffer[] = [];
/** Where each pooled buffer's data starts: aligned, with the headroom before it. */
const dataStart = new WeakMap<ArrayBuffer, number>();

function newPooled(): ArrayBuffer {
  const buffer = new ArrayBuffer(POOLED_BYTES);
  const address = addressOf(new Uint8Array(buffer));
  let start = (DIRECT_ALIGN_BYTES - address % DIRECT_ALIGN_BYTES) % DIRECT_ALIGN_BYTES;
  if (start < MAX_HEADROOM_BYTES) start += DIRECT_ALIGN_BYTES;
  dataStart.set(buffer, start);
  return buffer;
}

/** The memory address of `bytes` (low bits only matter here). */
export function addressOf(bytes: Uint8Array): number {
  return Number(BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(bytes))) % 2n ** 32n);
}

/**
 * `length` bytes (not zeroed when reused) with at least MAX_HEADROOM_BYTES before them in the
 * same buffer, so a frame header can be written in front without copying the data. A chunk-sized
 * one starts at a DIRECT_ALIGN_BYTES boundary, with room after it up to CHUNK_SIZE.
 */
export function takeBuffer(length: number): Uint8Array {
  if (length > CHUNK_SIZE) {
    return new Uint8Array(MAX_HEADROOM_BYTES + length).subarray(MAX_HEADROOM_BYTES);
  }
  const buffer = free.pop() ?? newPooled();
  return new Uint8Array(buffer, dataStart.get(buffer)!, length);
}

/** Hand a buffer from takeBuffer back once nothing uses it (see the rule above). */
export function recycleBuffer(bytes: Uint8Array): void {
  const buffer = bytes.buffer;
  if (!(buffer instanceof ArrayBuffer) || buffer.byteLength !== POOLED_BYTES) return;
  if (free.length < POOL_LIMIT && !free.includes(buffer)) free.push(buffer);
}
