/**
 * The thin FFI edge to the system calls skyfs makes on local files that Deno's own file API cannot
 * do on a raw fd (pread/pwrite at offsets, fallocate modes, SEEK_DATA/SEEK_HOLE, copy_file_range,
 * statvfs, a shared file mapping for the metadata log). Every call throws FsError(errno) on failure.
 *
 * The calls go through small C wrappers in lib/uring/build/libskyfs_uring.so (`skyfs_sys_*`,
 * since ABI 8) that return -errno on failure, read in the same C call: a second FFI call to read
 * errno could see a code left by a system call the runtime made in between. So the library must be
 * built (`deno task build`, which setup runs); a missing or old build fails with one line naming
 * the fix. Only `monotonicSeconds` and `wallClock` call libc directly (clock_gettime, whose failure
 * they handle without errno). `sys()` also serves src/fuse/session.ts and src/intercept/socket.ts (ABI 9).
 *
 * Calls are synchronous (about 5 ns of FFI overhead plus the syscall), except fsync and fdatasync,
 * which can wait for the disk for a long time and so run `nonblocking` on Deno's blocking pool;
 * their wrappers read errno on the pool thread, so a failure carries its real code too.
 * @module
 */

import { Errno, FsError } from "../fs_error.ts";
import { ABI_VERSION, defaultLibraryPath } from "./uring_native.ts";

export const O_RDONLY = 0o0;
export const O_WRONLY = 0o1;
export const O_RDWR = 0o2;
export const O_ACCMODE = 0o3;
export const O_CREAT = 0o100;
export const O_EXCL = 0o200;
export const O_NOCTTY = 0o400;
export const O_TRUNC = 0o1000;
export const O_APPEND = 0o2000;
export const O_NONBLOCK = 0o4000;
export const O_DIRECT = 0o40000;
export const O_LARGEFILE = 0o100000;
export const O_DIRECTORY = 0o200000;
export const O_NOFOLLOW = 0o400000;
export const O_NOATIME = 0o1000000;
export const O_CLOEXEC = 0o2000000;

export const SEEK_SET = 0;
export const SEEK_CUR = 1;
export const SEEK_END = 2;
export const SEEK_DATA = 3;
export const SEEK_HOLE = 4;

export const FALLOC_FL_KEEP_SIZE = 0x01;
export const FALLOC_FL_PUNCH_HOLE = 0x02;
export const FALLOC_FL_ZERO_RANGE = 0x10;

/** libc itself: only calls that cannot fail in a way skyfs reads (clock_gettime; posix_fadvise,
 * which returns its error instead of setting errno, and is advice). */
const symbols = {
  clock_gettime: { parameters: ["i32", "buffer"], result: "i32" },
  posix_fadvise: { parameters: ["i32", "i64", "i64", "i32"], result: "i32" },
} as const satisfies Deno.ForeignLibraryInterface;

const POSIX_FADV_WILLNEED = 3;

/** posix_fadvise(WILLNEED): the kernel starts reading the range into the page cache (DMA, no
 * copy by this process) and returns. Advice: a failure is ignored. */
export function willNeed(fd: number, offset: number, length: number): void {
  lib().posix_fadvise(fd, BigInt(offset), BigInt(length), POSIX_FADV_WILLNEED);
}

let library: Deno.DynamicLibrary<typeof symbols> | undefined;

function lib(): Deno.DynamicLibrary<typeof symbols>["symbols"] {
  library ??= Deno.dlopen("libc.so.6", symbols);
  return library.symbols;
}

/**
 * The system calls of libskyfs_uring.so (lib/uring/skyfs_uring.h, "Synchronous system calls"):
 * each returns its result or -errno, read in C right after the call. Reading errno through a
 * second FFI call (`__errno_location`), as this file did before, could report another call's code:
 * between the two calls the runtime may make system calls of its own on this thread (allocation,
 * GC, other ops), and errno is whatever the last failing one left.
 */
const nativeSymbols = {
  skyfs_uring_abi_version: { parameters: [], result: "i32" },
  skyfs_sys_open: { parameters: ["buffer", "i32", "u32"], result: "i32" },
  skyfs_sys_close: { parameters: ["i32"], result: "i32" },
  skyfs_sys_dup: { parameters: ["i32"], result: "i32" },
  skyfs_sys_pread: { parameters: ["i32", "buffer", "u64", "i64"], result: "i64" },
  skyfs_sys_pwrite: { parameters: ["i32", "buffer", "u64", "i64"], result: "i64" },
  skyfs_sys_fsync: { parameters: ["i32"], result: "i32", nonblocking: true },
  skyfs_sys_fdatasync: { parameters: ["i32"], result: "i32", nonblocking: true },
  skyfs_sys_ftruncate: { parameters: ["i32", "i64"], result: "i32" },
  skyfs_sys_fallocate: { parameters: ["i32", "i32", "i64", "i64"], result: "i32" },
  skyfs_sys_lseek: { parameters: ["i32", "i64", "i32"], result: "i64" },
  skyfs_sys_copy_file_range: {
    parameters: ["i32", "buffer", "i32", "buffer", "u64", "u32"],
    result: "i64",
  },
  skyfs_sys_statvfs: { parameters: ["buffer", "buffer"], result: "i32" },
  skyfs_sys_fstatvfs: { parameters: ["i32", "buffer"], result: "i32" },
  skyfs_sys_stat: { parameters: ["buffer", "buffer"], result: "i32" },
  skyfs_sys_fstat: { parameters: ["i32", "buffer"], result: "i32" },
  skyfs_sys_unlink: { parameters: ["buffer"], result: "i32" },
  skyfs_sys_rename: { parameters: ["buffer", "buffer"], result: "i32" },
  skyfs_sys_flock: { parameters: ["i32", "i32"], result: "i32" },
  skyfs_sys_futimens: { parameters: ["i32", "buffer"], result: "i32" },
  skyfs_sys_poll: { parameters: ["buffer", "u64", "i32"], result: "i32" },
  skyfs_sys_mmap: {
    parameters: ["u64", "i32", "i32", "i32", "i64", "buffer"],
    result: "pointer",
  },
  skyfs_sys_munmap: { parameters: ["pointer", "u64"], result: "i32" },
  // For sockets.ts.
  skyfs_sys_socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
  skyfs_sys_setsockopt: { parameters: ["i32", "i32", "i32", "buffer", "u32"], result: "i32" },
  skyfs_sys_bind: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  skyfs_sys_listen: { parameters: ["i32", "i32"], result: "i32" },
  skyfs_sys_getsockname: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  skyfs_sys_shutdown: { parameters: ["i32", "i32"], result: "i32" },
  skyfs_sys_pipe2: { parameters: ["buffer", "i32"], result: "i32" },
  skyfs_sys_fcntl: { parameters: ["i32", "i32", "i32"], result: "i32" },
  // Since ABI 9, for src/fuse/session.ts (/dev/fuse) and src/intercept/socket.ts (the shim's socket).
  skyfs_sys_read: { parameters: ["i32", "buffer", "u64"], result: "i64" },
  skyfs_sys_write: { parameters: ["i32", "buffer", "u64"], result: "i64" },
  skyfs_sys_ioctl: { parameters: ["i32", "u64", "buffer"], result: "i32" },
  skyfs_sys_accept4: { parameters: ["i32", "pointer", "pointer", "i32"], result: "i32" },
  skyfs_sys_recvmsg: { parameters: ["i32", "buffer", "i32"], result: "i64" },
  skyfs_sys_sendmsg: { parameters: ["i32", "buffer", "i32"], result: "i64" },
} as const satisfies Deno.ForeignLibraryInterface;

export type NativeSymbols = Deno.DynamicLibrary<typeof nativeSymbols>["symbols"];

let nativePath: string | undefined;
let nativeLibrary: Deno.DynamicLibrary<typeof nativeSymbols> | undefined;

/** The native system calls; loads lib/uring/build/libskyfs_uring.so (or the path given to
 * `useNativeLibrary`) on first use. */
export function sys(): NativeSymbols {
  nativeLibrary ??= loadNative(nativePath ?? defaultLibraryPath());
  return nativeLibrary.symbols;
}

/**
 * Take the system calls from the library at `path` (config io.uring_lib) from now on, loading it
 * now, so a missing or old build fails at start. Calls made before keep whatever they got.
 */
export function useNativeLibrary(path: string): void {
  if (path === nativePath && nativeLibrary !== undefined) return;
  nativeLibrary = loadNative(path);
  nativePath = path;
}

/**
 * Loads the library and checks its ABI version. A missing or older build throws a plain Error
 * (not an FsError, which a caller could take for an answer about a file) whose message is one
 * line naming the fix; nothing of skyfs's local I/O works without the library.
 */
function loadNative(path: string): Deno.DynamicLibrary<typeof nativeSymbols> {
  let version: number;
  let probe: Deno.DynamicLibrary<
    { skyfs_uring_abi_version: typeof nativeSymbols.skyfs_uring_abi_version }
  >;
  try {
    probe = Deno.dlopen(path, { skyfs_uring_abi_version: nativeSymbols.skyfs_uring_abi_version });
    version = probe.symbols.skyfs_uring_abi_version();
  } catch (error) {
    const reason = (error as Error).message.replace(/\s+/g, " ");
    throw new Error(`cannot load ${path} (${reason}): run \`deno task build\``);
  }
  try {
    if (version !== ABI_VERSION) {
      throw new Error(
        `${path} is an old build (ABI ${version}, this code needs ${ABI_VERSION}): ` +
          "run `deno task build`",
      );
    }
    return Deno.dlopen(path, nativeSymbols);
  } finally {
    probe.close();
  }
}

/** Throw FsError(-result) for a call that returned -errno. */
export function failed(result: number, call: string, detail: string | number): never {
  throw new FsError(result < 0 ? -result : Errno.EIO, `${call}(${detail}) failed`);
}

const CLOCK_REALTIME = 0;
const CLOCK_MONOTONIC = 1;
/** struct timespec as 32-bit words: tv_sec's low word at 0 and high word at 1, tv_nsec at 2
 * (little-endian). */
const timespec = new Int32Array(4);
let clockGettime: ((clock: number, into: Int32Array) => number) | undefined;

function loadClock(): (clock: number, into: Int32Array) => number {
  try {
    clockGettime = lib().clock_gettime;
  } catch {
    clockGettime = () => -1;
  }
  return clockGettime;
}

/**
 * Seconds on the monotonic clock (since boot), for latency histograms on the request path:
 * libc's clock_gettime through a synchronous FFI call into a buffer allocated once costs 25-35 ns
 * here, against 80-150 ns for performance.now(). Falls back to performance.now() when libc cannot
 * be loaded. Only differences are meaningful.
 */
export function monotonicSeconds(): number {
  if ((clockGettime ?? loadClock())(CLOCK_MONOTONIC, timespec) !== 0) {
    return performance.now() / 1000;
  }
  return timespec[0] + timespec[2] * 1e-9;
}

/**
 * The wall clock (CLOCK_REALTIME) to the nanosecond, the clock the kernel stamps files with: one
 * synchronous FFI call to libc's clock_gettime (a vDSO read, no system call). A fresh object per
 * call, which the caller may keep or change. Falls back to `Date.now()` (whole milliseconds, so
 * never ahead of the real time either) when libc cannot be loaded.
 */
export function wallClock(): { sec: number; nsec: number } {
  if ((clockGettime ?? loadClock())(CLOCK_REALTIME, timespec) !== 0) {
    const ms = Date.now();
    const sec = Math.floor(ms / 1000);
    return { sec, nsec: (ms - sec * 1000) * 1_000_000 };
  }
  // tv_sec is 64 bits: the low word unsigned, so that 2038 does not wrap.
  return { sec: (timespec[0] >>> 0) + timespec[1] * 2 ** 32, nsec: timespec[2] };
}

const encoder = new TextEncoder();

/** A NUL-terminated copy of a path for a C call. */
function cString(path: string): Uint8Array<ArrayBuffer> {
  const bytes = encoder.encode(path);
  const out = new Uint8Array(bytes.length + 1);
  out.set(bytes);
  return out;
}

function num(value: number | bigint): number {
  return typeof value === "bigint" ? Number(value) : value;
}

/** A view the FFI accepts for a Uint8Array over any buffer. */
function buf(bytes: Uint8Array): Uint8Array<ArrayBuffer> {
  return bytes as Uint8Array<ArrayBuffer>;
}

export function open(path: string, flags: number, mode = 0o600): number {
  const fd = sys().skyfs_sys_open(cString(path), flags | O_CLOEXEC, mode);
  if (fd < 0) failed(fd, "open", JSON.stringify(path));
  return fd;
}

export function close(fd: number): void {
  const r = sys().skyfs_sys_close(fd);
  if (r < 0) failed(r, "close", fd);
}

/** dup(2): a second descriptor of the same open file, or -errno. */
export function dup(fd: number): number {
  return sys().skyfs_sys_dup(fd);
}

/** pread(2) (the C side retries EINTR); resolves to bytes read (short only at end of file). */
export function pread(fd: number, into: Uint8Array, offset: number): number {
  const n = num(sys().skyfs_sys_pread(fd, buf(into), BigInt(into.byteLength), BigInt(offset)));
  if (n < 0) failed(n, "pread", fd);
  return n;
}

/** pwrite(2) of the whole buffer (loops over short writes; the C side retries EINTR). */
export function pwrite(fd: number, data: Uint8Array, offset: number): number {
  let done = 0;
  while (done < data.byteLength) {
    const part = data.subarray(done);
    const n = num(
      sys().skyfs_sys_pwrite(fd, buf(part), BigInt(part.byteLength), BigInt(offset + done)),
    );
    if (n < 0) failed(n, "pwrite", fd);
    if (n === 0) break;
    done += n;
  }
  return done;
}

/** fsync(2) on the blocking pool; a failure carries the errno the pool thread saw. */
export async function fsync(fd: number): Promise<void> {
  const r = await sys().skyfs_sys_fsync(fd);
  if (r < 0) failed(r, "fsync", fd);
}

/** fdatasync(2) on the blocking pool; a failure carries the errno the pool thread saw. */
export async function fdatasync(fd: number): Promise<void> {
  const r = await sys().skyfs_sys_fdatasync(fd);
  if (r < 0) failed(r, "fdatasync", fd);
}

export function ftruncate(fd: number, length: number): void {
  const r = sys().skyfs_sys_ftruncate(fd, BigInt(length));
  if (r < 0) failed(r, "ftruncate", `${fd}, ${length}`);
}

export function fallocate(fd: number, mode: number, offset: number, length: number): void {
  const r = sys().skyfs_sys_fallocate(fd, mode, BigInt(offset), BigInt(length));
  if (r < 0) failed(r, "fallocate", `${fd}, mode ${mode}, ${offset}, ${length}`);
}

/** lseek(2); with SEEK_DATA/SEEK_HOLE, ENXIO means no data (or hole) at or after `offset`. */
export function lseek(fd: number, offset: number, whence: number): number {
  const r = num(sys().skyfs_sys_lseek(fd, BigInt(offset), whence));
  if (r < 0) failed(r, "lseek", `${fd}, ${offset}, ${whence}`);
  return r;
}

/** copy_file_range(2) between explicit offsets (the C side retries EINTR); resolves to bytes
 * copied (0 at end of input). */
export function copyFileRange(
  fdIn: number,
  offsetIn: number,
  fdOut: number,
  offsetOut: number,
  length: number,
): number {
  const offIn = new BigInt64Array([BigInt(offsetIn)]);
  const offOut = new BigInt64Array([BigInt(offsetOut)]);
  const n = num(
    sys().skyfs_sys_copy_file_range(
      fdIn,
      new Uint8Array(offIn.buffer),
      fdOut,
      new Uint8Array(offOut.buffer),
      BigInt(length),
      0,
    ),
  );
  if (n < 0) failed(n, "copy_file_range", `${fdIn} -> ${fdOut}, ${length}`);
  return n;
}

/** The fields of struct statvfs (x86_64 layout: eleven 8-byte fields). */
export interface StatVfs {
  bsize: number;
  frsize: number;
  blocks: number;
  bfree: number;
  bavail: number;
  files: number;
  ffree: number;
  favail: number;
  fsid: number;
  flag: number;
  namemax: number;
}

function parseStatVfs(raw: Uint8Array<ArrayBuffer>): StatVfs {
  const v = new BigUint64Array(raw.buffer, 0, 11);
  return {
    bsize: Number(v[0]),
    frsize: Number(v[1]),
    blocks: Number(v[2]),
    bfree: Number(v[3]),
    bavail: Number(v[4]),
    files: Number(v[5]),
    ffree: Number(v[6]),
    favail: Number(v[7]),
    fsid: Number(v[8]),
    flag: Number(v[9]),
    namemax: Number(v[10]),
  };
}

export function statvfs(path: string): StatVfs {
  const raw = new Uint8Array(112);
  const r = sys().skyfs_sys_statvfs(cString(path), raw);
  if (r < 0) failed(r, "statvfs", JSON.stringify(path));
  return parseStatVfs(raw);
}

export function fstatvfs(fd: number): StatVfs {
  const raw = new Uint8Array(112);
  const r = sys().skyfs_sys_fstatvfs(fd, raw);
  if (r < 0) failed(r, "fstatvfs", fd);
  return parseStatVfs(raw);
}

/** The fields of struct stat that skyfs uses (x86_64 layout, 144 bytes). */
export interface Stat {
  dev: number;
  ino: number;
  nlink: number;
  mode: number;
  uid: number;
  gid: number;
  rdev: number;
  size: number;
  blksize: number;
  /** 512-byte blocks allocated. */
  blocks: number;
  atimeSec: number;
  atimeNsec: number;
  mtimeSec: number;
  mtimeNsec: number;
}

/** One struct stat for every call: the calls are synchronous on the one JS thread, and the fields
 * are copied out before anything else can use it (a fresh buffer and BigInt reads cost more than
 * the syscall). */
const statBuffer = new Uint8Array(144);
const statView = new DataView(statBuffer.buffer);

/** Offset of st_blocks in `struct stat` (x86-64). */
const ST_BLOCKS = 64;

/** The signed 64-bit field of `statBuffer` at `at`: every one used fits in 53 bits, so two 32-bit
 * halves are exact. */
function statI64(at: number): number {
  return statView.getInt32(at + 4, true) * 2 ** 32 + statView.getUint32(at, true);
}

function parseStat(): Stat {
  const view = statView;
  const u64 = (at: number) => view.getUint32(at + 4, true) * 2 ** 32 + view.getUint32(at, true);
  const i64 = statI64;
  return {
    dev: u64(0),
    ino: u64(8),
    nlink: u64(16),
    mode: view.getUint32(24, true),
    uid: view.getUint32(28, true),
    gid: view.getUint32(32, true),
    rdev: u64(40),
    size: i64(48),
    blksize: i64(56),
    blocks: i64(ST_BLOCKS),
    atimeSec: i64(72),
    atimeNsec: i64(80),
    mtimeSec: i64(88),
    mtimeNsec: i64(96),
  };
}

const UTIME_OMIT = (1 << 30) - 2;
const timesBuffer = new BigInt64Array(4);

/** futimens(2) of the access time only (the modification time is left as it is). */
export function setAtime(fd: number, sec: number, nsec: number): void {
  timesBuffer[0] = BigInt(sec);
  timesBuffer[1] = BigInt(nsec);
  timesBuffer[2] = 0n;
  timesBuffer[3] = BigInt(UTIME_OMIT);
  const bytes = new Uint8Array(timesBuffer.buffer);
  const r = sys().skyfs_sys_futimens(fd, bytes);
  if (r < 0) failed(r, "futimens", fd);
}

export const POLLPRI = 0x2;
export const POLLERR = 0x8;
const pollBuffer = new Uint8Array(8);
const pollView = new DataView(pollBuffer.buffer);

/** poll(2) of one fd without waiting: the events that are ready now (0 if none). */
export function pollNow(fd: number, events: number): number {
  pollView.setInt32(0, fd, true);
  pollView.setInt16(4, events, true);
  pollView.setInt16(6, 0, true);
  const r = sys().skyfs_sys_poll(pollBuffer, 1n, 0);
  if (r < 0) failed(r, "poll", fd);
  return pollView.getUint16(6, true);
}

export const LOCK_EX = 2;
export const LOCK_NB = 4;

/** flock(2); throws FsError (EWOULDBLOCK is EAGAIN) when the lock is held elsewhere. */
export function flock(fd: number, operation: number): void {
  const r = sys().skyfs_sys_flock(fd, operation);
  if (r < 0) failed(r, "flock", fd);
}

export function fstat(fd: number): Stat {
  const r = sys().skyfs_sys_fstat(fd, statBuffer);
  if (r < 0) failed(r, "fstat", fd);
  return parseStat();
}

export function stat(path: string): Stat {
  const r = sys().skyfs_sys_stat(cString(path), statBuffer);
  if (r < 0) failed(r, "stat", JSON.stringify(path));
  return parseStat();
}

/** The path of a NUL-terminated C string, for error messages only. */
function showC(path: Uint8Array): string {
  const end = path.indexOf(0);
  return JSON.stringify(new TextDecoder().decode(path.subarray(0, end < 0 ? undefined : end)));
}

/**
 * stat(2) of a path already encoded as a NUL-terminated C string (`path` must end in a 0 byte):
 * the direct C call without a string encoded and a buffer allocated per call, for paths built
 * once into a reused buffer (LocalStore's local files). On failure, throws FsError(errno) unless
 * the errno is `quiet`'s, which returns undefined (a missing file is no error there).
 */
export function statC(path: Uint8Array, quiet?: number): Stat | undefined {
  return statIntoBuffer(path, quiet) ? parseStat() : undefined;
}

/** stat(2) of C string `path` into `statBuffer`; false when it failed with `quiet`'s errno. */
function statIntoBuffer(path: Uint8Array, quiet?: number): boolean {
  const r = sys().skyfs_sys_stat(buf(path), statBuffer);
  if (r < 0) {
    if (-r === quiet) return false;
    failed(r, "stat", showC(path));
  }
  return true;
}

/**
 * `statC(path, quiet)?.blocks` without the `Stat` object (15 fields, 0.4-0.5 KB of heap per call):
 * st_blocks of a closed local file is all a GETATTR, LOOKUP or READDIRPLUS entry needs of it.
 */
export function statBlocksC(path: Uint8Array, quiet?: number): number | undefined {
  return statIntoBuffer(path, quiet) ? statI64(ST_BLOCKS) : undefined;
}

/** `fstat(fd).blocks` without the `Stat` object (see `statBlocksC`): a kept local fd's GETATTR. */
export function fstatBlocks(fd: number): number {
  const r = sys().skyfs_sys_fstat(fd, statBuffer);
  if (r < 0) failed(r, "fstat", fd);
  return statI64(ST_BLOCKS);
}

/** open(2) of a NUL-terminated C string path (see `statC`), with O_CLOEXEC. */
export function openC(path: Uint8Array, flags: number, mode = 0o600): number {
  const fd = sys().skyfs_sys_open(buf(path), flags | O_CLOEXEC, mode);
  if (fd < 0) failed(fd, "open", showC(path));
  return fd;
}

/** unlink(2) of a NUL-terminated C string path (see `statC`). */
export function unlinkC(path: Uint8Array): void {
  const r = sys().skyfs_sys_unlink(buf(path));
  if (r < 0) failed(r, "unlink", showC(path));
}

/** rename(2) of NUL-terminated C string paths (see `statC`). */
export function renameC(from: Uint8Array, to: Uint8Array): void {
  const r = sys().skyfs_sys_rename(buf(from), buf(to));
  if (r < 0) failed(r, "rename", `${showC(from)}, ${showC(to)}`);
}

export function unlink(path: string): void {
  const r = sys().skyfs_sys_unlink(cString(path));
  if (r < 0) failed(r, "unlink", JSON.stringify(path));
}

export function rename(from: string, to: string): void {
  const r = sys().skyfs_sys_rename(cString(from), cString(to));
  if (r < 0) failed(r, "rename", `${JSON.stringify(from)}, ${JSON.stringify(to)}`);
}

export const PROT_READ = 0x1;
export const PROT_WRITE = 0x2;
export const MAP_SHARED = 0x01;

/** A shared mapping of `length` bytes of a file from offset 0 (see `mapShared`). */
export interface SharedMapping {
  readonly pointer: Deno.PointerObject;
  /** The mapped bytes: a store into them is a store into the file's page cache. */
  readonly bytes: Uint8Array<ArrayBuffer>;
}

/**
 * mmap(2) `length` bytes of `fd` (open read-write) with PROT_READ|PROT_WRITE and MAP_SHARED.
 * Bytes copied into the mapping are in the kernel's page cache when the copy ends, so they
 * survive the death of this process (not power loss: fdatasync the file for that). The mapping
 * may reach past the end of the file, but touching a page past it raises SIGBUS: grow the file
 * (fallocate) before storing there.
 */
export function mapShared(fd: number, length: number): SharedMapping {
  const error = new Int32Array(1);
  const pointer = sys().skyfs_sys_mmap(
    BigInt(length),
    PROT_READ | PROT_WRITE,
    MAP_SHARED,
    fd,
    0n,
    new Uint8Array(error.buffer),
  );
  if (pointer === null) failed(error[0], "mmap", `${fd}, ${length}`);
  const bytes = new Uint8Array(Deno.UnsafePointerView.getArrayBuffer(pointer, length));
  return { pointer, bytes };
}

/** munmap(2) a mapping from `mapShared`; its `bytes` must not be touched afterwards. */
export function unmap(mapping: SharedMapping): void {
  const r = sys().skyfs_sys_munmap(mapping.pointer, BigInt(mapping.bytes.byteLength));
  if (r < 0) failed(r, "munmap", mapping.bytes.byteLength);
}
