/**
 * Advisory locks of one node, in memory: POSIX record locks per lock owner (fcntl F_SETLK,
 * F_SETLKW, F_GETLK: byte ranges that split and merge, dropped when the owner closes any fd of
 * the file) and flock locks per open file (whole file, shared or exclusive). The two kinds do
 * not interact, as on Linux. Waiters re-check whenever a lock of the inode is released.
 * @module
 */

import { FsError } from "../fs_error.ts";
import type { Ctx, FileLock } from "./types.ts";
import type { VfsCore } from "./core.ts";
import { O_ACCMODE, O_RDONLY, O_WRONLY } from "../io/libc.ts";

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

function table(core: VfsCore, ino: number): LockTable {
  const state = core.state(ino);
  return state.locks ??= new LockTable();
}

export function getlk(
  core: VfsCore,
  ino: number,
  fh: number,
  owner: bigint,
  lock: FileLock,
): Promise<FileLock> {
  core.fileHandle(fh, ino);
  const want = toRecord(owner, lock);
  const conflict = core.inodes.get(ino)?.locks?.recordConflict(owner, want);
  return Promise.resolve(
    conflict ? toFileLock(conflict) : { ...toFileLock(want), type: F_UNLCK },
  );
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
    if (options.flock) await setFlock(locks, ctx, fh, owner, lock, options.wait);
    else await setRecord(core, locks, ctx, owner, toRecord(owner, lock), options.wait);
  } finally {
    core.dropStateIfIdle(ino);
  }
}

async function setRecord(
  core: VfsCore,
  locks: LockTable,
  ctx: Ctx,
  owner: bigint,
  want: RecordLock,
  wait: boolean,
): Promise<void> {
  if (want.type === F_UNLCK) return locks.setRecord(want);
  for (;;) {
    const conflict = locks.recordConflict(owner, want);
    if (!conflict) return locks.setRecord(want);
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
  locks: LockTable,
  ctx: Ctx,
  fh: number,
  key: bigint,
  lock: FileLock,
  wait: boolean,
): Promise<void> {
  if (lock.type === F_UNLCK) return locks.releaseFlocks((k) => k === key);
  if (lock.type !== F_RDLCK && lock.type !== F_WRLCK) {
    throw new FsError("EINVAL", `flock type ${lock.type} is not shared or exclusive`);
  }
  // Linux converts a flock by dropping the old lock first, so a waiting converter can lose it.
  if (locks.flocks.has(key) && locks.flocks.get(key)!.type !== lock.type) {
    locks.releaseFlocks((k) => k === key);
  }
  for (;;) {
    const conflict = locks.flockConflict(key, lock.type);
    if (!conflict) {
      locks.flocks.set(key, { type: lock.type, pid: lock.pid, fh });
      return;
    }
    if (!wait) throw new FsError("EAGAIN", `file is flock()ed by pid ${conflict.pid}`);
    await locks.changed(ctx.signal);
  }
}

/** close(2) of any fd of the file by the owner drops all its POSIX locks on the file. */
export function releaseOwnerLocks(core: VfsCore, ino: number, owner: bigint): void {
  const locks = core.inodes.get(ino)?.locks;
  if (!locks) return;
  locks.releaseOwner(owner);
}

/** The last close of an open file drops its flock. */
export function releaseFlocks(core: VfsCore, ino: number, fh: number, owner?: bigint): void {
  const locks = core.inodes.get(ino)?.locks;
  if (!locks) return;
  locks.releaseFlocks((key, entry) => entry.fh === fh || (owner !== undefined && key === owner));
}
