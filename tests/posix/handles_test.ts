/**
 * File handles (issue 18 point 4): name_to_handle_at + open_by_handle_at of files and directories
 * after the kernel has dropped their dentries and inodes (`echo 2 > /proc/sys/vm/drop_caches`), so
 * that decoding asks the file system (FUSE: LOOKUP of "." and ".." with the handle's node id); a
 * deleted file's handle gives ESTALE. Runs on ext4, on skyfs with passthrough and with
 * `--passthrough off` (a cluster node has no passthrough: one skyfs variant there). skyfs only: a
 * handle still opens its file after a remount (inode numbers are stable), which an NFS server that
 * restarts needs. The NFS export itself is tested in tests/posix/nfs_test.ts.
 * @module
 */

import assert from "node:assert/strict";
import { openTarget, targetKinds } from "../_harness.ts";
import { dedent, suiteOnVariants } from "./_variants.ts";
import { py } from "./_py.ts";

/** Python helpers for the handle syscalls (ctypes), prepended to each snippet below. */
export const HANDLE_PY = `
  class FileHandle(ctypes.Structure):
      _fields_ = [("handle_bytes", ctypes.c_uint), ("handle_type", ctypes.c_int),
                  ("f_handle", ctypes.c_ubyte * 128)]

  def name_to_handle(path):
      fh = FileHandle(); fh.handle_bytes = 128
      mount_id = ctypes.c_int()
      if libc.name_to_handle_at(AT_FDCWD, path.encode(), ctypes.byref(fh), ctypes.byref(mount_id), 0) != 0:
          e = ctypes.get_errno(); raise OSError(e, os.strerror(e), path)
      return fh

  def open_by_handle(mount_fd, fh, flags=os.O_RDONLY):
      fd = libc.open_by_handle_at(mount_fd, ctypes.byref(fh), flags)
      if fd < 0:
          e = ctypes.get_errno(); raise OSError(e, os.strerror(e))
      return fd

  def drop_caches():
      os.sync()
      with open("/proc/sys/vm/drop_caches", "w") as f:
          f.write("2")
`;

/** A snippet with the handle helpers in front, both at column 0. */
export function withHandles(code: string): string {
  return dedent(HANDLE_PY) + "\n" + dedent(code);
}

suiteOnVariants("posix file handles", {
  "a file's handle opens it after its dentry and inode were dropped": async (dir) => {
    const r = await py(
      dir,
      withHandles(`
      write_file("f", b"handle data")
      ino = os.stat("f").st_ino
      fh = name_to_handle("f")
      drop_caches()
      mount_fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY)
      res = {"type_set": fh.handle_bytes > 0}
      try:
          fd = open_by_handle(mount_fd, fh)
          res["read"] = os.read(fd, 100).decode()
          res["same_inode"] = os.fstat(fd).st_ino == ino
          os.close(fd)
          fd = open_by_handle(mount_fd, fh, os.O_RDWR)
          os.pwrite(fd, b"H", 0)
          os.close(fd)
          res["written"] = read_file("f").decode()
      except OSError as e:
          res["open"] = ename(e)
      out(res)
    `),
    );
    assert.deepEqual(r, {
      type_set: true,
      read: "handle data",
      same_inode: true,
      written: "Handle data",
    });
  },

  "a directory's handle opens it, reconnected to its parent": async (dir) => {
    const r = await py(
      dir,
      withHandles(`
      os.makedirs("d/sub")
      write_file("d/sub/inner", b"x")
      ino = os.stat("d/sub").st_ino
      fh = name_to_handle("d/sub")
      drop_caches()
      mount_fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY)
      res = {}
      try:
          fd = open_by_handle(mount_fd, fh, os.O_RDONLY | os.O_DIRECTORY)
          res["same_inode"] = os.fstat(fd).st_ino == ino
          res["list"] = sorted(os.listdir(fd))
          # The reconnected dentry knows its path: ".." of the handle's directory is "d".
          res["parent_is_d"] = os.stat("..", dir_fd=fd).st_ino == os.stat("d").st_ino
          os.close(fd)
      except OSError as e:
          res["open"] = ename(e)
      out(res)
    `),
    );
    assert.deepEqual(r, { same_inode: true, list: ["inner"], parent_is_d: true });
  },

  "a deleted file's handle gives ESTALE; an open but unlinked one still opens": async (dir) => {
    const r = await py(
      dir,
      withHandles(`
      write_file("gone", b"bye")
      fh = name_to_handle("gone")
      os.unlink("gone")
      drop_caches()
      mount_fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY)
      res = {"deleted": E(open_by_handle, mount_fd, fh)}
      os.mkdir("sub"); fh_dir = name_to_handle("sub"); os.rmdir("sub")
      drop_caches()
      res["deleted_dir"] = E(open_by_handle, mount_fd, fh_dir, os.O_RDONLY | os.O_DIRECTORY)
      write_file("held", b"still here")
      fh2 = name_to_handle("held")
      keep = os.open("held", os.O_RDONLY)
      os.unlink("held")
      drop_caches()
      try:
          fd = open_by_handle(mount_fd, fh2)
          res["unlinked_open"] = os.read(fd, 100).decode()
          os.close(fd)
      except OSError as e:
          res["unlinked_open"] = ename(e)
      os.close(keep)
      out(res)
    `),
    );
    assert.deepEqual(r, {
      deleted: "ESTALE",
      deleted_dir: "ESTALE",
      unlinked_open: "still here",
    });
  },
});

Deno.test({
  name: "posix file handles: a handle opens its file after a remount (skyfs)",
  ignore: !targetKinds().includes("skyfs"),
  sanitizeOps: false,
  sanitizeResources: false,
  sanitizeExit: false,
  async fn() {
    const target = await openTarget("skyfs");
    try {
      const before = await py(
        target.dir,
        withHandles(`
        write_file("kept", b"across remounts")
        fh = name_to_handle("kept")
        out({"bytes": fh.handle_bytes, "type": fh.handle_type,
             "handle": bytes(fh.f_handle[:fh.handle_bytes]).hex()})
      `),
      );
      await target.mount!.restart();
      const after = await py(
        target.dir,
        withHandles(`
        fh = FileHandle(); fh.handle_bytes = ${before.bytes}; fh.handle_type = ${before.type}
        raw = bytes.fromhex("${before.handle}")
        for i, b in enumerate(raw):
            fh.f_handle[i] = b
        mount_fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY)
        drop_caches()  # a listing of the directory (READDIRPLUS) would have cached the inode
        try:
            fd = open_by_handle(mount_fd, fh)
            out(os.read(fd, 100).decode())
        except OSError as e:
            out(ename(e))
      `),
      );
      assert.equal(after, "across remounts");
    } finally {
      await target.close();
    }
  },
});
