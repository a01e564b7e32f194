/** Tests of the libc edge and the portable engine on a temp file (ext4 or tmpfs both work). */

import assert from "node:assert/strict";
import * as libc from "./libc.ts";
import { createPortableEngine } from "./portable.ts";
import { FsError } from "../fs_error.ts";

async function withTempDir(run: (dir: string) => Promise<void> | void): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "vfs-io-" });
  try {
    await run(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("portable engine: write, read, short read at end, fsync", async () => {
  await withTempDir(async (dir) => {
    const io = createPortableEngine();
    const fd = await io.open(`${dir}/f`, libc.O_RDWR | libc.O_CREAT, 0o644);
    assert.equal(await io.write(fd, new TextEncoder().encode("hello world"), 0), 11);
    const into = new Uint8Array(32);
    assert.equal(await io.read(fd, into, 6), 5);
    assert.equal(new TextDecoder().decode(into.subarray(0, 5)), "world");
    await io.fsync(fd, { datasync: true });
    await io.fsync(fd);
    assert.equal(await io.writeAndSync(fd, new Uint8Array([1, 2]), 20), 2);
    assert.equal(libc.fstat(fd).size, 22);
    assert.equal((await io.statx(`${dir}/f`)).size, 22);
    const parts = [new Uint8Array(3), new Uint8Array(3)];
    assert.equal(await io.readv(fd, parts, 0), 6);
    assert.equal(new TextDecoder().decode(parts[1]), "lo ");
    await io.close(fd);
  });
});

Deno.test("libc: errors carry the errno", async () => {
  await withTempDir(async (dir) => {
    assert.throws(() => libc.open(`${dir}/missing`, libc.O_RDONLY), (e: unknown) => {
      return e instanceof FsError && e.errno === 2;
    });
    assert.throws(() => libc.close(987654), (e: unknown) => e instanceof FsError && e.errno === 9);
    const io = createPortableEngine();
    await assert.rejects(io.unlink(`${dir}/missing`), (e: unknown) => {
      return e instanceof FsError && e.errno === 2;
    });
  });
});

Deno.test("libc: sparse file above 4 GiB, SEEK_DATA/SEEK_HOLE, punch hole", async () => {
  await withTempDir((dir) => {
    const fd = libc.open(`${dir}/sparse`, libc.O_RDWR | libc.O_CREAT);
    const far = 5 * 2 ** 30;
    libc.pwrite(fd, new Uint8Array(4096).fill(7), far);
    assert.equal(libc.fstat(fd).size, far + 4096);
    assert.equal(libc.lseek(fd, 0, libc.SEEK_DATA), far);
    assert.equal(libc.lseek(fd, 0, libc.SEEK_HOLE), 0);
    assert.equal(libc.lseek(fd, far, libc.SEEK_HOLE), far + 4096);
    assert.throws(() => libc.lseek(fd, far + 4096, libc.SEEK_DATA), (e: unknown) => {
      return e instanceof FsError && e.errno === 6;
    });
    libc.fallocate(fd, libc.FALLOC_FL_PUNCH_HOLE | libc.FALLOC_FL_KEEP_SIZE, far, 4096);
    const back = new Uint8Array(4096);
    assert.equal(libc.pread(fd, back, far), 4096);
    assert.ok(back.every((b) => b === 0));
    libc.close(fd);
  });
});

Deno.test("libc: copy_file_range, ftruncate, statvfs", async () => {
  await withTempDir((dir) => {
    const a = libc.open(`${dir}/a`, libc.O_RDWR | libc.O_CREAT);
    const b = libc.open(`${dir}/b`, libc.O_RDWR | libc.O_CREAT);
    libc.pwrite(a, new TextEncoder().encode("0123456789"), 0);
    assert.equal(libc.copyFileRange(a, 2, b, 100, 5), 5);
    const out = new Uint8Array(5);
    libc.pread(b, out, 100);
    assert.equal(new TextDecoder().decode(out), "23456");
    libc.ftruncate(b, 3);
    assert.equal(libc.fstat(b).size, 3);
    const vfs = libc.statvfs(dir);
    assert.ok(vfs.blocks > 0 && vfs.bsize > 0 && vfs.namemax === 255);
    assert.equal(libc.fstatvfs(a).blocks, vfs.blocks);
    libc.close(a);
    libc.close(b);
  });
});
