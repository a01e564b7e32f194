/**
 * The kernel caches of a cluster node follow changes made on other nodes: FUSE notifications
 * drop cached attributes of files changed elsewhere, and a node keeps a file's pages across opens
 * while nothing changed it (close-to-open otherwise). Node B runs with a 60 s kernel cache
 * time, so only a notification can make it see a change inside the test's deadlines. Needs root,
 * /dev/fuse, etcd-server and util-linux's fincore.
 * @module
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { freePort, isMounted, LocalCluster, waitFor } from "../../src/cluster/local_cluster.ts";

const ROOT = new URL("../../", import.meta.url).pathname;

function canRun(): boolean {
  try {
    Deno.statSync("/dev/fuse");
    Deno.statSync("/usr/bin/etcd");
    Deno.statSync("/usr/bin/fincore");
    return Deno.uid() === 0;
  } catch {
    return false;
  }
}

function filled(n: number, byte: number): Uint8Array {
  return new Uint8Array(n).fill(byte);
}

/** Pages of `path` in the page cache, by util-linux's fincore (which opens the file itself). */
async function residentPages(path: string): Promise<number> {
  const out = await new Deno.Command("fincore", {
    args: ["--bytes", "--noheadings", "--output", "PAGES", path],
  }).output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  return Number(new TextDecoder().decode(out.stdout).trim());
}

Deno.test({
  name: "cluster: kernel attributes follow other nodes; unchanged files keep their pages",
  ignore: !canRun(),
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const cluster = await LocalCluster.start("cluster-kcache-", 1);
    const [a] = cluster.nodes;
    const bMount = join(cluster.dir, "mnt-kb");
    const bData = join(cluster.dir, "data-kb");
    await Deno.mkdir(bMount);
    await Deno.mkdir(bData);
    const b = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        join(ROOT, "mod.ts"),
        "mount",
        bMount,
        "--data",
        bData,
        "--meta",
        cluster.meta,
        "--backend",
        cluster.backend,
        "--node-id",
        "kb",
        "--peer-listen",
        `127.0.0.1:${freePort()}`,
        "--cache-seconds",
        "60",
      ],
      stdout: "null",
      stderr: "inherit",
    }).spawn();
    try {
      await waitFor(() => Promise.resolve(isMounted(bMount)), 60_000, "mount kb");

      // 1. Attributes B caches go when A changes the file; B's next open sees the content
      // (close-to-open), even while B still holds the file open from before.
      const size = 1 << 20;
      await Deno.writeFile(join(a.mountpoint, "f"), filled(size, 1));
      const held = await Deno.open(join(bMount, "f"));
      try {
        assert.equal((await held.stat()).size, size);
        assert.ok((await Deno.readFile(join(bMount, "f"))).every((x) => x === 1));
        await Deno.writeFile(join(a.mountpoint, "f"), filled(2 * size, 2));
        await waitFor(
          async () => (await Deno.stat(join(bMount, "f"))).size === 2 * size,
          15_000,
          "B's stat showing the size A wrote (attribute notification)",
        );
        const again = await Deno.readFile(join(bMount, "f"));
        assert.equal(again.length, 2 * size);
        assert.ok(again.every((x) => x === 2));
      } finally {
        held.close();
      }

      // 2. A file nobody changed keeps its pages across B's opens (fincore opens it again).
      const pages = (4 << 20) / 4096;
      await Deno.writeFile(join(a.mountpoint, "g"), filled(4 << 20, 3));
      assert.equal((await Deno.readFile(join(bMount, "g"))).length, 4 << 20);
      assert.equal(await residentPages(join(bMount, "g")), pages);
      // A change on A drops them, and B's next open sees the new content.
      await Deno.writeFile(join(a.mountpoint, "g"), filled(4 << 20, 4));
      await waitFor(
        async () => (await Deno.readFile(join(bMount, "g"))).every((x) => x === 4),
        15_000,
        "B reading A's new content of g",
      );
    } finally {
      b.kill("SIGTERM");
      const timer = setTimeout(() => b.kill("SIGKILL"), 10_000);
      await b.status;
      clearTimeout(timer);
      if (isMounted(bMount)) {
        await new Deno.Command("umount", { args: ["-l", bMount], stderr: "null" }).output();
      }
      await cluster.stop();
    }
  },
});
