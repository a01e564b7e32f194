/**
 * A clean unmount (SIGTERM) of a cluster node leaves none of its open records or locks behind: a
 * file it holds open with a flock (whose RELEASE the unmount drops: the kernel ends the queued
 * requests) keeps its lock key, and a file another node unlinked while this node held it open (an
 * orphan kept for it: this node's watch put its record) keeps its record, until the shutdown
 * (`ClusterData.shutdown` revokes the lease they and the reclaim acknowledgement are on), not one
 * lease TTL later; the orphan is freed afterwards by the node that owns "gc". An open writes no
 * record (issue 13): the held and the closed file have none. Three CURP replicas (or one etcd
 * member with SKYFS_TEST_META=etcd), two mounts, a directory backend. Needs root and /dev/fuse.
 * @module
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { LocalCluster } from "../../src/cluster/local_cluster.ts";
import { openMetaBackend } from "../../src/meta/backend.ts";
import { keys } from "../../src/meta/namespace.ts";
import { prefixEnd } from "../../src/meta/kv.ts";
import { canRunCluster, clusterStore, until } from "./_cluster_util.ts";

const STORE = clusterStore();
const encoder = new TextEncoder();
const decoder = new TextDecoder();

Deno.test({
  name: `cluster on ${STORE}: a clean unmount leaves none of the node's open records behind`,
  ignore: !canRunCluster(STORE === "etcd"),
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const cluster = await LocalCluster.start("unmount-records-", { meta: STORE, nodes: 2 });
    const kv = await openMetaBackend(cluster.meta, { dataDir: cluster.dir });
    let held: Deno.FsFile | undefined;
    try {
      const [a, b] = cluster.nodes;
      /** The open records (`cl/open/<ino>/<node>`), their guards (`cl/openguard/<ino>`), the
       * reclaim acknowledgements (`cl/ack/<node>`) and the lock keys (`cl/lock/<ino>/<node>`, and
       * the lock guards `cl/lock/<ino>/`, which stay). */
      const records = async () => {
        const out: string[] = [];
        for (const name of ["cl/open", "cl/ack/", "cl/lock/"]) {
          const prefix = encoder.encode(name);
          const found = await kv.range({ key: prefix, rangeEnd: prefixEnd(prefix) });
          out.push(...found.kvs.map((kv) => decoder.decode(kv.key)));
        }
        return out.sort();
      };
      const inoOf = (name: string) => Deno.statSync(join(a.mountpoint, name)).ino!;

      // Held open on A (its RELEASE never comes: the unmount drops it).
      held = await Deno.open(join(a.mountpoint, "held"), { write: true, create: true });
      await held.write(encoder.encode("held open"));
      await held.syncData();
      await held.lock(true); // flock(LOCK_EX)
      // Written and closed on A (an open writes no record: only an unlinked file gets one).
      await Deno.writeTextFile(join(a.mountpoint, "closed"), "closed");
      // Held open on A, unlinked on B: an orphan kept for A's handle.
      const orphanFile = await Deno.open(join(a.mountpoint, "orphan"), {
        write: true,
        create: true,
      });
      await orphanFile.write(encoder.encode("orphan"));
      await orphanFile.syncData();
      const ino = { held: inoOf("held"), closed: inoOf("closed"), orphan: inoOf("orphan") };
      await until(() => {
        try {
          Deno.statSync(join(b.mountpoint, "orphan"));
          return true;
        } catch {
          return false;
        }
      }, "B sees the orphan-to-be");
      await Deno.remove(join(b.mountpoint, "orphan"));
      const hex = (n: number) => n.toString(16).padStart(16, "0");
      // A's watch sees the unlink of a file open there and puts its record.
      const orphanRecord = `cl/open/${hex(ino.orphan)}/${a.id}`;
      await until(async () => (await records()).includes(orphanRecord), "A's record of the orphan");
      const before = await records();
      for (const name of ["held", "closed"] as const) {
        const key = `cl/open/${hex(ino[name])}/${a.id}`;
        assert.ok(!before.includes(key), `no record of ${name}, open or closed: ${before}`);
      }
      assert.ok(before.includes(`cl/ack/${a.id}`), `A's acknowledgement: ${before}`);
      const lockKey = `cl/lock/${hex(ino.held)}/${a.id}`;
      assert.ok(before.includes(lockKey), `A's lock key before the unmount: ${before}`);
      assert.equal((await kv.range({ key: keys.inode(ino.orphan) })).count, 1, "orphan kept");

      // SIGTERM: stopNode returns once the daemon exited.
      const stopped = Date.now();
      await cluster.stopNode(a);
      const after = await records();
      const took = Date.now() - stopped;
      // Nothing of A's is left, right at its exit (within the unmount's own time: the lease TTL
      // is 5 s, so a record going with the lease's expiry instead would still be here).
      const left = after.filter((key) =>
        key.endsWith(`/${a.id}`) ||
        (key.startsWith("cl/open") && Object.values(ino).some((n) => key.includes(hex(n))))
      );
      assert.deepEqual(left, [], `A's open records, guards, locks after its unmount (${took} ms)`);
      console.log(`  A stopped in ${took} ms; keys before: ${before.length}, after: ${after}`);
      try {
        held.close();
      } catch { /* the connection is gone */ }
      try {
        orphanFile.close();
      } catch { /* the connection is gone */ }
      held = undefined;
      // The orphan: no record holds it any more, and A left the ring; B (gc) frees it.
      await until(
        async () => (await kv.range({ key: keys.inode(ino.orphan) })).count === 0,
        "the orphan A held freed after A's unmount",
        30_000,
      );
      assert.equal((await kv.range({ key: keys.chunkMap(ino.orphan) })).count, 0);
      // The other two files are still there for B.
      assert.equal(await Deno.readTextFile(join(b.mountpoint, "held")), "held open");
      assert.equal(await Deno.readTextFile(join(b.mountpoint, "closed")), "closed");
    } finally {
      try {
        held?.close();
      } catch { /* the connection is gone */ }
      await kv.close();
      await cluster.stop();
    }
  },
});
