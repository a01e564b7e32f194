/**
 * FUSE adapters for names and attributes: lookup, forget, getattr, setattr, mknod, mkdir,
 * symlink, readlink, unlink, rmdir, rename, link. Each decodes its arguments, calls the Vfs,
 * and encodes the reply; errno crosses into the wire only in server.ts.
 * @module
 */

import { Errno } from "../fs_error.ts";
import type { Attr, SetattrChanges } from "../vfs/types.ts";
import type { Handler, OpContext } from "./server.ts";
import {
  attrReply,
  cstrings,
  dataReply,
  decodeBatchForget,
  decodeSetattrIn,
  entryReply,
  Fattr,
  GETATTR_FH,
  Opcode,
  type Request,
  statusReply,
  u64,
} from "./wire.ts";

/** LOOKUP and GETATTR answer without a promise when the Vfs has what they need in memory
 * (`lookupCached`, `getattrCached`): the server then writes the reply in the same call
 * (src/fuse/README.md, "Daemon CPU per request"). */
const lookup: Handler = (op, req) => {
  const [name] = cstrings(req.body, 0, 1);
  const cached = op.vfs.lookupCached?.(op.ctx, req.header.nodeid, name);
  if (cached !== undefined) return lookupReply(op, req, cached);
  return op.vfs.lookupOrNull(op.ctx, req.header.nodeid, name).then((attr) =>
    lookupReply(op, req, attr)
  );
};

function lookupReply(op: OpContext, req: Request, attr: Attr | null): Uint8Array {
  if (attr) return entryReply(attr, op.server.validityFor(attr.ino));
  // A cached negative entry saves the next lookup of a missing name (git, PATH searches); every
  // create in this directory goes through the kernel, which drops it.
  if (op.validity.entrySeconds) return entryReply(null, op.validity);
  return statusReply(req.header.unique, Errno.ENOENT);
}

const forget: Handler = (op, req) => {
  op.vfs.forget(req.header.nodeid, u64(req.view, 0));
  return null;
};

const batchForget: Handler = (op, req) => {
  for (const one of decodeBatchForget(req.view)) op.vfs.forget(one.nodeid, one.nlookup);
  return null;
};

const getattr: Handler = (op, req) => {
  const cached = op.vfs.getattrCached?.(op.ctx, req.header.nodeid);
  if (cached) return attrReply(cached, op.server.validityFor(cached.ino).attrSeconds);
  const flags = req.view.byteLength >= 16 ? req.view.getUint32(0, true) : 0;
  const fh = flags & GETATTR_FH ? u64(req.view, 8) : undefined;
  return op.vfs.getattr(op.ctx, req.header.nodeid, fh).then((attr) =>
    attrReply(attr, op.server.validityFor(attr.ino).attrSeconds)
  );
};

const UTIME_NOW = "now" as const;

const setattr: Handler = async (op, req) => {
  const s = decodeSetattrIn(req.view);
  const changes: SetattrChanges = {};
  if (s.valid & Fattr.MODE) changes.mode = s.mode;
  if (s.valid & Fattr.UID) changes.uid = s.uid;
  if (s.valid & Fattr.GID) changes.gid = s.gid;
  if (s.valid & Fattr.SIZE) changes.size = s.size;
  if (s.valid & Fattr.ATIME_NOW) changes.atime = UTIME_NOW;
  else if (s.valid & Fattr.ATIME) changes.atime = { sec: s.atime, nsec: s.atimensec };
  if (s.valid & Fattr.MTIME_NOW) changes.mtime = UTIME_NOW;
  else if (s.valid & Fattr.MTIME) changes.mtime = { sec: s.mtime, nsec: s.mtimensec };
  if (s.valid & Fattr.CTIME) changes.ctime = { sec: s.ctime, nsec: s.ctimensec };
  // With HANDLE_KILLPRIV_V2 the kernel leaves dropping set-id bits to us: FATTR_KILL_SUIDGID on
  // a truncate, and a SETATTR with nothing else to change where its own notify_change asked to
  // kill privileges (chown(-1, -1), an unprivileged write to a set-id file through passthrough).
  const asksNothing = (s.valid & ~(Fattr.FH | Fattr.LOCKOWNER)) === 0;
  if (s.valid & Fattr.KILL_SUIDGID || asksNothing) changes.killSuidgid = true;
  const fh = s.valid & Fattr.FH ? s.fh : undefined;
  const attr = await op.vfs.setattr(op.ctx, req.header.nodeid, changes, fh);
  return attrReply(attr, op.server.validityFor(attr.ino).attrSeconds);
};

const readlink: Handler = async (op, req) =>
  dataReply(await op.vfs.readlink(op.ctx, req.header.nodeid));

const mknod: Handler = async (op, req) => {
  const v = req.view;
  const [name] = cstrings(req.body, 16, 1);
  const attr = await op.vfs.mknod(
    op.ctx,
    req.header.nodeid,
    name,
    v.getUint32(0, true),
    v.getUint32(4, true),
    v.getUint32(8, true),
  );
  return entryReply(attr, op.validity);
};

const mkdir: Handler = async (op, req) => {
  const [name] = cstrings(req.body, 8, 1);
  const v = req.view;
  const attr = await op.vfs.mkdir(
    op.ctx,
    req.header.nodeid,
    name,
    v.getUint32(0, true),
    v.getUint32(4, true),
  );
  return entryReply(attr, op.validity);
};

const symlink: Handler = async (op, req) => {
  const [name, target] = cstrings(req.body, 0, 2);
  return entryReply(await op.vfs.symlink(op.ctx, req.header.nodeid, name, target), op.validity);
};

const unlink: Handler = async (op, req) => {
  await op.vfs.unlink(op.ctx, req.header.nodeid, cstrings(req.body, 0, 1)[0]);
  return statusReply(req.header.unique, 0);
};

const rmdir: Handler = async (op, req) => {
  await op.vfs.rmdir(op.ctx, req.header.nodeid, cstrings(req.body, 0, 1)[0]);
  return statusReply(req.header.unique, 0);
};

function renameWith(op: OpContext, req: Request, argsSize: number, flags: number) {
  const [name, newName] = cstrings(req.body, argsSize, 2);
  return op.vfs.rename(op.ctx, req.header.nodeid, name, u64(req.view, 0), newName, flags);
}

const rename: Handler = async (op, req) => {
  await renameWith(op, req, 8, 0);
  return statusReply(req.header.unique, 0);
};

const rename2: Handler = async (op, req) => {
  await renameWith(op, req, 16, req.view.getUint32(8, true));
  return statusReply(req.header.unique, 0);
};

const link: Handler = async (op, req) => {
  const [newName] = cstrings(req.body, 8, 1);
  const attr = await op.vfs.link(op.ctx, u64(req.view, 0), req.header.nodeid, newName);
  return entryReply(attr, op.server.validityFor(attr.ino));
};

export const entryHandlers: Record<number, Handler> = {
  [Opcode.LOOKUP]: lookup,
  [Opcode.FORGET]: forget,
  [Opcode.BATCH_FORGET]: batchForget,
  [Opcode.GETATTR]: getattr,
  [Opcode.SETATTR]: setattr,
  [Opcode.READLINK]: readlink,
  [Opcode.MKNOD]: mknod,
  [Opcode.MKDIR]: mkdir,
  [Opcode.SYMLINK]: symlink,
  [Opcode.UNLINK]: unlink,
  [Opcode.RMDIR]: rmdir,
  [Opcode.RENAME]: rename,
  [Opcode.RENAME2]: rename2,
  [Opcode.LINK]: link,
};
