/**
 * Operations on open files: open and create (O_TRUNC, O_EXCL, O_APPEND), read, write, flush,
 * release, fsync, fallocate, lseek (SEEK_DATA/SEEK_HOLE) and copy_file_range. Data goes to the
 * inode's local file through the I/O engine; size and times of writes are kept in memory and
 * stored by the write-back rules of core.ts.
 * @module
 */

import { FsError } from "../fs_error.ts";
import * as libc from "../io/libc.ts";
import type { InodeRecord } from "../meta/namespace.ts";
import type { CreateResult, Ctx, OpenResult } from "./types.ts";
import {
  checkAccess,
  hasKillableSetId,
  isDir,
  isReg,
  isRoot,
  modeAfterModify,
  R_OK,
  S_IFMT,
  S_IFREG,
  W_OK,
  X_OK,
} from "./perm.ts";
import { checkName, type FileHandle, isDotOrDotDot, MAX_FILE_SIZE, type VfsCore } from "./core.ts";
import { createIn, mayCreate, searchableDir, show } from "./entry.ts";
import { releaseFlocks, releaseOwnerLocks } from "./lock.ts";

/** copy_file_range copies at most this much per call (callers loop on short copies), so one
 * request blocks the event loop (the copy is a synchronous syscall) for tens of ms at most. */
const COPY_MAX_BYTES = 64 << 20;
const COPY_CHUNK_BYTES = 16 << 20;

/** __FMODE_EXEC: the kernel marks the open of a program being executed (execve, uselib) with
 * it in FUSE_OPEN's flags. The kernel has checked execute permission already (may_open with
 * MAY_EXEC); such an open needs execute, not read, so a mode-0111 program runs as on ext4. */
export const FMODE_EXEC = 0x20;

function accessMask(flags: number): number {
  if (flags & FMODE_EXEC) return X_OK;
  const mode = flags & libc.O_ACCMODE;
  let mask = mode === libc.O_RDONLY ? R_OK : mode === libc.O_WRONLY ? W_OK : R_OK | W_OK;
  // O_TRUNC needs write permission whatever the access mode (Linux truncates O_RDONLY|O_TRUNC).
  if (flags & libc.O_TRUNC) mask |= W_OK;
  return mask;
}

const canRead = (flags: number) => (flags & libc.O_ACCMODE) !== libc.O_WRONLY;
const canWrite = (flags: number) => (flags & libc.O_ACCMODE) !== libc.O_RDONLY;

export async function open(
  core: VfsCore,
  ctx: Ctx,
  ino: number,
  flags: number,
): Promise<OpenResult> {
  const mark = core.cluster?.openMark();
  const changed = await core.cluster?.beforeOpen(ino);
  const record = await core.record(ino);
  if (isDir(record.mode) && (canWrite(flags) || flags & libc.O_TRUNC)) {
    throw new FsError("EISDIR", `inode ${ino} is a directory`);
  }
  checkAccess(ctx, record, accessMask(flags));
  return await openChecked(core, ctx, record, flags, false, mark, changed !== false);
}

/** Open after the permission check (create skips it: a new file opens whatever its mode).
 * `created`: this open's create made the inode. `mark`: in a cluster, `openMark()` before the
 * inode was read. `changed` (cluster): the inode may have changed since the kernel took its
 * attributes (ClusterData.beforeOpen). */
async function openChecked(
  core: VfsCore,
  ctx: Ctx,
  record: InodeRecord,
  flags: number,
  created = false,
  mark?: number,
  changed = true,
): Promise<OpenResult> {
  const ino = record.ino;
  if (!isReg(record.mode)) {
    // The kernel serves fifos and devices itself; a handle without data is all they need.
    return { fh: core.addHandle({ kind: "file", ino, flags }), keepCache: false, directIo: false };
  }
  // Count the handle before any await, so a racing forget cannot purge the inode under us.
  // A writer is counted before its mark's transaction: an unmark in flight then keeps the mark.
  const writer = !core.cluster && canWrite(flags);
  const handle: FileHandle = writer
    ? { kind: "file", ino, flags, writer }
    : { kind: "file", ino, flags };
  const fh = core.addHandle(handle);
  core.state(ino).volume = record.volume ?? 0;
  try {
    // An unlink that found no handle deletes the inode at once (`OpTxn.dropInode`): an open
    // that read the record before that commit must not hold the deleted file (its local file
    // becomes a spare). Counted first, so an unlink starting now keeps an orphan instead.
    if (!created && core.mayBeDeleted(ino)) {
      await core.deletionSettled(ino);
      if (!(await core.ns.getInode(ino))) throw new FsError("ENOENT", `inode ${ino} was removed`);
    }
    // A writer's inode is on the pending write-back list before its handle exists (core.ts).
    if (flags & libc.O_TRUNC) record = await truncateForOpen(core, ctx, ino, writer);
    else if (writer && !created && core.needsMark(ino)) await core.markPending(ino);
    const fd = await core.local.acquire(ino, record.size, created);
    handle.hasData = true;
    if (flags & libc.O_TRUNC && libc.fstat(fd).size !== 0) {
      libc.ftruncate(fd, 0);
      core.local.noteOwnChange(ino);
    }
    // A read served by the kernel's page cache never reaches the daemon: when the next read
    // must move atime, this open drops the cached pages, so that read comes here (issue 18).
    const atimeDue = canRead(flags) && !(flags & libc.O_NOATIME) && core.atimeDue(record);
    if (core.cluster) {
      // The local file is only a cache here; the kernel keeps its pages across opens only when
      // the content is the one this node saw at its last open (close-to-open: another node may
      // have changed the file since).
      const unchanged = await core.cluster.opened(ino, fd, record.size, mark, record.nlink === 0);
      // Passthrough only where the local file is the whole file and stays so (ClusterData.
      // outsideOpened): a write-only open that created or truncated it, the inode's only handle.
      const whole = created || (flags & libc.O_TRUNC) !== 0;
      const offer = core.cluster.passthroughWrites && whole &&
        (flags & libc.O_ACCMODE) === libc.O_WRONLY && core.state(ino).handles === 1 &&
        outsideWritesSafe(record);
      return {
        fh,
        keepCache: unchanged && !(flags & libc.O_TRUNC) && !atimeDue,
        directIo: false,
        backingFd: offer ? fd : undefined,
        // The kernel may hold this inode's attributes from before another node's change (a
        // stat here within the attribute timeout): its i_size bounds every read, and pages
        // dropped above are read again only up to it (a truncate or extension on B, then a
        // read on A, read A's old size). A created file's attributes are the create's reply;
        // a record unchanged since this node's last open needs nothing (that open had them
        // dropped), which spares the notice and the GETATTR of the program's fstat after it.
        attributesStale: !created && (changed || (flags & libc.O_TRUNC) !== 0),
      };
    }
    return localOpen(core, record, flags, fh, fd, atimeDue);
  } catch (error) {
    if (handle.hasData) await core.local.release(ino);
    core.removeHandle(fh);
    if (writer) core.writerClosed(ino);
    throw error;
  }
}

/** The open of a regular file on one node once its local fd is held: passthrough or not. */
function localOpen(
  core: VfsCore,
  record: InodeRecord,
  flags: number,
  fh: number,
  fd: number,
  atimeDue: boolean,
): OpenResult {
  const safe = outsideWritesSafe(record);
  // Reads outside the vfs are seen through the local file's atime (LocalStore.watchAccess).
  if (safe) core.local.watchAccess(record.ino);
  return {
    fh,
    keepCache: !(flags & libc.O_TRUNC) && !atimeDue,
    directIo: false,
    backingFd: safe ? fd : undefined,
  };
}

/** Data written outside the vfs (FUSE passthrough, the shim) never passes the write path that
 * drops set-id bits, so a file with bits a write must drop gets no backing fd. Nor does a file
 * in a volume: its writes must claim quota before they happen. */
function outsideWritesSafe(record: InodeRecord): boolean {
  return !hasKillableSetId(record.mode) && !record.volume;
}

/**
 * The FUSE layer opened handle `fh` with passthrough (the kernel reads and writes the local file
 * itself). On one node nothing follows. On a cluster node the inode's data is then published
 * from the local file as a whole (ClusterData.outsideOpened); a handle that may both read and
 * write is refused with ETXTBSY (as the kernel refuses a cached open of a passthrough inode): it
 * could map the local file shared and writable, and stores through that mapping go on after the
 * last close, where no publish sees them.
 */
export function passthroughOpened(core: VfsCore, ino: number, fh: number): void {
  if (!core.cluster) return;
  const handle = core.fileHandle(fh, ino);
  const mode = handle.flags & libc.O_ACCMODE;
  if (mode === libc.O_RDWR) {
    throw new FsError(
      "ETXTBSY",
      `inode ${ino} is being written with passthrough on this node: no read-write open meanwhile`,
    );
  }
  core.cluster.outsideOpened(ino, mode === libc.O_WRONLY);
  handle.passthrough = true;
}

/**
 * `open` without waiting, on one node: the inode from the namespace's cache and its local file
 * opened by one synchronous call (or already held). Undefined, and nothing done, where that
 * takes a wait (a cluster node, O_TRUNC, an inode or local file not at hand): call `open`.
 * Throws as `open` rejects.
 */
export function openCached(
  core: VfsCore,
  ctx: Ctx,
  ino: number,
  flags: number,
): OpenResult | undefined {
  if (core.cluster || flags & libc.O_TRUNC) return undefined;
  const record = core.recordCached(ino);
  if (record === undefined) return undefined;
  if (isDir(record.mode) && canWrite(flags)) {
    throw new FsError("EISDIR", `inode ${ino} is a directory`);
  }
  checkAccess(ctx, record, accessMask(flags));
  if (!isReg(record.mode)) {
    return { fh: core.addHandle({ kind: "file", ino, flags }), keepCache: false, directIo: false };
  }
  // A writer of an inode not on the pending write-back list takes a transaction: `open`.
  const writer = canWrite(flags);
  if (writer && core.needsMark(ino)) return undefined;
  if (core.mayBeDeleted(ino)) return undefined;
  const fd = core.local.acquireSync(ino, record.size);
  if (fd === undefined) return undefined;
  const fh = core.addHandle(
    writer
      ? { kind: "file", ino, flags, hasData: true, writer }
      : { kind: "file", ino, flags, hasData: true },
  );
  core.state(ino).volume = record.volume ?? 0;
  const atimeDue = canRead(flags) && !(flags & libc.O_NOATIME) && core.atimeDue(record);
  return localOpen(core, record, flags, fh, fd, atimeDue);
}

/** O_TRUNC: size 0, mtime and ctime now (even if already empty), set-id dropped for non-root. */
async function truncateForOpen(
  core: VfsCore,
  ctx: Ctx,
  ino: number,
  mark: boolean,
): Promise<InodeRecord> {
  if (mark) core.willMark(ino);
  const record = await core.txn(async (t) => {
    if (mark) t.tx.addPending(ino, core.markStamp());
    const r = await t.inode(ino);
    r.size = 0;
    if (core.cluster) await core.cluster.truncateInTxn(t.tx, ino, 0);
    r.mtime = r.ctime = core.now();
    r.mode = modeAfterModify(ctx, r);
    t.putInode(r);
    return r;
  });
  const state = core.inodes.get(ino);
  if (mark) core.state(ino).marked = true;
  if (state?.dirty) state.dirty.size = undefined;
  core.volumes.truncated(ino, 0);
  core.cluster?.truncated(ino, 0);
  return record;
}

export async function create(
  core: VfsCore,
  ctx: Ctx,
  parent: number,
  name: Uint8Array,
  mode: number,
  umask: number,
  flags: number,
): Promise<CreateResult> {
  checkName(name);
  if (isDotOrDotDot(name)) throw new FsError("EEXIST", `${show(name)} always exists`);
  const ino = await core.ns.allocIno();
  // The new inode's local file is created while the transaction commits, not after it: an
  // O_CREAT open always waits for an io-wq worker (src/io/README.md), 0.6-6 ms on a busy
  // machine, about half of a cluster create's time in the mount (src/cluster/README.md, "Cost of
  // a cluster operation"). No one else knows the number yet, so nothing can race with it.
  const local = core.local.acquire(ino, 0, true).then(() => true, () => false);
  let result: { record: InodeRecord; created: boolean };
  // An existing file this create opens may be unlinked elsewhere meanwhile (ClusterData.opened).
  const mark = core.cluster?.openMark();
  try {
    result = await core.txn(async (t) => {
      const dir = await searchableDir(t, ctx, parent);
      const existing = await t.tx.getDirent(parent, name);
      if (existing) {
        if (flags & libc.O_EXCL) throw new FsError("EEXIST", `${show(name)} exists`);
        return { record: await t.inode(existing.ino), created: false };
      }
      mayCreate(ctx, dir);
      const spec = { mode: S_IFREG | (mode & 0o7777), umask };
      const record = createIn(t, ctx, dir, name, ino, spec, core.now());
      // On the pending write-back list from birth (core.ts): its writer opens below.
      if (!core.cluster) t.tx.addPending(ino);
      return { record, created: true };
    });
  } catch (error) {
    await dropUnusedLocal(core, ino, local);
    throw error;
  }
  const { record, created } = result;
  let opened: OpenResult;
  if (created && !core.cluster) core.state(ino).marked = true;
  if (created) {
    await local;
    try {
      opened = await openChecked(core, ctx, record, flags & ~libc.O_TRUNC, true, mark);
    } finally {
      // openChecked took its own reference on the fd opened above (or failed and let go).
      if (await local) await core.local.release(ino);
      // Not opened for writing (O_RDONLY | O_CREAT), or failed: off the list again.
      core.writerClosed(ino);
    }
  } else {
    await dropUnusedLocal(core, ino, local);
    // Lost a race with another creator and no O_EXCL: open(2) opens the existing file.
    if (isDir(record.mode)) throw new FsError("EISDIR", `${show(name)} is a directory`);
    checkAccess(ctx, record, accessMask(flags));
    opened = await openChecked(core, ctx, record, flags, false, mark);
  }
  core.state(record.ino).lookups++;
  // A new inode is as its create wrote it (nothing can have changed it or its local file before
  // this reply): no second read of the record, no stat of the local file for changes.
  const fresh = created && !core.cluster;
  // Its local file was just made or emptied to the new size 0 (`statAtSize`): no blocks, and no
  // fstat to learn so.
  return {
    ...opened,
    attr: fresh ? core.attr(record, 0) : core.attr(await core.record(record.ino)),
  };
}

/** A create that made no inode: close and remove the local file made for the number. */
async function dropUnusedLocal(core: VfsCore, ino: number, local: Promise<boolean>): Promise<void> {
  if (!(await local)) return;
  await core.local.release(ino);
  await core.local.remove(ino);
}

export async function read(
  core: VfsCore,
  ino: number,
  fh: number,
  offset: number,
  into: Uint8Array,
): Promise<number> {
  const handle = core.fileHandle(fh, ino);
  if (!canRead(handle.flags)) throw new FsError("EBADF", `handle ${fh} is write-only`);
  if (offset < 0) throw new FsError("EINVAL", `negative offset ${offset}`);
  const fd = dataFd(core, ino);
  if (!(handle.flags & libc.O_NOATIME)) await core.touchAtime(ino, false);
  if (core.cluster) {
    // A chunk held by its owner elsewhere is read from there straight into `into`, not stored.
    const direct = await core.cluster.readDirect(ino, fd, offset, into);
    if (direct !== undefined) return direct;
    await core.cluster.ensure(ino, fd, offset, into.length);
  }
  // The local file's length is the file's size while it is open, so pread ends where it ends.
  return await core.io.read(fd, into, offset);
}

function dataFd(core: VfsCore, ino: number): number {
  const fd = core.local.fdOf(ino);
  if (fd === undefined) throw new FsError("EBADF", `inode ${ino} has no open data`);
  return fd;
}

export async function write(
  core: VfsCore,
  ctx: Ctx,
  ino: number,
  fh: number,
  offset: number,
  data: Uint8Array,
): Promise<number> {
  const handle = core.fileHandle(fh, ino);
  if (!canWrite(handle.flags)) throw new FsError("EBADF", `handle ${fh} is read-only`);
  const fd = dataFd(core, ino);
  if (handle.flags & libc.O_APPEND) {
    // Each append must see the end the previous one made, even with an asynchronous engine.
    const state = core.state(ino);
    const run = (state.appendTail ?? Promise.resolve()).catch(() => {}).then(() =>
      writeAt(core, ctx, ino, fd, libc.fstat(fd).size, data)
    );
    state.appendTail = run;
    return await run;
  }
  return await writeAt(core, ctx, ino, fd, offset, data);
}

async function writeAt(
  core: VfsCore,
  ctx: Ctx,
  ino: number,
  fd: number,
  offset: number,
  data: Uint8Array,
): Promise<number> {
  if (offset < 0) throw new FsError("EINVAL", `negative offset ${offset}`);
  if (offset + data.length > MAX_FILE_SIZE) {
    throw new FsError("EFBIG", `write to ${offset + data.length} exceeds ${MAX_FILE_SIZE}`);
  }
  await claimQuota(core, ino, fd, offset + data.length);
  if (core.cluster) await core.cluster.ensure(ino, fd, offset, data.length, true);
  const written = await core.io.write(fd, data, offset);
  core.cluster?.noteWrite(ino, offset, written);
  await afterDataChange(core, ctx, ino);
  return written;
}

/** In a volume: claim the growth to `end` before the data changes (EDQUOT changes nothing). */
async function claimQuota(core: VfsCore, ino: number, fd: number, end: number): Promise<void> {
  const volume = core.inodes.get(ino)?.volume;
  if (!volume) return;
  const size = libc.fstat(fd).size;
  if (end > size) await core.volumes.claim(ino, volume, size, end);
}

/**
 * After data changed through the local fd: the new size (read from the local file, which is the
 * file's length while it is open, so concurrent writers never shrink each other's size), mtime
 * and ctime go to the in-memory overlay; set-id bits drop for a non-root writer.
 */
async function afterDataChange(core: VfsCore, ctx: Ctx, ino: number): Promise<void> {
  const now = core.now();
  core.markDirty(ino, { size: core.local.noteOwnChange(ino).size, mtime: now, ctime: now });
  if (isRoot(ctx)) return; // CAP_FSETID: nothing to drop, and no record to read
  const record = await core.record(ino);
  if (modeAfterModify(ctx, record) !== record.mode) await dropSetId(core, ctx, ino);
}

/** A write by a caller without CAP_FSETID drops set-id bits (modeAfterModify's rules). */
async function dropSetId(core: VfsCore, ctx: Ctx, ino: number): Promise<void> {
  await core.txn(async (t) => {
    const r = await t.inode(ino);
    const mode = modeAfterModify(ctx, r);
    if (mode === r.mode) return;
    r.mode = mode;
    t.putInode(r);
  });
}

/** close(2) of one fd: publish attributes (close-to-open) and drop the owner's POSIX locks. */
export async function flush(
  core: VfsCore,
  ino: number,
  fh: number,
  lockOwner: bigint,
): Promise<void> {
  core.fileHandle(fh, ino);
  await releaseOwnerLocks(core, ino, lockOwner);
  await core.persist(ino, true);
}

/** The last close of an open file: its flock goes, and with the inode's last handle, its fd. */
export async function release(
  core: VfsCore,
  ino: number,
  fh: number,
  lockOwner?: bigint,
): Promise<void> {
  const handle = core.removeHandle(fh);
  if (handle?.kind !== "file") throw new FsError("EBADF", `handle ${fh} is not an open file`);
  await releaseFlocks(core, ino, fh, lockOwner);
  const state = core.state(ino);
  // Its passthrough writes are done: the publish below (or the other handles') covers them.
  if (handle.passthrough && canWrite(handle.flags)) core.cluster?.outsideClosed(ino);
  try {
    // The last writer's write-back also takes the inode off the pending list (core.ts); on one
    // node the write-back timer's merged transaction does both where the mark covers a crash.
    if (state.handles === 0 || (handle.writer && state.writers === 0)) {
      if (!core.mayDeferWriteback(ino)) await core.persist(ino, state.handles === 0);
      else deferWriteback(core, ino);
    }
  } finally {
    if (handle.hasData) await core.local.release(ino);
    if (state.handles === 0) core.volumes.closed(ino);
    if (handle.writer) core.writerClosed(ino);
  }
  // Runs after the handle count dropped: an unlinked, forgotten file is freed by its last close.
  let purge = !core.isReferenced(ino);
  if (core.cluster && state.handles === 0) {
    // The open record goes; its transaction reads the inode, so a plain close costs no purge
    // attempt, and an orphan another node unlinked meanwhile is seen and freed here.
    purge = (await core.cluster.closed(ino)) ?? purge;
  }
  if (purge) await core.maybePurge(ino);
  core.dropStateIfIdle(ino);
}

/** The last close leaves the inode's pending attributes to the write-back timer: what passthrough
 * wrote is taken in before the local fd goes, and relatime checks again as after a write-back
 * (which rewrites the record, `OpTxn.putInode`). */
function deferWriteback(core: VfsCore, ino: number): void {
  core.observeLocal(ino);
  core.state(ino).atimeChecked = false;
}

/**
 * `release` without waiting, on one node: true once done; false, with nothing done, where it
 * takes a wait (locks to drop, attributes to store, a purge, a close through the engine): call
 * `release` then.
 */
export function releaseCached(core: VfsCore, ino: number, fh: number): boolean {
  if (core.cluster) return false;
  const handle = core.handles.get(fh);
  const state = core.inodes.get(ino);
  if (handle?.kind !== "file" || handle.ino !== ino || !state || state.locks) return false;
  const last = state.handles === 1;
  // The last handle stores what passthrough changed (`persist`): only when nothing did, or when
  // the write-back timer may store it (`mayDeferWriteback`: the pending mark covers a crash).
  const st = last ? core.observeLocal(ino) : undefined;
  if (last && (state.accessedAt || (state.dirty && !core.mayDeferWriteback(ino)))) return false;
  if (last && state.dirty) state.atimeChecked = false; // as `deferWriteback` (observed above)
  if (last && state.lookups === 0) return false; // a purge may be due
  if (handle.hasData && !core.local.releaseSync(ino, st)) return false;
  core.removeHandle(fh);
  if (last) core.volumes.closed(ino);
  if (handle.writer) core.writerClosed(ino);
  core.dropStateIfIdle(ino);
  return true;
}

/** fsync: the local data, then the attributes, then the metadata store, all durable. In a
 * cluster the data is durable in the backend (the publish uploads it) and the local file is a
 * cache whose chunks are checked against their CRC after a restart: it is not synced (that was
 * a second copy of every byte written to disk inside the fsync, issue 13). */
export async function fsync(core: VfsCore, ino: number, fh: number): Promise<void> {
  core.fileHandle(fh, ino);
  const fd = core.cluster ? undefined : core.local.fdOf(ino);
  if (fd !== undefined) {
    await core.io.fsync(fd, { datasync: true });
    await core.local.syncEntry(ino);
  }
  await core.persist(ino);
  await core.ns.kv.sync();
}

export async function fallocate(
  core: VfsCore,
  ctx: Ctx,
  ino: number,
  fh: number,
  mode: number,
  offset: number,
  length: number,
): Promise<void> {
  const handle = core.fileHandle(fh, ino);
  if (!canWrite(handle.flags)) throw new FsError("EBADF", `handle ${fh} is read-only`);
  if (offset < 0 || length <= 0) {
    throw new FsError("EINVAL", `fallocate range ${offset}+${length} is invalid`);
  }
  // Every mode goes to the local file, whose file system (ext4 on the data dir) decides what it
  // supports: EOPNOTSUPP for PUNCH_HOLE without KEEP_SIZE, EINVAL for an unaligned COLLAPSE_RANGE,
  // exactly as it would for a program on it. The new size is then read back from the local file.
  const keepSize = (mode & libc.FALLOC_FL_KEEP_SIZE) !== 0;
  if (!keepSize && offset + length > MAX_FILE_SIZE) {
    throw new FsError("EFBIG", `fallocate to ${offset + length} exceeds ${MAX_FILE_SIZE}`);
  }
  const record = await core.record(ino);
  if (!isReg(record.mode)) throw new FsError("ENODEV", `inode ${ino} is not a regular file`);
  const fd = dataFd(core, ino);
  if (!keepSize) await claimQuota(core, ino, fd, offset + length);
  if (core.cluster) await core.cluster.ensure(ino, fd, offset, length);
  try {
    await core.io.fallocate(fd, mode, offset, length);
  } catch (error) {
    // ext4 keeps what it allocated before ENOSPC (and grows the size with it): take the local
    // file's new size, and tell the kernel, which keeps its cached size after a failure.
    core.observeLocal(ino);
    core.onInodeChange(ino);
    throw error;
  }
  core.cluster?.noteWrite(ino, offset, length);
  // ext4 calls file_modified() for every mode: mtime and ctime move, set-id bits drop.
  await afterDataChange(core, ctx, ino);
}

export async function lseek(
  core: VfsCore,
  ino: number,
  fh: number,
  offset: number,
  whence: number,
): Promise<number> {
  core.fileHandle(fh, ino);
  const { size } = await core.record(ino);
  switch (whence) {
    case libc.SEEK_SET:
      if (offset < 0) throw new FsError("EINVAL", `negative offset ${offset}`);
      return offset;
    case libc.SEEK_END:
      if (size + offset < 0) throw new FsError("EINVAL", `offset ${offset} before start`);
      return size + offset;
    case libc.SEEK_DATA:
    case libc.SEEK_HOLE: {
      if (offset < 0) throw new FsError("ENXIO", `negative offset ${offset}`);
      if (offset >= size) throw new FsError("ENXIO", `offset ${offset} is at or past end ${size}`);
      if (core.cluster) {
        // The local file may lack chunks never fetched here: the chunk map answers.
        const found = core.cluster.seek(ino, dataFd(core, ino), offset, whence, size);
        if (found < 0) throw new FsError("ENXIO", `no data at or after ${offset} (size ${size})`);
        return found;
      }
      try {
        const found = libc.lseek(dataFd(core, ino), offset, whence);
        return Math.min(found, size);
      } catch (error) {
        // Past the local file's data there is only the implicit hole up to the size.
        if (whence === libc.SEEK_HOLE && error instanceof FsError && error.errno === 6) return size;
        throw error;
      }
    }
    default:
      throw new FsError("EINVAL", `lseek whence ${whence} is not supported here`);
  }
}

export async function copyFileRange(
  core: VfsCore,
  ctx: Ctx,
  from: { ino: number; fh: number; offset: number },
  to: { ino: number; fh: number; offset: number },
  length: number,
  flags: number,
): Promise<number> {
  if (flags !== 0) throw new FsError("EINVAL", `copy_file_range flags ${flags} must be 0`);
  const src = core.fileHandle(from.fh, from.ino);
  const dst = core.fileHandle(to.fh, to.ino);
  if (!canRead(src.flags)) throw new FsError("EBADF", `handle ${from.fh} is write-only`);
  if (!canWrite(dst.flags) || dst.flags & libc.O_APPEND) {
    throw new FsError("EBADF", `handle ${to.fh} is not writable (or is O_APPEND)`);
  }
  if (from.offset < 0 || to.offset < 0) throw new FsError("EINVAL", "negative offset");
  const srcRecord = await core.record(from.ino);
  const dstRecord = await core.record(to.ino);
  if (isDir(srcRecord.mode) || isDir(dstRecord.mode)) {
    throw new FsError("EISDIR", "copy_file_range on a directory");
  }
  if ((srcRecord.mode & S_IFMT) !== S_IFREG || (dstRecord.mode & S_IFMT) !== S_IFREG) {
    throw new FsError("EINVAL", "copy_file_range needs regular files");
  }
  let remaining = Math.min(length, COPY_MAX_BYTES, Math.max(0, srcRecord.size - from.offset));
  if (
    from.ino === to.ino && from.offset < to.offset + remaining &&
    to.offset < from.offset + remaining
  ) {
    throw new FsError("EINVAL", "copy_file_range ranges overlap within one file");
  }
  if (to.offset + remaining > MAX_FILE_SIZE) throw new FsError("EFBIG", "copy past max size");
  const fdIn = dataFd(core, from.ino);
  const fdOut = dataFd(core, to.ino);
  await claimQuota(core, to.ino, fdOut, to.offset + remaining);
  if (core.cluster) {
    await core.cluster.ensure(from.ino, fdIn, from.offset, remaining);
    await core.cluster.ensure(to.ino, fdOut, to.offset, remaining, true);
  }
  let copied = 0;
  while (remaining > 0) {
    const n = libc.copyFileRange(
      fdIn,
      from.offset + copied,
      fdOut,
      to.offset + copied,
      Math.min(remaining, COPY_CHUNK_BYTES),
    );
    if (n === 0) break;
    copied += n;
    remaining -= n;
  }
  core.cluster?.noteWrite(to.ino, to.offset, copied);
  if (copied > 0) await afterDataChange(core, ctx, to.ino);
  return copied;
}
