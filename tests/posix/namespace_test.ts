/**
 * POSIX namespace behaviour: nlink and ctime read right after link/unlink/rename (the kernel's
 * cached attributes must not be stale), rename rules including RENAME_NOREPLACE/EXCHANGE,
 * symlinks, 255-byte names and PATH_MAX paths, readdir. Same expectations on ext4 and skyfs.
 * @module
 */

import assert from "node:assert/strict";
import { suite } from "../_harness.ts";
import { py } from "./_py.ts";

suite("posix namespace", {
  "nlink and ctime right after link and unlink, no waiting in between": async ({ dir }) => {
    // The sleeps sit before each change so the clock has moved; the stat comes right after it.
    const r = await py(
      dir,
      `
      write_file("a", "x")
      s0 = st("a"); time.sleep(0.02)
      os.link("a", "b")
      s1a, s1b = st("a"), st("b"); time.sleep(0.02)
      os.link("b", "c")
      s2 = st("a"); time.sleep(0.02)
      os.unlink("a")
      s3 = st("b")
      fd = os.open("b", os.O_RDONLY)
      os.unlink("b"); os.unlink("c")
      s4 = os.fstat(fd)
      data = os.read(fd, 10); os.close(fd)
      out({"nlinks": [s0["nlink"], s1a["nlink"], s1b["nlink"], s2["nlink"], s3["nlink"], s4.st_nlink],
           "same_ino": s1a["ino"] == s1b["ino"],
           "ctime_up": [s1a["ctime"] > s0["ctime"], s2["ctime"] > s1a["ctime"], s3["ctime"] > s2["ctime"]],
           "read_after_unlink": data.decode(), "left": names(".")})
    `,
    );
    assert.deepEqual(r, {
      nlinks: [1, 2, 2, 3, 2, 0],
      same_ino: true,
      ctime_up: [true, true, true],
      read_after_unlink: "x",
      left: [],
    });
  },

  "directory nlink and parent times follow mkdir, rmdir and rename": async ({ dir }) => {
    const r = await py(
      dir,
      `
      os.mkdir("p"); os.mkdir("q")
      p0 = st("p"); time.sleep(0.02)
      os.mkdir("p/s")
      p1 = st("p"); time.sleep(0.02)
      os.rename("p/s", "q/s")
      p2, q2, s2 = st("p"), st("q"), st("q/s")
      os.mkdir("q/s/t"); s3 = st("q/s"); time.sleep(0.02)
      os.rmdir("q/s/t"); s4 = st("q/s")
      out({"p": [p0["nlink"], p1["nlink"], p2["nlink"]], "q": q2["nlink"], "s": [s2["nlink"], s3["nlink"], s4["nlink"]],
           "p_mtime_up": [p1["mtime"] > p0["mtime"], p2["mtime"] > p1["mtime"]],
           "p_ctime_up": [p1["ctime"] > p0["ctime"], p2["ctime"] > p1["ctime"]],
           "s_ctime_up_on_rmdir_child": s4["ctime"] > s3["ctime"]})
    `,
    );
    assert.deepEqual(r, {
      p: [2, 3, 2],
      q: 3,
      s: [2, 3, 2],
      p_mtime_up: [true, true],
      p_ctime_up: [true, true],
      s_ctime_up_on_rmdir_child: true,
    });
  },

  "rename updates the moved file's ctime and the replaced inode's nlink": async ({ dir }) => {
    const r = await py(
      dir,
      `
      write_file("a", "A"); os.link("a", "a2"); write_file("b", "B")
      b0 = st("b"); time.sleep(0.02)
      os.rename("b", "a")
      out({"a2_nlink": st("a2")["nlink"], "a": read_file("a").decode(), "a_ino": st("a")["ino"] == b0["ino"],
           "ctime_up": st("a")["ctime"] > b0["ctime"], "left": names(".")})
    `,
    );
    assert.deepEqual(r, { a2_nlink: 1, a: "B", a_ino: true, ctime_up: true, left: ["a", "a2"] });
  },

  "rename errors and corner cases": async ({ dir }) => {
    const r = await py(
      dir,
      `
      os.mkdir("d"); os.mkdir("e"); write_file("e/x"); write_file("f", "F"); os.link("f", "g")
      os.mkdir("d/sub")
      out({
          "dir_over_nonempty": E(os.rename, "d", "e"),
          "dir_over_file": E(os.rename, "d", "f"),
          "file_over_dir": E(os.rename, "f", "d"),
          "into_own_subdir": E(os.rename, "d", "d/sub/x"),
          "missing": E(os.rename, "nope", "x"),
          "missing_parent": E(os.rename, "f", "nope/x"),
          "to_self": E(os.rename, "f", "f"),
          "hardlink_same_inode": E(os.rename, "f", "g"),
          "after": names("."),
          "dir_over_empty_dir": E(os.rename, "d/sub", "e2") if os.mkdir("e2") is None else None,
          "after2": names("."), "d": names("d"),
      })
    `,
    );
    assert.deepEqual(r, {
      dir_over_nonempty: "ENOTEMPTY",
      dir_over_file: "ENOTDIR",
      file_over_dir: "EISDIR",
      into_own_subdir: "EINVAL",
      missing: "ENOENT",
      missing_parent: "ENOENT",
      to_self: "OK",
      // rename(2) of two links to one inode does nothing: both names stay.
      hardlink_same_inode: "OK",
      after: ["d", "e", "f", "g"],
      dir_over_empty_dir: "OK",
      after2: ["d", "e", "e2", "f", "g"],
      d: [],
    });
  },

  "renameat2 RENAME_NOREPLACE and RENAME_EXCHANGE": async ({ dir }) => {
    const r = await py(
      dir,
      `
      write_file("a", "A"); write_file("b", "B"); os.mkdir("d"); os.mkdir("p"); write_file("p/f", "F")
      res = {"noreplace_existing": E(renameat2, "a", "b", RENAME_NOREPLACE),
             "noreplace_new": E(renameat2, "a", "c", RENAME_NOREPLACE),
             "contents1": [read_file("b").decode(), read_file("c").decode()],
             "exchange_missing": E(renameat2, "c", "zz", RENAME_EXCHANGE)}
      ino_c, ino_b = st("c")["ino"], st("b")["ino"]
      res["exchange"] = E(renameat2, "c", "b", RENAME_EXCHANGE)
      res["contents2"] = [read_file("b").decode(), read_file("c").decode(), st("b")["ino"] == ino_c, st("c")["ino"] == ino_b]
      root0 = st(".")["nlink"]; p0 = st("p")["nlink"]
      # Exchanging a directory with a file in another directory moves a ".." link between parents.
      res["exchange_dir_file"] = E(renameat2, "d", "p/f", RENAME_EXCHANGE)
      res["types"] = [stat.S_ISREG(st("d")["mode"]), stat.S_ISDIR(st("p/f")["mode"])]
      res["nlinks"] = [st(".")["nlink"] - root0, st("p")["nlink"] - p0]
      res["both_flags"] = E(renameat2, "b", "c", RENAME_EXCHANGE | RENAME_NOREPLACE)
      out(res)
    `,
    );
    assert.deepEqual(r, {
      noreplace_existing: "EEXIST",
      noreplace_new: "OK",
      contents1: ["B", "A"],
      exchange_missing: "ENOENT",
      exchange: "OK",
      contents2: ["A", "B", true, true],
      exchange_dir_file: "OK",
      types: [true, true],
      nlinks: [-1, 1],
      both_flags: "EINVAL",
    });
  },

  "unlink, rmdir, mkdir and link errors": async ({ dir }) => {
    const r = await py(
      dir,
      `
      os.mkdir("d"); write_file("d/x"); write_file("f"); os.mkdir("e")
      out({"unlink_dir": E(os.unlink, "d"), "rmdir_nonempty": E(os.rmdir, "d"),
           "rmdir_file": E(os.rmdir, "f"), "rmdir_dot": E(os.rmdir, "e/."),
           "mkdir_exists": E(os.mkdir, "d"), "mkdir_over_file": E(os.mkdir, "f"),
           "link_dir": E(os.link, "d", "d2"), "link_exists": E(os.link, "f", "d/x"),
           "link_missing": E(os.link, "nope", "x"), "file_as_dir": E(os.stat, "f/x"),
           "create_under_file": E(write_file, "f/x"), "unlink_missing": E(os.unlink, "nope"),
           "rmdir_ok": E(os.rmdir, "e")})
    `,
    );
    assert.deepEqual(r, {
      unlink_dir: "EISDIR",
      rmdir_nonempty: "ENOTEMPTY",
      rmdir_file: "ENOTDIR",
      rmdir_dot: "EINVAL",
      mkdir_exists: "EEXIST",
      mkdir_over_file: "EEXIST",
      link_dir: "EPERM",
      link_exists: "EEXIST",
      link_missing: "ENOENT",
      file_as_dir: "ENOTDIR",
      create_under_file: "ENOTDIR",
      unlink_missing: "ENOENT",
      rmdir_ok: "OK",
    });
  },

  "symlinks: readlink, lstat, dangling, loops, O_NOFOLLOW, lchown": async ({ dir }) => {
    const r = await py(
      dir,
      `
      write_file("t", "target"); os.symlink("t", "l"); os.symlink("missing", "dang")
      os.symlink("loop2", "loop1"); os.symlink("loop1", "loop2")
      long_target = "x" * 1000 + "/" + "y" * 3000
      os.symlink(long_target, "long")
      os.mkdir("d"); os.symlink("../t", "d/up")
      os.lchown("l", 1000, 1000)
      out({
          "readlink": os.readlink("l"), "long": os.readlink("long") == long_target,
          "lstat": [stat.S_ISLNK(st("l", False)["mode"]), st("l", False)["size"], st("long", False)["size"]],
          "follows": read_file("l").decode(), "relative_in_subdir": read_file("d/up").decode(),
          "dangling": [E(os.stat, "dang"), E(os.lstat, "dang")],
          "loop": E(os.stat, "loop1"),
          "nofollow": E(os.open, "l", os.O_RDONLY | os.O_NOFOLLOW),
          "readlink_file": E(os.readlink, "t"),
          "lchown": [st("l", False)["uid"], st("t")["uid"]],
          "create_through_dangling": [E(write_file, "dang", "via"), read_file("missing").decode()],
          "excl_on_dangling": E(os.open, "dang", os.O_CREAT | os.O_EXCL | os.O_WRONLY),
          "symlink_exists": E(os.symlink, "x", "t"),
      })
    `,
    );
    assert.deepEqual(r, {
      readlink: "t",
      long: true,
      lstat: [true, 1, 4001],
      follows: "target",
      relative_in_subdir: "target",
      dangling: ["ENOENT", "OK"],
      loop: "ELOOP",
      nofollow: "ELOOP",
      readlink_file: "EINVAL",
      lchown: [1000, 0],
      create_through_dangling: ["OK", "via"],
      excl_on_dangling: "EEXIST",
      symlink_exists: "EEXIST",
    });
  },

  "255-byte names work, 256-byte names give ENAMETOOLONG everywhere": async ({ dir }) => {
    const r = await py(
      dir,
      `
      n255 = "a" * 255
      u255 = "\\u00e9" * 127 + "b"          # 255 bytes of UTF-8
      n256 = "c" * 256
      res = {"file255": E(write_file, n255, "x"), "utf255": E(os.mkdir, u255),
             "listed": sorted(len(n.encode()) for n in os.listdir(".")),
             "stat255": st(n255)["size"],
             "rename255": E(os.rename, n255, "d" * 255), "symlink255": E(os.symlink, "x", "e" * 255),
             "link255": E(os.link, "d" * 255, "f" * 255)}
      res["too_long"] = [E(write_file, n256), E(os.mkdir, n256), E(os.stat, n256),
                         E(os.rename, "d" * 255, n256), E(os.symlink, "x", n256),
                         E(os.link, "d" * 255, n256), E(os.unlink, n256),
                         E(os.mkfifo, n256), E(os.rmdir, n256)]
      out(res)
    `,
    );
    assert.deepEqual(r, {
      file255: "OK",
      utf255: "OK",
      listed: [255, 255],
      stat255: 1,
      rename255: "OK",
      symlink255: "OK",
      link255: "OK",
      too_long: Array(9).fill("ENAMETOOLONG"),
    });
  },

  "PATH_MAX: a 4095-byte relative path works, 4096 gives ENAMETOOLONG": async ({ dir }) => {
    const r = await py(
      dir,
      `
      comp = "p" * 200
      path = ""
      while len(path) + len(comp) + 1 < 4095 - 20:
          path = path + comp + "/"
          os.mkdir(path)
      last = "q" * (4095 - len(path))
      full = path + last
      res = {"len": len(full.encode()), "create": E(write_file, full, "deep"),
             "read": read_file(full).decode(), "stat": st(full)["size"]}
      over = path + "q" * (4096 - len(path))
      res["over_len"] = len(over)
      res["over"] = [E(write_file, over), E(os.stat, over), E(os.mkdir, over)]
      # Deeper than PATH_MAX through relative steps: each call's path is short.
      os.chdir(path)
      for i in range(5):
          os.mkdir(comp); os.chdir(comp)
      write_file("bottom", "b")
      res["bottom"] = read_file("bottom").decode()
      out(res)
    `,
    );
    assert.deepEqual(r, {
      len: 4095,
      create: "OK",
      read: "deep",
      stat: 4,
      over_len: 4096,
      over: ["ENAMETOOLONG", "ENAMETOOLONG", "ENAMETOOLONG"],
      bottom: "b",
    });
  },

  "four processes create, rename, link and unlink in one directory at once": async ({ dir }) => {
    const r = await py(
      dir,
      `
      os.mkdir("shared"); os.mkdir("other")
      def worker(k):
          def run():
              for i in range(150):
                  p = "shared/w%d-%03d" % (k, i)
                  write_file(p, "%d:%d" % (k, i))
                  if i % 3 == 0:
                      os.rename(p, p + ".r")
                  elif i % 3 == 1:
                      os.link(p, "other/w%d-%03d" % (k, i))
                      os.unlink(p)
                  if i % 5 == 0:
                      os.mkdir("shared/d%d-%03d" % (k, i))
              return "done"
          return fork_child(run)
      waits = [worker(k) for k in range(4)]
      results = [w() for w in waits]
      shared = names("shared"); other = names("other")
      expect_shared = sorted(["w%d-%03d.r" % (k, i) for k in range(4) for i in range(150) if i % 3 == 0] +
                             ["w%d-%03d" % (k, i) for k in range(4) for i in range(150) if i % 3 == 2] +
                             ["d%d-%03d" % (k, i) for k in range(4) for i in range(150) if i % 5 == 0])
      ok_content = all(read_file("shared/" + n).decode() == "%d:%d" % (int(n[1]), int(n[3:6]))
                       for n in shared if n.startswith("w"))
      out({"results": results, "shared": shared == expect_shared, "other": len(other),
           "content": ok_content, "dir_nlink": st("shared")["nlink"], "other_nlinks": sorted({st("other/" + n)["nlink"] for n in other})})
    `,
    );
    assert.deepEqual(r, {
      results: ["done", "done", "done", "done"],
      shared: true,
      other: 200,
      content: true,
      dir_nlink: 2 + 4 * 30,
      other_nlinks: [1],
    });
  },

  "readdir lists every entry once with the right type, through creates and deletes": async (
    { dir },
  ) => {
    const r = await py(
      dir,
      `
      for i in range(1500):
          write_file("f%04d" % i)
      for i in range(0, 1500, 3):
          os.unlink("f%04d" % i)
      os.mkdir("sub"); os.symlink("f0001", "sl"); os.mkfifo("fifo")
      entries = list(os.scandir("."))
      kinds = {e.name: ("d" if e.is_dir(follow_symlinks=False) else "l" if e.is_symlink() else
                        "f" if e.is_file(follow_symlinks=False) else "o") for e in entries}
      nm = [e.name for e in entries]
      out({"count": len(nm), "unique": len(set(nm)), "expected": sorted(nm) == sorted(
              ["f%04d" % i for i in range(1500) if i % 3] + ["sub", "sl", "fifo"]),
           "kinds": [kinds["sub"], kinds["sl"], kinds["fifo"], kinds["f0001"]],
           "dot_entries": [os.path.exists("."), os.stat(".").st_ino == os.stat("sub/..").st_ino]})
    `,
    );
    assert.deepEqual(r, {
      count: 1003,
      unique: 1003,
      expected: true,
      kinds: ["d", "l", "o", "f"],
      dot_entries: [true, true],
    });
  },
});
