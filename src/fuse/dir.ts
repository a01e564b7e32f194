/**
 * FUSE adapters for directories: opendir, readdir, readdirplus, releasedir, fsyncdir.
 * @module
 */

import type { Handler, OpContext } from "./server.ts";
import type { Attr } from "../vfs/types.ts";
import {
  decodeReadIn,
  ENTRY_OUT_SIZE,
  Fopen,
  FSYNC_FDATASYNC,
  listingPlusReply,
  listingReply,
  Opcode,
  openReply,
  type Request,
  statusReply,
  u64,
} from "./wire.ts";

/** OPENDIR and RELEASEDIR answer without a promise where the Vfs needs no wait
 * (`opendirCached`, `releasedirCached`), as OPEN and RELEASE do. */
const opendir: Handler = (op, req) => {
  const ino = req.header.nodeid;
  const flags = req.view.getUint32(0, true);
  const cached = op.vfs.opendirCached?.(op.ctx, ino, flags);
  if (cached) return opendirReply(op, cached.fh, cached.atimeDue);
  return (async () => {
    const fh = await op.vfs.opendir(op.ctx, ino, flags);
    return opendirReply(op, fh, await op.vfs.atimeDue(ino));
  })();
};

function opendirReply(op: OpContext, fh: number, atimeDue: boolean): Uint8Array {
  // The kernel may keep a directory's listing in its page cache across opens: it drops the cache
  // itself when the directory's mtime or i_version moves, which every change made through this
  // kernel does. Only when changes can come from elsewhere (cluster mode) must it ask each time.
  // A listing served from that cache never reaches the daemon: when it must move atime, the
  // cache is dropped at this open (no KEEP_CACHE), so the listing comes here.
  const openFlags = op.server.cacheDirs ? Fopen.CACHE_DIR | (atimeDue ? 0 : Fopen.KEEP_CACHE) : 0;
  return openReply({ fh, openFlags });
}

/**
 * READDIR and READDIRPLUS from the handle's listing (`DirListing`, records already in the
 * kernel's layout): READDIR is one copy of the records that fit; READDIRPLUS puts an entry_out
 * in front of each, with attributes only for inodes the kernel does not hold yet.
 */
async function readdirWith(op: OpContext, req: Request, plus: boolean) {
  const args = decodeReadIn(req.view);
  const ino = req.header.nodeid;
  const listing = await op.vfs.readdirListing(op.ctx, ino, args.fh, args.offset);
  const from = listing.first(args.offset);
  if (!plus) return listingReply(listing, from, args.size);
  const attrs: (Attr | null | undefined)[] = [];
  let size = 0;
  for (let i = from; i < listing.count; i++) {
    const bytes = ENTRY_OUT_SIZE + listing.starts[i + 1] - listing.starts[i];
    if (size + bytes > args.size) break;
    const child = listing.ino(i);
    // "." and ".." carry no entry (the kernel never instantiates them from readdirplus), nor do
    // inodes the kernel holds already; only the rest costs an inode record.
    const attr = i < 2 || op.vfs.knownToKernel(child) ? null : await op.vfs.direntAttr(child);
    attrs.push(attr);
    if (attr !== undefined) size += bytes;
  }
  const reply = listingPlusReply(listing, from, attrs, (child) => op.server.validityFor(child));
  // The kernel now holds a reference to each entry handed out with attributes (it will FORGET
  // it later).
  for (const attr of attrs) if (attr) op.vfs.remember(attr.ino);
  return reply;
}

const readdir: Handler = (op, req) => readdirWith(op, req, false);
const readdirplus: Handler = (op, req) => readdirWith(op, req, true);

const releasedir: Handler = (op, req) => {
  const fh = u64(req.view, 0);
  if (op.vfs.releasedirCached?.(req.header.nodeid, fh)) return statusReply(req.header.unique, 0);
  return op.vfs.releasedir(req.header.nodeid, fh).then(() => statusReply(req.header.unique, 0));
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
