/**
 * ReplicationQueue on an embedded store and two directory stores (zones z1, z2): placeChunk's
 * zone order; two nodes of z1 racing for a dead owner's entry make one copy (one takeover); an
 * entry whose version the map no longer names is dropped without a copy; a live owner's entry is
 * left alone; a copy whose source fails its checksum stays queued.
 * @module
 */

import assert from "node:assert/strict";
import { crc32 } from "node:zlib";
import { openEmbeddedKV } from "../meta/embedded.ts";
import { prefixEnd } from "../meta/kv.ts";
import { keys } from "../meta/namespace.ts";
import { type BackendStore, chunkObjectKey, openBackend } from "../cache/backend.ts";
import { encodeChunkMap } from "../cache/chunk_map.ts";
import {
  placeChunk,
  type ReplEntry,
  replQueueKey,
  type ZoneStores,
} from "../cache/cluster_data.ts";
import { ReplicationQueue } from "./replication.ts";

Deno.test("placeChunk: the writer's zone, then the next zones by name, wrapping around", () => {
  const zones = ["z3", "z1", "z2"];
  assert.deepEqual(placeChunk("z1", zones, { replicas: 2, sync: 1 }), {
    sync: ["z1"],
    queued: ["z2"],
  });
  assert.deepEqual(placeChunk("z3", zones, { replicas: 2, sync: 1 }), {
    sync: ["z3"],
    queued: ["z1"],
  });
  assert.deepEqual(placeChunk("z2", zones, { replicas: 3, sync: 2 }), {
    sync: ["z2", "z3"],
    queued: ["z1"],
  });
  // Capped at the zones that exist: one zone is one copy, whatever the policy.
  assert.deepEqual(placeChunk("default", ["default"], { replicas: 2, sync: 2 }), {
    sync: ["default"],
    queued: [],
  });
});

Deno.test("replication queue: one takeover of a dead owner's entry, stale entries dropped", async () => {
  const dir = await Deno.makeTempDir({ prefix: "replication-" });
  const kv = await openEmbeddedKV(`${dir}/meta.db`);
  const stores: Record<string, BackendStore> = {
    z1: await openBackend(`${dir}/z1`),
    z2: await openBackend(`${dir}/z2`),
  };
  const zones: ZoneStores = {
    zone: "z1",
    zones: () => Promise.resolve(["z1", "z2"]),
    store: (zone) => Promise.resolve(stores[zone]),
  };
  const lines: string[] = [];
  const queue = (nodeId: string) =>
    new ReplicationQueue(kv, zones, {
      nodeId,
      isLive: (id) => id !== "dead",
      log: (line) => lines.push(line),
    });
  const encoder = new TextEncoder();
  try {
    const data = crypto.getRandomValues(new Uint8Array(65536));
    const crc = crc32(data);
    // Inode 7: chunk 0 at version v2 (v1 was replaced), chunk 1 at v3.
    await kv.put({
      key: keys.chunkMap(7),
      value: encodeChunkMap(
        new Map([
          [0, { version: "v2", length: data.length, crc, objectLength: data.length }],
          [1, { version: "v3", length: data.length, crc: crc ^ 1, objectLength: data.length }],
        ]),
      ),
    });
    for (const version of ["v1", "v2", "v3"]) {
      await stores.z1.put(chunkObjectKey(7, version === "v3" ? 1 : 0, version), data);
    }
    const entry = (index: number, version: string, owner: string, entryCrc = crc): ReplEntry => ({
      ino: 7,
      index,
      version,
      crc: entryCrc,
      targets: ["z2"],
      owner,
      queuedMs: Date.now(),
    });
    const put = (e: ReplEntry) =>
      kv.put({
        key: replQueueKey("z1", e.ino, e.index, e.version),
        value: encoder.encode(JSON.stringify(e)),
      });
    await put(entry(0, "v1", "dead")); // replaced since: dropped, never copied
    await put(entry(0, "v2", "dead")); // taken over once, copied
    await put(entry(1, "v3", "dead", crc ^ 1)); // z1's copy fails the entry's CRC: stays
    const live = entry(0, "v2", "r");
    await kv.put({
      key: encoder.encode("cl/repl/z1/7/0/v2-live"),
      value: encoder.encode(JSON.stringify(live)),
    });

    const [p, q] = [queue("p"), queue("q")];
    p.kick();
    q.kick();
    await Promise.all([p.idle(), q.idle()]);

    assert.deepEqual(await stores.z2.get(chunkObjectKey(7, 0, "v2")), data);
    assert.equal(await stores.z2.get(chunkObjectKey(7, 0, "v1")), undefined);
    assert.equal(await stores.z2.get(chunkObjectKey(7, 1, "v3")), undefined);
    const both = (f: (s: typeof p.stats) => number) => f(p.stats) + f(q.stats);
    assert.equal(both((s) => s.copies), 1, JSON.stringify([p.stats, q.stats]));
    assert.equal(both((s) => s.dropped), 1);
    assert.ok(both((s) => s.failures) >= 1);
    const prefix = encoder.encode("cl/repl/z1/");
    const left = await kv.range({ key: prefix, rangeEnd: prefixEnd(prefix) });
    const names = left.kvs.map((k) => new TextDecoder().decode(k.key)).sort();
    assert.deepEqual(names, ["cl/repl/z1/7/0/v2-live", "cl/repl/z1/7/1/v3"]);
    // Each dead owner's entry was taken over by exactly one of p and q (the failing one stays
    // with its taker).
    assert.equal(both((s) => s.takenOver), 3);
    assert.ok(
      lines.some((l) => /replication of c\/7\/1\/v3 -> z2 failed \(retried\): .*checksum/.test(l)),
    );
    await Promise.all([p.stop(), q.stop()]);
  } finally {
    await kv.close();
    for (const store of Object.values(stores)) await store.close();
    await Deno.remove(dir, { recursive: true });
  }
});
