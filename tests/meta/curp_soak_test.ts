/**
 * No election without a fault: three replica processes under mixed metadata load (a 20 MB store,
 * so every periodic snapshot is a real one) keep one leader and one term throughout, no operation
 * fails and no kept-alive lease expires.
 *
 * Duration: 90 s by default; SKYFS_SOAK=1 makes it 10 minutes (issue 13's figure);
 * SKYFS_SOAK_SECONDS=N sets it exactly.
 * @module
 */

import assert from "node:assert/strict";
import { openCurpKV } from "../../src/meta/curp/curp_kv.ts";
import { TestCluster } from "./_cluster.ts";
import { MixedLoad, prefill } from "./_load.ts";

function soakSeconds(): number {
  const exact = Deno.env.get("SKYFS_SOAK_SECONDS");
  if (exact !== undefined) {
    const seconds = Number(exact);
    if (!(Number.isInteger(seconds) && seconds > 0)) {
      throw new RangeError(`SKYFS_SOAK_SECONDS "${exact}" is not a positive whole number`);
    }
    return seconds;
  }
  return Deno.env.get("SKYFS_SOAK") === "1" ? 600 : 90;
}

Deno.test({
  name: `curp soak: ${soakSeconds()} s of mixed load, no election, no failure, no lease lost`,
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const seconds = soakSeconds();
    const cluster = await TestCluster.start("curp3-soak-", 3);
    const kv = await openCurpKV(cluster.addressList, { log: () => {} });
    let load: MixedLoad | undefined;
    try {
      await prefill(kv, 20 * 1024 * 1024);
      const before = await cluster.waitForStableLeader();
      const leader = before.id;
      load = new MixedLoad(kv);
      await load.start();
      const end = Date.now() + seconds * 1000;
      const changes: string[] = [];
      while (Date.now() < end) {
        await new Promise((r) => setTimeout(r, 1000));
        for (const id of cluster.ids) {
          const s = await cluster.status(id);
          if (s !== undefined && (s.term !== before.term || s.leaderId !== leader)) {
            if (changes.length < 10) {
              changes.push(`${id}: term ${s.term}, leader ${s.leaderId}, ${s.role}`);
            }
          }
        }
      }
      const report = await load.stop();
      load = undefined;
      const after = (await cluster.status(leader))!;
      console.log(
        `${seconds} s: ${report.operations} operations (${report.keepAlives} keepAlives), ` +
          `${
            after.commitIndex - before.commitIndex
          } entries, snapshot at ${after.snapshotIndex}; ` +
          `slowest ${report.maxLatencyMs} ms, p99 ${report.p99LatencyMs} ms; term ${before.term} -> ` +
          `${after.term}`,
      );
      for (const id of cluster.ids) {
        const s = await cluster.status(id);
        console.log(
          `${id}: latest tick ${s?.maxTickLagMs ?? "?"} ms late, ${s?.tickStalls ?? "?"} ticks ` +
            `over 500 ms late`,
        );
      }
      assert.deepEqual(changes, [], "the term or the leader changed without a fault");
      assert.equal(after.term, before.term);
      assert.deepEqual(report.failures, []);
      assert.deepEqual(report.leaseKeysLost, []);
    } finally {
      await load?.stop();
      await kv.close();
      await cluster.stop();
    }
  },
});
