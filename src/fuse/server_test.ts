/** Tests of the server's request path: requests answered from memory are answered in the same
 * call (no promise), and agree with the answers that wait for the store. */

import assert from "node:assert/strict";
import { n, root, withVfs } from "../vfs/_testing.ts";
import { FuseServer } from "./server.ts";
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
