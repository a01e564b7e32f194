/**
 * POSIX permission rules for owner, group, other and root; sticky directories; setgid directory
 * inheritance; suid/sgid clearing by chmod, chown, write and truncate. Expectations are what ext4
 * gives and are asserted identically on skyfs (mounted with allow_other,default_permissions).
 * @module
 */

import assert from "node:assert/strict";
import { suite } from "../_harness.ts";
import { py } from "./_py.ts";

suite("posix permissions", {
  "owner, group, supplementary group, other and root on a 0640 file": async ({ dir }) => {
    const r = await py(
      dir,
      `
      write_file("f", "data")
      os.chown("f", 1000, 2000)
      os.chmod("f", 0o640)
      def rw():
          return [E(os.open, "f", os.O_RDONLY), E(os.open, "f", os.O_WRONLY),
                  os.access("f", os.R_OK), os.access("f", os.W_OK)]
      res = {
          "owner": as_user(1000, 1000, rw),
          "group": as_user(1001, 2000, rw),
          "supplementary": as_user(1001, 1001, rw, groups=[2000]),
          "other": as_user(1002, 1002, rw),
      }
      os.chmod("f", 0)
      res["root_mode_000"] = rw()
      out(res)
    `,
    );
    assert.deepEqual(r, {
      owner: ["OK", "OK", true, true],
      group: ["OK", "EACCES", true, false],
      supplementary: ["OK", "EACCES", true, false],
      other: ["EACCES", "EACCES", false, false],
      root_mode_000: ["OK", "OK", true, true],
    });
  },

  "the owner class wins over group and other (0077 denies the owner)": async ({ dir }) => {
    const r = await py(
      dir,
      `
      write_file("f", "data")
      os.chown("f", 1000, 2000)
      os.chmod("f", 0o077)
      out([as_user(1000, 2000, lambda: E(os.open, "f", os.O_RDONLY)),
           as_user(1001, 2000, lambda: E(os.open, "f", os.O_RDONLY))])
    `,
    );
    assert.deepEqual(r, ["EACCES", "OK"]);
  },

  "execute permission, and root needs at least one x bit": async ({ dir }) => {
    const r = await py(
      dir,
      `
      import subprocess
      write_file("s", "#!/bin/sh\\necho ran\\n")
      os.chown("s", 1000, 1000)
      os.chmod("s", 0o744)
      def ex():
          try:
              return subprocess.run(["./s"], capture_output=True).stdout.decode().strip()
          except OSError as e:
              return ename(e)
      res = {"owner": as_user(1000, 1000, ex), "other": as_user(1002, 1002, ex), "root": ex()}
      os.chmod("s", 0o644)
      res["root_no_x"] = ex()
      res["root_access_x"] = os.access("s", os.X_OK)
      out(res)
    `,
    );
    assert.deepEqual(r, {
      owner: "ran",
      other: "EACCES",
      root: "ran",
      root_no_x: "EACCES",
      root_access_x: false,
    });
  },

  "directory read, write and search bits": async ({ dir }) => {
    const r = await py(
      dir,
      `
      for name, mode in [("d700", 0o700), ("d711", 0o711), ("d755", 0o755), ("d744", 0o744),
                         ("d555", 0o555)]:
          os.mkdir(name)
          write_file(name + "/x", "x")
          os.chown(name, 1000, 1000)
          os.chown(name + "/x", 1000, 1000)
          os.chmod(name, mode)
      def other():
          return {
              "list700": E(os.listdir, "d700"), "stat700": E(os.stat, "d700/x"),
              "list711": E(os.listdir, "d711"), "read711": E(read_file, "d711/x"),
              "create755": E(write_file, "d755/new"), "unlink755": E(os.unlink, "d755/x"),
              "rename755": E(os.rename, "d755/x", "d755/y"),
              "stat744": E(os.stat, "d744/x"), "list744": E(os.listdir, "d744"),
          }
      def owner():
          return {"create555": E(write_file, "d555/new"), "mkdir555": E(os.mkdir, "d555/sub"),
                  "create755": E(write_file, "d755/own")}
      out({"other": as_user(1002, 1002, other), "owner": as_user(1000, 1000, owner),
           "root555": E(write_file, "d555/rootfile")})
    `,
    );
    assert.deepEqual(r, {
      other: {
        list700: "EACCES",
        stat700: "EACCES",
        list711: "EACCES",
        read711: "OK",
        create755: "EACCES",
        unlink755: "EACCES",
        rename755: "EACCES",
        stat744: "EACCES",
        list744: "OK",
      },
      owner: { create555: "EACCES", mkdir555: "EACCES", create755: "OK" },
      root555: "OK",
    });
  },

  "sticky directory: only file owner, directory owner or root may unlink or rename": async (
    { dir },
  ) => {
    const r = await py(
      dir,
      `
      os.mkdir("s"); os.chmod("s", 0o1777)
      os.mkdir("s2"); os.chown("s2", 1001, 1001); os.chmod("s2", 0o1777)
      os.mkdir("n"); os.chmod("n", 0o777)
      def alice():
          write_file("s/a", "a"); write_file("s/a2", "a"); write_file("s/a3", "a")
          os.mkdir("s/ad")
          write_file("s2/a", "a"); write_file("n/a", "a")
          return "OK"
      as_user(1000, 1000, alice)
      def bob():
          write_file("s/bob", "b")
          return {
              "unlink": E(os.unlink, "s/a"), "rename": E(os.rename, "s/a", "s/b"),
              "rmdir": E(os.rmdir, "s/ad"), "rename_over": E(os.rename, "s/bob", "s/a"),
              "dir_owner_unlink": E(os.unlink, "s2/a"), "not_sticky_unlink": E(os.unlink, "n/a"),
              "own_file": E(os.unlink, "s/bob"),
          }
      res = {"bob": as_user(1001, 1001, bob),
             "alice": as_user(1000, 1000, lambda: E(os.rename, "s/a", "s/a-renamed")),
             "root": E(os.unlink, "s/a2")}
      res["left"] = names("s")
      out(res)
    `,
    );
    assert.deepEqual(r, {
      bob: {
        unlink: "EPERM",
        rename: "EPERM",
        rmdir: "EPERM",
        rename_over: "EPERM",
        dir_owner_unlink: "OK",
        not_sticky_unlink: "OK",
        own_file: "OK",
      },
      alice: "OK",
      root: "OK",
      left: ["a-renamed", "a3", "ad"],
    });
  },

  "setgid directory: new files take its group, new subdirectories also keep the bit": async (
    { dir },
  ) => {
    const r = await py(
      dir,
      `
      os.mkdir("g"); os.chown("g", 0, 2000); os.chmod("g", 0o2777)
      os.mkdir("n"); os.chown("n", 0, 2000); os.chmod("n", 0o777)
      write_file("g/f"); os.mkdir("g/sub"); write_file("n/f"); os.mkdir("n/sub")
      res = {"g_f": st("g/f")["gid"], "g_sub": [st("g/sub")["gid"], st("g/sub")["perm"]],
             "n_f": st("n/f")["gid"], "n_sub": [st("n/sub")["gid"], st("n/sub")["perm"]]}
      def member():
          write_file("g/m"); return st("g/m")["gid"]
      res["member"] = as_user(1000, 1000, member, groups=[2000])
      def non_member():
          os.close(os.open("g/x", os.O_CREAT | os.O_WRONLY, 0o2755))
          os.mkdir("g/y", 0o2755)
          return [st("g/x")["gid"], oct(st("g/x")["perm"]), st("g/y")["gid"], oct(st("g/y")["perm"])]
      res["non_member"] = as_user(1000, 1000, non_member)
      out(res)
    `,
    );
    assert.deepEqual(r, {
      g_f: 2000,
      g_sub: [2000, 0o2755],
      n_f: 0,
      n_sub: [0, 0o755],
      member: 2000,
      // The kernel strips S_ISGID from a file created in a setgid directory by a non-member.
      non_member: [2000, "0o755", 2000, "0o2755"],
    });
  },

  "chown and chmod: who may, and how suid/sgid are cleared": async ({ dir }) => {
    const r = await py(
      dir,
      `
      res = {}
      write_file("f", "x"); os.chmod("f", 0o6755); os.chown("f", 1000, 1000)
      res["root_chown_6755"] = oct(st("f")["perm"])
      write_file("m", "x"); os.chmod("m", 0o2644); os.chown("m", 1000, 1000)
      res["root_chown_2644"] = oct(st("m")["perm"])
      os.mkdir("d"); os.chmod("d", 0o2775); os.chown("d", 1000, 1000)
      res["root_chown_dir_2775"] = oct(st("d")["perm"])
      write_file("o", "x"); os.chown("o", 1000, 2000)
      def alice():
          r = {}
          os.chmod("o", 0o2755)
          r["chmod_sgid_non_member"] = oct(st("o")["perm"])
          r["chown_to_bob"] = E(os.chown, "o", 1001, -1)
          r["chgrp_not_member"] = E(os.chown, "o", -1, 3000)
          return r
      res["alice"] = as_user(1000, 1000, alice)
      res["alice_member"] = as_user(1000, 1000, lambda: [E(os.chown, "o", -1, 3000), st("o")["gid"]],
                                    groups=[3000])
      res["bob"] = as_user(1001, 1001, lambda: [E(os.chmod, "o", 0o777), E(os.chown, "o", 1001, -1)])
      write_file("rw", "x"); os.chmod("rw", 0o6755)
      with open("rw", "ab") as fh:
          fh.write(b"root")
      res["root_write_keeps"] = oct(st("rw")["perm"])
      out(res)
    `,
    );
    assert.deepEqual(r, {
      root_chown_6755: "0o755",
      root_chown_2644: "0o2644",
      root_chown_dir_2775: "0o2775",
      alice: {
        chmod_sgid_non_member: "0o755",
        chown_to_bob: "EPERM",
        chgrp_not_member: "EPERM",
      },
      alice_member: ["OK", 3000],
      bob: ["EPERM", "EPERM"],
      root_write_keeps: "0o6755",
    });
  },

  "write and truncate by an unprivileged owner clear suid and sgid": async ({ dir }) => {
    const r = await py(
      dir,
      `
      for n in ["w", "t", "ft"]:
          write_file(n, "hello"); os.chown(n, 1000, 1000); os.chmod(n, 0o6755)
      def alice():
          with open("w", "r+b") as fh:
              fh.write(b"J")
          os.truncate("t", 2)
          fd = os.open("ft", os.O_RDWR); os.ftruncate(fd, 1); os.close(fd)
          return [oct(st(n)["perm"]) for n in ["w", "t", "ft"]]
      out(as_user(1000, 1000, alice))
    `,
    );
    assert.deepEqual(r, ["0o755", "0o755", "0o755"]);
  },

  "set-id bits added while a file is open for writing drop at the next unprivileged write": async (
    { dir },
  ) => {
    // On skyfs the open is FUSE passthrough (the kernel writes the local file itself), so the
    // daemon only learns of the write afterwards and must still drop the bits.
    const r = await py(
      dir,
      `
      write_file("f", "hello"); os.chown("f", 1000, 1000); os.chmod("f", 0o755)
      fd = os.open("f", os.O_WRONLY)
      os.chmod("f", 0o6755)
      before = oct(st("f")["perm"])
      pid = os.fork()
      if pid == 0:
          os.setgid(1000); os.setuid(1000); os.pwrite(fd, b"J", 0); os._exit(0)
      os.waitpid(pid, 0)
      os.close(fd)
      out([before, oct(st("f")["perm"])])
    `,
    );
    assert.deepEqual(r, ["0o6755", "0o755"]);
  },

  "ctime changes on chmod and chown, mtime does not": async ({ dir }) => {
    const r = await py(
      dir,
      `
      write_file("f", "x")
      a = st("f"); time.sleep(0.02)
      os.chmod("f", 0o600); b = st("f"); time.sleep(0.02)
      os.chown("f", 1000, 1000); c = st("f")
      out([b["ctime"] > a["ctime"], b["mtime"] == a["mtime"], c["ctime"] > b["ctime"],
           c["mtime"] == a["mtime"], oct(c["perm"]), c["uid"]])
    `,
    );
    assert.deepEqual(r, [true, true, true, true, "0o600", 1000]);
  },
});
