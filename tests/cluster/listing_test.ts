/**
 * Directory listings on a cluster node follow every change: a node keeps a directory's listing
 * in its namespace cache until an entry of it changes (its own commit, or another node's seen
 * through the metadata watch), so a listing must show this node's own creates and unlinks at once
 * and another node's as soon as their watch events arrive. A listing kept past a change elsewhere
 * fails here (the deadline is far below the kernel's 10 s cache time, and no cache time applies to
 * the daemon's listings). Needs root and /dev/fuse.
 * @module
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { LocalCluster } from "../../src/cluster/local_cluster.ts";
import { canRunCluster, until } from "./_cluster_util.ts";

async function names(dir: string): Promise<string[]> {
  const out: string[] = [];
  for await (const entry of Deno.readDir(dir)) out.push(entry.name);
  return out.sort();
}

async function listsExactly(dir: string, expected: string[]): Promise<boolean> {
  return JSON.stringify(await names(dir)) === JSON.stringify(expected);
}

Deno.test({
  name: "cluster: a node's directory listings show its own changes at once and other nodes' soon",
  ignore: !canRunCluster(),
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const cluster = await LocalCluster.start("skyfs-cluster-listing-", 2);
    const [a, b] = cluster.nodes;
    try {
      const onA = join(a.mountpoint, "d");
      const onB = join(b.mountpoint, "d");
      await Deno.mkdir(onA);
      for (const n of ["f1", "f2", "f3"]) await Deno.writeFile(join(onA, n), new Uint8Array(1));
      await until(() => listsExactly(onB, ["f1", "f2", "f3"]), "B lists A's three files", 10_000);
      // Listed again, unchanged: the kept listing.
      assert.deepEqual(await names(onB), ["f1", "f2", "f3"]);
      assert.deepEqual(await names(onB), ["f1", "f2", "f3"]);

      // Changes on A: a create, an unlink, a rename within the directory, one into it.
      await Deno.writeFile(join(onA, "f4"), new Uint8Array(1));
      await until(() => listsExactly(onB, ["f1", "f2", "f3", "f4"]), "B lists A's new f4", 5000);
      await Deno.remove(join(onA, "f1"));
      await until(() => listsExactly(onB, ["f2", "f3", "f4"]), "B's listing drops f1", 5000);
      await Deno.rename(join(onA, "f2"), join(onA, "g2"));
      await until(() => listsExactly(onB, ["f3", "f4", "g2"]), "B lists A's rename", 5000);
      await Deno.writeFile(join(a.mountpoint, "outside"), new Uint8Array(1));
      assert.deepEqual(await names(onB), ["f3", "f4", "g2"]);
      await Deno.rename(join(a.mountpoint, "outside"), join(onA, "inside"));
      await until(
        () => listsExactly(onB, ["f3", "f4", "g2", "inside"]),
        "B lists a file A moved into the directory",
        5000,
      );

      // B's own changes show in B's next listing without waiting, and on A soon.
      assert.deepEqual(await names(onA), ["f3", "f4", "g2", "inside"]);
      await Deno.writeFile(join(onB, "h"), new Uint8Array(1));
      assert.deepEqual(await names(onB), ["f3", "f4", "g2", "h", "inside"]);
      await Deno.remove(join(onB, "f3"));
      assert.deepEqual(await names(onB), ["f4", "g2", "h", "inside"]);
      await until(
        () => listsExactly(onA, ["f4", "g2", "h", "inside"]),
        "A lists B's changes",
        5000,
      );
    } finally {
      await cluster.stop();
    }
  },
});
