/**
 * A replica catching up through a large snapshot never stalls the others: a follower is killed,
 * the store grows to 40 MB (compacted into snapshots), and while the follower restarts and
 * installs the leader's snapshot under mixed load, no operation of the other clients waits long
 * and none fails. Issue 13: with the whole snapshot built and sent as one frame on the leader's
 * event loop, every node's metadata stalled for seconds.
 * @module
 */

import assert from "node:assert/strict";
import { openCurpKV } from "../../src/meta/curp/curp_kv.ts";
import { TestCluster } from "./_cluster.ts";
import { MixedLoad, prefill } from "./_load.ts";

Deno.test({
  name: "curp catch-up: installing a 40 MB snapshot does not stall the other replicas",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const cluster = await TestCluster.start("curp3-catchup-", 3, {
      SKYFS_CURP_SNAPSHOT_EVERY: "2000",
    });
    const kv = await openCurpKV(cluster.addressList, { log: () => {} });
    let load: MixedLoad | undefined;
    try {
      const leader = await cluster.waitForLeader();
      const lagging = cluster.ids.find((id) => id !== leader)!;
      await cluster.kill(lagging);
      await prefill(kv, 40 * 1024 * 1024); // 640 entries
      await prefill(kv, 1536 * 1024, "more/", 1); // 1,536 more: past the first compaction
      load = new MixedLoad(kv);
      await load.start();
      const deadline = Date.now() + 30_000;
      while ((await cluster.status(leader))!.snapshotIndex === 0 && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 200));
      }
      await new Promise((r) => setTimeout(r, 2000));
      const started = Date.now();
      const opsAtRestart = load.operations;
      cluster.startReplica(lagging);
      let caughtUp = false;
      while (!caughtUp && Date.now() < started + 90_000) {
        await new Promise((r) => setTimeout(r, 250));
        const [s, l] = [await cluster.status(lagging), await cluster.status(leader)];
        caughtUp = s !== undefined && l !== undefined && s.snapshotIndex > 0 &&
          s.appliedIndex >= l.snapshotIndex;
      }
      const catchUpMs = Date.now() - started;
      const opsDuringCatchUp = load.operations - opsAtRestart;
      await new Promise((r) => setTimeout(r, 3000));
      const report = await load.stop();
      load = undefined;
      console.log(
        `catch-up ${catchUpMs} ms (${opsDuringCatchUp} operations meanwhile); ${report.operations} operations, slowest ${report.maxLatencyMs} ` +
          `ms (at ${report.maxLatencyAtMs} ms), p99 ${report.p99LatencyMs} ms; ${lagging}'s log: ` +
          cluster.logs.get(lagging)?.join("").trim(),
      );
      assert.ok(
        caughtUp,
        `replica ${lagging} did not catch up within 90 s: ${cluster.logs.get(lagging)?.join("")}`,
      );
      assert.deepEqual(report.failures, []);
      assert.deepEqual(report.leaseKeysLost, []);
      // No timing is asserted (2 shared cores); a stall shows as no progress while the follower
      // installs, as failed operations (10 s client timeout) or as lost leases (5 s TTL).
      assert.ok(opsDuringCatchUp > 0, `no operation finished while ${lagging} caught up`);
    } finally {
      await load?.stop();
      await kv.close();
      await cluster.stop();
    }
  },
});
