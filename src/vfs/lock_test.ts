/** Tests of POSIX record locks and flock: conflicts, split/merge, waiting, EINTR, EDEADLK. */

import assert from "node:assert/strict";
import { n, root, withVfs } from "./_testing.ts";
import { FsError } from "../fs_error.ts";
import { O_RDONLY, O_RDWR } from "../io/libc.ts";
import { F_RDLCK, F_UNLCK, F_WRLCK, LockTable } from "./lock.ts";
import type { Ctx, FileLock } from "./types.ts";

function errno(name: string) {
  return (e: unknown) => {
    assert.ok(e instanceof FsError, `expected FsError ${name}, got ${e}`);
    assert.equal(e.message.split(":")[0], name);
    return true;
  };
}

const EOF = Number.MAX_SAFE_INTEGER;
const lk = (type: number, start: number, end: number, pid = 1): FileLock => ({
  type,
  start,
  end,
  pid,
});
const posix = { wait: false, flock: false };
const posixWait = { wait: true, flock: false };

Deno.test("LockTable: a lock splits the owner's range and merges neighbours of one type", () => {
  const table = new LockTable();
  table.setRecord({ owner: 1n, pid: 1, type: F_WRLCK, start: 0, end: 99 });
  table.setRecord({ owner: 1n, pid: 1, type: F_RDLCK, start: 40, end: 59 });
  assert.deepEqual(
    table.records.map((r) => [r.type, r.start, r.end]),
    [[F_WRLCK, 0, 39], [F_RDLCK, 40, 59], [F_WRLCK, 60, 99]],
  );
  table.setRecord({ owner: 1n, pid: 1, type: F_WRLCK, start: 40, end: 59 });
  assert.deepEqual(table.records.map((r) => [r.type, r.start, r.end]), [[F_WRLCK, 0, 99]]);
  table.setRecord({ owner: 1n, pid: 1, type: F_UNLCK, start: 10, end: 19 });
  assert.deepEqual(
    table.records.map((r) => [r.start, r.end]),
    [[0, 9], [20, 99]],
  );
  table.setRecord({ owner: 1n, pid: 1, type: F_WRLCK, start: 100, end: Infinity });
  assert.deepEqual(table.records.map((r) => [r.start, r.end]), [[0, 9], [20, Infinity]]);
  table.releaseOwner(1n);
  assert.ok(table.isEmpty());
});

Deno.test("POSIX locks: conflicts between owners, getlk reports the holder", async () => {
  await withVfs(async ({ vfs }) => {
    const c = await vfs.create(root, 1, n("f"), 0o644, 0, O_RDWR);
    const ino = c.attr.ino;
    await vfs.setlk(root, ino, c.fh, 1n, lk(F_WRLCK, 0, 99, 11), posix);
    await vfs.setlk(root, ino, c.fh, 1n, lk(F_RDLCK, 200, EOF, 11), posix);
    const seen = await vfs.getlk(ino, c.fh, 2n, lk(F_RDLCK, 50, 60, 22));
    assert.deepEqual(seen, lk(F_WRLCK, 0, 99, 11));
    assert.equal((await vfs.getlk(ino, c.fh, 2n, lk(F_RDLCK, 300, 400))).type, F_UNLCK);
    assert.equal((await vfs.getlk(ino, c.fh, 2n, lk(F_WRLCK, 300, 400))).end, EOF);
    assert.equal((await vfs.getlk(ino, c.fh, 1n, lk(F_WRLCK, 0, EOF))).type, F_UNLCK);
    await assert.rejects(
      vfs.setlk(root, ino, c.fh, 2n, lk(F_WRLCK, 99, 99), posix),
      errno("EAGAIN"),
    );
    await vfs.setlk(root, ino, c.fh, 2n, lk(F_RDLCK, 100, 150), posix);
    await vfs.setlk(root, ino, c.fh, 2n, lk(F_RDLCK, 500, 600), posix);
    // close of any fd by owner 1 drops all its locks on the file.
    await vfs.flush(root, ino, c.fh, 1n);
    await vfs.setlk(root, ino, c.fh, 3n, lk(F_WRLCK, 0, 99), posix);
    await assert.rejects(
      vfs.setlk(root, ino, c.fh, 2n, lk(F_WRLCK, 0, 0, 1), { wait: false, flock: false }),
      errno("EAGAIN"),
    );
    await assert.rejects(vfs.setlk(root, ino, c.fh, 2n, lk(7, 0, 0), posix), errno("EINVAL"));
    await vfs.release(ino, c.fh, 0);
  });
});

Deno.test("POSIX locks: access mode of the handle (EBADF)", async () => {
  await withVfs(async ({ vfs }) => {
    const c = await vfs.create(root, 1, n("f"), 0o644, 0, O_RDWR);
    const r = await vfs.open(root, c.attr.ino, O_RDONLY);
    await assert.rejects(
      vfs.setlk(root, c.attr.ino, r.fh, 1n, lk(F_WRLCK, 0, 1), posix),
      errno("EBADF"),
    );
    await vfs.setlk(root, c.attr.ino, r.fh, 1n, lk(F_RDLCK, 0, 1), posix);
    await vfs.release(c.attr.ino, r.fh, 0);
    await vfs.release(c.attr.ino, c.fh, 0);
  });
});

Deno.test("SETLKW waits until the range is free; an abort gives EINTR", async () => {
  await withVfs(async ({ vfs }) => {
    const c = await vfs.create(root, 1, n("f"), 0o644, 0, O_RDWR);
    const ino = c.attr.ino;
    await vfs.setlk(root, ino, c.fh, 1n, lk(F_WRLCK, 0, 9), posix);
    let got = false;
    const waiting = vfs.setlk(root, ino, c.fh, 2n, lk(F_WRLCK, 5, 5), posixWait).then(() => {
      got = true;
    });
    await new Promise((r) => setTimeout(r, 10));
    assert.equal(got, false);
    await vfs.setlk(root, ino, c.fh, 1n, lk(F_UNLCK, 0, 4), posix); // not enough
    await new Promise((r) => setTimeout(r, 10));
    assert.equal(got, false);
    await vfs.setlk(root, ino, c.fh, 1n, lk(F_UNLCK, 5, 9), posix);
    await waiting;
    assert.equal(got, true);

    const abort = new AbortController();
    const ctx: Ctx = { ...root, signal: abort.signal };
    const interrupted = vfs.setlk(ctx, ino, c.fh, 3n, lk(F_RDLCK, 0, 9), posixWait);
    await new Promise((r) => setTimeout(r, 10));
    abort.abort();
    await assert.rejects(interrupted, errno("EINTR"));
    await vfs.release(ino, c.fh, 0);
  });
});

Deno.test("SETLKW that would wait on its own waiter is EDEADLK", async () => {
  await withVfs(async ({ vfs }) => {
    const c = await vfs.create(root, 1, n("f"), 0o644, 0, O_RDWR);
    const ino = c.attr.ino;
    await vfs.setlk(root, ino, c.fh, 1n, lk(F_WRLCK, 0, 0), posix);
    await vfs.setlk(root, ino, c.fh, 2n, lk(F_WRLCK, 1, 1), posix);
    const first = vfs.setlk(root, ino, c.fh, 1n, lk(F_WRLCK, 1, 1), posixWait);
    await new Promise((r) => setTimeout(r, 5));
    await assert.rejects(
      vfs.setlk(root, ino, c.fh, 2n, lk(F_WRLCK, 0, 0), posixWait),
      errno("EDEADLK"),
    );
    await vfs.setlk(root, ino, c.fh, 2n, lk(F_UNLCK, 0, EOF), posix);
    await first;
    await vfs.release(ino, c.fh, 0);
  });
});

Deno.test("flock: shared/exclusive per open file, released at release, independent of fcntl", async () => {
  await withVfs(async ({ vfs }) => {
    const a = await vfs.create(root, 1, n("f"), 0o644, 0, O_RDONLY);
    const b = await vfs.open(root, a.attr.ino, O_RDONLY);
    const ino = a.attr.ino;
    const fl = { wait: false, flock: true };
    await vfs.setlk(root, ino, a.fh, 10n, lk(F_RDLCK, 0, EOF), fl);
    await vfs.setlk(root, ino, b.fh, 20n, lk(F_RDLCK, 0, EOF), fl);
    await assert.rejects(vfs.setlk(root, ino, b.fh, 20n, lk(F_WRLCK, 0, EOF), fl), errno("EAGAIN"));
    // An exclusive flock on a read-only fd is fine (flock ignores the access mode).
    await vfs.setlk(root, ino, a.fh, 10n, lk(F_UNLCK, 0, EOF), fl);
    await vfs.setlk(root, ino, b.fh, 20n, lk(F_WRLCK, 0, EOF), fl);
    // POSIX locks do not see flocks.
    await vfs.setlk(root, ino, a.fh, 10n, lk(F_RDLCK, 0, EOF), posix);
    const waiting = vfs.setlk(root, ino, a.fh, 10n, lk(F_WRLCK, 0, EOF), {
      wait: true,
      flock: true,
    });
    await vfs.release(ino, b.fh, 0, 20n);
    await waiting;
    await vfs.release(ino, a.fh, 0, 10n);
  });
});

Deno.test("OFD locks: the last close (RELEASE) of the handle drops them; a flushed POSIX owner's later locks stay", async () => {
  await withVfs(async ({ vfs }) => {
    const c = await vfs.create(root, 1, n("ofd"), 0o644, 0, O_RDWR);
    const ino = c.attr.ino;
    const other = await vfs.open(root, ino, O_RDWR);
    // 7n: an OFD owner (the kernel's id of the open file), locking through c.fh only.
    await vfs.setlk(root, ino, c.fh, 7n, lk(F_WRLCK, 0, 9), posix);
    // 1n: a POSIX owner (a process) that locked through c.fh, flushed, then locked through the
    // other handle: its lock must survive c.fh's release.
    await vfs.setlk(root, ino, c.fh, 1n, lk(F_WRLCK, 20, 29), posix);
    await vfs.flush(root, ino, c.fh, 1n);
    await vfs.setlk(root, ino, other.fh, 1n, lk(F_WRLCK, 40, 49), posix);
    await vfs.flush(root, ino, c.fh, 99n); // the closing process's owner is not the OFD's
    assert.equal((await vfs.getlk(ino, other.fh, 2n, lk(F_WRLCK, 0, 9))).type, F_WRLCK);
    await vfs.release(ino, c.fh, 0);
    assert.equal((await vfs.getlk(ino, other.fh, 2n, lk(F_WRLCK, 0, 9))).type, F_UNLCK);
    assert.equal((await vfs.getlk(ino, other.fh, 2n, lk(F_WRLCK, 40, 49))).type, F_WRLCK);
    await vfs.release(ino, other.fh, 0);
  });
});
