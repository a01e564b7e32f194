/**
 * The portable I/O engine: synchronous libc calls through FFI, wrapped in promises, for kernels or
 * sandboxes without io_uring. Reads and writes block the JS thread for the syscall (page-cache
 * speed in the common case); fsync, which can wait for the disk, runs on Deno's blocking pool.
 * @module
 */

import type { IoEngine, StatxResult } from "./types.ts";
import * as libc from "./libc.ts";

/** Run a synchronous call and turn its throw into a rejection, as an async engine would. */
function settle<T>(call: () => T): Promise<T> {
  try {
    return Promise.resolve(call());
  } catch (error) {
    return Promise.reject(error);
  }
}

/** The portable engine; stateless, so one per process is plenty but more are harmless. */
export function createPortableEngine(): IoEngine {
  // Load the native system calls now: without them (library not built) the engine cannot work,
  // and this throws the one line that says so.
  libc.sys();
  return {
    kind: "portable",
    open: (path, flags, mode = 0o600) => settle(() => libc.open(path, flags, mode)),
    close: (fd) => settle(() => libc.close(fd)),
    read: (fd, into, offset) => settle(() => readFull(fd, into, offset)),
    write: (fd, data, offset) => settle(() => libc.pwrite(fd, data, offset)),
    readv: (fd, into, offset) =>
      settle(() => {
        let total = 0;
        for (const part of into) {
          const n = readFull(fd, part, offset + total);
          total += n;
          if (n < part.byteLength) break;
        }
        return total;
      }),
    writev: (fd, data, offset) =>
      settle(() => {
        let total = 0;
        for (const part of data) total += libc.pwrite(fd, part, offset + total);
        return total;
      }),
    fsync: (fd, options) => options?.datasync ? libc.fdatasync(fd) : libc.fsync(fd),
    writeAndSync: async (fd, data, offset) => {
      const n = libc.pwrite(fd, data, offset);
      await libc.fdatasync(fd);
      return n;
    },
    fallocate: (fd, mode, offset, length) => settle(() => libc.fallocate(fd, mode, offset, length)),
    statx: (path) =>
      settle((): StatxResult => {
        const st = libc.stat(path);
        return { size: st.size, blocks: st.blocks, mode: st.mode, ino: st.ino };
      }),
    unlink: (path) => settle(() => libc.unlink(path)),
    rename: (from, to) => settle(() => libc.rename(from, to)),
    shutdown: () => Promise.resolve(),
  };
}

/** pread until the buffer is full or the file ends: a short count then means end of file. */
function readFull(fd: number, into: Uint8Array, offset: number): number {
  let done = 0;
  while (done < into.byteLength) {
    const n = libc.pread(fd, into.subarray(done), offset + done);
    if (n === 0) break;
    done += n;
  }
  return done;
}
