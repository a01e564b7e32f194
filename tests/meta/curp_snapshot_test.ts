/**
 * Snapshots with real replica processes: with a small snapshot interval the log stays bounded, a
 * follower that was down while the others compacted catches up from a snapshot, and after the
 * leader is killed the cluster (now relying on that follower) still holds every write.
 * @module
 */

import assert from "node:assert/strict";
import { openCurpKV } from "../../src/meta/curp/curp_kv.ts";
import { TestCluster } from "./_cluster.ts";

const EVERY = 40;
const encoder = new TextEncoder();

Deno.test({
  name: "curp snapshot: a lagging follower installs a snapshot; bounded logs; no write lost",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const cluster = await TestCluster.start("curp3-snapshot-", 3, {
      SKYFS_CURP_SNAPSHOT_EVERY: String(EVERY),
    });
    // One log entry per put (no group commit): the snapshot interval below counts entries.
    const kv = await openCurpKV(cluster.addressList, {
      timeoutMs: 20_000,
      batchInFlight: 0,
      log: () => {},
    });
    try {
      const leader = await cluster.waitForLeader();
      const lagging = cluster.ids.find((id) => id !== leader)!;
      await cluster.kill(lagging);
      const keys = Array.from({ length: 300 }, (_, i) => `snap/${String(i).padStart(4, "0")}`);
      for (let i = 0; i < keys.length; i += 10) {
        await Promise.all(
          keys.slice(i, i + 10).map((k) =>
            kv.put({ key: encoder.encode(k), value: encoder.encode(k) })
          ),
        );
      }
      const leaderStatus = (await cluster.status(leader))!;
      assert.ok(leaderStatus.snapshotIndex > EVERY, JSON.stringify(leaderStatus));
      cluster.startReplica(lagging);
      const deadline = Date.now() + 20_000;
      let caughtUp = false;
      while (!caughtUp && Date.now() < deadline) {
        const s = await cluster.status(lagging);
        caughtUp = s !== undefined && s.appliedIndex >= leaderStatus.commitIndex &&
          s.snapshotIndex >= leaderStatus.snapshotIndex - EVERY;
        if (!caughtUp) await new Promise((r) => setTimeout(r, 100));
      }
      assert.ok(
        caughtUp,
        `replica ${lagging} did not catch up: ${JSON.stringify(await cluster.status(lagging))}`,
      );
      for (const id of cluster.children.keys()) {
        const s = (await cluster.status(id))!;
        assert.ok(
          s.appliedIndex - s.snapshotIndex < EVERY + 20,
          `unbounded log: ${JSON.stringify(s)}`,
        );
      }
      // Without the old leader, the lagging replica's restored state is half of every quorum.
      await cluster.kill(leader);
      await cluster.waitForLeader();
      const all = await kv.range({
        key: encoder.encode("snap/"),
        rangeEnd: encoder.encode("snap0"),
      });
      assert.equal(all.count, keys.length);
      const lateWrite = await kv.put({
        key: encoder.encode("snap/late"),
        value: encoder.encode("x"),
      });
      assert.ok(lateWrite.revision > keys.length);
    } finally {
      await kv.close();
      await cluster.stop();
    }
  },
});
