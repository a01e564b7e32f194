/**
 * FUSE adapters for open files: open, create, read, write, flush, release, fsync, fallocate,
 * lseek and copy_file_range.
 * @module
 */

import type { OpenResult } from "../vfs/types.ts";
import type { Handler } from "./server.ts";
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
  RELEASE_FLOCK_UNLOCK,
  replyBuffer,
  statusReply,
  u64,
  WRITE_IN_SIZE,
  writeReply,
} from "./wire.ts";

function openOut(result: OpenResult): OpenOut {
  let openFlags = 0;
  if (result.directIo) openFlags |= Fopen.DIRECT_IO;
  else if (result.keepCache) openFlags |= Fopen.KEEP_CACHE;
  return { fh: result.fh, openFlags };
}

const open: Handler = async (op, req) => {
  const flags = req.view.getUint32(0, true);
  return openReply(openOut(await op.vfs.open(op.ctx, req.header.nodeid, flags)));
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
  return createReply(result.attr, op.validity, openOut(result));
};

const read: Handler = async (op, req) => {
  const args = decodeReadIn(req.view);
  const reply = replyBuffer(args.size);
  const n = await op.vfs.read(
    op.ctx,
    req.header.nodeid,
    args.fh,
    args.offset,
    reply.subarray(OUT_HEADER_SIZE),
  );
  return reply.subarray(0, OUT_HEADER_SIZE + n);
};

const write: Handler = async (op, req) => {
  const args = decodeReadIn(req.view); // fuse_write_in starts like fuse_read_in
  const data = req.body.subarray(WRITE_IN_SIZE, WRITE_IN_SIZE + args.size);
  return writeReply(await op.vfs.write(op.ctx, req.header.nodeid, args.fh, args.offset, data));
};

const flush: Handler = async (op, req) => {
  await op.vfs.flush(op.ctx, req.header.nodeid, u64(req.view, 0), req.view.getBigUint64(16, true));
  return statusReply(req.header.unique, 0);
};

const release: Handler = async (op, req) => {
  const v = req.view;
  const releaseFlags = v.getUint32(12, true);
  const lockOwner = releaseFlags & RELEASE_FLOCK_UNLOCK ? v.getBigUint64(16, true) : undefined;
  await op.vfs.release(req.header.nodeid, u64(v, 0), v.getUint32(8, true), lockOwner);
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
