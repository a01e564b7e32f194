/**
 * Child process of restart_test.ts's crash test: opens the vfs on a data dir, then forever
 * creates files, writes them, fsyncs file and directory, and prints "synced <name> <bytes>"
 * only after both fsyncs returned. The parent kills it with SIGKILL at a random moment.
 */

import { openEmbeddedKV } from "../meta/embedded.ts";
import { createPortableEngine } from "../io/portable.ts";
import { createVfs } from "./vfs.ts";
import { O_RDWR } from "../io/libc.ts";

const dir = Deno.args[0];
const round = Number(Deno.args[1]);
const vfs = await createVfs({
  kv: await openEmbeddedKV(`${dir}/meta.db`),
  io: createPortableEngine(),
  dataDir: dir,
  attrWritebackMs: 60_000,
});
const ctx = { uid: 0, gid: 0, pid: Deno.pid };
const encoder = new TextEncoder();
const out = Deno.stdout.writable.getWriter();
for (let i = 0;; i++) {
  const name = `r${round}-${i}`;
  const body = encoder.encode(`${name}:`.repeat(1 + (i * 37) % 500));
  const c = await vfs.create(ctx, 1, encoder.encode(name), 0o644, 0, O_RDWR);
  await vfs.write(ctx, c.attr.ino, c.fh, 0, body);
  // An unsynced tail write after the fsync'd part must not matter for what was recorded.
  await vfs.fsync(c.attr.ino, c.fh, false);
  await vfs.fsyncdir(1, 0, false);
  await out.write(encoder.encode(`synced ${name} ${body.length}\n`));
  await vfs.write(ctx, c.attr.ino, c.fh, body.length, encoder.encode("unsynced"));
  // Some files are unlinked while open: their orphans must be purged after the crash.
  if (i % 5 === 4) await vfs.unlink(ctx, 1, encoder.encode(name));
  if (i % 5 !== 4) await vfs.release(c.attr.ino, c.fh, 0);
}
