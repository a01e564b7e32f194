/** Tests of the server's request path: requests answered from memory are answered in the same
 * call (no promise), and agree with the answers that wait for the store. */

import assert from "node:assert/strict";
import { n, root, withVfs } from "../vfs/_testing.ts";
import { BackingFiles, FuseServer } from "./server.ts";
import type { FuseDevice } from "./session.ts";
import { IN_HEADER_SIZE, Opcode } from "./wire.ts";

/** A FUSE request as the kernel writes it: header, then `body`. */
function request(opcode: number, nodeid: number, unique: bigint, body = new Uint8Array()) {
  const bytes = new Uint8Array(IN_HEADER_SIZE + body.length);
  const dv = new DataView(bytes.buffer);
  dv.setUint32(0, bytes.length, true);
  dv.setUint32(4, opcode, true);
  dv.setBigUint64(8, unique, true);
  dv.setBigUint64(16, BigInt(nodeid), true);
  bytes.set(body, IN_HEADER_SIZE);
  return bytes;
}

/** The error of a reply (out header: len u32, error i32, unique u64). */
const errorOf = (reply: Uint8Array) =>
  new DataView(reply.buffer, reply.byteOffset).getInt32(4, true);

/** Send one request; returns the reply if it was sent before handleRequest returned, else
 * "later" (and the reply once it comes, through `wait`). */
function send(server: FuseServer, bytes: Uint8Array) {
  let reply: Uint8Array | null | undefined;
  let resolve: (r: Uint8Array | null) => void;
  const wait = new Promise<Uint8Array | null>((r) => resolve = r);
  server.handleRequest(bytes, (out) => {
    reply = out && out.slice();
    resolve(reply);
  });
  return { sync: reply !== undefined, wait };
}

Deno.test("server: GETATTR and LOOKUP of cached inodes are answered without waiting", async () => {
  await withVfs(async ({ vfs }) => {
    const server = new FuseServer({} as FuseDevice, vfs);
    const f = await vfs.mknod(root, 1, n("f"), 0o100644, 0, 0);
    await vfs.getattr(root, f.ino); // in the namespace's cache now

    const getattr = send(server, request(Opcode.GETATTR, f.ino, 7n, new Uint8Array(16)));
    assert.ok(getattr.sync, "GETATTR of a cached inode answered in the same call");
    const attrReply = (await getattr.wait)!;
    assert.equal(errorOf(attrReply), 0);
    const out = new DataView(attrReply.buffer, 16); // fuse_attr_out: valid u64, nsec, dummy, attr
    assert.equal(Number(out.getBigUint64(16, true)), f.ino);

    const lookup = send(server, request(Opcode.LOOKUP, 1, 8n, n("f\0")));
    assert.ok(lookup.sync, "LOOKUP of a cached name answered in the same call");
    const entry = new DataView((await lookup.wait)!.buffer, 16); // fuse_entry_out: nodeid first
    assert.equal(Number(entry.getBigUint64(0, true)), f.ino);

    // Errors from the synchronous path are replies too.
    const notDir = send(server, request(Opcode.LOOKUP, f.ino, 9n, n("x\0")));
    assert.equal(errorOf((await notDir.wait)!), -20); // ENOTDIR
    const missing = send(server, request(Opcode.GETATTR, 999_999, 10n, new Uint8Array(16)));
    assert.equal(errorOf((await missing.wait)!), -2); // ENOENT
  });
});

Deno.test("server: GETXATTR security.capability of a new file is answered without waiting", async () => {
  await withVfs(async ({ vfs }) => {
    const server = new FuseServer({} as FuseDevice, vfs);
    const f = await vfs.create(root, 1, n("f"), 0o100644, 0, 1);
    // fuse_getxattr_in (size u32, padding u32), then the name: size 0 asks for the size only.
    const body = (name: string, size = 0) => {
      const bytes = new Uint8Array(8 + name.length + 1);
      new DataView(bytes.buffer).setUint32(0, size, true);
      bytes.set(n(name), 8);
      return bytes;
    };
    const cap = send(server, request(Opcode.GETXATTR, f.attr.ino, 7n, body("security.capability")));
    assert.ok(cap.sync, "the kernel's first-write question answered in the same call");
    assert.equal(errorOf((await cap.wait)!), -61); // ENODATA

    // Set, it is answered from the cache too, with its size; other names take the async path.
    await vfs.setxattr(root, f.attr.ino, "security.capability", new Uint8Array(20), 0);
    const set = send(server, request(Opcode.GETXATTR, f.attr.ino, 8n, body("security.capability")));
    assert.ok(set.sync);
    const sizeOut = new DataView((await set.wait)!.buffer, 16); // fuse_getxattr_out: size u32
    assert.equal(sizeOut.getUint32(0, true), 20);
    const user = send(server, request(Opcode.GETXATTR, f.attr.ino, 9n, body("user.x")));
    assert.equal(user.sync, false);
    assert.equal(errorOf((await user.wait)!), -61);
    const gone = send(server, request(Opcode.GETXATTR, 999_999, 10n, body("security.capability")));
    assert.equal(errorOf((await gone.wait)!), -2); // ENOENT: not cached, from the store
    await vfs.release(f.attr.ino, f.fh, 0);
  });
});

Deno.test("vfs: lookupCached and getattrCached agree with lookup and getattr", async () => {
  await withVfs(async ({ vfs }) => {
    const d = await vfs.mkdir(root, 1, n("d"), 0o700, 0);
    const f = await vfs.mknod(root, d.ino, n("f"), 0o100644, 0, 0);
    await vfs.lookupOrNull(root, d.ino, n("f"));
    await vfs.lookupOrNull(root, d.ino, n("none"));
    const alice = { uid: 1000, gid: 1000, pid: 2 };
    assert.deepEqual(vfs.lookupCached!(root, d.ino, n("f")), await vfs.lookup(root, d.ino, n("f")));
    assert.equal(vfs.lookupCached!(root, d.ino, n("none")), null);
    assert.throws(() => vfs.lookupCached!(alice, d.ino, n("f")), /EACCES/);
    assert.throws(() => vfs.lookupCached!(root, f.ino, n("x")), /ENOTDIR/);
    assert.equal(vfs.lookupCached!(root, d.ino, n("..")), undefined); // always the slow path
    // A change is seen at once: the cache is the one the transactions update.
    await vfs.setattr(root, f.ino, { mode: 0o600 });
    assert.equal(vfs.getattrCached!(root, f.ino)!.mode & 0o777, 0o600);
    assert.deepEqual(vfs.getattrCached!(root, f.ino), await vfs.getattr(root, f.ino));
  });
});

Deno.test("server: OPEN and RELEASE of a cached, unchanged file are answered without waiting", async () => {
  await withVfs(async ({ vfs }) => {
    const server = new FuseServer({} as FuseDevice, vfs);
    const f = await vfs.mknod(root, 1, n("f"), 0o100644, 0, 0);
    await vfs.lookup(root, 1, n("f")); // the kernel holds it, as before any open
    const openIn = new Uint8Array(8); // fuse_open_in: flags, open_flags (O_RDONLY)
    const opened = send(server, request(Opcode.OPEN, f.ino, 11n, openIn));
    assert.ok(opened.sync, "OPEN answered in the same call");
    const openReply = (await opened.wait)!;
    assert.equal(errorOf(openReply), 0);
    const fh = new DataView(openReply.buffer, 16).getBigUint64(0, true);
    assert.equal(vfs.openHandles().length, 1);
    const releaseIn = new Uint8Array(24); // fuse_release_in: fh, flags, release_flags, owner
    new DataView(releaseIn.buffer).setBigUint64(0, fh, true);
    const released = send(server, request(Opcode.RELEASE, f.ino, 12n, releaseIn));
    assert.ok(released.sync, "RELEASE answered in the same call");
    assert.equal(errorOf((await released.wait)!), 0);
    assert.equal(vfs.openHandles().length, 0);
  });
});

Deno.test("server: OPENDIR and RELEASEDIR of a cached directory are answered without waiting", async () => {
  await withVfs(async ({ vfs }) => {
    const server = new FuseServer({} as FuseDevice, vfs);
    const d = await vfs.mkdir(root, 1, n("d"), 0o755, 0);
    await vfs.lookup(root, 1, n("d")); // the kernel holds it, as before any opendir
    const atimeDue = await vfs.atimeDue(d.ino);
    const opened = send(server, request(Opcode.OPENDIR, d.ino, 21n, new Uint8Array(8)));
    assert.ok(opened.sync, "OPENDIR answered in the same call");
    const reply = (await opened.wait)!;
    assert.equal(errorOf(reply), 0);
    const out = new DataView(reply.buffer, 16); // fuse_open_out: fh u64, open_flags u32
    const fh = out.getBigUint64(0, true);
    // FOPEN_CACHE_DIR always on one node; FOPEN_KEEP_CACHE only when a listing would not move atime.
    assert.equal(out.getUint32(8, true), 8 | (atimeDue ? 0 : 2));
    assert.equal(vfs.openHandles().length, 1);
    const listing = await vfs.readdirListing(root, d.ino, Number(fh), 0);
    assert.equal(listing.count, 2); // "." and ".."
    const releaseIn = new Uint8Array(24);
    new DataView(releaseIn.buffer).setBigUint64(0, fh, true);
    const released = send(server, request(Opcode.RELEASEDIR, d.ino, 22n, releaseIn));
    assert.ok(released.sync, "RELEASEDIR answered in the same call");
    assert.equal(errorOf((await released.wait)!), 0);
    assert.equal(vfs.openHandles().length, 0);
    // Errors of the synchronous path are replies too: a file, a directory opened for writing, a
    // handle that is not open (the waiting path says EBADF).
    const f = await vfs.mknod(root, 1, n("f"), 0o100644, 0, 0);
    const notDir = send(server, request(Opcode.OPENDIR, f.ino, 23n, new Uint8Array(8)));
    assert.equal(errorOf((await notDir.wait)!), -20); // ENOTDIR
    const writeIn = new Uint8Array(8);
    new DataView(writeIn.buffer).setUint32(0, 1, true); // O_WRONLY
    const forWriting = send(server, request(Opcode.OPENDIR, d.ino, 24n, writeIn));
    assert.equal(errorOf((await forWriting.wait)!), -21); // EISDIR
    const again = send(server, request(Opcode.RELEASEDIR, d.ino, 25n, releaseIn));
    assert.equal(errorOf((await again.wait)!), -9); // EBADF
  });
});

Deno.test("vfs: openCached and releaseCached only where nothing needs a wait", async () => {
  await withVfs(async ({ vfs }) => {
    const alice = { uid: 1000, gid: 1000, pid: 2 };
    const f = await vfs.mknod(root, 1, n("f"), 0o100600, 0, 0);
    await vfs.lookup(root, 1, n("f"));
    assert.throws(() => vfs.openCached!(alice, f.ino, 0), /EACCES/);
    assert.equal(vfs.openCached!(root, f.ino, 0o1000 | 2), undefined); // O_TRUNC: a transaction
    // The first writer puts the inode on the pending write-back list: a transaction.
    assert.equal(vfs.openCached!(root, f.ino, 2), undefined);
    assert.equal(vfs.openHandles().length, 0, "nothing done");
    const a = await vfs.open(root, f.ino, 2);
    const b = vfs.openCached!(root, f.ino, 0)!;
    assert.equal(a.backingFd, b.backingFd); // one local fd per inode
    assert.ok(vfs.releaseCached!(f.ino, b.fh));
    // A write leaves attributes to store: on one node the write-back timer stores them (the
    // pending mark covers a crash), so the last release needs no wait.
    await vfs.write(root, f.ino, a.fh, 0, n("data"));
    assert.ok(vfs.releaseCached!(f.ino, a.fh));
    assert.equal(vfs.openHandles().length, 0);
    assert.equal((await vfs.getattr(root, f.ino)).size, 4);
    // Still on the list: the next writer needs no transaction.
    const w = vfs.openCached!(root, f.ino, 2)!;
    assert.ok(vfs.releaseCached!(f.ino, w.fh));
    // Unlinked and forgotten: the last release purges the inode, which takes a transaction.
    const c = vfs.openCached!(root, f.ino, 0)!;
    await vfs.unlink(root, 1, n("f"));
    vfs.forget(f.ino, 2); // mknod and lookup each counted one
    assert.equal(vfs.releaseCached!(f.ino, c.fh), false);
    await vfs.release(f.ino, c.fh, 0);
    await assert.rejects(vfs.getattr(root, f.ino), /ENOENT/);
  });
});

/** A device that keeps the notifications written to it: [code, node id] (node id 0 for an
 * epoch bump). */
function recordingDevice(): { device: FuseDevice; written: [number, number][] } {
  const written: [number, number][] = [];
  const device = {
    writeMessage(message: Uint8Array) {
      const dv = new DataView(message.buffer, message.byteOffset, message.byteLength);
      const code = dv.getInt32(4, true);
      written.push([code, message.byteLength > 16 ? Number(dv.getBigUint64(16, true)) : 0]);
    },
  } as unknown as FuseDevice;
  return { device, written };
}

const nextTurn = () => new Promise((resolve) => setTimeout(resolve, 0));
const INVAL_INODE = 2; // FUSE_NOTIFY_INVAL_INODE
const INC_EPOCH = 8; // FUSE_NOTIFY_INC_EPOCH

Deno.test("server: attribute invalidations go once per inode per turn, only for inodes the kernel holds", async () => {
  await withVfs(async ({ vfs }) => {
    const { device, written } = recordingDevice();
    const server = new FuseServer(device, vfs);
    const f = await vfs.mknod(root, 1, n("f"), 0o100644, 0, 0); // counted: the reply's entry
    const g = await vfs.mknod(root, 1, n("g"), 0o100644, 0, 0);
    vfs.forget(g.ino, 1); // the kernel dropped it
    server.invalidateAttributes(f.ino);
    server.invalidateAttributes(g.ino);
    server.invalidateAttributes(f.ino);
    server.invalidateAttributes(1); // the root: held without a lookup
    server.invalidateAttributes(999_999); // never given to the kernel
    assert.deepEqual(written, [], "written on a later turn, not from inside the caller");
    await nextTurn();
    assert.deepEqual(written, [[INVAL_INODE, f.ino], [INVAL_INODE, 1]]);
    assert.equal(server.notifyStats.invalInodeSkipped, 2);

    // While a request is in flight, decided when written: a LOOKUP answered after the change
    // was asked for (its attributes maybe read before it) makes g known.
    written.length = 0;
    const statfs = send(server, request(Opcode.STATFS, 1, 7n));
    assert.ok(!statfs.sync);
    server.invalidateAttributes(g.ino);
    server.invalidateAttributes(999_999);
    const lookup = send(server, request(Opcode.LOOKUP, 1, 8n, n("g\0")));
    assert.equal(errorOf((await lookup.wait)!), 0);
    await statfs.wait;
    await nextTurn();
    assert.deepEqual(written, [[INVAL_INODE, g.ino]]);
    assert.equal(server.notifyStats.invalInodeSkipped, 3);
  });
});

Deno.test("server: an entry epoch bump only when the kernel may hold a name in a changed directory", async () => {
  await withVfs(async ({ vfs }) => {
    const { device, written } = recordingDevice();
    const server = new FuseServer(device, vfs);
    server.negotiated = { minor: 44, flags: 0, flags2: 0, passthrough: false };
    const d = await vfs.mkdir(root, 1, n("d"), 0o755, 0);
    const e = await vfs.mkdir(root, 1, n("e"), 0o755, 0);
    // Nothing was asked of this server yet: the kernel holds no name anywhere.
    assert.equal(server.invalidateEntriesIn([1, d.ino]), false);
    assert.deepEqual(written, []);

    // A LOOKUP in d, found or not, can leave a dentry there (a negative one is cached too).
    const missing = send(server, request(Opcode.LOOKUP, d.ino, 7n, n("nothing\0")));
    await missing.wait;
    assert.equal(server.invalidateEntriesIn([e.ino]), false, "a name in d, a change in e");
    assert.equal(server.invalidateEntriesIn([e.ino, d.ino]), true);
    assert.deepEqual(written, [[INC_EPOCH, 0]]);
    // Every name given so far is stamped with the old epoch now: no second bump for them.
    assert.equal(server.invalidateEntriesIn([d.ino]), false);

    // A RENAME from d to e leaves the moved name in e (fuse_rename_in: newdir u64 first).
    const body = new Uint8Array(8 + 4);
    new DataView(body.buffer).setBigUint64(0, BigInt(e.ino), true);
    body.set(n("x\0"), 8);
    body.set(n("y\0"), 10);
    await send(server, request(Opcode.RENAME, d.ino, 8n, body)).wait; // ENOENT: no x; noted anyway
    assert.equal(server.invalidateEntriesIn([e.ino]), true);
    // An unconditional bump (a volume's change) forgets the names given too.
    await send(server, request(Opcode.LOOKUP, 1, 9n, n("d\0"))).wait;
    assert.equal(server.invalidateAllEntries(), true);
    assert.equal(server.invalidateEntriesIn([1]), false);
    assert.equal(server.notifyStats.epoch, 3);

    // A listing's entries are stamped when the kernel parses the reply, maybe after a bump:
    // d stays named across bumps while a handle of it is open, and once more after its release.
    const opendir = send(server, request(Opcode.OPENDIR, d.ino, 10n, new Uint8Array(8)));
    const fh = new DataView((await opendir.wait)!.buffer, 16).getBigUint64(0, true);
    const read = new Uint8Array(40); // fuse_read_in: fh, offset, size...
    new DataView(read.buffer).setBigUint64(0, fh, true);
    new DataView(read.buffer).setUint32(16, 4096, true);
    assert.equal(
      errorOf((await send(server, request(Opcode.READDIRPLUS, d.ino, 12n, read)).wait)!),
      0,
    );
    assert.equal(server.invalidateEntriesIn([d.ino]), true);
    assert.equal(server.invalidateEntriesIn([d.ino]), true, "open: still named");
    const release = new Uint8Array(24); // fuse_release_in: fh u64 first
    new DataView(release.buffer).setBigUint64(0, fh, true);
    await send(server, request(Opcode.RELEASEDIR, d.ino, 11n, release)).wait;
    assert.equal(server.invalidateEntriesIn([d.ino]), true, "released: named once more");
    assert.equal(server.invalidateEntriesIn([d.ino]), false);
  });
});

/** A device that counts BACKING_OPEN and BACKING_CLOSE (ids from 1) and refuses nothing. */
function backingDevice() {
  const log: string[] = [];
  let next = 1;
  const device = {
    backingOpen: (fd: number) => (log.push(`open fd ${fd}`), next++),
    backingClose: (id: number) => (log.push(`close ${id}`), 0),
  } as unknown as FuseDevice;
  return { device, log };
}

Deno.test("backing ids: kept with the local fd after the last handle, reused by the next passthrough open, unused by a cached one, closed with the fd", () => {
  const { device, log } = backingDevice();
  const backing = new BackingFiles(device, true);
  assert.equal(backing.open(7, 1, 30), 1);
  backing.release(1);
  assert.deepEqual(log, ["open fd 30"], "the last release keeps the id");
  assert.equal(backing.open(7, 2, 30, true), 1, "the next open reuses it");
  assert.ok(backing.hasWriter(7));
  backing.release(2);
  assert.ok(!backing.hasWriter(7));
  // An open that must be cached (no backing fd: set-id bits, a volume) stays cached, and a
  // passthrough open while it is open follows it; the kept id waits.
  assert.equal(backing.open(7, 3, undefined), undefined);
  assert.equal(backing.open(7, 4, 30), undefined);
  backing.release(3);
  backing.release(4);
  assert.deepEqual(log, ["open fd 30"]);
  assert.equal(backing.keptCount, 1);
  // The Vfs closed the local fd: the id goes with it; the next open registers the new fd.
  backing.localClosed(7);
  backing.localClosed(7);
  assert.deepEqual(log, ["open fd 30", "close 1"]);
  assert.equal(backing.open(7, 5, 31), 2);
  assert.deepEqual(backing.stats, { opened: 2, closed: 1, reused: 1 });
  // Without keepIds (the Vfs keeps no fds) the last release closes the id, as before.
  const plain = backingDevice();
  const once = new BackingFiles(plain.device);
  once.open(8, 1, 40);
  once.release(1);
  assert.deepEqual(plain.log, ["open fd 40", "close 1"]);
});

Deno.test("server: backing ids are kept only when the Vfs keeps local fds (mount.keep_closed_files)", async () => {
  for (const keepClosedFiles of [0, 8]) {
    await withVfs(async ({ vfs }) => {
      const { device, log } = backingDevice();
      const server = new FuseServer(device, vfs);
      const f = await vfs.create(root, 1, n("f"), 0o644, 0, 2);
      assert.equal(server.backing.open(f.attr.ino, f.fh, f.backingFd), 1);
      server.backing.release(f.fh);
      await vfs.release(f.attr.ino, f.fh, 0);
      assert.deepEqual(
        log,
        keepClosedFiles ? ["open fd " + f.backingFd] : [
          "open fd " + f.backingFd,
          "close 1",
        ],
      );
      vfs.forget(f.attr.ino, 1);
      await vfs.unlink(root, 1, n("f"));
      assert.equal(log.at(-1), "close 1", "the unlink closes the kept id with the fd");
    }, { keepClosedFiles });
  }
});
