/** Tests of name and attribute operations: success and error cases, times, nlink, set-id rules. */

import assert from "node:assert/strict";
import { alice, bob, n, root, text, withVfs } from "./_testing.ts";
import { FsError } from "../fs_error.ts";
import type { Attr, Timespec } from "./types.ts";

function errno(name: string) {
  return (e: unknown) => {
    assert.ok(e instanceof FsError, `expected FsError ${name}, got ${e}`);
    assert.equal(e.message.split(":")[0], name);
    return true;
  };
}

const later = (a: Timespec, b: Timespec) => a.sec > b.sec || (a.sec === b.sec && a.nsec > b.nsec);

Deno.test("lookup: ENOENT, ENOTDIR, ENAMETOOLONG, '.' and '..'", async () => {
  await withVfs(async ({ vfs }) => {
    await assert.rejects(vfs.lookup(root, 1, n("nope")), errno("ENOENT"));
    const f = await vfs.mknod(root, 1, n("f"), 0o100644, 0, 0);
    await assert.rejects(vfs.lookup(root, f.ino, n("x")), errno("ENOTDIR"));
    await assert.rejects(vfs.lookup(root, 1, n("a".repeat(256))), errno("ENAMETOOLONG"));
    await assert.rejects(vfs.lookup(root, 999_999, n("x")), errno("ENOENT"));
    const d = await vfs.mkdir(root, 1, n("d"), 0o755, 0);
    assert.equal((await vfs.lookup(root, d.ino, n(".."))).ino, 1);
    assert.equal((await vfs.lookup(root, d.ino, n("."))).ino, d.ino);
    // 255 bytes is fine.
    const long = await vfs.mknod(root, 1, n("b".repeat(255)), 0o100600, 0, 0);
    assert.equal((await vfs.lookup(root, 1, n("b".repeat(255)))).ino, long.ino);
  });
});

Deno.test("mkdir: nlink 2 + subdirs, EEXIST, parent times, umask", async () => {
  await withVfs(async ({ vfs }) => {
    const before = await vfs.getattr(root, 1);
    const a = await vfs.mkdir(root, 1, n("a"), 0o777, 0o027);
    assert.equal(a.mode & 0o7777, 0o750);
    const after = await vfs.getattr(root, 1);
    assert.equal(after.nlink, before.nlink + 1);
    assert.ok(later(after.mtime, before.mtime) && later(after.ctime, before.ctime));
    await vfs.mkdir(root, a.ino, n("b"), 0o755, 0);
    await vfs.mknod(root, a.ino, n("file"), 0o100644, 0, 0);
    assert.equal((await vfs.getattr(root, a.ino)).nlink, 3);
    await assert.rejects(vfs.mkdir(root, 1, n("a"), 0o755, 0), errno("EEXIST"));
    await assert.rejects(vfs.mknod(root, 1, n("a"), 0o100644, 0, 0), errno("EEXIST"));
    await assert.rejects(vfs.mkdir(root, 1, n("."), 0o755, 0), errno("EEXIST"));
    await assert.rejects(vfs.mkdir(root, 1, n("x".repeat(256)), 0o755, 0), errno("ENAMETOOLONG"));
  });
});

Deno.test("mknod: fifo, socket, devices only for root", async () => {
  await withVfs(async ({ vfs }) => {
    await vfs.setattr(root, 1, { mode: 0o777 });
    const fifo = await vfs.mknod(alice, 1, n("fifo"), 0o010644, 0, 0o022);
    assert.equal(fifo.mode, 0o010644);
    const sock = await vfs.mknod(alice, 1, n("sock"), 0o140755, 0, 0o022);
    assert.equal(sock.mode, 0o140755);
    await assert.rejects(vfs.mknod(alice, 1, n("chr"), 0o020644, 0x0103, 0), errno("EPERM"));
    await assert.rejects(vfs.mknod(alice, 1, n("blk"), 0o060644, 0x0801, 0), errno("EPERM"));
    const chr = await vfs.mknod(root, 1, n("chr"), 0o020644, 0x0103, 0);
    assert.equal(chr.rdev, 0x0103);
    assert.equal(chr.mode, 0o020644);
    const plain = await vfs.mknod(alice, 1, n("plain"), 0o644, 0, 0);
    assert.equal(plain.mode, 0o100644);
    assert.equal(plain.uid, 1000);
    assert.equal(plain.gid, 1000);
  });
});

Deno.test("symlink and readlink; readlink of a file is EINVAL", async () => {
  await withVfs(async ({ vfs }) => {
    const s = await vfs.symlink(root, 1, n("s"), n("../some/where"));
    assert.equal(s.mode, 0o120777);
    assert.equal(s.size, 13);
    assert.equal(text(await vfs.readlink(root, s.ino)), "../some/where");
    const f = await vfs.mknod(root, 1, n("f"), 0o100644, 0, 0);
    await assert.rejects(vfs.readlink(root, f.ino), errno("EINVAL"));
    await assert.rejects(vfs.symlink(root, 1, n("s"), n("x")), errno("EEXIST"));
    await assert.rejects(vfs.symlink(root, 1, n("e"), n("")), errno("ENOENT"));
    await assert.rejects(vfs.symlink(root, 1, n("l"), n("x".repeat(4096))), errno("ENAMETOOLONG"));
    const max = await vfs.symlink(root, 1, n("max"), n("y".repeat(4095)));
    assert.equal((await vfs.readlink(root, max.ino)).length, 4095);
  });
});

Deno.test("link: nlink and ctime, EPERM on dirs, EEXIST, ENOENT after unlink", async () => {
  await withVfs(async ({ vfs }) => {
    const f = await vfs.mknod(root, 1, n("f"), 0o100644, 0, 0);
    const l = await vfs.link(root, f.ino, 1, n("g"));
    assert.equal(l.ino, f.ino);
    assert.equal(l.nlink, 2);
    assert.ok(later(l.ctime, f.ctime));
    const d = await vfs.mkdir(root, 1, n("d"), 0o755, 0);
    await assert.rejects(vfs.link(root, d.ino, 1, n("d2")), errno("EPERM"));
    await assert.rejects(vfs.link(root, f.ino, 1, n("g")), errno("EEXIST"));
    await assert.rejects(vfs.link(root, f.ino, f.ino, n("x")), errno("ENOTDIR"));
    await vfs.unlink(root, 1, n("f"));
    const g = await vfs.getattr(root, f.ino);
    assert.equal(g.nlink, 1);
    assert.ok(later(g.ctime, l.ctime));
    await vfs.unlink(root, 1, n("g"));
    // The kernel still holds lookups (from mknod and link): the inode lives on as an orphan.
    assert.equal((await vfs.getattr(root, f.ino)).nlink, 0);
    await assert.rejects(vfs.link(root, f.ino, 1, n("back")), errno("ENOENT"));
  });
});

Deno.test("link: protected_hardlinks keeps others from linking files they cannot write", async () => {
  await withVfs(async ({ vfs }) => {
    await vfs.setattr(root, 1, { mode: 0o777 });
    const mine = await vfs.mknod(root, 1, n("rootfile"), 0o100644, 0, 0);
    await assert.rejects(vfs.link(alice, mine.ino, 1, n("l")), errno("EPERM"));
    const open = await vfs.mknod(root, 1, n("shared"), 0o100666, 0, 0);
    await vfs.link(alice, open.ino, 1, n("l2"));
    const suid = await vfs.mknod(root, 1, n("suid"), 0o104777, 0, 0);
    await assert.rejects(vfs.link(alice, suid.ino, 1, n("l3")), errno("EPERM"));
  });
});

Deno.test("unlink and rmdir: error cases", async () => {
  await withVfs(async ({ vfs }) => {
    const d = await vfs.mkdir(root, 1, n("d"), 0o755, 0);
    await vfs.mknod(root, d.ino, n("f"), 0o100644, 0, 0);
    await assert.rejects(vfs.unlink(root, 1, n("d")), errno("EISDIR"));
    await assert.rejects(vfs.rmdir(root, 1, n("d")), errno("ENOTEMPTY"));
    await assert.rejects(vfs.rmdir(root, d.ino, n("f")), errno("ENOTDIR"));
    await assert.rejects(vfs.unlink(root, 1, n("missing")), errno("ENOENT"));
    await assert.rejects(vfs.rmdir(root, 1, n(".")), errno("EINVAL"));
    await assert.rejects(vfs.rmdir(root, 1, n("..")), errno("ENOTEMPTY"));
    const before = await vfs.getattr(root, d.ino);
    await vfs.unlink(root, d.ino, n("f"));
    const after = await vfs.getattr(root, d.ino);
    assert.ok(later(after.mtime, before.mtime) && later(after.ctime, before.ctime));
    const rootBefore = await vfs.getattr(root, 1);
    await vfs.rmdir(root, 1, n("d"));
    assert.equal((await vfs.getattr(root, 1)).nlink, rootBefore.nlink - 1);
    // The removed directory is still referenced: it lists as empty and takes no new entries.
    const dh = await vfs.opendir(root, d.ino, 0);
    const list = await vfs.readdir(root, d.ino, dh, 0, 10, false);
    assert.deepEqual(list.map((e) => text(e.name)), [".", ".."]);
    await vfs.releasedir(d.ino, dh);
    await assert.rejects(vfs.mknod(root, d.ino, n("g"), 0o100644, 0, 0), errno("ENOENT"));
  });
});

Deno.test("sticky directory: only owners of entry or dir (or root) remove", async () => {
  await withVfs(async ({ vfs }) => {
    const tmp = await vfs.mkdir(root, 1, n("tmp"), 0o1777, 0);
    assert.equal(tmp.mode & 0o7777, 0o1777);
    await vfs.mknod(alice, tmp.ino, n("a"), 0o100666, 0, 0);
    await assert.rejects(vfs.unlink(bob, tmp.ino, n("a")), errno("EPERM"));
    await assert.rejects(
      vfs.rename(bob, tmp.ino, n("a"), tmp.ino, n("b"), 0),
      errno("EPERM"),
    );
    await vfs.mknod(bob, tmp.ino, n("b"), 0o100666, 0, 0);
    await assert.rejects(vfs.rename(alice, tmp.ino, n("a"), tmp.ino, n("b"), 0), errno("EPERM"));
    await vfs.unlink(alice, tmp.ino, n("a"));
    await vfs.unlink(root, tmp.ino, n("b"));
    // The directory's owner may remove anything in it.
    const own = await vfs.mkdir(alice, tmp.ino, n("own"), 0o1777, 0);
    await vfs.mknod(bob, own.ino, n("x"), 0o100644, 0, 0);
    await vfs.unlink(alice, own.ino, n("x"));
  });
});

Deno.test("setgid directory: gid and S_ISGID inherited, S_ISGID dropped for outsiders", async () => {
  await withVfs(async ({ vfs }) => {
    const shared = await vfs.mkdir(root, 1, n("shared"), 0o777, 0);
    await vfs.setattr(root, shared.ino, { gid: 50, mode: 0o2777 });
    const sub = await vfs.mkdir(bob, shared.ino, n("sub"), 0o755, 0);
    assert.equal(sub.gid, 50);
    assert.equal(sub.mode & 0o7777, 0o2755);
    const file = await vfs.mknod(bob, shared.ino, n("f"), 0o102755, 0, 0);
    assert.equal(file.gid, 50);
    // bob is not in group 50: a set-group-id file he creates there loses S_ISGID.
    assert.equal(file.mode & 0o7777, 0o0755);
    const file2 = await vfs.mknod(alice, shared.ino, n("g"), 0o102755, 0, 0);
    assert.equal(file2.mode & 0o7777, 0o2755);
  });
});

Deno.test("setattr chmod: owner or root; S_ISGID cleared when caller not in group", async () => {
  await withVfs(async ({ vfs }) => {
    await vfs.setattr(root, 1, { mode: 0o777 });
    const f = await vfs.mknod(alice, 1, n("f"), 0o100644, 0, 0);
    await assert.rejects(vfs.setattr(bob, f.ino, { mode: 0o777 }), errno("EPERM"));
    const a = await vfs.setattr(alice, f.ino, { mode: 0o2755 });
    assert.equal(a.mode, 0o102755);
    assert.ok(later(a.ctime, f.ctime));
    await vfs.setattr(root, f.ino, { gid: 7 });
    const b = await vfs.setattr(alice, f.ino, { mode: 0o2755 });
    assert.equal(b.mode, 0o100755, "alice is not in group 7");
    const c = await vfs.setattr(root, f.ino, { mode: 0o2755 });
    assert.equal(c.mode, 0o102755);
  });
});

Deno.test("setattr chown: rules for non-root and set-id clearing on non-directories", async () => {
  await withVfs(async ({ vfs }) => {
    await vfs.setattr(root, 1, { mode: 0o777 });
    const f = await vfs.mknod(alice, 1, n("f"), 0o106755, 0, 0);
    assert.equal(f.mode & 0o7777, 0o6755);
    await assert.rejects(vfs.setattr(alice, f.ino, { uid: 1001 }), errno("EPERM"));
    await assert.rejects(vfs.setattr(alice, f.ino, { gid: 1001 }), errno("EPERM"));
    await assert.rejects(vfs.setattr(bob, f.ino, { gid: 1001 }), errno("EPERM"));
    // To a supplementary group: allowed; suid and group-executable sgid are dropped.
    const g = await vfs.setattr(alice, f.ino, { gid: 50 });
    assert.equal(g.gid, 50);
    assert.equal(g.mode & 0o7777, 0o0755);
    // Root chown drops them too; directories keep theirs.
    await vfs.setattr(root, f.ino, { mode: 0o6755 });
    assert.equal((await vfs.setattr(root, f.ino, { uid: 1001 })).mode & 0o7777, 0o0755);
    const d = await vfs.mkdir(root, 1, n("d"), 0o755, 0);
    await vfs.setattr(root, d.ino, { mode: 0o6755 });
    assert.equal((await vfs.setattr(root, d.ino, { uid: 1000 })).mode & 0o7777, 0o6755);
    // Same uid by the owner is fine (chown(f, own uid, -1)).
    const same = await vfs.setattr(bob, f.ino, { uid: 1001 });
    assert.equal(same.uid, 1001);
    // S_ISGID without group-execute survives a chown by root.
    await vfs.setattr(root, f.ino, { mode: 0o2745 });
    assert.equal((await vfs.setattr(root, f.ino, { gid: 3 })).mode & 0o7777, 0o2745);
  });
});

Deno.test("setattr times: explicit needs owner (EPERM), now needs write (EACCES)", async () => {
  await withVfs(async ({ vfs }) => {
    await vfs.setattr(root, 1, { mode: 0o777 });
    const f = await vfs.mknod(alice, 1, n("f"), 0o100644, 0, 0);
    const t = { sec: 1_000_000, nsec: 42 };
    await assert.rejects(vfs.setattr(bob, f.ino, { mtime: t }), errno("EPERM"));
    await assert.rejects(vfs.setattr(bob, f.ino, { mtime: "now", atime: "now" }), errno("EACCES"));
    const a = await vfs.setattr(alice, f.ino, { mtime: t });
    assert.deepEqual(a.mtime, t);
    assert.deepEqual(a.atime, f.atime, "UTIME_OMIT leaves atime");
    assert.ok(later(a.ctime, f.ctime));
    const b = await vfs.setattr(alice, f.ino, { atime: t });
    assert.deepEqual(b.atime, t);
    assert.deepEqual(b.mtime, t);
    await vfs.setattr(alice, f.ino, { mode: 0o666 });
    const c = await vfs.setattr(bob, f.ino, { mtime: "now", atime: "now" });
    assert.ok(later(c.mtime, t) && later(c.atime, t));
    const negative = await vfs.setattr(root, f.ino, { mtime: { sec: -10, nsec: 5 } });
    assert.deepEqual(negative.mtime, { sec: -10, nsec: 5 });
  });
});

Deno.test("setattr size: truncate and extend, mtime/ctime, EISDIR, EACCES, EFBIG, suid drop", async () => {
  await withVfs(async ({ vfs }) => {
    await vfs.setattr(root, 1, { mode: 0o777 });
    const f = await vfs.mknod(alice, 1, n("f"), 0o104777, 0, 0);
    const big = await vfs.setattr(alice, f.ino, { size: 5 * 2 ** 30 });
    assert.equal(big.size, 5 * 2 ** 30);
    assert.equal(big.blocks, 0, "extending makes a hole");
    assert.equal(big.mode & 0o7777, 0o0777, "non-root truncate drops suid");
    assert.ok(later(big.mtime, f.mtime));
    const same = await vfs.setattr(alice, f.ino, { size: 5 * 2 ** 30 });
    assert.ok(later(same.mtime, big.mtime), "ext4 stamps mtime even for the same size");
    assert.equal((await vfs.setattr(alice, f.ino, { size: 3 })).size, 3);
    const d = await vfs.mkdir(root, 1, n("d"), 0o755, 0);
    await assert.rejects(vfs.setattr(root, d.ino, { size: 0 }), errno("EISDIR"));
    const ro = await vfs.mknod(root, 1, n("ro"), 0o100644, 0, 0);
    await assert.rejects(vfs.setattr(alice, ro.ino, { size: 0 }), errno("EACCES"));
    await assert.rejects(vfs.setattr(root, ro.ino, { size: 2 ** 50 }), errno("EFBIG"));
    await assert.rejects(vfs.setattr(root, ro.ino, { size: -1 }), errno("EINVAL"));
  });
});

Deno.test("access: F_OK, R/W/X per class, root needs an x bit to execute", async () => {
  await withVfs(async ({ vfs }) => {
    await vfs.setattr(root, 1, { mode: 0o777 });
    const f = await vfs.mknod(root, 1, n("f"), 0o100640, 0, 0);
    await vfs.setattr(root, f.ino, { gid: 50 });
    await vfs.access(bob, f.ino, 0);
    await assert.rejects(vfs.access(bob, f.ino, 4), errno("EACCES"));
    await vfs.access(alice, f.ino, 4);
    await assert.rejects(vfs.access(alice, f.ino, 2), errno("EACCES"));
    await vfs.access(root, f.ino, 6);
    await assert.rejects(vfs.access(root, f.ino, 1), errno("EACCES"));
    await vfs.setattr(root, f.ino, { mode: 0o100001 });
    await vfs.access(root, f.ino, 1);
    // The owner class decides alone: an owner without r is refused even if others have it.
    const g = await vfs.mknod(alice, 1, n("g"), 0o100077, 0, 0);
    await assert.rejects(vfs.access(alice, g.ino, 4), errno("EACCES"));
    await vfs.access(bob, g.ino, 4);
  });
});

Deno.test("statfs reports the data directory's file system", async () => {
  await withVfs(async ({ vfs }) => {
    const st = await vfs.statfs(1);
    assert.ok(st.blocks > 0 && st.bsize > 0);
    assert.equal(st.namelen, 255);
  });
});

Deno.test("forget of an unlinked inode frees it; remember keeps it alive", async () => {
  await withVfs(async (f) => {
    const file = await f.vfs.mknod(root, 1, n("f"), 0o100644, 0, 0);
    f.vfs.remember(file.ino);
    await f.vfs.unlink(root, 1, n("f"));
    assert.equal((await f.vfs.getattr(root, file.ino)).nlink, 0);
    f.vfs.forget(file.ino, 1);
    await new Promise((r) => setTimeout(r, 20));
    assert.equal((await f.vfs.getattr(root, file.ino)).nlink, 0, "one lookup still held");
    f.vfs.forget(file.ino, 1);
    await waitFor(async () => {
      try {
        await f.vfs.getattr(root, file.ino);
        return false;
      } catch {
        return true;
      }
    });
  });
});

async function waitFor(check: () => Promise<boolean>): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 5));
  }
  assert.fail("condition never became true");
}

export type { Attr };
