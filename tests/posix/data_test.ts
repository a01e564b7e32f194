/**
 * POSIX file data and times: open flags, files over 4 GiB, sparse files and SEEK_DATA/SEEK_HOLE,
 * fallocate (allocate, keep size, punch hole), copy_file_range, shared mmap, truncate, and
 * utimensat with UTIME_NOW/UTIME_OMIT and its permission rules. Same expectations on ext4 and skyfs.
 * @module
 */

import assert from "node:assert/strict";
import { suite, testMeta } from "../_harness.ts";
import { py } from "./_py.ts";

suite("posix data", {
  "O_APPEND, O_EXCL, O_TRUNC, O_DIRECTORY and umask": async ({ dir }) => {
    const r = await py(
      dir,
      `
      res = {}
      a = os.open("ap", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
      b = os.open("ap", os.O_WRONLY | os.O_APPEND)
      for i in range(50):
          os.write(a, b"a%02d;" % i); os.write(b, b"b%02d;" % i)
      os.pwrite(a, b"P", 0)   # Linux appends even with an offset under O_APPEND
      os.close(a); os.close(b)
      data = read_file("ap")
      res["append"] = [len(data), data[:8].decode(), data[-1:].decode()]
      res["umask_mode"] = oct(st("ap")["perm"])
      res["excl"] = [E(os.open, "ap", os.O_WRONLY | os.O_CREAT | os.O_EXCL), E(os.open, "new", os.O_WRONLY | os.O_CREAT | os.O_EXCL)]
      m0 = st("ap"); time.sleep(0.02)
      os.close(os.open("ap", os.O_WRONLY | os.O_TRUNC))
      m1 = st("ap")
      res["trunc"] = [m1["size"], m1["mtime"] > m0["mtime"], m1["ctime"] > m0["ctime"]]
      os.mkdir("d")
      res["odirectory_on_file"] = E(os.open, "ap", os.O_RDONLY | os.O_DIRECTORY)
      res["write_dir"] = E(os.open, "d", os.O_WRONLY)
      res["missing"] = E(os.open, "nope", os.O_RDONLY)
      res["creat_in_missing"] = E(os.open, "nope/x", os.O_WRONLY | os.O_CREAT)
      fd = os.open("ro", os.O_RDWR | os.O_CREAT, 0o444)
      res["create_ro_mode_fd_writable"] = os.write(fd, b"ok"); os.close(fd)
      res["ro_reopen"] = as_user(1000, 1000, lambda: E(os.open, "ro", os.O_WRONLY))
      fd = os.open("ap", os.O_RDONLY)
      res["write_on_rdonly_fd"] = E(os.write, fd, b"x"); os.close(fd)
      out(res)
    `,
    );
    assert.deepEqual(r, {
      append: [401, "a00;b00;", "P"],
      umask_mode: "0o644",
      excl: ["EEXIST", "OK"],
      trunc: [0, true, true],
      odirectory_on_file: "ENOTDIR",
      write_dir: "EISDIR",
      missing: "ENOENT",
      creat_in_missing: "ENOENT",
      create_ro_mode_fd_writable: 2,
      ro_reopen: "EACCES",
      write_on_rdonly_fd: "EBADF",
    });
  },

  "a file over 4 GiB: sparse write at 5 GiB, read back, truncate": async ({ dir }) => {
    const r = await py(
      dir,
      `
      G = 1 << 30
      fd = os.open("big", os.O_RDWR | os.O_CREAT, 0o644)
      os.pwrite(fd, b"hello", 5 * G)
      os.pwrite(fd, b"low", 4096)
      os.fsync(fd)
      s = os.fstat(fd)
      res = {"size": s.st_size, "at5g": os.pread(fd, 5, 5 * G).decode(),
             "hole_4g": os.pread(fd, 8, 4 * G) == b"\\0" * 8, "low": os.pread(fd, 3, 4096).decode(),
             "sparse": s.st_blocks * 512 < (1 << 20), "eof_read": os.pread(fd, 10, 5 * G + 5)}
      res["eof_read"] = len(res["eof_read"])
      os.ftruncate(fd, 6 * G); res["grown"] = os.fstat(fd).st_size
      res["zero_tail"] = os.pread(fd, 4, 6 * G - 4) == b"\\0" * 4
      os.ftruncate(fd, 5 * G + 2); res["shrunk"] = [os.fstat(fd).st_size, os.pread(fd, 10, 5 * G).decode()]
      os.close(fd)
      res["stat_size"] = st("big")["size"]
      out(res)
    `,
    );
    const G = 2 ** 30;
    assert.deepEqual(r, {
      size: 5 * G + 5,
      at5g: "hello",
      hole_4g: true,
      low: "low",
      sparse: true,
      eof_read: 0,
      grown: 6 * G,
      zero_tail: true,
      shrunk: [5 * G + 2, "he"],
      stat_size: 5 * G + 2,
    });
  },

  "sparse file: holes read as zeros and SEEK_DATA/SEEK_HOLE find the data": async (
    { dir, kind },
  ) => {
    const r = await py(
      dir,
      `
      M = 1 << 20
      fd = os.open("sp", os.O_RDWR | os.O_CREAT, 0o644)
      os.pwrite(fd, b"A" * 4096, 0)
      os.pwrite(fd, b"B" * 4096, M)
      os.ftruncate(fd, 2 * M)
      os.fsync(fd)
      def seek(off, how):
          return V(os.lseek, fd, off, how)
      res = {"data0": seek(0, os.SEEK_DATA), "hole0": seek(0, os.SEEK_HOLE),
             "data_after_first": seek(4096, os.SEEK_DATA), "hole_after_second": seek(M, os.SEEK_HOLE),
             "data_past_last": seek(M + 4096, os.SEEK_DATA), "hole_at_end": seek(M + 4096, os.SEEK_HOLE),
             "past_eof": [seek(2 * M, os.SEEK_DATA), seek(2 * M, os.SEEK_HOLE)],
             "hole_zero": os.pread(fd, 4096, 8192) == b"\\0" * 4096,
             "blocks_small": os.fstat(fd).st_blocks * 512 < M}
      os.close(fd)
      out(res)
    `,
    );
    const M = 2 ** 20;
    // A cluster node answers from the chunk map (src/cluster/README.md, SEEK_DATA / SEEK_HOLE): an
    // uploaded chunk is data for its whole length, which POSIX allows (a hole may be reported as
    // data); here the one 4 MiB chunk holds the whole 2 MiB file.
    const chunked = kind === "skyfs" && testMeta() !== undefined;
    assert.deepEqual(r, {
      data0: 0,
      hole0: chunked ? 2 * M : 4096,
      data_after_first: chunked ? 4096 : M,
      hole_after_second: chunked ? 2 * M : M + 4096,
      data_past_last: chunked ? M + 4096 : "ENXIO",
      hole_at_end: chunked ? 2 * M : M + 4096,
      past_eof: ["ENXIO", "ENXIO"],
      hole_zero: true,
      blocks_small: true,
    });
  },

  "fallocate: allocate, keep size, punch hole (fallocate(1) and fallocate(2))": async (
    { dir, kind },
  ) => {
    const r = await py(
      dir,
      `
      import subprocess
      M = 1 << 20
      def fa(*args):
          p = subprocess.run(["fallocate", *args], capture_output=True)
          return p.returncode == 0 or p.stderr.decode().strip()
      res = {"alloc": fa("-l", "1MiB", "f")}
      s = st("f"); res["alloc_stat"] = [s["size"], s["blocks"] * 512 >= M]
      res["keep"] = fa("-n", "-o", "1MiB", "-l", "2MiB", "f")
      s2 = st("f"); res["keep_stat"] = [s2["size"], s2["blocks"] * 512 >= 3 * M]
      write_file("p", b"a" * 12288)
      res["punch"] = fa("-p", "-o", "4096", "-l", "4096", "p")
      data = read_file("p")
      res["punch_data"] = [len(data), data[:4096] == b"a" * 4096, data[4096:8192] == b"\\0" * 4096,
                           data[8192:] == b"a" * 4096]
      fd = os.open("p", os.O_RDWR)
      res["punch_hole_seek"] = [os.lseek(fd, 0, os.SEEK_HOLE), os.lseek(fd, 4096, os.SEEK_DATA)]
      res["punch_without_keep"] = E(fallocate, fd, FALLOC_FL_PUNCH_HOLE, 0, 4096)
      res["syscall_keep"] = [E(fallocate, fd, FALLOC_FL_KEEP_SIZE, 0, 64 * 1024), os.fstat(fd).st_size]
      res["syscall_extend"] = [E(fallocate, fd, 0, 0, 20000), os.fstat(fd).st_size]
      os.close(fd)
      out(res)
    `,
    );
    const M = 2 ** 20;
    assert.deepEqual(r, {
      alloc: true,
      alloc_stat: [M, true],
      keep: true,
      keep_stat: [M, true],
      punch: true,
      punch_data: [12288, true, true, true],
      // A cluster node: the punched range is inside an uploaded chunk, reported as data (above).
      punch_hole_seek: kind === "skyfs" && testMeta() !== undefined ? [12288, 4096] : [4096, 8192],
      punch_without_keep: "EOPNOTSUPP",
      syscall_keep: ["OK", 12288],
      syscall_extend: ["OK", 20000],
    });
  },

  "copy_file_range copies exact bytes at offsets": async ({ dir }) => {
    const r = await py(
      dir,
      `
      import hashlib, random
      rnd = random.Random(7)
      src = bytes(rnd.getrandbits(8) for _ in range(300_000))
      write_file("src", src)
      a = os.open("src", os.O_RDONLY); b = os.open("dst", os.O_RDWR | os.O_CREAT, 0o644)
      done = 0
      while done < len(src):
          n = os.copy_file_range(a, b, len(src) - done, done, done)
          if n == 0:
              break
          done += n
      part = os.copy_file_range(a, b, 1000, 5, len(src) + 10)
      os.close(a); os.close(b)
      d = read_file("dst")
      out({"copied": done, "equal": d[:len(src)] == src, "part": part,
           "gap": d[len(src):len(src) + 10] == b"\\0" * 10, "tail": d[len(src) + 10:] == src[5:1005]})
    `,
    );
    assert.deepEqual(r, { copied: 300000, equal: true, part: 1000, gap: true, tail: true });
  },

  "writes are visible to another process and through shared mmap": async ({ dir }) => {
    const r = await py(
      dir,
      `
      import subprocess
      write_file("m", b"\\0" * 8192)
      fd = os.open("m", os.O_RDWR)
      mm = mmap.mmap(fd, 8192, mmap.MAP_SHARED)
      mm[100:105] = b"mmap!"
      mm.flush()
      seen_by_read = read_file("m")[100:105].decode()
      os.pwrite(fd, b"write", 5000)
      seen_by_map = mm[5000:5005].decode()
      mm.close(); os.close(fd)
      other = subprocess.run(["cat", "m"], capture_output=True).stdout
      out([seen_by_read, seen_by_map, other[100:105].decode(), other[5000:5005].decode()])
    `,
    );
    assert.deepEqual(r, ["mmap!", "write", "mmap!", "write"]);
  },

  "truncate: grow reads zeros, shrink drops data, mtime and ctime move": async ({ dir }) => {
    const r = await py(
      dir,
      `
      write_file("t", "abcdef")
      s0 = st("t"); time.sleep(0.02)
      os.truncate("t", 3); s1 = st("t")
      os.truncate("t", 10)
      data = read_file("t")
      out({"data": list(data), "times": [s1["mtime"] > s0["mtime"], s1["ctime"] > s0["ctime"]],
           "negative": E(os.truncate, "t", -1), "dir": E(os.truncate, ".", 0)})
    `,
    );
    assert.deepEqual(r, {
      data: [97, 98, 99, 0, 0, 0, 0, 0, 0, 0],
      times: [true, true],
      negative: "EINVAL",
      dir: "EISDIR",
    });
  },

  "utimensat: exact ns times, UTIME_OMIT, UTIME_NOW, and who may set what": async ({ dir }) => {
    const r = await py(
      dir,
      `
      write_file("f", "x"); os.chown("f", 1000, 1000); os.chmod("f", 0o666)
      write_file("g", "x"); os.chown("g", 1000, 1000); os.chmod("g", 0o644)
      T1 = 1_000_000_123_456_789; T2 = 1_500_000_000_987_654_321
      res = {}
      c0 = st("f")["ctime"]; time.sleep(0.02)
      utimensat("f", T1, T2); s = st("f")
      res["exact"] = [s["atime"] == T1, s["mtime"] == T2, s["ctime"] > c0]
      utimensat("f", "OMIT", T1); s = st("f")
      res["omit_atime"] = [s["atime"] == T1, s["mtime"] == T1]
      before = time.time_ns()
      utimensat("f", "NOW", "OMIT"); s = st("f")
      # The file clock may lag time.time_ns() by a tick: allow one second either side.
      res["now_atime"] = [abs(s["atime"] - before) < 1_000_000_000, s["mtime"] == T1]
      utimensat("f", "OMIT", "OMIT"); res["omit_both"] = st("f")["mtime"] == T1
      os.utime("f", (5, 6)); s = st("f"); res["seconds"] = [s["atime"], s["mtime"]]
      def bob():
          return {"now_with_write": E(utimensat, "f", "NOW", "NOW"),
                  "exact_not_owner": E(utimensat, "f", T1, T1),
                  "now_no_write": E(utimensat, "g", "NOW", "NOW"),
                  "exact_no_write": E(utimensat, "g", T1, T1)}
      res["bob"] = as_user(1001, 1001, bob)
      res["owner_exact"] = as_user(1000, 1000, lambda: E(utimensat, "g", T1, T2))
      os.symlink("f", "l"); utimensat("l", T2, T2, follow=False)
      res["nofollow"] = [st("l", False)["mtime"] == T2, st("f")["mtime"] == T2]
      res["pre_epoch"] = [E(utimensat, "g", -5_000_000_000, -1), st("g")["mtime"], st("g")["atime"]]
      out(res)
    `,
    );
    assert.deepEqual(r, {
      exact: [true, true, true],
      omit_atime: [true, true],
      now_atime: [true, true],
      omit_both: true,
      seconds: [5_000_000_000, 6_000_000_000],
      bob: {
        now_with_write: "OK",
        exact_not_owner: "EPERM",
        now_no_write: "EACCES",
        exact_no_write: "EPERM",
      },
      owner_exact: "OK",
      nofollow: [true, false],
      pre_epoch: ["OK", -1, -5_000_000_000],
    });
  },

  "two processes see each other's size changes at once (append after a foreign truncate)": async (
    { dir },
  ) => {
    const r = await py(
      dir,
      `
      write_file("s", "0123456789")
      a = os.open("s", os.O_WRONLY | os.O_APPEND)
      def other(code):
          return fork_child(code)()
      res = {"size0": os.fstat(a).st_size}
      other(lambda: os.truncate("s", 4))
      res["after_truncate"] = os.fstat(a).st_size
      os.write(a, b"A")
      res["data1"] = read_file("s").decode()
      def extend():
          with open("s", "ab") as fh:
              fh.write(b"BBBB")
          return None
      other(extend)
      res["after_extend"] = [os.fstat(a).st_size, st("s")["size"]]
      os.write(a, b"C")
      res["data2"] = read_file("s").decode()
      def pwrite_far():
          fd = os.open("s", os.O_WRONLY); os.pwrite(fd, b"Z", 20); os.close(fd)
      other(pwrite_far)
      res["after_far"] = os.fstat(a).st_size
      os.close(a)
      out(res)
    `,
    );
    assert.deepEqual(r, {
      size0: 10,
      after_truncate: 4,
      data1: "0123A",
      after_extend: [9, 9],
      data2: "0123ABBBBC",
      after_far: 21,
    });
  },

  "hard links across directories keep one inode through renames": async ({ dir }) => {
    const r = await py(
      dir,
      `
      os.mkdir("x"); os.mkdir("y")
      write_file("x/f", "shared")
      os.link("x/f", "y/g"); os.link("y/g", "h")
      os.rename("x/f", "y/f2")
      with open("h", "ab") as fh:
          fh.write(b"+more")
      inos = {st(p)["ino"] for p in ["y/f2", "y/g", "h"]}
      res = {"one_inode": len(inos) == 1, "nlink": st("h")["nlink"], "data": read_file("y/f2").decode(),
             "x": names("x"), "y": names("y")}
      os.unlink("y/g"); os.unlink("y/f2")
      res["last"] = [st("h")["nlink"], read_file("h").decode()]
      out(res)
    `,
    );
    assert.deepEqual(r, {
      one_inode: true,
      nlink: 3,
      data: "shared+more",
      x: [],
      y: ["f2", "g"],
      last: [1, "shared+more"],
    });
  },

  "O_DIRECT aligned writes and reads, fdatasync and directory fsync": async ({ dir }) => {
    const r = await py(
      dir,
      `
      buf = mmap.mmap(-1, 8192)            # page-aligned memory, as O_DIRECT needs
      buf[:] = bytes(range(256)) * 32
      fd = os.open("direct", os.O_RDWR | os.O_CREAT | os.O_DIRECT, 0o644)
      n = os.pwritev(fd, [buf], 4096)
      rb = mmap.mmap(-1, 8192)
      m = os.preadv(fd, [rb], 4096)
      os.fdatasync(fd); os.close(fd)
      d = os.open(".", os.O_RDONLY | os.O_DIRECTORY); os.fsync(d); os.close(d)
      data = read_file("direct")
      out([n, m, rb[:] == buf[:], len(data), data[:4096] == b"\\0" * 4096, data[4096:] == buf[:]])
    `,
    );
    assert.deepEqual(r, [8192, 8192, true, 12288, true, true]);
  },

  "a program runs from the mount, and writing to it while it runs gives ETXTBSY": async (
    { dir },
  ) => {
    const r = await py(
      dir,
      `
      import shutil, subprocess
      shutil.copy2("/bin/sleep", "sleepy")
      p = subprocess.Popen(["./sleepy", "5"])
      time.sleep(0.2)  # let exec map it; if it has not yet, the open below still must not corrupt it
      busy = E(os.open, "sleepy", os.O_WRONLY)
      p.kill(); p.wait()
      echo = subprocess.run(["sh", "-c", "cp /bin/echo ./e && ./e from-the-mount"], capture_output=True)
      out([busy, echo.stdout.decode().strip()])
    `,
    );
    assert.deepEqual(r, ["ETXTBSY", "from-the-mount"]);
  },

  "write updates mtime and ctime, read leaves ctime alone": async ({ dir }) => {
    const r = await py(
      dir,
      `
      write_file("f", "abc"); s0 = st("f"); time.sleep(0.02)
      read_file("f"); s1 = st("f"); time.sleep(0.02)
      with open("f", "r+b") as fh:
          fh.write(b"Z")
      s2 = st("f")
      out([s1["ctime"] == s0["ctime"], s1["mtime"] == s0["mtime"], s2["mtime"] > s1["mtime"],
           s2["ctime"] > s1["ctime"], read_file("f").decode()])
    `,
    );
    assert.deepEqual(r, [true, true, true, true, "Zbc"]);
  },
});
