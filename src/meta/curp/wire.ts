/**
 * The CURP wire format over TCP: length-prefixed, versioned MessagePack frames, and a connection
 * wrapper that reads frames in a loop and queues writes so a slow peer cannot grow memory without
 * bound.
 *
 * Frame: u32 big-endian length of what follows, u8 version (2), then one MessagePack value (npm
 * msgpackr: byte strings travel as msgpack bin, objects as maps, undefined fields are left out as
 * JSON did). A frame that is oversized, of another version or not one whole MessagePack value
 * closes its connection with a log line; the process keeps serving everyone else.
 *
 * Version 1 (JSON with byte strings as {"$b": base64}) is refused on the network, but
 * `decodePayload` still reads it: log.bin and snapshot.bin written by earlier builds hold version 1
 * frames, and a log may hold both (storage.ts appends version 2 frames after old ones).
 * @module
 */

import { Buffer } from "node:buffer";
import { crc32 } from "node:zlib";
import { Packr, Unpackr } from "msgpackr";

export const WIRE_VERSION = 2;
/** The JSON frames of earlier builds: read from disk, refused on the network. */
export const JSON_VERSION = 1;
/** Frames of log.bin (storage.ts): version 2 with a CRC-32 of the MessagePack bytes after the
 * version byte, so a frame torn or zeroed by a crash (a mapped log's tail, a power loss) is told
 * from a whole one. Never sent on the network. */
export const CHECKED_VERSION = 3;
/**
 * Largest frame accepted or sent. Snapshots travel in pieces of about 1 MiB (snapshot_pieces.ts),
 * so no store size reaches it; an append of 64 entries with large values, or one snapshot item
 * larger than a piece (a huge value), are the biggest frames now.
 */
export const MAX_FRAME_BYTES = 256 * 1024 * 1024;
/** Bytes queued for one connection before it is declared stuck and closed. */
const MAX_QUEUED_BYTES = 64 * 1024 * 1024;

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

/** Plain maps, no msgpackr records (a msgpackr extension): any MessagePack reader can decode a
 * frame. Undefined fields are skipped, as JSON.stringify did, so `"field" in x` keeps meaning the
 * same after a round trip. */
const packr = new Packr(
  { useRecords: false, skipValues: [undefined] } as ConstructorParameters<
    typeof Packr
  >[0],
);
/** copyBuffers: every decoded byte string is its own copy, not a view that keeps a whole frame
 * (up to an append of 64 entries or a 1 MiB snapshot piece) alive in the state machine. */
const unpackr = new Unpackr({
  useRecords: false,
  mapsAsObjects: true,
  copyBuffers: true,
  int64AsType: "number",
});

/** The same decoding without the copies: byte strings are views into the frame's payload (its
 * own buffer, one per frame: `FrameReader`). A replica decodes with it (`readLoop` option
 * `views`): every key and value its state machine keeps is copied there (kv_machine.ts `put`), so
 * a view keeps alive only the frame of a witness record or log entry that holds it anyway, and
 * a proposal costs no heap buffer per byte string. */
const viewUnpackr = new Unpackr({
  useRecords: false,
  mapsAsObjects: true,
  copyBuffers: false,
  int64AsType: "number",
});

function replacer(_key: string, value: unknown): unknown {
  if (value instanceof Uint8Array) {
    return { $b: Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString("base64") };
  }
  return value;
}

function reviver(_key: string, value: unknown): unknown {
  if (value !== null && typeof value === "object" && "$b" in value) {
    const b = (value as { $b: unknown }).$b;
    if (typeof b === "string" && Object.keys(value).length === 1) {
      return new Uint8Array(Buffer.from(b, "base64"));
    }
  }
  return value;
}

/** JSON with byte strings as {"$b": base64}, the payload encoding of version 1 frames. */
export function encodeJson(body: unknown): string {
  return JSON.stringify(body, replacer);
}

/** A version 1 frame (JSON), as earlier builds wrote them: for tests of old data directories. */
export function encodeJsonFrame(body: unknown): Uint8Array {
  const json = encoder.encode(encodeJson(body));
  const frame = new Uint8Array(5 + json.length);
  new DataView(frame.buffer).setUint32(0, json.length + 1);
  frame[4] = JSON_VERSION;
  frame.set(json, 5);
  return frame;
}

/** One MessagePack value as a frame: header, version, payload. No size limit (storage writes
 * records larger than a network frame may be); `encodeFrame` applies the limit. */
export function encodeUnboundedFrame(body: unknown): Uint8Array {
  const packed = packr.pack(body);
  const frame = new Uint8Array(5 + packed.length);
  new DataView(frame.buffer).setUint32(0, packed.length + 1);
  frame[4] = WIRE_VERSION;
  frame.set(packed, 5);
  return frame;
}

/** A version 3 frame (`CHECKED_VERSION`): u32 length of what follows, u8 version 3, u32 CRC-32
 * of the MessagePack bytes, then those bytes. No size limit, as `encodeUnboundedFrame`. */
export function encodeCheckedFrame(body: unknown): Uint8Array {
  // The replica's log frames (entries, witness records) hold commands it received as bytes:
  // `packReusing` copies those instead of encoding the command again.
  const frame = packReusing(body, 9);
  const view = new DataView(frame.buffer);
  view.setUint32(0, frame.length - 4);
  frame[4] = CHECKED_VERSION;
  view.setUint32(5, crc32(frame.subarray(9)));
  return frame;
}

/** A version 2 frame as `encodeFrame`, with the bytes of received objects copied as they came
 * (`packReusing`): a leader's append re-sends the commands clients proposed to it. */
export function encodeFrameReusing(body: unknown): Uint8Array {
  const frame = packReusing(body, 5);
  if (frame.length - 4 > MAX_FRAME_BYTES) {
    throw new RangeError(`Frame of ${frame.length - 4} bytes exceeds ${MAX_FRAME_BYTES}`);
  }
  new DataView(frame.buffer).setUint32(0, frame.length - 4);
  frame[4] = WIRE_VERSION;
  return frame;
}

// ---------------------------------------------------------------- received bytes, reused

/**
 * The MessagePack bytes a decoded object was read from, for the objects a replica writes again:
 * the command of a `propose`, and of each entry of an `append` (`notePacked`). A command is
 * encoded again into the witness record, the log entry and (on the leader) the append to each
 * follower; these copy its bytes instead (`packReusing`). Views into the frame's own buffer,
 * which the decoded command's byte strings view anyway. Nothing may modify a command after it
 * is decoded (nothing does: records and entries hold it as received).
 */
const packedBytes = new WeakMap<object, Uint8Array>();

/** The bytes `value` was decoded from, when known. */
export function packedBytesOf(value: object): Uint8Array | undefined {
  return packedBytes.get(value);
}

function u16(b: Uint8Array, at: number): number {
  return (b[at] << 8) | b[at + 1];
}

function u32(b: Uint8Array, at: number): number {
  return ((b[at] << 24) >>> 0) + ((b[at + 1] << 16) | (b[at + 2] << 8) | b[at + 3]);
}

/** The offset just past the MessagePack value at `at` (throws a RangeError past the end or on
 * the unused byte 0xc1). */
export function skipPacked(b: Uint8Array, at: number): number {
  const t = b[at];
  let n = 0; // items (array) or keys and values (map) that follow a container header
  if (t === undefined) throw new RangeError("MessagePack value cut short");
  if (t <= 0x7f || t >= 0xe0) return at + 1;
  if (t <= 0x8f) {
    n = (t & 0x0f) * 2;
    at += 1;
  } else if (t <= 0x9f) {
    n = t & 0x0f;
    at += 1;
  } else if (t <= 0xbf) return at + 1 + (t & 0x1f);
  else {
    switch (t) {
      case 0xc0:
      case 0xc2:
      case 0xc3:
        return at + 1;
      case 0xc4:
      case 0xd9:
        return at + 2 + b[at + 1];
      case 0xc5:
      case 0xda:
        return at + 3 + u16(b, at + 1);
      case 0xc6:
      case 0xdb:
        return at + 5 + u32(b, at + 1);
      case 0xc7:
        return at + 3 + b[at + 1];
      case 0xc8:
        return at + 4 + u16(b, at + 1);
      case 0xc9:
        return at + 6 + u32(b, at + 1);
      case 0xcc:
      case 0xd0:
        return at + 2;
      case 0xcd:
      case 0xd1:
      case 0xd4:
        return at + 3;
      case 0xd5:
        return at + 4;
      case 0xca:
      case 0xce:
      case 0xd2:
        return at + 5;
      case 0xd6:
        return at + 6;
      case 0xcb:
      case 0xcf:
      case 0xd3:
        return at + 9;
      case 0xd7:
        return at + 10;
      case 0xd8:
        return at + 18;
      case 0xdc:
        n = u16(b, at + 1);
        at += 3;
        break;
      case 0xdd:
        n = u32(b, at + 1);
        at += 5;
        break;
      case 0xde:
        n = u16(b, at + 1) * 2;
        at += 3;
        break;
      case 0xdf:
        n = u32(b, at + 1) * 2;
        at += 5;
        break;
      default:
        throw new RangeError(`MessagePack byte 0x${t.toString(16)}`);
    }
  }
  for (let i = 0; i < n; i++) at = skipPacked(b, at);
  if (at > b.length) throw new RangeError("MessagePack value cut short");
  return at;
}

/** Whether the MessagePack value at [at, end) is a string of the ASCII `name`. */
function isPackedName(b: Uint8Array, at: number, end: number, name: string): boolean {
  const t = b[at];
  const start = t >= 0xa0 && t <= 0xbf ? at + 1 : t === 0xd9 ? at + 2 : t === 0xda ? at + 3 : -1;
  if (start < 0 || end - start !== name.length) return false;
  for (let i = 0; i < name.length; i++) if (b[start + i] !== name.charCodeAt(i)) return false;
  return true;
}

/** [start, end) of the value of key `name` in the map at `at`, the last one when the key repeats
 * (as the decoder keeps it), or undefined (no such key, not a map, or the map does not end at
 * `end`: the skip went astray, and no bytes are better than wrong ones). */
function packedField(
  b: Uint8Array,
  at: number,
  name: string,
  end: number,
): [number, number] | undefined {
  const t = b[at];
  let n: number;
  if (t >= 0x80 && t <= 0x8f) {
    n = t & 0x0f;
    at += 1;
  } else if (t === 0xde) {
    n = u16(b, at + 1);
    at += 3;
  } else if (t === 0xdf) {
    n = u32(b, at + 1);
    at += 5;
  } else return undefined;
  let found: [number, number] | undefined;
  for (let i = 0; i < n; i++) {
    const key = at;
    at = skipPacked(b, at);
    const value = at;
    at = skipPacked(b, at);
    if (isPackedName(b, key, value, name)) found = [value, at];
  }
  return at === end ? found : undefined;
}

/** Remember the bytes of the commands in a decoded `propose` or `append` (`packedBytes`);
 * `payload` is the frame's version byte then its MessagePack value, `body` what it decoded to.
 * Anything unexpected leaves the command without bytes: it is then encoded as before. */
export function notePacked(payload: Uint8Array, body: unknown): void {
  try {
    notePackedCommands(payload, body);
  } catch {
    // A value this skipper does not know (msgpackr decoded it): the commands are encoded again.
  }
}

function notePackedCommands(payload: Uint8Array, body: unknown): void {
  const b = body as { type?: unknown; command?: unknown; entries?: unknown };
  if (b.type === "propose") {
    if (b.command === null || typeof b.command !== "object") return;
    const span = packedField(payload, 1, "command", payload.length);
    if (span !== undefined) packedBytes.set(b.command, payload.subarray(span[0], span[1]));
    return;
  }
  if (b.type !== "append" || !Array.isArray(b.entries) || b.entries.length === 0) return;
  const span = packedField(payload, 1, "entries", payload.length);
  if (span === undefined) return;
  let at = span[0];
  const t = payload[at];
  let n: number;
  if (t >= 0x90 && t <= 0x9f) {
    n = t & 0x0f;
    at += 1;
  } else if (t === 0xdc) {
    n = u16(payload, at + 1);
    at += 3;
  } else if (t === 0xdd) {
    n = u32(payload, at + 1);
    at += 5;
  } else return;
  if (n !== b.entries.length) return;
  const found: [object, Uint8Array][] = [];
  for (let i = 0; i < n; i++) {
    const end = skipPacked(payload, at);
    const command = (b.entries[i] as { command?: unknown } | null)?.command;
    if (command !== null && typeof command === "object") {
      const field = packedField(payload, at, "command", end);
      if (field !== undefined) found.push([command, payload.subarray(field[0], field[1])]);
    }
    at = end;
  }
  if (at !== span[1]) return; // the entries do not end where the array does: keep none
  for (const [command, bytes] of found) packedBytes.set(command, bytes);
}

/** Scratch buffer of `packReusing` (one encoding at a time: nothing in it awaits). */
let scratch = new Uint8Array(64 * 1024);
let scratchView = new DataView(scratch.buffer);
let scratchAt = 0;
const SCRATCH_KEPT_BYTES = 1024 * 1024;

function room(n: number): void {
  if (scratchAt + n <= scratch.length) return;
  let size = scratch.length * 2;
  while (size < scratchAt + n) size *= 2;
  const grown = new Uint8Array(size);
  grown.set(scratch.subarray(0, scratchAt));
  scratch = grown;
  scratchView = new DataView(scratch.buffer);
}

function putBytes(bytes: Uint8Array): void {
  room(bytes.length);
  scratch.set(bytes, scratchAt);
  scratchAt += bytes.length;
}

/** A header of a bin, array or map: the short form up to `fix` (-1: none), then 8 (bin only),
 * 16 and 32 bits, as msgpackr writes them. */
function putHeader(n: number, fix: number, fixMax: number, c8: number, c16: number): void {
  room(5);
  if (n < fixMax) scratch[scratchAt++] = fix | n;
  else if (c8 >= 0 && n < 0x100) {
    scratch[scratchAt++] = c8;
    scratch[scratchAt++] = n;
  } else if (n < 0x10000) {
    scratch[scratchAt++] = c16;
    scratchView.setUint16(scratchAt, n);
    scratchAt += 2;
  } else {
    scratch[scratchAt++] = c16 + 1;
    scratchView.setUint32(scratchAt, n);
    scratchAt += 4;
  }
}

function putValue(value: unknown): void {
  if (typeof value === "string") {
    // Short strings (field names, types, ids) from the cache; others encoded, then copied at
    // once (msgpackr's result is a view of its work buffer).
    return putBytes(value.length <= 64 ? packedString(value) : packr.pack(value));
  }
  if (typeof value === "number") {
    room(9);
    if (value >>> 0 === value) {
      if (value < 0x80) scratch[scratchAt++] = value;
      else if (value < 0x100) {
        scratch[scratchAt++] = 0xcc;
        scratch[scratchAt++] = value;
      } else if (value < 0x10000) {
        scratch[scratchAt++] = 0xcd;
        scratchView.setUint16(scratchAt, value);
        scratchAt += 2;
      } else {
        scratch[scratchAt++] = 0xce;
        scratchView.setUint32(scratchAt, value);
        scratchAt += 4;
      }
      return;
    }
    return putBytes(packr.pack(value)); // negative, large or not an integer: as msgpackr does
  }
  if (typeof value === "boolean") {
    room(1);
    scratch[scratchAt++] = value ? 0xc3 : 0xc2;
    return;
  }
  if (value === null || typeof value !== "object") return putBytes(packr.pack(value));
  const packed = packedBytes.get(value);
  if (packed !== undefined) return putBytes(packed);
  if (value instanceof Uint8Array) {
    if (value.constructor !== Uint8Array) return putBytes(packr.pack(value));
    putHeader(value.length, 0, 0, 0xc4, 0xc5);
    return putBytes(value);
  }
  if (Array.isArray(value)) {
    putHeader(value.length, 0x90, 16, -1, 0xdc);
    for (const item of value) putValue(item);
    return;
  }
  const proto = Object.getPrototypeOf(value);
  if (proto !== Object.prototype && proto !== null) return putBytes(packr.pack(value));
  const record = value as Record<string, unknown>;
  let n = 0;
  for (const key in record) if (record[key] !== undefined) n++;
  putHeader(n, 0x80, 16, -1, 0xde);
  for (const key in record) {
    const v = record[key];
    if (v === undefined) continue; // skipped, as the Packr's skipValues
    putBytes(packedString(key));
    putValue(v);
  }
}

/** `body` as MessagePack after `headerBytes` bytes left for the caller's frame header, in a new
 * array: the bytes msgpackr's `pack` writes, except that an object decoded from bytes
 * (`packedBytes`) is those bytes. */
function packReusing(body: unknown, headerBytes: number): Uint8Array {
  scratchAt = headerBytes;
  try {
    putValue(body);
    return scratch.slice(0, scratchAt);
  } finally {
    if (scratch.length > SCRATCH_KEPT_BYTES) {
      scratch = new Uint8Array(64 * 1024);
      scratchView = new DataView(scratch.buffer);
    }
  }
}

/** Whether a version 3 payload (version byte, CRC, MessagePack) is whole: its CRC matches. */
export function checkedPayloadWhole(payload: Uint8Array): boolean {
  if (payload.length < 5 || payload[0] !== CHECKED_VERSION) return false;
  const stored = new DataView(payload.buffer, payload.byteOffset + 1, 4).getUint32(0);
  return crc32(payload.subarray(5)) === stored;
}

export function encodeFrame(body: unknown): Uint8Array {
  const frame = encodeUnboundedFrame(body);
  if (frame.length - 4 > MAX_FRAME_BYTES) {
    throw new RangeError(`Frame of ${frame.length - 4} bytes exceeds ${MAX_FRAME_BYTES}`);
  }
  return frame;
}

/**
 * Frames for messages that differ only in some fields and share one object under `shared` (a
 * client's proposal to every replica: the same command, another `to`): that object is encoded once
 * and its bytes reused. A MessagePack map is its header followed by its keys and values, so the
 * frames are byte for byte what `encodeFrame` makes of each body (wire_test.ts checks it).
 * Bodies whose `shared` field is not the first body's object are encoded whole.
 */
export function encodeFramesSharing(bodies: object[], shared: string): Uint8Array[] {
  const first = (bodies[0] as Record<string, unknown> | undefined)?.[shared];
  if (bodies.length < 2 || first === undefined || first === null || typeof first !== "object") {
    return bodies.map(encodeFrame);
  }
  const sharedBytes = packr.pack(first);
  return bodies.map((body) => {
    if ((body as Record<string, unknown>)[shared] !== first) return encodeFrame(body);
    // The other fields (type, from, to) are short strings that repeat from proposal to
    // proposal: their bytes come from `packedString`'s cache, no encoder call per field.
    const parts: Uint8Array[] = [];
    let length = 1;
    for (const key in body) {
      const value = (body as Record<string, unknown>)[key];
      if (value === undefined) continue;
      const k = packedString(key);
      const v = key === shared
        ? sharedBytes
        : typeof value === "string"
        ? packedString(value)
        : packr.pack(value);
      parts.push(k, v);
      length += k.length + v.length;
    }
    if (parts.length > 30) return encodeFrame(body); // more than a fixmap's 15 entries
    if (length > MAX_FRAME_BYTES - 1) {
      throw new RangeError(`Frame of ${length + 1} bytes exceeds ${MAX_FRAME_BYTES}`);
    }
    const frame = new Uint8Array(5 + length);
    new DataView(frame.buffer).setUint32(0, length + 1);
    frame[4] = WIRE_VERSION;
    frame[5] = 0x80 | (parts.length / 2);
    let at = 6;
    for (const part of parts) {
      frame.set(part, at);
      at += part.length;
    }
    return frame;
  });
}

/** MessagePack bytes of short strings (field names, message types, replica and client ids),
 * kept: the same few recur in every proposal. Bounded; cleared when full. */
const packedStrings = new Map<string, Uint8Array>();
const PACKED_STRINGS_MAX = 1024;

function packedString(s: string): Uint8Array {
  let bytes = packedStrings.get(s);
  if (bytes === undefined) {
    bytes = packr.pack(s).slice(); // a copy: msgpackr's result is a view of its work buffer
    if (s.length > 64) return bytes;
    if (packedStrings.size >= PACKED_STRINGS_MAX) packedStrings.clear();
    packedStrings.set(s, bytes);
  }
  return bytes;
}

/** Decode a version 2 payload (version byte, then MessagePack); throws a TypeError naming the
 * problem. What arrives on a connection goes through this: version 1 is refused. */
export function decodeWirePayload(payload: Uint8Array, views = false): unknown {
  if (payload.length < 1) throw new TypeError("empty frame");
  if (payload[0] !== WIRE_VERSION) {
    throw new TypeError(`frame version ${payload[0]}, this build speaks ${WIRE_VERSION}`);
  }
  return unpackPayload(payload, views);
}

function unpackPayload(payload: Uint8Array, views = false): unknown {
  try {
    return (views ? viewUnpackr : unpackr).unpack(payload.subarray(1));
  } catch (error) {
    const why = (error as Error).message.split("\n")[0].slice(0, 60);
    throw new TypeError(
      `frame is not one MessagePack value (${why}): ${payload.length - 1} bytes starting ${
        hex(payload.subarray(1, 17))
      }`,
    );
  }
}

/** The MessagePack bytes of a map's first key/value pair `type: "snapshot"`, as every sender
 * here builds a snapshot message (`type` first). */
const SNAPSHOT_PREFIX = new Uint8Array([
  0xa4,
  ...new TextEncoder().encode("type"),
  0xa8,
  ...new TextEncoder().encode("snapshot"),
]);

/** Whether a frame's payload is a map whose first entry is `type: "snapshot"`. */
export function startsAsSnapshot(payload: Uint8Array): boolean {
  // version byte, then a fixmap (0x80-0x8f) or map16 (0xde + 2 bytes) header.
  const at = payload[1] >= 0x80 && payload[1] <= 0x8f ? 2 : payload[1] === 0xde ? 4 : -1;
  if (at < 0 || payload.length < at + SNAPSHOT_PREFIX.length) return false;
  for (let i = 0; i < SNAPSHOT_PREFIX.length; i++) {
    if (payload[at + i] !== SNAPSHOT_PREFIX[i]) return false;
  }
  return true;
}

function hex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Decode a stored frame's payload: version 3 (checked MessagePack, its CRC verified), 2
 * (MessagePack) or 1 (JSON, written by earlier builds); throws a TypeError naming the problem. */
export function decodePayload(payload: Uint8Array): unknown {
  if (payload.length < 1) throw new TypeError("empty frame");
  if (payload[0] === WIRE_VERSION) return unpackPayload(payload);
  if (payload[0] === CHECKED_VERSION) {
    if (!checkedPayloadWhole(payload)) throw new TypeError("frame fails its CRC-32");
    return unpackPayload(payload.subarray(4)); // the version byte's place: skipped by unpack
  }
  if (payload[0] !== JSON_VERSION) {
    throw new TypeError(
      `frame version ${payload[0]}, this build reads ${JSON_VERSION}, ${WIRE_VERSION} and ` +
        `${CHECKED_VERSION}`,
    );
  }
  let text: string;
  try {
    text = decoder.decode(payload.subarray(1));
  } catch {
    throw new TypeError("frame is not UTF-8");
  }
  try {
    return JSON.parse(text, reviver);
  } catch {
    throw new TypeError(`frame is not JSON: ${JSON.stringify(text.slice(0, 40))}`);
  }
}

/** Splits a byte stream into frame payloads; `push` throws on an oversized length. Pieces are
 * kept as they arrive and joined once per frame, so a large frame costs one copy, not one per
 * piece. */
export class FrameReader {
  #pieces: Uint8Array[] = [];
  #length = 0;

  push(chunk: Uint8Array): Uint8Array[] {
    const payloads: Uint8Array[] = [];
    if (this.#length === 0) {
      // Nothing buffered (the usual case): each whole frame is copied out of the caller's buffer
      // once, into a payload of its own; only a cut frame at the end is kept.
      let at = 0;
      while (chunk.length - at >= 4) {
        const length = new DataView(chunk.buffer, chunk.byteOffset + at, 4).getUint32(0);
        if (length > MAX_FRAME_BYTES) {
          throw new TypeError(`frame length ${length} exceeds ${MAX_FRAME_BYTES}`);
        }
        if (chunk.length - at - 4 < length) break;
        payloads.push(chunk.slice(at + 4, at + 4 + length));
        at += 4 + length;
      }
      chunk = chunk.subarray(at);
    }
    if (chunk.length > 0) {
      this.#pieces.push(chunk.slice()); // the caller reuses its read buffer
      this.#length += chunk.length;
    }
    while (this.#length >= 4) {
      const header = this.#peek(4);
      const length = new DataView(header.buffer, header.byteOffset, 4).getUint32(0);
      if (length > MAX_FRAME_BYTES) {
        throw new TypeError(`frame length ${length} exceeds ${MAX_FRAME_BYTES}`);
      }
      if (this.#length - 4 < length) break;
      payloads.push(this.#take(4 + length).subarray(4));
    }
    return payloads;
  }

  /** The first `n` buffered bytes (n <= buffered), without consuming them. */
  #peek(n: number): Uint8Array {
    const first = this.#pieces[0];
    if (first.length >= n) return first.subarray(0, n);
    const out = new Uint8Array(n);
    let at = 0;
    for (const piece of this.#pieces) {
      const part = piece.subarray(0, n - at);
      out.set(part, at);
      at += part.length;
      if (at === n) break;
    }
    return out;
  }

  /** Remove and return the first `n` buffered bytes (n <= buffered). */
  #take(n: number): Uint8Array {
    const out = new Uint8Array(n);
    let at = 0;
    while (at < n) {
      const piece = this.#pieces[0];
      const part = piece.subarray(0, n - at);
      out.set(part, at);
      at += part.length;
      if (part.length === piece.length) this.#pieces.shift();
      else this.#pieces[0] = piece.subarray(part.length);
    }
    this.#length -= n;
    return out;
  }
}

/** Socket writes made, counted across connections (`FrameConn`, `Link`): a replica's status
 * reports them beside the frames it sent, so frames per write (coalescing) can be watched. */
export interface WriteCounter {
  writes: number;
}

/** One TCP connection carrying frames both ways. */
export class FrameConn {
  readonly conn: Deno.Conn;
  #queue: Uint8Array[] = [];
  #queuedBytes = 0;
  /** Bytes of the write in progress not yet accepted by the socket. */
  #writeLeft = 0;
  #writing = false;
  #closed = false;
  readonly #onClose: Array<() => void> = [];

  constructor(
    conn: Deno.Conn,
    readonly label: string,
    readonly log: (line: string) => void,
    readonly counter?: WriteCounter,
  ) {
    this.conn = conn;
    try {
      (conn as Deno.TcpConn).setNoDelay(true);
    } catch { /* not TCP */ }
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Bytes sent through this connection that have not reached the socket yet. */
  get unsentBytes(): number {
    return this.#closed ? 0 : this.#queuedBytes + this.#writeLeft;
  }

  onClose(f: () => void): void {
    if (this.#closed) f();
    else this.#onClose.push(f);
  }

  /** Read frames until the peer closes or sends a bad one; `onFrame` sees each decoded body.
   * `views`: byte strings are views into their frame (`viewUnpackr`) instead of copies, except
   * in `snapshot` pieces, whose keys and values the state machine keeps as they are. */
  async readLoop(
    onFrame: (body: unknown) => void,
    options: { views?: boolean } = {},
  ): Promise<void> {
    const views = options.views === true;
    const reader = new FrameReader();
    const chunk = new Uint8Array(64 * 1024);
    try {
      while (!this.#closed) {
        const n = await this.conn.read(chunk);
        if (n === null) break;
        for (const payload of reader.push(chunk.subarray(0, n))) {
          // A snapshot piece's keys and values are kept by the state machine: decoded as copies,
          // once (a 1 MiB piece is recognised by its first key without decoding it).
          const piece = views && startsAsSnapshot(payload);
          let body = decodeWirePayload(payload, views && !piece);
          if (views && !piece && (body as { type?: unknown } | null)?.type === "snapshot") {
            body = decodeWirePayload(payload); // a snapshot whose first key is not "type"
          }
          if (
            body === null || typeof body !== "object" ||
            typeof (body as { type?: unknown }).type !== "string"
          ) {
            throw new TypeError('frame body has no string "type"');
          }
          if (views && !piece) notePacked(payload, body);
          onFrame(body);
        }
      }
    } catch (error) {
      if (!this.#closed && !(error instanceof Deno.errors.BadResource)) {
        this.log(`curp: closing connection ${this.label}: ${(error as Error).message}`);
      }
    } finally {
      this.close();
    }
  }

  /** Queue a frame; false (and nothing sent) when the connection is closed or stuck. */
  send(body: unknown): boolean {
    if (this.#closed) return false;
    let frame: Uint8Array;
    try {
      const b = body as { type?: unknown; entries?: unknown[] };
      // A leader's append re-sends commands it received: their bytes are copied, not encoded.
      frame = b.type === "append" && (b.entries?.length ?? 0) > 0
        ? encodeFrameReusing(body)
        : encodeFrame(body);
    } catch (error) {
      // An oversized message (a snapshot of a huge store) is dropped, not fatal: it is retried.
      this.log(`curp: not sending on ${this.label}: ${(error as Error).message}`);
      return false;
    }
    return this.sendFrame(frame);
  }

  /** Queue a frame already encoded (`encodeFrame`, `encodeFramesSharing`). */
  sendFrame(frame: Uint8Array): boolean {
    if (this.#closed) return false;
    // One frame larger than the limit (a big snapshot) may go out alone.
    if (this.#queuedBytes > 0 && this.#queuedBytes + frame.length > MAX_QUEUED_BYTES) {
      this.log(`curp: closing connection ${this.label}: ${this.#queuedBytes} bytes unsent`);
      this.close();
      return false;
    }
    this.#queue.push(frame);
    this.#queuedBytes += frame.length;
    if (!this.#writing) {
      // The write starts once the current task is done: every frame sent to this connection in
      // the same turn of the event loop (the replies to all the frames of one read, every message
      // of one Ready, the proposals of concurrent sessions) leaves in one write, and the peer
      // wakes once for them.
      this.#writing = true;
      queueMicrotask(() => void this.#pump());
    }
    return true;
  }

  async #pump(): Promise<void> {
    this.#writing = true;
    try {
      while (this.#queue.length > 0 && !this.#closed) {
        // Coalesce queued frames into one write: fewer syscalls under load.
        const frames = this.#queue;
        this.#queue = [];
        let total = 0;
        for (const f of frames) total += f.length;
        let joined = frames[0];
        if (frames.length > 1) {
          joined = new Uint8Array(total);
          let at = 0;
          for (const f of frames) {
            joined.set(f, at);
            at += f.length;
          }
        }
        this.#queuedBytes -= total;
        let written = 0;
        this.#writeLeft = joined.length;
        while (written < joined.length) {
          if (this.counter !== undefined) this.counter.writes++;
          written += await this.conn.write(joined.subarray(written));
          this.#writeLeft = joined.length - written;
        }
      }
    } catch {
      this.close();
    } finally {
      this.#writing = false;
      this.#writeLeft = 0;
    }
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.conn.close();
    } catch { /* already closed */ }
    for (const f of this.#onClose.splice(0)) f();
  }
}

/** An outgoing link to one address that reconnects (with backoff) while frames are sent to it.
 * Frames sent while it is down are dropped: the protocol tolerates lost messages. */
export class Link {
  #conn: FrameConn | undefined;
  #connecting = false;
  #nextAttemptMs = 0;
  #backoffMs = 50;
  #stopped = false;
  /** Connections made so far: a change tells a subscriber its frames may have been lost. */
  generation = 0;

  constructor(
    readonly address: { hostname: string; port: number },
    readonly onFrame: (body: unknown) => void,
    readonly log: (line: string) => void,
    readonly counter?: WriteCounter,
  ) {}

  get connected(): boolean {
    return this.#conn !== undefined && !this.#conn.closed;
  }

  /** Bytes sent that have not reached the socket yet (0 while down: those were dropped). */
  get unsentBytes(): number {
    return this.#conn?.unsentBytes ?? 0;
  }

  send(body: unknown): boolean {
    if (this.#conn !== undefined && !this.#conn.closed) return this.#conn.send(body);
    this.connect();
    return false;
  }

  /** Send a frame already encoded; dropped (false) while the link is down, as `send`. */
  sendFrame(frame: Uint8Array): boolean {
    if (this.#conn !== undefined && !this.#conn.closed) return this.#conn.sendFrame(frame);
    this.connect();
    return false;
  }

  /** Start a connection attempt unless one runs or the backoff has not elapsed. */
  connect(): void {
    if (this.#stopped || this.#connecting || this.connected) return;
    if (Date.now() < this.#nextAttemptMs) return;
    this.#connecting = true;
    Deno.connect({ hostname: this.address.hostname, port: this.address.port, transport: "tcp" })
      .then((conn) => {
        this.#connecting = false;
        if (this.#stopped) return conn.close();
        this.#backoffMs = 50;
        this.generation++;
        const fc = new FrameConn(
          conn,
          `to ${this.address.hostname}:${this.address.port}`,
          this.log,
          this.counter,
        );
        this.#conn = fc;
        void fc.readLoop(this.onFrame);
      })
      .catch(() => {
        this.#connecting = false;
        this.#nextAttemptMs = Date.now() + this.#backoffMs;
        this.#backoffMs = Math.min(this.#backoffMs * 2, 1000);
      });
  }

  close(): void {
    this.#stopped = true;
    this.#conn?.close();
  }
}

/** Parse "host:port"; throws a RangeError quoting the text. */
export function parseAddress(text: string): { hostname: string; port: number } {
  const at = text.lastIndexOf(":");
  const port = Number(text.slice(at + 1));
  const hostname = text.slice(0, at);
  if (at <= 0 || !Number.isInteger(port) || port <= 0 || port > 65535) {
    throw new RangeError(`Address "${text}" is not host:port (for example 127.0.0.1:7001)`);
  }
  return { hostname, port };
}

/** Parse "--peers a=host:port,b=host:port,..." into id -> address, sorted by id. */
export function parsePeers(text: string): Map<string, string> {
  const peers = new Map<string, string>();
  for (const part of text.split(",").map((s) => s.trim()).filter((s) => s !== "")) {
    const eq = part.indexOf("=");
    if (eq <= 0) {
      throw new RangeError(
        `Peer "${part}" in --peers is not id=host:port (for example a=127.0.0.1:7001)`,
      );
    }
    const id = part.slice(0, eq);
    const address = part.slice(eq + 1);
    parseAddress(address);
    if (peers.has(id)) throw new RangeError(`Peer id "${id}" appears twice in --peers "${text}"`);
    peers.set(id, address);
  }
  if (peers.size === 0 || peers.size % 2 !== 1) {
    throw new RangeError(
      `--peers "${text}" names ${peers.size} replicas; a cluster needs an odd number (1, 3, 5...)`,
    );
  }
  return new Map([...peers].sort(([a], [b]) => a < b ? -1 : a > b ? 1 : 0));
}
