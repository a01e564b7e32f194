/**
 * The shim server: answers libskyfs_preload.so's control messages (lib/preload/skyfs_abi.h) for
 * one mount. It hands a process a local fd only for a file that process already holds open
 * through the mount (the kernel decided the access), with that open's access mode; it checks this
 * in /proc/<pid>/fdinfo, where pid is the one the kernel stamped on the message.
 * @module
 */

import { decodeRequest, encodeReply, Op, type ShimRequest, socketName } from "./abi.ts";
import {
  acceptOne,
  closeFd,
  type Credentials,
  listenAbstractWaiting,
  openFile,
  receive,
  send,
  waitReadable,
  wake,
  wakePipe,
} from "./socket.ts";

const O_ACCMODE = 0o3;
const O_APPEND = 0o2000;
const O_DIRECT = 0o40000;
const O_DSYNC = 0o10000;
const O_SYNC = 0o4010000;
const O_NOFOLLOW = 0o400000;
const O_CLOEXEC = 0o2000000;
const O_PATH = 0o10000000;
/** Open flags of the program's fd that the local fd copies. */
const COPIED_FLAGS = O_ACCMODE | O_APPEND | O_DIRECT | O_SYNC | O_DSYNC;

const EPROTO = 71;
const EBADF = 9;
const EOPNOTSUPP = 95;
const EACCES = 13;
/** Connections served at once; more are closed at accept (the shim falls back to FUSE). */
const MAX_CONNECTIONS = 1024;
/** Rejections logged one by one before logging only every 1000th. */
const LOG_FIRST_REJECTIONS = 20;

export interface ShimServerOptions {
  /** The mount point (as in /proc/self/mountinfo) and the daemon's data directory. */
  mountPoint: string;
  dataDir: string;
  /** Whether FUSE passthrough is on: the shim is only coherent with FUSE when it is (both use
   * the local file's page cache). Without it every GET_FD is refused with EOPNOTSUPP. */
  passthrough: () => boolean;
  /** Whether the file may be written outside the daemon (not in a volume, whose writes must
   * claim quota first). Default: always. */
  mayServe?: (ino: number) => boolean;
  /** Drop the kernel's cached attributes of `ino` (FUSE_NOTIFY_INVAL_INODE, offset -1). */
  invalidate: (ino: number) => void;
  /** Default: console.error. */
  log?: (line: string) => void;
}

/** A mount as /proc/<pid>/mountinfo lists it. */
export interface MountEntry {
  mountId: number;
  major: number;
  minor: number;
  mountPoint: string;
  fstype: string;
}

/** Parse mountinfo text (octal escapes in mount points decoded). */
export function parseMountinfo(text: string): MountEntry[] {
  const entries: MountEntry[] = [];
  for (const line of text.split("\n")) {
    const fields = line.split(" ");
    const dash = fields.indexOf("-");
    if (fields.length < 10 || dash < 6) continue;
    const [major, minor] = fields[2].split(":").map(Number);
    entries.push({
      mountId: Number(fields[0]),
      major,
      minor,
      mountPoint: fields[4].replace(/\\(\d{3})/g, (_, o) => String.fromCharCode(parseInt(o, 8))),
      fstype: fields[dash + 1],
    });
  }
  return entries;
}

/** The fields of /proc/<pid>/fdinfo/<fd> the server checks. */
export interface FdInfo {
  flags: number;
  mountId: number;
  ino: number;
}

/** Parse fdinfo text; undefined if a field is missing (a kernel without mnt_id/ino lines). */
export function parseFdinfo(text: string): FdInfo | undefined {
  const field = (name: string) => text.match(new RegExp(`^${name}:\\s*(\\S+)`, "m"))?.[1];
  const flags = field("flags");
  const mountId = field("mnt_id");
  const ino = field("ino");
  if (flags === undefined || mountId === undefined || ino === undefined) return undefined;
  return { flags: parseInt(flags, 8), mountId: Number(mountId), ino: Number(ino) };
}

/** Path of an inode's local data file: the layout of src/cache/local.ts (LocalStore.path). */
export function localDataPath(dataDir: string, ino: number): string {
  return `${dataDir}/data/${(ino % 256).toString(16).padStart(2, "0")}/${ino.toString(16)}`;
}

class Refusal extends Error {
  constructor(readonly errno: number, message: string) {
    super(message);
  }
}

export class ShimServer {
  readonly socketName: string;
  readonly #options: ShimServerOptions;
  readonly #log: (line: string) => void;
  readonly #major: number;
  readonly #minor: number;
  /** Mount ids known to be this file system (bind mounts and other namespaces add more). */
  readonly #ourMountIds = new Set<number>();
  readonly #listenFd: number;
  readonly #wake: { readFd: number; writeFd: number };
  readonly #connections = new Set<number>();
  #closed = false;
  #loop?: Promise<void>;
  /** Counters for /metrics; `reads` and `writes` are what shims reported served in-process
   * (SKYFS_OP_COUNTS, at closes at most once a second and at exit). */
  readonly stats = { granted: 0, refused: 0, wrote: 0, rejected: 0, reads: 0, writes: 0 };

  constructor(options: ShimServerOptions) {
    this.#options = options;
    this.#log = options.log ?? ((line) => console.error(line));
    const self = parseMountinfo(Deno.readTextFileSync("/proc/self/mountinfo")).findLast((m) =>
      m.mountPoint === options.mountPoint && m.fstype === "fuse.skyfs"
    );
    if (!self) {
      throw new Error(
        `Cannot serve the shim for "${options.mountPoint}": no fuse.skyfs mount there in ` +
          "/proc/self/mountinfo; start the shim server after the mount",
      );
    }
    this.#major = self.major;
    this.#minor = self.minor;
    this.#ourMountIds.add(self.mountId);
    this.socketName = socketName(self.major, self.minor);
    this.#listenFd = listenAbstractWaiting(this.socketName, 10_000);
    this.#wake = wakePipe();
  }

  /** Serve until close(). */
  start(): this {
    this.#loop ??= this.#serve();
    return this;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    wake(this.#wake.writeFd);
    await this.#loop;
    for (const fd of this.#connections) closeFd(fd);
    this.#connections.clear();
    closeFd(this.#listenFd);
    closeFd(this.#wake.readFd);
    closeFd(this.#wake.writeFd);
  }

  async #serve(): Promise<void> {
    while (!this.#closed) {
      const ready = await waitReadable(
        [this.#wake.readFd, this.#listenFd, ...this.#connections],
        1000,
      );
      if (this.#closed) break;
      if (ready.has(this.#listenFd)) this.#acceptAll();
      for (const fd of ready) {
        if (this.#connections.has(fd)) this.#drain(fd);
      }
    }
  }

  #acceptAll(): void {
    for (let fd = acceptOne(this.#listenFd); fd !== undefined; fd = acceptOne(this.#listenFd)) {
      if (this.#connections.size >= MAX_CONNECTIONS) {
        closeFd(fd);
        this.#reject(undefined, `more than ${MAX_CONNECTIONS} shim connections; closed one`);
        continue;
      }
      this.#connections.add(fd);
    }
  }

  /** Answer every queued message of one connection. */
  #drain(fd: number): void {
    for (;;) {
      const received = receive(fd);
      if (received === "again") return;
      if (received === "closed") {
        this.#connections.delete(fd);
        closeFd(fd);
        return;
      }
      const { data, credentials } = received;
      if (received.strayFds) {
        this.#reject(credentials, `sent ${received.strayFds} fds; closed them`);
      }
      if (!data || !credentials) {
        this.#reject(credentials, data ? "no credentials" : "message too long");
        send(fd, encodeReply(0, 0n, -EPROTO));
        continue;
      }
      let request: ShimRequest;
      try {
        request = decodeRequest(data);
      } catch (error) {
        this.#reject(credentials, (error as Error).message);
        send(fd, encodeReply(0, 0n, -EPROTO));
        continue;
      }
      this.#answer(fd, request, credentials);
    }
  }

  #answer(connection: number, request: ShimRequest, who: Credentials): void {
    if (request.op === Op.COUNTS) {
      this.stats.reads += request.ino;
      this.stats.writes += request.reserved;
      send(connection, encodeReply(request.op, request.seq, 0));
      return;
    }
    try {
      const info = this.#verifyHolder(request, who);
      if (request.op === Op.WROTE) {
        this.#options.invalidate(request.ino);
        this.stats.wrote++;
        send(connection, encodeReply(request.op, request.seq, 0));
        return;
      }
      if (!this.#options.passthrough()) {
        throw new Refusal(EOPNOTSUPP, "passthrough is off, so FUSE caches pages of its own");
      }
      if (this.#options.mayServe && !this.#options.mayServe(request.ino)) {
        throw new Refusal(EOPNOTSUPP, `inode ${request.ino} is in a volume: quota needs FUSE`);
      }
      const flags = (info.flags & COPIED_FLAGS) | O_CLOEXEC | O_NOFOLLOW;
      const local = openFile(localDataPath(this.#options.dataDir, request.ino), flags);
      if (local < 0) throw new Refusal(-local, `cannot open local data of inode ${request.ino}`);
      try {
        const rc = send(connection, encodeReply(request.op, request.seq, 0, flags), local);
        if (rc === 0) this.stats.granted++;
      } finally {
        closeFd(local); // the receiver has its own copy now
      }
    } catch (error) {
      if (!(error instanceof Refusal)) throw error;
      this.stats.refused++;
      send(connection, encodeReply(request.op, request.seq, -error.errno));
    }
  }

  /** The sender's fd must be open, on this file system, on inode `ino`, not O_PATH. */
  #verifyHolder(request: ShimRequest, who: Credentials): FdInfo {
    let text: string;
    try {
      text = Deno.readTextFileSync(`/proc/${who.pid}/fdinfo/${request.fd}`);
    } catch {
      throw new Refusal(EBADF, `pid ${who.pid} has no fd ${request.fd}`);
    }
    const info = parseFdinfo(text);
    if (!info) throw new Refusal(EOPNOTSUPP, "fdinfo lacks mnt_id or ino (kernel too old)");
    if (info.ino !== request.ino || !this.#isOurMount(info.mountId, who.pid)) {
      throw new Refusal(EACCES, `fd ${request.fd} of pid ${who.pid} is not inode ${request.ino}`);
    }
    if (info.flags & O_PATH) throw new Refusal(EBADF, `fd ${request.fd} is an O_PATH fd`);
    return info;
  }

  #isOurMount(mountId: number, pid: number): boolean {
    if (this.#ourMountIds.has(mountId)) return true;
    let text: string;
    try {
      text = Deno.readTextFileSync(`/proc/${pid}/mountinfo`);
    } catch {
      return false;
    }
    const entry = parseMountinfo(text).find((m) => m.mountId === mountId);
    if (!entry || entry.major !== this.#major || entry.minor !== this.#minor) return false;
    this.#ourMountIds.add(mountId); // a bind mount or another namespace's view of this mount
    return true;
  }

  #reject(who: Credentials | undefined, reason: string): void {
    const count = ++this.stats.rejected;
    if (count > LOG_FIRST_REJECTIONS && count % 1000 !== 0) return;
    this.#log(
      `skyfs: shim: rejected a message from pid ${who?.pid ?? "?"} uid ${who?.uid ?? "?"}: ` +
        `${reason} (${count} rejected so far)`,
    );
  }
}

/** Start serving the shim for a mounted skyfs (call after the mount appears). */
export function startShimServer(options: ShimServerOptions): ShimServer {
  return new ShimServer(options).start();
}
