/**
 * FUSE adapters for open files: open, create, read, write, flush, release, fsync, fallocate,
 * lseek and copy_file_range.
 * @module
 */

import { Errno, FsError } from "../fs_error.ts";
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
 */
function openOut(op: OpContext, ino: number, result: OpenResult): OpenOut {
  if (op.server.negotiated?.passthrough) {
    const backingId = op.server.backing.open(ino, result.fh, result.backingFd);
    if (backingId !== undefined) {
      op.server.counters.passthroughOpens++;
      return { fh: result.fh, openFlags: Fopen.PASSTHROUGH, backingId };
    }
  }
  let openFlags = 0;
  if (result.directIo) openFlags |= Fopen.DIRECT_IO;
  else if (result.keepCache) openFlags |= Fopen.KEEP_CACHE;
  return { fh: result.fh, openFlags };
}

/** Undo an open whose reply cannot be built (the kernel never saw the handle). */
async function abandon(op: OpContext, ino: number, fh: number): Promise<never> {
  await op.vfs.release(ino, fh, 0);
  throw new FsError(Errno.EIO, `cannot register passthrough backing file of inode ${ino}`);
}

const open: Handler = async (op, req) => {
  const flags = req.view.getUint32(0, true);
  const ino = req.header.nodeid;
  const result = await op.vfs.open(op.ctx, ino, flags);
  try {
    return openReply(openOut(op, ino, result));
  } catch {
    return await abandon(op, ino, result.fh);
  }
};

const create: Handler = async (op, req) => {
  const v = req.view;
  const [name] = cstrings(req.body, 16, 1);
  const result = await op.vfs.create(
    op.ctx,
    req.header.nodeid,
    name,
    v.getUint32(4, true),
    v.getUint32(8, true),
    v.getUint32(0, true),
  );
  try {
    return createReply(result.attr, op.validity, openOut(op, result.attr.ino, result));
  } catch {
    return await abandon(op, result.attr.ino, result.fh);
  }
};

const read: Handler = async (op, req) => {
  const args = decodeReadIn(req.view);
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
  const data = req.body.subarray(WRITE_IN_SIZE, WRITE_IN_SIZE + args.size);
  const written = await op.vfs.write(op.ctx, req.header.nodeid, args.fh, args.offset, data);
  op.server.counters.writeBytes += written;
  return writeReply(written);
};

const flush: Handler = async (op, req) => {
  await op.vfs.flush(op.ctx, req.header.nodeid, u64(req.view, 0), req.view.getBigUint64(16, true));
  return statusReply(req.header.unique, 0);
};

const release: Handler = async (op, req) => {
  const v = req.view;
  const releaseFlags = v.getUint32(12, true);
  const lockOwner = releaseFlags & RELEASE_FLOCK_UNLOCK ? v.getBigUint64(16, true) : undefined;
  const fh = u64(v, 0);
  op.server.backing.release(fh);
  await op.vfs.release(req.header.nodeid, fh, v.getUint32(8, true), lockOwner);
  return statusReply(req.header.unique, 0);
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
