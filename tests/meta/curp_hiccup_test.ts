/**
 * Membership leases survive a 5 s hiccup of one replica: SIGSTOP of the leader for 5 s, then of
 * a follower for 5 s, under mixed load with mount-like lease holders (TTL 5 s, renewed every
 * 1.7 s) and three `Membership` registrations, on a 20 MB store. No lease a client keeps alive expires, no node
 * leaves the ring, no operation fails, and no renewal is reported failed.
 * @module
 */

import assert from "node:assert/strict";
import { openCurpKV } from "../../src/meta/curp/curp_kv.ts";
import { Membership } from "../../src/cluster/membership.ts";
import { TestCluster } from "./_cluster.ts";
import { MixedLoad, prefill } from "./_load.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

Deno.test({
  name: "curp hiccup: SIGSTOP of the leader, then of a follower, for 5 s each loses no lease",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    // A 20 MB store compacted every 1,000 entries: the replica that was stopped has fallen
    // behind the others' snapshots when it resumes, as a busy cluster's would.
    const cluster = await TestCluster.start("curp3-hiccup-", 3, {
      SKYFS_CURP_SNAPSHOT_EVERY: "1000",
    });
    const kv = await openCurpKV(cluster.addressList, { log: () => {} });
    const logged: string[] = [];
    const consoleError = console.error;
    console.error = (...args: unknown[]) => {
      logged.push(args.map(String).join(" "));
    };
    const members: Membership[] = [];
    const left: string[] = [];
    let load: MixedLoad | undefined;
    let paused: string | undefined;
    try {
      await prefill(kv, 20 * 1024 * 1024);
      for (let i = 0; i < 3; i++) {
        const m = new Membership(kv, {
          id: `node${i}`,
          address: `127.0.0.1:${9000 + i}`,
          startedMs: Date.now(),
        });
        m.onLeft = (ids) => left.push(...ids);
        await m.start();
        members.push(m);
      }
      load = new MixedLoad(kv);
      await load.start();
      await sleep(3000);
      const leader = (await cluster.waitForStableLeader()).id;
      cluster.pause(paused = leader);
      await sleep(5000);
      cluster.resume(leader);
      paused = undefined;
      const next = await cluster.waitForStableLeader();
      await sleep(3000);
      const follower = cluster.ids.find((id) => id !== next.id && id !== leader)!;
      cluster.pause(paused = follower);
      await sleep(5000);
      cluster.resume(follower);
      paused = undefined;
      await sleep(6000);
      const report = await load.stop();
      load = undefined;
      for (const m of members) await m.refresh();
      consoleError(
        `hiccups of ${leader} (leader) and ${follower}: ${report.operations} operations, ` +
          `${report.keepAlives} keepAlives, slowest ${report.maxLatencyMs} ms ` +
          `(at ${report.maxLatencyAtMs} ms), p99 ${report.p99LatencyMs} ms`,
      );
      assert.deepEqual(report.failures, []);
      assert.deepEqual(report.leaseKeysLost, []);
      assert.deepEqual(left, [], "a node left the ring");
      for (const m of members) assert.equal(m.ring.size, 3);
      assert.deepEqual(logged.filter((l) => /lease|renew/.test(l)), []);
    } finally {
      console.error = consoleError;
      if (paused !== undefined) cluster.resume(paused);
      await load?.stop();
      for (const m of members) await m.stop();
      await kv.close();
      await cluster.stop();
    }
  },
});
