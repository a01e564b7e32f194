/**
 * The thin FFI edge for the socket and pipe setup calls the io_uring peer transport
 * needs (src/cluster/uring_transport.ts): socket, bind, listen, getsockname, setsockopt,
 * shutdown, pipe2 and the pipe size. None of them moves data or waits (sockets are connected,
 * accepted, read and written through the io engine's ring); each is one synchronous syscall
 * through libc.ts's native wrappers (-errno on failure, see there) and throws FsError(errno) on
 * failure. IPv4 only: addresses are "a.b.c.d:port".
 * @module
 */

import { close, failed, O_CLOEXEC, sys } from "./libc.ts";

const AF_INET = 2;
const SOCK_STREAM = 1;
const SOCK_CLOEXEC = 0o2000000;
const SOL_SOCKET = 1;
const SO_REUSEADDR = 2;
const IPPROTO_TCP = 6;
const TCP_NODELAY = 1;
const F_SETPIPE_SZ = 1031;
const F_GETPIPE_SZ = 1032;
const ENOTCONN = 107;
export const SHUT_RDWR = 2;

/** `struct sockaddr_in` for "a.b.c.d" and a port; throws RangeError for anything else. */
export function sockaddrIn(host: string, port: number): Uint8Array<ArrayBuffer> {
  const parts = host.split(".").map(Number);
  if (
    parts.length !== 4 || parts.some((p) => !Number.isInteger(p) || p < 0 || p > 255) ||
    !Number.isInteger(port) || port < 0 || port > 65535
  ) {
    throw new RangeError(`"${host}:${port}" is not an IPv4 address and port`);
  }
  const out = new Uint8Array(16);
  const view = new DataView(out.buffer);
  view.setUint16(0, AF_INET, true);
  view.setUint16(2, port); // network byte order
  out.set(parts, 4);
  return out;
}

/** "a.b.c.d:port" -> [host, port], or undefined when it is not an IPv4 literal. */
export function parseIpv4(address: string): [string, number] | undefined {
  const at = address.lastIndexOf(":");
  const host = address.slice(0, at);
  const port = Number(address.slice(at + 1));
  try {
    sockaddrIn(host, port);
  } catch {
    return undefined;
  }
  return [host, port];
}

/** A TCP socket (blocking: the ring waits for it), TCP_NODELAY set, close-on-exec. */
export function tcpSocket(): number {
  const fd = sys().skyfs_sys_socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) failed(fd, "socket", "AF_INET, SOCK_STREAM");
  const one = new Uint8Array(new Int32Array([1]).buffer);
  try {
    const r = sys().skyfs_sys_setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, one, 4);
    if (r < 0) failed(r, "setsockopt", `${fd}, TCP_NODELAY`);
  } catch (error) {
    close(fd);
    throw error;
  }
  return fd;
}

/** A listening TCP socket on host:port (port 0: any free one); returns [fd, bound port]. */
export function tcpListen(host: string, port: number, backlog = 128): [number, number] {
  const fd = tcpSocket();
  try {
    const one = new Uint8Array(new Int32Array([1]).buffer);
    let r = sys().skyfs_sys_setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, one, 4);
    if (r < 0) failed(r, "setsockopt", `${fd}, SO_REUSEADDR`);
    r = sys().skyfs_sys_bind(fd, sockaddrIn(host, port), 16);
    if (r < 0) failed(r, "bind", `${host}:${port}`);
    r = sys().skyfs_sys_listen(fd, backlog);
    if (r < 0) failed(r, "listen", fd);
    const addr = new Uint8Array(16);
    const length = new Uint8Array(new Uint32Array([16]).buffer);
    r = sys().skyfs_sys_getsockname(fd, addr, length);
    if (r < 0) failed(r, "getsockname", fd);
    return [fd, new DataView(addr.buffer).getUint16(2)];
  } catch (error) {
    close(fd);
    throw error;
  }
}

/**
 * shutdown(2): wakes whatever waits on the socket in the ring (a recv returns 0, a send or
 * splice fails), which close(2) alone does not do while the ring holds a reference to it.
 * ENOTCONN (never connected, or already down) is not an error.
 */
export function shutdownSocket(fd: number): void {
  const r = sys().skyfs_sys_shutdown(fd, SHUT_RDWR);
  if (r < 0 && r !== -ENOTCONN) failed(r, "shutdown", fd);
}

export { close as closeFd };

/**
 * A pipe [read end, write end], close-on-exec, of at least `bytes` capacity (F_SETPIPE_SZ; the
 * kernel rounds up to a power of two of pages and caps it at /proc/sys/fs/pipe-max-size unless
 * root). Returns the pipe and its capacity.
 */
export function pipe(bytes: number): { fds: [number, number]; capacity: number } {
  const fds = new Int32Array(2);
  const r = sys().skyfs_sys_pipe2(new Uint8Array(fds.buffer), O_CLOEXEC);
  if (r < 0) failed(r, "pipe2", "O_CLOEXEC");
  let capacity = sys().skyfs_sys_fcntl(fds[0], F_SETPIPE_SZ, bytes);
  // EPERM over pipe-max-size: the pipe keeps its default size, which F_GETPIPE_SZ tells.
  if (capacity < 0) capacity = sys().skyfs_sys_fcntl(fds[0], F_GETPIPE_SZ, 0);
  return { fds: [fds[0], fds[1]], capacity };
}
