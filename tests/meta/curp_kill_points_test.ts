/**
 * kill -9 of a replica at random points under proposal load: the leader and a follower in turn,
 * then every replica at once. Replicas copy Readies into a shared mapping of log.bin and answer
 * from it (proposal replies after the copy, the rest after the fdatasync that covers it, many
 * Readies per fdatasync: src/meta/curp/README.md "Where a proposal's time goes"), so a kill can
 * land between a copy and its fdatasync, during a log rewrite or while the file grows. Asserts
 * that every transaction a client saw acknowledged is still there, that every killed replica
 * comes back from its data directory and rejoins, and that every log.bin loads at the end.
 * The seed is printed; SEED=N in the environment replays one.
 * @module
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { openCurpKV } from "../../src/meta/curp/curp_kv.ts";
import { ReplicaStorage } from "../../src/meta/curp/storage.ts";
import { openIoEngine } from "../../src/io/mod.ts";
import { TestCluster } from "./_cluster.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const opts = { sanitizeResources: false, sanitizeOps: false };

/** mulberry32: a small seeded generator, so a failing run can be replayed. */
function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

Deno.test({
  name: "curp kill points: kill -9 of the leader, a follower, then all, under load loses nothing",
  ...opts,
  fn: async () => {
    const seed = Number(Deno.env.get("SEED") ?? Math.floor(Math.random() * 2 ** 31));
    console.log(`curp kill points: seed ${seed}`);
    const random = seeded(seed);
    // A small snapshot interval: log rewrites (compactions) happen during the run too.
    const cluster = await TestCluster.start("h1-curp-kill-", 3, {
      SKYFS_CURP_SNAPSHOT_EVERY: "300",
    });
    const acked = new Map<string, string>();
    let stop = false;
    let failures = 0;
    const kv = await openCurpKV(cluster.addressList, { timeoutMs: 20_000 });
    const writer = async (w: number) => {
      for (let n = 0; !stop; n++) {
        const key = `w${w}/${String(n).padStart(6, "0")}`;
        const value = `${seed}-${w}-${n}`;
        try {
          await kv.txn({
            success: [{ put: { key: encoder.encode(key), value: encoder.encode(value) } }],
            revisionsUnused: true,
          });
          acked.set(key, value);
        } catch {
          failures++; // not acknowledged: it may or may not be stored
          await sleep(50);
        }
      }
    };
    try {
      const writers = [0, 1, 2, 3].map(writer);
      const kills: string[] = [];
      for (let round = 0; round < 6; round++) {
        const leader = (await cluster.waitForStableLeader(30_000)).id;
        await sleep(200 + random() * 800);
        const followers = cluster.ids.filter((id) => id !== leader);
        const victim = round % 2 === 0 ? leader : followers[Math.floor(random() * 2)];
        const before = acked.size;
        await cluster.kill(victim);
        kills.push(`${victim}${victim === leader ? "(leader)" : ""} after ${before} acked`);
        await sleep(random() * 400);
        cluster.startReplica(victim);
      }
      // Everyone at once, right under load: what was only copied into the mapping survives.
      await cluster.waitForStableLeader(30_000);
      await sleep(200 + random() * 500);
      await Promise.all(cluster.ids.map((id) => cluster.kill(id)));
      kills.push(`all after ${acked.size} acked`);
      for (const id of cluster.ids) cluster.startReplica(id);
      await cluster.waitForStableLeader(30_000);
      await sleep(500);
      stop = true;
      await Promise.all(writers);
      console.log(`curp kill points: ${kills.join("; ")}; ${failures} failed attempts`);
      assert.ok(acked.size > 100, `only ${acked.size} transactions acknowledged`);

      const check = await openCurpKV(cluster.addressList, { timeoutMs: 20_000 });
      try {
        const all = await check.range({ key: encoder.encode("w"), rangeEnd: encoder.encode("x") });
        const stored = new Map(
          all.kvs.map((e) => [decoder.decode(e.key), decoder.decode(e.value)]),
        );
        const lost = [...acked].filter(([key, value]) => stored.get(key) !== value);
        assert.deepEqual(lost.slice(0, 10), [], `${lost.length} of ${acked.size} acked lost`);
      } finally {
        await check.close();
      }
    } finally {
      stop = true;
      await kv.close().catch(() => {});
      // The logs as the last kill -9 leaves them load (torn tails cut, frames whole).
      await Promise.all(cluster.ids.map((id) => cluster.kill(id)));
      const io = await openIoEngine({ log: () => {} });
      try {
        for (const id of cluster.ids) {
          const dir = join(cluster.dir, id);
          const { storage, state } = await ReplicaStorage.open(
            dir,
            { cluster: cluster.peers, id },
            io,
          );
          await storage.close();
          const indexes = state.log.map((e) => e.index);
          const first = (state.snapshot?.index ?? 0) + 1;
          assert.deepEqual(indexes, indexes.map((_, i) => first + i), `log of ${id}`);
        }
      } finally {
        await io.shutdown();
        await cluster.stop();
      }
    }
  },
});
