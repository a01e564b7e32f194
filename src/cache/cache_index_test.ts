/** Tests of CacheIndex: rows survive a restart through its log, a torn tail is cut, the log is
 * rewritten with only the live rows, and an old SQLite cache.db is removed. */

import assert from "node:assert/strict";
import { CacheIndex } from "./cache_index.ts";
import { createPortableEngine } from "../io/portable.ts";
import { openIoEngine } from "../io/mod.ts";
import { scanFrames } from "../meta/log_file.ts";

async function withDir(body: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ dir: "/tmp", prefix: "cache-index-test-" });
  try {
    await body(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

const chunk = (ino: number, index: number, version = `v${ino}.${index}`) => ({
  ino,
  index,
  version,
  length: 4096 + index,
  crc: ino * 1000 + index,
});

for (const engine of ["io_uring", "portable"] as const) {
  Deno.test(`cache index (${engine}): rows, deletes and use times survive a restart`, async () => {
    const io = engine === "portable"
      ? createPortableEngine()
      : await openIoEngine({ engine: "auto", log: () => {} });
    try {
      await withDir(async (dir) => {
        const path = `${dir}/cache.log`;
        const first = new CacheIndex(path);
        await first.open(io);
        for (let ino = 1; ino <= 3; ino++) {
          for (let index = 0; index < 4; index++) first.set(chunk(ino, index));
        }
        first.delete(2, 1);
        first.deleteInode(3);
        first.set(chunk(1, 0, "newer"));
        first.touch(1, 3);
        const touched = first.get(1, 3)!.usedMs;
        await first.close();

        const second = new CacheIndex(path);
        await second.open(io);
        try {
          assert.equal(second.ofInode(1).length, 4);
          assert.equal(second.get(1, 0)?.version, "newer");
          assert.deepEqual(second.ofInode(2).map((c) => c.index).sort(), [0, 2, 3]);
          assert.equal(second.ofInode(3).length, 0);
          assert.equal(second.get(1, 3)?.usedMs, touched);
          assert.equal(second.bytes, 7 * 4096 + (0 + 1 + 2 + 3) + (0 + 2 + 3));
        } finally {
          await second.close();
        }
      });
    } finally {
      await io.shutdown();
    }
  });
}

Deno.test("cache index: a torn tail is cut, the log keeps only live rows, cache.db is removed", async () => {
  const io = createPortableEngine();
  await withDir(async (dir) => {
    const path = `${dir}/cache.log`;
    await Deno.writeTextFile(`${dir}/cache.db`, "SQLite format 3\0 of an earlier build");
    const first = new CacheIndex(path);
    await first.open(io);
    await assert.rejects(Deno.stat(`${dir}/cache.db`), Deno.errors.NotFound);
    // Many overwrites of one row: the rewrite at the next open keeps one record.
    for (let i = 0; i < 1000; i++) first.set(chunk(1, 0, `v${i}`));
    await first.close();
    const grown = (await Deno.stat(path)).size;
    const bytes = await Deno.readFile(path);
    await Deno.writeFile(path, new Uint8Array([...bytes, 0, 0, 0, 9, 1, 2]));

    const second = new CacheIndex(path);
    await second.open(io);
    try {
      assert.equal(second.get(1, 0)?.version, "v999");
      const now = await Deno.readFile(path);
      assert.equal(scanFrames(now, () => {}), now.length, "only whole frames");
      assert.ok(now.length < grown / 100, `${now.length} bytes after rewrite, ${grown} before`);
    } finally {
      await second.close();
    }
  });
  await io.shutdown();
});
