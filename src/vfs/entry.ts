/**
 * Operations on names and attributes: lookup, forget, getattr, setattr, readlink, mknod, mkdir,
 * symlink, link, unlink, rmdir, access, statfs. Each change is one metadata transaction; the
 * POSIX rules (permissions, set-id inheritance and clearing, times, nlink) are applied inside it.
 * @module
 */

import { Errno, FsError } from "../fs_error.ts";
import { type InodeRecord, keys, type Timespec } from "../meta/namespace.ts";
import * as libc from "../io/libc.ts";
import type { Attr, Ctx, SetattrChanges, StatFs } from "./types.ts";
import {
  checkAccess,
  checkMayLink,
  checkSticky,
  inGroup,
  isDir,
  isLnk,
  isOwnerOrRoot,
  isReg,
  isRoot,
  killSetId,
  modeAfterModify,
  permits,
  S_IFBLK,
  S_IFCHR,
  S_IFDIR,
  S_IFIFO,
  S_IFLNK,
  S_IFMT,
  S_IFREG,
  S_IFSOCK,
  S_ISGID,
  S_ISUID,
  S_ISVTX,
  S_IXGRP,
  W_OK,
  X_OK,
} from "./perm.ts";
import {
  BLOCK_SIZE,
  checkName,
  isDotOrDotDot,
  LINK_MAX,
  MAX_FILE_SIZE,
  NAME_MAX,
  type OpTxn,
  type VfsCore,
} from "./core.ts";

/** Longest symlink target, as ext4 with 4 KiB blocks (the target and its NUL fit a block). */
const SYMLINK_MAX = 4095;

/** The entry `name` of `parent`, or null when there is none (the callers decide whether that is
 * ENOENT). */
export async function lookup(
  core: VfsCore,
  ctx: Ctx,
  parent: number,
  name: Uint8Array,
): Promise<Attr | null> {
  checkName(name);
  // "." and ".." never come from a path walk (the kernel resolves those itself): they are the
  // export operations decoding a file handle (fuse_get_dentry: "." of any inode, which must not
  // exist any more for a deleted one: ENOENT, the caller's ESTALE; fuse_get_parent: ".." of a
  // directory). Like ext4's export operations they check no permission: open_by_handle_at needs
  // CAP_DAC_READ_SEARCH.
  if (isDotOrDotDot(name)) {
    const self = await core.record(parent).catch((error) => {
      if (error instanceof FsError && error.errno === Errno.ENOENT) return null;
      throw error;
    });
    // Unlinked and not open here: deleted as far as a handle goes (its purge may still be on the
    // way, after the kernel's FORGET), as ext4 frees such an inode at its last reference.
    if (!self || (self.nlink === 0 && !(core.inodes.get(parent)?.handles ?? 0))) return null;
    if (name.length === 2 && !isDir(self.mode)) {
      throw new FsError("ENOTDIR", `inode ${parent} is not a directory`);
    }
    const ino = name.length === 1 ? parent : self.parent;
    const record = ino === parent ? self : await core.record(ino);
    core.state(ino).lookups++;
    return core.attr(record);
  }
  const dir = await core.record(parent);
  if (!isDir(dir.mode)) throw new FsError("ENOTDIR", `inode ${parent} is not a directory`);
  checkAccess(ctx, dir, X_OK);
  const dirent = await core.ns.getDirent(parent, name);
  if (!dirent) return null;
  const ino = dirent.ino;
  const record = await core.record(ino);
  core.state(ino).lookups++;
  return core.attr(record);
}

/**
 * `lookup` answered from the namespace's cache alone, without a promise: the attributes, null
 * when the name is known to be absent, undefined when the store must be asked (the caller then
 * takes `lookup`, which repeats the checks). "." and ".." always take `lookup`.
 */
export function lookupCached(
  core: VfsCore,
  ctx: Ctx,
  parent: number,
  name: Uint8Array,
): Attr | null | undefined {
  checkName(name);
  if (isDotOrDotDot(name)) return undefined;
  const dir = core.recordCached(parent);
  if (dir === undefined) return undefined;
  if (!isDir(dir.mode)) throw new FsError("ENOTDIR", `inode ${parent} is not a directory`);
  checkAccess(ctx, dir, X_OK);
  const dirent = core.ns.cachedDirent(parent, name);
  if (dirent === undefined) return undefined;
  if (dirent === null) return null;
  const attr = core.attrCached(dirent.ino);
  if (attr === undefined) return undefined;
  core.state(dirent.ino).lookups++;
  return attr;
}

/** `getattr` from the namespace's cache alone; undefined when the store must be asked. */
export function getattrCached(core: VfsCore, ino: number): Attr | undefined {
  const ghost = core.inodes.get(ino)?.ghost;
  if (ghost) return ghost;
  return core.attrCached(ino);
}

/** The kernel dropped `nlookup` references. An unlinked inode may now be freed. */
export function forget(core: VfsCore, ino: number, nlookup: number): void {
  const state = core.inodes.get(ino);
  if (!state) return;
  state.lookups = Math.max(0, state.lookups - nlookup);
  if (state.lookups > 0 || state.handles > 0) return;
  // In a cluster lookups never keep an unlinked inode (see VfsCore.isReferenced): nothing to free.
  if (core.cluster) return core.dropStateIfIdle(ino);
  // Deleted at its unlink already (`OpTxn.dropInode`): nothing to purge.
  if (state.ghost) {
    state.ghost = undefined;
    return core.dropStateIfIdle(ino);
  }
  // Runs after the count reached zero; if the inode still has links this only drops memory.
  core.purgeLater(ino);
  core.dropStateIfIdle(ino);
}

export async function getattr(core: VfsCore, ino: number): Promise<Attr> {
  const ghost = core.inodes.get(ino)?.ghost;
  if (ghost) return ghost;
  return core.attr(await core.record(ino));
}

export async function setattr(
  core: VfsCore,
  ctx: Ctx,
  ino: number,
  changes: SetattrChanges,
  fh?: number,
): Promise<Attr> {
  const handle = fh !== undefined ? core.handles.get(fh) : undefined;
  const writableHandle = handle?.kind === "file" && (handle.flags & libc.O_ACCMODE) !== 0;
  const record = await core.txn(async (t) => {
    const r = await t.inode(ino);
    const now = core.now();
    if (changes.size !== undefined) {
      if (isDir(r.mode)) throw new FsError("EISDIR", `cannot truncate directory ${ino}`);
      if (!isReg(r.mode)) throw new FsError("EINVAL", `cannot truncate non-regular inode ${ino}`);
      if (changes.size < 0) throw new FsError("EINVAL", `negative size ${changes.size}`);
      if (changes.size > MAX_FILE_SIZE) {
        throw new FsError("EFBIG", `size ${changes.size} exceeds ${MAX_FILE_SIZE}`);
      }
      // ftruncate was checked against the fd's mode by the kernel; truncate(2) needs write.
      if (!writableHandle) checkAccess(ctx, r, W_OK);
      r.mode = modeAfterModify(ctx, r);
      r.size = changes.size;
      if (core.cluster) await core.cluster.truncateInTxn(t.tx, ino, changes.size);
      // ext4 stamps mtime and ctime on every truncate, even to the same size.
      r.mtime = r.ctime = now;
    }
    if (changes.uid !== undefined || changes.gid !== undefined) chown(ctx, r, changes, now);
    if (changes.mode !== undefined) {
      if (!isOwnerOrRoot(ctx, r)) {
        throw new FsError("EPERM", `uid ${ctx.uid} may not chmod inode ${ino} (owner ${r.uid})`);
      }
      let mode = changes.mode & 0o7777;
      // Keeping S_ISGID needs membership of the file's group (or CAP_FSETID).
      if (!isRoot(ctx) && !inGroup(ctx, r.gid)) mode &= ~S_ISGID;
      r.mode = (r.mode & S_IFMT) | mode;
      r.ctime = now;
    }
    if (changes.atime !== undefined || changes.mtime !== undefined) setTimes(ctx, r, changes, now);
    if (changes.killSuidgid) {
      // A kill request stands for a chown (of a directory too: `chown dir -1 -1`) or a write,
      // all of which change ctime. chown_common drops set-user-id whoever calls, and
      // set-group-id as setattr_should_drop_sgid says; a write's request comes only from a
      // caller without CAP_FSETID, for whom the rules are the same.
      if (isReg(r.mode)) {
        r.mode &= ~S_ISUID;
        if (r.mode & S_IXGRP || (!isRoot(ctx) && !inGroup(ctx, r.gid))) r.mode &= ~S_ISGID;
      } else if (!isDir(r.mode)) {
        r.mode = killSetId(r.mode);
      }
      r.ctime = now;
    }
    if (changes.ctime) r.ctime = changes.ctime;
    t.putInode(r);
    return r;
  });
  if (changes.size !== undefined) {
    // The stored size changed first: a crash now leaves a local file that the next open cuts
    // or extends to the stored size, never data showing through past the size.
    const state = core.inodes.get(ino);
    if (state?.dirty) state.dirty.size = undefined;
    core.volumes.truncated(ino, record.size);
    await core.local.withFd(ino, record.size, (fd) => {
      libc.ftruncate(fd, record.size);
      core.local.noteOwnChange(ino);
    });
    core.cluster?.truncated(ino, record.size);
  }
  return core.attr(record);
}

function chown(ctx: Ctx, r: InodeRecord, changes: SetattrChanges, now: Timespec): void {
  const uid = changes.uid ?? r.uid;
  const gid = changes.gid ?? r.gid;
  if (!isRoot(ctx)) {
    // chown_ok / chgrp_ok: the owner may only keep the uid and pick one of its own groups.
    if (ctx.uid !== r.uid || uid !== r.uid) {
      throw new FsError("EPERM", `uid ${ctx.uid} may not chown inode ${r.ino} to ${uid}`);
    }
    if (gid !== r.gid && !inGroup(ctx, gid)) {
      throw new FsError("EPERM", `uid ${ctx.uid} is not in group ${gid}`);
    }
  }
  if (!isDir(r.mode) && changes.mode === undefined) {
    // chown_common: ATTR_KILL_SUID always, ATTR_KILL_SGID for group-executable files or for a
    // caller outside the file's group (setattr_should_drop_sgid), root included.
    let mode = r.mode & ~S_ISUID;
    const sgidKill = (r.mode & S_IXGRP) !== 0 || (!isRoot(ctx) && !inGroup(ctx, r.gid));
    if (sgidKill) mode &= ~S_ISGID;
    r.mode = mode;
  }
  r.uid = uid;
  r.gid = gid;
  r.ctime = now;
}

function setTimes(ctx: Ctx, r: InodeRecord, changes: SetattrChanges, now: Timespec): void {
  const explicit = (changes.atime !== undefined && changes.atime !== "now") ||
    (changes.mtime !== undefined && changes.mtime !== "now");
  if (explicit) {
    if (!isOwnerOrRoot(ctx, r)) {
      throw new FsError("EPERM", `uid ${ctx.uid} may not set times of inode ${r.ino}`);
    }
  } else if (!isOwnerOrRoot(ctx, r) && !permits(ctx, r, W_OK)) {
    throw new FsError("EACCES", `uid ${ctx.uid} may not touch inode ${r.ino}`);
  }
  if (changes.atime !== undefined) r.atime = changes.atime === "now" ? now : changes.atime;
  if (changes.mtime !== undefined) r.mtime = changes.mtime === "now" ? now : changes.mtime;
  r.ctime = now;
}

export async function readlink(core: VfsCore, ino: number): Promise<Uint8Array> {
  const record = await core.record(ino);
  if (!isLnk(record.mode)) throw new FsError("EINVAL", `inode ${ino} is not a symlink`);
  return record.target ?? new Uint8Array(0);
}

export interface NodeSpec {
  /** Type and permission bits, before umask. */
  mode: number;
  umask: number;
  rdev?: number;
  target?: Uint8Array;
}

/** Create a node under `parent`: one transaction writing the child, its entry and the parent. */
export async function makeNode(
  core: VfsCore,
  ctx: Ctx,
  parent: number,
  name: Uint8Array,
  spec: NodeSpec,
): Promise<InodeRecord> {
  checkName(name);
  if (isDotOrDotDot(name)) throw new FsError("EEXIST", `${show(name)} always exists`);
  const ino = await core.ns.allocIno();
  const record = await core.txn(async (t) => {
    const dir = await searchableDir(t, ctx, parent);
    if (await t.tx.getDirent(parent, name)) {
      throw new FsError("EEXIST", `${show(name)} exists in directory ${parent}`);
    }
    mayCreate(ctx, dir);
    return createIn(t, ctx, dir, name, ino, spec, core.now());
  });
  core.state(ino).lookups++;
  return record;
}

/**
 * The directory an operation names an entry in, after the checks of the path walk: a directory
 * (ENOTDIR) that the caller may search (EACCES, may_lookup). Linux checks this before it looks
 * at the entry, so it comes before ENOENT and EEXIST.
 */
export async function searchableDir(t: OpTxn, ctx: Ctx, ino: number): Promise<InodeRecord> {
  const dir = await t.dir(ino);
  checkAccess(ctx, dir, X_OK);
  return dir;
}

/** may_create: new entries need a live directory (ENOENT once removed) and write permission. */
export function mayCreate(ctx: Ctx, dir: InodeRecord): void {
  // A removed directory (still someone's cwd) takes no new entries, as on ext4.
  if (dir.nlink === 0) throw new FsError("ENOENT", `directory ${dir.ino} was removed`);
  checkAccess(ctx, dir, W_OK | X_OK);
}

/** may_delete: removing an entry needs write permission and passes the sticky rule, and the
 * entry must be of the kind the operation removes (ENOTDIR / EISDIR). */
export function mayDelete(
  ctx: Ctx,
  dir: InodeRecord,
  victim: InodeRecord,
  directory: boolean,
): void {
  checkAccess(ctx, dir, W_OK | X_OK);
  checkSticky(ctx, dir, victim);
  if (directory && !isDir(victim.mode)) {
    throw new FsError("ENOTDIR", `inode ${victim.ino} is not a directory`);
  }
  if (!directory && isDir(victim.mode)) {
    throw new FsError("EISDIR", `inode ${victim.ino} is a directory`);
  }
}

/** Inside a transaction: write a new inode `ino` named `name` in `dir` (already checked). */
export function createIn(
  t: OpTxn,
  ctx: Ctx,
  dir: InodeRecord,
  name: Uint8Array,
  ino: number,
  spec: NodeSpec,
  now: Timespec,
): InodeRecord {
  const type = spec.mode & S_IFMT;
  const directory = type === S_IFDIR;
  // inode_init_owner: a set-group-id directory gives its group, and its S_ISGID to subdirs.
  const gid = dir.mode & S_ISGID ? dir.gid : ctx.gid;
  let perm = directory ? spec.mode & 0o1777 & ~spec.umask : spec.mode & 0o7777 & ~spec.umask;
  if (directory && dir.mode & S_ISGID) perm |= S_ISGID;
  if (!directory && perm & S_ISGID && !isRoot(ctx) && !inGroup(ctx, gid)) perm &= ~S_ISGID;
  const record: InodeRecord = {
    ino,
    mode: type | perm,
    uid: ctx.uid,
    gid,
    nlink: directory ? 2 : 1,
    rdev: type === S_IFCHR || type === S_IFBLK ? spec.rdev ?? 0 : 0,
    size: directory ? 4096 : spec.target?.length ?? 0,
    parent: directory ? dir.ino : 0,
    generation: 1,
    atime: now,
    mtime: now,
    ctime: now,
    btime: now,
    target: spec.target,
  };
  // Everything made inside a volume belongs to it (its usage counts the inode and the bytes).
  if (dir.volume) record.volume = dir.volume;
  t.putInode(record);
  t.tx.putDirent(dir.ino, name, { ino, type });
  // A new inode has no xattrs and no chunk map: cached as absent, the kernel's
  // security.capability lookup at the first write and the publish at close read nothing.
  t.tx.knownAbsent(keys.xattr(ino, "security.capability"));
  if (type === S_IFREG) t.tx.knownAbsent(keys.chunkMap(ino));
  if (directory) t.tx.newDirectory(ino);
  dir.mtime = dir.ctime = now;
  if (directory) dir.nlink++;
  t.putInode(dir);
  return record;
}

export async function mknod(
  core: VfsCore,
  ctx: Ctx,
  parent: number,
  name: Uint8Array,
  mode: number,
  rdev: number,
  umask: number,
): Promise<Attr> {
  let type = mode & S_IFMT;
  if (type === 0) type = S_IFREG;
  if (![S_IFREG, S_IFIFO, S_IFSOCK, S_IFCHR, S_IFBLK].includes(type)) {
    throw new FsError("EINVAL", `mknod of type ${type.toString(8)} is not supported`);
  }
  if ((type === S_IFCHR || type === S_IFBLK) && !isRoot(ctx)) {
    throw new FsError("EPERM", `uid ${ctx.uid} may not create device nodes (needs CAP_MKNOD)`);
  }
  const record = await makeNode(core, ctx, parent, name, {
    mode: type | (mode & 0o7777),
    umask,
    rdev,
  });
  return core.attr(record);
}

export async function mkdir(
  core: VfsCore,
  ctx: Ctx,
  parent: number,
  name: Uint8Array,
  mode: number,
  umask: number,
): Promise<Attr> {
  const spec = { mode: S_IFDIR | (mode & (0o777 | S_ISVTX)), umask };
  return core.attr(await makeNode(core, ctx, parent, name, spec));
}

export async function symlink(
  core: VfsCore,
  ctx: Ctx,
  parent: number,
  name: Uint8Array,
  target: Uint8Array,
): Promise<Attr> {
  if (target.length === 0) throw new FsError("ENOENT", "empty symlink target");
  if (target.length > SYMLINK_MAX) {
    throw new FsError("ENAMETOOLONG", `symlink target of ${target.length} bytes`);
  }
  const spec = { mode: S_IFLNK | 0o777, umask: 0, target: target.slice() };
  return core.attr(await makeNode(core, ctx, parent, name, spec));
}

export async function link(
  core: VfsCore,
  ctx: Ctx,
  ino: number,
  newParent: number,
  newName: Uint8Array,
): Promise<Attr> {
  checkName(newName);
  if (isDotOrDotDot(newName)) throw new FsError("EEXIST", `${show(newName)} always exists`);
  const record = await core.txn(async (t) => {
    const child = await t.inode(ino);
    if (isDir(child.mode)) throw new FsError("EPERM", `cannot hard-link directory ${ino}`);
    const dir = await searchableDir(t, ctx, newParent);
    if (await t.tx.getDirent(newParent, newName)) {
      throw new FsError("EEXIST", `${show(newName)} exists in directory ${newParent}`);
    }
    mayCreate(ctx, dir);
    // An unlinked file cannot get a name back (only O_TMPFILE files can, with linkat).
    if (child.nlink === 0) throw new FsError("ENOENT", `inode ${ino} has been removed`);
    if (child.nlink >= LINK_MAX) throw new FsError("EMLINK", `inode ${ino} has ${LINK_MAX} links`);
    // A volume's usage counts each inode once: a link may not reach into or out of one.
    if ((child.volume ?? 0) !== (dir.volume ?? 0)) {
      throw new FsError(
        "EXDEV",
        `inode ${ino} and directory ${newParent} are in different volumes`,
      );
    }
    checkMayLink(ctx, child);
    const now = core.now();
    t.tx.putDirent(newParent, newName, { ino, type: child.mode & S_IFMT });
    child.nlink++;
    child.ctime = now;
    t.putInode(child);
    dir.mtime = dir.ctime = now;
    t.putInode(dir);
    return child;
  });
  core.state(ino).lookups++;
  return core.attr(record);
}

export async function unlink(
  core: VfsCore,
  ctx: Ctx,
  parent: number,
  name: Uint8Array,
): Promise<void> {
  await removeEntry(core, ctx, parent, name, false);
}

export async function rmdir(
  core: VfsCore,
  ctx: Ctx,
  parent: number,
  name: Uint8Array,
): Promise<void> {
  if (name.length === 1 && name[0] === 0x2e) throw new FsError("EINVAL", 'cannot rmdir "."');
  if (isDotOrDotDot(name)) throw new FsError("ENOTEMPTY", 'cannot rmdir ".."');
  await removeEntry(core, ctx, parent, name, true);
}

async function removeEntry(
  core: VfsCore,
  ctx: Ctx,
  parent: number,
  name: Uint8Array,
  directory: boolean,
): Promise<void> {
  checkName(name);
  const { ino, freed, linked } = await core.txn(async (t) => {
    const dir = await searchableDir(t, ctx, parent);
    const dirent = await t.tx.getDirent(parent, name);
    if (!dirent) throw new FsError("ENOENT", `no ${show(name)} in directory ${parent}`);
    const child = await t.inode(dirent.ino);
    mayDelete(ctx, dir, child, directory);
    checkNotVolumeRoot(dir, child);
    if (directory && !(await t.tx.dirIsEmpty(child.ino))) {
      throw new FsError("ENOTEMPTY", `directory ${show(name)} is not empty`);
    }
    const now = core.now();
    t.tx.deleteDirent(parent, name);
    dir.mtime = dir.ctime = now;
    if (directory) dir.nlink--;
    t.putInode(dir);
    child.nlink = directory ? 0 : child.nlink - 1;
    child.ctime = now;
    if (child.nlink > 0) {
      t.putInode(child);
      return { ino: child.ino, freed: undefined, linked: true };
    }
    return { ino: child.ino, freed: await t.dropInode(child) ? child : undefined, linked: false };
  });
  await afterUnlink(core, ino, freed, linked);
}

/** After a transaction removed a name of `ino`: free its data (`freed`: the record the
 * transaction deleted) or retry the purge (see VfsCore.maybePurge for why a forget racing with the
 * commit needs this second look). No attribute invalidation of `ino`: the kernel that sent the
 * UNLINK, RMDIR or RENAME drops its nlink and marks its ctime stale itself (fuse_entry_unlinked),
 * and only the FUSE handlers remove names.
 *
 * `linked`: the transaction left the inode other names (nlink above 0). On a cluster node there is
 * then nothing to look at: only a transaction that drops nlink to 0 can free the inode, and that
 * one decides itself (its own `afterUnlink`, or an orphan for the last close). The look was a
 * validating read of the store there, one round trip after every such unlink (git's unlink of
 * each object's temporary name after linking it, issue 13). */
export async function afterUnlink(
  core: VfsCore,
  ino: number,
  freed: InodeRecord | undefined,
  linked = false,
): Promise<void> {
  if (core.keptElsewhere.delete(ino)) {
    if (core.cluster) {
      // Not open here: its local cache file goes now, so its space comes back at the unlink as
      // on one node (POSIX; tests/posix/fallocate_test.ts); the inode, its map and its objects
      // wait for every node's acknowledgement (a node may still read them).
      core.cluster.forgetInode(ino);
      core.local.removeSoon(ino);
      core.cluster.reclaimLater(ino);
    }
    return core.dropStateIfIdle(ino);
  }
  if (linked && core.cluster) return;
  if (freed) {
    // Only regular files have a local file; a directory's or a symlink's unlink would only
    // find nothing (an io-wq hop through the engine for each rmdir).
    if (isReg(freed.mode)) core.local.removeSoon(ino, freed.size);
    core.dropStateIfIdle(ino);
  } else {
    await core.maybePurge(ino);
  }
}

export async function access(core: VfsCore, ctx: Ctx, ino: number, mask: number): Promise<void> {
  const record = await core.record(ino);
  if (mask & 7) checkAccess(ctx, record, mask & 7);
}

/** EBUSY for the root directory of a volume (its volume differs from its parent's): like a mount
 * point, it goes only with the volume (`skyfs volume delete`). */
export function checkNotVolumeRoot(dir: InodeRecord, child: InodeRecord): void {
  if ((child.volume ?? 0) !== 0 && (child.volume ?? 0) !== (dir.volume ?? 0)) {
    throw new FsError(
      "EBUSY",
      `inode ${child.ino} is the root of volume ${child.volume}: delete the volume instead`,
    );
  }
}

/**
 * statfs of `ino`: inside a volume, the volume's capacity and usage (so `df` in it shows the
 * volume); elsewhere the data directory's file system.
 */
export async function statfs(core: VfsCore, ino: number): Promise<StatFs> {
  const record = ino > 0 ? await core.ns.getInode(ino) : undefined;
  if (record?.volume) {
    const quota = await core.ns.getQuotaRecord(record.volume);
    if (quota) {
      const free = Math.max(0, quota.capacityBytes - quota.usedBytes);
      const st = libc.statvfs(core.dataDir);
      const files = quota.inodes > 0 ? quota.inodes : quota.usedInodes + st.ffree;
      return {
        blocks: Math.ceil(quota.capacityBytes / BLOCK_SIZE),
        bfree: Math.floor(free / BLOCK_SIZE),
        bavail: Math.floor(free / BLOCK_SIZE),
        files,
        ffree: Math.max(0, files - quota.usedInodes),
        bsize: BLOCK_SIZE,
        frsize: BLOCK_SIZE,
        namelen: NAME_MAX,
      };
    }
  }
  const st = libc.statvfs(core.dataDir);
  return Promise.resolve({
    blocks: st.blocks,
    bfree: st.bfree,
    bavail: st.bavail,
    files: st.files,
    ffree: st.ffree,
    bsize: st.bsize,
    frsize: st.frsize,
    namelen: NAME_MAX,
  });
}

export function show(name: Uint8Array): string {
  return JSON.stringify(new TextDecoder().decode(name));
}
