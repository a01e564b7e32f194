/**
 * The FUSE kernel protocol as a pure codec: request bytes in, typed requests out; typed replies
 * to bytes. No I/O here. Layouts follow include/uapi/linux/fuse.h at protocol 7.45 (the running
 * kernel); Debian's header is 7.38, so the 7.39+ fields (passthrough backing_id,
 * max_stack_depth) are taken from the kernel source and documented beside each encoder.
 * @module
 */

import type { Attr, DirEntry, FileLock, StatFs } from "../vfs/types.ts";
import type { DirListing } from "../vfs/listing.ts";

export const KERNEL_VERSION = 7;
/** The minor version we speak; the kernel takes the smaller of its own and ours. */
export const KERNEL_MINOR_VERSION = 45;
export const ROOT_ID = 1;

export const IN_HEADER_SIZE = 40;
export const OUT_HEADER_SIZE = 16;

export const Opcode = {
  LOOKUP: 1,
  FORGET: 2,
  GETATTR: 3,
  SETATTR: 4,
  READLINK: 5,
  SYMLINK: 6,
  MKNOD: 8,
  MKDIR: 9,
  UNLINK: 10,
  RMDIR: 11,
  RENAME: 12,
  LINK: 13,
  OPEN: 14,
  READ: 15,
  WRITE: 16,
  STATFS: 17,
  RELEASE: 18,
  FSYNC: 20,
  SETXATTR: 21,
  GETXATTR: 22,
  LISTXATTR: 23,
  REMOVEXATTR: 24,
  FLUSH: 25,
  INIT: 26,
  OPENDIR: 27,
  READDIR: 28,
  RELEASEDIR: 29,
  FSYNCDIR: 30,
  GETLK: 31,
  SETLK: 32,
  SETLKW: 33,
  ACCESS: 34,
  CREATE: 35,
  INTERRUPT: 36,
  BMAP: 37,
  DESTROY: 38,
  IOCTL: 39,
  POLL: 40,
  NOTIFY_REPLY: 41,
  BATCH_FORGET: 42,
  FALLOCATE: 43,
  READDIRPLUS: 44,
  RENAME2: 45,
  LSEEK: 46,
  COPY_FILE_RANGE: 47,
  SETUPMAPPING: 48,
  REMOVEMAPPING: 49,
  SYNCFS: 50,
  TMPFILE: 51,
  STATX: 52,
} as const;

export const opcodeNames: ReadonlyMap<number, string> = new Map(
  Object.entries(Opcode).map(([name, value]) => [value, name]),
);

/** fuse_init_in/out `flags` (low 32 bits) and `flags2` (bit n of flags2 = 1 << (32 + n)). */
export const InitFlag = {
  ASYNC_READ: 1 << 0,
  POSIX_LOCKS: 1 << 1,
  ATOMIC_O_TRUNC: 1 << 3,
  EXPORT_SUPPORT: 1 << 4,
  BIG_WRITES: 1 << 5,
  DONT_MASK: 1 << 6,
  FLOCK_LOCKS: 1 << 10,
  AUTO_INVAL_DATA: 1 << 12,
  DO_READDIRPLUS: 1 << 13,
  READDIRPLUS_AUTO: 1 << 14,
  ASYNC_DIO: 1 << 15,
  WRITEBACK_CACHE: 1 << 16,
  PARALLEL_DIROPS: 1 << 18,
  HANDLE_KILLPRIV: 1 << 19,
  POSIX_ACL: 1 << 20,
  MAX_PAGES: 1 << 22,
  CACHE_SYMLINKS: 1 << 23,
  EXPLICIT_INVAL_DATA: 1 << 25,
  HANDLE_KILLPRIV_V2: 1 << 28,
  INIT_EXT: 1 << 30,
} as const;

export const InitFlag2 = {
  PASSTHROUGH: 1 << 5,
} as const;

/** fuse_setattr_in.valid bits. */
export const Fattr = {
  MODE: 1 << 0,
  UID: 1 << 1,
  GID: 1 << 2,
  SIZE: 1 << 3,
  ATIME: 1 << 4,
  MTIME: 1 << 5,
  FH: 1 << 6,
  ATIME_NOW: 1 << 7,
  MTIME_NOW: 1 << 8,
  LOCKOWNER: 1 << 9,
  CTIME: 1 << 10,
  KILL_SUIDGID: 1 << 11,
} as const;

/** fuse_open_out.open_flags. */
export const Fopen = {
  DIRECT_IO: 1 << 0,
  KEEP_CACHE: 1 << 1,
  NONSEEKABLE: 1 << 2,
  CACHE_DIR: 1 << 3,
  NOFLUSH: 1 << 5,
  PARALLEL_DIRECT_WRITES: 1 << 6,
  PASSTHROUGH: 1 << 7,
} as const;

export const GETATTR_FH = 1;
export const FSYNC_FDATASYNC = 1;
export const LK_FLOCK = 1;
export const RELEASE_FLUSH = 1;
export const RELEASE_FLOCK_UNLOCK = 2;
export const READ_LOCKOWNER = 2;

/** fuse_notify_code, sent with unique 0 from daemon to kernel. */
export const NotifyCode = {
  INVAL_INODE: 2,
  INVAL_ENTRY: 3,
  DELETE: 6,
  /** 7.44+: every dentry cached so far fails its next revalidation. No payload. */
  INC_EPOCH: 8,
} as const;

/** The first protocol minor whose kernels accept FUSE_NOTIFY_INC_EPOCH (Linux 6.16). */
export const INC_EPOCH_MINOR = 44;

export interface InHeader {
  len: number;
  opcode: number;
  unique: bigint;
  nodeid: number;
  uid: number;
  gid: number;
  pid: number;
  /** Bytes of request extensions after the op's arguments, in units of 8 bytes (7.38+). */
  totalExtlen: number;
}

/** A request split into its header and a view of its body (the op's arguments). */
export interface Request {
  header: InHeader;
  /** The bytes after the header, up to header.len (extensions stripped). */
  body: Uint8Array;
  /** DataView over `body`. */
  view: DataView;
}

const decoder = new TextDecoder();

/** Split `buffer` (one whole request as read from /dev/fuse) into header and body views. */
export function decodeRequest(buffer: Uint8Array): Request {
  if (buffer.byteLength < IN_HEADER_SIZE) {
    throw new RangeError(`FUSE request of ${buffer.byteLength} bytes is shorter than its header`);
  }
  const dv = new DataView(buffer.buffer, buffer.byteOffset, buffer.byteLength);
  const header: InHeader = {
    len: dv.getUint32(0, true),
    opcode: dv.getUint32(4, true),
    unique: dv.getBigUint64(8, true),
    nodeid: dv.getUint32(20, true) * 0x1_0000_0000 + dv.getUint32(16, true),
    uid: dv.getUint32(24, true),
    gid: dv.getUint32(28, true),
    pid: dv.getUint32(32, true),
    totalExtlen: dv.getUint16(36, true),
  };
  if (header.len > buffer.byteLength || header.len < IN_HEADER_SIZE) {
    throw new RangeError(`FUSE request claims ${header.len} bytes, got ${buffer.byteLength}`);
  }
  const end = header.len - header.totalExtlen * 8;
  const body = buffer.subarray(IN_HEADER_SIZE, Math.max(IN_HEADER_SIZE, end));
  return { header, body, view: new DataView(body.buffer, body.byteOffset, body.byteLength) };
}

/** The NUL-terminated byte strings at `offset` of `body` (a name, or name + target). */
export function cstrings(body: Uint8Array, offset: number, count: number): Uint8Array[] {
  const ends: number[] = [];
  let start = offset;
  for (let i = 0; i < count; i++) {
    let end = body.indexOf(0, start);
    if (end < 0) end = body.byteLength;
    ends.push(end);
    start = Math.min(end + 1, body.byteLength);
  }
  // One copy of all of them (the request's buffer is reused), viewed per string: a Uint8Array
  // of its own costs about 0.3 us to allocate, and a RENAME has two names.
  const copy = body.slice(offset, Math.max(offset, ends[count - 1] ?? offset));
  const out: Uint8Array[] = [];
  start = offset;
  for (const end of ends) {
    out.push(copy.subarray(Math.min(start, end) - offset, end - offset));
    start = end + 1;
  }
  return out;
}

/** The bytes after the first NUL-terminated string at `offset` (setxattr value follows name). */
export function afterCstring(body: Uint8Array, offset: number): number {
  const end = body.indexOf(0, offset);
  return end < 0 ? body.byteLength : end + 1;
}

/** A u64 field as a number (exact up to 2^53; two 32-bit reads, no BigInt). */
export function u64(view: DataView, offset: number): number {
  return view.getUint32(offset + 4, true) * 0x1_0000_0000 + view.getUint32(offset, true);
}

export function textOf(bytes: Uint8Array): string {
  return decoder.decode(bytes);
}

// ---- argument decoders, one per request body layout -------------------------------------------

export interface InitIn {
  major: number;
  minor: number;
  maxReadahead: number;
  flags: number;
  flags2: number;
}

export function decodeInitIn(view: DataView): InitIn {
  return {
    major: view.getUint32(0, true),
    minor: view.getUint32(4, true),
    maxReadahead: view.getUint32(8, true),
    flags: view.getUint32(12, true),
    flags2: view.byteLength >= 20 ? view.getUint32(16, true) : 0,
  };
}

export interface SetattrIn {
  valid: number;
  fh: number;
  size: number;
  lockOwner: bigint;
  atime: number;
  mtime: number;
  ctime: number;
  atimensec: number;
  mtimensec: number;
  ctimensec: number;
  mode: number;
  uid: number;
  gid: number;
}

export function decodeSetattrIn(view: DataView): SetattrIn {
  return {
    valid: view.getUint32(0, true),
    fh: u64(view, 8),
    size: u64(view, 16),
    lockOwner: view.getBigUint64(24, true),
    atime: Number(view.getBigInt64(32, true)),
    mtime: Number(view.getBigInt64(40, true)),
    ctime: Number(view.getBigInt64(48, true)),
    atimensec: view.getUint32(56, true),
    mtimensec: view.getUint32(60, true),
    ctimensec: view.getUint32(64, true),
    mode: view.getUint32(68, true),
    uid: view.getUint32(76, true),
    gid: view.getUint32(80, true),
  };
}

export interface ReadIn {
  fh: number;
  offset: number;
  size: number;
  flags: number;
}

/** fuse_read_in; also the leading fields of fuse_write_in. */
export function decodeReadIn(view: DataView): ReadIn {
  return {
    fh: u64(view, 0),
    offset: u64(view, 8),
    size: view.getUint32(16, true),
    flags: view.getUint32(32, true),
  };
}

/** Size of fuse_write_in; the data follows it. */
export const WRITE_IN_SIZE = 40;

export interface LkIn {
  fh: number;
  owner: bigint;
  lock: FileLock;
  lkFlags: number;
}

export function decodeLkIn(view: DataView): LkIn {
  return {
    fh: u64(view, 0),
    owner: view.getBigUint64(8, true),
    lock: decodeFileLock(view, 16),
    lkFlags: view.getUint32(40, true),
  };
}

function decodeFileLock(view: DataView, offset: number): FileLock {
  return {
    start: u64(view, offset),
    end: u64(view, offset + 8),
    type: view.getUint32(offset + 16, true),
    pid: view.getUint32(offset + 20, true),
  };
}

export interface CopyFileRangeIn {
  fhIn: number;
  offIn: number;
  nodeidOut: number;
  fhOut: number;
  offOut: number;
  len: number;
  flags: number;
}

export function decodeCopyFileRangeIn(view: DataView): CopyFileRangeIn {
  return {
    fhIn: u64(view, 0),
    offIn: u64(view, 8),
    nodeidOut: u64(view, 16),
    fhOut: u64(view, 24),
    offOut: u64(view, 32),
    len: u64(view, 40),
    flags: u64(view, 48),
  };
}

export interface ForgetOne {
  nodeid: number;
  nlookup: number;
}

export function decodeBatchForget(view: DataView): ForgetOne[] {
  const count = view.getUint32(0, true);
  const out: ForgetOne[] = [];
  for (let i = 0; i < count && 8 + i * 16 + 16 <= view.byteLength; i++) {
    out.push({ nodeid: u64(view, 8 + i * 16), nlookup: u64(view, 16 + i * 16) });
  }
  return out;
}

// ---- reply encoders ---------------------------------------------------------------------------
// Every encoder returns a buffer with OUT_HEADER_SIZE bytes reserved in front for the header,
// which finishReply() fills, so a reply is built and sent without another copy.

/** Replies up to this many bytes (headers, attributes, entries, opens, statfs, init) come from
 * a pool of buffers of this size. */
const SMALL_REPLY_BYTES = 256;
const smallReplies: ArrayBuffer[] = [];
/** Pooled buffers kept at most: sync replies give theirs back at once, so few are ever out. */
const SMALL_POOL_MAX = 64;

/**
 * A zeroed reply buffer with `bodySize` bytes of body after room for the out header. A small one
 * is a view of a pooled buffer that `recycleReply` takes back once the reply was written: a fresh
 * `Uint8Array` over 64 bytes is a malloc (and a free at a later GC) per request, and one of up to
 * 64 bytes lives in the JS heap until its first `.buffer` (every reply's header is written
 * through one) moves it out, a malloc too (src/fuse/README.md, "Daemon CPU per request").
 */
export function replyBuffer(bodySize: number): Uint8Array {
  const length = OUT_HEADER_SIZE + bodySize;
  if (length > SMALL_REPLY_BYTES) return new Uint8Array(length);
  const buffer = smallReplies.pop();
  if (buffer === undefined) return new Uint8Array(new ArrayBuffer(SMALL_REPLY_BYTES), 0, length);
  const reply = new Uint8Array(buffer, 0, length);
  reply.fill(0);
  return reply;
}

/** Pooled READ replies: the body of a read is at most this (max_pages x 4 KiB). */
const READ_REPLY_BYTES = OUT_HEADER_SIZE + (1 << 20);
const readReplies: ArrayBuffer[] = [];

/**
 * A reply buffer for READ, reused: a fresh 1 MiB one per read was zeroed and faulted in page by
 * page (a tenth of a cluster node's CPU in a first read, issue 13). Not zeroed: the handler must
 * send exactly the header and the bytes it read. Handed back by `recycleReply` once written.
 */
export function readReplyBuffer(bodySize: number): Uint8Array {
  if (OUT_HEADER_SIZE + bodySize > READ_REPLY_BYTES) return replyBuffer(bodySize);
  const buffer = readReplies.pop() ?? new ArrayBuffer(READ_REPLY_BYTES);
  const reply = new Uint8Array(buffer, 0, OUT_HEADER_SIZE + bodySize);
  // The header is zero until the handler's reply is finished (the server checks its length).
  reply.fill(0, 0, OUT_HEADER_SIZE);
  return reply;
}

/** After the reply was written (synchronously) to the device, or copied to its ring entry: a
 * READ reply's buffer, or a small reply's, is reused. Nothing may keep a reply after this. */
export function recycleReply(reply: Uint8Array): void {
  const buffer = reply.buffer;
  if (!(buffer instanceof ArrayBuffer)) return;
  if (buffer.byteLength === SMALL_REPLY_BYTES) {
    if (smallReplies.length < SMALL_POOL_MAX && !smallReplies.includes(buffer)) {
      smallReplies.push(buffer);
    }
    return;
  }
  if (buffer.byteLength !== READ_REPLY_BYTES) return;
  if (readReplies.length < 64 && !readReplies.includes(buffer)) readReplies.push(buffer);
}

/** Fill the out header of `reply` in place; `error` is 0 or a negative errno. */
export function finishReply(reply: Uint8Array, unique: bigint, error: number): Uint8Array {
  const dv = new DataView(reply.buffer, reply.byteOffset, OUT_HEADER_SIZE);
  dv.setUint32(0, reply.byteLength, true);
  dv.setInt32(4, error, true);
  dv.setBigUint64(8, unique, true);
  return reply;
}

/** A bodiless reply: success (error 0) or a failure (positive errno given). */
export function statusReply(unique: bigint, errno: number): Uint8Array {
  return finishReply(replyBuffer(0), unique, -errno);
}

export const ATTR_SIZE = 88;
export const ENTRY_OUT_SIZE = 40 + ATTR_SIZE;
export const ATTR_OUT_SIZE = 16 + ATTR_SIZE;
export const OPEN_OUT_SIZE = 16;

/**
 * A 64-bit field from a number (an integer of at most 53 bits, negative too) as two 32-bit
 * halves: `setBigInt64(BigInt(n))` allocates a BigInt per field, seven to nine per attribute.
 */
export function setI64(dv: DataView, offset: number, n: number): void {
  const high = Math.floor(n / 0x1_0000_0000);
  dv.setUint32(offset, n - high * 0x1_0000_0000, true);
  dv.setInt32(offset + 4, high, true);
}

/** struct fuse_attr. */
export function encodeAttr(dv: DataView, offset: number, attr: Attr): void {
  setI64(dv, offset, attr.ino);
  setI64(dv, offset + 8, attr.size);
  setI64(dv, offset + 16, attr.blocks);
  setI64(dv, offset + 24, attr.atime.sec);
  setI64(dv, offset + 32, attr.mtime.sec);
  setI64(dv, offset + 40, attr.ctime.sec);
  dv.setUint32(offset + 48, attr.atime.nsec, true);
  dv.setUint32(offset + 52, attr.mtime.nsec, true);
  dv.setUint32(offset + 56, attr.ctime.nsec, true);
  dv.setUint32(offset + 60, attr.mode, true);
  dv.setUint32(offset + 64, attr.nlink, true);
  dv.setUint32(offset + 68, attr.uid, true);
  dv.setUint32(offset + 72, attr.gid, true);
  dv.setUint32(offset + 76, attr.rdev, true);
  dv.setUint32(offset + 80, attr.blksize, true);
  dv.setUint32(offset + 84, 0, true);
}

/** Cache validity in seconds for entries and attributes. */
export interface Validity {
  entrySeconds: number;
  attrSeconds: number;
}

function setValid(dv: DataView, offset: number, nsecOffset: number, seconds: number): void {
  const whole = Math.floor(seconds);
  setI64(dv, offset, whole);
  dv.setUint32(nsecOffset, Math.round((seconds - whole) * 1e9), true);
}

/** struct fuse_entry_out at `offset`. A null attr encodes a negative entry (nodeid 0). */
export function encodeEntryOut(
  dv: DataView,
  offset: number,
  attr: Attr | null,
  validity: Validity,
  generation = 0,
): void {
  setI64(dv, offset, attr?.ino ?? 0);
  setI64(dv, offset + 8, generation);
  setValid(dv, offset + 16, offset + 32, validity.entrySeconds);
  setValid(dv, offset + 24, offset + 36, attr ? validity.attrSeconds : 0);
  if (attr) encodeAttr(dv, offset + 40, attr);
}

export function entryReply(attr: Attr | null, validity: Validity): Uint8Array {
  const reply = replyBuffer(ENTRY_OUT_SIZE);
  encodeEntryOut(viewOf(reply), OUT_HEADER_SIZE, attr, validity);
  return reply;
}

/** struct fuse_attr_out. */
export function attrReply(attr: Attr, attrSeconds: number): Uint8Array {
  const reply = replyBuffer(ATTR_OUT_SIZE);
  const dv = viewOf(reply);
  setValid(dv, OUT_HEADER_SIZE, OUT_HEADER_SIZE + 8, attrSeconds);
  encodeAttr(dv, OUT_HEADER_SIZE + 16, attr);
  return reply;
}

export interface OpenOut {
  fh: number;
  openFlags: number;
  /** Passthrough backing id from FUSE_DEV_IOC_BACKING_OPEN (7.40: the former padding). */
  backingId?: number;
}

/** struct fuse_open_out at `offset`. */
export function encodeOpenOut(dv: DataView, offset: number, open: OpenOut): void {
  setI64(dv, offset, open.fh);
  dv.setUint32(offset + 8, open.openFlags, true);
  dv.setInt32(offset + 12, open.backingId ?? 0, true);
}

export function openReply(open: OpenOut): Uint8Array {
  const reply = replyBuffer(OPEN_OUT_SIZE);
  encodeOpenOut(viewOf(reply), OUT_HEADER_SIZE, open);
  return reply;
}

/** CREATE's reply: fuse_entry_out followed by fuse_open_out. */
export function createReply(attr: Attr, validity: Validity, open: OpenOut): Uint8Array {
  const reply = replyBuffer(ENTRY_OUT_SIZE + OPEN_OUT_SIZE);
  const dv = viewOf(reply);
  encodeEntryOut(dv, OUT_HEADER_SIZE, attr, validity);
  encodeOpenOut(dv, OUT_HEADER_SIZE + ENTRY_OUT_SIZE, open);
  return reply;
}

/** fuse_write_out (also COPY_FILE_RANGE's reply). */
export function writeReply(size: number): Uint8Array {
  const reply = replyBuffer(8);
  viewOf(reply).setUint32(OUT_HEADER_SIZE, size, true);
  return reply;
}

/** fuse_statfs_out (struct fuse_kstatfs). */
export function statfsReply(st: StatFs): Uint8Array {
  const reply = replyBuffer(80);
  const dv = viewOf(reply);
  const o = OUT_HEADER_SIZE;
  dv.setBigUint64(o, BigInt(st.blocks), true);
  dv.setBigUint64(o + 8, BigInt(st.bfree), true);
  dv.setBigUint64(o + 16, BigInt(st.bavail), true);
  dv.setBigUint64(o + 24, BigInt(st.files), true);
  dv.setBigUint64(o + 32, BigInt(st.ffree), true);
  dv.setUint32(o + 40, st.bsize, true);
  dv.setUint32(o + 44, st.namelen, true);
  dv.setUint32(o + 48, st.frsize, true);
  return reply;
}

/** fuse_getxattr_out: the size a value or name list would need (when asked with size 0). */
export function xattrSizeReply(size: number): Uint8Array {
  const reply = replyBuffer(8);
  viewOf(reply).setUint32(OUT_HEADER_SIZE, size, true);
  return reply;
}

/** A reply whose body is `data` as is (READ, READLINK, GETXATTR, LISTXATTR). */
export function dataReply(data: Uint8Array): Uint8Array {
  const reply = replyBuffer(data.byteLength);
  reply.set(data, OUT_HEADER_SIZE);
  return reply;
}

/** The kernel's largest file offset (LLONG_MAX): a lock's end meaning "to end of file". */
export const OFFSET_MAX = 0x7fffffffffffffffn;

/** fuse_lk_out. */
export function lkReply(lock: FileLock): Uint8Array {
  const reply = replyBuffer(24);
  const dv = viewOf(reply);
  dv.setBigUint64(OUT_HEADER_SIZE, BigInt(lock.start), true);
  // The Vfs says "to end of file" with MAX_SAFE_INTEGER or more; the kernel with OFFSET_MAX.
  const end = lock.end >= Number.MAX_SAFE_INTEGER ? OFFSET_MAX : BigInt(lock.end);
  dv.setBigUint64(OUT_HEADER_SIZE + 8, end, true);
  dv.setUint32(OUT_HEADER_SIZE + 16, lock.type, true);
  dv.setUint32(OUT_HEADER_SIZE + 20, lock.pid, true);
  return reply;
}

/** fuse_lseek_out. */
export function lseekReply(offset: number): Uint8Array {
  const reply = replyBuffer(8);
  viewOf(reply).setBigUint64(OUT_HEADER_SIZE, BigInt(offset), true);
  return reply;
}

export interface InitOut {
  minor: number;
  maxReadahead: number;
  flags: number;
  flags2: number;
  maxBackground: number;
  congestionThreshold: number;
  maxWrite: number;
  timeGran: number;
  maxPages: number;
  /** 7.40: how many stacked file systems a passthrough backing file may sit on. */
  maxStackDepth: number;
}

/** fuse_init_out, 64 bytes at 7.45 (7.40 added max_stack_depth at byte 36). */
export function initReply(init: InitOut): Uint8Array {
  const reply = replyBuffer(64);
  const dv = viewOf(reply);
  const o = OUT_HEADER_SIZE;
  dv.setUint32(o, KERNEL_VERSION, true);
  dv.setUint32(o + 4, init.minor, true);
  dv.setUint32(o + 8, init.maxReadahead, true);
  dv.setUint32(o + 12, init.flags >>> 0, true);
  dv.setUint16(o + 16, init.maxBackground, true);
  dv.setUint16(o + 18, init.congestionThreshold, true);
  dv.setUint32(o + 20, init.maxWrite, true);
  dv.setUint32(o + 24, init.timeGran, true);
  dv.setUint16(o + 28, init.maxPages, true);
  dv.setUint32(o + 32, init.flags2 >>> 0, true);
  dv.setUint32(o + 36, init.maxStackDepth, true);
  return reply;
}

const DIRENT_HEADER_SIZE = 24;

function align8(n: number): number {
  return (n + 7) & ~7;
}

/** Bytes one entry takes in a READDIR (plus = false) or READDIRPLUS reply. */
export function direntSize(nameLength: number, plus: boolean): number {
  return (plus ? ENTRY_OUT_SIZE : 0) + align8(DIRENT_HEADER_SIZE + nameLength);
}

/**
 * Pack directory entries into a READDIR(PLUS) reply of at most `maxSize` body bytes. Returns the
 * reply and how many entries fit; the caller must count a lookup for each packed plus entry
 * (except "." and ".."), since the kernel now holds a reference to it.
 */
export function direntReply(
  entries: DirEntry[],
  maxSize: number,
  plus: boolean,
  validity: Validity | ((ino: number) => Validity),
): { reply: Uint8Array; packed: number } {
  const validityOf = typeof validity === "function" ? validity : () => validity;
  let size = 0;
  let packed = 0;
  for (const entry of entries) {
    const next = size + direntSize(entry.name.byteLength, plus);
    if (next > maxSize) break;
    size = next;
    packed++;
  }
  const reply = replyBuffer(size);
  const dv = viewOf(reply);
  let offset = OUT_HEADER_SIZE;
  for (let i = 0; i < packed; i++) {
    const entry = entries[i];
    if (plus) {
      const isDot = isDotOrDotDot(entry.name);
      // "." and ".." carry no entry: the kernel must not take a reference to them.
      const attr = isDot ? null : entry.attr ?? null;
      encodeEntryOut(dv, offset, attr, isDot ? noCache : validityOf(entry.ino));
      if (isDot) dv.setBigUint64(offset, 0n, true);
      offset += ENTRY_OUT_SIZE;
    }
    dv.setBigUint64(offset, BigInt(entry.ino), true);
    dv.setBigUint64(offset + 8, BigInt(entry.nextOffset), true);
    dv.setUint32(offset + 16, entry.name.byteLength, true);
    dv.setUint32(offset + 20, (entry.type >>> 12) & 0xf, true);
    reply.set(entry.name, offset + DIRENT_HEADER_SIZE);
    offset += align8(DIRENT_HEADER_SIZE + entry.name.byteLength);
  }
  return { reply, packed };
}

/**
 * READDIR from a listing: the run of records from entry `from` that fits in `maxSize` bytes,
 * copied as they are (`DirListing` keeps them in `struct fuse_dirent` layout).
 */
export function listingReply(listing: DirListing, from: number, maxSize: number): Uint8Array {
  const start = listing.starts[from];
  const end = listing.starts[listing.fit(from, maxSize)];
  const reply = replyBuffer(end - start);
  reply.set(listing.bytes.subarray(start, end), OUT_HEADER_SIZE);
  return reply;
}

/**
 * READDIRPLUS from a listing: entries from `from` on, one per element of `attrs` (null: an
 * entry_out of zeros, node id 0, which the kernel reads as "nothing to prime": "." and "..", and
 * inodes it holds; undefined: the entry is left out), each entry_out followed by the entry's
 * record as the listing has it. The caller sized `attrs` to fit `maxSize`.
 */
export function listingPlusReply(
  listing: DirListing,
  from: number,
  attrs: (Attr | null | undefined)[],
  validityOf: (ino: number) => Validity,
): Uint8Array {
  let size = 0;
  for (let k = 0; k < attrs.length; k++) {
    if (attrs[k] === undefined) continue;
    size += ENTRY_OUT_SIZE + listing.starts[from + k + 1] - listing.starts[from + k];
  }
  const reply = replyBuffer(size);
  const dv = viewOf(reply);
  let offset = OUT_HEADER_SIZE;
  for (let k = 0; k < attrs.length; k++) {
    const attr = attrs[k];
    if (attr === undefined) continue;
    if (attr !== null) encodeEntryOut(dv, offset, attr, validityOf(attr.ino));
    offset += ENTRY_OUT_SIZE;
    const start = listing.starts[from + k];
    const end = listing.starts[from + k + 1];
    reply.set(listing.bytes.subarray(start, end), offset);
    offset += end - start;
  }
  return reply;
}

const noCache: Validity = { entrySeconds: 0, attrSeconds: 0 };

export function isDotOrDotDot(name: Uint8Array): boolean {
  return (name.length === 1 && name[0] === 0x2e) ||
    (name.length === 2 && name[0] === 0x2e && name[1] === 0x2e);
}

/** A FUSE_NOTIFY_INVAL_INODE message: drop cached attributes and pages [offset, offset+length). */
export function notifyInvalInode(ino: number, offset: number, length: number): Uint8Array {
  const message = replyBuffer(24);
  const dv = viewOf(message);
  dv.setBigUint64(OUT_HEADER_SIZE, BigInt(ino), true);
  dv.setBigInt64(OUT_HEADER_SIZE + 8, BigInt(offset), true);
  dv.setBigInt64(OUT_HEADER_SIZE + 16, BigInt(length), true);
  return finishNotify(message, NotifyCode.INVAL_INODE);
}

/** A FUSE_NOTIFY_INVAL_ENTRY message: drop the cached dentry `name` in `parent`. */
export function notifyInvalEntry(parent: number, name: Uint8Array): Uint8Array {
  const message = replyBuffer(16 + name.byteLength + 1);
  const dv = viewOf(message);
  dv.setBigUint64(OUT_HEADER_SIZE, BigInt(parent), true);
  dv.setUint32(OUT_HEADER_SIZE + 8, name.byteLength, true);
  message.set(name, OUT_HEADER_SIZE + 16);
  return finishNotify(message, NotifyCode.INVAL_ENTRY);
}

/**
 * A FUSE_NOTIFY_INC_EPOCH message: the kernel bumps its connection epoch, and every dentry looked
 * up before it (negative ones too) is looked up again at its next use. The kernel takes no lock
 * for it (an atomic increment), unlike INVAL_ENTRY, which waits for the parent directory's lock.
 */
export function notifyIncEpoch(): Uint8Array {
  return finishNotify(replyBuffer(0), NotifyCode.INC_EPOCH);
}

function finishNotify(message: Uint8Array, code: number): Uint8Array {
  const dv = viewOf(message);
  dv.setUint32(0, message.byteLength, true);
  dv.setInt32(4, code, true); // notifications put the code in the error field, unique = 0
  dv.setBigUint64(8, 0n, true);
  return message;
}

function viewOf(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}
