/**
 * Advisory locks of one node, in memory: POSIX record locks per lock owner (fcntl F_SETLK,
 * F_SETLKW, F_GETLK: byte ranges that split and merge, dropped when the owner closes any fd of
 * the file) and flock locks per open file (whole file, shared or exclusive). The two kinds do
 * not interact, as on Linux. Waiters re-check whenever a lock of the inode is released.
 *
 * Used in cluster mode only (src/fuse/README.md, Locks): on one node the kernel keeps the locks.
 * There each node's locks are also mirrored into metadata (cluster_lock.ts), a lock is granted
 * only if no other node's conflicts, and an open file description's (OFD) record locks go at its
 * RELEASE: the kernel sends no unlock for them at close, and FUSE_LK_IN does not say which locks
 * are OFD ones, so the owners that locked through a handle are remembered with it (a POSIX
 * owner is forgotten at its FLUSH, which drops its locks anyway).
 * @module
 */

import { FsError } from "../fs_error.ts";
import type { Ctx, FileLock } from "./types.ts";
import type { VfsCore } from "./core.ts";
import { O_ACCMODE, O_RDONLY, O_WRONLY } from "../io/libc.ts";
import { ClusterLocks, type LocksView, type MirroredLock } from "./cluster_lock.ts";

export const F_RDLCK = 0;
export const F_WRLCK = 1;
export const F_UNLCK = 2;

/** End of a lock that extends to end of file, internally. */
const EOF = Infinity;

interface RecordLock {
  owner: bigint;
  pid: number;
  type: number;
  start: number;
  /** Inclusive; EOF for "to end of file". */
  end: number;
}

interface FlockEntry {
  type: number;
  pid: number;
  fh: number;
}

/** The locks of one inode. */
export class LockTable {
  records: RecordLock[] = [];
  readonly flocks = new Map<bigint, FlockEntry>();
  /** Record-lock owners and the handles they locked through since their last FLUSH. */
  readonly ownerHandles = new Map<bigint, Set<number>>();
  #waiters: (() => void)[] = [];

  isEmpty(): boolean {
    return this.records.length === 0 && this.flocks.size === 0 && this.#waiters.length === 0;
  }

  /** The first lock of another owner that conflicts with `want`, if any. */
  recordConflict(owner: bigint, want: RecordLock): RecordLock | undefined {
    return this.records.find((held) =>
      held.owner !== owner && held.start <= want.end && want.start <= held.end &&
      (held.type === F_WRLCK || want.type === F_WRLCK)
    );
  }

  /** Apply a lock or unlock of `owner` over [start, end]: the owner's locks in that range are
   * replaced (split where they stick out), then neighbours of the same type merge. */
  setRecord(lock: RecordLock): void {
    const kept: RecordLock[] = [];
    for (const held of this.records) {
      if (held.owner !== lock.owner || held.end < lock.start || lock.end < held.start) {
        kept.push(held);
        continue;
      }
      if (held.start < lock.start) kept.push({ ...held, end: lock.start - 1 });
      if (held.end > lock.end) kept.push({ ...held, start: lock.end + 1 });
    }
    if (lock.type !== F_UNLCK) {
      let merged = { ...lock };
      const rest: RecordLock[] = [];
      for (const held of kept) {
        const touches = held.owner === lock.owner && held.type === lock.type &&
          held.start <= merged.end + 1 && merged.start <= held.end + 1;
        if (touches) {
          merged = {
            ...merged,
            start: Math.min(merged.start, held.start),
            end: Math.max(merged.end, held.end),
          };
        } else rest.push(held);
      }
      rest.push(merged);
      this.records = rest;
    } else {
      this.records = kept;
    }
    this.records.sort((a, b) => a.start - b.start);
    this.wake();
  }

  releaseOwner(owner: bigint): void {
    this.ownerHandles.delete(owner);
    const before = this.records.length;
    this.records = this.records.filter((held) => held.owner !== owner);
    if (this.records.length !== before) this.wake();
  }

  flockConflict(key: bigint, type: number): FlockEntry | undefined {
    for (const [other, held] of this.flocks) {
      if (other !== key && (held.type === F_WRLCK || type === F_WRLCK)) return held;
    }
    return undefined;
  }

  releaseFlocks(match: (key: bigint, entry: FlockEntry) => boolean): void {
    let changed = false;
    for (const [key, entry] of this.flocks) {
      if (match(key, entry)) {
        this.flocks.delete(key);
        changed = true;
      }
    }
    if (changed) this.wake();
  }

  /** Resolves at the next release in this table, or rejects with EINTR when `signal` aborts. */
  changed(signal: AbortSignal | undefined): Promise<void> {
    return new Promise((resolve, reject) => {
      if (signal?.aborted) return reject(new FsError("EINTR", "lock wait interrupted"));
      const onAbort = () => {
        this.#waiters = this.#waiters.filter((w) => w !== wake);
        reject(new FsError("EINTR", "lock wait interrupted"));
      };
      const wake = () => {
        signal?.removeEventListener("abort", onAbort);
        resolve();
      };
      this.#waiters.push(wake);
      signal?.addEventListener("abort", onAbort, { once: true });
    });
  }

  wake(): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const wake of waiters) wake();
  }
}

function toRecord(owner: bigint, lock: FileLock): RecordLock {
  if (![F_RDLCK, F_WRLCK, F_UNLCK].includes(lock.type)) {
    throw new FsError("EINVAL", `lock type ${lock.type} is not F_RDLCK, F_WRLCK or F_UNLCK`);
  }
  const end = lock.end >= Number.MAX_SAFE_INTEGER ? EOF : lock.end;
  if (lock.start < 0 || end < lock.start) {
    throw new FsError("EINVAL", `lock range [${lock.start}, ${lock.end}] is invalid`);
  }
  return { owner, pid: lock.pid, type: lock.type, start: lock.start, end };
}

function toFileLock(held: { type: number; pid: number; start: number; end: number }): FileLock {
  return {
    type: held.type,
    pid: held.pid,
    start: held.start,
    end: held.end === EOF ? Number.MAX_SAFE_INTEGER : held.end,
  };
}

/** The metadata side of a cluster node's locks, one per Vfs; undefined on one node. */
const clusterLocksOf = new WeakMap<VfsCore, ClusterLocks>();

function clusterLocks(core: VfsCore): ClusterLocks | undefined {
  const cluster = core.cluster;
  if (!cluster) return undefined;
  let locks = clusterLocksOf.get(core);
  if (!locks) {
    locks = new ClusterLocks(core.ns.kv, cluster.nodeId, () => cluster.records.lease());
    clusterLocksOf.set(core, locks);
  }
  return locks;
}

/** This node's locks of an inode as other nodes see them, after `change` (on a copy). */
function mirror(locks: LockTable, change?: (copy: LockTable) => void): MirroredLock[] {
  let source = locks;
  if (change) {
    source = new LockTable();
    source.records = [...locks.records];
    for (const [key, entry] of locks.flocks) source.flocks.set(key, entry);
    change(source);
  }
  const out: MirroredLock[] = source.records.map((held) => ({
    kind: "posix",
    type: held.type,
    start: held.start,
    end: held.end === EOF ? -1 : held.end,
    pid: held.pid,
  }));
  for (const entry of source.flocks.values()) {
    out.push({ kind: "flock", type: entry.type, start: 0, end: -1, pid: entry.pid });
  }
  return out;
}

/** Another node's lock that conflicts with `want` (a record lock, or a flock when `flock`). */
function remoteConflict(
  view: LocksView,
  want: { type: number; start: number; end: number },
  flock: boolean,
): MirroredLock | undefined {
  return view.others.find((held) => {
    if (held.kind !== (flock ? "flock" : "posix")) return false;
    if (held.type !== F_WRLCK && want.type !== F_WRLCK) return false;
    const end = held.end < 0 ? EOF : held.end;
    return flock || (held.start <= want.end && want.start <= end);
  });
}

/** Tell other nodes this node's locks of `ino` after a release here. */
async function publishRelease(core: VfsCore, ino: number): Promise<void> {
  const remote = clusterLocks(core);
  if (!remote) return;
  await remote.serial(ino, () => {
    const locks = core.inodes.get(ino)?.locks;
    return remote.publish(ino, locks ? mirror(locks) : []);
  });
}

function table(core: VfsCore, ino: number): LockTable {
  const state = core.state(ino);
  return state.locks ??= new LockTable();
}

export async function getlk(
  core: VfsCore,
  ino: number,
  fh: number,
  owner: bigint,
  lock: FileLock,
): Promise<FileLock> {
  core.fileHandle(fh, ino);
  const want = toRecord(owner, lock);
  const conflict = core.inodes.get(ino)?.locks?.recordConflict(owner, want);
  if (conflict) return toFileLock(conflict);
  const remote = clusterLocks(core);
  if (remote && want.type !== F_UNLCK) {
    const held = remoteConflict(await remote.read(ino), want, false);
    // Another node's pid means nothing here: 0 (the kernel's own answer for a pid it cannot map).
    if (held) return toFileLock({ ...held, pid: 0, end: held.end < 0 ? EOF : held.end });
  }
  return { ...toFileLock(want), type: F_UNLCK };
}

export async function setlk(
  core: VfsCore,
  ctx: Ctx,
  ino: number,
  fh: number,
  owner: bigint,
  lock: FileLock,
  options: { wait: boolean; flock: boolean },
): Promise<void> {
  const handle = core.fileHandle(fh, ino);
  const mode = handle.flags & O_ACCMODE;
  // fcntl needs the fd open for reading to read-lock and for writing to write-lock; flock not.
  if (!options.flock) {
    if (lock.type === F_RDLCK && mode === O_WRONLY) {
      throw new FsError("EBADF", `read lock on handle ${fh} opened write-only`);
    }
    if (lock.type === F_WRLCK && mode === O_RDONLY) {
      throw new FsError("EBADF", `write lock on handle ${fh} opened read-only`);
    }
  }
  const locks = table(core, ino);
  try {
    if (options.flock) await setFlock(core, ino, locks, ctx, fh, owner, lock, options.wait);
    else {
      const want = toRecord(owner, lock);
      if (want.type !== F_UNLCK) {
        const handles = locks.ownerHandles.get(owner) ?? new Set<number>();
        locks.ownerHandles.set(owner, handles.add(fh));
      }
      await setRecord(core, ino, locks, ctx, owner, want, options.wait);
    }
  } finally {
    core.dropStateIfIdle(ino);
  }
}

/**
 * Cluster mode: grant `apply` (a lock of this node's table) only if no other node holds a
 * conflicting lock, mirroring this node's locks into metadata in the same transaction. "done",
 * "retry" (the table or the metadata changed meanwhile), or the view with the conflict in it.
 */
function grantAcrossNodes(
  remote: ClusterLocks,
  ino: number,
  locks: LockTable,
  want: { type: number; start: number; end: number },
  flock: boolean,
  localConflict: () => boolean,
  apply: (table: LockTable) => void,
): Promise<"done" | "retry" | LocksView> {
  return remote.serial(ino, async () => {
    if (localConflict()) return "retry";
    const view = await remote.read(ino);
    if (remoteConflict(view, want, flock)) return view;
    if (!await remote.grant(ino, mirror(locks, apply), view)) return "retry";
    if (localConflict()) {
      // A local lock came in while the grant was in flight (it went through the same queue,
      // so it cannot have, but the table is the truth): undo the mirror.
      await remote.publish(ino, mirror(locks));
      return "retry";
    }
    apply(locks);
    return "done";
  });
}

async function setRecord(
  core: VfsCore,
  ino: number,
  locks: LockTable,
  ctx: Ctx,
  owner: bigint,
  want: RecordLock,
  wait: boolean,
): Promise<void> {
  const remote = clusterLocks(core);
  if (want.type === F_UNLCK) {
    locks.setRecord(want);
    return await publishRelease(core, ino);
  }
  for (;;) {
    const conflict = locks.recordConflict(owner, want);
    if (!conflict && !remote) return locks.setRecord(want);
    if (!conflict) {
      const outcome = await grantAcrossNodes(
        remote!,
        ino,
        locks,
        want,
        false,
        () => locks.recordConflict(owner, want) !== undefined,
        (table) => table.setRecord(want),
      );
      if (outcome === "done") return;
      if (outcome === "retry") continue;
      if (!wait) throw new FsError("EAGAIN", `range held on another node`);
      await remote!.changed(ino, outcome, ctx.signal);
      continue;
    }
    if (!wait) throw new FsError("EAGAIN", `range held by pid ${conflict.pid}`);
    // Waiting on an owner that (transitively) waits on us would never end: EDEADLK, as Linux.
    for (let at: bigint | undefined = conflict.owner, hops = 0; at !== undefined; hops++) {
      if (at === owner || hops > 1000) {
        throw new FsError("EDEADLK", `lock wait by owner ${owner} would deadlock`);
      }
      at = core.lockWaits.get(at);
    }
    core.lockWaits.set(owner, conflict.owner);
    try {
      await locks.changed(ctx.signal);
    } finally {
      core.lockWaits.delete(owner);
    }
  }
}

async function setFlock(
  core: VfsCore,
  ino: number,
  locks: LockTable,
  ctx: Ctx,
  fh: number,
  key: bigint,
  lock: FileLock,
  wait: boolean,
): Promise<void> {
  if (lock.type === F_UNLCK) {
    locks.releaseFlocks((k) => k === key);
    return await publishRelease(core, ino);
  }
  if (lock.type !== F_RDLCK && lock.type !== F_WRLCK) {
    throw new FsError("EINVAL", `flock type ${lock.type} is not shared or exclusive`);
  }
  // Linux converts a flock by dropping the old lock first, so a waiting converter can lose it.
  if (locks.flocks.has(key) && locks.flocks.get(key)!.type !== lock.type) {
    locks.releaseFlocks((k) => k === key);
    await publishRelease(core, ino);
  }
  const remote = clusterLocks(core);
  const entry = { type: lock.type, pid: lock.pid, fh };
  for (;;) {
    const conflict = locks.flockConflict(key, lock.type);
    if (!conflict && !remote) {
      locks.flocks.set(key, entry);
      return;
    }
    if (!conflict) {
      const outcome = await grantAcrossNodes(
        remote!,
        ino,
        locks,
        { type: lock.type, start: 0, end: EOF },
        true,
        () => locks.flockConflict(key, lock.type) !== undefined,
        (table) => table.flocks.set(key, entry),
      );
      if (outcome === "done") return;
      if (outcome === "retry") continue;
      if (!wait) throw new FsError("EAGAIN", `file is flock()ed on another node`);
      await remote!.changed(ino, outcome, ctx.signal);
      continue;
    }
    if (!wait) throw new FsError("EAGAIN", `file is flock()ed by pid ${conflict.pid}`);
    await locks.changed(ctx.signal);
  }
}

/** close(2) of any fd of the file by the owner drops all its POSIX locks on the file. */
export async function releaseOwnerLocks(core: VfsCore, ino: number, owner: bigint): Promise<void> {
  const locks = core.inodes.get(ino)?.locks;
  if (!locks) return;
  const before = mirror(locks).length;
  locks.releaseOwner(owner);
  if (mirror(locks).length !== before) await publishRelease(core, ino);
}

/** The last close of an open file drops its flock and its OFD record locks (the owners that
 * locked through it and were not flushed since: see the module doc). */
export async function releaseFlocks(
  core: VfsCore,
  ino: number,
  fh: number,
  owner?: bigint,
): Promise<void> {
  const locks = core.inodes.get(ino)?.locks;
  if (!locks) return;
  const before = JSON.stringify(mirror(locks));
  locks.releaseFlocks((key, entry) => entry.fh === fh || (owner !== undefined && key === owner));
  for (const [lockOwner, handles] of locks.ownerHandles) {
    if (handles.has(fh)) locks.releaseOwner(lockOwner);
  }
  if (JSON.stringify(mirror(locks)) !== before) await publishRelease(core, ino);
}
