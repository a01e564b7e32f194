/**
 * Linux's permission rules as pure functions of a caller and an inode (generic_permission,
 * check_sticky, may_linkat, the set-id clearing rules), so every access path decides alike.
 * Root (uid 0) holds every capability, as it does in the initial user namespace. Supplementary
 * groups come from `ctx.groups`, or from /proc when the caller did not supply them.
 * @module
 */

import { FsError } from "../fs_error.ts";
import type { InodeRecord } from "../meta/namespace.ts";
import type { Ctx } from "./types.ts";
import { groupsOf } from "./creds.ts";

export const S_IFMT = 0o170000;
export const S_IFSOCK = 0o140000;
export const S_IFLNK = 0o120000;
export const S_IFREG = 0o100000;
export const S_IFBLK = 0o060000;
export const S_IFDIR = 0o040000;
export const S_IFCHR = 0o020000;
export const S_IFIFO = 0o010000;
export const S_ISUID = 0o4000;
export const S_ISGID = 0o2000;
export const S_ISVTX = 0o1000;
export const S_IXGRP = 0o010;

export const R_OK = 4;
export const W_OK = 2;
export const X_OK = 1;

export const isDir = (mode: number) => (mode & S_IFMT) === S_IFDIR;
export const isReg = (mode: number) => (mode & S_IFMT) === S_IFREG;
export const isLnk = (mode: number) => (mode & S_IFMT) === S_IFLNK;

export function isRoot(ctx: Ctx): boolean {
  return ctx.uid === 0;
}

/** in_group_p: the caller's primary or a supplementary group is `gid`. */
export function inGroup(ctx: Ctx, gid: number): boolean {
  return ctx.gid === gid || groupsOf(ctx).includes(gid);
}

/** generic_permission: may `ctx` do all of `mask` (R_OK | W_OK | X_OK) on the inode? */
export function permits(ctx: Ctx, inode: InodeRecord, mask: number): boolean {
  if (isRoot(ctx)) {
    // CAP_DAC_OVERRIDE grants read and write always, search on directories, and execute on
    // anything else only if some execute bit is set.
    return !(mask & X_OK) || isDir(inode.mode) || (inode.mode & 0o111) !== 0;
  }
  // Only one class applies: an owner is judged by the owner bits even if others have more.
  let bits: number;
  if (ctx.uid === inode.uid) bits = (inode.mode >> 6) & 7;
  else if (inGroup(ctx, inode.gid)) bits = (inode.mode >> 3) & 7;
  else bits = inode.mode & 7;
  return (bits & mask) === mask;
}

/** Throw EACCES unless `permits`. */
export function checkAccess(ctx: Ctx, inode: InodeRecord, mask: number): void {
  if (!permits(ctx, inode, mask)) {
    throw new FsError(
      "EACCES",
      `uid ${ctx.uid} lacks ${maskName(mask)} on inode ${inode.ino} (mode ${
        (inode.mode & 0o7777).toString(8)
      }, owner ${inode.uid}:${inode.gid})`,
    );
  }
}

function maskName(mask: number): string {
  return (mask & R_OK ? "r" : "") + (mask & W_OK ? "w" : "") + (mask & X_OK ? "x" : "");
}

/** inode_owner_or_capable: the caller owns the inode or is root (CAP_FOWNER). */
export function isOwnerOrRoot(ctx: Ctx, inode: InodeRecord): boolean {
  return isRoot(ctx) || ctx.uid === inode.uid;
}

/** check_sticky: in a sticky directory only the entry's owner, the directory's owner or root
 * may remove or rename over an entry. */
export function checkSticky(ctx: Ctx, dir: InodeRecord, victim: InodeRecord): void {
  if (!(dir.mode & S_ISVTX) || isRoot(ctx)) return;
  if (ctx.uid === victim.uid || ctx.uid === dir.uid) return;
  throw new FsError(
    "EPERM",
    `uid ${ctx.uid} may not remove inode ${victim.ino} (owner ${victim.uid}) from sticky ` +
      `directory ${dir.ino} (owner ${dir.uid})`,
  );
}

/**
 * may_linkat with fs.protected_hardlinks = 1 (Debian's default): someone who does not own the
 * file may link it only if it is a regular file that is not set-id and that they can read and
 * write, so a user cannot pin another user's setuid binary or private file in a directory.
 */
export function checkMayLink(ctx: Ctx, inode: InodeRecord): void {
  if (isOwnerOrRoot(ctx, inode)) return;
  const setId = (inode.mode & S_ISUID) !== 0 ||
    (inode.mode & (S_ISGID | S_IXGRP)) === (S_ISGID | S_IXGRP);
  if (isReg(inode.mode) && !setId && permits(ctx, inode, R_OK | W_OK)) return;
  throw new FsError(
    "EPERM",
    `uid ${ctx.uid} may not hard-link inode ${inode.ino} owned by ${inode.uid} ` +
      `(fs.protected_hardlinks)`,
  );
}

/**
 * The mode after a write or truncate by `ctx` (file_remove_privs / should_remove_suid): a
 * caller without CAP_FSETID drops set-user-id, and set-group-id when group-execute is set (the
 * bit without group-execute marks mandatory locking, not privilege).
 */
export function modeAfterModify(ctx: Ctx, mode: number): number {
  if (isRoot(ctx) || isDir(mode)) return mode;
  return killSetId(mode);
}

/** The mode with S_ISUID and (if S_IXGRP is set) S_ISGID removed. */
export function killSetId(mode: number): number {
  let out = mode & ~S_ISUID;
  if ((mode & (S_ISGID | S_IXGRP)) === (S_ISGID | S_IXGRP)) out &= ~S_ISGID;
  return out;
}

/** Whether `mode` has a set-id bit that a write by a non-root caller would drop. */
export function hasKillableSetId(mode: number): boolean {
  return killSetId(mode) !== mode;
}
