/**
 * Three `skyfs mount` daemons on one machine sharing etcd and a directory backend: write on A,
 * read on B and C; concurrent writers on different files; kill -9 of a node under load; a node
 * restarted with an empty cache reads everything back. Needs root, /dev/fuse and etcd-server.
 * @module
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { LocalCluster } from "../../src/cluster/local_cluster.ts";

function canRun(): boolean {
  try {
    Deno.statSync("/dev/fuse");
    Deno.statSync("/usr/bin/etcd");
    return Deno.uid() === 0;
  } catch {
    return false;
  }
}

function random(n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i += 65536) crypto.getRandomValues(out.subarray(i, i + 65536));
  return out;
}

function same(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

Deno.test({
  name:
    "cluster: 3 mounts on etcd; write here read there, concurrent writers, kill -9, empty cache",
  ignore: !canRun(),
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const cluster = await LocalCluster.start("cluster-test-");
    try {
      const [a, b, c] = cluster.nodes;
      const acked = new Map<string, Uint8Array>();
      // 1. Write on A, read on B and C (a multi-chunk file and small ones).
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
      // 2. Concurrent writers on different files, one per node.
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
      // 3. kill -9 of B while A writes: every write A acknowledged is readable on C.
      let stop = false;
      const writer = (async () => {
        for (let i = 0; !stop; i++) {
          const data = random(300_000);
          await Deno.writeFile(join(a.mountpoint, `load-${i}`), data);
          acked.set(`load-${i}`, data);
        }
      })();
      while (![...acked.keys()].some((k) => k === "load-5")) {
        await new Promise((r) => setTimeout(r, 20));
      }
      await cluster.kill(b);
      const atKill = acked.size;
      while (acked.size < atKill + 5) await new Promise((r) => setTimeout(r, 20));
      stop = true;
      await writer;
      for (const [name, data] of acked) {
        assert.ok(same(await Deno.readFile(join(c.mountpoint, name)), data), `C reads ${name}`);
      }
      // 4. B restarts with an empty cache and reads everything back (peers, then backend).
      await Deno.remove(b.dataDir, { recursive: true });
      await Deno.mkdir(b.dataDir);
      await cluster.startNode(b);
      for (const [name, data] of acked) {
        assert.ok(same(await Deno.readFile(join(b.mountpoint, name)), data), `B reads ${name}`);
      }
      // skyfs status lists the three live nodes, and B's reads went to peers for the chunks
      // they own (the other two are alive): its peer fills reach the status within a few lease
      // renewals (1.7 s each).
      const status = async () => {
        const out = await new Deno.Command(Deno.execPath(), {
          args: [
            "run",
            "-A",
            join(import.meta.dirname!, "../../mod.ts"),
            "status",
            "--meta",
            cluster.meta,
          ],
          stdout: "piped",
        }).output();
        const text = new TextDecoder().decode(out.stdout);
        assert.equal(out.code, 0, text);
        return text;
      };
      let text = await status();
      assert.match(text, /3 live node\(s\)/);
      const peerFills = (t: string) => Number(t.match(/^b .* (\d+)$/m)?.[1] ?? 0);
      for (let i = 0; i < 10 && peerFills(text) === 0; i++) {
        await new Promise((r) => setTimeout(r, 1000));
        text = await status();
      }
      assert.ok(peerFills(text) > 0, text);
    } finally {
      await cluster.stop();
    }
  },
});
