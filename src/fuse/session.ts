/**
 * The FFI edge of the FUSE layer: libfuse3 mounts and unmounts (it runs fusermount3 when we are
 * not root), then requests are read from and replies written to the /dev/fuse fd directly, so that
 * our own codec answers INIT and can negotiate what libfuse 3.14 cannot (7.45 features, max_pages,
 * parallel dirops, passthrough). The fd is non-blocking: the JS thread drains every queued request
 * with cheap synchronous reads and only parks when the queue is empty: first in one blocking poll()
 * on the JS thread that also watches the event loop's epoll fds (`parkSync`), then in one
 * `nonblocking` poll() (src/fuse/README.md has the measurements behind this).
 * @module
 */

import { sys } from "../io/libc.ts";

const libfuseSymbols = {
  fuse_session_new: { parameters: ["buffer", "buffer", "usize", "pointer"], result: "pointer" },
  fuse_session_mount: { parameters: ["pointer", "buffer"], result: "i32" },
  fuse_session_fd: { parameters: ["pointer"], result: "i32" },
  fuse_session_unmount: { parameters: ["pointer"], result: "void" },
  fuse_session_destroy: { parameters: ["pointer"], result: "void" },
} as const;

/** libc for the waits, which read no errno; read, write, fcntl and ioctl on /dev/fuse go through
 * libskyfs_uring.so (`sys()`), which returns -errno read in the same C call (src/io/README.md,
 * "Synchronous system calls and errno"). */
const libcSymbols = {
  poll: { parameters: ["buffer", "u64", "i32"], result: "i32", nonblocking: true },
  pollSync: { name: "poll", parameters: ["buffer", "u64", "i32"], result: "i32" },
  ppoll: { parameters: ["buffer", "u64", "buffer", "pointer"], result: "i32" },
} as const;

/** sizeof(struct fuse_lowlevel_ops) in libfuse 3.14 (checked with gcc against its header). */
const LOWLEVEL_OPS_SIZE = 352;
const F_GETFL = 3;
const F_SETFL = 4;
const O_NONBLOCK = 0o4000;
const POLLIN = 1;
const FUSE_DEV_IOC_BACKING_OPEN = 0x4010e501n;
const FUSE_DEV_IOC_BACKING_CLOSE = 0x4004e502n;

type LibFuse = Deno.DynamicLibrary<typeof libfuseSymbols>;
type LibC = Deno.DynamicLibrary<typeof libcSymbols>;

let libc: LibC | undefined;
function loadLibc(): LibC {
  libc ??= Deno.dlopen("libc.so.6", libcSymbols);
  return libc;
}

let libfuse: LibFuse | undefined;
/** Load libfuse3, or throw an Error whose message says how to install it. */
export function loadLibfuse(): LibFuse {
  if (libfuse) return libfuse;
  const candidates = ["libfuse3.so.3", "libfuse3.so"];
  for (const name of candidates) {
    try {
      libfuse = Deno.dlopen(name, libfuseSymbols);
      return libfuse;
    } catch { /* try the next name */ }
  }
  throw new Error(
    "libfuse3 is not installed: run `deno task setup` (or `apt-get install fuse3 libfuse3-3`)",
  );
}

const encoder = new TextEncoder();
function cstring(text: string): Uint8Array<ArrayBuffer> {
  return encoder.encode(text + "\0");
}

export interface MountOptions {
  /** Comma-separated mount options for libfuse (-o), e.g. "allow_other,default_permissions". */
  options: string[];
  fsname: string;
  subtype: string;
}

/** One mounted FUSE connection: the /dev/fuse fd and the libfuse session that mounted it. */
export class FuseDevice {
  readonly fd: number;
  #session: Deno.PointerValue;
  #keepAlive: ArrayBufferView[];
  #pollfd = new Uint8Array(8);
  /** The /dev/fuse fd, then every epoll fd of the process (Deno's event loop), for parkSync. */
  #parkfds?: Uint8Array<ArrayBuffer>;
  #mounted = true;

  private constructor(session: Deno.PointerValue, fd: number, keepAlive: ArrayBufferView[]) {
    this.#session = session;
    this.fd = fd;
    this.#keepAlive = keepAlive;
    const view = new DataView(this.#pollfd.buffer);
    view.setInt32(0, fd, true);
    view.setInt16(4, POLLIN, true);
  }

  /** Mount `mountpoint` through libfuse; throws an Error with libfuse's reason on failure. */
  static mount(mountpoint: string, options: MountOptions): FuseDevice {
    const fuse = loadLibfuse();
    const argvStrings = [
      cstring("skyfs"),
      cstring("-o"),
      cstring(
        [...options.options, `fsname=${options.fsname}`, `subtype=${options.subtype}`].join(","),
      ),
    ];
    const argv = new BigUint64Array(argvStrings.length + 1);
    argvStrings.forEach((s, i) =>
      argv[i] = BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(s)))
    );
    const args = new Uint8Array(24); // struct fuse_args { int argc; char **argv; int allocated; }
    const argsView = new DataView(args.buffer);
    argsView.setInt32(0, argvStrings.length, true);
    argsView.setBigUint64(8, BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(argv))), true);
    const ops = new Uint8Array(LOWLEVEL_OPS_SIZE); // no callbacks: we never let libfuse dispatch
    const session = fuse.symbols.fuse_session_new(args, ops, BigInt(ops.byteLength), null);
    if (session === null) {
      throw new Error(`libfuse rejected the mount options "${options.options.join(",")}"`);
    }
    const rc = fuse.symbols.fuse_session_mount(session, cstring(mountpoint));
    if (rc !== 0) {
      fuse.symbols.fuse_session_destroy(session);
      throw new Error(
        `Cannot mount "${mountpoint}": libfuse's mount failed (see its message above)`,
      );
    }
    const fd = fuse.symbols.fuse_session_fd(session);
    const c = sys();
    const flags = c.skyfs_sys_fcntl(fd, F_GETFL, 0);
    const set = flags < 0 ? flags : c.skyfs_sys_fcntl(fd, F_SETFL, flags | O_NONBLOCK);
    if (set < 0) throw new Error(`Cannot make /dev/fuse non-blocking: errno ${-set}`);
    return new FuseDevice(session, fd, [...argvStrings, argv, args, ops]);
  }

  /**
   * Read one request into `buffer` without blocking. Returns its length, 0 if none is queued, or
   * a negative errno (-ENODEV once the file system is unmounted).
   */
  readRequest(buffer: Uint8Array<ArrayBuffer>): number {
    // After unmount libfuse has closed the fd and its number may belong to another file now.
    if (!this.#mounted) return -19; // ENODEV
    for (;;) {
      const n = Number(sys().skyfs_sys_read(this.fd, buffer, BigInt(buffer.byteLength)));
      if (n >= 0) return n;
      if (n === -4 /* EINTR */ || n === -2 /* ENOENT: request was interrupted, read again */) {
        continue;
      }
      return n === -11 /* EAGAIN */ ? 0 : n;
    }
  }

  /** Wait until a request is queued (or `timeoutMs` passes); does not block the JS thread. */
  async waitReadable(timeoutMs: number): Promise<void> {
    if (!this.#mounted) return;
    await loadLibc().symbols.poll(this.#pollfd, 1n, timeoutMs);
  }

  /**
   * Block the JS thread in one `poll()` until a request is queued ("request"), anything Deno's
   * event loop waits for is ready ("other": its epoll fds are in the same poll, so a socket, a
   * finished thread-pool call or a signal ends the wait), or `timeoutMs` passes ("timeout").
   * No thread-pool hop: the kernel wakes this thread directly. Timers are the one thing it cannot
   * see, so callers keep `timeoutMs` short (src/fuse/README.md, "Parking on the JS thread").
   */
  parkSync(timeoutMs: number): "request" | "other" | "timeout" {
    if (!this.#mounted) return "request"; // the next read says ENODEV
    const fds = this.#parkfds ??= this.#parkFds();
    const count = fds.byteLength / 8;
    const rc = loadLibc().symbols.pollSync(fds, BigInt(count), timeoutMs);
    if (rc === 0) return "timeout";
    if (rc < 0) return "other"; // EINTR: a signal, which the event loop must see
    const view = new DataView(fds.buffer);
    return view.getInt16(6, true) !== 0 ? "request" : "other";
  }

  /** struct timespec for ppoll as 32-bit words: tv_sec's low word at 0, tv_nsec's at 2. */
  #timespec = new Int32Array(4);

  /**
   * `parkSync` with a timeout in microseconds (one `ppoll`): how the idle spin waits for the next
   * request when no handler is pending (src/fuse/README.md, "Idle spin").
   */
  parkSyncUs(timeoutUs: number): "request" | "other" | "timeout" {
    if (!this.#mounted) return "request"; // the next read says ENODEV
    const fds = this.#parkfds ??= this.#parkFds();
    const us = Math.max(1, Math.floor(timeoutUs));
    this.#timespec[0] = Math.floor(us / 1_000_000);
    this.#timespec[2] = (us % 1_000_000) * 1000;
    const rc = loadLibc().symbols.ppoll(fds, BigInt(fds.byteLength / 8), this.#timespec, null);
    if (rc === 0) return "timeout";
    if (rc < 0) return "other"; // EINTR: a signal, which the event loop must see
    const view = new DataView(fds.buffer);
    return view.getInt16(6, true) !== 0 ? "request" : "other";
  }

  /** pollfd entries: /dev/fuse, then the process's epoll fds (listed once, at the first park). */
  #parkFds(): Uint8Array<ArrayBuffer> {
    const fds = [this.fd];
    for (const entry of Deno.readDirSync("/proc/self/fd")) {
      const fd = Number(entry.name);
      try {
        if (
          fd !== this.fd && Deno.readLinkSync(`/proc/self/fd/${fd}`) === "anon_inode:[eventpoll]"
        ) {
          fds.push(fd);
        }
      } catch { /* the fd of the listing itself, closed by now */ }
    }
    this.epollFds = fds.length - 1;
    const buffer = new Uint8Array(fds.length * 8);
    const view = new DataView(buffer.buffer);
    fds.forEach((fd, i) => {
      view.setInt32(i * 8, fd, true);
      view.setInt16(i * 8 + 4, POLLIN, true);
    });
    return buffer;
  }

  /** How many epoll fds parkSync watches beside /dev/fuse (known after the first park). */
  epollFds = -1;

  /** Write one whole reply or notification. Returns 0 or a negative errno. */
  writeMessage(message: Uint8Array<ArrayBuffer>): number {
    if (!this.#mounted) return -19; // ENODEV: never write to a closed (maybe reused) fd number
    const n = Number(sys().skyfs_sys_write(this.fd, message, BigInt(message.byteLength)));
    return n < 0 ? n : 0;
  }

  /** Register `fd` as a passthrough backing file; returns the backing id or a negative errno. */
  backingOpen(fd: number): number {
    if (!this.#mounted) return -19; // ENODEV
    const map = new Uint8Array(16); // struct fuse_backing_map { i32 fd; u32 flags; u64 padding; }
    new DataView(map.buffer).setInt32(0, fd, true);
    return sys().skyfs_sys_ioctl(this.fd, FUSE_DEV_IOC_BACKING_OPEN, map); // the id or -errno
  }

  backingClose(backingId: number): number {
    if (!this.#mounted) return -19; // ENODEV: the connection (and its ids) went with the unmount
    const arg = new Uint8Array(4);
    new DataView(arg.buffer).setInt32(0, backingId, true);
    const rc = sys().skyfs_sys_ioctl(this.fd, FUSE_DEV_IOC_BACKING_CLOSE, arg);
    return rc < 0 ? rc : 0;
  }

  get mounted(): boolean {
    return this.#mounted;
  }

  /** Unmount (lazily if busy) and close the device; safe to call twice. libfuse closes the fd
   * before unmounting, so that a synchronous umount cannot recurse into this daemon. */
  unmount(): void {
    if (!this.#mounted) return;
    this.#mounted = false;
    const fuse = loadLibfuse();
    fuse.symbols.fuse_session_unmount(this.#session);
    fuse.symbols.fuse_session_destroy(this.#session);
    this.#keepAlive.length = 0;
  }
}
