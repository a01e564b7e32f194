/**
 * Cluster mode's chunk map: which immutable backend object holds each 4 MiB chunk of a file.
 * It is stored in metadata beside the inode and written in the same transaction as the size
 * and mtime, so a reader sees either the whole old content or the whole new one.
 *
 * Format 1 (`{v: 1, c: [[index, version, length, crc, objectLength, zones?], ...]}`) names backend
 * objects only. Format 2 adds `i: [[index, base64], ...]`: chunks whose bytes are in the map
 * itself (a small file, `cluster.inline_bytes`), with no backend object; written only when a map
 * has such a chunk, so maps without one stay format 1 (and older builds read them).
 * @module
 */

import { crc32 } from "node:zlib";

/** Bytes per chunk (DESIGN.md section 5). */
export const CHUNK_SIZE = 4 << 20;

/** One chunk's object: its version, the bytes of it that belong to the file, their CRC-32. */
export interface ChunkRef {
  version: string;
  /** Bytes of the object that are file content (a truncate can shorten it); the rest is zero. */
  length: number;
  /** CRC-32 of the whole object as stored (checked on every fetch). */
  crc: number;
  /** Bytes of the object as stored (0 in maps written before this field existed). */
  objectLength?: number;
  /**
   * Zones the version is placed in (issue 15 point 2), the writer's first: it holds the object
   * when the map is published, the others once their copy is made (synchronous ones before the
   * publish, queued ones when the replication queue, `cl/repl/`, drained). Absent in maps written
   * without zones: every zone's store may be asked.
   */
  zones?: string[];
  /**
   * The chunk's file bytes [0, length) kept in the map itself (format 2, a small file): no
   * backend object has this version. `crc` is their CRC-32 and `objectLength` their length.
   */
  inline?: Uint8Array;
}

/** Largest `cluster.inline_bytes`: an inline map is at most ~88 KiB of JSON (base64). */
export const MAX_INLINE_BYTES = 65_536;

export type ChunkMap = Map<number, ChunkRef>;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export function encodeChunkMap(map: ChunkMap): Uint8Array {
  const entries = [...map].sort((a, b) => a[0] - b[0]).map((
    [index, ref],
  ) =>
    ref.zones
      ? [index, ref.version, ref.length, ref.crc, ref.objectLength ?? 0, ref.zones]
      : [index, ref.version, ref.length, ref.crc, ref.objectLength ?? 0]
  );
  const inline = [...map].filter(([, ref]) => ref.inline).sort((a, b) => a[0] - b[0]).map((
    [index, ref],
  ) => [index, toBase64(ref.inline!)]);
  if (inline.length === 0) return encoder.encode(JSON.stringify({ v: 1, c: entries }));
  return encoder.encode(JSON.stringify({ v: 2, c: entries, i: inline }));
}

/** Whether the map has a chunk kept inline (format 2). */
export function hasInline(map: ChunkMap): boolean {
  for (const ref of map.values()) if (ref.inline) return true;
  return false;
}

/** The map with its inline chunks' bytes left out (their entries stay). */
export function withoutInline(map: ChunkMap): ChunkMap {
  const out: ChunkMap = new Map();
  for (const [index, ref] of map) {
    if (!ref.inline) {
      out.set(index, ref);
      continue;
    }
    const { inline: _, ...rest } = ref;
    out.set(index, rest);
  }
  return out;
}

/** The runtime's own base64 (`Uint8Array.prototype.toBase64`, `Uint8Array.fromBase64`: V8 14+,
 * so Deno 2.9, which `scripts/setup.sh` pins; TypeScript's lib does not declare them yet). The old
 * encoder built a binary string with `String.fromCharCode(...bytes)` and ran `btoa` on it: 22-28
 * us per 1 KiB chunk, 2.7 ms per 64 KiB one, against 0.2-0.4 us and 11-29 us natively (a publish of
 * a small file encodes its map once; src/cluster/README.md, "Session 13: the mount's CPU per
 * create"). Both give standard base64 with padding. */
const nativeToBase64 = (Uint8Array.prototype as unknown as { toBase64: () => string }).toBase64;
const nativeFromBase64 = (Uint8Array as unknown as {
  fromBase64: (text: string) => Uint8Array<ArrayBuffer>;
}).fromBase64;

/** Standard base64 with padding (RFC 4648 section 4), as older builds wrote and read it. */
export function toBase64(bytes: Uint8Array): string {
  return nativeToBase64.call(bytes);
}

/** The bytes of standard base64 (`toBase64`'s, or an older build's). */
export function fromBase64(text: string): Uint8Array {
  return nativeFromBase64(text);
}

export function decodeChunkMap(bytes: Uint8Array | undefined): ChunkMap {
  const map: ChunkMap = new Map();
  if (!bytes) return map;
  const parsed = JSON.parse(decoder.decode(bytes));
  if ((parsed?.v !== 1 && parsed?.v !== 2) || !Array.isArray(parsed.c)) {
    throw new Error(`Chunk map has format ${JSON.stringify(parsed?.v)}; this build reads 1 and 2`);
  }
  for (const [index, version, length, crc, objectLength, zones] of parsed.c) {
    map.set(
      index,
      Array.isArray(zones) ? { version, length, crc, objectLength, zones } : {
        version,
        length,
        crc,
        objectLength,
      },
    );
  }
  if (parsed.v === 2) {
    for (const [index, data] of parsed.i ?? []) {
      const ref = map.get(index);
      if (!ref) throw new Error(`Chunk map has inline bytes for chunk ${index}, which it lacks`);
      ref.inline = fromBase64(data);
    }
  }
  return map;
}

/** The map after a truncate to `size`: chunks past it dropped, the last one shortened. */
export function truncateChunkMap(map: ChunkMap, size: number): ChunkMap {
  const out: ChunkMap = new Map();
  for (const [index, ref] of map) {
    const start = index * CHUNK_SIZE;
    if (start >= size) continue;
    const length = Math.min(ref.length, size - start);
    // An inline chunk keeps only its file bytes: cut, it is a new (shorter) whole.
    if (ref.inline && length < ref.length) {
      const inline = ref.inline.slice(0, length);
      out.set(index, { ...ref, length, objectLength: length, crc: crc32(inline), inline });
      continue;
    }
    out.set(index, { ...ref, length });
  }
  return out;
}
