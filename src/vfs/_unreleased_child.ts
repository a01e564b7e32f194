/**
 * Child process of restart_test.ts's "closed but not released" test: writes files the ways a
 * FUSE mount does (through the backing fd as passthrough does, through `write`, an existing file
 * opened for writing again) and never releases them, as a daemon killed after the program's
 * close(2) but before its FUSE_RELEASE was handled. Prints "ready" and waits for SIGKILL.
 */

import { openEmbeddedKV } from "../meta/embedded.ts";
import { createPortableEngine } from "../io/portable.ts";
import { createVfs } from "./vfs.ts";
import { O_RDWR, O_WRONLY, pwrite } from "../io/libc.ts";

const dir = Deno.args[0];
const vfs = await createVfs({
  kv: await openEmbeddedKV(`${dir}/meta.db`),
  io: createPortableEngine(),
  dataDir: dir,
  attrWritebackMs: 600_000,
});
const ctx = { uid: 0, gid: 0, pid: Deno.pid };
const encoder = new TextEncoder();
const name = (s: string) => encoder.encode(s);
const body = (s: string) => encoder.encode(`${s}:`.repeat(300));

// Passthrough: the kernel writes the local file itself; the daemon sees nothing until RELEASE.
const a = await vfs.create(ctx, 1, name("outside"), 0o644, 0, O_WRONLY);
pwrite(a.backingFd!, body("outside"), 0);
// Through the daemon: the size is in memory only.
const b = await vfs.create(ctx, 1, name("inside"), 0o644, 0, O_RDWR);
await vfs.write(ctx, b.attr.ino, b.fh, 0, body("inside"));
// An existing file, stored and released, opened for writing again and appended to.
const c = await vfs.create(ctx, 1, name("again"), 0o644, 0, O_RDWR);
await vfs.write(ctx, c.attr.ino, c.fh, 0, body("again"));
await vfs.release(c.attr.ino, c.fh, 0);
const o = await vfs.open(ctx, c.attr.ino, O_WRONLY);
pwrite(o.backingFd!, body("again"), body("again").length);
// Written, closed and stored, then its mtime set back (tar, cp -p): the time stands.
const d = await vfs.create(ctx, 1, name("dated"), 0o644, 0, O_RDWR);
await vfs.write(ctx, d.attr.ino, d.fh, 0, body("dated"));
await vfs.release(d.attr.ino, d.fh, 0);
await vfs.setattr(ctx, d.attr.ino, { mtime: { sec: 1_000_000, nsec: 5 } });
await Deno.stdout.write(encoder.encode("ready\n"));
setInterval(() => {}, 1000); // alive until killed
