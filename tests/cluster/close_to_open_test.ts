/**
 * Close-to-open for a file's size on a real cluster (three CURP replicas, or one etcd member with
 * SKYFS_TEST_META=etcd; two `skyfs mount` daemons A and B): A stats a file (its kernel then holds
 * the size for the attribute timeout), B changes the size (truncate shorter or longer, the
 * SETATTR commits before truncate(2) returns), and A opens the file at once. The open, its fstat
 * and its reads must see B's size, whether or not A's metadata watch has told A's kernel yet.
 * Before the fix the open dropped A's pages but not the size A's kernel held, so A's fstat gave the
 * old size and A read its old length: B's bytes then zeros after a shrink (the short READ's size
 * update lost to the watch's invalidation arriving meanwhile), B's bytes cut short after a growth
 * (inline_test's "truncate on B, read on A" in two CI runs). Needs root and /dev/fuse.
 * @module
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { LocalCluster, type LocalNode } from "../../src/cluster/local_cluster.ts";
import { seededRandom, TEST_TMP } from "../_harness.ts";
import { canRunCluster, clusterStore, random, same, writeSynced } from "./_cluster_util.ts";

const ROUNDS = 60;
const SEED = 1313;

Deno.test({
  name: "close-to-open: a size changed on B (truncate shorter or longer) is the size A's open, " +
    "fstat and reads see right after, though A's kernel held the old size",
  ignore: !canRunCluster(),
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const cluster = await LocalCluster.start("skyfs-close-to-open-test-", {
      nodes: 2,
      meta: clusterStore(),
      parentDir: TEST_TMP,
    });
    try {
      const [a, b] = cluster.nodes;
      const at = (node: LocalNode, ...names: string[]) => join(node.mountpoint, ...names);
      const next = seededRandom(SEED);
      await Deno.mkdir(at(a, "d"));
      const misses: string[] = [];
      for (let round = 0; round < ROUNDS; round++) {
        const name = `f${round}`;
        const size = 1 + Math.floor(next() * 6000);
        const data = random(size);
        await writeSynced(at(a, "d", name), data);
        // A's kernel takes the size from this GETATTR and keeps it for the attribute timeout.
        assert.equal((await Deno.stat(at(a, "d", name))).size, size);
        const grow = round % 2 === 1;
        const newSize = grow ? size + 1 + Math.floor(next() * 6000) : Math.floor(next() * size);
        await Deno.truncate(at(b, "d", name), newSize);
        const want = new Uint8Array(newSize);
        want.set(data.subarray(0, Math.min(size, newSize)));

        const file = await Deno.open(at(a, "d", name));
        let fstatSize: number;
        let got: Uint8Array;
        try {
          fstatSize = (await file.stat()).size;
          const buffer = new Uint8Array(size + newSize + 4096);
          let done = 0;
          for (;;) {
            const n = await file.read(buffer.subarray(done));
            if (n === null) break;
            done += n;
          }
          got = buffer.subarray(0, done);
        } finally {
          file.close();
        }
        if (fstatSize !== newSize || !same(got, want)) {
          misses.push(
            `round ${round} (seed ${SEED}): ${size} -> ${newSize} bytes on B; A's fstat ` +
              `${fstatSize}, A read ${got.length} bytes` +
              (same(got.subarray(0, Math.min(got.length, newSize)), want.subarray(0, got.length))
                ? ` (B's bytes${got.length > newSize ? ", then zeros" : ""})`
                : " (other bytes)"),
          );
        }
      }
      assert.deepEqual(misses, [], `A saw an old size:\n${misses.join("\n")}`);
    } finally {
      await cluster.stop();
    }
  },
});
