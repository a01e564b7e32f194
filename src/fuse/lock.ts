/**
 * FUSE adapters for POSIX record locks (GETLK, SETLK, SETLKW) and flock (SETLK(W) with
 * FUSE_LK_FLOCK). A waiting SETLKW is aborted by FUSE_INTERRUPT through ctx.signal.
 * @module
 */

import type { Handler } from "./server.ts";
import { decodeLkIn, LK_FLOCK, lkReply, Opcode, statusReply } from "./wire.ts";

const getlk: Handler = async (op, req) => {
  const args = decodeLkIn(req.view);
  return lkReply(await op.vfs.getlk(req.header.nodeid, args.fh, args.owner, args.lock));
};

function setlkWith(wait: boolean): Handler {
  return async (op, req) => {
    const args = decodeLkIn(req.view);
    await op.vfs.setlk(op.ctx, req.header.nodeid, args.fh, args.owner, args.lock, {
      wait,
      flock: (args.lkFlags & LK_FLOCK) !== 0,
    });
    return statusReply(req.header.unique, 0);
  };
}

export const lockHandlers: Record<number, Handler> = {
  [Opcode.GETLK]: getlk,
  [Opcode.SETLK]: setlkWith(false),
  [Opcode.SETLKW]: setlkWith(true),
};
