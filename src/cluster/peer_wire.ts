/**
 * The peer protocol's frames, as a pure codec (no sockets): a 16-byte header, then the payload.
 * header: magic "SKYP" (u32 BE), version u8, type u8, reserved u16, request id u32, length u32.
 * A frame with another magic, an unknown version or type, or a payload over MAX_PAYLOAD_BYTES is
 * malformed: the reader reports it and the connection is closed (nothing else is affected).
 * Version 2 adds one request, GET_RANGE; every other frame is still sent as version 1, so a
 * version-1 node answers them, and refuses (closes on) a GET_RANGE, after which the requester
 * reads the chunk another way.
 * @module
 */

export const MAGIC = 0x534b5950; // "SKYP"
export const PROTOCOL_VERSION = 1;
/** The version GET_RANGE frames carry (and the highest this build reads). */
export const RANGE_PROTOCOL_VERSION = 2;
export const HEADER_BYTES = 16;
/** A 4 MiB chunk plus room for a message. */
export const MAX_PAYLOAD_BYTES = (4 << 20) + 4096;

export const FrameType = {
  /** Request: ino u64, index u32, length u32, crc u32, objectLength u32, version (utf8). */
  GET_CHUNK: 1,
  /** Reply: the chunk's file bytes. */
  CHUNK: 2,
  /** Reply: utf8 message. */
  ERROR: 3,
  /**
   * Request (version 2): part of a chunk. GET_CHUNK's fields, then offset u32 and range length
   * u32 before the version (utf8); answered with a CHUNK frame of exactly those bytes.
   */
  GET_RANGE: 4,
} as const;

export interface Frame {
  type: number;
  requestId: number;
  payload: Uint8Array;
}

export interface GetChunk {
  ino: number;
  index: number;
  version: string;
  length: number;
  crc: number;
  objectLength: number;
}

/** GET_RANGE: bytes [offset, offset + rangeLength) of the chunk GET_CHUNK would name. */
export interface GetRange extends GetChunk {
  offset: number;
  rangeLength: number;
}

export class MalformedFrameError extends Error {
  override name = "MalformedFrameError";
}

export function encodeFrame(type: number, requestId: number, payload: Uint8Array): Uint8Array {
  const out = new Uint8Array(HEADER_BYTES + payload.length);
  writeHeader(out, type, requestId, payload.length);
  out.set(payload, HEADER_BYTES);
  return out;
}

/** A header alone, for a payload sent after it in pieces. */
export function encodeHeader(type: number, requestId: number, length: number): Uint8Array {
  const out = new Uint8Array(HEADER_BYTES);
  writeHeader(out, type, requestId, length);
  return out;
}

function writeHeader(out: Uint8Array, type: number, requestId: number, length: number): void {
  const view = new DataView(out.buffer, out.byteOffset, HEADER_BYTES);
  view.setUint32(0, MAGIC);
  view.setUint8(4, type === FrameType.GET_RANGE ? RANGE_PROTOCOL_VERSION : PROTOCOL_VERSION);
  view.setUint8(5, type);
  view.setUint16(6, 0);
  view.setUint32(8, requestId);
  view.setUint32(12, length);
}

/**
 * The frame holding `payload`: the header is written in place when the payload's buffer has
 * room before it (src/cache/buffer_pool.ts leaves some), so 4 MiB is not copied; else copied.
 */
export function frameAround(type: number, requestId: number, payload: Uint8Array): Uint8Array {
  if (payload.byteOffset < HEADER_BYTES) return encodeFrame(type, requestId, payload);
  const out = new Uint8Array(
    payload.buffer,
    payload.byteOffset - HEADER_BYTES,
    HEADER_BYTES + payload.length,
  );
  writeHeader(out, type, requestId, payload.length);
  return out;
}

export interface FrameHeader {
  type: number;
  requestId: number;
  length: number;
}

/** Decode and check a 16-byte header; throws MalformedFrameError (before any payload is read). */
export function parseHeader(bytes: Uint8Array): FrameHeader {
  const view = new DataView(bytes.buffer, bytes.byteOffset, HEADER_BYTES);
  const magic = view.getUint32(0);
  const version = view.getUint8(4);
  const type = view.getUint8(5);
  const length = view.getUint32(12);
  if (magic !== MAGIC) {
    throw new MalformedFrameError(`bad magic 0x${magic.toString(16)}`);
  }
  if (version !== PROTOCOL_VERSION && version !== RANGE_PROTOCOL_VERSION) {
    throw new MalformedFrameError(`protocol version ${version}, this build speaks 1 and 2`);
  }
  if (
    type < FrameType.GET_CHUNK || type > (version === 1 ? FrameType.ERROR : FrameType.GET_RANGE)
  ) {
    throw new MalformedFrameError(`unknown frame type ${type} (version ${version})`);
  }
  if (length > MAX_PAYLOAD_BYTES) {
    throw new MalformedFrameError(`payload of ${length} bytes over ${MAX_PAYLOAD_BYTES}`);
  }
  return { type, requestId: view.getUint32(8), length };
}

/**
 * Splits a byte stream into frames. `push` bytes as they arrive; it returns whole frames and
 * throws MalformedFrameError as soon as a header is wrong (before buffering its payload).
 * Used for the small request frames; TcpTransport reads big replies straight into their
 * payload buffer instead.
 */
export class FrameReader {
  // Bytes arrive in pieces of ~64 KiB; a growable buffer copies each byte in once (joining on
  // every push was quadratic in the frame size: 4 MiB frames crawled).
  #buffer = new Uint8Array(1 << 16);
  #length = 0;

  push(bytes: Uint8Array): Frame[] {
    if (this.#length + bytes.length > this.#buffer.length) {
      let capacity = this.#buffer.length;
      while (capacity < this.#length + bytes.length) capacity *= 2;
      const grown = new Uint8Array(capacity);
      grown.set(this.#buffer.subarray(0, this.#length));
      this.#buffer = grown;
    }
    this.#buffer.set(bytes, this.#length);
    this.#length += bytes.length;
    const joined = this.#buffer;
    const frames: Frame[] = [];
    let at = 0;
    while (this.#length - at >= HEADER_BYTES) {
      const header = parseHeader(joined.subarray(at, at + HEADER_BYTES));
      if (this.#length - at < HEADER_BYTES + header.length) break;
      frames.push({
        type: header.type,
        requestId: header.requestId,
        payload: joined.slice(at + HEADER_BYTES, at + HEADER_BYTES + header.length),
      });
      at += HEADER_BYTES + header.length;
    }
    if (at > 0) {
      joined.copyWithin(0, at, this.#length);
      this.#length -= at;
    }
    return frames;
  }
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export function encodeGetChunk(request: GetChunk): Uint8Array {
  const version = encoder.encode(request.version);
  const out = new Uint8Array(24 + version.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, Math.floor(request.ino / 2 ** 32));
  view.setUint32(4, request.ino >>> 0);
  view.setUint32(8, request.index);
  view.setUint32(12, request.length);
  view.setUint32(16, request.crc);
  view.setUint32(20, request.objectLength);
  out.set(version, 24);
  return out;
}

export function encodeGetRange(request: GetRange): Uint8Array {
  const chunk = encodeGetChunk(request);
  const out = new Uint8Array(chunk.length + 8);
  out.set(chunk.subarray(0, 24));
  const view = new DataView(out.buffer);
  view.setUint32(24, request.offset);
  view.setUint32(28, request.rangeLength);
  out.set(chunk.subarray(24), 32);
  return out;
}

/** A GET_RANGE payload; the range must lie inside the chunk's length. */
export function decodeGetRange(payload: Uint8Array): GetRange {
  if (payload.length < 33) {
    throw new MalformedFrameError(`GET_RANGE payload of ${payload.length} bytes`);
  }
  const view = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  const offset = view.getUint32(24);
  const rangeLength = view.getUint32(28);
  const chunk = new Uint8Array(payload.length - 8);
  chunk.set(payload.subarray(0, 24));
  chunk.set(payload.subarray(32), 24);
  const request = decodeGetChunk(chunk, "GET_RANGE");
  if (offset + rangeLength > request.length) {
    throw new MalformedFrameError(
      `GET_RANGE [${offset}, ${offset + rangeLength}) outside a chunk of ${request.length} bytes`,
    );
  }
  return { ...request, offset, rangeLength };
}

export function decodeGetChunk(payload: Uint8Array, what = "GET_CHUNK"): GetChunk {
  if (payload.length < 25 || payload.length > 24 + 128) {
    throw new MalformedFrameError(`${what} payload of ${payload.length} bytes`);
  }
  const view = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  const version = decoder.decode(payload.subarray(24));
  if (!/^[0-9a-z-]+$/.test(version)) {
    throw new MalformedFrameError(`${what} version ${JSON.stringify(version)}`);
  }
  return {
    ino: view.getUint32(0) * 2 ** 32 + view.getUint32(4),
    index: view.getUint32(8),
    length: view.getUint32(12),
    crc: view.getUint32(16),
    objectLength: view.getUint32(20),
    version,
  };
}

export const encodeText = (text: string) => encoder.encode(text);
export const decodeText = (bytes: Uint8Array) => decoder.decode(bytes);
