/** Tests of extended attributes: namespaces, permissions, flags, limits, ctime, restart. */

import assert from "node:assert/strict";
import { alice, bob, n, root, text, withVfs } from "./_testing.ts";
import { FsError } from "../fs_error.ts";
import type { Timespec } from "./types.ts";
import { openEmbeddedKV } from "../meta/embedded.ts";
import { createPortableEngine } from "../io/portable.ts";
import { createVfs } from "./vfs.ts";
import type { TxnRequest } from "../meta/kv.ts";

function errno(name: string) {
  return (e: unknown) => {
    assert.ok(e instanceof FsError, `expected FsError ${name}, got ${e}`);
    assert.equal(e.message.split(":")[0], name);
    return true;
  };
}

const later = (a: Timespec, b: Timespec) => a.sec > b.sec || (a.sec === b.sec && a.nsec > b.nsec);

Deno.test("user xattrs: set, get, list, remove, CREATE/REPLACE, ENODATA, ctime", async () => {
  await withVfs(async (f) => {
    const file = await f.vfs.mknod(root, 1, n("f"), 0o100644, 0, 0);
    await f.vfs.setxattr(root, file.ino, "user.a", n("one"), 0);
    const a = await f.vfs.getattr(root, file.ino);
    assert.ok(later(a.ctime, file.ctime));
    assert.equal(text(await f.vfs.getxattr(root, file.ino, "user.a")), "one");
    await assert.rejects(f.vfs.setxattr(root, file.ino, "user.a", n("x"), 1), errno("EEXIST"));
    await assert.rejects(f.vfs.setxattr(root, file.ino, "user.b", n("x"), 2), errno("ENODATA"));
    await f.vfs.setxattr(root, file.ino, "user.a", n("two"), 2);
    await f.vfs.setxattr(root, file.ino, "user.b", new Uint8Array(0), 1);
    assert.deepEqual((await f.vfs.listxattr(root, file.ino)).sort(), ["user.a", "user.b"]);
    assert.equal((await f.vfs.getxattr(root, file.ino, "user.b")).length, 0);
    await assert.rejects(f.vfs.getxattr(root, file.ino, "user.none"), errno("ENODATA"));
    await f.vfs.removexattr(root, file.ino, "user.b");
    await assert.rejects(f.vfs.removexattr(root, file.ino, "user.b"), errno("ENODATA"));
    await f.restart();
    assert.equal(text(await f.vfs.getxattr(root, file.ino, "user.a")), "two");
    assert.deepEqual(await f.vfs.listxattr(root, file.ino), ["user.a"]);
  });
});

Deno.test("xattr namespaces: trusted root only, security for all, system ACLs refused", async () => {
  await withVfs(async ({ vfs }) => {
    await vfs.setattr(root, 1, { mode: 0o777 });
    const file = await vfs.mknod(alice, 1, n("f"), 0o100666, 0, 0);
    await assert.rejects(vfs.setxattr(alice, file.ino, "trusted.t", n("1"), 0), errno("EPERM"));
    await vfs.setxattr(root, file.ino, "trusted.t", n("1"), 0);
    await assert.rejects(vfs.getxattr(alice, file.ino, "trusted.t"), errno("EPERM"));
    assert.deepEqual(await vfs.listxattr(alice, file.ino), []);
    assert.deepEqual(await vfs.listxattr(root, file.ino), ["trusted.t"]);
    await vfs.setxattr(bob, file.ino, "security.s", n("2"), 0);
    assert.equal(text(await vfs.getxattr(alice, file.ino, "security.s")), "2");
    await assert.rejects(
      vfs.setxattr(root, file.ino, "system.posix_acl_access", n("x"), 0),
      errno("EOPNOTSUPP"),
    );
    await assert.rejects(
      vfs.getxattr(root, file.ino, "system.posix_acl_default"),
      errno("EOPNOTSUPP"),
    );
    await assert.rejects(vfs.setxattr(root, file.ino, "other.x", n("x"), 0), errno("EOPNOTSUPP"));
  });
});

Deno.test("user xattrs need r/w permission, and only on files and directories", async () => {
  await withVfs(async ({ vfs }) => {
    await vfs.setattr(root, 1, { mode: 0o777 });
    const file = await vfs.mknod(alice, 1, n("f"), 0o100640, 0, 0);
    await vfs.setxattr(alice, file.ino, "user.x", n("v"), 0);
    await assert.rejects(vfs.getxattr(bob, file.ino, "user.x"), errno("EACCES"));
    await assert.rejects(vfs.setxattr(bob, file.ino, "user.y", n("v"), 0), errno("EACCES"));
    await assert.rejects(vfs.removexattr(bob, file.ino, "user.x"), errno("EACCES"));
    const link = await vfs.symlink(root, 1, n("l"), n("f"));
    await assert.rejects(vfs.setxattr(root, link.ino, "user.x", n("v"), 0), errno("EPERM"));
    await assert.rejects(vfs.getxattr(root, link.ino, "user.x"), errno("ENODATA"));
    const fifo = await vfs.mknod(root, 1, n("p"), 0o010666, 0, 0);
    await assert.rejects(vfs.setxattr(root, fifo.ino, "user.x", n("v"), 0), errno("EPERM"));
    // Sticky directory: only its owner may set user xattrs on it.
    const tmp = await vfs.mkdir(root, 1, n("tmp"), 0o1777, 0);
    await assert.rejects(vfs.setxattr(alice, tmp.ino, "user.x", n("v"), 0), errno("EPERM"));
    await vfs.setxattr(root, tmp.ino, "user.x", n("v"), 0);
  });
});

Deno.test("xattr limits: name 1..255 bytes (ERANGE), value up to 64 KiB (E2BIG)", async () => {
  await withVfs(async ({ vfs }) => {
    const file = await vfs.mknod(root, 1, n("f"), 0o100644, 0, 0);
    const longest = "user." + "n".repeat(250);
    await vfs.setxattr(root, file.ino, longest, n("v"), 0);
    await assert.rejects(vfs.setxattr(root, file.ino, longest + "n", n("v"), 0), errno("ERANGE"));
    await assert.rejects(vfs.getxattr(root, file.ino, ""), errno("ERANGE"));
    await vfs.setxattr(root, file.ino, "user.big", new Uint8Array(65536), 0);
    assert.equal((await vfs.getxattr(root, file.ino, "user.big")).length, 65536);
    await assert.rejects(
      vfs.setxattr(root, file.ino, "user.huge", new Uint8Array(65537), 0),
      errno("E2BIG"),
    );
  });
});

Deno.test("xattrs go with the inode: deleted on unlink, not visible on a new inode", async () => {
  await withVfs(async ({ vfs }) => {
    const file = await vfs.mknod(root, 1, n("f"), 0o100644, 0, 0);
    await vfs.setxattr(root, file.ino, "user.a", n("1"), 0);
    vfs.forget(file.ino, 1);
    await vfs.unlink(root, 1, n("f"));
    await assert.rejects(vfs.getxattr(root, file.ino, "user.a"), errno("ENOENT"));
    const again = await vfs.mknod(root, 1, n("f"), 0o100644, 0, 0);
    assert.notEqual(again.ino, file.ino);
    assert.deepEqual(await vfs.listxattr(root, again.ino), []);
  });
});

Deno.test("cluster reads: security.capability of a new file costs no round trip, other names do", async () => {
  const dir = await Deno.makeTempDir({ prefix: "vfs-test-" });
  const real = await openEmbeddedKV(`${dir}/meta.db`);
  let txns = 0;
  const counting = new Proxy(real, {
    get(target, property) {
      if (property === "txn") {
        return (request: TxnRequest) => {
          txns++;
          return target.txn(request);
        };
      }
      const value = Reflect.get(target, property);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  const vfs = await createVfs({
    kv: counting,
    io: createPortableEngine(),
    dataDir: dir,
    rootUid: 0,
    rootGid: 0,
    validateReads: true,
  });
  try {
    const made = await vfs.mknod(root, 1, n("new"), 0o100644, 0, 0);
    txns = 0;
    assert.equal(await vfs.getxattrOrNull(root, made.ino, "security.capability"), null);
    assert.equal(txns, 0, "the kernel's capability check went to the store");
    assert.equal(await vfs.getxattrOrNull(root, made.ino, "user.other"), null);
    assert.ok(txns >= 1, "an ordinary read-only getxattr must go to the store");
  } finally {
    await vfs.destroy();
    await Deno.remove(dir, { recursive: true });
  }
});
