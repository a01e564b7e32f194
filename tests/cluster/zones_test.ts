/**
 * Zones (issue 15 point 1): four mounts in two zones (z1: a, c; z2: b, d), each zone its own
 * backend directory. `skyfs status` lists the zones with their backend and live node count and
 * every node's zone; /api/v1/status and /api/v1/cluster carry the zone; a file written in z1 is
 * read back in z1 and in z2 (from z1's backend: a zone's nodes reach the other zones' stores), and
 * one written in z2 in z1; a node joining z1 with z2's backend refuses to start with one line
 * naming both. Placement and nearest-first reads: placement_test.ts. Needs root and /dev/fuse.
 * @module
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { LocalCluster, type LocalNode } from "../../src/cluster/local_cluster.ts";
import { TEST_TMP } from "../_harness.ts";
import { fetchJson } from "../http/_http.ts";
import { canRunCluster, random, same, skyfsStatus } from "./_cluster_util.ts";

Deno.test({
  name: "zones: 2 zones of 2 nodes; status, /api/v1/status and the dashboard show zones; " +
    "a node with another backend than its zone's refuses to start",
  ignore: !canRunCluster(),
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const cluster = await LocalCluster.start("skyfs-zones-test-", {
      nodes: 4,
      zones: 2,
      parentDir: TEST_TMP,
    });
    try {
      const [a, b, c, d] = cluster.nodes;
      assert.deepEqual([a.zone, b.zone, c.zone, d.zone], ["z1", "z2", "z1", "z2"]);
      const z1 = cluster.zoneBackend("z1");
      const z2 = cluster.zoneBackend("z2");

      // `skyfs status`: the zones with backend and live nodes, every node with its zone.
      const status = await skyfsStatus(cluster.meta);
      assert.equal(status.code, 0, status.text);
      assert.match(status.text, /^2 zone\(s\)$/m, status.text);
      assert.match(status.text, new RegExp(`^  z1 +2  ${z1}$`, "m"), status.text);
      assert.match(status.text, new RegExp(`^  z2 +2  ${z2}$`, "m"), status.text);
      assert.match(status.text, /^4 live node\(s\)/m, status.text);
      for (const node of cluster.nodes) {
        assert.match(status.text, new RegExp(`^${node.id} +${node.zone} +127\\.0\\.0\\.1:`, "m"));
      }

      // /api/v1/status and the dashboard's /api/v1/cluster of a node carry the zones.
      const url = await cluster.httpUrl(b);
      const api = await fetchJson(`${url}/api/v1/status`);
      const report = api.body.cluster as {
        nodes: { id: string; zone: string }[];
        zones: { zone: string; backend: string; liveNodes: number }[];
      };
      assert.deepEqual(
        report.nodes.map((n) => [n.id, n.zone]),
        [["a", "z1"], ["b", "z2"], ["c", "z1"], ["d", "z2"]],
      );
      assert.deepEqual(report.zones, [
        { zone: "z1", backend: z1, liveNodes: 2 },
        { zone: "z2", backend: z2, liveNodes: 2 },
      ]);
      const table = await fetchJson(`${url}/api/v1/cluster`);
      const rows = table.body.nodes as { id: string; zone: string }[];
      assert.deepEqual(rows.map((r) => [r.id, r.zone]), report.nodes.map((n) => [n.id, n.zone]));

      // Within a zone the data path works as before: written on a, read on c (both z1).
      const data = random(5 * 2 ** 20 + 77);
      await Deno.writeFile(join(a.mountpoint, "in-z1"), data);
      assert.ok(same(await Deno.readFile(join(c.mountpoint, "in-z1")), data));
      // Across zones: b and d (z2) read it (from z2's store once the copy is made, else from z1).
      assert.ok(same(await Deno.readFile(join(b.mountpoint, "in-z1")), data));
      await Deno.writeFile(join(d.mountpoint, "in-z2"), data.subarray(77));
      assert.ok(same(await Deno.readFile(join(a.mountpoint, "in-z2")), data.subarray(77)));

      // A node of z1 given z2's backend: refused, one line naming both backends.
      const e: LocalNode = {
        id: "e",
        mountpoint: join(cluster.dir, "mnt-e"),
        dataDir: join(cluster.dir, "data-e"),
        zone: "z1",
        backend: z2,
      };
      await Deno.mkdir(e.mountpoint);
      await Deno.mkdir(e.dataDir);
      await assert.rejects(() => cluster.startNode(e), /mount e exited with/);
      const log = await cluster.logOf(e);
      const line = log.split("\n").find((l) => l.includes("zone z1 has backend"));
      assert.ok(line, log);
      assert.ok(line.includes(z1) && line.includes(`this node's --backend is ${z2}`), line);
      assert.match((await skyfsStatus(cluster.meta)).text, /^4 live node\(s\)/m);
    } finally {
      await cluster.stop();
    }
  },
});
