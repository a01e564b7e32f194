/** The permission matrix for non-root callers, and which errno wins when several apply. */

import assert from "node:assert/strict";
import { alice, bob, n, root, withVfs } from "./_testing.ts";
import { FsError } from "../fs_error.ts";
import type { InodeRecord } from "../meta/namespace.ts";
import { checkMayLink, modeAfterModify, permits, S_IFDIR, S_IFREG } from "./perm.ts";
import type { Ctx } from "./types.ts";
import { O_RDONLY, O_RDWR, O_WRONLY } from "../io/libc.ts";

function errno(name: string) {
  return (e: unknown) => {
    assert.ok(e instanceof FsError, `expected FsError ${name}, got ${e}`);
    assert.equal(e.message.split(":")[0], name);
    return true;
  };
}

function inode(mode: number, uid: number, gid: number): InodeRecord {
  const t = { sec: 0, nsec: 0 };
  return {
    ino: 9,
    mode,
    uid,
    gid,
    nlink: 1,
    rdev: 0,
    size: 0,
    parent: 0,
    generation: 1,
    atime: t,
    mtime: t,
    ctime: t,
    btime: t,
  };
}

Deno.test("permits: every mask for owner, group member, supplementary group, other", () => {
  const owner: Ctx = { uid: 10, gid: 99, pid: 1 };
  const member: Ctx = { uid: 11, gid: 20, pid: 1 };
  const supplementary: Ctx = { uid: 12, gid: 99, pid: 1, groups: [7, 20] };
  const other: Ctx = { uid: 13, gid: 99, pid: 1, groups: [7] };
  for (let perm = 0; perm < 0o1000; perm++) {
    const file = inode(0o100000 | perm, 10, 20);
    for (let mask = 1; mask <= 7; mask++) {
      const ownerBits = (perm >> 6) & 7;
      const groupBits = (perm >> 3) & 7;
      const otherBits = perm & 7;
      assert.equal(
        permits(owner, file, mask),
        (ownerBits & mask) === mask,
        `owner ${perm} ${mask}`,
      );
      assert.equal(permits(member, file, mask), (groupBits & mask) === mask);
      assert.equal(permits(supplementary, file, mask), (groupBits & mask) === mask);
      assert.equal(permits(other, file, mask), (otherBits & mask) === mask);
      // Root reads and writes anything; executes only if some x bit is set.
      const rootCan = (mask & 1) === 0 || (perm & 0o111) !== 0;
      assert.equal(permits(root, file, mask), rootCan, `root ${perm.toString(8)} ${mask}`);
    }
  }
  // Directories: root may always search.
  assert.equal(permits(root, inode(0o040000, 10, 20), 1), true);
});

Deno.test("directory permissions: search (x) for lookup, read for listing, w+x to change", async () => {
  await withVfs(async ({ vfs }) => {
    await vfs.setattr(root, 1, { mode: 0o777 });
    const d = await vfs.mkdir(alice, 1, n("d"), 0o700, 0);
    await vfs.mknod(alice, d.ino, n("f"), 0o100666, 0, 0);
    await assert.rejects(vfs.lookup(bob, d.ino, n("f")), errno("EACCES"));
    await assert.rejects(vfs.opendir(bob, d.ino, 0), errno("EACCES"));
    await assert.rejects(vfs.mknod(bob, d.ino, n("g"), 0o100644, 0, 0), errno("EACCES"));
    await vfs.setattr(alice, d.ino, { mode: 0o711 });
    assert.ok((await vfs.lookup(bob, d.ino, n("f"))).ino > 0, "x alone allows lookup");
    await assert.rejects(vfs.opendir(bob, d.ino, 0), errno("EACCES"));
    await assert.rejects(vfs.unlink(bob, d.ino, n("f")), errno("EACCES"));
    await vfs.setattr(alice, d.ino, { mode: 0o744 });
    const fh = await vfs.opendir(bob, d.ino, 0);
    await vfs.releasedir(d.ino, fh);
    await assert.rejects(vfs.lookup(bob, d.ino, n("f")), errno("EACCES"), "r without x");
    await vfs.setattr(alice, d.ino, { mode: 0o733 });
    await vfs.mknod(bob, d.ino, n("g"), 0o100644, 0, 0);
    await vfs.unlink(bob, d.ino, n("f"));
    // Root passes all of these whatever the mode.
    await vfs.setattr(alice, d.ino, { mode: 0o000 });
    await vfs.lookup(root, d.ino, n("g"));
    await vfs.unlink(root, d.ino, n("g"));
  });
});

Deno.test("file open matrix for a non-root caller by class and access mode", async () => {
  await withVfs(async ({ vfs }) => {
    const cases: [number, Ctx, number, boolean][] = [
      [0o600, alice, O_RDWR, true],
      [0o400, alice, O_RDWR, false],
      [0o400, alice, O_RDONLY, true],
      [0o200, alice, O_WRONLY, true],
      [0o060, alice, O_RDWR, false], // owner class decides, even though group could
      [0o060, bob, O_RDWR, false],
      [0o066, bob, O_RDWR, true],
      [0o040, { ...bob, groups: [1001, 1000] }, O_RDONLY, true],
      [0o004, bob, O_RDONLY, true],
      [0o002, bob, O_RDONLY, false],
      [0o000, root, O_RDWR, true],
    ];
    for (const [i, [perm, who, flags, ok]] of cases.entries()) {
      const f = await vfs.mknod(root, 1, n(`f${i}`), 0o100000 | perm, 0, 0);
      await vfs.setattr(root, f.ino, { uid: 1000, gid: 1000 });
      const opening = vfs.open(who, f.ino, flags);
      if (ok) await vfs.release(f.ino, (await opening).fh, 0);
      else await assert.rejects(opening, errno("EACCES"), `case ${i}`);
    }
  });
});

Deno.test("which errno wins: EACCES on search before ENOENT/EEXIST, EEXIST before EACCES on write", async () => {
  await withVfs(async ({ vfs }) => {
    await vfs.setattr(root, 1, { mode: 0o777 });
    const noSearch = await vfs.mkdir(alice, 1, n("nx"), 0o766, 0);
    await assert.rejects(vfs.unlink(bob, noSearch.ino, n("missing")), errno("EACCES"));
    await assert.rejects(vfs.lookup(bob, noSearch.ino, n("missing")), errno("EACCES"));
    const readOnly = await vfs.mkdir(alice, 1, n("ro"), 0o755, 0);
    await vfs.mknod(alice, readOnly.ino, n("here"), 0o100644, 0, 0);
    await assert.rejects(vfs.unlink(bob, readOnly.ino, n("missing")), errno("ENOENT"));
    await assert.rejects(vfs.unlink(bob, readOnly.ino, n("here")), errno("EACCES"));
    await assert.rejects(vfs.mkdir(bob, readOnly.ino, n("here"), 0o755, 0), errno("EEXIST"));
    await assert.rejects(vfs.mkdir(bob, readOnly.ino, n("new"), 0o755, 0), errno("EACCES"));
    await assert.rejects(
      vfs.create(bob, readOnly.ino, n("here"), 0o644, 0, O_RDONLY | 0o200),
      errno("EEXIST"),
    );
    await assert.rejects(
      vfs.rename(bob, readOnly.ino, n("missing"), 1, n("x"), 0),
      errno("ENOENT"),
    );
    await assert.rejects(vfs.rename(bob, readOnly.ino, n("here"), 1, n("x"), 0), errno("EACCES"));
  });
});

Deno.test("modeAfterModify: setattr_should_drop_suidgid for regular files only", () => {
  const outsider: Ctx = { uid: 13, gid: 99, pid: 0, groups: [] };
  const member: Ctx = { uid: 11, gid: 20, pid: 0, groups: [] };
  const file = (perm: number) => ({ mode: S_IFREG | perm, gid: 20 });
  const after = (ctx: Ctx, perm: number) => (modeAfterModify(ctx, file(perm)) & 0o7777).toString(8);
  assert.equal(after(outsider, 0o2666), "666"); // outside the group: set-gid goes
  assert.equal(after(member, 0o2666), "2666"); // a member keeps it without group execute
  assert.equal(after(member, 0o2676), "676"); // group execute: it goes for everyone
  assert.equal(after(member, 0o6666), "2666"); // set-uid always goes
  assert.equal(after(root, 0o6676), "6676"); // CAP_FSETID keeps both
  assert.equal(modeAfterModify(outsider, { mode: S_IFDIR | 0o2777, gid: 20 }), S_IFDIR | 0o2777);
});

Deno.test("checkMayLink: owners, safe sources, and the capabilities of a vanished caller", () => {
  // pid 0: no process to read capabilities from, so only the uid rules apply.
  const other: Ctx = { uid: 13, gid: 99, pid: 0, groups: [] };
  const protectedLinks = Deno.readTextFileSync("/proc/sys/fs/protected_hardlinks").trim() !== "0";
  checkMayLink(other, inode(S_IFREG | 0o600, 13, 13)); // own file
  checkMayLink(other, inode(S_IFREG | 0o666, 10, 10)); // readable and writable
  checkMayLink(other, inode(S_IFREG | 0o2666, 10, 10)); // set-gid without group execute is safe
  for (const mode of [0o644, 0o4777, 0o2777]) {
    const attempt = () => checkMayLink(other, inode(S_IFREG | mode, 10, 10));
    if (protectedLinks) assert.throws(attempt, errno("EPERM"));
    else attempt();
  }
  checkMayLink(root, inode(S_IFREG | 0o4700, 10, 10));
});
