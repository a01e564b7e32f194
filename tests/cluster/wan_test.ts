/**
 * Emulated distant zones (issue 15 point 5): 2 zones, 40 ms RTT injected between them by the
 * delay proxies of `LocalCluster` (`deno task cluster --zones 2 --rtt-ms 40`), CURP metadata
 * (m1, m3 in z1; m2 in z2). Every connection crossing zones goes through a proxy: metadata (mount
 * and replica to a replica), peer cache traffic (each node's route for the other zone) and the
 * other zone's backend (served over HTTP). A file written on a node of one zone is read on the
 * other zone's node and the other way round, and the proxies' counters show where the bytes went:
 * the file's bytes crossed the reader's zone's peer or backend links, the far node's metadata its
 * meta links. No elapsed time is asserted (the machine is shared). Needs root and /dev/fuse.
 * @module
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { LocalCluster } from "../../src/cluster/local_cluster.ts";
import { TEST_TMP } from "../_harness.ts";
import { canRunCluster, random, same } from "./_cluster_util.ts";

const RTT_MS = 40;

Deno.test({
  name: "wan: 2 zones, 40 ms RTT through delay proxies: cross-zone reads, metadata delayed",
  ignore: !canRunCluster(),
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const cluster = await LocalCluster.start("skyfs-wan-test-", {
      nodes: 2,
      zones: 2,
      rttMs: RTT_MS,
      parentDir: TEST_TMP,
    });
    try {
      const [a, b] = cluster.nodes;
      assert.deepEqual([a.zone, b.zone], ["z1", "z2"]);
      assert.deepEqual(cluster.replicas.map((r) => r.zone), ["z1", "z2", "z1"]);
      // One proxy per (zone, replica, node or backend of another zone).
      assert.deepEqual(
        cluster.links.map((l) => `${l.kind} ${l.from}->${l.to}`).sort(),
        [
          "backend z1->backend-z2",
          "backend z2->backend-z1",
          "meta z1->m2",
          "meta z2->m1",
          "meta z2->m3",
          "peer z1->b",
          "peer z2->a",
        ],
      );
      // A mount's --meta names its own zone's replicas by their address, the others by proxy.
      const [m1, m2, m3] = cluster.replicas;
      const proxyOf = (from: string, to: string) =>
        cluster.links.find((l) => l.from === from && l.to === to)!.proxy.address;
      assert.equal(
        cluster.metaFrom("z1"),
        `curp://${m1.address},${m3.address},${proxyOf("z1", "m2")}`,
      );
      assert.equal(
        cluster.metaFrom("z2"),
        `curp://${m2.address},${proxyOf("z2", "m1")},${proxyOf("z2", "m3")}`,
      );

      // Correctness across zones, both ways. The file's bytes crossed between the zones: read
      // through the reader's zone's links (the owner's peer route, or the writer's zone's store
      // over HTTP), or copied to the reader's zone's store by replication (issue 15 point 2)
      // before the read; either way through peer or backend proxies.
      const crossed = async () => {
        const stats = await cluster.linkStats();
        return cluster.links.filter((l) => l.kind !== "meta")
          .reduce((n, l) => n + stats.get(l)!.bytesUp + stats.get(l)!.bytesDown, 0);
      };
      const data = random(3 * 2 ** 20 + 11);
      const before1 = await crossed();
      await Deno.writeFile(join(a.mountpoint, "from-z1"), data);
      assert.ok(same(await Deno.readFile(join(b.mountpoint, "from-z1")), data));
      const z1ToZ2 = (await crossed()) - before1;
      assert.ok(z1ToZ2 >= data.length, `${data.length} bytes read in z2, ${z1ToZ2} crossed`);
      const before2 = await crossed();
      await Deno.writeFile(join(b.mountpoint, "from-z2"), data.subarray(11));
      assert.ok(same(await Deno.readFile(join(a.mountpoint, "from-z2")), data.subarray(11)));
      const z2ToZ1 = (await crossed()) - before2;
      assert.ok(z2ToZ1 >= data.length - 11, `${data.length - 11} read in z1, ${z2ToZ1} crossed`);

      // The node whose zone lacks the leader (far) and one in the leader's zone (near).
      const leader = await cluster.metaLeader();
      const [near, far] = leader.zone === a.zone ? [a, b] : [b, a];
      const farLinks = cluster.links.filter((l) => l.from === far.zone);
      const bytes = async () => {
        const stats = await cluster.linkStats();
        return farLinks.reduce((n, l) => n + stats.get(l)!.bytesUp + stats.get(l)!.bytesDown, 0);
      };
      const before = await bytes();

      // A file created on `near` cannot be seen on `far` sooner than one way across the zones.
      const t0 = performance.now();
      await Deno.writeFile(join(near.mountpoint, "fresh"), new Uint8Array([1, 2, 3]));
      let seen = -1;
      while (performance.now() - t0 < 20_000) {
        const st = await Deno.stat(join(far.mountpoint, "fresh")).catch(() => undefined);
        if (st?.size === 3) {
          seen = performance.now() - t0;
          break;
        }
        await new Promise((r) => setTimeout(r, 2));
      }
      assert.ok(seen >= 0, "the new file never appeared on the other zone's node");

      // A metadata write from the far node needs answers from the leader's zone: its requests
      // crossed the far zone's meta links (exchanges: request bursts answered).
      const exchanges = async () => {
        const stats = await cluster.linkStats();
        return farLinks.filter((l) => l.kind === "meta").reduce(
          (n, l) => Math.max(n, stats.get(l)!.exchanges),
          0,
        );
      };
      const x0 = await exchanges();
      const t1 = performance.now();
      await Deno.writeFile(join(far.mountpoint, "far-write"), new Uint8Array([4]));
      const farWrite = performance.now() - t1;
      assert.ok((await exchanges()) > x0, "the far node's create crossed no meta link");
      assert.ok(same(await Deno.readFile(join(near.mountpoint, "far-write")), new Uint8Array([4])));

      // The far node's metadata really went through the proxies.
      assert.ok((await bytes()) > before, "no byte forwarded by the far zone's proxies");
      const stats = await cluster.linkStats();
      for (const link of cluster.links.filter((l) => l.kind === "meta")) {
        assert.ok(stats.get(link)!.connections > 0, `${link.from}->${link.to} never used`);
      }
      // Each node's peer server was dialled through the other zone's route at least once, or
      // the reader's zone's backend link carried the bytes instead (the owner was the reader).
      for (const zone of ["z1", "z2"]) {
        const used = cluster.links.filter((l) =>
          l.from === zone && l.kind !== "meta" && stats.get(l)!.connections > 0
        );
        assert.ok(used.length > 0, `no peer or backend link from ${zone} was used`);
      }
      console.log(
        `wan: leader ${leader.id} (${leader.zone}); seen on ${far.id} after ${
          seen.toFixed(1)
        } ms; create on ${far.id} ${farWrite.toFixed(1)} ms; proxied bytes ${await bytes()}`,
      );
    } finally {
      await cluster.stop();
    }
  },
});
