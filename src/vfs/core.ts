/**
 * The state every operation group of the vfs shares: the namespace, the local data store, the
 * per-inode reference counts and pending attributes, open handles, and the rules for when an
 * inode's data may be freed.
 *
 * Attribute write-back: write() does not run a metadata transaction. Size, mtime and ctime it
 * changes stay in memory as the inode's `dirty` overlay (applied on top of the stored record by
 * every read) and reach the store at flush, release, fsync, on the write-back timer, or folded
 * into the next transaction that writes the inode anyway (setattr, link, rename...).
 *
 * Pending write-back (one node): an inode whose local file may be ahead of its stored record
 * (size, mtime) is on the store's pending list from the transaction that lets it get ahead (its
 * CREATE, an O_TRUNC open, the first open for writing) until a transaction stores its record
 * with nothing pending and no handle open for writing. The data written through the backing fd
 * sits in the local file (the page cache outlives a killed daemon), so the restart takes size
 * and mtime of every listed inode from its local file (vfs.ts `recover`): a file written and
 * closed keeps its size even if the daemon died before it handled the close's RELEASE.
 * @module
 */

import { Errno, FsError } from "../fs_error.ts";
import type { IoEngine } from "../io/types.ts";
import type * as libc from "../io/libc.ts";
import type { MetaKV } from "../meta/kv.ts";
import {
  type InodeRecord,
  type Namespace,
  type NsTxn,
  systemNow,
  type Timespec,
} from "../meta/namespace.ts";
import type { LocalFileOps, LocalStore } from "../cache/local.ts";
import type { ClusterData } from "../cache/cluster_data.ts";
import type { Attr } from "./types.ts";
import type { DirListing } from "./listing.ts";
import { isDir, isReg } from "./perm.ts";
import type { LockTable } from "./lock.ts";
import { type QuotaPlan, type VolumeQuotaOptions, VolumeQuotas } from "./volume_quota.ts";

export interface VfsOptions {
  kv: MetaKV;
  io: IoEngine;
  /** Directory for local data (files under `<dataDir>/data`). */
  dataDir: string;
  /** Owner of the root directory when the store is new. Default: this process's uid/gid. */
  rootUid?: number;
  rootGid?: number;
  /** Longest time a write's size/mtime stays only in memory. Default 1000 ms. */
  attrWritebackMs?: number;
  /** Inode numbers reserved per counter transaction. Default 1024. */
  inoRangeSize?: number;
  /** Validate cached reads against the store (cluster backends). Default false (one writer). */
  validateReads?: boolean;
  /** Called when an inode's attributes changed as a side effect of an operation the kernel does
   * not expect to change them (a failed fallocate, a volume made through the admin API), so the
   * kernel's cached attributes can be invalidated. Not for unlink, rmdir and rename: the kernel
   * that sent them marks the inodes' nlink and ctime stale itself. Default: nothing. */
  onInodeChange?: (ino: number) => void;
  /** Called when names changed without the kernel asking (a volume created or deleted through
   * the admin API), so that its cached entries, negative ones included, are looked up again.
   * Default: nothing. */
  onEntriesChange?: () => void;
  /** Clock. Default: the system clock, strictly increasing. */
  now?: () => Timespec;
  /** Cluster mode (src/cache/cluster_data.ts): data in chunks published at close/fsync, the
   * local file a cache. Default: none, one node, the local file is the data. */
  cluster?: ClusterData;
  /** How reads and listings change atime now (the mount's flags, which can change while
   * mounted: `mount -o remount,ro|noatime`). Default: always relatime. */
  atimeRule?: (isDir: boolean) => AtimeRule;
  /** How the small syscalls on local files are made (config `mount.local_file_ops`, see
   * LocalStore): "inline" (default) = synchronous libc calls on the JS thread, "engine" = through
   * the I/O engine. A cluster node always uses "engine". */
  localFileOps?: LocalFileOps;
  /** Emptied local files of deleted inodes kept for new ones (config `mount.local_spare_files`,
   * LocalStore.removeSoon); inline file ops only. Default "auto": 4096 when the data directory
   * is on an ext4 without a journal (`isJournalLessExt4`), else 0. */
  localSpareFiles?: number | "auto";
  /** Local fds kept open after their last release for the next open (config
   * `mount.keep_closed_files`, LocalStore.keepClosed), at most a quarter of RLIMIT_NOFILE's soft
   * limit; inline file ops only, never in a cluster. Default `DEFAULT_KEEP_CLOSED` (16384). */
  keepClosedFiles?: number;
  /** Volumes (volumes.ts): where they live (`root`, default "volumes") and how writers reserve
   * capacity (volume_quota.ts). */
  volumes?: VolumeQuotaOptions & { root?: string };
}

/** How a read or a listing changes atime: relatime (ext4's default), always (strictatime), or
 * never (noatime, or a read-only mount). */
export type AtimeRule = "relatime" | "strictatime" | "noatime" | "readonly";

const DAY_SECONDS = 24 * 3600;

/** Inodes per transaction of the merged write-back (one node, `VfsCore.persistAll`). Since the
 * embedded store checks a long transaction's keys by sorting (session 12) a bigger batch costs no
 * more per inode, but no less either (19-23 us per inode from 16 to 1024, src/vfs/README.md),
 * while it holds the JS thread longer and a failed one is redone inode by inode: kept at 16. */
const MERGED_WRITEBACK = 16;

/** Largest file size, as ext4 with 4 KiB blocks (16 TiB - 4 KiB); beyond it EFBIG. */
export const MAX_FILE_SIZE = 2 ** 44 - 4096;
/** Longest name in bytes (NAME_MAX). */
export const NAME_MAX = 255;
/** Most hard links to one file (EXT4_LINK_MAX). */
export const LINK_MAX = 65000;
export const BLOCK_SIZE = 4096;

/** Attribute changes made in memory and not yet stored. */
export interface Dirty {
  size?: number;
  atime?: Timespec;
  mtime?: Timespec;
  ctime?: Timespec;
}

export interface InodeState {
  /** Kernel references: +1 per lookup/create/remember, -n per forget. */
  lookups: number;
  /** Open file and directory handles. */
  handles: number;
  dirty?: Dirty;
  /** Bumped on every change to `dirty`: a stored fold clears `dirty` only if nothing newer came. */
  dirtySeq: number;
  locks?: LockTable;
  /** atime was checked against the relatime rule since the inode last changed. */
  atimeChecked?: boolean;
  /** A read through the backing fd (passthrough, the shim) not yet weighed by the atime rule:
   * its time. */
  accessedAt?: Timespec;
  /** The rule that read is weighed by: the mount's when it was found (`observeLocal`), not when
   * it is weighed (`VfsCore.atimeRule`). */
  accessRule?: AtimeRule;
  /** Tail of the chain that runs O_APPEND writes one at a time (each needs the previous end). */
  appendTail?: Promise<unknown>;
  /** The volume of an opened file (0: none), read at open: its writes claim quota first. */
  volume?: number;
  /** One node: open handles that may write (`FileHandle.writer`). */
  writers?: number;
  /** One node: the inode is on the store's pending write-back list (committed). */
  marked?: boolean;
  /** Bumped when a transaction putting the inode on the list starts: an unmark that ran before
   * it does not clear `marked`. */
  markSeq?: number;
  /** Transactions that may take the inode off the list, in flight: an open for writing then
   * puts it on again (its own transaction, which the unmark's read of the mark orders). */
  unmarking?: number;
  /** One node: the attributes of a regular file whose last name went while the kernel still
   * looked it up and nothing had it open. Its record was deleted with the name (no orphan, no
   * purge at FORGET); GETATTR of the number answers these (nlink 0, as ext4's fstat of an
   * O_PATH fd) until the kernel forgets it. Opens of it fail ENOENT. */
  ghost?: Attr;
}

export interface FileHandle {
  kind: "file";
  ino: number;
  flags: number;
  /** The handle holds a reference on the inode's local fd (regular files, once opened). */
  hasData?: boolean;
  /** A cluster node's handle the kernel writes through with passthrough (`passthroughOpened`). */
  passthrough?: boolean;
  /** One node: a regular file's handle that may write (counted in `InodeState.writers`). */
  writer?: boolean;
}

export interface DirHandle {
  kind: "dir";
  ino: number;
  /** Snapshot taken at the first readdir from offset 0: offsets index into it. */
  listing?: DirListing;
}

export type Handle = FileHandle | DirHandle;

/** A transaction of one vfs operation: records read with the dirty overlay applied. */
export class OpTxn {
  readonly tx: NsTxn;
  readonly #core: VfsCore;
  readonly #seqRead = new Map<number, number>();
  /** Inodes written with their overlay folded in, and the dirtySeq folded. */
  readonly folded = new Map<number, number>();
  /** Cluster mode: inodes this transaction deletes, and the backend objects that go with them. */
  readonly deleted = new Map<number, string[]>();
  /** Cluster mode: inodes kept as orphans only because another node has them open. */
  readonly keptElsewhere = new Set<number>();
  /** Volume usage this transaction changes, applied in memory after its commit. */
  quotaPlan: QuotaPlan | undefined;
  /** One node: marked inodes this transaction stores (or is asked to look at) that may leave
   * the pending write-back list with it (`VfsCore.txn` decides). */
  readonly unmarkable = new Set<number>();
  /** Those it takes off the list, or found not on it. */
  readonly unmarked = new Set<number>();
  /** Inodes this transaction deletes (their mark goes with the record). */
  readonly gone = new Set<number>();
  /** One node: regular files this transaction deletes at once although the kernel still looks
   * them up (`dropInode`); their `InodeState.ghost` is set at the commit. */
  ghosts: Map<number, InodeRecord> | undefined;

  constructor(core: VfsCore, tx: NsTxn) {
    this.#core = core;
    this.tx = tx;
  }

  /** The inode as the vfs sees it (stored record + pending attributes), or undefined. */
  async getInode(ino: number): Promise<InodeRecord | undefined> {
    // Take in passthrough/shim writes first: otherwise an operation that sets times (utimensat
    // after the writes, as tar does) would be overridden later by the older outside change.
    this.#core.observeLocal(ino);
    const record = await this.tx.getInode(ino);
    if (!record) return undefined;
    const state = this.#core.inodes.get(ino);
    this.#seqRead.set(ino, state?.dirtySeq ?? 0);
    return applyDirty(record, state?.dirty);
  }

  /** `getInode`, or ENOENT. */
  async inode(ino: number): Promise<InodeRecord> {
    const record = await this.getInode(ino);
    if (!record) throw new FsError("ENOENT", `inode ${ino} does not exist`);
    return record;
  }

  /** A directory, or ENOENT / ENOTDIR. */
  async dir(ino: number): Promise<InodeRecord> {
    const record = await this.inode(ino);
    if (!isDir(record.mode)) throw new FsError("ENOTDIR", `inode ${ino} is not a directory`);
    return record;
  }

  /**
   * Store `record`. A cluster orphan's `uncounted` flag goes (`keepUncounted` false): whoever
   * writes such an orphan again holds it open (no name leads to it), so from this transaction on
   * it counts against its volume again (`VolumeQuotas.account` adds its inode and size back), and
   * its writes are counted and checked as any file's. Only the unlink's own `dropInode` sets it.
   */
  putInode(record: InodeRecord, keepUncounted = false): void {
    if (record.uncounted && !keepUncounted) {
      record = { ...record };
      delete record.uncounted;
    }
    this.tx.putInode(record);
    const state = this.#core.inodes.get(record.ino);
    if (state) state.atimeChecked = false;
    if (state?.marked) this.unmarkable.add(record.ino);
    const seq = this.#seqRead.get(record.ino);
    if (seq !== undefined) this.folded.set(record.ino, seq);
  }

  /** Delete the inode (or, if the kernel or a handle still references it, or in a cluster
   * for any regular file, put it on the orphan list). Returns whether it was deleted, so the
   * caller frees its local data. */
  async dropInode(record: InodeRecord): Promise<boolean> {
    const cluster = this.#core.cluster;
    const local = this.#core.isReferenced(record.ino);
    // One node, a regular file only the kernel's lookups reach (no handle): nothing can read or
    // write it any more (an open needs a handle, which `openChecked` refuses once this started),
    // so it goes now instead of as an orphan freed by a second transaction at the kernel's
    // FORGET (src/fuse/README.md, "An unlink in one transaction"). A directory keeps the orphan:
    // a process's cwd holds it without a handle and can still list it and stat ".".
    if (
      local && cluster === undefined && isReg(record.mode) &&
      this.#core.inodes.get(record.ino)!.handles === 0
    ) {
      this.#core.startDeleting(record.ino);
      (this.ghosts ??= new Map()).set(record.ino, record);
      await this.deleteInode(record.ino, true, false);
      return true;
    }
    // In a cluster another node may have a regular file open without any trace in the store
    // (an open writes nothing): it stays an orphan until every node acknowledged the unlink
    // (ClusterData.reclaimLater, src/cache/open_records.ts). Directories and special files keep
    // no data and are deleted at once.
    const mayBeOpen = cluster !== undefined && isReg(record.mode);
    if (local || mayBeOpen) {
      // Not open here: its volume usage goes now, as if deleted, and the flag in the record says
      // so to whoever deletes it later. A node holding it open counts it again with its first
      // write of the record (`putInode`; `recountOrphan` when its watch sees the unlink).
      if (!local) this.keptElsewhere.add(record.ino);
      if (!local && record.volume) this.putInode({ ...record, uncounted: true }, true);
      else this.putInode(record);
      this.tx.addOrphan(record.ino);
      return false;
    }
    await this.deleteInode(record.ino, isReg(record.mode), false);
    return true;
  }

  /** Delete the inode (with, in a cluster, a regular file's chunk map; its objects go after the
   * commit). Other types have no chunk map or open records to read and delete. */
  async deleteInode(ino: number, regular = true, orphan = true): Promise<void> {
    this.tx.deleteInode(ino, this.#core.inodes.get(ino)?.marked === true, orphan);
    this.gone.add(ino);
    this.folded.set(ino, this.#seqRead.get(ino) ?? this.#core.inodes.get(ino)?.dirtySeq ?? 0);
    const cluster = this.#core.cluster;
    if (cluster) this.deleted.set(ino, regular ? await cluster.dropInTxn(this.tx, ino) : []);
  }
}

/** Most inodes whose atime alone changed stored in one transaction by `persistAll`. */
const ATIME_BATCH = 64;

/**
 * `at`, or one nanosecond after `ctime` when it is not newer: the time of a read or write made
 * through the local file (the kernel's clock) that the vfs saw after a change it stamped with
 * its own clock (`now`). Against ctime only: mtime and atime may be set to any time (utime).
 */
function justAfter(at: Timespec, ctime: Timespec): Timespec {
  if (at.sec > ctime.sec || (at.sec === ctime.sec && at.nsec > ctime.nsec)) return at;
  const nsec = ctime.nsec + 1;
  return nsec === 1_000_000_000 ? { sec: ctime.sec + 1, nsec: 0 } : { sec: ctime.sec, nsec };
}

/** How much each rule moves atime: never, by relatime, always. */
const MOVES: Record<AtimeRule, number> = { readonly: 0, noatime: 0, relatime: 1, strictatime: 2 };

/** Whether a read or listing at `at` changes atime by `rule` (`VfsCore.atimeDue`). */
function atimeDueBy(rule: AtimeRule, record: InodeRecord, at: Timespec): boolean {
  if (rule === "readonly" || rule === "noatime") return false;
  if (rule === "strictatime") return true;
  const notAfter = (a: Timespec, b: Timespec) =>
    a.sec < b.sec || (a.sec === b.sec && a.nsec <= b.nsec);
  return notAfter(record.atime, record.mtime) || notAfter(record.atime, record.ctime) ||
    at.sec - record.atime.sec >= DAY_SECONDS;
}

/** Pending attributes that are an atime alone (a read under relatime, no write). */
function atimeOnly(dirty: Dirty | undefined): boolean {
  return dirty !== undefined && dirty.atime !== undefined && dirty.size === undefined &&
    dirty.mtime === undefined && dirty.ctime === undefined;
}

/** `record` with the pending attributes applied, changed in place: every caller passes a record
 * just decoded from the store's or the cache's bytes (`getInode`, `cachedInode`), which nothing
 * else holds, so the copy this made (an object and four times per GETATTR, LOOKUP or OPEN of an
 * inode with pending attributes) bought nothing. */
function applyDirty(record: InodeRecord, dirty: Dirty | undefined): InodeRecord {
  if (!dirty) return record;
  if (dirty.size !== undefined) record.size = dirty.size;
  if (dirty.atime) record.atime = dirty.atime;
  if (dirty.mtime) record.mtime = dirty.mtime;
  if (dirty.ctime) record.ctime = dirty.ctime;
  return record;
}

export class VfsCore {
  readonly ns: Namespace;
  readonly io: IoEngine;
  readonly local: LocalStore;
  readonly dataDir: string;
  readonly now: () => Timespec;
  readonly onInodeChange: (ino: number) => void;
  readonly onEntriesChange: () => void;
  readonly cluster: ClusterData | undefined;
  readonly #ruleOf: (isDir: boolean) => AtimeRule;
  /** The mount's rule for files at the last look (`atimeRule`). */
  #fileRule: AtimeRule | undefined;
  readonly volumes: VolumeQuotas;
  /** The directory under the root holding the volumes (a name, default "volumes"). */
  readonly volumeRoot: string;
  readonly inodes = new Map<number, InodeState>();
  readonly handles = new Map<number, Handle>();
  /** Cluster orphans just made with no handle here (OpTxn.keptElsewhere, committed): freed once
   * every node acknowledged the unlink (`ClusterData.reclaimLater`), not by the unlink. */
  readonly keptElsewhere = new Set<number>();
  /** POSIX lock owners waiting, and on whom (for EDEADLK detection). */
  readonly lockWaits = new Map<bigint, bigint>();
  readonly #writebackMs: number;
  readonly #dirtyInodes = new Set<number>();
  /** Marked inodes whose last writer closed with nothing to store: off the list at the next
   * write-back (one transaction for all). */
  readonly #unmarkDue = new Set<number>();
  /** Cluster mode: per inode, its publish in flight and those queued behind it (#publish). */
  readonly #publishing = new Map<number, Promise<void>>();
  #timer: ReturnType<typeof setTimeout> | undefined;
  #nextFh = 1;
  #closed = false;

  constructor(ns: Namespace, local: LocalStore, options: VfsOptions) {
    this.ns = ns;
    this.io = options.io;
    this.local = local;
    this.dataDir = options.dataDir;
    this.now = options.now ?? systemNow;
    this.onInodeChange = options.onInodeChange ?? (() => {});
    this.onEntriesChange = options.onEntriesChange ?? (() => {});
    this.cluster = options.cluster;
    this.#ruleOf = options.atimeRule ?? (() => "relatime");
    this.#writebackMs = options.attrWritebackMs ?? 1000;
    this.volumes = new VolumeQuotas(this, options.cluster?.nodeId ?? "local", options.volumes);
    this.volumeRoot = options.volumes?.root ?? "volumes";
    // Orphans whose reclaim barrier passed are freed here; the watch asks which files are open.
    if (this.cluster) {
      this.cluster.onOrphans = (inos) => this.purgeMany(inos);
      this.cluster.isOpenHere = (ino) => (this.inodes.get(ino)?.handles ?? 0) > 0;
      this.cluster.onHeld = (ino) => this.recountOrphan(ino);
    }
  }

  // --- per-inode state ---

  state(ino: number): InodeState {
    let state = this.inodes.get(ino);
    if (!state) this.inodes.set(ino, state = { lookups: 0, handles: 0, dirtySeq: 0 });
    return state;
  }

  /**
   * The kernel or an open handle can still reach the inode by number. In a cluster only open
   * handles count (on every node, through open records): another node's kernel keeps no count
   * here, so a lookup alone never keeps an unlinked inode anywhere (as NFS: ESTALE).
   */
  isReferenced(ino: number): boolean {
    const state = this.inodes.get(ino);
    return state !== undefined && (state.handles > 0 || (!this.cluster && state.lookups > 0));
  }

  /** The kernel holds the inode (lookup count above 0): what it caches of the inode is as
   * current as a readdirplus entry would make it. On one node only this kernel changes it; in a
   * cluster other nodes' changes reach the kernel as FUSE_NOTIFY_INVAL_INODE from the metadata
   * watch, the same watch that drops the record a readdirplus entry would be built from. */
  knownToKernel(ino: number): boolean {
    const state = this.inodes.get(ino);
    return state !== undefined && state.lookups > 0;
  }

  /** Forget the in-memory state of an inode nobody references and nothing is pending for. */
  dropStateIfIdle(ino: number): void {
    const state = this.inodes.get(ino);
    if (!state || state.lookups > 0 || state.handles > 0 || state.dirty || state.marked) return;
    if (state.locks && !state.locks.isEmpty()) return;
    this.inodes.delete(ino);
  }

  // --- reads ---

  /** The inode as the vfs sees it (stored + pending attributes), or ENOENT. */
  async record(ino: number): Promise<InodeRecord> {
    this.observeLocal(ino);
    const record = await this.ns.getInode(ino);
    if (!record) throw new FsError("ENOENT", `inode ${ino} does not exist`);
    return this.#current(ino, record);
  }

  /**
   * `record` without waiting: the inode from the namespace's cache, undefined when only the store
   * can tell (the caller then takes `record`). The same checks and pending attributes as
   * `record`; the synchronous fast path of GETATTR, LOOKUP and OPEN.
   */
  recordCached(ino: number): InodeRecord | undefined {
    this.observeLocal(ino);
    return this.#cachedCurrent(ino);
  }

  /**
   * `attr(recordCached(ino))`, with the stat `observeLocal` takes of an open local file serving
   * st_blocks as well: `attr` would fstat the same fd again in the same synchronous run (two
   * `fstat`s per GETATTR or LOOKUP of a file open in the daemon, one now). The fast path of
   * GETATTR and LOOKUP.
   */
  attrCached(ino: number): Attr | undefined {
    const st = this.observeLocal(ino);
    const record = this.#cachedCurrent(ino);
    if (record === undefined) return undefined;
    return this.attr(record, st !== undefined && isReg(record.mode) ? st.blocks : undefined);
  }

  #cachedCurrent(ino: number): InodeRecord | undefined {
    const record = this.ns.cachedInode(ino);
    if (record === undefined) return undefined;
    if (record === null) throw new FsError("ENOENT", `inode ${ino} does not exist`);
    return this.#current(ino, record);
  }

  /** The stored record with this process's pending attributes and atime rule applied. */
  #current(ino: number, record: InodeRecord): InodeRecord {
    const state = this.inodes.get(ino);
    const current = applyDirty(record, state?.dirty);
    if (state?.accessedAt) return this.#weighAccess(state, current);
    return current;
  }

  /** A read seen through the backing fd: atime moves to its time if the rule it was found under
   * says so. */
  #weighAccess(state: InodeState, record: InodeRecord): InodeRecord {
    const seen = state.accessedAt!;
    const rule = state.accessRule ?? this.atimeRule(false);
    state.accessedAt = undefined;
    state.accessRule = undefined;
    if (!atimeDueBy(rule, record, seen)) return record;
    // The local file's atime is the kernel's clock (coarse: up to a tick behind), the ctime of a
    // utime or chmod this daemon's (`now`): a read right after such a change could get an atime
    // not newer than its ctime, and relatime would then move it again at the next read (the flaky
    // POSIX case "reads move atime by the relatime rule"). The read was seen after the change (a
    // change observes the local file first, `record`), so it is put just after it, as ext4's one
    // clock puts it; a read seen later than the change's time keeps its own time.
    const at = justAfter(seen, record.ctime);
    state.atimeChecked = true;
    this.markDirty(record.ino, { atime: at });
    return { ...record, atime: at };
  }

  /**
   * Whether a read or listing at `at` (default now) changes atime: never on a read-only or
   * noatime mount; by relatime (ext4's default mount option) only if atime is not newer than
   * mtime or ctime, or is a day old; always under strictatime.
   */
  atimeDue(record: InodeRecord, at: Timespec = this.now()): boolean {
    return atimeDueBy(this.atimeRule(isDir(record.mode)), record, at);
  }

  /**
   * The mount's atime rule now (`VfsOptions.atimeRule`, a look at its flags). A look that finds
   * the rule for files changed first fixes the rule of every read through a backing fd made
   * before it and not yet weighed (`#fileRuleChanged`): those were made under the old rule or,
   * for a file open across the remount, perhaps already under the new one.
   */
  atimeRule(isDir: boolean): AtimeRule {
    const rule = this.#ruleOf(isDir);
    // Only a look for files compares (a directory's look costs no second poll): one for a
    // directory that found a remount leaves it to the next look for files, which finding a read
    // makes before the read is weighed.
    if (!isDir && rule !== this.#fileRule) {
      const before = this.#fileRule;
      this.#fileRule = rule;
      if (before !== undefined) this.#fileRuleChanged(before, rule);
    }
    return rule;
  }

  /**
   * The rule for files changed (`mount -o remount,ro|rw|noatime|...`) since the last look: reads
   * through backing fds made before this look are found now (every file open in the daemon) and,
   * with those found earlier and not yet weighed, weighed later by the rule of the two that moves
   * atime least. A passthrough read is otherwise found only at the next GETATTR, flush or RELEASE,
   * and RELEASE is sent asynchronously: at load it came after `remount,rw`, and the read made under
   * ro moved atime (the flaky POSIX case "a read-only or noatime mount moves no atime"). Every
   * readable OPEN looks (`atimeDue`), so the reads of a file opened after a remount are weighed by
   * the new rule.
   */
  #fileRuleChanged(before: AtimeRule, after: AtimeRule): void {
    const rule = MOVES[after] < MOVES[before] ? after : before;
    for (const [ino, state] of this.inodes) {
      if (state.handles > 0) this.observeLocal(ino, false);
      if (state.accessedAt && state.accessRule === undefined) state.accessRule = rule;
    }
  }

  /** The attributes of a record; `blocks` (st_blocks) from a stat of the local file unless
   * given. */
  attr(record: InodeRecord, blocks?: number): Attr {
    return {
      ino: record.ino,
      mode: record.mode,
      nlink: record.nlink,
      uid: record.uid,
      gid: record.gid,
      rdev: record.rdev,
      size: record.size,
      blocks: blocks ??
        (isReg(record.mode) ? this.local.blocks(record.ino) : isDir(record.mode) ? 8 : 0),
      blksize: BLOCK_SIZE,
      atime: record.atime,
      mtime: record.mtime,
      ctime: record.ctime,
      btime: record.btime,
    };
  }

  /**
   * Take in data changes made through the backing fd without the vfs (FUSE passthrough writes,
   * the shim): the local file's size, and its mtime as mtime and ctime, become pending attributes
   * like those of a write through the vfs.
   */
  observeLocal(ino: number, look = true): libc.Stat | undefined {
    // A cluster node's own chunk fills change the local file: only a file written with
    // passthrough (whose local file is the whole file, never filled) is looked at.
    if (this.cluster && !this.cluster.watchesOutside(ino)) return;
    // A local fd kept with no handle (LocalStore.keepClosed) was looked at by the last release:
    // only stores through a mapping that outlived the close can change it now, which a closed
    // file's GETATTR never saw either; the next release looks (src/fuse/README.md, "Kept local
    // files"). Its st_blocks is then one fstat into a buffer (`attr`, LocalStore.blocks).
    if (this.local.isKept(ino)) return;
    const seen = this.local.changedOutsideStat(ino);
    const change = seen?.change;
    if (!change) return seen?.st;
    const st = change.modified;
    if (st) {
      // A write right after a chmod or utime: after its ctime, never before (`justAfter`).
      const ctime = this.inodes.get(ino)?.dirty?.ctime ?? this.ns.cachedInode(ino)?.ctime;
      const seenAt = { sec: st.mtimeSec, nsec: st.mtimeNsec };
      const time = ctime ? justAfter(seenAt, ctime) : seenAt;
      // Set-id bits are not dropped here: the writer is unknown (root keeps them), and the kernel
      // asks for the drop itself (an empty SETATTR under HANDLE_KILLPRIV_V2) before an
      // unprivileged passthrough write to a set-id file.
      this.markDirty(ino, { size: st.size, mtime: time, ctime: time });
    }
    // Weighed by the next record() (the rule needs the stored times); the first read counts, but
    // for one found under a rule that moves nothing.
    if (change.accessed) {
      const state = this.state(ino);
      if (!state.accessedAt || MOVES[state.accessRule ?? "relatime"] === 0) {
        state.accessedAt = change.accessed;
        state.accessRule = undefined;
      }
      // The rule it was found under: a look now, which may find a remount, and then fixes it
      // (`#fileRuleChanged`; looked at before `??=` reads the field).
      if (look) {
        const now = this.atimeRule(false);
        state.accessRule ??= now;
      }
    }
    return seen.st;
  }

  // --- transactions ---

  /** Run one operation as one metadata transaction (see Namespace.transact); afterwards the
   * pending attributes folded into what it wrote are no longer pending. */
  async txn<T>(operation: (t: OpTxn) => Promise<T>): Promise<T> {
    let last: OpTxn | undefined;
    // Marked inodes this call may take off the pending list, with their markSeq then.
    let unmarking: Map<number, number> | undefined;
    // Inodes any run of the operation started deleting at once (`OpTxn.ghosts`).
    let deleting: Set<number> | undefined;
    let committed = false;
    let result: T;
    try {
      result = await this.ns.transact(async (tx) => {
        if (last?.ghosts) {
          for (const ino of last.ghosts.keys()) (deleting ??= new Set()).add(ino);
        }
        const t = last = new OpTxn(this, tx);
        const result = await operation(t);
        if (t.unmarkable.size > 0) await this.#unmarkIn(t, unmarking ??= new Map());
        // Volume usage moves in the same transaction as the change that moves it.
        if (tx.mayTouchVolumes()) t.quotaPlan = await this.volumes.account(t);
        return result;
      });
      committed = true;
    } finally {
      if (unmarking) this.#unmarkSettled(unmarking, undefined);
      if (last?.ghosts) { for (const ino of last.ghosts.keys()) (deleting ??= new Set()).add(ino); }
      if (deleting) this.#endDeleting(deleting, committed ? last : undefined);
    }
    if (unmarking) this.#unmarkSettled(unmarking, last!);
    for (const ino of last!.gone) {
      const state = this.inodes.get(ino);
      if (state) state.marked = false;
    }
    if (last!.quotaPlan) this.volumes.afterCommit(last!.quotaPlan);
    for (const [ino, seq] of last!.folded) this.#clean(ino, seq);
    for (const [ino, objects] of last!.deleted) this.cluster?.deleted(ino, objects);
    for (const ino of last!.keptElsewhere) this.keptElsewhere.add(ino);
    return result;
  }

  // --- deletions at the unlink (one node, `OpTxn.dropInode`) ---

  /** Per inode, the deletion of a looked-up regular file in flight: opens wait for it. */
  readonly #deleting = new Map<number, { settled: Promise<void>; settle: () => void }>();

  startDeleting(ino: number): void {
    if (this.#deleting.has(ino)) return;
    let settle!: () => void;
    const settled = new Promise<void>((resolve) => settle = resolve);
    this.#deleting.set(ino, { settled, settle });
  }

  /** The transaction of `startDeleting` ended: committed (`committed` holds the ghosts of its
   * last run) or not. The ghosts are set before the waiting opens resume. */
  #endDeleting(inodes: Set<number>, committed: OpTxn | undefined): void {
    if (committed?.ghosts) {
      for (const [ino, record] of committed.ghosts) {
        const state = this.inodes.get(ino);
        // Not when the kernel's FORGET came meanwhile: nothing can ask for the number any more.
        // No stat of the local file for st_blocks (it is about to go): what a dense file holds.
        if (state && state.lookups > 0) {
          state.ghost = this.attr(record, Math.ceil(record.size / BLOCK_SIZE) * (BLOCK_SIZE / 512));
        }
      }
    }
    for (const ino of inodes) {
      this.#deleting.get(ino)?.settle();
      this.#deleting.delete(ino);
    }
  }

  /** The inode may be deleted under an open that got its record earlier: in flight, or done
   * while the kernel still looks it up. */
  mayBeDeleted(ino: number): boolean {
    return this.#deleting.has(ino) || this.inodes.get(ino)?.ghost !== undefined;
  }

  /** Settles when no deletion of the inode is in flight. */
  async deletionSettled(ino: number): Promise<void> {
    await this.#deleting.get(ino)?.settled;
  }

  // --- pending write-back list (one node) ---

  /** An open for writing must put the inode on the pending list first (its own transaction). */
  needsMark(ino: number): boolean {
    if (this.cluster) return false;
    const state = this.inodes.get(ino);
    return !state?.marked || (state.unmarking ?? 0) > 0;
  }

  /** Put the inode on the pending write-back list before a writer gets its handle. */
  async markPending(ino: number): Promise<void> {
    const state = this.state(ino);
    state.markSeq = (state.markSeq ?? 0) + 1;
    await this.txn((t) => Promise.resolve(t.tx.addPending(ino, this.markStamp())));
    state.marked = true;
  }

  /** A value of a pending mark that no earlier mark had (`NsTxn.addPending`). */
  markStamp(): Uint8Array {
    return crypto.getRandomValues(new Uint8Array(8));
  }

  /** A transaction that puts the inode on the list is about to start (create, O_TRUNC open). */
  willMark(ino: number): void {
    const state = this.state(ino);
    state.markSeq = (state.markSeq ?? 0) + 1;
  }

  /** In the transaction: the inodes of `t.unmarkable` with no writer and nothing pending beyond
   * what it stores leave the list. The mark is read (compared at commit), so a mark written by
   * an open for writing meanwhile makes this rerun (and then keep it). */
  async #unmarkIn(t: OpTxn, unmarking: Map<number, number>): Promise<void> {
    for (const ino of t.unmarkable) {
      const state = this.inodes.get(ino);
      if (!state?.marked || (state.writers ?? 0) > 0 || t.gone.has(ino)) continue;
      const folded = t.folded.get(ino);
      if (state.dirty && (folded === undefined || folded !== state.dirtySeq)) continue;
      if (!unmarking.has(ino)) {
        unmarking.set(ino, state.markSeq ?? 0);
        state.unmarking = (state.unmarking ?? 0) + 1;
      }
      if (await t.tx.isPending(ino)) t.tx.removePending(ino);
      t.unmarked.add(ino);
    }
  }

  /** After the transaction of `#unmarkIn`: `committed` is its last run once it committed
   * (undefined: the settling, committed or not, which ends the in-flight count). */
  #unmarkSettled(unmarking: Map<number, number>, committed: OpTxn | undefined): void {
    for (const [ino, seq] of unmarking) {
      const state = this.inodes.get(ino);
      if (!state) continue;
      if (!committed) {
        state.unmarking = Math.max(0, (state.unmarking ?? 1) - 1);
        continue;
      }
      if (committed.unmarked.has(ino) && (state.markSeq ?? 0) === seq) state.marked = false;
    }
  }

  /** The last writer of a marked inode closed: off the list with the next write-back. */
  writerClosed(ino: number): void {
    const state = this.inodes.get(ino);
    if (!state?.marked || (state.writers ?? 0) > 0) return;
    this.#unmarkDue.add(ino);
    this.#armTimer();
  }

  // --- attribute write-back ---

  /** Record attribute changes of a write-like operation in memory. */
  markDirty(ino: number, change: Dirty): void {
    const state = this.state(ino);
    state.dirty = { ...state.dirty, ...change };
    state.dirtySeq++;
    if (change.mtime || change.ctime) state.atimeChecked = false;
    this.#dirtyInodes.add(ino);
    this.#armTimer();
  }

  #armTimer(): void {
    if (this.#timer === undefined && !this.#closed) {
      const timer = setTimeout(() => {
        this.#timer = undefined;
        this.persistAll(true).catch((error) =>
          console.error(`skyfs: attribute write-back: ${error}`)
        );
      }, this.#writebackMs);
      // The FUSE session keeps the process alive; a pending write-back alone must not.
      Deno.unrefTimer(timer);
      this.#timer = timer;
    }
  }

  #clean(ino: number, seq: number): void {
    const state = this.inodes.get(ino);
    if (!state?.dirty || state.dirtySeq !== seq) return;
    state.dirty = undefined;
    this.#dirtyInodes.delete(ino);
  }

  /** Store the inode's pending attributes (nothing if none). `close`: for a flush or the last
   * release, where a cluster node leaves a change of atime alone to the write-back timer
   * (`#publishNow`). */
  async persist(ino: number, close = false): Promise<void> {
    if (this.cluster) return await this.#publish(this.cluster, ino, close);
    this.observeLocal(ino);
    if (this.inodes.get(ino)?.accessedAt) await this.record(ino);
    if (!this.inodes.get(ino)?.dirty) return;
    await this.txn(async (t) => {
      const record = await t.getInode(ino);
      if (record) t.putInode(record); // getInode applied the overlay; putting it stores it
    });
  }

  /**
   * Cluster mode: dirty chunks become new backend objects, then the chunk map and the
   * attributes change in one transaction, so no reader sees half of it. One publish of an inode
   * at a time: the write-back timer's and a close's at once read the same chunks twice, could
   * commit the older bytes last (the timer's map over the close's), and the timer's read the
   * local file after the close had closed it (issue 13: "attribute write-back: EBADF"). So a
   * flush, fsync or close waits for the write-back in flight, then publishes what is left.
   */
  async #publish(cluster: ClusterData, ino: number, close = false): Promise<void> {
    const previous = this.#publishing.get(ino) ?? Promise.resolve();
    const run = previous.catch(() => {}).then(() => this.#publishNow(cluster, ino, close));
    this.#publishing.set(ino, run);
    try {
      await run;
    } finally {
      if (this.#publishing.get(ino) === run) this.#publishing.delete(ino);
    }
  }

  async #publishNow(cluster: ClusterData, ino: number, close: boolean): Promise<void> {
    // Size and mtime of passthrough writes first: the upload's look at the local file may end
    // the watch (its last writer closed), after which the transaction's getInode takes nothing.
    this.observeLocal(ino);
    const pending = await cluster.upload(ino);
    const dirty = this.inodes.get(ino)?.dirty;
    if (!dirty && !pending) return;
    // A close after reads only changed atime (relatime): close-to-open is about data, size and
    // mtime, so that change waits for the write-back timer (armed by markDirty), which stores the
    // atimes of many inodes in one transaction (`persistAll`). Otherwise every read-only open +
    // close of a file written since its last read cost a proposal (git add reads each file it
    // adds once: 200 proposals of 1,300 for 200 files, issue 13). fsync still stores it.
    if (close && !pending && atimeOnly(dirty)) return;
    await this.txn(async (t) => {
      const record = await t.getInode(ino);
      if (!record) return;
      t.putInode(record);
      if (pending) await cluster.applyInTxn(t.tx, ino, pending, record.size);
    });
    if (pending) cluster.published(ino, pending);
  }

  /** Store every inode's pending attributes (and publish, in a cluster); the write-back timer
   * passes `timer`. */
  async persistAll(timer = false): Promise<void> {
    if (!this.cluster) return await this.#persistMerged();
    // Cluster mode: inodes whose only pending change is atime are stored together, up to
    // ATIME_BATCH per transaction (one proposal), not one transaction each.
    const atimes: number[] = [];
    for (const ino of [...this.#dirtyInodes]) {
      // A file a passthrough writer has open is published whole each time: at its close and
      // fsync, not by the timer (ClusterData.writingOutside).
      if (timer && this.cluster?.writingOutside(ino)) continue;
      if (
        this.cluster && atimeOnly(this.inodes.get(ino)?.dirty) && !this.#publishing.has(ino) &&
        !this.cluster.unpublished(ino)
      ) {
        atimes.push(ino);
        continue;
      }
      await this.persist(ino);
    }
    for (let at = 0; at < atimes.length; at += ATIME_BATCH) {
      const batch = atimes.slice(at, at + ATIME_BATCH);
      await this.txn(async (t) => {
        for (const ino of batch) {
          const record = await t.getInode(ino); // with the pending atime applied
          if (record) t.putInode(record);
        }
      });
      // Kept only for the pending atime (the kernel may have forgotten the inode since).
      for (const ino of batch) this.dropStateIfIdle(ino);
    }
  }

  /**
   * One node: the pending attributes of every dirty inode, and the pending write-back marks
   * that can go (`writerClosed`), stored in one transaction per `MERGED_WRITEBACK` inodes. A
   * batch that fails (EDQUOT of one inode in a shrunk volume) is stored one inode at a time.
   */
  async #persistMerged(): Promise<void> {
    const all = [...new Set([...this.#dirtyInodes, ...this.#unmarkDue])];
    for (let i = 0; i < all.length; i += MERGED_WRITEBACK) {
      const batch = all.slice(i, i + MERGED_WRITEBACK);
      for (const ino of batch) {
        this.#unmarkDue.delete(ino);
        // A read through the backing fd is weighed by the atime rule first (as `persist`).
        this.observeLocal(ino);
        if (this.inodes.get(ino)?.accessedAt) await this.record(ino);
      }
      try {
        await this.txn(async (t) => {
          for (const ino of batch) {
            const state = this.inodes.get(ino);
            if (!state || (!state.dirty && !state.marked)) continue;
            const record = await t.getInode(ino);
            if (record && state.dirty) t.putInode(record);
            if (state.marked) t.unmarkable.add(ino);
          }
        });
      } catch (error) {
        console.error(`skyfs: attribute write-back of ${batch.length} inodes: ${error}`);
        for (const ino of batch) {
          await this.persist(ino).catch((error) =>
            console.error(`skyfs: attribute write-back of inode ${ino}: ${error}`)
          );
        }
      }
      for (const ino of batch) this.dropStateIfIdle(ino);
    }
  }

  /** One node: the release of the inode's last handle (or last writer) may leave its pending
   * attributes to the write-back timer (`#persistMerged`): its pending write-back mark keeps
   * them safe from kill -9 meanwhile. Not for a file in a volume, whose stored size settles its
   * quota claim. */
  mayDeferWriteback(ino: number): boolean {
    if (this.cluster) return false;
    const state = this.inodes.get(ino);
    return state?.marked === true && !state.volume && !state.accessedAt;
  }

  /**
   * A read or a listing accessed the inode: update atime by the mount's rule (`atimeDue`). FUSE
   * leaves atime to the daemon (the kernel marks its inodes S_NOATIME). The new atime is written
   * back like a write's mtime, so reading costs no transaction. Under relatime the check is made
   * once per change of the inode (`atimeChecked`), not once per read.
   */
  async touchAtime(ino: number, dir: boolean): Promise<void> {
    const state = this.state(ino);
    if (state.atimeChecked && this.atimeRule(dir) === "relatime") return;
    const record = await this.record(ino);
    const rule = this.atimeRule(dir);
    // Not remembered as checked on a read-only or noatime mount: a remount may end that.
    if (rule === "relatime") state.atimeChecked = true;
    const now = this.now();
    if (this.atimeDue(record, now)) this.markDirty(ino, { atime: now });
  }

  // --- handles ---

  addHandle(handle: Handle): number {
    const fh = this.#nextFh++;
    this.handles.set(fh, handle);
    const state = this.state(handle.ino);
    state.handles++;
    if (handle.kind === "file" && handle.writer) state.writers = (state.writers ?? 0) + 1;
    return fh;
  }

  fileHandle(fh: number, ino?: number): FileHandle {
    const handle = this.handles.get(fh);
    if (handle?.kind !== "file" || (ino !== undefined && handle.ino !== ino)) {
      throw new FsError("EBADF", `file handle ${fh} is not open${ino ? ` on inode ${ino}` : ""}`);
    }
    return handle;
  }

  dirHandle(fh: number, ino: number): DirHandle {
    const handle = this.handles.get(fh);
    if (handle?.kind !== "dir" || handle.ino !== ino) {
      throw new FsError("EBADF", `directory handle ${fh} is not open on inode ${ino}`);
    }
    return handle;
  }

  /** Drop a handle; the inode may now be unreferenced. */
  removeHandle(fh: number): Handle | undefined {
    const handle = this.handles.get(fh);
    if (!handle) return undefined;
    this.handles.delete(fh);
    const state = this.state(handle.ino);
    state.handles--;
    if (handle.kind === "file" && handle.writer) state.writers = (state.writers ?? 1) - 1;
    return handle;
  }

  // --- lifetimes ---

  /**
   * Free an unlinked inode once nothing references it: nlink 0 (no name can find it), no
   * kernel lookups (no node id the kernel could still send), no open handles (no read/write can
   * arrive). The check runs again inside the transaction because a lookup-count change can land
   * between the caller's check and the commit; the purge is idempotent, so the unlink and the
   * last forget or release may both call it. In a cluster the inode also stays while another
   * node has it open (its open record); that node's last close calls this in turn.
   */
  async maybePurge(ino: number): Promise<boolean> {
    return (await this.purgeMany([ino])).length > 0;
  }

  /** `maybePurge` of several inodes in one transaction (a cluster node's reclaim of the orphans
   * whose barrier passed); returns those freed. */
  async purgeMany(inos: number[]): Promise<number[]> {
    const candidates = inos.filter((ino) => !this.isReferenced(ino));
    if (candidates.length === 0) return [];
    const purged = await this.txn(async (t) => {
      const out: InodeRecord[] = [];
      await this.cluster?.prefetchOpen(t.tx, candidates);
      for (const ino of candidates) {
        const record = await t.tx.getInode(ino);
        if (!record || record.nlink > 0 || this.isReferenced(ino)) continue;
        if (this.cluster && await this.cluster.openElsewhere(t.tx, ino)) continue;
        await t.deleteInode(ino);
        out.push(record);
      }
      return out;
    });
    for (const record of purged) {
      // Only a regular file has a local file; it goes after the commit, like an unlink's
      // (LocalStore.removeSoon; a crash leaves it to the restart's removeDangling).
      // In a cluster the purge is awaited whole (gc and the open records expect it done).
      if (this.cluster) await this.local.remove(record.ino);
      else if (isReg(record.mode)) this.local.removeSoon(record.ino, record.size);
      this.dropStateIfIdle(record.ino);
    }
    return purged.map((record) => record.ino);
  }

  /**
   * Cluster mode: this node holds orphan `ino` open and has just put its open record (its watch
   * saw the unlink, or an open raced it). If the unlink took the orphan off its volume
   * (`uncounted`: nobody had it open on the unlinking node), it counts again from now, as an
   * unlinked file open on one node does: the inode and its stored size go back on the volume
   * (not checked against the limits: they were counted before the unlink), and the flag goes.
   * Idempotent; the first of the holders' transactions does it (a publish or setattr racing
   * this one too, through `putInode`).
   */
  async recountOrphan(ino: number): Promise<void> {
    // Known outside volumes, gone, or counted since the unlink (the flag is set only by it):
    // nothing to read.
    const cached = this.ns.cachedInode(ino);
    if (cached === null) return;
    if (cached && (!cached.volume || (cached.nlink === 0 && !cached.uncounted))) return;
    await this.txn(async (t) => {
      const record = await t.tx.getInode(ino);
      if (record?.uncounted) t.putInode(record);
    });
  }

  /** Run `maybePurge` from a callback that cannot wait (forget); failures are logged, and an
   * orphan left behind is purged at the next start. */
  purgeLater(ino: number): void {
    this.maybePurge(ino).catch((error) => console.error(`skyfs: purge of inode ${ino}: ${error}`));
  }

  async close(): Promise<void> {
    this.#closed = true;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    // Handles the kernel never released: at unmount it ends the requests still queued
    // (fuse_abort_conn), RELEASE among them, and a RELEASE is sent after close(2) returned
    // (asynchronously; a passthrough open sends no FLUSH either). What passthrough wrote to such
    // a file (size, mtime) or a read moved (atime) is only in its local file: taken in here, as
    // that RELEASE would have, so a clean unmount keeps it (src/vfs/README.md, "Unmount").
    for (const [ino, state] of [...this.inodes]) {
      if (state.handles === 0) continue;
      this.observeLocal(ino);
      if (state.accessedAt) await this.record(ino).catch(() => {});
    }
    await this.persistAll();
    // A write-back of an inode no longer dirty may still be reading its local file.
    await Promise.allSettled(this.#publishing.values());
    await this.volumes.close();
    await this.local.closeAll();
    await this.cluster?.shutdown();
  }
}

/** ENAMETOOLONG / EINVAL for a name the kernel would not accept. */
export function checkName(name: Uint8Array): void {
  if (name.length > NAME_MAX) {
    throw new FsError("ENAMETOOLONG", `name of ${name.length} bytes exceeds ${NAME_MAX}`);
  }
  if (name.length === 0) throw new FsError("ENOENT", "empty name");
  // A loop, not two Uint8Array.includes calls (builtins slower than this for a short name).
  let bad = false;
  for (let i = 0; i < name.length; i++) {
    const c = name[i];
    if (c === 0x2f || c === 0) bad = true;
  }
  if (bad) {
    throw new FsError(
      "EINVAL",
      `name ${JSON.stringify(new TextDecoder().decode(name))} has / or NUL`,
    );
  }
}

export function isDotOrDotDot(name: Uint8Array): boolean {
  return (name.length === 1 && name[0] === 0x2e) ||
    (name.length === 2 && name[0] === 0x2e && name[1] === 0x2e);
}

export function sameName(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

export { Errno };
