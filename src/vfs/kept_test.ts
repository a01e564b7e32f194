// Review (session 16, r1): kept local fds (mount.keep_closed_files) against the operations that
// change a file's length or names while it has no handle: setattr(size), O_TRUNC, hard links,
// rename over it (with spare files), a restart after a deferred write-back.
import assert from "node:assert/strict";
import { fdsOn, localPath, n, root, text, withVfs } from "./_testing.ts";
import * as libc from "../io/libc.ts";

const { O_RDONLY, O_RDWR, O_TRUNC } = libc;

const settled = () => new Promise((resolve) => setTimeout(resolve, 20));

async function readAll(
  vfs: Awaited<ReturnType<typeof import("./vfs.ts").createVfs>>,
  ino: number,
): Promise<string> {
  const o = await vfs.open(root, ino, O_RDONLY);
  const buf = new Uint8Array(64);
  const got = await vfs.read(root, ino, o.fh, 0, buf);
  await vfs.release(ino, o.fh, 0);
  return text(buf.subarray(0, got));
}

Deno.test("kept fd: setattr(size) without a handle, then O_TRUNC, change the kept local file", async () => {
  await withVfs(async ({ vfs, dir }) => {
    const c = await vfs.create(root, 1, n("f"), 0o644, 0, O_RDWR);
    const ino = c.attr.ino;
    // A passthrough write (through the backing fd) seen at the release, then kept.
    libc.pwrite(c.backingFd!, n("abcdefgh"), 0);
    await vfs.release(ino, c.fh, 0);
    const [kept] = fdsOn(localPath(dir, ino));
    assert.equal(typeof kept, "number");
    assert.equal((await vfs.getattr(root, ino)).size, 8);
    await vfs.setattr(root, ino, { size: 3 });
    assert.equal(libc.fstat(kept).size, 3, "the kept fd's file cut");
    assert.equal((await vfs.getattr(root, ino)).size, 3);
    assert.equal(await readAll(vfs, ino), "abc");
    await vfs.setattr(root, ino, { size: 5 });
    assert.equal(await readAll(vfs, ino), "abc\0\0");
    const t = await vfs.open(root, ino, O_RDWR | O_TRUNC);
    assert.equal(t.backingFd, kept);
    assert.equal(libc.fstat(kept).size, 0);
    await vfs.release(ino, t.fh, 0);
    const a = await vfs.getattr(root, ino);
    assert.equal(a.size, 0);
    assert.equal(a.blocks, 0);
  });
});

Deno.test("kept fd: two names of one inode; rename over a kept file with spares on", async () => {
  await withVfs(async ({ vfs, dir }) => {
    const closed: number[] = [];
    vfs.onLocalClosed?.((ino) => closed.push(ino));
    const c = await vfs.create(root, 1, n("f"), 0o644, 0, O_RDWR);
    const ino = c.attr.ino;
    await vfs.write(root, ino, c.fh, 0, n("one"));
    await vfs.release(ino, c.fh, 0);
    await vfs.link(root, ino, 1, n("g"));
    await vfs.unlink(root, 1, n("f"));
    await settled();
    assert.deepEqual(closed, [], "a name is left: still kept");
    assert.equal(fdsOn(localPath(dir, ino)).length, 1);
    assert.equal(await readAll(vfs, ino), "one");
    // Rename another file over the last name: the kept fd goes before the file becomes a spare.
    const d = await vfs.create(root, 1, n("d"), 0o644, 0, O_RDWR);
    await vfs.write(root, d.attr.ino, d.fh, 0, n("two"));
    await vfs.release(d.attr.ino, d.fh, 0);
    vfs.forget(ino, 2); // the kernel's lookups of f and g
    await vfs.rename(root, 1, n("d"), 1, n("g"), 0);
    await settled();
    assert.deepEqual(closed, [ino]);
    assert.deepEqual(fdsOn(localPath(dir, ino)), []);
    // A new file takes the spare: empty, whatever the old one held.
    const e = await vfs.create(root, 1, n("e"), 0o644, 0, O_RDWR);
    assert.equal(e.attr.size, 0);
    assert.equal(libc.fstat(e.backingFd!).size, 0);
    await vfs.release(e.attr.ino, e.fh, 0);
    assert.equal(await readAll(vfs, e.attr.ino), "");
    assert.equal(await readAll(vfs, d.attr.ino), "two");
  }, { localSpareFiles: 16 });
});

Deno.test("kept fd: a passthrough write left to the write-back timer survives a restart", async () => {
  await withVfs(async (f) => {
    const c = await f.vfs.create(root, 1, n("f"), 0o644, 0, O_RDWR);
    const ino = c.attr.ino;
    await f.vfs.release(ino, c.fh, 0);
    const w = await f.vfs.open(root, ino, O_RDWR);
    libc.pwrite(w.backingFd!, n("written"), 0);
    await f.vfs.release(ino, w.fh, 0);
    const vfs = await f.restart();
    assert.equal((await vfs.getattr(root, ino)).size, 7);
    assert.equal(await readAll(vfs, ino), "written");
  });
});

// util-linux's prlimit(1) runs the child under a small RLIMIT_NOFILE (util-linux is essential on
// Debian: a missing prlimit fails this test rather than skipping it).
Deno.test("kept fds give way when the daemon runs out of fds: an open that finds EMFILE closes kept ones and succeeds", async () => {
  const dir = await Deno.makeTempDir({ prefix: "vfs-emfile-" });
  try {
    const child = new URL("./_emfile_child.ts", import.meta.url).pathname;
    const out = await new Deno.Command("prlimit", {
      args: ["--nofile=256:256", Deno.execPath(), "run", "-A", child, dir],
      stdout: "piped",
      stderr: "inherit",
    }).output();
    assert.equal(out.code, 0);
    const line = JSON.parse(new TextDecoder().decode(out.stdout).trim().split("\n").pop()!);
    assert.equal(line.kept, 64, "a quarter of RLIMIT_NOFILE kept");
    assert.ok(line.fillers > 0);
    assert.equal(line.result, "opened", "the open got an fd a kept file held");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
