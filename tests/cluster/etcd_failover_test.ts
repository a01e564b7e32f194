/**
 * Two mounts on one etcd member (the etcd counterpart of curp_failover_test.ts and of the quorum
 * step of errors_test.ts): kill -9 of the member while both mounts write and fsync files. While
 * it is down, fsync fails with EIO and each mount logs one line naming the store, without a
 * stack, and `skyfs status` fails naming it; restarted on its data dir, both mounts serve again
 * without a remount, every file whose fsync returned (before, during or after) is intact on both,
 * and a file changed on one is seen changed on the other through the kernel's 60 s attribute
 * cache (the store's watches came back). Needs root, /dev/fuse and etcd-server.
 * @module
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { isMounted, LocalCluster } from "../../src/cluster/local_cluster.ts";
import { canRunCluster, random, same, skyfsStatus, until, writeSynced } from "./_cluster_util.ts";

/** The mounts' wait for the metadata store before EIO (curp.timeout_ms, also etcd's). */
const META_TIMEOUT_MS = 2000;
const EIO = /os error 5\b|Input\/output error/;

Deno.test({
  name: "cluster on etcd: kill -9 of the etcd member under fsyncing writers on 2 mounts; EIO " +
    "with one line naming etcd while down, status says so; nothing acknowledged lost",
  ignore: !canRunCluster(true),
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const cluster = await LocalCluster.start("skyfs-etcd-failover-", {
      meta: "etcd",
      nodes: 2,
      nodeEnv: {
        SKYFS_CURP_TIMEOUT_MS: String(META_TIMEOUT_MS),
        SKYFS_FUSE_CACHE_SECONDS: "60",
      },
    });
    let stop = false;
    let writers: Promise<void>[] = [];
    try {
      const [a, b] = cluster.nodes;
      const acked = new Map<string, Uint8Array>();
      const perNode = new Map(cluster.nodes.map((n) => [n.id, 0]));
      const failed = new Map(cluster.nodes.map((n) => [n.id, [] as string[]]));
      // Each mount writes its own files; every fourth spans two chunks (4 MiB each).
      writers = cluster.nodes.map(async (node) => {
        for (let i = 0; !stop; i++) {
          const name = `f-${node.id}-${i}`;
          const data = random(i % 4 === 3 ? 4 * 2 ** 20 + 777 : 50_000 + i);
          try {
            await writeSynced(join(node.mountpoint, name), data);
          } catch (error) {
            failed.get(node.id)!.push((error as Error).message);
            await new Promise((r) => setTimeout(r, 100));
            continue;
          }
          acked.set(name, data);
          perNode.set(node.id, perNode.get(node.id)! + 1);
        }
      });
      const wrote = (n: number, since = new Map(cluster.nodes.map((x) => [x.id, 0]))) =>
        cluster.nodes.every((node) => perNode.get(node.id)! >= since.get(node.id)! + n);
      await until(() => wrote(4), "each mount acknowledged 4 files");
      const logFrom = new Map<string, number>();
      for (const n of cluster.nodes) logFrom.set(n.id, (await cluster.logOf(n)).length);

      await cluster.killEtcd();
      // While the store is down every mount's writes fail with EIO (none hangs), and each mount
      // logs one line naming the store.
      await until(
        () => cluster.nodes.every((n) => failed.get(n.id)!.length >= 2),
        "two failed writes on each mount while etcd is down",
      );
      for (const node of cluster.nodes) {
        for (const message of failed.get(node.id)!) assert.match(message, EIO, node.id);
        assert.ok(isMounted(node.mountpoint), node.id);
        let log = "";
        await until(async () => {
          log = (await cluster.logOf(node)).slice(logFrom.get(node.id)!);
          return /^skyfs: \w+ failed with EIO: metadata store unreachable: etcd /m.test(log);
        }, `${node.id} logs the store unreachable`).catch((error) => {
          throw new Error(`${(error as Error).message}; its log since the kill:\n${log}`);
        });
        assert.match(
          log,
          new RegExp(
            `^skyfs: \\w+ failed with EIO: metadata store unreachable: etcd at ` +
              `${cluster.etcdClient} did not answer( within ${META_TIMEOUT_MS} ms|: )`,
            "m",
          ),
        );
        assert.doesNotMatch(log, /internal error|^\s+at /m, `a stack trace in ${node.id}'s log`);
      }
      const down = await skyfsStatus(cluster.meta, { SKYFS_CURP_TIMEOUT_MS: "2000" });
      assert.notEqual(down.code, 0, down.text);
      assert.match(down.text, new RegExp(`etcd at ${cluster.etcdClient} did not answer`));
      assert.equal(down.text.trim().split("\n").length, 1, `one line:\n${down.text}`);

      // The member restarts on its data dir: both mounts write again, no remount.
      const atRestart = new Map(perNode);
      await cluster.startEtcd();
      await until(() => wrote(4, atRestart), "each mount acknowledged 4 files after the restart");
      stop = true;
      await Promise.all(writers);
      for (const node of cluster.nodes) {
        for (const [name, data] of acked) {
          const got = await Deno.readFile(join(node.mountpoint, name));
          assert.ok(same(got, data), `${name} on ${node.id}: ${got.length} bytes`);
        }
      }
      // Changes still travel between the mounts: A's kernel keeps attributes 60 s, so only a
      // notification from A's watch (re-created after the restart) shows it B's overwrite.
      const shared = (node: { mountpoint: string }) => join(node.mountpoint, "shared");
      const first = random(70_000);
      await writeSynced(shared(a), first);
      assert.ok(same(await Deno.readFile(shared(b)), first));
      assert.equal((await Deno.stat(shared(a))).size, first.length);
      const second = random(90_000);
      await writeSynced(shared(b), second);
      await until(
        async () => (await Deno.stat(shared(a))).size === second.length,
        "A's stat shows B's overwrite (a notification from A's watch)",
        20_000,
      );
      assert.ok(same(await Deno.readFile(shared(a)), second));
      const status = await skyfsStatus(cluster.meta);
      assert.equal(status.code, 0, status.text);
      assert.match(status.text, /2 live node\(s\)/);
      console.log(
        `${acked.size} files acknowledged; failed while etcd was down: ` +
          cluster.nodes.map((n) => `${n.id} ${failed.get(n.id)!.length}`).join(", "),
      );
    } catch (error) {
      const logs = await Promise.all(
        cluster.nodes.map(async (d) => `--- ${d.id}:\n${(await cluster.logOf(d)).slice(-3000)}`),
      );
      throw new Error(`${(error as Error).message}\n${logs.join("\n")}`);
    } finally {
      // Writers still running would write into the mount points once unmounted.
      stop = true;
      await Promise.all(writers).catch(() => {});
      await cluster.stop();
    }
  },
});
