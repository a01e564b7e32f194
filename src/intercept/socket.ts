/**
 * The FFI edge of the shim server: a non-blocking SOCK_SEQPACKET unix socket on an abstract name,
 * messages received with the sender's kernel-stamped credentials (SO_PASSCRED, SCM_CREDENTIALS)
 * and replies sent with an fd attached (SCM_RIGHTS), which Deno's own API cannot do. The JS thread
 * only makes cheap synchronous calls on ready sockets; waiting is one `nonblocking` poll().
 * @module
 */

import { sys } from "../io/libc.ts";

/** libc for the wait, which reads no errno; every other call goes through libskyfs_uring.so
 * (`sys()`), which returns -errno read in the same C call (src/io/README.md, "Synchronous system
 * calls and errno"). */
const symbols = {
  poll: { parameters: ["buffer", "u64", "i32"], result: "i32", nonblocking: true },
} as const satisfies Deno.ForeignLibraryInterface;

const AF_UNIX = 1;
const SOCK_SEQPACKET = 5;
const SOCK_NONBLOCK = 0o4000;
const SOCK_CLOEXEC = 0o2000000;
const SOL_SOCKET = 1;
const SO_PASSCRED = 16;
const SCM_RIGHTS = 1;
const SCM_CREDENTIALS = 2;
const MSG_NOSIGNAL = 0x4000;
const MSG_DONTWAIT = 0x40;
const MSG_CMSG_CLOEXEC = 0x40000000;
const MSG_TRUNC = 0x20;
const MSG_CTRUNC = 0x8;
const POLLIN = 1;
const EAGAIN = 11;
const EINTR = 4;
/** Largest message read; longer ones are truncated and reported as malformed. */
const MAX_MESSAGE = 256;
const CONTROL_SIZE = 256;

let library: Deno.DynamicLibrary<typeof symbols> | undefined;
function lib() {
  library ??= Deno.dlopen("libc.so.6", symbols);
  return library.symbols;
}

function address(buffer: Uint8Array): bigint {
  return BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(buffer)));
}

/** Who sent a message, as the kernel stamped it. */
export interface Credentials {
  pid: number;
  uid: number;
  gid: number;
}

export interface Received {
  /** The payload, or undefined when the message was cut (longer than MAX_MESSAGE). */
  data?: Uint8Array;
  /** Missing only if the kernel attached none (a bug: SO_PASSCRED is always set). */
  credentials?: Credentials;
  /** The sender attached fds (never expected); they were closed on receipt. */
  strayFds: number;
}

/** Listen on the abstract unix name `name`; throws an Error with errno on failure. */
export function listenAbstract(name: string): number {
  const c = sys();
  const fd = c.skyfs_sys_socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) throw new Error(`socket(AF_UNIX, SOCK_SEQPACKET) failed: errno ${-fd}`);
  const one = new Uint8Array(new Int32Array([1]).buffer);
  const path = new TextEncoder().encode(name);
  const sockaddr = new Uint8Array(2 + 1 + path.length);
  new DataView(sockaddr.buffer).setUint16(0, AF_UNIX, true);
  sockaddr.set(path, 3); // sun_path[0] = 0: the abstract namespace
  let rc = c.skyfs_sys_setsockopt(fd, SOL_SOCKET, SO_PASSCRED, one, 4);
  if (rc >= 0) rc = c.skyfs_sys_bind(fd, sockaddr, sockaddr.length);
  if (rc >= 0) rc = c.skyfs_sys_listen(fd, 128);
  if (rc < 0) {
    const e = -rc;
    c.skyfs_sys_close(fd);
    throw Object.assign(
      new Error(
        `Cannot listen on the abstract socket "@${name}": errno ${e}` +
          (e === 98 ? " (address in use: another daemon serves this mount)" : ""),
      ),
      { errno: e },
    );
  }
  return fd;
}

/**
 * listenAbstract, waiting up to `waitMs` while the name is in use. The name is derived from the
 * mount's device number, which the kernel reuses as soon as a mount is gone, while the daemon that
 * served that earlier mount may still hold the name for a few seconds as it shuts down.
 */
export function listenAbstractWaiting(name: string, waitMs: number): number {
  const deadline = performance.now() + waitMs;
  const sleeper = new Int32Array(new SharedArrayBuffer(4));
  for (;;) {
    try {
      return listenAbstract(name);
    } catch (error) {
      if ((error as { errno?: number }).errno !== 98 || performance.now() > deadline) throw error;
      // Start-up only, before anything is served: a short synchronous sleep is fine here.
      Atomics.wait(sleeper, 0, 0, 100);
    }
  }
}

/** Accept one pending connection (SO_PASSCRED set on it), or undefined if none is waiting. */
export function acceptOne(listenFd: number): number | undefined {
  const c = sys();
  for (;;) {
    const fd = c.skyfs_sys_accept4(listenFd, null, null, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) {
      const one = new Uint8Array(new Int32Array([1]).buffer);
      c.skyfs_sys_setsockopt(fd, SOL_SOCKET, SO_PASSCRED, one, 4);
      return fd;
    }
    if (fd === -EINTR) continue;
    return undefined; // EAGAIN, or a connection that went away before we took it
  }
}

const message = new Uint8Array(MAX_MESSAGE);
const control = new Uint8Array(CONTROL_SIZE);
const iov = new Uint8Array(16);
const msghdr = new Uint8Array(56);

function fillHeader(payload: Uint8Array, length: number, controlLength: number) {
  const v = new DataView(iov.buffer);
  v.setBigUint64(0, address(payload), true);
  v.setBigUint64(8, BigInt(length), true);
  const h = new DataView(msghdr.buffer);
  msghdr.fill(0);
  h.setBigUint64(16, address(iov), true); // msg_iov
  h.setBigUint64(24, 1n, true); // msg_iovlen
  h.setBigUint64(32, controlLength ? address(control) : 0n, true); // msg_control
  h.setBigUint64(40, BigInt(controlLength), true); // msg_controllen
}

/**
 * Receive one message without blocking: the message, "again" if none is queued, or "closed" when
 * the peer hung up or the socket failed.
 */
export function receive(fd: number): Received | "again" | "closed" {
  const c = sys();
  fillHeader(message, message.length, control.length);
  control.fill(0);
  let n: number;
  for (;;) {
    n = Number(c.skyfs_sys_recvmsg(fd, msghdr, MSG_DONTWAIT | MSG_CMSG_CLOEXEC));
    if (n >= 0) break;
    if (n === -EINTR) continue;
    return n === -EAGAIN ? "again" : "closed";
  }
  if (n === 0) return "closed"; // SEQPACKET: end of stream
  const h = new DataView(msghdr.buffer);
  const flags = h.getInt32(48, true);
  const controlLength = Number(h.getBigUint64(40, true));
  const result: Received = { strayFds: 0 };
  const cv = new DataView(control.buffer);
  for (let at = 0; at + 16 <= controlLength;) {
    const length = Number(cv.getBigUint64(at, true));
    if (length < 16 || at + length > controlLength) break;
    const level = cv.getInt32(at + 8, true);
    const type = cv.getInt32(at + 12, true);
    if (level === SOL_SOCKET && type === SCM_CREDENTIALS && length >= 16 + 12) {
      result.credentials = {
        pid: cv.getInt32(at + 16, true),
        uid: cv.getUint32(at + 20, true),
        gid: cv.getUint32(at + 24, true),
      };
    } else if (level === SOL_SOCKET && type === SCM_RIGHTS) {
      for (let p = at + 16; p + 4 <= at + length; p += 4) {
        c.skyfs_sys_close(cv.getInt32(p, true));
        result.strayFds++;
      }
    }
    at += (length + 7) & ~7;
  }
  if (!(flags & (MSG_TRUNC | MSG_CTRUNC))) result.data = message.slice(0, n);
  return result;
}

/** Send one message, with `passFd` attached as SCM_RIGHTS when given. Returns 0 or -errno. */
export function send(fd: number, data: Uint8Array<ArrayBuffer>, passFd?: number): number {
  let controlLength = 0;
  if (passFd !== undefined) {
    control.fill(0);
    const cv = new DataView(control.buffer);
    cv.setBigUint64(0, 20n, true); // CMSG_LEN(sizeof(int))
    cv.setInt32(8, SOL_SOCKET, true);
    cv.setInt32(12, SCM_RIGHTS, true);
    cv.setInt32(16, passFd, true);
    controlLength = 24; // CMSG_SPACE(sizeof(int))
  }
  fillHeader(data, data.length, controlLength);
  for (;;) {
    const n = Number(sys().skyfs_sys_sendmsg(fd, msghdr, MSG_NOSIGNAL | MSG_DONTWAIT));
    if (n >= 0) return 0;
    if (n !== -EINTR) return n;
  }
}

/** open(2) of a local file; returns the fd or -errno. */
export function openFile(path: string, flags: number): number {
  return sys().skyfs_sys_open(new TextEncoder().encode(path + "\0"), flags, 0); // fd or -errno
}

export function closeFd(fd: number): void {
  sys().skyfs_sys_close(fd);
}

/** A pipe whose write end wakes a poll() on its read end (O_NONBLOCK, O_CLOEXEC). */
export function wakePipe(): { readFd: number; writeFd: number } {
  const fds = new Int32Array(2);
  const rc = sys().skyfs_sys_pipe2(new Uint8Array(fds.buffer), 0o4000 | 0o2000000);
  if (rc < 0) throw new Error(`pipe2 failed: errno ${-rc}`);
  return { readFd: fds[0], writeFd: fds[1] };
}

export function wake(writeFd: number): void {
  sys().skyfs_sys_write(writeFd, new Uint8Array(1), 1n);
}

/** Wait until one of `fds` is readable or `timeoutMs` passes, off the JS thread. Returns the
 * readable fds (hang-ups and errors count as readable: the next receive reports them). */
export async function waitReadable(fds: number[], timeoutMs: number): Promise<Set<number>> {
  const pollfds = new Uint8Array(8 * fds.length);
  const view = new DataView(pollfds.buffer);
  fds.forEach((fd, i) => {
    view.setInt32(8 * i, fd, true);
    view.setInt16(8 * i + 4, POLLIN, true);
  });
  const n = await lib().poll(pollfds, BigInt(fds.length), timeoutMs);
  const ready = new Set<number>();
  if (n <= 0) return ready;
  fds.forEach((fd, i) => {
    if (view.getInt16(8 * i + 6, true) !== 0) ready.add(fd);
  });
  return ready;
}
