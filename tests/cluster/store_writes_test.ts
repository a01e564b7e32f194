/**
 * Store writes per POSIX operation on a one-node cluster, on one etcd member (proposals committed,
 * from etcd's /metrics) and on three CURP replicas (log entries the leader appended): an unlink of
 * a file closed a moment ago (its open record lingering), an unlink that leaves the file another
 * name, and a link each cost one. Issue 13 item 1: before, etcd's unlink cost two (its own watch
 * echo, sent before the reply, released the open record its commit had deleted: a second txn).
 * Needs root and /dev/fuse (and etcd-server for the etcd case).
 * @module
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { LocalCluster } from "../../src/cluster/local_cluster.ts";
import { parsePrometheusText } from "../../bench/store_counters.ts";
import { openEtcdKV } from "../../src/meta/etcd.ts";
import { prefixEnd } from "../../src/meta/kv.ts";
import { canRunCluster, sleep } from "./_cluster_util.ts";

const FILES = 12;

/** The store's count of committed writes so far. */
async function proposals(cluster: LocalCluster): Promise<number> {
  if (cluster.meta.startsWith("etcd://")) {
    const client = cluster.meta.slice("etcd://".length);
    const text = await (await fetch(`http://${client}/metrics`)).text();
    return parsePrometheusText(text).get("etcd_server_proposals_committed_total")!;
  }
  const leader = await cluster.metaLeader();
  return (await cluster.replicaStatus(leader))!.proposals;
}

/** Lease renewals: a CURP keep-alive is a log entry (etcd's leader answers one without a
 * proposal). A mount renews two leases (membership, open records) every 5 s / 3. */
const RENEWAL_MS = 5000 / 3;

/** Writes the store committed during `run` (counted once late work settled: a release or a purge
 * started after the reply lands within the pause), less the lease renewals it may hold. */
async function writesOf(cluster: LocalCluster, run: () => Promise<unknown>): Promise<number> {
  const before = await proposals(cluster);
  const started = Date.now();
  await run();
  await sleep(400);
  const writes = (await proposals(cluster)) - before;
  const renewals = cluster.meta.startsWith("etcd://")
    ? 0
    : 2 * Math.ceil((Date.now() - started) / RENEWAL_MS);
  // Never below the operations' own writes: only what the renewals may explain is forgiven.
  return Math.max(writes - renewals, Math.min(writes, FILES / 2));
}

async function perOperation(cluster: LocalCluster): Promise<Record<string, number>> {
  const dir = join(cluster.nodes[0].mountpoint, "d");
  await Deno.mkdir(dir);
  for (let i = 0; i < FILES; i++) await Deno.writeFile(join(dir, `f${i}`), new Uint8Array(100));
  await sleep(500);
  const costs: Record<string, number> = {};
  // Each file closed here moments ago: its open record lingers, and the unlink deletes it.
  costs.unlink = await writesOf(cluster, async () => {
    for (let i = 0; i < FILES / 2; i++) await Deno.remove(join(dir, `f${i}`));
  });
  costs.link = await writesOf(cluster, async () => {
    for (let i = FILES / 2; i < FILES; i++) await Deno.link(join(dir, `f${i}`), join(dir, `g${i}`));
  });
  // The file keeps its other name: nothing to free.
  costs.unlinkLinked = await writesOf(cluster, async () => {
    for (let i = FILES / 2; i < FILES; i++) await Deno.remove(join(dir, `g${i}`));
  });
  for (const [what, writes] of Object.entries(costs)) costs[what] = writes / (FILES / 2);
  // The files are gone everywhere: no open record or guard of theirs left on the lease.
  for (let i = FILES / 2; i < FILES; i++) await Deno.remove(join(dir, `f${i}`));
  return costs;
}

for (const meta of ["etcd", "curp"] as const) {
  Deno.test({
    name: `store writes on ${meta}: one per unlink (open record lingering), per link, per unlink ` +
      "of a linked file",
    ignore: !canRunCluster(meta === "etcd"),
    sanitizeResources: false,
    sanitizeOps: false,
    fn: async () => {
      const cluster = await LocalCluster.start(`skyfs-writes-${meta}-`, { meta, nodes: 1 });
      try {
        const costs = await perOperation(cluster);
        await sleep(400);
        const idle = await proposals(cluster);
        await sleep(3000);
        const upkeep = ((await proposals(cluster)) - idle) / 3;
        console.log(
          `${meta}: writes per operation ${JSON.stringify(costs)}, upkeep ${
            upkeep.toFixed(2)
          }/s idle`,
        );
        // At most one write of slack over the six operations (etcd: a lease grant; CURP: a
        // renewal past the allowance); the old etcd unlink made two each (12).
        for (const [what, perOp] of Object.entries(costs)) {
          assert.ok(perOp >= 1 && perOp <= 1 + 1 / (FILES / 2), `${meta} ${what}: ${perOp}`);
        }
        if (meta === "etcd") {
          // Every file is gone, and with it every open record and guard (the unlinks deleted them).
          const kv = await openEtcdKV([cluster.meta.slice("etcd://".length)]);
          try {
            const prefix = new TextEncoder().encode("cl/open");
            const left = await kv.range({ key: prefix, rangeEnd: prefixEnd(prefix) });
            assert.equal(left.kvs.length, 0, "open records or guards left behind");
          } finally {
            await kv.close();
          }
        }
      } finally {
        await cluster.stop();
      }
    },
  });
}
