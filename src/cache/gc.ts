/**
 * Garbage collection of backend objects no chunk map names: old versions replaced by a later
 * close, and every object of a deleted file (whose chunk map is removed here too). An object
 * younger than the grace period is kept even if unnamed: it may be an upload whose map
 * transaction has not committed yet.
 * @module
 */

import type { MetaKV } from "../meta/kv.ts";
import { prefixEnd } from "../meta/kv.ts";
import { keys } from "../meta/namespace.ts";
import { type BackendStore, chunkObjectKey, parseChunkObjectKey } from "./backend.ts";
import { decodeChunkMap } from "./chunk_map.ts";

export interface GcReport {
  objectsDeleted: number;
  mapsDeleted: number;
  objectsKept: number;
}

function inoOf(key: Uint8Array): number {
  const view = new DataView(key.buffer, key.byteOffset, key.byteLength);
  return view.getUint32(4) * 2 ** 32 + view.getUint32(8);
}

export async function collectGarbage(
  kv: MetaKV,
  backend: BackendStore,
  options: { graceMs?: number; now?: number } = {},
): Promise<GcReport> {
  const graceMs = options.graceMs ?? 10 * 60_000;
  const now = options.now ?? Date.now();
  // Objects are listed first: one uploaded after this listing is not looked at, and one listed
  // here is either named by a map read below or older than the grace period.
  const objects = await backend.list("c/");
  const named = new Set<string>();
  let mapsDeleted = 0;
  const mapPrefix = keys.chunkMaps();
  const maps = await kv.range({ key: mapPrefix, rangeEnd: prefixEnd(mapPrefix) });
  for (const item of maps.kvs) {
    const ino = inoOf(item.key);
    // A map whose inode is gone belongs to a deleted file: remove it if the inode is still absent.
    const removed = await kv.txn({
      compare: [{ key: keys.inode(ino), target: "version", result: "==", value: 0 }],
      success: [{ deleteRange: { key: item.key } }],
    });
    if (removed.succeeded) {
      mapsDeleted++;
      continue;
    }
    for (const [index, ref] of decodeChunkMap(item.value)) {
      named.add(chunkObjectKey(ino, index, ref.version));
    }
  }
  let objectsDeleted = 0;
  let objectsKept = 0;
  for (const object of objects) {
    if (!parseChunkObjectKey(object.key)) continue;
    if (named.has(object.key) || now - object.modifiedMs < graceMs) {
      objectsKept++;
      continue;
    }
    await backend.delete(object.key);
    objectsDeleted++;
  }
  return { objectsDeleted, mapsDeleted, objectsKept };
}
