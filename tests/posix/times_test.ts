/**
 * Timestamps that no syscall on the mount sets directly (issue 18 points 2 and 3): mtime and ctime
 * after stores through a shared mapping, and atime after reads served by the page cache or by
 * passthrough, by the relatime rule, never on a read-only or noatime mount. Same expectations on
 * ext4 and skyfs; every skyfs case runs with passthrough and with `--passthrough off`.
 * @module
 */

import assert from "node:assert/strict";
import { suite, testMeta } from "../_harness.ts";
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
}, { passthroughModes: true });
