/**
 * Passthrough writes on a cluster node (cluster.passthrough_writes): a file created or truncated
 * by a write-only open is written by the kernel straight into the node's local file; its fsync
 * and close upload it whole. Three `skyfs mount` daemons on three CURP replicas: written on A,
 * read on B and C; a read-write open of it on A meanwhile fails with ETXTBSY (and shows that the
 * writer got passthrough); fsync then kill -9 of A keeps the data; a rewrite after A's restart
 * is seen on B. Needs root and /dev/fuse.
 * @module
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { LocalCluster } from "../../src/cluster/local_cluster.ts";
import { canRunCluster, random, same, until } from "./_cluster_util.ts";

const MIB = 2 ** 20;

async function writeAll(file: Deno.FsFile, data: Uint8Array): Promise<void> {
  for (let done = 0; done < data.length;) {
    done += await file.write(data.subarray(done, Math.min(done + MIB, data.length)));
  }
}

Deno.test({
  name: "cluster passthrough writes: read elsewhere, ETXTBSY for a read-write open meanwhile, " +
    "fsync + kill -9 keeps the data, a rewrite is seen elsewhere",
  ignore: !canRunCluster(),
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const cluster = await LocalCluster.start("skyfs-passthrough-test-", {
      nodeEnv: { SKYFS_CLUSTER_PASSTHROUGH_WRITES: "true" },
    });
    try {
      const [a, b, c] = cluster.nodes;
      assert.match(await cluster.logOf(a), /passthrough on/);
      const path = (node: typeof a, name: string) => join(node.mountpoint, name);

      // Written on A through a write-only create (passthrough), still open.
      const content = random(9 * MIB + 1234);
      const file = await Deno.open(path(a, "p"), { write: true, create: true, truncate: true });
      await writeAll(file, content.subarray(0, 5 * MIB));
      // The size on A follows the kernel's writes; a reader on A reads them.
      assert.equal((await Deno.stat(path(a, "p"))).size, 5 * MIB);
      assert.ok(same(await Deno.readFile(path(a, "p")), content.subarray(0, 5 * MIB)));
      // A read-write open could map the local file: refused while the writer is open.
      await assert.rejects(
        Deno.open(path(a, "p"), { read: true, write: true }),
        (error: Error) => /Text file busy|ETXTBSY/i.test(error.message),
      );
      await writeAll(file, content.subarray(5 * MIB));
      // fsync, no close: kill -9 of A right after, B and C read it all.
      await file.sync();
      await cluster.kill(a);
      try {
        file.close();
      } catch { /* A's mount is gone */ }
      await until(async () => {
        try {
          return (await Deno.stat(path(b, "p"))).size === content.length;
        } catch {
          return false;
        }
      }, "the size on B");
      assert.ok(same(await Deno.readFile(path(b, "p")), content), "B reads A's fsync'd data");
      assert.ok(same(await Deno.readFile(path(c, "p")), content), "C reads A's fsync'd data");

      // A back: a rewrite (O_TRUNC, shorter) closed on A is what B and C read next.
      await cluster.startNode(a);
      const shorter = random(3 * MIB + 77);
      await Deno.writeFile(path(a, "p"), shorter);
      assert.ok(same(await Deno.readFile(path(b, "p")), shorter), "B reads A's rewrite");
      assert.ok(same(await Deno.readFile(path(c, "p")), shorter), "C reads A's rewrite");
      // Then written on B (through B's own passthrough): A's next open reads B's bytes.
      const fromB = random(2 * MIB + 5);
      await Deno.writeFile(path(b, "p"), fromB);
      assert.ok(same(await Deno.readFile(path(a, "p")), fromB), "A reads B's rewrite");
      // An append (no O_TRUNC: written through the daemon as before) on A is seen on C.
      const more = random(100_000);
      await Deno.writeFile(path(a, "p"), more, { append: true });
      const appended = new Uint8Array(fromB.length + more.length);
      appended.set(fromB);
      appended.set(more, fromB.length);
      assert.ok(same(await Deno.readFile(path(c, "p")), appended), "C reads A's append");
    } catch (error) {
      const logs = await Promise.all(
        cluster.nodes.map(async (d) => `--- ${d.id}:\n${(await cluster.logOf(d)).slice(-3000)}`),
      );
      throw new Error(`${(error as Error).message}\n${logs.join("\n")}`);
    } finally {
      await cluster.stop();
    }
  },
});
