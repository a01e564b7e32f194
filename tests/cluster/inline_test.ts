/**
 * Small files inline (cluster.inline_bytes, default 4096) on a real cluster: three CURP replicas,
 * a directory backend, two `skyfs mount` daemons A and B.
 * - 60 small files written (fsync) on A: A's backend PUT counter (skyfs_backend_requests_total)
 *   does not move, every chunk map is format 2, no object is in the backend directory.
 * - Read on B: every byte equal, from the maps (skyfs_read_bytes_total{tier="inline"} grows by
 *   their size), no backend GET.
 * - A file grown past the limit on B: one PUT, format 1, A reads it; shrunk again: format 2.
 * - Truncate on B, overwrite on B, rename and hard link on A, unlink on B: A and B see the same
 *   content; the last unlink removes the map.
 * Needs root and /dev/fuse.
 * @module
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { LocalCluster, type LocalNode } from "../../src/cluster/local_cluster.ts";
import { openMetaBackend } from "../../src/meta/backend.ts";
import type { MetaKV } from "../../src/meta/kv.ts";
import { keys } from "../../src/meta/namespace.ts";
import { parseMetricsText } from "../../src/http/metrics_text.ts";
import { TEST_TMP } from "../_harness.ts";
import { canRunCluster, random, same, until, writeSynced } from "./_cluster_util.ts";

/** A node's sample of `name` whose labels include `labels` (0 if none). */
async function metric(
  cluster: LocalCluster,
  node: LocalNode,
  name: string,
  labels: Record<string, string>,
): Promise<number> {
  let url: string | undefined;
  await until(async () => {
    url = /http: listening on (http:\/\/\S+)/.exec(await cluster.logOf(node))?.[1];
    return url !== undefined;
  }, `${node.id}'s HTTP endpoint`);
  const text = await (await fetch(`${url}/metrics`)).text();
  // Only this metric's lines are parsed: another line may read "Nan" (the event loop lag gauges
  // before their first sample), which parseMetricsText refuses.
  const lines = text.split("\n").filter((line) => line.startsWith(`${name}{`)).join("\n");
  return parseMetricsText(lines).find((s) =>
    s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v)
  )?.value ?? 0;
}

const puts = (cluster: LocalCluster, node: LocalNode) =>
  metric(cluster, node, "skyfs_backend_requests_total", { op: "put" });
const gets = (cluster: LocalCluster, node: LocalNode) =>
  metric(cluster, node, "skyfs_backend_requests_total", { op: "get" });
const inlineRead = (cluster: LocalCluster, node: LocalNode) =>
  metric(cluster, node, "skyfs_read_bytes_total", { tier: "inline" });

/** The stored chunk map's format (1 or 2), undefined when the inode has none. */
async function mapFormat(kv: MetaKV, ino: number): Promise<number | undefined> {
  const found = (await kv.range({ key: keys.chunkMap(ino) })).kvs[0];
  return found ? JSON.parse(new TextDecoder().decode(found.value)).v : undefined;
}

async function objectsIn(dir: string): Promise<number> {
  let n = 0;
  const walk = async (path: string) => {
    for await (const entry of Deno.readDir(path)) {
      if (entry.isDirectory) await walk(join(path, entry.name));
      else if (!entry.name.startsWith(".")) n++;
    }
  };
  try {
    await walk(join(dir, "o", "c"));
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
  return n;
}

Deno.test({
  name: "inline: small files on A make no backend PUT and are read on B from their maps; " +
    "grow past the limit, truncate, overwrite, rename, link, unlink",
  ignore: !canRunCluster(),
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const cluster = await LocalCluster.start("skyfs-inline-test-", {
      nodes: 2,
      parentDir: TEST_TMP,
    });
    const kv = await openMetaBackend(cluster.meta, { dataDir: cluster.dir });
    try {
      const [a, b] = cluster.nodes;
      const at = (node: LocalNode, ...names: string[]) => join(node.mountpoint, ...names);
      const ino = async (path: string) => (await Deno.stat(path)).ino!;

      const puts0 = await puts(cluster, a);
      const objects0 = await objectsIn(cluster.backend);
      const files = new Map<string, Uint8Array>();
      for (let i = 0; i < 60; i++) files.set(`s${i}`, random(i === 0 ? 4096 : 1 + i * 67));
      await Deno.mkdir(at(a, "d"));
      for (const [name, data] of files) await writeSynced(at(a, "d", name), data);
      assert.equal(await puts(cluster, a) - puts0, 0, "small files make no backend PUT");
      assert.equal(await objectsIn(cluster.backend), objects0);
      for (const name of files.keys()) {
        assert.equal(await mapFormat(kv, await ino(at(a, "d", name))), 2, `${name}'s map`);
      }

      const gets0 = await gets(cluster, b);
      const inline0 = await inlineRead(cluster, b);
      for (const [name, data] of files) {
        assert.ok(same(await Deno.readFile(at(b, "d", name)), data), `${name} read on B`);
      }
      const total = [...files.values()].reduce((n, f) => n + f.length, 0);
      assert.equal(await inlineRead(cluster, b) - inline0, total, "B read them from the maps");
      assert.equal(await gets(cluster, b) - gets0, 0, "no backend GET on B");

      // Grown past the limit on B (an append): a chunk object, map format 1; A reads it.
      const grownIno = await ino(at(b, "d", "s1"));
      const putsB = await puts(cluster, b);
      const more = random(5000);
      const appender = await Deno.open(at(b, "d", "s1"), { append: true });
      await appender.write(more);
      await appender.sync();
      appender.close();
      const grown = new Uint8Array(files.get("s1")!.length + more.length);
      grown.set(files.get("s1")!);
      grown.set(more, files.get("s1")!.length);
      assert.equal(await puts(cluster, b) - putsB, 1);
      assert.equal(await mapFormat(kv, grownIno), 1);
      assert.ok(same(await Deno.readFile(at(a, "d", "s1")), grown), "grown file read on A");
      // Rewritten small on A: inline again; B reads it.
      const small = random(10);
      await writeSynced(at(a, "d", "s1"), small);
      assert.equal(await mapFormat(kv, grownIno), 2);
      assert.ok(same(await Deno.readFile(at(b, "d", "s1")), small));

      // Truncate on B, read on A.
      await Deno.truncate(at(b, "d", "s2"), 7);
      assert.ok(same(await Deno.readFile(at(a, "d", "s2")), files.get("s2")!.subarray(0, 7)));
      // Overwrite in place on B (same size, new bytes), read on A.
      const over = random(files.get("s3")!.length);
      const file = await Deno.open(at(b, "d", "s3"), { write: true });
      await file.write(over);
      await file.sync();
      file.close();
      assert.ok(same(await Deno.readFile(at(a, "d", "s3")), over));

      // Rename and hard link on A, read on B; unlink of one name on B keeps the other.
      await Deno.rename(at(a, "d", "s4"), at(a, "d", "r4"));
      await Deno.link(at(a, "d", "r4"), at(a, "d", "l4"));
      assert.ok(same(await Deno.readFile(at(b, "d", "r4")), files.get("s4")!));
      assert.ok(same(await Deno.readFile(at(b, "d", "l4")), files.get("s4")!));
      const linkedIno = await ino(at(b, "d", "l4"));
      await Deno.remove(at(b, "d", "r4"));
      assert.ok(same(await Deno.readFile(at(a, "d", "l4")), files.get("s4")!));
      // The last name goes: the inode and its map go (A's lingering open record makes it an
      // orphan first, which A frees when its watch sees the unlink).
      await Deno.remove(at(b, "d", "l4"));
      await until(async () => await mapFormat(kv, linkedIno) === undefined, "l4's map deleted");
      await until(async () => {
        try {
          await Deno.stat(at(a, "d", "s4"));
          return false;
        } catch (error) {
          return error instanceof Deno.errors.NotFound;
        }
      }, "s4 gone on A");
    } finally {
      await kv.close();
      await cluster.stop();
    }
  },
});
