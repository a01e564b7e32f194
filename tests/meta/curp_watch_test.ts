/**
 * A watch across a leader kill: the replica serving it (the leader) dies, the client resubscribes
 * on another replica from the next undelivered revision, and every event arrives once, in order.
 * @module
 */

import assert from "node:assert/strict";
import { openCurpKV } from "../../src/meta/curp/curp_kv.ts";
import { TestCluster } from "./_cluster.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

Deno.test({
  name: "curp watch: kill -9 of the serving leader loses and repeats no event",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const cluster = await TestCluster.start("curp3-watch-");
    const kv = await openCurpKV(cluster.addressList, { timeoutMs: 20_000, log: () => {} });
    const seen: { revision: number; value: string }[] = [];
    try {
      const key = encoder.encode("watched");
      const first = await kv.put({ key, value: encoder.encode("0") });
      const watcher = kv.watch({ key }, { startRevision: first.revision }, (events, revision) => {
        for (const e of events) seen.push({ revision, value: decoder.decode(e.kv.value) });
      });
      let last = first.revision;
      for (let i = 1; i < 20; i++) {
        last = (await kv.put({ key, value: encoder.encode(String(i)) })).revision;
      }
      await cluster.kill(await cluster.waitForLeader());
      for (let i = 20; i < 40; i++) {
        last = (await kv.put({ key, value: encoder.encode(String(i)) })).revision;
      }
      const deadline = Date.now() + 20_000;
      while ((seen.at(-1)?.revision ?? 0) < last && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 50));
      }
      watcher.cancel();
      assert.deepEqual(seen.map((s) => s.value), Array.from({ length: 40 }, (_, i) => String(i)));
      const revisions = seen.map((s) => s.revision);
      assert.deepEqual(revisions, [...revisions].sort((a, b) => a - b));
    } finally {
      await kv.close();
      await cluster.stop();
    }
  },
});
