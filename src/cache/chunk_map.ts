/**
 * Cluster mode's chunk map: which immutable backend object holds each 4 MiB chunk of a file.
 * It is stored in metadata beside the inode and written in the same transaction as the size
 * and mtime, so a reader sees either the whole old content or the whole new one.
 * @module
 */

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
}

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
  return encoder.encode(JSON.stringify({ v: 1, c: entries }));
}

export function decodeChunkMap(bytes: Uint8Array | undefined): ChunkMap {
  const map: ChunkMap = new Map();
  if (!bytes) return map;
  const parsed = JSON.parse(decoder.decode(bytes));
  if (parsed?.v !== 1 || !Array.isArray(parsed.c)) {
    throw new Error(`Chunk map has format ${JSON.stringify(parsed?.v)}; this build reads 1`);
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
  return map;
}

/** The map after a truncate to `size`: chunks past it dropped, the last one shortened. */
export function truncateChunkMap(map: ChunkMap, size: number): ChunkMap {
  const out: ChunkMap = new Map();
  for (const [index, ref] of map) {
    const start = index * CHUNK_SIZE;
    if (start >= size) continue;
    out.set(index, { ...ref, length: Math.min(ref.length, size - start) });
  }
  return out;
}
