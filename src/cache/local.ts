/**
 * Local data of a single node (DESIGN.md section 5): one sparse file per inode under
 * `<dataDir>/data/<ino % 256 as two hex digits>/<ino in hex>`, which on one node IS the file's
 * data. One fd per inode is shared by all of its open handles (the same fd later backs FUSE
 * passthrough and the shim); it is opened on first use and closed when the last user lets go, or
 * kept open for the inode's next open (`keepClosed`, config `mount.keep_closed_files`).
 *
 * The metadata store holds the authoritative size. When an fd is opened the local file is cut
 * or extended to that size, so data written after the last persisted size (lost by a crash) can
 * never reappear later inside a hole, and a local size always equals the logical size while open.
 * @module
 */

import { setImmediate } from "node:timers";
import { Errno, FsError } from "../fs_error.ts";
import type { IoEngine } from "../io/types.ts";
import * as libc from "../io/libc.ts";

interface OpenFile {
  fd: number;
  refs: number;
  /** Size and mtime of the local file after the vfs's own last change to it. */
  seen: string;
  /** While reads outside the vfs are watched (`watchAccess`): the local file's atime as last
   * seen, armed (not newer than the mtime, or set to 0) so that the next read moves it. */
  atimeSeen?: string;
  /** The stat `#openFile` took, until the first `watchAccess` uses it instead of its own. */
  openStat?: libc.Stat;
  /** The local file was removed while held (`remove`, `removeSoon`): never kept after its last
   * release (`keepClosed`), which would hold its blocks. */
  removed?: boolean;
}

/** What changed in the local file outside the vfs since the last look. */
export interface OutsideChange {
  /** Size or mtime changed (a write): the file's stat. */
  modified?: libc.Stat;
  /** A read moved its atime (while watched): the time of that read. */
  accessed?: { sec: number; nsec: number };
}

function seenKey(st: libc.Stat): string {
  return `${st.size}/${st.mtimeSec}.${st.mtimeNsec}`;
}

/**
 * How the small syscalls on local files are made (config `mount.local_file_ops`): `inline` = a
 * synchronous libc call on the JS thread (the open of a file, O_CREAT included, its close, and the
 * unlink of a small deleted file: a few us each), `engine` = through the I/O engine (an `O_CREAT`
 * open or an unlink is always handed to an io-wq worker by io_uring: a thread hop and a
 * completion each; a close is a ring round trip).
 */
export type LocalFileOps = "inline" | "engine";

/** Deleted files up to this size are unlinked inline (`inline`): ext4 frees a file's blocks in
 * the unlink itself, so a big one could hold the JS thread for milliseconds; those go to the
 * engine. */
export const INLINE_UNLINK_MAX_BYTES = 1 << 20;

/** Inodes handed to the shim (`handedOut`) remembered before spare files are given up for the
 * rest of the process (a set that big would only grow). */
const HANDED_OUT_MAX = 65_536;

const encoder = new TextEncoder();

export class LocalStore {
  readonly io: IoEngine;
  readonly root: string;
  readonly fileOps: LocalFileOps;
  /** `<root>/xx/` then the inode in hex and a NUL, rebuilt in place per call (`#cPath`). */
  readonly #cPathBytes: Uint8Array;
  readonly #open = new Map<number, OpenFile>();
  readonly #opening = new Map<number, Promise<OpenFile>>();
  /** Inodes whose file's directory entry is known durable (synced once per process). */
  readonly #entrySynced = new Set<number>();
  /** Unlinks started by `removeSoon` and not yet finished. */
  readonly #removing = new Set<Promise<void>>();
  /** Spare local files (`<root>/spare/<hex>`, named by the deleted inode whose file each was),
   * emptied and waiting for a new inode (see `removeSoon`); at most `#spareCap`. */
  readonly #spares: number[] = [];
  #spareCap: number;
  /** `<root>/spare/` then a name in hex and a NUL, rebuilt in place per call (`#spareC`). */
  readonly #spareBytes: Uint8Array;
  /** The first inode this process created a file for: only files of inodes from here on can
   * become spares (no process can hold a local fd of them from a previous daemon). */
  #firstFresh: number | undefined;
  /** Inodes whose local file was handed to a process (the shim): never made spares. */
  readonly #handedOut = new Set<number>();
  /** Local files no user holds any more whose fd is kept open for the next open of the inode
   * (`keepClosed`), oldest first (a Map keeps insertion order); each is also in `#open`, with
   * no reference. */
  readonly #kept = new Map<number, OpenFile>();
  #keepCap = 0;
  /** Called after the fd of an inode is closed (a kept one evicted or dropped, or a last release
   * that kept nothing): the FUSE layer closes a passthrough backing id it kept with it. */
  onClosed?: (ino: number) => void;

  private constructor(io: IoEngine, root: string, fileOps: LocalFileOps, spareCap: number) {
    this.io = io;
    this.root = root;
    this.fileOps = fileOps;
    // Spares are for the inline open and unlink of one node only (a cluster's local file is a
    // cache the engine fills and evicts).
    this.#spareCap = fileOps === "inline" ? spareCap : 0;
    const prefix = encoder.encode(`${root}/00/`);
    // 14 hex digits hold any inode number up to 2^53, then the NUL.
    this.#cPathBytes = new Uint8Array(prefix.length + 15);
    this.#cPathBytes.set(prefix);
    const sparePrefix = encoder.encode(`${root}/spare/`);
    this.#spareBytes = new Uint8Array(sparePrefix.length + 15);
    this.#spareBytes.set(sparePrefix);
  }

  /**
   * The store under `<dataDir>/data`, creating its 256 subdirectories on first use.
   * `spareFiles` (config `mount.local_spare_files`): how many emptied local files of deleted
   * inodes to keep for new inodes (`removeSoon`); with `inline` file ops only. Spares left by the
   * previous process are taken up to that many, the rest removed.
   */
  static async open(
    io: IoEngine,
    dataDir: string,
    fileOps: LocalFileOps = "engine",
    spareFiles = 0,
  ): Promise<LocalStore> {
    const root = `${dataDir}/data`;
    for (let i = 0; i < 256; i++) {
      await Deno.mkdir(`${root}/${hex2(i)}`, { recursive: true });
    }
    const store = new LocalStore(io, root, fileOps, spareFiles);
    if (store.#spareCap > 0) await Deno.mkdir(`${root}/spare`, { recursive: true });
    await store.#adoptSpares();
    return store;
  }

  /** Take the spare files a previous process left (`<root>/spare`), removing any beyond the cap
   * or not named as spares are. */
  async #adoptSpares(): Promise<void> {
    let entries: Deno.DirEntry[];
    try {
      entries = await Array.fromAsync(Deno.readDir(`${this.root}/spare`));
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) return;
      throw error;
    }
    for (const entry of entries) {
      const name = parseInt(entry.name, 16);
      if (entry.isFile && /^[0-9a-f]+$/.test(entry.name) && this.#spares.length < this.#spareCap) {
        this.#spares.push(name);
      } else {
        await Deno.remove(`${this.root}/spare/${entry.name}`, { recursive: true });
      }
    }
  }

  /** Spare local files waiting for a new inode (for tests and metrics). */
  get spareCount(): number {
    return this.#spares.length;
  }

  path(ino: number): string {
    return `${this.root}/${hex2(ino % 256)}/${ino.toString(16)}`;
  }

  /**
   * `path(ino)` as a NUL-terminated C string for the direct libc calls (statC, openC, unlinkC),
   * written into one buffer reused by every call: use it before the next call, synchronously.
   */
  #cPath(ino: number): Uint8Array {
    const bytes = this.#cPathBytes;
    const at = bytes.length - 15;
    const bucket = ino % 256;
    bytes[at - 3] = HEX[bucket >> 4];
    bytes[at - 2] = HEX[bucket & 15];
    return writeHexName(bytes, ino);
  }

  /** The shared fd of `ino` if some user holds it open. */
  fdOf(ino: number): number | undefined {
    return this.#open.get(ino)?.fd;
  }

  /**
   * Take a reference on the inode's fd, opening (and creating) the local file if nobody holds
   * it, and setting its length to `size` then. Pair every call with `release`. `fresh`: the
   * inode is new (its create); a held fd is then the one that create opened, and the stat of
   * that open stays good for `watchAccess` (no one else knows the number yet).
   */
  async acquire(ino: number, size: number, fresh = false): Promise<number> {
    const held = this.#open.get(ino);
    if (held) {
      if (!fresh) held.openStat = undefined; // only for the open that took it
      if (held.refs++ === 0) this.#kept.delete(ino);
      return held.fd;
    }
    // Two first users racing must share one open, or one fd would leak and the other be cut.
    let pending = this.#opening.get(ino);
    if (!pending) {
      pending = this.#openFile(ino, size, fresh).finally(() => this.#opening.delete(ino));
      this.#opening.set(ino, pending);
    }
    const file = await pending;
    file.refs++;
    return file.fd;
  }

  async #openFile(ino: number, size: number, fresh: boolean): Promise<OpenFile> {
    const fd = await this.#openOrCreate(ino, this.path(ino), fresh);
    let st: libc.Stat;
    try {
      st = statAtSize(fd, size);
    } catch (error) {
      await this.io.close(fd);
      throw error;
    }
    const file: OpenFile = { fd, refs: 0, seen: seenKey(st), openStat: st };
    this.#open.set(ino, file);
    return file;
  }

  /**
   * `acquire` without waiting, for an inode whose local file exists: the held fd, or one
   * synchronous open (`inline` file ops). Undefined, and nothing taken, where that takes the
   * engine or another open of the inode is under way (call `acquire` then).
   */
  acquireSync(ino: number, size: number): number | undefined {
    const held = this.#open.get(ino);
    if (held) {
      held.openStat = undefined; // only for the open that took it
      if (held.refs++ === 0) this.#kept.delete(ino);
      return held.fd;
    }
    if (this.fileOps !== "inline" || this.#opening.has(ino)) return undefined;
    const fd = this.#openInline(ino, libc.O_RDWR | libc.O_CLOEXEC | libc.O_NOATIME);
    let st: libc.Stat;
    try {
      st = statAtSize(fd, size);
    } catch (error) {
      this.io.forgetFd?.(fd);
      libc.close(fd);
      throw error;
    }
    this.#open.set(ino, { fd, refs: 1, seen: seenKey(st), openStat: st });
    return fd;
  }

  /** The synchronous open of `#openOrCreate`, with its retries (EPERM for O_NOATIME, ENOENT). */
  #openInline(ino: number, flags: number): number {
    for (;;) {
      try {
        return libc.openC(this.#cPath(ino), flags);
      } catch (error) {
        if (!this.#freeFds(error)) flags = retryFlags(error, flags);
      }
    }
  }

  /**
   * Open an existing local file without O_CREAT first: io_uring completes such an openat inline
   * when the path is in the dentry cache, but hands every O_CREAT or O_TRUNC open to an io-wq
   * worker (io_openat_force_async), which costs the open+close of a file about half its rate
   * (src/io/README.md). Files that do not exist yet (a new inode) take the second open, or
   * only it when the caller knows the inode is new (`fresh`: the vfs's create).
   */
  async #openOrCreate(ino: number, path: string, fresh: boolean): Promise<number> {
    // O_NOATIME: the vfs's own reads must not look like reads through passthrough or the shim
    // (watchAccess); those use their own open files of the local file, which keep atime.
    // Only an owner may ask for it (EPERM for a file of another uid): then without.
    let flags = libc.O_RDWR | libc.O_CLOEXEC | libc.O_NOATIME | (fresh ? libc.O_CREAT : 0);
    if (fresh) {
      this.#firstFresh ??= ino;
      // A spare file renamed into place: no inode for ext4 to allocate (`removeSoon`).
      if (this.#takeSpare(ino)) flags &= ~libc.O_CREAT;
    }
    for (;;) {
      try {
        // Inline: one synchronous open on the JS thread, O_CREAT included (ext4 creates a file
        // in 10-30 us on a quiet machine), and later a synchronous close (`#close`).
        if (this.fileOps === "inline") return libc.openC(this.#cPath(ino), flags);
        return await this.io.open(path, flags);
      } catch (error) {
        if (!this.#freeFds(error)) flags = retryFlags(error, flags);
      }
    }
  }

  /**
   * Take a reference on the inode's fd if some user holds it open (undefined, and nothing taken,
   * if not); pair with `release`. For work on an open file that a close must not cut short.
   */
  hold(ino: number): number | undefined {
    const file = this.#open.get(ino);
    if (!file) return undefined;
    if (file.refs++ === 0) this.#kept.delete(ino);
    return file.fd;
  }

  /** Drop one reference; the last one closes the fd, or keeps it (`keepClosed`). */
  async release(ino: number): Promise<void> {
    const file = this.#open.get(ino);
    if (!file || file.refs === 0) {
      throw new Error(`LocalStore.release(${ino}) without acquire: a vfs bug`);
    }
    if (--file.refs > 0) return;
    if (this.#keep(ino, file)) return;
    this.#open.delete(ino);
    await this.#close(file.fd);
    this.onClosed?.(ino);
  }

  /**
   * Keep the fds of up to `count` local files after their last user let go (config
   * `mount.keep_closed_files`), so that the next open of the inode takes the same fd (and the
   * FUSE layer the same passthrough backing id) instead of an `openat`, an `fstat`, a backing
   * open and later a backing close and a `close`. Oldest evicted first. Inline file ops only;
   * 0 = off (a cluster node: its local file is a cache filled and evicted by the engine).
   * Kept fds count against RLIMIT_NOFILE: the caller bounds `count`. A kept fd is closed
   * before its local file is removed (`remove`, `removeSoon`), so no space stays held.
   */
  keepClosed(count: number): void {
    this.#keepCap = this.fileOps === "inline" ? Math.max(0, count) : 0;
    while (this.#kept.size > this.#keepCap) this.#evictOldest();
  }

  /** Whether `ino`'s fd is kept with no user (`keepClosed`). */
  isKept(ino: number): boolean {
    return this.#kept.has(ino);
  }

  /** How many fds may be kept (`keepClosed`; 0 = none). */
  get keepCap(): number {
    return this.#keepCap;
  }

  /** `file`'s last reference went: kept (true) where the keep allows, the oldest evicted. */
  #keep(ino: number, file: OpenFile): boolean {
    if (this.#keepCap === 0 || file.removed) return false;
    this.#kept.set(ino, file);
    if (this.#kept.size > this.#keepCap) this.#evictOldest();
    return true;
  }

  /**
   * An open of a local file failed for want of fds (EMFILE, ENFILE): the older half of the kept
   * fds (at least one) closed, true, so that the caller tries again; false for any other error
   * or with none kept. Kept fds take up to a quarter of RLIMIT_NOFILE that handles had before;
   * they must never make an open (or a removal's, `#keepSpare`) fail that would have worked.
   */
  #freeFds(error: unknown): boolean {
    if (
      !(error instanceof FsError) ||
      (error.errno !== Errno.EMFILE && error.errno !== Errno.ENFILE) || this.#kept.size === 0
    ) return false;
    for (let count = Math.max(1, this.#kept.size >> 1); count > 0; count--) this.#evictOldest();
    return true;
  }

  #evictOldest(): void {
    const [ino] = this.#kept.keys();
    this.#dropKept(ino);
  }

  /** Before the local file of `ino` is removed: its kept fd closed, or a held one marked so that
   * its last release closes it (inline: a kept file is never a deleted one). */
  #dropKept(ino: number): void {
    const file = this.#kept.get(ino);
    if (!file) {
      const held = this.#open.get(ino);
      if (held) held.removed = true;
      return;
    }
    this.#kept.delete(ino);
    this.#open.delete(ino);
    this.io.forgetFd?.(file.fd);
    libc.close(file.fd);
    this.onClosed?.(ino);
  }

  /**
   * `release` without waiting: false, and nothing dropped, where the last close must go
   * through the engine (not `inline`, or a big file deleted while open: see `#close`). `st`: a
   * stat of the fd taken in the same synchronous run (nothing can have changed it since).
   */
  releaseSync(ino: number, st?: libc.Stat): boolean {
    const file = this.#open.get(ino);
    if (!file || file.refs === 0) {
      throw new Error(`LocalStore.release(${ino}) without acquire: a vfs bug`);
    }
    if (file.refs > 1) {
      file.refs--;
      return true;
    }
    if (this.fileOps !== "inline") return false;
    if (this.#keepCap > 0 && !file.removed) {
      file.refs--;
      return this.#keep(ino, file);
    }
    st ??= libc.fstat(file.fd);
    if (st.nlink === 0 && st.blocks * 512 > INLINE_UNLINK_MAX_BYTES) return false;
    file.refs--;
    this.#open.delete(ino);
    this.io.forgetFd?.(file.fd);
    libc.close(file.fd);
    this.onClosed?.(ino);
    return true;
  }

  /**
   * Close a local file's fd: inline (`fileOps`), one synchronous close(2), unless the file was
   * deleted while open and is big, whose blocks ext4 frees inside that last close (as in an
   * unlink, `INLINE_UNLINK_MAX_BYTES`); otherwise, and then, through the engine.
   */
  async #close(fd: number): Promise<void> {
    if (this.fileOps === "inline") {
      const st = libc.fstat(fd);
      if (st.nlink > 0 || st.blocks * 512 <= INLINE_UNLINK_MAX_BYTES) {
        this.io.forgetFd?.(fd);
        return libc.close(fd);
      }
    }
    await this.io.close(fd);
  }

  /** Run `use` with the inode's fd, opening it for the call if nobody holds it. */
  async withFd<T>(ino: number, size: number, use: (fd: number) => Promise<T> | T): Promise<T> {
    const fd = await this.acquire(ino, size);
    try {
      return await use(fd);
    } finally {
      await this.release(ino);
    }
  }

  /** After the vfs itself changed the local file: its stat, remembered as the known state. */
  noteOwnChange(ino: number): libc.Stat {
    const file = this.#open.get(ino);
    if (!file) throw new Error(`LocalStore.noteOwnChange(${ino}) without an open fd: a vfs bug`);
    const st = libc.fstat(file.fd);
    file.seen = seenKey(st);
    file.openStat = undefined;
    return st;
  }

  /**
   * The local file's stat if it changed since the vfs's own last change, i.e. through the
   * backing fd handed out for FUSE passthrough or the shim, and the time of a read made
   * through it while watched (`watchAccess`); undefined if neither (or not open).
   */
  changedOutside(ino: number): OutsideChange | undefined {
    return this.changedOutsideStat(ino)?.change;
  }

  /** `changedOutside`, also handing back the stat it took (undefined when nobody holds the fd),
   * for a caller that needs one in the same synchronous run (`releaseSync`). */
  changedOutsideStat(ino: number): { change?: OutsideChange; st: libc.Stat } | undefined {
    const file = this.#open.get(ino);
    if (!file) return undefined;
    const st = libc.fstat(file.fd);
    file.openStat = undefined;
    const key = seenKey(st);
    let change: OutsideChange | undefined;
    if (key !== file.seen) {
      file.seen = key;
      change = { modified: st };
    }
    if (file.atimeSeen !== undefined && `${st.atimeSec}.${st.atimeNsec}` !== file.atimeSeen) {
      (change ??= {}).accessed = { sec: st.atimeSec, nsec: st.atimeNsec };
      file.atimeSeen = this.#armAtime(file.fd, st);
    }
    return { change, st };
  }

  /**
   * Watch reads made through the fd without the vfs (FUSE passthrough, the shim): the kernel
   * serves them from the local file, whose own file system moves its atime by its mount's rule
   * (relatime on a default data directory). An atime newer than the mtime is set to 0, older
   * than any mtime, so the next read moves it whatever that rule; `changedOutside` reports it and
   * arms it again. One not newer than the mtime is left (`#armAtime`): such a read moves it too,
   * and on Linux 6.13+ (multigrain timestamps: the fstat here marks the ctime as seen) a read
   * within the same clock tick gets a fine-grained time, so it still differs.
   */
  watchAccess(ino: number): void {
    const file = this.#open.get(ino);
    if (!file || file.atimeSeen !== undefined) return;
    // The stat of the open, when this comes right after it (no await between: the open's own
    // caller), else a new one.
    const st = file.openStat ?? libc.fstat(file.fd);
    file.openStat = undefined;
    file.atimeSeen = this.#armAtime(file.fd, st);
  }

  /**
   * Makes sure the next read moves the atime: already so when it is not newer than the mtime
   * (relatime and strictatime both move it then; a new file, whose O_CREAT set all its times to
   * one instant, or one written since its last read), which saves a futimens per create;
   * otherwise set to 0. Returns the atime to compare with, undefined (no longer watched) if the
   * local file system refuses.
   */
  #armAtime(fd: number, st: libc.Stat): string | undefined {
    if (
      st.atimeSec < st.mtimeSec || (st.atimeSec === st.mtimeSec && st.atimeNsec <= st.mtimeNsec)
    ) return `${st.atimeSec}.${st.atimeNsec}`;
    try {
      libc.setAtime(fd, 0, 0);
      return "0.0";
    } catch {
      // A read-only or full data directory: reads outside the vfs then leave atime alone.
      return undefined;
    }
  }

  /** 512-byte blocks allocated to the inode's data (0 when it has no local file). */
  blocks(ino: number): number {
    const fd = this.fdOf(ino);
    if (fd !== undefined) return libc.fstatBlocks(fd);
    // A direct stat of the path built in place: no string, encoding or exception per call.
    return libc.statBlocksC(this.#cPath(ino), Errno.ENOENT) ?? 0;
  }

  /** Make the local file's directory entry durable (once per inode and process). */
  async syncEntry(ino: number): Promise<void> {
    if (this.#entrySynced.has(ino)) return;
    const dir = `${this.root}/${hex2(ino % 256)}`;
    let fd: number;
    for (;;) {
      try {
        fd = await this.io.open(dir, libc.O_RDONLY | libc.O_DIRECTORY);
        break;
      } catch (error) {
        if (!this.#freeFds(error)) throw error; // kept fds must not fail an fsync
      }
    }
    try {
      await this.io.fsync(fd);
    } finally {
      await this.io.close(fd);
    }
    this.#entrySynced.add(ino);
  }

  /**
   * `remove` without waiting for it: the unlink of a deleted inode's local file (an io-wq hop,
   * 0.2-5 ms on a busy machine) need not hold the reply. Inode numbers are never reused, so no
   * later open can meet the file; `closeAll` waits for the ones in flight, and a crash leaves
   * them to `removeDangling` (the store's commit came first). With `inline` file ops a file of
   * at most `INLINE_UNLINK_MAX_BYTES` (`size`, the inode's last size) is unlinked by a
   * synchronous call in the next check phase of the event loop, after the reply went out; or,
   * while there are fewer than the cap, emptied (truncate) and renamed into `<root>/spare/` for
   * the next new inode, whose create then renames it into place instead of an `O_CREAT`
   * (src/fuse/README.md, "Spare local files": on an ext4 without a journal the allocation of an
   * inode skips, one lookup each, every inode of the group freed in the last 60 s, 100-250 us of
   * CPU per create after a few thousand unlinks). Only for inodes this process created and
   * never handed to a process outside (`handedOut`): no fd of the old file can be left open.
   */
  removeSoon(ino: number, size = Infinity): void {
    this.#dropKept(ino);
    const removing =
      (this.fileOps === "inline" && size <= INLINE_UNLINK_MAX_BYTES
        ? this.#removeInlineSoon(ino)
        : this.remove(ino)).catch((error) =>
          console.error(`skyfs: removing the local file of deleted inode ${ino}: ${error}`)
        ).finally(() => this.#removing.delete(removing));
    this.#removing.add(removing);
  }

  #removeInlineSoon(ino: number): Promise<void> {
    this.#entrySynced.delete(ino);
    return new Promise((resolve, reject) =>
      setImmediate(() => {
        try {
          if (!this.#keepSpare(ino)) libc.unlinkC(this.#cPath(ino));
          resolve();
        } catch (error) {
          if (error instanceof FsError && error.errno === Errno.ENOENT) resolve();
          else reject(error);
        }
      })
    );
  }

  /** Empty the deleted inode's local file and move it among the spares, if it may be one (see
   * `removeSoon`); false: unlink it instead. Throws ENOENT if there is no file. */
  #keepSpare(ino: number): boolean {
    const handedOut = this.#handedOut.delete(ino);
    if (
      handedOut || this.#spares.length >= this.#spareCap || this.#firstFresh === undefined ||
      ino < this.#firstFresh
    ) return false;
    // Emptied through an fd that is then closed, not by truncate(2) of the path: ext4's
    // auto_da_alloc marks a file cut to 0 bytes for a flush of its delayed allocations at the
    // next close (the new owner's), and the close here clears that mark while there is nothing to
    // flush. With truncate(2) the next owner's close started writeback of its data, and the
    // truncate at its own unlink then waited for that write (and ext4's discard of the blocks):
    // 112-212 unlinks/s instead of 1092 through the mount, 1.1 sleeps of the JS thread each.
    let fd: number;
    for (;;) {
      try {
        fd = libc.openC(this.#cPath(ino), libc.O_RDWR);
        break;
      } catch (error) {
        if (!this.#freeFds(error)) throw error;
      }
    }
    try {
      libc.ftruncate(fd, 0);
    } finally {
      libc.close(fd);
    }
    try {
      libc.renameC(this.#cPath(ino), this.#spareC(ino));
    } catch (error) {
      if (error instanceof FsError && error.errno === Errno.ENOENT) throw error;
      return false; // the spare directory is gone or full: unlink as before
    }
    this.#spares.push(ino);
    return true;
  }

  /** Rename a spare file to the new inode's path; false if there is none (or it failed). */
  #takeSpare(ino: number): boolean {
    for (;;) {
      const spare = this.#spares.pop();
      if (spare === undefined) return false;
      try {
        libc.renameC(this.#spareC(spare), this.#cPath(ino));
        return true;
      } catch (error) {
        // Removed behind our back (ENOENT): try the next; anything else: create as before.
        if (!(error instanceof FsError && error.errno === Errno.ENOENT)) return false;
      }
    }
  }

  /** `<root>/spare/<name in hex>` as a C string, in one reused buffer (see `#cPath`). */
  #spareC(name: number): Uint8Array {
    return writeHexName(this.#spareBytes, name);
  }

  /**
   * The inode's local file was handed to a process outside the daemon (the shim's GET_FD),
   * which may keep its fd past any close the daemon sees: its file is never made a spare.
   */
  handedOut(ino: number): void {
    if (this.#spareCap === 0) return;
    if (this.#handedOut.size >= HANDED_OUT_MAX) {
      // Too many to remember: no more spares in this process.
      this.#spareCap = 0;
      this.#handedOut.clear();
      return;
    }
    this.#handedOut.add(ino);
  }

  /** Delete the inode's local file (nothing if it has none). Open fds keep the data until
   * closed, as Linux does for unlinked files. */
  async remove(ino: number): Promise<void> {
    this.#dropKept(ino);
    this.#entrySynced.delete(ino);
    this.#handedOut.delete(ino);
    try {
      await this.io.unlink(this.path(ino));
    } catch (error) {
      if (!(error instanceof FsError && error.errno === Errno.ENOENT)) throw error;
    }
  }

  /** Remove local files of inodes that no longer exist (deleted just before a crash). */
  async removeDangling(exists: (ino: number) => boolean): Promise<number> {
    let removed = 0;
    for (let i = 0; i < 256; i++) {
      for await (const entry of Deno.readDir(`${this.root}/${hex2(i)}`)) {
        const ino = parseInt(entry.name, 16);
        if (!entry.isFile || !/^[0-9a-f]+$/.test(entry.name) || exists(ino)) continue;
        await this.remove(ino);
        removed++;
      }
    }
    return removed;
  }

  /** Close every fd (at unmount). */
  async closeAll(): Promise<void> {
    await Promise.allSettled(this.#opening.values());
    await Promise.allSettled(this.#removing);
    this.#kept.clear();
    for (const [ino, file] of this.#open) {
      this.#open.delete(ino);
      await this.io.close(file.fd);
      this.onClosed?.(ino);
    }
  }
}

/**
 * Whether `dir` is on an ext4 without a journal, whose inode allocation skips (one lookup each)
 * every inode of the group freed in the last 60 s: there spare local files pay (`removeSoon`).
 * Read from sysfs: the block device of `dir`'s st_dev, then `/sys/fs/ext4/<dev>/journal_task`
 * (`<none>` without a journal). False when any of it is missing (another file system).
 */
export async function isJournalLessExt4(dir: string): Promise<boolean> {
  try {
    const dev = BigInt((await Deno.stat(dir)).dev);
    const major = ((dev >> 8n) & 0xfffn) | ((dev >> 32n) & ~0xfffn);
    const minor = (dev & 0xffn) | ((dev >> 12n) & ~0xffn);
    const device = await Deno.realPath(`/sys/dev/block/${major}:${minor}`);
    const name = device.slice(device.lastIndexOf("/") + 1);
    return (await Deno.readTextFile(`/sys/fs/ext4/${name}/journal_task`)).trim() === "<none>";
  } catch {
    return false;
  }
}

const HEX = encoder.encode("0123456789abcdef");

/** Write `n` in hex and a NUL into the last 15 bytes of a C path buffer (`#cPath`, `#spareC`). */
function writeHexName(bytes: Uint8Array, n: number): Uint8Array {
  let at = bytes.length - 15;
  const digits = n.toString(16);
  for (let i = 0; i < digits.length; i++) bytes[at++] = digits.charCodeAt(i);
  bytes[at] = 0;
  return bytes;
}

/**
 * The flags to open a local file with again after `error`: without O_NOATIME after EPERM (a file
 * of another uid), with O_CREAT after ENOENT (no file yet); anything else is thrown.
 */
function retryFlags(error: unknown, flags: number): number {
  if (!(error instanceof FsError)) throw error;
  if (error.errno === Errno.EPERM && flags & libc.O_NOATIME) return flags & ~libc.O_NOATIME;
  if (error.errno === Errno.ENOENT && !(flags & libc.O_CREAT)) return flags | libc.O_CREAT;
  throw error;
}

/** fstat of a freshly opened local file, cut or extended to `size` first if it differs. */
function statAtSize(fd: number, size: number): libc.Stat {
  const st = libc.fstat(fd);
  if (st.size === size) return st;
  libc.ftruncate(fd, size);
  return libc.fstat(fd);
}

function hex2(n: number): string {
  return n.toString(16).padStart(2, "0");
}
