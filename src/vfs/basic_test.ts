/** The first working path: lookup, getattr, mkdir, create, write, read, readdir, restart. */

import assert from "node:assert/strict";
import { n, root, text, withVfs } from "./_testing.ts";
import { O_RDWR } from "../io/libc.ts";

Deno.test("mkdir, create, write, read, readdir, lookup, getattr survive a restart", async () => {
  await withVfs(async (f) => {
    const d = await f.vfs.mkdir(root, 1, n("d"), 0o755, 0o022);
    assert.equal(d.mode, 0o40755);
    assert.equal(d.nlink, 2);
    assert.equal((await f.vfs.getattr(root, 1)).nlink, 3);
    const c = await f.vfs.create(root, d.ino, n("f"), 0o644, 0o022, O_RDWR);
    assert.equal(c.attr.mode, 0o100644);
    assert.equal(await f.vfs.write(root, c.attr.ino, c.fh, 0, n("hello")), 5);
    assert.equal((await f.vfs.getattr(root, c.attr.ino)).size, 5);
    const into = new Uint8Array(10);
    assert.equal(await f.vfs.read(root, c.attr.ino, c.fh, 1, into), 4);
    assert.equal(text(into.subarray(0, 4)), "ello");
    await f.vfs.flush(root, c.attr.ino, c.fh, 1n);
    await f.vfs.release(c.attr.ino, c.fh, 0);
    const dh = await f.vfs.opendir(root, d.ino, 0);
    // The kernel holds "f" (create gave it a lookup): listed without attributes.
    const known = await f.vfs.readdir(root, d.ino, dh, 0, 100, true);
    assert.deepEqual(known.map((e) => text(e.name)), [".", "..", "f"]);
    assert.equal(known[2].attr, undefined);
    // Once forgotten, readdirplus hands it out with attributes (and a new lookup).
    f.vfs.forget(c.attr.ino, 1);
    const list = await f.vfs.readdir(root, d.ino, dh, 0, 100, true);
    assert.deepEqual(list.map((e) => text(e.name)), [".", "..", "f"]);
    assert.equal(list[2].attr?.size, 5);
    await f.vfs.releasedir(d.ino, dh);
    const again = await f.restart();
    const found = await again.lookup(root, 1, n("d"));
    assert.equal(found.ino, d.ino);
    const file = await again.lookup(root, d.ino, n("f"));
    assert.equal(file.ino, c.attr.ino);
    assert.equal(file.size, 5);
    const o = await again.open(root, file.ino, 0);
    const back = new Uint8Array(5);
    assert.equal(await again.read(root, file.ino, o.fh, 0, back), 5);
    assert.equal(text(back), "hello");
    await again.release(file.ino, o.fh, 0);
  });
});
