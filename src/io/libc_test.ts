/**
 * The exact errno of every call family of libc.ts and sockets.ts. Each call goes through a C
 * wrapper of libskyfs_uring.so that returns -errno (lib/uring/skyfs_uring.h, "Synchronous system
 * calls"), so the code is the failing call's own, never one left by the runtime between two FFI
 * calls; fsync and fdatasync, which run on Deno's blocking pool, were reported as EIO for every
 * failure before.
 */

import assert from "node:assert/strict";
import * as libc from "./libc.ts";
import { closeFd, pipe, shutdownSocket, tcpListen, tcpSocket } from "./sockets.ts";
import { ABI_VERSION, defaultLibraryPath } from "./uring_native.ts";
import { Errno, type ErrnoName, FsError } from "../fs_error.ts";

/** A predicate for assert.throws / assert.rejects: an FsError with exactly this errno. */
function code(name: ErrnoName | number) {
  const want = typeof name === "number" ? name : Errno[name];
  return (e: unknown) => {
    assert.ok(e instanceof FsError, `not an FsError: ${e}`);
    assert.equal(e.errno, want, `${e.message}: errno ${e.errno}, want ${name}`);
    return true;
  };
}

const EADDRINUSE = 98;
const EADDRNOTAVAIL = 99;

function withTempDir(run: (dir: string) => Promise<void> | void): () => Promise<void> {
  return async () => {
    const dir = await Deno.makeTempDir({ prefix: "libc-test-" });
    try {
      await run(dir);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  };
}

/** A NUL-terminated C string, for the *C calls. */
function c(path: string): Uint8Array {
  return new TextEncoder().encode(`${path}\0`);
}

Deno.test(
  "libc errno: open, openC, close, dup",
  withTempDir((dir) => {
    Deno.writeTextFileSync(`${dir}/file`, "x");
    Deno.mkdirSync(`${dir}/sub`);
    Deno.symlinkSync(`${dir}/file`, `${dir}/link`);
    assert.throws(() => libc.open(`${dir}/missing`, libc.O_RDONLY), code("ENOENT"));
    assert.throws(() => libc.openC(c(`${dir}/missing`), libc.O_RDONLY), code("ENOENT"));
    assert.throws(
      () => libc.open(`${dir}/file`, libc.O_RDWR | libc.O_CREAT | libc.O_EXCL),
      code("EEXIST"),
    );
    assert.throws(() => libc.openC(c(`${dir}/file/x`), libc.O_RDONLY), code("ENOTDIR"));
    assert.throws(() => libc.open(`${dir}/sub`, libc.O_WRONLY), code("EISDIR"));
    assert.throws(() => libc.open(`${dir}/link`, libc.O_RDONLY | libc.O_NOFOLLOW), code("ELOOP"));
    assert.throws(
      () => libc.open(`${dir}/${"n".repeat(300)}`, libc.O_RDONLY),
      code("ENAMETOOLONG"),
    );
    const fd = libc.open(`${dir}/file`, libc.O_RDONLY);
    const second = libc.dup(fd);
    assert.ok(second > fd);
    libc.close(second);
    libc.close(fd);
    assert.throws(() => libc.close(fd), code("EBADF"));
    assert.equal(libc.dup(fd), -Errno.EBADF);
  }),
);

Deno.test(
  "libc errno: pread, pwrite, ftruncate, fallocate, lseek, copy_file_range",
  withTempDir((dir) => {
    const buf = new Uint8Array(8);
    const rw = libc.open(`${dir}/f`, libc.O_RDWR | libc.O_CREAT);
    const ro = libc.open(`${dir}/f`, libc.O_RDONLY);
    const dirFd = libc.open(dir, libc.O_RDONLY | libc.O_DIRECTORY);
    const { fds: [r, w] } = pipe(4096);
    try {
      assert.throws(() => libc.pread(dirFd, buf, 0), code("EISDIR"));
      assert.throws(() => libc.pread(r, buf, 0), code("ESPIPE"));
      assert.throws(() => libc.pread(rw, buf, -1), code("EINVAL"));
      assert.throws(() => libc.pwrite(ro, buf, 0), code("EBADF"));
      assert.throws(() => libc.pwrite(w, buf, 0), code("ESPIPE"));
      assert.throws(() => libc.ftruncate(rw, -1), code("EINVAL"));
      assert.throws(() => libc.ftruncate(ro, 0), code("EINVAL"));
      assert.throws(() => libc.fallocate(ro, 0, 0, 4096), code("EBADF"));
      assert.throws(() => libc.fallocate(w, 0, 0, 4096), code("ESPIPE"));
      // Punching a hole without KEEP_SIZE is refused by every file system.
      assert.throws(
        () => libc.fallocate(rw, libc.FALLOC_FL_PUNCH_HOLE, 0, 4096),
        code("EOPNOTSUPP"),
      );
      assert.throws(() => libc.lseek(rw, 0, libc.SEEK_DATA), code("ENXIO"));
      assert.throws(() => libc.lseek(r, 0, libc.SEEK_SET), code("ESPIPE"));
      assert.throws(() => libc.lseek(rw, 0, 99), code("EINVAL"));
      libc.pwrite(rw, new Uint8Array(16).fill(1), 0);
      assert.throws(() => libc.copyFileRange(rw, 0, ro, 0, 16), code("EBADF"));
      assert.throws(() => libc.copyFileRange(rw, 0, dirFd, 0, 16), code("EISDIR"));
    } finally {
      for (const fd of [rw, ro, dirFd, r, w]) libc.close(fd);
    }
    assert.throws(() => libc.pread(rw, buf, 0), code("EBADF"));
    assert.throws(() => libc.pwrite(rw, buf, 0), code("EBADF"));
  }),
);

Deno.test(
  "libc errno: fsync and fdatasync on the blocking pool carry the real code",
  withTempDir(async (dir) => {
    const fd = libc.open(`${dir}/f`, libc.O_RDWR | libc.O_CREAT);
    libc.close(fd);
    // Reported as EIO before: the pool thread's errno was out of the JS thread's reach.
    await assert.rejects(libc.fsync(fd), code("EBADF"));
    await assert.rejects(libc.fdatasync(fd), code("EBADF"));
    const { fds: [r, w] } = pipe(4096);
    try {
      await assert.rejects(libc.fsync(r), code("EINVAL"));
      await assert.rejects(libc.fdatasync(w), code("EINVAL"));
    } finally {
      libc.close(r);
      libc.close(w);
    }
  }),
);

Deno.test(
  "libc errno: stat, statC and statBlocksC (quiet), fstat, statvfs, fstatvfs",
  withTempDir((dir) => {
    Deno.writeTextFileSync(`${dir}/file`, "x");
    assert.throws(() => libc.stat(`${dir}/missing`), code("ENOENT"));
    assert.throws(() => libc.stat(`${dir}/file/x`), code("ENOTDIR"));
    assert.equal(libc.statC(c(`${dir}/missing`), Errno.ENOENT), undefined);
    // quiet covers only its own errno.
    assert.throws(() => libc.statC(c(`${dir}/file/x`), Errno.ENOENT), code("ENOTDIR"));
    assert.throws(() => libc.statC(c(`${dir}/missing`)), code("ENOENT"));
    assert.equal(libc.statC(c(`${dir}/file`), Errno.ENOENT)?.size, 1);
    // statBlocksC: st_blocks alone, the same errno rules.
    Deno.writeFileSync(`${dir}/big`, new Uint8Array(256 * 1024).fill(1));
    const blocks = libc.statBlocksC(c(`${dir}/big`));
    assert.equal(blocks, libc.statC(c(`${dir}/big`))?.blocks);
    assert.equal(blocks, Deno.statSync(`${dir}/big`).blocks);
    assert.ok(blocks! >= 512, `${blocks} blocks for 256 KiB`);
    assert.equal(libc.statBlocksC(c(`${dir}/missing`), Errno.ENOENT), undefined);
    assert.throws(() => libc.statBlocksC(c(`${dir}/file/x`), Errno.ENOENT), code("ENOTDIR"));
    assert.throws(() => libc.statBlocksC(c(`${dir}/missing`)), code("ENOENT"));
    assert.throws(() => libc.fstat(987654), code("EBADF"));
    assert.throws(() => libc.statvfs(`${dir}/missing`), code("ENOENT"));
    assert.throws(() => libc.fstatvfs(987654), code("EBADF"));
  }),
);

Deno.test(
  "libc errno: unlink, rename and their C-string forms",
  withTempDir((dir) => {
    Deno.writeTextFileSync(`${dir}/file`, "x");
    Deno.mkdirSync(`${dir}/empty`);
    Deno.mkdirSync(`${dir}/full`);
    Deno.writeTextFileSync(`${dir}/full/x`, "x");
    assert.throws(() => libc.unlink(`${dir}/missing`), code("ENOENT"));
    assert.throws(() => libc.unlinkC(c(`${dir}/missing`)), code("ENOENT"));
    assert.throws(() => libc.unlink(`${dir}/empty`), code("EISDIR"));
    assert.throws(() => libc.rename(`${dir}/missing`, `${dir}/b`), code("ENOENT"));
    assert.throws(() => libc.renameC(c(`${dir}/missing`), c(`${dir}/b`)), code("ENOENT"));
    assert.throws(() => libc.rename(`${dir}/empty`, `${dir}/full`), code("ENOTEMPTY"));
    assert.throws(() => libc.renameC(c(`${dir}/file`), c(`${dir}/empty`)), code("EISDIR"));
    assert.throws(() => libc.rename(`${dir}/empty`, `${dir}/file`), code("ENOTDIR"));
    assert.throws(() => libc.rename(`${dir}/full`, `${dir}/full/y`), code("EINVAL"));
  }),
);

Deno.test(
  "libc errno: flock, futimens, poll, mmap, munmap",
  withTempDir((dir) => {
    const a = libc.open(`${dir}/lock`, libc.O_RDWR | libc.O_CREAT);
    const b = libc.open(`${dir}/lock`, libc.O_RDWR);
    const ro = libc.open(`${dir}/lock`, libc.O_RDONLY);
    try {
      libc.flock(a, libc.LOCK_EX | libc.LOCK_NB);
      // EWOULDBLOCK is EAGAIN: another open file description holds the lock.
      assert.throws(() => libc.flock(b, libc.LOCK_EX | libc.LOCK_NB), code("EAGAIN"));
      assert.throws(() => libc.flock(987654, libc.LOCK_EX), code("EBADF"));
      assert.throws(() => libc.flock(a, 0), code("EINVAL"));
      assert.throws(() => libc.setAtime(987654, 1, 0), code("EBADF"));
      assert.throws(() => libc.setAtime(a, 1, 2e9), code("EINVAL"));
      // A closed fd is no poll error: POLLNVAL (0x20) in revents.
      assert.equal(libc.pollNow(987654, libc.POLLPRI), 0x20);
      // More fds than RLIMIT_NOFILE (the kernel reads nfds as 32 bits: keep it small).
      const limit = Deno.readTextFileSync("/proc/self/limits").match(/open files\s+(\d+)/)![1];
      const over = BigInt(limit) + 1n;
      assert.equal(libc.sys().skyfs_sys_poll(new Uint8Array(8), over, 0), -Errno.EINVAL);
      assert.throws(() => libc.mapShared(ro, 4096), code("EACCES"));
      assert.throws(() => libc.mapShared(987654, 4096), code("EBADF"));
      assert.throws(() => libc.mapShared(a, 0), code("EINVAL"));
      const bad = { pointer: Deno.UnsafePointer.create(1n)!, bytes: new Uint8Array(4096) };
      assert.throws(() => libc.unmap(bad), code("EINVAL"));
    } finally {
      for (const fd of [a, b, ro]) libc.close(fd);
    }
  }),
);

Deno.test("sockets errno: bind, shutdown, setsockopt", () => {
  const [fd, port] = tcpListen("127.0.0.1", 0);
  try {
    assert.throws(() => tcpListen("127.0.0.1", port), code(EADDRINUSE));
    // Not an address of this machine (TEST-NET-1).
    assert.throws(() => tcpListen("192.0.2.1", 0), code(EADDRNOTAVAIL));
  } finally {
    closeFd(fd);
  }
  const unconnected = tcpSocket();
  shutdownSocket(unconnected); // ENOTCONN is not an error
  closeFd(unconnected);
  assert.throws(() => shutdownSocket(unconnected), code("EBADF"));
  const { fds: [r, w], capacity } = pipe(1 << 16);
  assert.ok(capacity >= 4096);
  // A pipe is no socket.
  assert.equal(
    libc.sys().skyfs_sys_setsockopt(r, 1, 2, new Uint8Array(4), 4),
    -88, // ENOTSOCK
  );
  closeFd(r);
  closeFd(w);
});

Deno.test("libc: a missing or old native library fails in one line naming the fix", async () => {
  const oneLine = (pattern: RegExp) => (e: unknown) => {
    assert.ok(e instanceof Error && !(e instanceof FsError), `${e}`);
    assert.ok(!e.message.includes("\n"), e.message);
    assert.match(e.message, pattern);
    return true;
  };
  assert.throws(
    () => libc.useNativeLibrary("/nonexistent/libskyfs_uring.so"),
    oneLine(/^cannot load \/nonexistent\/libskyfs_uring\.so \(.*\): run `deno task build`$/),
  );
  // A library without the version symbol at all.
  assert.throws(
    () => libc.useNativeLibrary("libc.so.6"),
    oneLine(/^cannot load libc\.so\.6 \(.*skyfs_uring_abi_version.*\): run `deno task build`$/),
  );
  // An older build: a library that reports the ABI before this one, so the build that lacks the
  // latest calls (built here, when a C compiler is at hand).
  const dir = await Deno.makeTempDir({ prefix: "libc-test-" });
  try {
    await Deno.writeTextFile(
      `${dir}/old.c`,
      `int skyfs_uring_abi_version(void) { return ${ABI_VERSION - 1}; }\n`,
    );
    const gcc = await new Deno.Command("gcc", {
      args: ["-shared", "-fPIC", "-o", `${dir}/old.so`, `${dir}/old.c`],
      stderr: "piped",
    }).output().catch(() => undefined);
    if (gcc?.success) {
      assert.throws(
        () => libc.useNativeLibrary(`${dir}/old.so`),
        oneLine(
          new RegExp(
            `is an old build \\(ABI ${ABI_VERSION - 1}, this code needs ${ABI_VERSION}\\): ` +
              "run `deno task build`$",
          ),
        ),
      );
    } else {
      console.log("no gcc: the old-build case is not tested");
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  // The failures left the library in use alone.
  libc.useNativeLibrary(defaultLibraryPath());
  assert.throws(() => libc.close(987654), code("EBADF"));
});

Deno.test("wallClock is the wall clock to the nanosecond, between two Date.now() readings", () => {
  // Date.now() is V8's reading of the same clock, but not always of the same instant to the
  // millisecond: under load it was seen 1 ms behind a clock_gettime read between two of its
  // readings. A millisecond either way still catches a wrong unit or a wrapped tv_sec; that the
  // daemon's stamps are never ahead of the kernel's is namespace_test's check, against ext4.
  for (let i = 0; i < 1000; i++) {
    const before = Date.now();
    const now = libc.wallClock();
    const after = Date.now();
    assert.ok(Number.isInteger(now.nsec) && now.nsec >= 0 && now.nsec < 1e9);
    const ms = Math.floor(now.sec * 1000 + now.nsec / 1e6);
    assert.ok(before - 1 <= ms && ms <= after + 1, `${before} - 1 <= ${ms} <= ${after} + 1`);
  }
});
