/**
 * The contract between the access paths (FUSE, the shim) and the file system's POSIX core.
 *
 * Every method either resolves or rejects with an FsError carrying the errno to report. Names and
 * arguments follow the FUSE low-level operations (fuse_lowlevel.h) and the syscalls behind them.
 * @module
 */

/** Seconds and nanoseconds since the epoch, as in `struct timespec`. */
export interface Timespec {
  sec: number;
  nsec: number;
}

/** Inode attributes, as `struct stat` gives them. `mode` includes the S_IFMT type bits. */
export interface Attr {
  ino: number;
  mode: number;
  nlink: number;
  uid: number;
  gid: number;
  rdev: number;
  size: number;
  /** 512-byte blocks actually allocated. */
  blocks: number;
  blksize: number;
  atime: Timespec;
  mtime: Timespec;
  ctime: Timespec;
  /** Creation time (statx btime). */
  btime: Timespec;
}

/** Who asks: taken from the FUSE request header (or the shim's peer credentials). */
export interface Ctx {
  uid: number;
  gid: number;
  pid: number;
  /** Supplementary groups of `pid`, when the caller could learn them; used for permission checks. */
  groups?: number[];
  /** Effective capabilities of `pid` (CapEff), read when a check needs them (creds.ts). */
  caps?: bigint;
  /** Aborted when the kernel interrupts the request (FUSE_INTERRUPT), e.g. a blocked SETLKW. */
  signal?: AbortSignal;
}

/** Changes requested by setattr; absent fields are left alone. */
export interface SetattrChanges {
  mode?: number;
  uid?: number;
  gid?: number;
  size?: number;
  /** A time, or "now" for UTIME_NOW. Omitted means UTIME_OMIT. */
  atime?: Timespec | "now";
  mtime?: Timespec | "now";
  ctime?: Timespec;
  /** The kernel asks to drop suid/sgid (FATTR_KILL_SUIDGID / write by non-owner). */
  killSuidgid?: boolean;
}

export interface OpenResult {
  fh: number;
  /** The kernel may keep cached pages from earlier opens (nothing changed them since). */
  keepCache: boolean;
  /** Bypass the kernel page cache for this open (O_DIRECT opens). */
  directIo: boolean;
  /** The kernel's cached attributes of the inode (size above all) may be older than what this
   * open read: a cluster node's open reads the inode from the store (close-to-open), and another
   * node's change may not have reached this node's kernel through the metadata watch yet. The
   * FUSE layer then invalidates them before it answers the open, so the opener's fstat and reads
   * see the size this open saw. */
  attributesStale?: boolean;
  /** A local fd holding the whole file's data, usable for FUSE passthrough or the shim. Absent
   * when writes must go through the Vfs (a file with set-id bits that a write has to drop). */
  backingFd?: number;
}

export interface CreateResult extends OpenResult {
  attr: Attr;
}

export interface DirEntry {
  ino: number;
  name: Uint8Array;
  /** S_IFMT bits of the entry's mode. */
  type: number;
  /** Offset to pass to readdir to continue after this entry. */
  nextOffset: number;
  /** Present when readdir was asked for attributes (readdirplus), except for an inode the kernel
   * holds already on one node (`dir.readdir`). */
  attr?: Attr;
}

export interface StatFs {
  blocks: number;
  bfree: number;
  bavail: number;
  files: number;
  ffree: number;
  bsize: number;
  frsize: number;
  namelen: number;
}

/** A POSIX record lock or flock, as struct fuse_file_lock: [start, end] inclusive. */
export interface FileLock {
  start: number;
  /** Inclusive; Number.MAX_SAFE_INTEGER (or larger) means to end of file. */
  end: number;
  /** F_RDLCK 0, F_WRLCK 1, F_UNLCK 2. */
  type: number;
  pid: number;
}

import type { Volumes } from "./volumes.ts";
import type { DirListing } from "./listing.ts";
export type { CreateVolume, Volume, Volumes } from "./volumes.ts";

export const RENAME_NOREPLACE = 1;
export const RENAME_EXCHANGE = 2;

/**
 * The POSIX core. Inode numbers are FUSE node ids (root = 1). `lookup`, `mknod`, `mkdir`,
 * `symlink`, `link` and `create` each add one to the inode's lookup count, as does `remember`;
 * `forget` subtracts. An inode with no links, no lookups and no open handles is deleted.
 */
export interface Vfs {
  lookup(ctx: Ctx, parent: number, name: Uint8Array): Promise<Attr>;
  /** `lookup`, but a missing name resolves to null instead of rejecting with ENOENT (the
   * common answer before every create: no error object, no stack trace). */
  lookupOrNull(ctx: Ctx, parent: number, name: Uint8Array): Promise<Attr | null>;
  forget(ino: number, nlookup: number): void;
  /** Add one lookup reference (an entry handed to the kernel by readdirplus). */
  remember(ino: number): void;
  getattr(ctx: Ctx, ino: number, fh?: number): Promise<Attr>;
  /** `lookupOrNull` answered at once from what is cached in memory, or undefined when that
   * takes a read of the store (then call `lookupOrNull`). Throws as `lookupOrNull` rejects. */
  lookupCached?(ctx: Ctx, parent: number, name: Uint8Array): Attr | null | undefined;
  /** `getattr` answered at once from what is cached in memory, or undefined (call `getattr`). */
  getattrCached?(ctx: Ctx, ino: number): Attr | undefined;
  setattr(ctx: Ctx, ino: number, changes: SetattrChanges, fh?: number): Promise<Attr>;
  readlink(ctx: Ctx, ino: number): Promise<Uint8Array>;
  mknod(
    ctx: Ctx,
    parent: number,
    name: Uint8Array,
    mode: number,
    rdev: number,
    umask: number,
  ): Promise<Attr>;
  mkdir(ctx: Ctx, parent: number, name: Uint8Array, mode: number, umask: number): Promise<Attr>;
  unlink(ctx: Ctx, parent: number, name: Uint8Array): Promise<void>;
  rmdir(ctx: Ctx, parent: number, name: Uint8Array): Promise<void>;
  symlink(ctx: Ctx, parent: number, name: Uint8Array, target: Uint8Array): Promise<Attr>;
  rename(
    ctx: Ctx,
    parent: number,
    name: Uint8Array,
    newParent: number,
    newName: Uint8Array,
    flags: number,
  ): Promise<void>;
  link(ctx: Ctx, ino: number, newParent: number, newName: Uint8Array): Promise<Attr>;
  /** `flags` are the open(2) flags (O_ACCMODE, O_TRUNC, O_APPEND, O_DIRECT, ...). */
  open(ctx: Ctx, ino: number, flags: number): Promise<OpenResult>;
  /** `open` done at once where nothing needs a wait, or undefined with nothing done (call
   * `open`). Throws as `open` rejects. */
  openCached?(ctx: Ctx, ino: number, flags: number): OpenResult | undefined;
  /** `release` done at once where nothing needs a wait (true), or false with nothing done
   * (call `release`). */
  releaseCached?(ino: number, fh: number): boolean;
  /** The open of handle `fh` is answered with FUSE passthrough (called before the reply; throws
   * to refuse the open, which the caller then releases). */
  passthroughOpened?(ino: number, fh: number): void;
  /** Call `listener` after each close of a local fd the Vfs kept with no handle open (config
   * `mount.keep_closed_files`, LocalStore.keepClosed), and after every other close of a local
   * fd. False: nothing is kept, and `listener` is not called (the FUSE layer then closes a
   * passthrough backing id with the inode's last handle). */
  onLocalClosed?(listener: (ino: number) => void): boolean;
  create(
    ctx: Ctx,
    parent: number,
    name: Uint8Array,
    mode: number,
    umask: number,
    flags: number,
  ): Promise<CreateResult>;
  /** Fill `into` from `offset`; resolve to the byte count (short only at end of file). */
  read(ctx: Ctx, ino: number, fh: number, offset: number, into: Uint8Array): Promise<number>;
  write(ctx: Ctx, ino: number, fh: number, offset: number, data: Uint8Array): Promise<number>;
  flush(ctx: Ctx, ino: number, fh: number, lockOwner: bigint): Promise<void>;
  release(ino: number, fh: number, flags: number, lockOwner?: bigint): Promise<void>;
  fsync(ino: number, fh: number, datasync: boolean): Promise<void>;
  opendir(ctx: Ctx, ino: number, flags: number): Promise<number>;
  /** `opendir` done at once where nothing needs a wait, with what `atimeDue` would say, or
   * undefined with nothing done (call `opendir`). Throws as `opendir` rejects. */
  opendirCached?(
    ctx: Ctx,
    ino: number,
    flags: number,
  ): { fh: number; atimeDue: boolean } | undefined;
  /** Whether a read or listing of the inode now would move its atime (the mount's rule), so a
   * listing the kernel cached must be read again. */
  atimeDue(ino: number): Promise<boolean>;
  /** Entries after `offset` (0 = from the start, including "." and ".."), at most `maxEntries`. */
  readdir(
    ctx: Ctx,
    ino: number,
    fh: number,
    offset: number,
    maxEntries: number,
    plus: boolean,
  ): Promise<DirEntry[]>;
  /**
   * The handle's listing (`DirListing`), taken at its first readdir and again at each from offset
   * 0; entry i continues at offset i + 1 ("." and ".." are 0 and 1). The FUSE adapter encodes
   * from it without an object per entry.
   */
  readdirListing(ctx: Ctx, ino: number, fh: number, offset: number): Promise<DirListing>;
  /**
   * Attributes for a readdirplus entry: null when the kernel holds the inode already (list it
   * without, node id 0), undefined when it is gone since the listing (skip it). An entry handed
   * out with attributes must be `remember`ed.
   */
  direntAttr(ino: number): Promise<Attr | null | undefined>;
  /** Whether the kernel holds the inode (one node): readdirplus lists it without attributes. */
  knownToKernel(ino: number): boolean;
  releasedir(ino: number, fh: number): Promise<void>;
  /** `releasedir` done at once where nothing needs a wait (true), or false with nothing done
   * (call `releasedir`). */
  releasedirCached?(ino: number, fh: number): boolean;
  fsyncdir(ino: number, fh: number, datasync: boolean): Promise<void>;
  statfs(ino: number): Promise<StatFs>;
  /** access(2) with mask R_OK 4 | W_OK 2 | X_OK 1, or F_OK 0. */
  access(ctx: Ctx, ino: number, mask: number): Promise<void>;
  /** flags: XATTR_CREATE 1, XATTR_REPLACE 2. */
  setxattr(ctx: Ctx, ino: number, name: string, value: Uint8Array, flags: number): Promise<void>;
  getxattr(ctx: Ctx, ino: number, name: string): Promise<Uint8Array>;
  /** `getxattr`, but an attribute the inode does not have resolves to null instead of rejecting
   * with ENODATA (no exception for the common answer). */
  getxattrOrNull(ctx: Ctx, ino: number, name: string): Promise<Uint8Array | null>;
  /** `getxattrOrNull` answered at once from what is cached in memory, or undefined (call
   * `getxattrOrNull`). Throws as `getxattrOrNull` rejects. */
  getxattrCached?(ctx: Ctx, ino: number, name: string): Uint8Array | null | undefined;
  listxattr(ctx: Ctx, ino: number): Promise<string[]>;
  removexattr(ctx: Ctx, ino: number, name: string): Promise<void>;
  /** mode: FALLOC_FL_KEEP_SIZE 1, FALLOC_FL_PUNCH_HOLE 2, ZERO_RANGE 0x10 (as fallocate(2)). */
  fallocate(
    ctx: Ctx,
    ino: number,
    fh: number,
    mode: number,
    offset: number,
    length: number,
  ): Promise<void>;
  /** whence: SEEK_SET 0, SEEK_CUR 1, SEEK_END 2, SEEK_DATA 3, SEEK_HOLE 4. */
  lseek(ctx: Ctx, ino: number, fh: number, offset: number, whence: number): Promise<number>;
  copyFileRange(
    ctx: Ctx,
    from: { ino: number; fh: number; offset: number },
    to: { ino: number; fh: number; offset: number },
    length: number,
    flags: number,
  ): Promise<number>;
  /** The first lock that would conflict with `lock`, or one with type F_UNLCK if none. */
  getlk(ino: number, fh: number, owner: bigint, lock: FileLock): Promise<FileLock>;
  /** Set or clear a lock; with `wait` (SETLKW) wait until it can be had or ctx.signal aborts. */
  setlk(
    ctx: Ctx,
    ino: number,
    fh: number,
    owner: bigint,
    lock: FileLock,
    options: { wait: boolean; flock: boolean },
  ): Promise<void>;
  /** The handles open now (for the admin API; a snapshot, newly allocated at each call). */
  openHandles(): OpenHandleInfo[];
  /** Volumes with quotas (src/vfs/volumes.ts): the admin API and the shim reach them here. */
  readonly volumes: Volumes;
  /** Flush everything and close stores; called once at unmount. */
  destroy(): Promise<void>;
}

/** One open handle as the admin API lists it. */
export interface OpenHandleInfo {
  fh: number;
  ino: number;
  kind: "file" | "dir";
  /** open(2) flags of a file handle. */
  flags?: number;
}
