/**
 * rename(2) and renameat2 (RENAME_NOREPLACE, RENAME_EXCHANGE) as one metadata transaction, with
 * every POSIX error case. The ancestor walk that refuses to move a directory into its own subtree
 * reads each ancestor inside the transaction, so a concurrent rename that would create a cycle
 * makes one of the two conflict and rerun instead.
 * @module
 */

import { FsError } from "../fs_error.ts";
import { type InodeRecord, ROOT_INO } from "../meta/namespace.ts";
import { type Ctx, RENAME_EXCHANGE, RENAME_NOREPLACE } from "./types.ts";
import { checkAccess, isDir, S_IFMT, W_OK } from "./perm.ts";
import { checkName, isDotOrDotDot, type OpTxn, sameName, type VfsCore } from "./core.ts";
import {
  afterUnlink,
  checkNotVolumeRoot,
  mayCreate,
  mayDelete,
  searchableDir,
  show,
} from "./entry.ts";

export async function rename(
  core: VfsCore,
  ctx: Ctx,
  parent: number,
  name: Uint8Array,
  newParent: number,
  newName: Uint8Array,
  flags: number,
): Promise<void> {
  const exchange = (flags & RENAME_EXCHANGE) !== 0;
  const noreplace = (flags & RENAME_NOREPLACE) !== 0;
  if ((flags & ~(RENAME_EXCHANGE | RENAME_NOREPLACE)) !== 0 || (exchange && noreplace)) {
    throw new FsError("EINVAL", `rename flags ${flags} are not a valid combination`);
  }
  checkName(name);
  checkName(newName);
  if (isDotOrDotDot(name) || isDotOrDotDot(newName)) {
    throw new FsError("EBUSY", 'cannot rename "." or ".."');
  }
  const outcome = await core.txn((t) =>
    renameIn(t, core, ctx, { parent, name, newParent, newName, exchange, noreplace })
  );
  // No attribute invalidation of the renamed inodes: the kernel that sent the RENAME marks their
  // ctime stale itself (fuse_rename_common: fuse_update_ctime of both, fuse_entry_unlinked of a
  // replaced one), and only the FUSE handlers call this (src/fuse/README.md, Daemon CPU per
  // request). Other nodes of a cluster learn of it through the metadata watch.
  if (outcome.replaced !== undefined) {
    await afterUnlink(core, outcome.replaced, outcome.freed, outcome.linked);
  }
}

/**
 * A volume's usage counts what is inside it, so nothing moves into, out of or between volumes:
 * EXDEV, which makes `mv` copy and delete. A volume's root itself is EBUSY (a mount point).
 */
function checkVolumes(
  srcDir: InodeRecord,
  src: InodeRecord,
  dstDir: InodeRecord,
  dst: InodeRecord | undefined,
  exchange: boolean,
): void {
  checkNotVolumeRoot(srcDir, src);
  if (dst) checkNotVolumeRoot(dstDir, dst);
  if (
    (src.volume ?? 0) !== (dstDir.volume ?? 0) ||
    (exchange && (dst!.volume ?? 0) !== (srcDir.volume ?? 0))
  ) {
    throw new FsError(
      "EXDEV",
      `cannot rename across volumes (${src.volume ?? 0} to ${dstDir.volume ?? 0})`,
    );
  }
}

interface RenameArgs {
  parent: number;
  name: Uint8Array;
  newParent: number;
  newName: Uint8Array;
  exchange: boolean;
  noreplace: boolean;
}

interface RenameOutcome {
  /** The inode that lost its name to the rename, if any. */
  replaced?: number;
  /** `replaced`'s record if the rename deleted it (else it lives on, or is an orphan). */
  freed?: InodeRecord;
  /** `replaced` keeps other names (nlink above 0). */
  linked?: boolean;
}

async function renameIn(
  t: OpTxn,
  core: VfsCore,
  ctx: Ctx,
  a: RenameArgs,
): Promise<RenameOutcome> {
  // The order of checks follows Linux (path walk, do_renameat2, vfs_rename, may_delete,
  // may_create), so that when several errors apply the same one is reported.
  const srcDir = await searchableDir(t, ctx, a.parent);
  const dstDir = a.parent === a.newParent ? srcDir : await searchableDir(t, ctx, a.newParent);
  const srcEntry = await t.tx.getDirent(a.parent, a.name);
  if (!srcEntry) throw new FsError("ENOENT", `no ${show(a.name)} in directory ${a.parent}`);
  const dstEntry = await t.tx.getDirent(a.newParent, a.newName);
  if (a.exchange && !dstEntry) {
    throw new FsError("ENOENT", `no ${show(a.newName)} in directory ${a.newParent} to exchange`);
  }
  if (a.noreplace && dstEntry) {
    throw new FsError("EEXIST", `${show(a.newName)} exists in directory ${a.newParent}`);
  }
  const src = await t.inode(srcEntry.ino);
  const dst = dstEntry ? await t.inode(dstEntry.ino) : undefined;
  const srcIsDir = isDir(src.mode);
  const dstIsDir = dst !== undefined && isDir(dst.mode);
  const moving = a.parent !== a.newParent;
  // A directory must not become its own descendant; and in an exchange neither may the other.
  if (srcIsDir && moving) await checkNotAncestor(t, src.ino, a.newParent, "EINVAL");
  if (dstIsDir && moving) {
    await checkNotAncestor(t, dst!.ino, a.parent, a.exchange ? "EINVAL" : "ENOTEMPTY");
  }
  // Renaming a name onto itself, or onto another link of the same inode, does nothing (POSIX).
  const none: RenameOutcome = {};
  if (a.parent === a.newParent && sameName(a.name, a.newName)) return none;
  if (dstEntry?.ino === srcEntry.ino) return none;

  mayDelete(ctx, srcDir, src, srcIsDir);
  checkVolumes(srcDir, src, dstDir, dst, a.exchange);
  if (!dst) mayCreate(ctx, dstDir);
  else mayDelete(ctx, dstDir, dst, a.exchange ? dstIsDir : srcIsDir);
  // Moving a directory rewrites its "..", which needs write permission on it.
  if (moving && srcIsDir) checkAccess(ctx, src, W_OK);
  if (moving && a.exchange && dstIsDir) checkAccess(ctx, dst!, W_OK);
  if (!a.exchange && dstIsDir && !(await t.tx.dirIsEmpty(dst!.ino))) {
    throw new FsError("ENOTEMPTY", `directory ${show(a.newName)} is not empty`);
  }

  const now = core.now();
  const outcome: RenameOutcome = {};
  if (a.exchange) {
    const other = dst!;
    t.tx.putDirent(a.parent, a.name, { ino: other.ino, type: other.mode & S_IFMT });
    t.tx.putDirent(a.newParent, a.newName, { ino: src.ino, type: src.mode & S_IFMT });
    if (moving) {
      if (srcIsDir) moveDir(src, srcDir, dstDir);
      if (dstIsDir) moveDir(other, dstDir, srcDir);
    }
    other.ctime = now;
    t.putInode(other);
  } else {
    t.tx.deleteDirent(a.parent, a.name);
    t.tx.putDirent(a.newParent, a.newName, { ino: src.ino, type: src.mode & S_IFMT });
    if (dst) {
      dst.ctime = now;
      if (dstIsDir) {
        dst.nlink = 0;
        dstDir.nlink--;
      } else {
        dst.nlink--;
      }
      outcome.replaced = dst.ino;
      outcome.linked = dst.nlink > 0;
      if (dst.nlink > 0) t.putInode(dst);
      else if (await t.dropInode(dst)) outcome.freed = dst;
    }
    if (moving && srcIsDir) moveDir(src, srcDir, dstDir);
  }
  // ext4 stamps ctime on the renamed inode too (it rewrites its ".." or its dirent).
  src.ctime = now;
  t.putInode(src);
  srcDir.mtime = srcDir.ctime = now;
  t.putInode(srcDir);
  if (dstDir !== srcDir) {
    dstDir.mtime = dstDir.ctime = now;
    t.putInode(dstDir);
  }
  return outcome;
}

/** A directory `dir` moves from `from` to `to`: its ".." and both link counts change. */
function moveDir(dir: InodeRecord, from: InodeRecord, to: InodeRecord): void {
  dir.parent = to.ino;
  from.nlink--;
  to.nlink++;
}

/** Throw `errno` if `ancestor` is `start` or one of `start`'s ancestors. */
async function checkNotAncestor(
  t: OpTxn,
  ancestor: number,
  start: number,
  errno: "EINVAL" | "ENOTEMPTY",
): Promise<void> {
  // Bounded: a cycle in stored parents would be corruption, not something to loop on forever.
  for (let at = start, hops = 0; hops < 100_000; hops++) {
    if (at === ancestor) {
      throw new FsError(errno, `directory ${ancestor} would move below itself`);
    }
    if (at === ROOT_INO) return;
    at = (await t.inode(at)).parent;
  }
  throw new FsError("ELOOP", `directory ${start} has no path to the root`);
}
