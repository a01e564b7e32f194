/**
 * Three mounts on three CURP replicas: kill -9 of the metadata leader while every mount writes
 * and fsyncs files; the cluster keeps serving after the election, every file whose fsync returned
 * is intact on all three nodes, and the killed replica, restarted, catches up and carries the
 * quorum when the next leader is killed. Needs root and /dev/fuse.
 * @module
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { LocalCluster, type LocalReplica } from "../../src/cluster/local_cluster.ts";
import { canRunCluster, random, same, skyfsStatus, until, writeSynced } from "./_cluster_util.ts";

Deno.test({
  name: "cluster on CURP: kill -9 of the meta leader under fsyncing writers on 3 mounts; " +
    "nothing acknowledged lost; the restarted replica catches up",
  ignore: !canRunCluster(),
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const cluster = await LocalCluster.start("skyfs-curp-failover-");
    try {
      const acked = new Map<string, Uint8Array>();
      const perNode = new Map(cluster.nodes.map((n) => [n.id, 0]));
      const failures: string[] = [];
      let stop = false;
      // Each mount writes its own files; every fourth spans two chunks (4 MiB each), so a chunk
      // map with several entries changes in one transaction while the leader dies.
      const writers = cluster.nodes.map(async (node) => {
        for (let i = 0; !stop; i++) {
          const name = `f-${node.id}-${i}`;
          const data = random(i % 4 === 3 ? 4 * 2 ** 20 + 777 : 50_000 + i);
          try {
            await writeSynced(join(node.mountpoint, name), data);
          } catch (error) {
            failures.push(`${name} on ${node.id}: ${(error as Error).message}`);
            continue;
          }
          acked.set(name, data);
          perNode.set(node.id, perNode.get(node.id)! + 1);
        }
      });
      const everyNodeWrote = (n: number) => [...perNode.values()].every((count) => count >= n);
      await until(() => everyNodeWrote(4), "each mount acknowledged 4 files");
      const leader = await cluster.metaLeader();
      const before = new Map(perNode);
      await cluster.killReplica(leader);
      const next = await cluster.metaLeader();
      assert.notEqual(next.id, leader.id);
      // skyfs status names the new leader and the dead replica.
      const status = await skyfsStatus(cluster.meta);
      assert.equal(status.code, 0, status.text);
      assert.match(status.text, new RegExp(`^metadata: 3 CURP replicas, leader ${next.id}$`, "m"));
      assert.match(status.text, new RegExp(`^  ${leader.id} .* unreachable: `, "m"));
      // Writes continue on every mount after the election.
      await until(
        () => cluster.nodes.every((n) => perNode.get(n.id)! >= before.get(n.id)! + 4),
        "each mount acknowledged 4 more files after the kill",
      );
      stop = true;
      await Promise.all(writers);
      // A leader change delays commands (the client retries), it does not fail them.
      assert.deepEqual(failures, []);
      await checkAll(cluster, acked, "after the leader's kill");
      console.log(
        `leader ${leader.id} killed after ${[...before.values()]} files per mount, ` +
          `${acked.size} acknowledged in all; new leader ${next.id}`,
      );

      // The killed replica restarts on its data dir and catches up with the new leader.
      await cluster.startReplica(leader);
      await writeSynced(join(cluster.nodes[0].mountpoint, "after-restart"), random(1000));
      await caughtUp(cluster, leader, next);
      // It now carries the quorum: kill the current leader, the namespace is still all there
      // (every open reads the inode and the chunk map through the quorum) and writable.
      await cluster.killReplica(next);
      const third = await cluster.metaLeader();
      assert.ok(third.id !== next.id);
      const late = random(300_000);
      await writeSynced(join(cluster.nodes[1].mountpoint, "late"), late);
      acked.set("late", late);
      await checkAll(cluster, acked, "with the restarted replica in the quorum");
    } catch (error) {
      const logs = await Promise.all(
        [...cluster.nodes, ...cluster.replicas].map(async (d) =>
          `--- ${d.id}:\n${(await cluster.logOf(d)).slice(-3000)}`
        ),
      );
      throw new Error(`${(error as Error).message}\n${logs.join("\n")}`);
    } finally {
      await cluster.stop();
    }
  },
});

async function checkAll(cluster: LocalCluster, acked: Map<string, Uint8Array>, when: string) {
  for (const node of cluster.nodes) {
    for (const [name, data] of acked) {
      const got = await Deno.readFile(join(node.mountpoint, name));
      assert.ok(same(got, data), `${name} on ${node.id} ${when}: ${got.length} bytes`);
    }
  }
}

/** The restarted replica follows `leader` and has applied everything the leader had. */
async function caughtUp(cluster: LocalCluster, replica: LocalReplica, leader: LocalReplica) {
  let last = "";
  await until(async () => {
    const [mine, theirs] = await Promise.all([
      cluster.replicaStatus(replica),
      cluster.replicaStatus(leader),
    ]);
    last = JSON.stringify({ mine, theirs });
    return mine !== undefined && theirs !== undefined && mine.leaderId === leader.id &&
      mine.appliedIndex >= theirs.commitIndex && mine.revision >= theirs.revision;
  }, `replica ${replica.id} catching up`).catch((error) => {
    throw new Error(`${(error as Error).message}; last status ${last}`);
  });
}
