/**
 * FUSE adapters for directories: opendir, readdir, readdirplus, releasedir, fsyncdir.
 * @module
 */

import type { Handler, OpContext } from "./server.ts";
import {
  decodeReadIn,
  direntReply,
  direntSize,
  Fopen,
  FSYNC_FDATASYNC,
  isDotOrDotDot,
  Opcode,
  openReply,
  type Request,
  statusReply,
  u64,
} from "./wire.ts";

const opendir: Handler = async (op, req) => {
  const ino = req.header.nodeid;
  const fh = await op.vfs.opendir(op.ctx, ino, req.view.getUint32(0, true));
  // The kernel may keep a directory's listing in its page cache across opens: it drops the cache
  // itself when the directory's mtime or i_version moves, which every change made through this
  // kernel does. Only when changes can come from elsewhere (cluster mode) must it ask each time.
  // A listing served from that cache never reaches the daemon: when it must move atime, the
  // cache is dropped at this open (no KEEP_CACHE), so the listing comes here.
  const keep = !(await op.vfs.atimeDue(ino));
  const openFlags = op.server.cacheDirs ? Fopen.CACHE_DIR | (keep ? Fopen.KEEP_CACHE : 0) : 0;
  return openReply({ fh, openFlags });
};

async function readdirWith(op: OpContext, req: Request, plus: boolean) {
  const args = decodeReadIn(req.view);
  // Ask for no more entries than could fit even if every name were one byte long.
  const maxEntries = Math.max(1, Math.floor(args.size / direntSize(1, plus)));
  const entries = await op.vfs.readdir(
    op.ctx,
    req.header.nodeid,
    args.fh,
    args.offset,
    maxEntries,
    plus,
  );
  const { reply, packed } = direntReply(
    entries,
    args.size,
    plus,
    (ino) => op.server.validityFor(ino),
  );
  if (plus) {
    // The kernel now holds a reference to each packed entry (it will FORGET it later), except
    // "." and "..", which it never instantiates from readdirplus.
    for (let i = 0; i < packed; i++) {
      if (!isDotOrDotDot(entries[i].name) && entries[i].attr) op.vfs.remember(entries[i].ino);
    }
  }
  return reply;
}

const readdir: Handler = (op, req) => readdirWith(op, req, false);
const readdirplus: Handler = (op, req) => readdirWith(op, req, true);

const releasedir: Handler = async (op, req) => {
  await op.vfs.releasedir(req.header.nodeid, u64(req.view, 0));
  return statusReply(req.header.unique, 0);
};

const fsyncdir: Handler = async (op, req) => {
  const datasync = (req.view.getUint32(8, true) & FSYNC_FDATASYNC) !== 0;
  await op.vfs.fsyncdir(req.header.nodeid, u64(req.view, 0), datasync);
  return statusReply(req.header.unique, 0);
};

export const dirHandlers: Record<number, Handler> = {
  [Opcode.OPENDIR]: opendir,
  [Opcode.READDIR]: readdir,
  [Opcode.READDIRPLUS]: readdirplus,
  [Opcode.RELEASEDIR]: releasedir,
  [Opcode.FSYNCDIR]: fsyncdir,
};
