/**
 * Placement across zones and nearest-first reads (issue 15 points 2-3): four mounts in two zones
 * (z1: a, c; z2: b, d), each zone its own backend directory, the default policy (2 zones per
 * chunk, asynchronous).
 * - A file closed on a is in z1's backend at once, and in z2's once z1's replication queue
 *   (`cl/repl/z1/`) drained; its chunk map places every chunk in [z1, z2].
 * - Read on b (z2) after that by three readers at once: z2's backend is read once per chunk (b
 *   or d, whichever owns it on z2's ring) and no byte comes from z1.
 *   Read again on d: nothing from any backend (the z2 owners hold the chunks) and the chunks b
 *   owns come from b (a peer of d's zone).
 * - z2's store refuses writes while a writes a file: a's copies fail and stay queued; read on b
 *   meanwhile, every byte comes from z1 (peer_remote, backend_remote); a is killed (kill -9) and
 *   z2's store repaired: c (z1) takes the queue over and makes the copies.
 * - a restarted with cluster.zone_sync = 2: when fsync returns, every chunk is in both backends
 *   and nothing is queued; with z2's store refusing writes, fsync is EIO naming z2 (one line).
 * - GC after an overwrite removes the old versions from both zones' backends.
 * Needs root and /dev/fuse.
 * @module
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { LocalCluster, type LocalNode } from "../../src/cluster/local_cluster.ts";
import { Ring } from "../../src/cluster/membership.ts";
import { ZonedBackend } from "../../src/cluster/zones.ts";
import { openBackend } from "../../src/cache/backend.ts";
import { type ChunkMap, decodeChunkMap } from "../../src/cache/chunk_map.ts";
import { collectGarbage } from "../../src/cache/gc.ts";
import { openMetaBackend } from "../../src/meta/backend.ts";
import type { MetaKV } from "../../src/meta/kv.ts";
import { prefixEnd } from "../../src/meta/kv.ts";
import { keys } from "../../src/meta/namespace.ts";
import { parseMetricsText } from "../../src/http/metrics_text.ts";
import { TEST_TMP } from "../_harness.ts";
import { canRunCluster, random, same, skyfsStatus, until, writeSynced } from "./_cluster_util.ts";

const MiB = 2 ** 20;

/** One node's samples of `name`, by the value of label `label` ("" without labels). */
async function metric(
  cluster: LocalCluster,
  node: LocalNode,
  name: string,
  label = "",
): Promise<Record<string, number>> {
  const url = await latestHttpUrl(cluster, node);
  const text = await (await fetch(`${url}/metrics`)).text();
  const out: Record<string, number> = {};
  for (const s of parseMetricsText(text)) {
    if (s.name === name) out[label ? s.labels[label] : ""] = s.value;
  }
  return out;
}

/** The node's HTTP endpoint as its last start logged it (logs are appended across restarts). */
async function latestHttpUrl(cluster: LocalCluster, node: LocalNode, starts = 1) {
  let urls: string[] = [];
  await until(async () => {
    urls = [...(await cluster.logOf(node)).matchAll(/http: listening on (http:\/\/\S+)/g)]
      .map((m) => m[1]);
    return urls.length >= starts;
  }, `${node.id}'s HTTP endpoint (start ${starts})`);
  return urls.at(-1)!;
}

/** A node's requests to `zone`'s store of operation `op` (skyfs_zone_backend_requests_total). */
async function zoneRequests(cluster: LocalCluster, node: LocalNode, zone: string, op: string) {
  const text = await (await fetch(`${await latestHttpUrl(cluster, node)}/metrics`)).text();
  return parseMetricsText(text).find((s) =>
    s.name === "skyfs_zone_backend_requests_total" && s.labels.zone === zone && s.labels.op === op
  )?.value ?? 0;
}

async function tiers(cluster: LocalCluster, node: LocalNode) {
  return await metric(cluster, node, "skyfs_read_bytes_total", "tier");
}

async function mapOf(kv: MetaKV, ino: number): Promise<ChunkMap> {
  const found = await kv.range({ key: keys.chunkMap(ino) });
  assert.ok(found.kvs[0], `inode ${ino} has no chunk map`);
  return decodeChunkMap(found.kvs[0].value);
}

function objectPath(backend: string, ino: number, index: number, version: string): string {
  return join(backend, "o", "c", ino.toString(16), `${index}`, version);
}

function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

async function queued(kv: MetaKV, zone: string): Promise<number> {
  const prefix = new TextEncoder().encode(`cl/repl/${zone}/`);
  return (await kv.range({ key: prefix, rangeEnd: prefixEnd(prefix), keysOnly: true })).kvs
    .length;
}

Deno.test({
  name: "placement: async copies to z2 through the queue, nearest-first reads in z2, " +
    "takeover after kill -9 of the writer, zone_sync=2, GC in both zones",
  ignore: !canRunCluster(),
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const cluster = await LocalCluster.start("skyfs-placement-test-", {
      nodes: 4,
      zones: 2,
      parentDir: TEST_TMP,
    });
    const kv = await openMetaBackend(cluster.meta, { dataDir: cluster.dir });
    try {
      const [a, b, c, d] = cluster.nodes;
      assert.deepEqual([a.zone, b.zone, c.zone, d.zone], ["z1", "z2", "z1", "z2"]);
      const z1 = cluster.zoneBackend("z1");
      const z2 = cluster.zoneBackend("z2");

      // --- Asynchronous placement: z1 at close, z2 once the queue drained.
      const data = random(5 * 4 * MiB + 12345); // 6 chunks
      await Deno.writeFile(join(a.mountpoint, "f1"), data);
      const ino = (await Deno.stat(join(a.mountpoint, "f1"))).ino!;
      const map = await mapOf(kv, ino);
      assert.equal(map.size, 6);
      for (const [index, ref] of map) {
        assert.deepEqual(ref.zones, ["z1", "z2"], `chunk ${index}`);
        assert.ok(exists(objectPath(z1, ino, index, ref.version)), `chunk ${index} in z1`);
      }
      await until(async () => await queued(kv, "z1") === 0, "z1's replication queue drained");
      for (const [index, ref] of map) {
        assert.ok(exists(objectPath(z2, ino, index, ref.version)), `chunk ${index} in z2`);
      }
      const copies = await metric(cluster, a, "skyfs_replication_copies_total", "mode");
      const copiesC = await metric(cluster, c, "skyfs_replication_copies_total", "mode");
      assert.equal(copies.queued + copiesC.queued, 6, JSON.stringify({ copies, copiesC }));
      assert.equal(copies.sync, 0);
      // The copies' PUTs to z2's store are counted by zone.
      assert.equal(
        await zoneRequests(cluster, a, "z2", "put") + await zoneRequests(cluster, c, "z2", "put"),
        6,
      );
      await until(
        async () => (await metric(cluster, a, "skyfs_replication_queue_length"))[""] === 0,
        "a's skyfs_replication_queue_length back to 0",
      );

      // --- Nearest first: b (z2) reads it from z2's store and z2's peers, nothing from z1.
      // Three readers at once on b: still one fetch per chunk (single flight over every tier).
      const [b0, d0] = [await tiers(cluster, b), await tiers(cluster, d)];
      const reads = await Promise.all([1, 2, 3].map(() => Deno.readFile(join(b.mountpoint, "f1"))));
      for (const read of reads) assert.ok(same(read, data));
      const [b1, d1] = [await tiers(cluster, b), await tiers(cluster, d)];
      const delta = (x: Record<string, number>, y: Record<string, number>, t: string) =>
        y[t] - x[t];
      assert.equal(
        delta(b0, b1, "backend_zone") + delta(d0, d1, "backend_zone"),
        data.length,
        `z2's backend read once per chunk: ${JSON.stringify({ b0, b1, d0, d1 })}`,
      );
      for (const t of ["peer_remote", "backend_remote"]) {
        assert.equal(delta(b0, b1, t) + delta(d0, d1, t), 0, `${t} on b and d`);
      }
      // d reads it next: the chunks b owns (z2's ring) come from b, the others are d's own.
      const z2Ring = new Ring([
        { id: "b", zone: "z2", address: "", startedMs: 0 },
        { id: "d", zone: "z2", address: "", startedMs: 0 },
      ]);
      let ownedByB = 0;
      for (const [index, ref] of map) {
        if (z2Ring.owner(`${ino}/${index}`)!.id === "b") ownedByB += ref.length;
      }
      assert.ok(same(await Deno.readFile(join(d.mountpoint, "f1")), data));
      const [b2, d2] = [await tiers(cluster, b), await tiers(cluster, d)];
      for (const t of ["backend_zone", "peer_remote", "backend_remote"]) {
        assert.equal(delta(b1, b2, t) + delta(d1, d2, t), 0, `${t} during d's read`);
      }
      assert.ok(
        delta(d1, d2, "peer_zone") >= ownedByB,
        `d read b's ${ownedByB} bytes from b: ${JSON.stringify({ d1, d2 })}`,
      );

      // --- The writer dies with copies queued: c (z1) takes them over.
      const tmp = join(z2, "tmp");
      await Deno.rename(tmp, `${tmp}.away`);
      await Deno.writeFile(tmp, new Uint8Array()); // a file: z2's store refuses every put
      const data2 = random(2 * 4 * MiB + 99);
      await writeSynced(join(a.mountpoint, "f2"), data2);
      const ino2 = (await Deno.stat(join(a.mountpoint, "f2"))).ino!;
      const map2 = await mapOf(kv, ino2);
      await until(
        async () => ((await metric(cluster, a, "skyfs_replication_failures_total"))[""] ?? 0) >= 1,
        "a tried its copies to z2 and failed",
      );
      assert.equal(await queued(kv, "z1"), map2.size);
      const status = await skyfsStatus(cluster.meta);
      assert.match(
        status.text,
        /^replication queue: z1 3 copies \(oldest \d+\.\d s\)$/m,
        status.text,
      );
      // Read in z2 meanwhile: z2's store lacks it (the map places it in z2, the copy is queued),
      // so every byte comes from z1: its peers (peer_remote) or its store (backend_remote).
      const [b3, d3] = [await tiers(cluster, b), await tiers(cluster, d)];
      assert.ok(same(await Deno.readFile(join(b.mountpoint, "f2")), data2));
      const [b4, d4] = [await tiers(cluster, b), await tiers(cluster, d)];
      const far = ["peer_remote", "backend_remote"].reduce(
        (sum, t) => sum + delta(b3, b4, t) + delta(d3, d4, t),
        0,
      );
      assert.equal(far, data2.length, JSON.stringify({ b3, b4, d3, d4 }));
      assert.equal(delta(b3, b4, "backend_zone") + delta(d3, d4, "backend_zone"), 0);
      await cluster.kill(a);
      await Deno.remove(tmp);
      await Deno.rename(`${tmp}.away`, tmp);
      await until(async () => await queued(kv, "z1") === 0, "c drained a's queue", 60_000);
      assert.match((await skyfsStatus(cluster.meta)).text, /^replication queue: empty$/m);
      for (const [index, ref] of map2) {
        assert.ok(exists(objectPath(z2, ino2, index, ref.version)), `f2 chunk ${index} in z2`);
      }
      assert.ok((await metric(cluster, c, "skyfs_replication_takeovers_total"))[""] >= 1);
      assert.match(
        await cluster.logOf(c),
        /replication: took over chunk .* from node a, which left/,
      );
      assert.ok(same(await Deno.readFile(join(d.mountpoint, "f2")), data2));

      // --- zone_sync = 2 (a restarted with it): both zones hold every chunk when fsync returns.
      a.env = { SKYFS_ZONE_SYNC: "2" };
      await cluster.startNode(a);
      await latestHttpUrl(cluster, a, 2);
      const data3 = random(3 * 4 * MiB + 5);
      await writeSynced(join(a.mountpoint, "f3"), data3);
      const ino3 = (await Deno.stat(join(a.mountpoint, "f3"))).ino!;
      const map3 = await mapOf(kv, ino3);
      assert.equal(map3.size, 4);
      for (const [index, ref] of map3) {
        assert.deepEqual(ref.zones, ["z1", "z2"]);
        assert.ok(exists(objectPath(z1, ino3, index, ref.version)), `f3 chunk ${index} in z1`);
        assert.ok(exists(objectPath(z2, ino3, index, ref.version)), `f3 chunk ${index} in z2`);
      }
      assert.equal(await queued(kv, "z1"), 0);
      assert.equal((await metric(cluster, a, "skyfs_replication_copies_total", "mode")).sync, 4);
      // The synchronous zone's store refusing writes: fsync is EIO naming the zone, one log line.
      await Deno.rename(tmp, `${tmp}.away`);
      await Deno.writeFile(tmp, new Uint8Array());
      const logFrom = (await cluster.logOf(a)).length;
      await assert.rejects(
        // Larger than cluster.inline_bytes (4096): a smaller file puts nothing in a store.
        writeSynced(join(a.mountpoint, "f5"), random(5000)),
        /os error 5\b|Input\/output error/,
      );
      await Deno.remove(tmp);
      await Deno.rename(`${tmp}.away`, tmp);
      assert.match(
        (await cluster.logOf(a)).slice(logFrom),
        /^skyfs: FSYNC failed with EIO: cannot store chunk \S+ in zone z2's backend: .+$/m,
      );

      // --- GC after an overwrite frees the old versions in both zones.
      const data4 = random(data.length);
      await Deno.writeFile(join(c.mountpoint, "f1"), data4);
      const map4 = await mapOf(kv, ino);
      await until(async () => await queued(kv, "z1") === 0, "the overwrite's copies made");
      const zoned = new ZonedBackend(await openBackend(z1), {
        zone: "z1",
        kv,
        open: (spec) => openBackend(spec),
      });
      try {
        const report = await collectGarbage(kv, zoned, { graceMs: 0, zones: zoned });
        assert.ok(report.objectsDeleted >= 12, JSON.stringify(report));
      } finally {
        await zoned.close();
      }
      for (const [index, ref] of map) {
        for (const zone of [z1, z2]) {
          assert.ok(!exists(objectPath(zone, ino, index, ref.version)), `old ${index} in ${zone}`);
        }
      }
      for (const [index, ref] of map4) {
        for (const zone of [z1, z2]) {
          assert.ok(exists(objectPath(zone, ino, index, ref.version)), `new ${index} in ${zone}`);
        }
      }
      assert.ok(same(await Deno.readFile(join(b.mountpoint, "f1")), data4));
    } finally {
      await kv.close();
      await cluster.stop();
    }
  },
});
