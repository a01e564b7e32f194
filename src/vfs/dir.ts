/**
 * Directory handles: opendir, readdir/readdirplus with stable offsets, releasedir, fsyncdir.
 * A handle takes a snapshot of the directory (`DirListing`) at its first readdir from offset 0 (and
 * again at every rewind), so offsets index into a fixed list: telldir/seekdir keep working while the
 * directory changes, and every entry present for the whole listing is returned exactly once.
 * @module
 */

import { Errno, FsError } from "../fs_error.ts";
import * as libc from "../io/libc.ts";
import type { Attr, Ctx, DirEntry } from "./types.ts";
import { direntIno, direntType } from "../meta/namespace.ts";
import { type DirListing, DirListingBuilder } from "./listing.ts";
import { checkAccess, isDir, R_OK, S_IFDIR } from "./perm.ts";
import type { VfsCore } from "./core.ts";

export async function opendir(
  core: VfsCore,
  ctx: Ctx,
  ino: number,
  flags: number,
): Promise<number> {
  const record = await core.record(ino);
  if (!isDir(record.mode)) throw new FsError("ENOTDIR", `inode ${ino} is not a directory`);
  if ((flags & libc.O_ACCMODE) !== libc.O_RDONLY) {
    throw new FsError("EISDIR", `directory ${ino} cannot be opened for writing`);
  }
  checkAccess(ctx, record, R_OK);
  return core.addHandle({ kind: "dir", ino });
}

/**
 * `opendir` without waiting, on one node: the directory from the namespace's cache, and whether a
 * listing now would move its atime (`atimeDue`). Undefined, with nothing done, where only the
 * store can tell (call `opendir` then). Throws as `opendir` rejects.
 */
export function opendirCached(
  core: VfsCore,
  ctx: Ctx,
  ino: number,
  flags: number,
): { fh: number; atimeDue: boolean } | undefined {
  if (core.cluster) return undefined;
  const record = core.recordCached(ino);
  if (record === undefined) return undefined;
  if (!isDir(record.mode)) throw new FsError("ENOTDIR", `inode ${ino} is not a directory`);
  if ((flags & libc.O_ACCMODE) !== libc.O_RDONLY) {
    throw new FsError("EISDIR", `directory ${ino} cannot be opened for writing`);
  }
  checkAccess(ctx, record, R_OK);
  return { fh: core.addHandle({ kind: "dir", ino }), atimeDue: core.atimeDue(record) };
}

/**
 * The handle's listing: a snapshot taken at its first readdir and again at every one from offset
 * 0 (a rewind), so offsets index into a fixed list.
 */
export async function listing(
  core: VfsCore,
  ino: number,
  fh: number,
  offset: number,
): Promise<DirListing> {
  const handle = core.dirHandle(fh, ino);
  if (offset === 0 || !handle.listing) {
    handle.listing = await snapshot(core, ino);
    await core.touchAtime(ino, true);
  }
  return handle.listing;
}

/**
 * What a readdirplus entry carries: null for an inode the kernel holds already (a lookup count
 * above 0, on one node): FUSE then lists the name and leaves its cached inode alone (node id 0
 * in READDIRPLUS means "no entry to prime"), the daemon skips the inode's record and local stat,
 * the kernel its linking, and no FORGET follows. Its cached attributes stay valid for their own
 * timeout; past it a stat asks GETATTR as it would anyway. Undefined for an entry removed since
 * the snapshot: it cannot be handed out with attributes and is skipped.
 */
export async function direntAttr(core: VfsCore, ino: number): Promise<Attr | null | undefined> {
  if (core.knownToKernel(ino)) return null;
  try {
    return core.attr(await core.record(ino));
  } catch (error) {
    if (error instanceof FsError && error.errno === Errno.ENOENT) return undefined;
    throw error;
  }
}

export async function readdir(
  core: VfsCore,
  ino: number,
  fh: number,
  offset: number,
  maxEntries: number,
  plus: boolean,
): Promise<DirEntry[]> {
  const list = await listing(core, ino, fh, offset);
  const from = list.first(offset);
  const out = list.entries(from, Math.min(list.count, from + Math.max(0, maxEntries)));
  if (!plus) return out;
  const withAttrs: DirEntry[] = [];
  for (let i = 0; i < out.length; i++) {
    const entry = out[i];
    if (from + i < 2) {
      withAttrs.push(entry);
      continue;
    }
    const attr = await direntAttr(core, entry.ino);
    if (attr === undefined) continue;
    withAttrs.push(attr === null ? entry : { ...entry, attr });
  }
  return withAttrs;
}

/**
 * The directory's entries straight from the store's range into one buffer (`DirListing`): no
 * object per entry (a listing of 5,000 names spent 2 us per name building and copying them).
 */
async function snapshot(core: VfsCore, ino: number): Promise<DirListing> {
  const dir = await core.record(ino);
  const builder = new DirListingBuilder();
  try {
    builder.add(ino, S_IFDIR, DOTS, 0, 1);
    builder.add(dir.parent, S_IFDIR, DOTS, 0, 2);
    // A removed directory (nlink 0) lists only "." and "..", as on ext4.
    if (dir.nlink > 0) {
      await core.ns.scanDir(ino, (key, nameAt, dirent) => {
        builder.add(direntIno(dirent), direntType(dirent), key, nameAt, key.length);
      });
    }
    return builder.finish();
  } finally {
    builder.abandon();
  }
}

const DOTS = new Uint8Array([0x2e, 0x2e]);

/** `releasedir` at once on one node (true; its purge, if any, runs on its own as in
 * `releasedir`); false with nothing done in a cluster or for a handle that is not this
 * directory's (call `releasedir`, which says EBADF). */
export function releasedirCached(core: VfsCore, ino: number, fh: number): boolean {
  if (core.cluster) return false;
  const handle = core.handles.get(fh);
  if (handle?.kind !== "dir" || handle.ino !== ino) return false;
  core.removeHandle(fh);
  core.dropStateIfIdle(ino);
  if (!core.isReferenced(ino)) core.purgeLater(ino);
  return true;
}

export function releasedir(core: VfsCore, ino: number, fh: number): Promise<void> {
  core.dirHandle(fh, ino);
  core.removeHandle(fh);
  core.dropStateIfIdle(ino);
  if (core.isReferenced(ino)) return Promise.resolve();
  if (!core.cluster) {
    core.purgeLater(ino);
    return Promise.resolve();
  }
  // In a cluster lookups do not keep an inode, so every last releasedir would try a purge (a
  // metadata round trip per listing): only a directory removed while open here needs one, and
  // this node's own rmdir left nlink 0 in its cache.
  core.ns.getInode(ino).then((record) => {
    if (record?.nlink === 0) core.purgeLater(ino);
  }).catch((error) => console.error(`skyfs: releasedir of inode ${ino}: ${error}`));
  return Promise.resolve();
}

/** Directory contents live in the metadata store: making them durable is its sync. */
export async function fsyncdir(core: VfsCore): Promise<void> {
  await core.ns.kv.sync();
}
