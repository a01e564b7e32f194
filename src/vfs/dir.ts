/**
 * Directory handles: opendir, readdir/readdirplus with stable offsets, releasedir, fsyncdir.
 * A handle takes a snapshot of the directory at its first readdir from offset 0 (and again at
 * every rewind), so offsets index into a fixed list: telldir/seekdir keep working while the
 * directory changes, and every entry present for the whole listing is returned exactly once.
 * @module
 */

import { Errno, FsError } from "../fs_error.ts";
import * as libc from "../io/libc.ts";
import type { Ctx, DirEntry } from "./types.ts";
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

export async function readdir(
  core: VfsCore,
  ino: number,
  fh: number,
  offset: number,
  maxEntries: number,
  plus: boolean,
): Promise<DirEntry[]> {
  const handle = core.dirHandle(fh, ino);
  if (offset === 0 || !handle.entries) {
    handle.entries = await snapshot(core, ino);
    await core.touchAtime(ino, true);
  }
  const out = handle.entries.slice(offset, offset + Math.max(0, maxEntries));
  if (!plus) return out;
  const withAttrs: DirEntry[] = [];
  for (const entry of out) {
    // An inode the kernel holds already (a lookup count above 0, on one node) goes without
    // attributes: FUSE then lists the name and leaves its cached inode alone (node id 0 in
    // READDIRPLUS means "no entry to prime"), the daemon skips the inode's record and local
    // stat, the kernel its linking, and no FORGET follows. Its cached attributes stay valid for
    // their own timeout; past it a stat asks GETATTR as it would anyway.
    if (core.knownToKernel(entry.ino)) {
      withAttrs.push(entry);
      continue;
    }
    let attr;
    try {
      attr = core.attr(await core.record(entry.ino));
    } catch (error) {
      // An entry removed since the snapshot is skipped: it cannot be handed out with attributes.
      if (error instanceof FsError && error.errno === Errno.ENOENT) continue;
      throw error;
    }
    withAttrs.push({ ...entry, attr });
  }
  return withAttrs;
}

async function snapshot(core: VfsCore, ino: number): Promise<DirEntry[]> {
  const dir = await core.record(ino);
  const dot = (name: string, child: number): Omit<DirEntry, "nextOffset"> => ({
    ino: child,
    name: new TextEncoder().encode(name),
    type: S_IFDIR,
  });
  const entries: Omit<DirEntry, "nextOffset">[] = [dot(".", ino), dot("..", dir.parent)];
  // A removed directory (nlink 0) lists only "." and "..", as on ext4.
  if (dir.nlink > 0) {
    for (const entry of await core.ns.listDir(ino)) entries.push(entry);
  }
  for (let i = 0; i < entries.length; i++) (entries[i] as DirEntry).nextOffset = i + 1;
  return entries as DirEntry[];
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
