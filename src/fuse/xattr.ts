/**
 * FUSE adapters for extended attributes. GETXATTR and LISTXATTR with size 0 ask for the size
 * only; a value larger than the caller's size is ERANGE, as getxattr(2) says.
 * @module
 */

import { Errno, FsError } from "../fs_error.ts";
import type { Handler } from "./server.ts";
import {
  afterCstring,
  cstrings,
  dataReply,
  Opcode,
  type Request,
  statusReply,
  textOf,
  xattrSizeReply,
} from "./wire.ts";

/** fuse_setxattr_in without FUSE_SETXATTR_EXT (we do not negotiate it): size, flags. */
const SETXATTR_IN_SIZE = 8;
const GETXATTR_IN_SIZE = 8;

function sized(data: Uint8Array, size: number): Uint8Array {
  if (size === 0) return xattrSizeReply(data.byteLength);
  if (data.byteLength > size) throw new FsError(Errno.ERANGE);
  return dataReply(data);
}

const setxattr: Handler = async (op, req) => {
  const size = req.view.getUint32(0, true);
  const flags = req.view.getUint32(4, true);
  const [name] = cstrings(req.body, SETXATTR_IN_SIZE, 1);
  const valueStart = afterCstring(req.body, SETXATTR_IN_SIZE);
  const value = req.body.slice(valueStart, valueStart + size);
  await op.vfs.setxattr(op.ctx, req.header.nodeid, textOf(name), value, flags);
  return statusReply(req.header.unique, 0);
};

/** GETXATTR answers without a promise where the Vfs has the answer in memory (`getxattrCached`:
 * the kernel's `security.capability` question at the first write of every new file). */
const getxattr: Handler = (op, req) => {
  const [name] = cstrings(req.body, GETXATTR_IN_SIZE, 1);
  const text = textOf(name);
  const cached = op.vfs.getxattrCached?.(op.ctx, req.header.nodeid, text);
  if (cached !== undefined) return getxattrReply(req, cached);
  return op.vfs.getxattrOrNull(op.ctx, req.header.nodeid, text).then((value) =>
    getxattrReply(req, value)
  );
};

function getxattrReply(req: Request, value: Uint8Array | null): Uint8Array {
  if (!value) return statusReply(req.header.unique, Errno.ENODATA);
  return sized(value, req.view.getUint32(0, true));
}

const encoder = new TextEncoder();

const listxattr: Handler = async (op, req) => {
  const names = await op.vfs.listxattr(op.ctx, req.header.nodeid);
  const list = encoder.encode(names.map((name) => name + "\0").join(""));
  return sized(list, req.view.getUint32(0, true));
};

const removexattr: Handler = async (op, req) => {
  const [name] = cstrings(req.body, 0, 1);
  await op.vfs.removexattr(op.ctx, req.header.nodeid, textOf(name));
  return statusReply(req.header.unique, 0);
};

export const xattrHandlers: Record<number, Handler> = {
  [Opcode.SETXATTR]: setxattr,
  [Opcode.GETXATTR]: getxattr,
  [Opcode.LISTXATTR]: listxattr,
  [Opcode.REMOVEXATTR]: removexattr,
};
