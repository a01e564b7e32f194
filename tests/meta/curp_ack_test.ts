/**
 * Replicas answer a proposal once its witness record is written, before the fdatasync
 * (curp.witness_ack_after_write): a kill -9 of every replica right after fast-path completions
 * keeps them, because the page cache outlives the processes and the restarted replicas recover
 * the commands from their pools (src/meta/curp/README.md).
 * @module
 */

import assert from "node:assert/strict";
import { openCurpKV } from "../../src/meta/curp/curp_kv.ts";
import { TestCluster } from "./_cluster.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const opts = { sanitizeResources: false, sanitizeOps: false };

Deno.test({
  name: "curp ack after write: kill -9 of all replicas right after fast completions loses none",
  ...opts,
  fn: async () => {
    const cluster = await TestCluster.start("curp-ack-");
    const acked = new Map<string, string>();
    try {
      for (let round = 0; round < 4; round++) {
        await cluster.waitForStableLeader();
        const kv = await openCurpKV(cluster.addressList, { timeoutMs: 15_000 });
        const fastBefore = kv.fastCount;
        for (let i = 0; i < 25; i++) {
          const key = `r${round}/k${i}`;
          await kv.txn({
            success: [{ put: { key: encoder.encode(key), value: encoder.encode(`v${i}`) } }],
            revisionsUnused: true,
          });
          acked.set(key, `v${i}`);
        }
        assert.ok(kv.fastCount - fastBefore >= 10, `fast ${kv.fastCount - fastBefore} of 25`);
        // No sync(): the last ones may sit only in written, unsynced witness records.
        await Promise.all(cluster.ids.map((id) => cluster.kill(id)));
        await kv.close().catch(() => {});
        for (const id of cluster.ids) cluster.startReplica(id);
      }
      await cluster.waitForStableLeader();
      const kv = await openCurpKV(cluster.addressList, { timeoutMs: 15_000 });
      const all = await kv.range({ key: encoder.encode("r"), rangeEnd: encoder.encode("s") });
      const stored = new Map(all.kvs.map((e) => [decoder.decode(e.key), decoder.decode(e.value)]));
      for (const [key, value] of acked) assert.equal(stored.get(key), value, `acked ${key} lost`);
      await kv.close();
    } finally {
      await cluster.stop();
    }
  },
});
