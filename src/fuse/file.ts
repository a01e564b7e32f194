/**
 * FUSE adapters for open files: open, create, read, write, flush, release, fsync, fallocate,
 * lseek and copy_file_range.
 * @module
 */

import { Errno, FsError } from "../fs_error.ts";
import * as libc from "../io/libc.ts";
import { O_ACCMODE, O_RDONLY } from "../io/libc.ts";
import type { OpenResult } from "../vfs/types.ts";
import type { Handler, OpContext } from "./server.ts";
import {
  createReply,
  cstrings,
  decodeCopyFileRangeIn,
  decodeReadIn,
  Fopen,
  FSYNC_FDATASYNC,
  lseekReply,
  Opcode,
  type OpenOut,
  openReply,
  OUT_HEADER_SIZE,
  readReplyBuffer,
  RELEASE_FLOCK_UNLOCK,
  statusReply,
  u64,
  WRITE_IN_SIZE,
  writeReply,
} from "./wire.ts";

/**
 * The open reply: passthrough when negotiated and the Vfs hands out the file's local fd (the
 * kernel then reads, writes and mmaps that fd itself), else the page-cache flags. Passthrough and
 * KEEP_CACHE/DIRECT_IO exclude each other, and every open of one inode must agree with the first
 * (BackingFiles keeps that rule).
 *
 * A passthrough open on one node also gets NOFLUSH: the kernel then sends no FLUSH at each
 * close(2) of it. Such a FLUSH had nothing to do: the kernel keeps the locks, the data went to
 * the local file itself (no FUSE pages to write back), and the attributes the passthrough writes
 * changed are taken in by the next GETATTR and by RELEASE (`flush` only did that earlier). A
 * cluster node needs every FLUSH (POSIX locks of the closing owner, publishing the data).
 */
function openOut(op: OpContext, ino: number, result: OpenResult, flags: number): OpenOut {
  if (op.server.negotiated?.passthrough) {
    const writable = (flags & O_ACCMODE) !== O_RDONLY;
    // A cluster node learns which handles the kernel writes through (and may refuse one).
    if (op.server.backing.wouldPassthrough(ino, result.backingFd)) {
      op.vfs.passthroughOpened?.(ino, result.fh);
    }
    const backingId = op.server.backing.open(ino, result.fh, result.backingFd, writable);
    if (backingId !== undefined) {
      op.server.counters.passthroughOpens++;
      const noFlush = op.server.daemonLocks ? 0 : Fopen.NOFLUSH;
      return { fh: result.fh, openFlags: Fopen.PASSTHROUGH | noFlush, backingId };
    }
  }
  let openFlags = 0;
  if (result.directIo) openFlags |= Fopen.DIRECT_IO;
  else if (result.keepCache) openFlags |= Fopen.KEEP_CACHE;
  return { fh: result.fh, openFlags };
}

/** Undo an open whose reply cannot be built (the kernel never saw the handle): EIO, or the
 * Vfs's refusal of passthrough for it (`passthroughOpened`: ETXTBSY). */
async function abandon(op: OpContext, ino: number, fh: number, error: unknown): Promise<never> {
  await op.vfs.release(ino, fh, 0);
  if (error instanceof FsError && error.errno === Errno.ETXTBSY) throw error;
  throw new FsError(Errno.EIO, `cannot register passthrough backing file of inode ${ino}`);
}

/** OPEN and RELEASE answer without a promise where the Vfs needs no wait (`openCached`,
 * `releaseCached`; src/fuse/README.md, "Daemon CPU per request"). */
const open: Handler = (op, req) => {
  const flags = req.view.getUint32(0, true);
  const ino = req.header.nodeid;
  const cached = op.vfs.openCached?.(op.ctx, ino, flags);
  if (cached) return openAnswer(op, ino, cached, flags);
  return op.vfs.open(op.ctx, ino, flags).then((result) => openAnswer(op, ino, result, flags));
};

/** The OPEN reply of an opened handle, or the handle abandoned (EIO) when it cannot be made. */
function openAnswer(
  op: OpContext,
  ino: number,
  result: OpenResult,
  flags: number,
): Uint8Array | Promise<never> {
  try {
    const reply = openReply(openOut(op, ino, result, flags));
    // Before the reply: the opener's next fstat or read must not use attributes older than what
    // this open read (close-to-open on a cluster node).
    if (result.attributesStale) op.server.invalidateAttributesNow(ino);
    return reply;
  } catch (error) {
    return abandon(op, ino, result.fh, error);
  }
}

const create: Handler = async (op, req) => {
  const v = req.view;
  const [name] = cstrings(req.body, 16, 1);
  const flags = v.getUint32(0, true);
  const result = await op.vfs.create(
    op.ctx,
    req.header.nodeid,
    name,
    v.getUint32(4, true),
    v.getUint32(8, true),
    flags,
  );
  try {
    const open = openOut(op, result.attr.ino, result, flags);
    // The full attribute timeout even when this handle writes with passthrough (validityFor
    // would give 0): the inode is new, so no mapping of it can exist yet, and the kernel drops
    // what it caches here itself at the first passthrough write (size, mtime, ctime) and at the
    // first mmap (atime). A timeout of 0 made the kernel ask GETATTR right after every CREATE
    // (may_open's permission check under default_permissions).
    return createReply(result.attr, op.server.validity, open);
  } catch (error) {
    return await abandon(op, result.attr.ino, result.fh, error);
  }
};

/** O_DIRECT: the alignment ext4 asks of offset and length (the logical block size of the
 * usual disk: 512 bytes). */
const DIRECT_IO_ALIGN = 512;
/** fuse_write_in.write_flags: a write-back of cached pages, not a program's write(). */
const WRITE_CACHE = 1;

/**
 * Unaligned O_DIRECT I/O fails with EINVAL as on ext4. Without passthrough the kernel sends it to
 * the daemon like any other (the request's `flags` are the file's f_flags now, so an O_DIRECT
 * set later by fcntl counts too); with passthrough the local file's ext4 refuses it itself.
 * The program's buffer address never reaches the daemon, so only offset and length are checked.
 */
function checkDirectAlignment(args: { offset: number; size: number; flags: number }): void {
  if (!(args.flags & libc.O_DIRECT)) return;
  if (args.offset % DIRECT_IO_ALIGN !== 0 || args.size % DIRECT_IO_ALIGN !== 0) {
    throw new FsError(
      Errno.EINVAL,
      `O_DIRECT ${args.size} bytes at ${args.offset} are not ${DIRECT_IO_ALIGN}-byte aligned`,
    );
  }
}

const read: Handler = async (op, req) => {
  const args = decodeReadIn(req.view);
  checkDirectAlignment(args);
  const reply = readReplyBuffer(args.size);
  const n = await op.vfs.read(
    op.ctx,
    req.header.nodeid,
    args.fh,
    args.offset,
    reply.subarray(OUT_HEADER_SIZE),
  );
  op.server.counters.readBytes += n;
  return reply.subarray(0, OUT_HEADER_SIZE + n);
};

const write: Handler = async (op, req) => {
  const args = decodeReadIn(req.view); // fuse_write_in starts like fuse_read_in
  if (!(req.view.getUint32(20, true) & WRITE_CACHE)) checkDirectAlignment(args);
  const data = req.body.subarray(WRITE_IN_SIZE, WRITE_IN_SIZE + args.size);
  const written = await op.vfs.write(op.ctx, req.header.nodeid, args.fh, args.offset, data);
  op.server.counters.writeBytes += written;
  return writeReply(written);
};

const flush: Handler = async (op, req) => {
  await op.vfs.flush(op.ctx, req.header.nodeid, u64(req.view, 0), req.view.getBigUint64(16, true));
  return statusReply(req.header.unique, 0);
};

const release: Handler = (op, req) => {
  const v = req.view;
  const releaseFlags = v.getUint32(12, true);
  const lockOwner = releaseFlags & RELEASE_FLOCK_UNLOCK ? v.getBigUint64(16, true) : undefined;
  const fh = u64(v, 0);
  op.server.backing.release(fh);
  if (op.vfs.releaseCached?.(req.header.nodeid, fh)) return statusReply(req.header.unique, 0);
  return op.vfs.release(req.header.nodeid, fh, v.getUint32(8, true), lockOwner).then(() =>
    statusReply(req.header.unique, 0)
  );
};

const fsync: Handler = async (op, req) => {
  const datasync = (req.view.getUint32(8, true) & FSYNC_FDATASYNC) !== 0;
  await op.vfs.fsync(req.header.nodeid, u64(req.view, 0), datasync);
  return statusReply(req.header.unique, 0);
};

const fallocate: Handler = async (op, req) => {
  const v = req.view;
  await op.vfs.fallocate(
    op.ctx,
    req.header.nodeid,
    u64(v, 0),
    v.getUint32(24, true),
    u64(v, 8),
    u64(v, 16),
  );
  return statusReply(req.header.unique, 0);
};

const lseek: Handler = async (op, req) => {
  const v = req.view;
  const offset = await op.vfs.lseek(
    op.ctx,
    req.header.nodeid,
    u64(v, 0),
    u64(v, 8),
    v.getUint32(16, true),
  );
  return lseekReply(offset);
};

const copyFileRange: Handler = async (op, req) => {
  const a = decodeCopyFileRangeIn(req.view);
  const copied = await op.vfs.copyFileRange(
    op.ctx,
    { ino: req.header.nodeid, fh: a.fhIn, offset: a.offIn },
    { ino: a.nodeidOut, fh: a.fhOut, offset: a.offOut },
    a.len,
    a.flags,
  );
  return writeReply(copied);
};

export const fileHandlers: Record<number, Handler> = {
  [Opcode.OPEN]: open,
  [Opcode.CREATE]: create,
  [Opcode.READ]: read,
  [Opcode.WRITE]: write,
  [Opcode.FLUSH]: flush,
  [Opcode.RELEASE]: release,
  [Opcode.FSYNC]: fsync,
  [Opcode.FALLOCATE]: fallocate,
  [Opcode.LSEEK]: lseek,
  [Opcode.COPY_FILE_RANGE]: copyFileRange,
};
