/**
 * Linux's permission rules as pure functions of a caller and an inode (generic_permission,
 * check_sticky, may_linkat, the set-id clearing rules), so every access path decides alike.
 * Root (uid 0) holds every capability, as it does in the initial user namespace; another uid's
 * capabilities (CapEff) are read from /proc only where a check would otherwise refuse. Supplementary
 * groups come from `ctx.groups`, or from /proc when the caller did not supply them.
 * @module
 */

import { FsError } from "../fs_error.ts";
import type { InodeRecord } from "../meta/namespace.ts";
import type { Ctx } from "./types.ts";
import {
  CAP_DAC_OVERRIDE,
  CAP_DAC_READ_SEARCH,
  CAP_FOWNER,
  CAP_FSETID,
  capable,
  groupsOf,
} from "./creds.ts";

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
  // CAP_DAC_OVERRIDE grants read and write always, search on directories, and execute on
  // anything else only if some execute bit is set.
  const override = () => !(mask & X_OK) || isDir(inode.mode) || (inode.mode & 0o111) !== 0;
  if (isRoot(ctx)) return override();
  // Only one class applies: an owner is judged by the owner bits even if others have more.
  let bits: number;
  if (ctx.uid === inode.uid) bits = (inode.mode >> 6) & 7;
  else if (inGroup(ctx, inode.gid)) bits = (inode.mode >> 3) & 7;
  else bits = inode.mode & 7;
  if ((bits & mask) === mask) return true;
  // capable_wrt_inode_uidgid: a non-root caller may hold the capabilities itself.
  if (capable(ctx, CAP_DAC_OVERRIDE)) return override();
  // CAP_DAC_READ_SEARCH: read anything, search directories.
  const searchOnly = isDir(inode.mode) ? R_OK | X_OK : R_OK;
  return (mask & ~searchOnly) === 0 && capable(ctx, CAP_DAC_READ_SEARCH);
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

/** inode_owner_or_capable: the caller owns the inode or holds CAP_FOWNER (root does). */
export function isOwnerOrRoot(ctx: Ctx, inode: InodeRecord): boolean {
  return isRoot(ctx) || ctx.uid === inode.uid || capable(ctx, CAP_FOWNER);
}

/** check_sticky: in a sticky directory only the entry's owner, the directory's owner or root
 * may remove or rename over an entry. */
export function checkSticky(ctx: Ctx, dir: InodeRecord, victim: InodeRecord): void {
  if (!(dir.mode & S_ISVTX) || isRoot(ctx)) return;
  if (ctx.uid === victim.uid || ctx.uid === dir.uid || capable(ctx, CAP_FOWNER)) return;
  throw new FsError(
    "EPERM",
    `uid ${ctx.uid} may not remove inode ${victim.ino} (owner ${victim.uid}) from sticky ` +
      `directory ${dir.ino} (owner ${dir.uid})`,
  );
}

/**
 * may_linkat: with fs.protected_hardlinks = 1 (Debian's default; read from /proc/sys, so 0 lifts
 * the rule as it does for the kernel) someone who neither owns the file nor holds CAP_FOWNER may
 * link it only if it is a safe source (safe_hardlink_source): a regular file that is not
 * set-user-id nor executable set-group-id and that they may read and write (with
 * CAP_DAC_OVERRIDE counting), so a user cannot pin another user's setuid binary or private file.
 */
export function checkMayLink(ctx: Ctx, inode: InodeRecord): void {
  if (isOwnerOrRoot(ctx, inode) || !protectedHardlinks()) return;
  const setId = (inode.mode & S_ISUID) !== 0 ||
    (inode.mode & (S_ISGID | S_IXGRP)) === (S_ISGID | S_IXGRP);
  if (isReg(inode.mode) && !setId && permits(ctx, inode, R_OK | W_OK)) return;
  throw new FsError(
    "EPERM",
    `uid ${ctx.uid} may not hard-link inode ${inode.ino} owned by ${inode.uid} ` +
      `(fs.protected_hardlinks)`,
  );
}

/** fs.protected_hardlinks of this machine (1 where it cannot be read: the safe side). */
function protectedHardlinks(): boolean {
  try {
    return Deno.readTextFileSync("/proc/sys/fs/protected_hardlinks").trim() !== "0";
  } catch {
    return true;
  }
}

/**
 * The mode after a write, truncate or fallocate by `ctx` (file_remove_privs ->
 * setattr_should_drop_suidgid): only regular files lose bits, and only to a caller without
 * CAP_FSETID; such a caller drops set-user-id always, and set-group-id when group-execute is
 * set or when it is not in the file's group (setattr_should_drop_sgid: a 2666 file written by
 * an outsider becomes 0666, as on ext4).
 */
export function modeAfterModify(ctx: Ctx, inode: { mode: number; gid: number }): number {
  const mode = inode.mode;
  if (isRoot(ctx) || !isReg(mode)) return mode;
  let out = mode & ~S_ISUID;
  if (mode & S_ISGID && (mode & S_IXGRP || !inGroup(ctx, inode.gid))) out &= ~S_ISGID;
  return out === mode || capable(ctx, CAP_FSETID) ? mode : out;
}

/** The mode with S_ISUID and (if S_IXGRP is set) S_ISGID removed. */
export function killSetId(mode: number): number {
  let out = mode & ~S_ISUID;
  if ((mode & (S_ISGID | S_IXGRP)) === (S_ISGID | S_IXGRP)) out &= ~S_ISGID;
  return out;
}

/** Whether some writer's write would drop a bit of `mode` (any set-id bit of a regular file:
 * set-group-id without group-execute drops too when the writer is outside the file's group). */
export function hasKillableSetId(mode: number): boolean {
  return isReg(mode) && (mode & (S_ISUID | S_ISGID)) !== 0;
}
