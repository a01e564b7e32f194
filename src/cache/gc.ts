/**
 * Garbage collection of backend objects no chunk map names: old versions replaced by a later
 * close, and every object of a deleted file (whose chunk map is removed here too). An object
 * younger than the grace period is kept even if unnamed: it may be an upload whose map
 * transaction has not committed yet. Orphans (files unlinked while open) that no node has open
 * any more are deleted first: their last holder crashed, so its open record went with its lease
 * and no last close freed them. With zones, every zone's store is swept: an old version is freed
 * in every zone that holds it (placed there, or copied by the replication queue).
 * @module
 */

import type { Compare, KeyValue, MetaKV, RequestOp } from "../meta/kv.ts";
import { prefixEnd } from "../meta/kv.ts";
import { decodeInode, type InodeRecord, keys, type QuotaRecord } from "../meta/namespace.ts";
import { openGuardKey, openRecordsPrefix, reclaimBarrier } from "./open_records.ts";
import { type BackendStore, chunkObjectKey, parseChunkObjectKey } from "./backend.ts";
import { decodeChunkMap } from "./chunk_map.ts";
import type { ZoneStores } from "./cluster_data.ts";

export interface GcReport {
  orphansPurged: number;
  /** Over every zone swept. */
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
  options: { graceMs?: number; now?: number; zones?: ZoneStores } = {},
): Promise<GcReport> {
  const graceMs = options.graceMs ?? 10 * 60_000;
  const now = options.now ?? Date.now();
  // Objects are listed first: one uploaded (or copied) after this listing is not looked at, and
  // one listed here is either named by a map read below or older than the grace period.
  const stores: BackendStore[] = [backend];
  const zones = options.zones;
  if (zones) {
    for (const zone of await zones.zones()) {
      if (zone !== zones.zone) stores.push(await zones.store(zone));
    }
  }
  const listed = await Promise.all(stores.map((store) => store.list("c/")));
  const orphansPurged = await purgeOrphans(kv);
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
  for (const [i, objects] of listed.entries()) {
    for (const object of objects) {
      if (!parseChunkObjectKey(object.key)) continue;
      if (named.has(object.key) || now - object.modifiedMs < graceMs) {
        objectsKept++;
        continue;
      }
      await stores[i].delete(object.key);
      objectsDeleted++;
    }
  }
  return { orphansPurged, objectsDeleted, mapsDeleted, objectsKept };
}

/** Free every orphan that no node has open (its holders crashed); returns how many. Also run
 * on its own when a node leaves the ring, so a crashed holder's orphans do not wait for gc. */
export async function purgeOrphans(kv: MetaKV): Promise<number> {
  let purged = 0;
  const prefix = keys.orphans();
  const orphans = await kv.range({ key: prefix, rangeEnd: prefixEnd(prefix), keysOnly: true });
  for (const item of orphans.kvs) {
    if (await purgeOrphan(kv, inoOf(item.key))) purged++;
  }
  return purged;
}

/**
 * Delete orphan `ino` if it has no links, every node acknowledged its unlink and no node has it
 * open: inode, orphan mark, xattrs,
 * chunk map and open guard in one transaction that compares the inode and the guard as read
 * (an open landing meanwhile writes the guard, so it makes this fail instead).
 */
async function purgeOrphan(kv: MetaKV, ino: number): Promise<boolean> {
  // Not before every node acknowledged the unlink: one may have it open with no record yet.
  if (await reclaimBarrier(kv, ino) !== "passed") return false;
  const records = openRecordsPrefix(ino);
  const snapshot = await kv.txn({
    success: [
      { range: { key: keys.inode(ino) } },
      { range: { key: openGuardKey(ino) } },
      { range: { key: records, rangeEnd: prefixEnd(records), limit: 1 } },
    ],
  });
  const [inode, guard, open] = snapshot.responses.map((r) =>
    (r as { range: { kvs: KeyValue[] } }).range.kvs
  );
  if (open.length > 0) return false;
  const record = inode.length > 0 ? decodeInode(ino, inode[0].value) : undefined;
  if (record && record.nlink > 0) return false;
  // A file of a volume leaves its usage in the same transaction (src/vfs/volume_quota.ts).
  // An orphan whose unlink already took its usage off (`uncounted`) releases nothing.
  const usage = record?.volume && !record.uncounted ? await releasedUsage(kv, record) : undefined;
  const xattrs = keys.xattrs(ino);
  const done = await kv.txn({
    compare: [
      {
        key: keys.inode(ino),
        target: "modRevision",
        result: "==",
        value: inode[0]?.modRevision ?? 0,
      },
      {
        key: openGuardKey(ino),
        target: "modRevision",
        result: "==",
        value: guard[0]?.modRevision ?? 0,
      },
      ...(usage ? [usage.compare] : []),
    ],
    success: [
      ...(usage ? [usage.put] : []),
      { deleteRange: { key: keys.inode(ino) } },
      { deleteRange: { key: keys.orphan(ino) } },
      { deleteRange: { key: xattrs, rangeEnd: prefixEnd(xattrs) } },
      { deleteRange: { key: keys.chunkMap(ino) } },
      { deleteRange: { key: openGuardKey(ino) } },
    ],
  });
  return done.succeeded && inode.length > 0;
}

/** The quota record of `record`'s volume without it (compare and put for the purge txn). */
async function releasedUsage(
  kv: MetaKV,
  record: InodeRecord,
): Promise<{ compare: Compare; put: RequestOp } | undefined> {
  const key = keys.quota(record.volume!);
  const found = (await kv.range({ key })).kvs[0];
  if (!found) return undefined;
  const quota: QuotaRecord = JSON.parse(new TextDecoder().decode(found.value));
  quota.usedInodes = Math.max(0, quota.usedInodes - 1);
  if ((record.mode & 0o170000) === 0o100000) {
    quota.usedBytes = Math.max(0, quota.usedBytes - record.size);
  }
  return {
    compare: { key, target: "modRevision", result: "==", value: found.modRevision },
    put: { put: { key, value: new TextEncoder().encode(JSON.stringify(quota)) } },
  };
}
