/**
 * FuseDevice's system calls on /dev/fuse report the kernel's errno exactly (they go through
 * libskyfs_uring.so's wrappers, which read errno in the same C call: src/io/README.md,
 * "Synchronous system calls and errno"). A real mount that never answers INIT: the device is only
 * read and written by hand, and the kernel's answers to malformed writes are known.
 */

import assert from "node:assert/strict";
import { FuseDevice } from "./session.ts";

function canMount(): boolean {
  try {
    Deno.openSync("/dev/fuse", { read: true, write: true }).close();
    return true;
  } catch {
    return false;
  }
}

Deno.test({
  name: "session: EAGAIN, EINVAL, ENOENT and ENODEV from /dev/fuse, with the kernel's codes",
  ignore: !canMount(),
  fn() {
    const mountpoint = Deno.makeTempDirSync({ prefix: "skyfs-session-test-" });
    const device = FuseDevice.mount(mountpoint, {
      options: [],
      fsname: "skyfs-session-test",
      subtype: "skyfs-session-test",
    });
    try {
      const buffer = new Uint8Array(1 << 20);
      // The kernel queues INIT at mount; nothing follows until it is answered.
      const init = device.readRequest(buffer);
      assert.ok(init >= 40, `INIT is ${init} bytes`);
      assert.equal(new DataView(buffer.buffer).getUint32(4, true), 26); // FUSE_INIT
      // Empty queue on the non-blocking fd: EAGAIN, which readRequest reports as 0.
      assert.equal(device.readRequest(buffer), 0);
      // A reply shorter than struct fuse_out_header: EINVAL.
      assert.equal(device.writeMessage(new Uint8Array(8)), -22);
      // A well-formed reply to a request that does not exist: ENOENT.
      const reply = new Uint8Array(16);
      const view = new DataView(reply.buffer);
      view.setUint32(0, 16, true);
      view.setBigUint64(8, 0x7fff_0000n, true);
      assert.equal(device.writeMessage(reply), -2);
      // Passthrough was never negotiated (no INIT reply): EPERM where the kernel has it, ENOTTY
      // or EOPNOTSUPP where it does not. Never -1 from a lost errno or a non-negative id.
      assert.ok([-1, -25, -95].includes(device.backingOpen(0)));
      assert.ok([-1, -25, -95].includes(device.backingClose(1)));
      // Unmounted behind the device's back: the kernel aborts the connection, reads say ENODEV.
      const umount = new Deno.Command("fusermount3", { args: ["-u", "-z", mountpoint] })
        .outputSync();
      assert.equal(umount.code, 0, new TextDecoder().decode(umount.stderr));
      assert.equal(device.readRequest(buffer), -19);
      assert.ok(device.mounted); // only our own unmount() flips it
      device.unmount();
      // After our unmount the fd is never touched again: ENODEV without a system call.
      assert.equal(device.readRequest(buffer), -19);
      assert.equal(device.writeMessage(reply), -19);
    } finally {
      device.unmount();
      Deno.removeSync(mountpoint);
    }
  },
});
