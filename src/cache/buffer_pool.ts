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
const POOLED_BYTES = MAX_HEADROOM_BYTES + CHUNK_SIZE;
/** 16 x 4 MiB kept at most: readahead (8) plus chunks being served. */
const POOL_LIMIT = 16;

const free: ArrayBuffer[] = [];

/**
 * `length` bytes (not zeroed when reused) with at least MAX_HEADROOM_BYTES before them in the
 * same buffer, so a frame header can be written in front without copying the data.
 */
export function takeBuffer(length: number): Uint8Array {
  if (length > CHUNK_SIZE) {
    return new Uint8Array(MAX_HEADROOM_BYTES + length).subarray(MAX_HEADROOM_BYTES);
  }
  const buffer = free.pop() ?? new ArrayBuffer(POOLED_BYTES);
  return new Uint8Array(buffer, MAX_HEADROOM_BYTES, length);
}

/** Hand a buffer from takeBuffer back once nothing uses it (see the rule above). */
export function recycleBuffer(bytes: Uint8Array): void {
  const buffer = bytes.buffer;
  if (!(buffer instanceof ArrayBuffer) || buffer.byteLength !== POOLED_BYTES) return;
  if (free.length < POOL_LIMIT && !free.includes(buffer)) free.push(buffer);
}
