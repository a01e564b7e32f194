/**
 * Three `skyfs mount` daemons on one machine sharing the metadata store (three CURP replicas, or
 * one etcd member with SKYFS_TEST_META=etcd) and a directory backend: write on A, read on B and C;
 * concurrent writers on different files; kill -9 of a node while all three write and fsync; a node
 * restarted with an empty cache reads everything back; `skyfs status`. Needs root and /dev/fuse
 * (and etcd-server on etcd).
 * @module
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { LocalCluster } from "../../src/cluster/local_cluster.ts";
import {
  canRunCluster,
  clusterStore,
  random,
  same,
  skyfsStatus,
  sleep,
  until,
  writeSynced,
} from "./_cluster_util.ts";

/** Write on A, read on B and C; overwrite on B; one concurrent writer per node. */
async function writeHereReadThere(cluster: LocalCluster, acked: Map<string, Uint8Array>) {
  const [a, b, c] = cluster.nodes;
  // A multi-chunk file and small ones.
  const big = random(9 * 2 ** 20 + 4321);
  await Deno.writeFile(join(a.mountpoint, "big"), big);
  acked.set("big", big);
  for (const node of [b, c]) {
    assert.ok(same(await Deno.readFile(join(node.mountpoint, "big")), big), node.id);
  }
  // Overwrite on B: A and C see the new content at their next open.
  const big2 = random(5 * 2 ** 20);
  await Deno.writeFile(join(b.mountpoint, "big"), big2);
  acked.set("big", big2);
  for (const node of [a, c]) {
    assert.ok(same(await Deno.readFile(join(node.mountpoint, "big")), big2), node.id);
  }
  await Promise.all(cluster.nodes.map(async (node) => {
    for (let i = 0; i < 10; i++) {
      const data = random(100_000 + i);
      await Deno.writeFile(join(node.mountpoint, `w-${node.id}-${i}`), data);
      acked.set(`w-${node.id}-${i}`, data);
    }
  }));
  for (const node of cluster.nodes) {
    for (const [name, data] of acked) {
      assert.ok(same(await Deno.readFile(join(node.mountpoint, name)), data), name);
    }
  }
}

async function withLogs(cluster: LocalCluster, error: unknown): Promise<Error> {
  const logs = await Promise.all(
    [...cluster.nodes, ...cluster.replicas].map(async (d) =>
      `--- ${d.id}:\n${(await cluster.logOf(d)).slice(-3000)}`
    ),
  );
  return new Error(`${(error as Error).message}\n${logs.join("\n")}`);
}

const STORE = clusterStore();

Deno.test({
  name:
    `cluster on ${STORE}: 3 mounts, ${
      STORE === "curp" ? "3 CURP replicas" : "one etcd member"
    }; write here read there, concurrent writers, kill -9 of a node under load, empty cache, ` +
    "skyfs status",
  ignore: !canRunCluster(STORE === "etcd"),
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const cluster = await LocalCluster.start("skyfs-cluster-test-", { meta: STORE });
    try {
      const [a, b, c] = cluster.nodes;
      const acked = new Map<string, Uint8Array>();
      await writeHereReadThere(cluster, acked);
      // kill -9 of B while all three write and fsync: every file whose fsync returned (on B
      // too, before the kill) is readable on A and C; A and C keep writing.
      let stop = false;
      const written = new Map(cluster.nodes.map((n) => [n.id, 0]));
      const writers = cluster.nodes.map(async (node) => {
        for (let i = 0; !stop; i++) {
          const name = `load-${node.id}-${i}`;
          const data = random(300_000);
          try {
            await writeSynced(join(node.mountpoint, name), data);
          } catch (error) {
            if (node === b) return; // killed under it: nothing acknowledged
            throw error;
          }
          acked.set(name, data);
          written.set(node.id, i + 1);
        }
      });
      await until(() => [...written.values()].every((n) => n >= 3), "each node wrote 3 files");
      await cluster.kill(b);
      const atKill = new Map(written);
      await until(
        () => [a, c].every((n) => written.get(n.id)! >= atKill.get(n.id)! + 3),
        "A and C wrote 3 more files after B's kill",
      );
      stop = true;
      await Promise.all(writers);
      for (const node of [a, c]) {
        for (const [name, data] of acked) {
          const got = await Deno.readFile(join(node.mountpoint, name));
          assert.ok(same(got, data), `${node.id} reads ${name}`);
        }
      }
      // B restarts with an empty cache and reads everything back (peers, then backend).
      await Deno.remove(b.dataDir, { recursive: true });
      await Deno.mkdir(b.dataDir);
      await cluster.startNode(b);
      for (const [name, data] of acked) {
        assert.ok(same(await Deno.readFile(join(b.mountpoint, name)), data), `B reads ${name}`);
      }
      // skyfs status lists the three live nodes, and B's reads went to peers for the chunks
      // they own (the other two are alive): its peer fills reach the status within a few lease
      // renewals (1.7 s each).
      const peerFills = (t: string) => Number(t.match(/^b .* (\d+)$/m)?.[1] ?? 0);
      let status = await skyfsStatus(cluster.meta);
      for (let i = 0; i < 10 && status.code === 0 && peerFills(status.text) === 0; i++) {
        await sleep(1000);
        status = await skyfsStatus(cluster.meta);
      }
      assert.equal(status.code, 0, status.text);
      assert.match(status.text, /3 live node\(s\)/);
      if (STORE === "curp") {
        assert.match(status.text, /^metadata: 3 CURP replicas, leader m\d$/m);
      }
      for (const node of cluster.nodes) assert.match(status.text, new RegExp(`^${node.id} `, "m"));
      assert.ok(peerFills(status.text) > 0, status.text);
    } catch (error) {
      throw await withLogs(cluster, error);
    } finally {
      await cluster.stop();
    }
  },
});
