/** Tests of rename and renameat2: every POSIX error case, nlink and times, exchange. */

import assert from "node:assert/strict";
import { alice, bob, n, root, text, withVfs } from "./_testing.ts";
import { FsError } from "../fs_error.ts";
import { RENAME_EXCHANGE, RENAME_NOREPLACE, type Timespec, type Vfs } from "./types.ts";

function errno(name: string) {
  return (e: unknown) => {
    assert.ok(e instanceof FsError, `expected FsError ${name}, got ${e}`);
    assert.equal(e.message.split(":")[0], name);
    return true;
  };
}

const later = (a: Timespec, b: Timespec) => a.sec > b.sec || (a.sec === b.sec && a.nsec > b.nsec);

async function names(vfs: Vfs, dir: number): Promise<string[]> {
  const fh = await vfs.opendir(root, dir, 0);
  const list = await vfs.readdir(root, dir, fh, 0, 1000, false);
  await vfs.releasedir(dir, fh);
  return list.map((e) => text(e.name)).filter((s) => s !== "." && s !== "..");
}

Deno.test("rename a file within and across directories; times and ctime of the inode", async () => {
  await withVfs(async ({ vfs }) => {
    const a = await vfs.mkdir(root, 1, n("a"), 0o755, 0);
    const b = await vfs.mkdir(root, 1, n("b"), 0o755, 0);
    const f = await vfs.mknod(root, a.ino, n("f"), 0o100644, 0, 0);
    await vfs.rename(root, a.ino, n("f"), a.ino, n("g"), 0);
    assert.deepEqual(await names(vfs, a.ino), ["g"]);
    const before = await vfs.getattr(root, b.ino);
    await vfs.rename(root, a.ino, n("g"), b.ino, n("h"), 0);
    assert.deepEqual(await names(vfs, a.ino), []);
    assert.deepEqual(await names(vfs, b.ino), ["h"]);
    const after = await vfs.getattr(root, b.ino);
    assert.ok(later(after.mtime, before.mtime) && later(after.ctime, before.ctime));
    assert.ok(later((await vfs.getattr(root, f.ino)).ctime, f.ctime));
    assert.equal((await vfs.lookup(root, b.ino, n("h"))).ino, f.ino);
  });
});

Deno.test("rename a directory across parents: nlink of both parents and '..'", async () => {
  await withVfs(async ({ vfs }) => {
    const a = await vfs.mkdir(root, 1, n("a"), 0o755, 0);
    const b = await vfs.mkdir(root, 1, n("b"), 0o755, 0);
    const d = await vfs.mkdir(root, a.ino, n("d"), 0o755, 0);
    assert.equal((await vfs.getattr(root, a.ino)).nlink, 3);
    await vfs.rename(root, a.ino, n("d"), b.ino, n("d"), 0);
    assert.equal((await vfs.getattr(root, a.ino)).nlink, 2);
    assert.equal((await vfs.getattr(root, b.ino)).nlink, 3);
    assert.equal((await vfs.lookup(root, d.ino, n(".."))).ino, b.ino);
  });
});

Deno.test("rename over an existing file replaces it; over an empty dir replaces it", async () => {
  await withVfs(async ({ vfs }) => {
    const f = await vfs.mknod(root, 1, n("f"), 0o100644, 0, 0);
    const g = await vfs.mknod(root, 1, n("g"), 0o100644, 0, 0);
    await vfs.link(root, g.ino, 1, n("g2"));
    await vfs.rename(root, 1, n("f"), 1, n("g"), 0);
    assert.equal((await vfs.lookup(root, 1, n("g"))).ino, f.ino);
    const gAfter = await vfs.getattr(root, g.ino);
    assert.equal(gAfter.nlink, 1, "the replaced inode lost one link");
    const x = await vfs.mkdir(root, 1, n("x"), 0o755, 0);
    const y = await vfs.mkdir(root, 1, n("y"), 0o755, 0);
    const rootLinks = (await vfs.getattr(root, 1)).nlink;
    await vfs.rename(root, 1, n("x"), 1, n("y"), 0);
    assert.equal((await vfs.getattr(root, 1)).nlink, rootLinks - 1);
    assert.equal((await vfs.lookup(root, 1, n("y"))).ino, x.ino);
    assert.equal((await vfs.getattr(root, y.ino)).nlink, 0);
  });
});

Deno.test("rename errors: ENOENT, ENOTDIR, EISDIR, ENOTEMPTY, EINVAL into own subtree", async () => {
  await withVfs(async ({ vfs }) => {
    const d = await vfs.mkdir(root, 1, n("d"), 0o755, 0);
    const sub = await vfs.mkdir(root, d.ino, n("sub"), 0o755, 0);
    await vfs.mknod(root, 1, n("f"), 0o100644, 0, 0);
    const full = await vfs.mkdir(root, 1, n("full"), 0o755, 0);
    await vfs.mknod(root, full.ino, n("x"), 0o100644, 0, 0);
    await assert.rejects(vfs.rename(root, 1, n("nope"), 1, n("z"), 0), errno("ENOENT"));
    await assert.rejects(vfs.rename(root, 1, n("d"), 1, n("f"), 0), errno("ENOTDIR"));
    await assert.rejects(vfs.rename(root, 1, n("f"), 1, n("d"), 0), errno("EISDIR"));
    await assert.rejects(vfs.rename(root, 1, n("d"), 1, n("full"), 0), errno("ENOTEMPTY"));
    await assert.rejects(vfs.rename(root, 1, n("d"), d.ino, n("in"), 0), errno("EINVAL"));
    await assert.rejects(vfs.rename(root, 1, n("d"), sub.ino, n("in"), 0), errno("EINVAL"));
    // Target is an ancestor of the source: not empty.
    await assert.rejects(vfs.rename(root, d.ino, n("sub"), 1, n("d"), 0), errno("ENOTEMPTY"));
    await assert.rejects(
      vfs.rename(root, 1, n("f"), 1, n("a".repeat(256)), 0),
      errno("ENAMETOOLONG"),
    );
    await assert.rejects(vfs.rename(root, 1, n("f"), 1, n("g"), 4), errno("EINVAL"));
    await assert.rejects(
      vfs.rename(root, 1, n("f"), 1, n("g"), RENAME_EXCHANGE | RENAME_NOREPLACE),
      errno("EINVAL"),
    );
    await assert.rejects(vfs.rename(root, 1, n("f"), 12345, n("g"), 0), errno("ENOENT"));
    assert.deepEqual((await names(vfs, 1)).sort(), ["d", "f", "full"]);
  });
});

Deno.test("rename onto itself or another link of the same inode does nothing", async () => {
  await withVfs(async ({ vfs }) => {
    const f = await vfs.mknod(root, 1, n("f"), 0o100644, 0, 0);
    await vfs.link(root, f.ino, 1, n("g"));
    await vfs.rename(root, 1, n("f"), 1, n("f"), 0);
    await vfs.rename(root, 1, n("f"), 1, n("g"), 0);
    assert.deepEqual((await names(vfs, 1)).sort(), ["f", "g"]);
    assert.equal((await vfs.getattr(root, f.ino)).nlink, 2);
  });
});

Deno.test("RENAME_NOREPLACE: EEXIST if the target exists, else a plain rename", async () => {
  await withVfs(async ({ vfs }) => {
    await vfs.mknod(root, 1, n("f"), 0o100644, 0, 0);
    await vfs.mknod(root, 1, n("g"), 0o100644, 0, 0);
    await assert.rejects(vfs.rename(root, 1, n("f"), 1, n("g"), RENAME_NOREPLACE), errno("EEXIST"));
    await vfs.rename(root, 1, n("f"), 1, n("h"), RENAME_NOREPLACE);
    assert.deepEqual((await names(vfs, 1)).sort(), ["g", "h"]);
  });
});

Deno.test("RENAME_EXCHANGE: swaps, fixes '..' and nlink, ENOENT without target", async () => {
  await withVfs(async ({ vfs }) => {
    const a = await vfs.mkdir(root, 1, n("a"), 0o755, 0);
    const b = await vfs.mkdir(root, 1, n("b"), 0o755, 0);
    const dir = await vfs.mkdir(root, a.ino, n("x"), 0o755, 0);
    const file = await vfs.mknod(root, b.ino, n("y"), 0o100644, 0, 0);
    await vfs.rename(root, a.ino, n("x"), b.ino, n("y"), RENAME_EXCHANGE);
    assert.equal((await vfs.lookup(root, a.ino, n("x"))).ino, file.ino);
    assert.equal((await vfs.lookup(root, b.ino, n("y"))).ino, dir.ino);
    assert.equal((await vfs.lookup(root, dir.ino, n(".."))).ino, b.ino);
    assert.equal((await vfs.getattr(root, a.ino)).nlink, 2);
    assert.equal((await vfs.getattr(root, b.ino)).nlink, 3);
    await assert.rejects(
      vfs.rename(root, a.ino, n("x"), b.ino, n("none"), RENAME_EXCHANGE),
      errno("ENOENT"),
    );
    // Exchanging a directory with its own ancestor is EINVAL.
    const inner = await vfs.mkdir(root, dir.ino, n("inner"), 0o755, 0);
    await assert.rejects(
      vfs.rename(root, dir.ino, n("inner"), 1, n("b"), RENAME_EXCHANGE),
      errno("EINVAL"),
    );
    // A non-empty directory can be exchanged (nothing is removed).
    await vfs.mknod(root, inner.ino, n("z"), 0o100644, 0, 0);
    await vfs.rename(root, 1, n("a"), dir.ino, n("inner"), RENAME_EXCHANGE);
    assert.equal((await vfs.lookup(root, 1, n("a"))).ino, inner.ino);
  });
});

Deno.test("rename permissions: write on both parents, write on a moved directory", async () => {
  await withVfs(async ({ vfs }) => {
    await vfs.setattr(root, 1, { mode: 0o777 });
    const mine = await vfs.mkdir(alice, 1, n("mine"), 0o755, 0);
    const open = await vfs.mkdir(root, 1, n("open"), 0o777, 0);
    const closed = await vfs.mkdir(root, 1, n("closed"), 0o755, 0);
    await vfs.mknod(alice, mine.ino, n("f"), 0o100644, 0, 0);
    await assert.rejects(
      vfs.rename(alice, mine.ino, n("f"), closed.ino, n("f"), 0),
      errno("EACCES"),
    );
    await assert.rejects(vfs.rename(bob, mine.ino, n("f"), open.ino, n("f"), 0), errno("EACCES"));
    await vfs.rename(alice, mine.ino, n("f"), open.ino, n("f"), 0);
    // bob may not move root's directory out of a world-writable dir: he cannot write its "..".
    const rd = await vfs.mkdir(root, open.ino, n("rd"), 0o755, 0);
    await assert.rejects(vfs.rename(bob, open.ino, n("rd"), 1, n("rd"), 0), errno("EACCES"));
    // Within the same parent no write on the directory itself is needed.
    await vfs.rename(bob, open.ino, n("rd"), open.ino, n("rd2"), 0);
    assert.equal((await vfs.lookup(root, open.ino, n("rd2"))).ino, rd.ino);
  });
});

Deno.test("rename over a file that is still open keeps its data reachable by handle", async () => {
  await withVfs(async ({ vfs }) => {
    const a = await vfs.create(root, 1, n("a"), 0o644, 0, 2);
    await vfs.write(root, a.attr.ino, a.fh, 0, n("old"));
    await vfs.mknod(root, 1, n("b"), 0o100644, 0, 0);
    await vfs.rename(root, 1, n("b"), 1, n("a"), 0);
    const into = new Uint8Array(3);
    assert.equal(await vfs.read(root, a.attr.ino, a.fh, 0, into), 3);
    assert.equal(text(into), "old");
    assert.equal((await vfs.getattr(root, a.attr.ino)).nlink, 0);
    await vfs.release(a.attr.ino, a.fh, 0);
    vfs.forget(a.attr.ino, 1);
  });
});

Deno.test("rename, unlink and rmdir leave the kernel's invalidation to the kernel (no onInodeChange)", async () => {
  const changed: number[] = [];
  await withVfs(async ({ vfs }) => {
    const a = await vfs.mknod(root, 1, n("a"), 0o100644, 0, 0);
    await vfs.mknod(root, 1, n("b"), 0o100644, 0, 0);
    await vfs.link(root, a.ino, 1, n("a2"));
    await vfs.rename(root, 1, n("a"), 1, n("c"), 0);
    await vfs.rename(root, 1, n("c"), 1, n("b"), RENAME_EXCHANGE);
    await vfs.rename(root, 1, n("b"), 1, n("c"), 0); // replaces c
    await vfs.unlink(root, 1, n("a2"));
    await vfs.mkdir(root, 1, n("d"), 0o755, 0);
    await vfs.rmdir(root, 1, n("d"));
    assert.deepEqual(changed, []);
  }, { onInodeChange: (ino) => changed.push(ino) });
});
