/**
 * createVfs: opens the namespace and the local data store, repairs what a crash can leave behind
 * (orphans, local files of deleted inodes) without anyone's help, and returns the Vfs whose
 * methods delegate to the operation groups (entry, rename, file, dir, xattr, lock).
 * @module
 */

import { FsError } from "../fs_error.ts";
import * as libc from "../io/libc.ts";
import { copyInode, Namespace, type Timespec } from "../meta/namespace.ts";
import { isJournalLessExt4, LocalStore } from "../cache/local.ts";
import type { Vfs } from "./types.ts";
import { type OpTxn, VfsCore, type VfsOptions } from "./core.ts";
import * as entry from "./entry.ts";
import * as dir from "./dir.ts";
import * as file from "./file.ts";
import * as xattr from "./xattr.ts";
import * as lock from "./lock.ts";
import { rename } from "./rename.ts";
import { createVolumes } from "./volumes.ts";
import { isReg, S_IFBLK, S_IFCHR, S_IFIFO, S_IFREG, S_IFSOCK } from "./perm.ts";

export type { VfsOptions } from "./core.ts";

/** What startup recovery found (for logs and tests). */
export interface RecoveryReport {
  orphansPurged: number;
  danglingFilesRemoved: number;
  /** Volume reservations of writers that were gone at start (volume_quota.ts). */
  reservationsDropped: number;
  /** Inodes on the pending write-back list at start (core.ts), and of them those whose size or
   * mtime was taken from the local file. */
  pendingListed: number;
  pendingStored: number;
}

export interface VfsWithRecovery extends Vfs {
  /** What the startup recovery of this instance did. */
  readonly recovery: RecoveryReport;
  /** The namespace's transaction counters, for /metrics. */
  readonly metaCounters: Namespace["counters"];
  /** The inode's local file was handed to another process (the shim): it must never be reused
   * for another inode (LocalStore.handedOut). */
  localFileHandedOut(ino: number): void;
}

/** Spare local files of `mount.local_spare_files = auto` on an ext4 without a journal. */
export const AUTO_SPARE_FILES = 4096;

/** The cap of spare local files: "auto" = `AUTO_SPARE_FILES` where they pay (an ext4 without a
 * journal, src/fuse/README.md "Spare local files"), else none. */
async function spareFilesFor(setting: number | "auto", dataDir: string): Promise<number> {
  if (setting !== "auto") return setting;
  return await isJournalLessExt4(dataDir) ? AUTO_SPARE_FILES : 0;
}

/** Local fds kept after their last release by default (`mount.keep_closed_files`). */
export const DEFAULT_KEEP_CLOSED = 16_384;

/** `wanted` kept fds, at most a quarter of the process's soft RLIMIT_NOFILE (Deno raises it to
 * the hard limit at start): the rest stays for handles, the store, sockets and the engine. */
export function keptFilesFor(wanted: number): number {
  let soft = Infinity;
  try {
    const line = Deno.readTextFileSync("/proc/self/limits").split("\n")
      .find((l) => l.startsWith("Max open files"));
    const value = line?.split(/\s+/)[3];
    if (value !== undefined && value !== "unlimited") soft = Number(value);
  } catch {
    soft = 1024; // no /proc: the usual default soft limit
  }
  return Math.max(0, Math.min(wanted, Math.floor(soft / 4)));
}

/** Open the file system on `options.kv` and `<options.dataDir>/data`. */
export async function createVfs(options: VfsOptions): Promise<VfsWithRecovery> {
  const ns = await Namespace.open(options.kv, {
    rootUid: options.rootUid,
    rootGid: options.rootGid,
    inoRangeSize: options.inoRangeSize,
    // Other nodes write the same store: reads of read-only operations must be checked.
    validateReads: options.validateReads ?? options.cluster !== undefined,
    now: options.now,
  });
  // A cluster node makes the same small local-file syscalls inline as one node does (it used to
  // take the engine for them: an io-wq hop per create, about 280 us of a cluster create's 2.1 ms
  // of mount CPU; src/cluster/README.md, "Session 13"). Its fills, uploads and peer serving keep
  // the engine, on fds of their own or held ones. No spare files on a cluster node: a peer's
  // serve fd (opened by path) could still hold a deleted inode's file when a spare renames it.
  const fileOps = options.localFileOps ?? "inline";
  const local = await LocalStore.open(
    options.io,
    options.dataDir,
    fileOps,
    options.cluster ? 0 : await spareFilesFor(options.localSpareFiles ?? "auto", options.dataDir),
  );
  // Kept local fds (src/fuse/README.md, "Kept local files"): one node only; a cluster node's
  // local file is a cache the engine fills and evicts (ClusterData checks `fdOf` for "in use").
  if (!options.cluster) {
    local.keepClosed(keptFilesFor(options.keepClosedFiles ?? DEFAULT_KEEP_CLOSED));
  }
  await options.cluster?.attach(ns, local, options.io);
  const core = new VfsCore(ns, local, options);
  const recovery = await recover(core);
  return makeVfs(core, recovery);
}

/**
 * Crash recovery, automatic at every start. An orphan (unlinked while still open or looked up)
 * can only have been referenced by a kernel or a handle of the previous process, which are gone:
 * it is deleted. A local file without an inode belongs to an inode deleted just before the crash
 * (the store commits first, the local file goes after): it is removed.
 */
async function recover(core: VfsCore): Promise<RecoveryReport> {
  let orphansPurged = 0;
  // In a cluster the orphan list is shared and another node may still hold an orphan open:
  // the last close frees it, or gc (src/cache/gc.ts) once no node's open record is left.
  for (const ino of core.cluster ? [] : await core.ns.listOrphans()) {
    await core.txn(async (t) => {
      const record = await t.tx.getInode(ino);
      if (record && record.nlink === 0) t.tx.deleteInode(ino, true);
      else t.tx.removeOrphan(ino);
    });
    await core.local.remove(ino);
    orphansPurged++;
  }
  const existing = await core.ns.existingInodes();
  const danglingFilesRemoved = await core.local.removeDangling((ino) => existing.has(ino));
  // Reserved quota of writes this node never stored is void (their data is cut at next open).
  const reservationsDropped = await core.volumes.dropStaleReservations(!core.cluster);
  // After the drop: a size taken from a local file counts against the volume's capacity then
  // (the reservation that covered its writes is gone with the process that claimed it).
  const pending = core.cluster ? [] : await core.ns.listPending();
  let pendingStored = 0;
  for (let i = 0; i < pending.length; i += PENDING_BATCH) {
    const batch = pending.slice(i, i + PENDING_BATCH);
    try {
      pendingStored += await core.txn(async (t) => {
        let stored = 0;
        for (const ino of batch) if (await storePending(core, t, ino)) stored++;
        return stored;
      });
    } catch (error) {
      // One inode's size refused (EDQUOT: a volume shrunk below it): the others one by one.
      console.error(`skyfs: pending write-back of ${batch.length} inodes: ${error}; one by one`);
      for (const ino of batch) {
        try {
          if (await core.txn((t) => storePending(core, t, ino))) pendingStored++;
        } catch (error) {
          console.error(`skyfs: pending write-back of inode ${ino}: ${error}; left as stored`);
          await core.txn((t) => Promise.resolve(t.tx.removePending(ino)));
        }
      }
    }
  }
  const changed = orphansPurged > 0 || reservationsDropped > 0 || pending.length > 0;
  if (changed) await core.ns.kv.sync();
  return {
    orphansPurged,
    danglingFilesRemoved,
    reservationsDropped,
    pendingListed: pending.length,
    pendingStored,
  };
}

/** errno of a missing local file (an inode whose create's open of it failed). */
const ENOENT = 2;

/** Pending write-backs stored per transaction at startup. */
const PENDING_BATCH = 64;

/**
 * Startup, one node: `ino` was on the pending write-back list, so its local file may be ahead of
 * its record (written, even closed, but the daemon died before it stored the size: close(2) does
 * not wait for FUSE_RELEASE). Its size is taken from the local file when they differ, and its
 * mtime when the local file's is newer than the record's ctime (a write after the last change the
 * store knows of; an older one is a time set since, by utimensat, which stands). The mark goes.
 */
async function storePending(core: VfsCore, t: OpTxn, ino: number): Promise<boolean> {
  t.tx.removePending(ino);
  const record = await t.tx.getInode(ino);
  if (!record || !isReg(record.mode)) return false;
  const st = libc.statC(new TextEncoder().encode(`${core.local.path(ino)}\0`), ENOENT);
  if (!st) return false;
  const mtime: Timespec = { sec: st.mtimeSec, nsec: st.mtimeNsec };
  const newer = after(mtime, record.ctime);
  if (st.size === record.size && !newer) return false;
  const r = copyInode(record);
  r.size = st.size;
  if (newer) r.mtime = r.ctime = mtime;
  t.tx.putInode(r);
  return true;
}

function after(a: Timespec, b: Timespec): boolean {
  return a.sec > b.sec || (a.sec === b.sec && a.nsec > b.nsec);
}

function makeVfs(core: VfsCore, recovery: RecoveryReport): VfsWithRecovery {
  return {
    recovery,
    volumes: createVolumes(core),
    metaCounters: core.ns.counters,
    localFileHandedOut: (ino) => core.local.handedOut(ino),
    lookup: async (ctx, parent, name) => {
      const attr = await entry.lookup(core, ctx, parent, name);
      if (!attr) throw new FsError("ENOENT", `no ${entry.show(name)} in directory ${parent}`);
      return attr;
    },
    lookupOrNull: (ctx, parent, name) => entry.lookup(core, ctx, parent, name),
    forget: (ino, nlookup) => entry.forget(core, ino, nlookup),
    remember: (ino) => void core.state(ino).lookups++,
    getattr: (_ctx, ino) => entry.getattr(core, ino),
    lookupCached: (ctx, parent, name) => entry.lookupCached(core, ctx, parent, name),
    getattrCached: (_ctx, ino) => entry.getattrCached(core, ino),
    setattr: (ctx, ino, changes, fh) => entry.setattr(core, ctx, ino, changes, fh),
    readlink: (_ctx, ino) => entry.readlink(core, ino),
    mknod: (ctx, parent, name, mode, rdev, umask) =>
      entry.mknod(core, ctx, parent, name, mode, rdev, umask),
    mkdir: (ctx, parent, name, mode, umask) => entry.mkdir(core, ctx, parent, name, mode, umask),
    unlink: (ctx, parent, name) => entry.unlink(core, ctx, parent, name),
    rmdir: (ctx, parent, name) => entry.rmdir(core, ctx, parent, name),
    symlink: (ctx, parent, name, target) => entry.symlink(core, ctx, parent, name, target),
    rename: (ctx, parent, name, newParent, newName, flags) =>
      rename(core, ctx, parent, name, newParent, newName, flags),
    link: (ctx, ino, newParent, newName) => entry.link(core, ctx, ino, newParent, newName),
    open: (ctx, ino, flags) => file.open(core, ctx, ino, flags),
    openCached: (ctx, ino, flags) => file.openCached(core, ctx, ino, flags),
    releaseCached: (ino, fh) => file.releaseCached(core, ino, fh),
    passthroughOpened: (ino, fh) => file.passthroughOpened(core, ino, fh),
    onLocalClosed: (listener) => {
      if (core.local.keepCap === 0) return false;
      core.local.onClosed = listener;
      return true;
    },
    create: (ctx, parent, name, mode, umask, flags) =>
      file.create(core, ctx, parent, name, mode, umask, flags),
    read: (_ctx, ino, fh, offset, into) => file.read(core, ino, fh, offset, into),
    write: (ctx, ino, fh, offset, data) => file.write(core, ctx, ino, fh, offset, data),
    flush: (_ctx, ino, fh, lockOwner) => file.flush(core, ino, fh, lockOwner),
    release: (ino, fh, _flags, lockOwner) => file.release(core, ino, fh, lockOwner),
    fsync: (ino, fh) => file.fsync(core, ino, fh),
    opendir: (ctx, ino, flags) => dir.opendir(core, ctx, ino, flags),
    opendirCached: (ctx, ino, flags) => dir.opendirCached(core, ctx, ino, flags),
    atimeDue: async (ino) => core.atimeDue(await core.record(ino)),
    readdir: (_ctx, ino, fh, offset, maxEntries, plus) =>
      dir.readdir(core, ino, fh, offset, maxEntries, plus),
    readdirListing: (_ctx, ino, fh, offset) => dir.listing(core, ino, fh, offset),
    direntAttr: (ino) => dir.direntAttr(core, ino),
    knownToKernel: (ino) => core.knownToKernel(ino),
    releasedir: (ino, fh) => dir.releasedir(core, ino, fh),
    releasedirCached: (ino, fh) => dir.releasedirCached(core, ino, fh),
    fsyncdir: () => dir.fsyncdir(core),
    statfs: (ino) => entry.statfs(core, ino),
    access: (ctx, ino, mask) => entry.access(core, ctx, ino, mask),
    setxattr: (ctx, ino, name, value, flags) => xattr.setxattr(core, ctx, ino, name, value, flags),
    getxattr: async (ctx, ino, name) => {
      const value = await xattr.getxattr(core, ctx, ino, name);
      if (!value) throw new FsError("ENODATA", `no ${JSON.stringify(name)} on inode ${ino}`);
      return value;
    },
    getxattrOrNull: (ctx, ino, name) => xattr.getxattr(core, ctx, ino, name),
    getxattrCached: (ctx, ino, name) => xattr.getxattrCached(core, ctx, ino, name),
    listxattr: (ctx, ino) => xattr.listxattr(core, ctx, ino),
    removexattr: (ctx, ino, name) => xattr.removexattr(core, ctx, ino, name),
    fallocate: (ctx, ino, fh, mode, offset, length) =>
      file.fallocate(core, ctx, ino, fh, mode, offset, length),
    lseek: (_ctx, ino, fh, offset, whence) => file.lseek(core, ino, fh, offset, whence),
    copyFileRange: (ctx, from, to, length, flags) =>
      file.copyFileRange(core, ctx, from, to, length, flags),
    getlk: (ino, fh, owner, l) => lock.getlk(core, ino, fh, owner, l),
    setlk: (ctx, ino, fh, owner, l, options) => lock.setlk(core, ctx, ino, fh, owner, l, options),
    openHandles: () =>
      [...core.handles].map(([fh, h]) => ({
        fh,
        ino: h.ino,
        kind: h.kind,
        ...(h.kind === "file" ? { flags: h.flags } : {}),
      })),
    destroy: async () => {
      try {
        await core.close();
        await core.ns.kv.sync();
      } finally {
        await core.ns.kv.close();
      }
    },
  };
}

/** File types mknod accepts (S_IFMT values), for callers that validate before asking. */
export const MKNOD_TYPES = [S_IFREG, S_IFIFO, S_IFSOCK, S_IFCHR, S_IFBLK];
