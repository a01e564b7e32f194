/**
 * Timestamps that no syscall on the mount sets directly (issue 18 points 2 and 3): mtime and ctime
 * after stores through a shared mapping, and atime after reads served by the page cache or by
 * passthrough, by the relatime rule, never on a read-only or noatime mount. Same expectations on
 * ext4 and skyfs; every skyfs case runs with passthrough and with `--passthrough off`.
 * @module
 */

import assert from "node:assert/strict";
import { run, suite, testMeta } from "../_harness.ts";
import { py } from "./_py.ts";

suite("posix times", {
  "stores through a shared mapping move mtime and ctime, seen at once by stat": async (
    { dir, kind, variant },
  ) => {
    const r = await py(
      dir,
      `
      def moved(a, b):
          return [b["mtime"] > a["mtime"], b["ctime"] > a["ctime"]]
      res = {}
      # The mapping exists before the stat: nothing the kernel sees afterwards is a write.
      write_file("m", b"x" * 8192)
      fd = os.open("m", os.O_RDWR)
      mm = mmap.mmap(fd, 8192, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
      s0 = st("m"); time.sleep(0.1)
      mm[0:5] = b"hello"
      res["mapped"] = moved(s0, st("m"))
      mm.close()
      res["unmapped"] = moved(s0, st("m"))
      os.close(fd)
      res["closed"] = moved(s0, st("m"))
      res["data"] = read_file("m")[:6].decode()
      # The issue's order: stat, wait, map, store, unmap (the fd closed while mapped).
      write_file("n", b"y" * 4096)
      s0 = st("n"); time.sleep(0.1)
      fd = os.open("n", os.O_RDWR)
      mm = mmap.mmap(fd, 4096, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
      os.close(fd)
      mm[0:1] = b"z"
      mm.close()
      res["issue_order"] = moved(s0, st("n"))
      # A second store after a stat that saw the first.
      fd = os.open("n", os.O_RDWR)
      mm = mmap.mmap(fd, 4096, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
      mm[1:2] = b"z"; mm.flush()
      s1 = st("n"); time.sleep(0.1)
      mm[2:3] = b"z"; mm.flush()     # msync: the page is clean again, the next store faults
      time.sleep(0.1)
      mm[3:4] = b"z"
      res["second_store"] = moved(s1, st("n"))
      mm.close(); os.close(fd)
      out(res)
    `,
    );
    // Without passthrough the mapping is the FUSE inode's page cache: the kernel's fault handler
    // updates no time on FUSE without writeback cache (S_NOCMTIME) and sends nothing, so mtime
    // moves when the pages are written back (msync, munmap, close), README "What does not yet".
    const pagesOnly = kind === "skyfs" && (variant.includes("off") || testMeta() !== undefined);
    assert.deepEqual(r, {
      mapped: pagesOnly ? [false, false] : [true, true],
      unmapped: [true, true],
      closed: [true, true],
      data: "hellox",
      issue_order: [true, true],
      second_store: [true, true],
    });
  },

  "reads move atime by the relatime rule, also when the page cache or passthrough serves them":
    async ({ dir, kind, variant }) => {
      const r = await py(
        dir,
        `
      res = {}
      def past(p):   # atime before mtime (and ctime, which utime sets to now): the next read counts
          now = time.time(); os.utime(p, (now - 2000, now - 1000)); return now
      write_file("f", b"data" * 1024)
      read_file("f")                     # the written pages and a first read, both cached
      now = past("f")
      read_file("f")
      a1 = st("f")
      res["read"] = [a1["atime"] > a1["mtime"], a1["atime"] >= int((now - 5) * 1e9)]
      time.sleep(0.05)
      read_file("f")                     # atime is newer than mtime and ctime now: kept
      res["second_read_kept"] = st("f")["atime"] == a1["atime"]
      # A read in an open that began before the change (cached pages of a long-lived reader).
      fd = os.open("f", os.O_RDONLY)
      os.pread(fd, 10, 0)
      past("f")
      os.pread(fd, 10, 0)
      os.close(fd)
      a2 = st("f")
      res["read_in_older_open"] = a2["atime"] > a2["mtime"]
      # A shared read-only mapping counts as an access (ext4 at mmap time).
      past("f")
      fd = os.open("f", os.O_RDONLY)
      mm = mmap.mmap(fd, 4096, mmap.MAP_SHARED, mmap.PROT_READ)
      first = mm[0:4]
      mm.close(); os.close(fd)
      a3 = st("f")
      res["mmap"] = [first.decode(), a3["atime"] > a3["mtime"]]
      # O_NOATIME (the owner may ask for it) leaves atime alone.
      past("f")
      before = st("f")["atime"]
      fd = os.open("f", os.O_RDONLY | os.O_NOATIME)
      os.read(fd, 4096); os.close(fd)
      res["o_noatime_kept"] = st("f")["atime"] == before
      # A directory listing.
      os.mkdir("d"); write_file("d/x")
      past("d")
      names("d")
      a4 = st("d")
      res["listing"] = a4["atime"] > a4["mtime"]
      t4 = a4["atime"]; time.sleep(0.05); names("d")
      res["second_listing_kept"] = st("d")["atime"] == t4
      out(res)
    `,
      );
      // Without passthrough, pages an open cached before atime became due serve its later reads
      // without a request: README, "What does not yet".
      const pagesOnly = kind === "skyfs" && (variant.includes("off") || testMeta() !== undefined);
      assert.deepEqual(r, {
        read: [true, true],
        second_read_kept: true,
        read_in_older_open: !pagesOnly,
        mmap: ["data", true],
        o_noatime_kept: true,
        listing: true,
        second_listing_kept: true,
      });
    },

  "a read-only or noatime mount moves no atime": async ({ dir, kind, target }) => {
    // ext4's reference is a bind mount of the case directory (the machine's root file system
    // cannot be remounted); skyfs remounts its own mount, the superblock included.
    const point = kind === "ext4" ? dir : target.mount!.mountpoint;
    if (kind === "ext4") await run("mount", ["--bind", dir, dir]);
    const remount = (options: string) =>
      kind === "ext4"
        ? run("mount", ["-o", `remount,bind,${options}`, point])
        : run("mount", ["-i", "-o", `remount,${options}`, point]);
    try {
      const prepare = `
        now = time.time()
        write_file("f", b"data" * 1024); os.mkdir("d"); write_file("d/x")
        for p in ("f", "d"):
            os.utime(p, (now - 2000, now - 1000))
        out({p: st(p)["atime"] for p in ("f", "d")})
      `;
      const access = `
        read_file("f"); names("d")
        fd = os.open("f", os.O_RDONLY)
        mm = mmap.mmap(fd, 4096, mmap.MAP_SHARED, mmap.PROT_READ); mm[0:4]; mm.close(); os.close(fd)
        out({p: st(p)["atime"] for p in ("f", "d")})
      `;
      const results: Record<string, unknown> = {};
      for (
        const [name, options, back] of [["ro", "ro", "rw"], ["noatime", "noatime", "relatime"]]
      ) {
        const sub = `${dir}/${name}`;
        await Deno.mkdir(sub);
        const before = await py(sub, prepare);
        await remount(options);
        try {
          results[name] = { during: await py(sub, access) };
        } finally {
          await remount(back);
        }
        // Not stored either: after the remount back the times are the ones set before.
        const after = await py(sub, `out({p: st(p)["atime"] for p in ("f", "d")})`);
        assert.deepEqual(results[name], { during: before }, `${name}: atime moved during`);
        assert.deepEqual(after, before, `${name}: atime moved after the remount back`);
      }
    } finally {
      if (kind === "ext4") await run("umount", [dir]);
    }
  },
}, { passthroughModes: true });
