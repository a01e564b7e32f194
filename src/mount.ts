/**
 * `skyfs mount` and `skyfs umount`: check the environment, open the data directory and the
 * metadata store, mount through libfuse and serve until SIGINT/SIGTERM or an external unmount.
 * @module
 */

import { join, resolve } from "node:path";
import { FuseDevice, loadLibfuse } from "./fuse/session.ts";
import { FuseServer, MAX_WRITE } from "./fuse/server.ts";
import { FuseRing, sharedRingOptions, uringUnavailable } from "./fuse/transport_uring.ts";
import type { RingSetup } from "./io/uring_native.ts";
import { UringEngine } from "./io/uring.ts";
import { INC_EPOCH_MINOR, notifyInvalInode } from "./fuse/wire.ts";
import { openDataDir } from "./datadir.ts";
import { openMetaBackend } from "./meta/backend.ts";
import { MetaUnavailableError } from "./meta/kv.ts";
import { openIoEngine } from "./io/mod.ts";
import { useNativeLibrary } from "./io/libc.ts";
import { createVfs } from "./vfs/mod.ts";
import { listNodes } from "./cluster/membership.ts";
import { startShimServer } from "./intercept/mod.ts";
import { ClusterNode, type ClusterNodeOptions } from "./cluster/node.ts";
import { MountFlags } from "./fuse/mount_flags.ts";
import type { AtimeRule } from "./vfs/core.ts";
import { Logger } from "./log.ts";
import {
  checkListen,
  DEFAULT_MOUNT_HTTP,
  type HttpServer,
  startHttpServer,
} from "./http/server.ts";
import { mountHttpContext } from "./http/mount_context.ts";
import { advertiseEndpoint } from "./http/endpoint_file.ts";

/** A failure the user can fix: printed as one line, exit status 1. */
export class UsageError extends Error {
  override name = "UsageError";
}

export interface MountOptions {
  dataDir: string;
  /** Seconds the kernel caches entries and attributes. Default 10. */
  cacheSeconds?: number;
  /** Negotiate FUSE passthrough (root only; the kernel reads and writes local files itself). */
  passthrough?: boolean;
  /** Metadata backend: embedded (default), curp://host:port,... or etcd://host:port,... */
  meta?: string;
  /** Cluster mode (src/cluster/README.md): chunks in a backend store, a peer cache. */
  cluster?: Omit<ClusterNodeOptions, "log">;
  /** Honour device nodes on the mount (mount option `dev`; default nodev). Root only. */
  dev?: boolean;
  /** Honour set-user-id and set-group-id bits when programs on the mount run (mount option
   * `suid`; default nosuid). Root only. */
  suid?: boolean;
  /** Log every internal error (our bugs) to stderr. Default true. */
  log?: (line: string) => void;
  /** How the embedded store writes its log (config mount.meta_log). Default mapped. */
  metaLog?: "mapped" | "engine";
  /** How the small syscalls on local data files are made (config mount.local_file_ops): inline
   * libc calls or the I/O engine. Default inline; a cluster node always uses the engine. */
  localFileOps?: "inline" | "engine";
  /** Emptied local files of deleted inodes kept for new ones (config mount.local_spare_files):
   * a number, or "auto" (the default: 4096 on an ext4 without a journal, else 0). */
  localSpareFiles?: number | "auto";
  /** Local data files kept open after their last close (config mount.keep_closed_files,
   * LocalStore.keepClosed). Default: the Vfs's (16384, bounded by RLIMIT_NOFILE). */
  keepClosedFiles?: number;
  /** Microseconds the FUSE reader looks for the next request before parking (config
   * fuse.spin_us; src/fuse/README.md "Idle spin"). Default: the server's. */
  idleSpinUs?: number;
  /** Microseconds the FUSE reader may block the JS thread in a poll of /dev/fuse and the event
   * loop's epoll fds before the thread-pool park (config fuse.park_us; src/fuse/README.md
   * "Parking on the JS thread"). Default: the server's (0, off). */
  parkUs?: number;
  /** How requests cross (config fuse.transport): "auto" (io_uring when the kernel offers it,
   * else /dev/fuse with one info line), "uring" (an error when it cannot) or "dev". Default
   * auto. */
  transport?: "auto" | "uring" | "dev";
  /** Ring entries per queue for FUSE over io_uring (config fuse.uring_depth). Default 8. */
  uringDepth?: number;
  /** The I/O engine and its library (config io.engine, io.uring_lib). Default auto. */
  io?: { engine?: string; libraryPath?: string };
  /** CURP client tuning for a curp:// store (config curp.timeout_ms, curp.fast_path,
   * curp.batch_in_flight). */
  curp?: { timeoutMs?: number; fastPath?: boolean | "marked"; batchInFlight?: number };
  /** Debug output (config log.debug): request counts at unmount and on SIGUSR2. */
  debug?: boolean;
  /** One line per CURP command (config log.debug containing "meta"). */
  traceMeta?: boolean;
  /** One line per FUSE request (config log.debug containing "fuse"). */
  traceFuse?: boolean;
  /** The HTTP endpoint (src/http): HOST:PORT or "off". Default DEFAULT_MOUNT_HTTP. */
  http?: string;
  /** Bearer token the admin API's changing actions need; none = they are refused. */
  httpToken?: string;
  /** Volumes (config volume.root, volume.reserve_bytes, volume.release_ms; src/vfs/volumes.ts). */
  volumes?: { root?: string; reserveBytes?: number; releaseMs?: number };
}

/** Mount points listed in /proc/self/mountinfo, with their file system type. */
export function mountTable(): Map<string, string> {
  const table = new Map<string, string>();
  for (const line of Deno.readTextFileSync("/proc/self/mountinfo").split("\n")) {
    const fields = line.split(" ");
    if (fields.length < 10) continue;
    const separator = fields.indexOf("-");
    const mountPoint = fields[4].replace(
      /\\(\d{3})/g,
      (_, o) => String.fromCharCode(parseInt(o, 8)),
    );
    table.set(mountPoint, fields[separator + 1]);
  }
  return table;
}

function isRoot(): boolean {
  return Deno.uid() === 0;
}

function onPath(program: string): boolean {
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    try {
      if (Deno.statSync(join(dir, program)).isFile) return true;
    } catch { /* not in this directory */ }
  }
  return false;
}

/** Check the mount point and the machine; throw a UsageError naming the problem and the fix. */
export function checkMountPoint(mountPoint: string): string {
  const path = resolve(mountPoint);
  if (mountTable().has(path)) {
    throw new UsageError(
      `Cannot mount "${path}": already mounted; run \`skyfs umount ${path}\` first`,
    );
  }
  let stat: Deno.FileInfo;
  try {
    stat = Deno.statSync(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) {
      throw new UsageError(`Cannot mount "${path}": no such directory; create it with mkdir`);
    }
    throw new UsageError(`Cannot mount "${path}": ${(error as Error).message}`);
  }
  if (!stat.isDirectory) throw new UsageError(`Cannot mount "${path}": not a directory`);
  for (const _ of Deno.readDirSync(path)) {
    throw new UsageError(`Cannot mount "${path}": directory is not empty; use an empty one`);
  }
  try {
    Deno.statSync("/dev/fuse");
  } catch {
    throw new UsageError(
      "/dev/fuse is missing: load the fuse module (`modprobe fuse`) or run `deno task setup`",
    );
  }
  if (!isRoot() && !onPath("fusermount3")) {
    throw new UsageError(
      "Not root and fusermount3 is not installed: run as root or `apt-get install fuse3`",
    );
  }
  try {
    loadLibfuse();
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  return path;
}

/** Mount and serve until unmounted; resolves when the daemon has shut down cleanly. */
export async function mount(mountPoint: string, options: MountOptions): Promise<void> {
  const logger = new Logger(options.log);
  const log = (line: string) => logger.info(line);
  const path = checkMountPoint(mountPoint);
  for (const [flag, on] of [["--dev", options.dev], ["--suid", options.suid]] as const) {
    // fusermount3 mounts every user's FUSE file system nodev,nosuid whatever is asked.
    if (on && !isRoot()) {
      throw new UsageError(`${flag} needs root (a user's mount is always no${flag.slice(2)})`);
    }
  }
  const listen = options.http ?? DEFAULT_MOUNT_HTTP;
  try {
    if (options.http !== undefined) checkListen(listen); // the default falls back to any port
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  // Local system calls go through the same native library (src/io/libc.ts): take it from the
  // configured path before the first one (openDataDir), so a missing or old build fails here.
  if (options.io?.libraryPath) useNativeLibrary(options.io.libraryPath);
  let dataDir;
  try {
    dataDir = openDataDir(resolve(options.dataDir));
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  // One engine for the process, opened first: the embedded store's log sync goes through it too.
  // A cluster node does not spin in io_uring_enter: its operations wait milliseconds for the
  // metadata replicas anyway, and the spin (5% of a node's wall time, about a quarter of its busy
  // time, under a create loop) took the CPU the replicas on the same machine needed.
  // FUSE over io_uring shares this engine's ring when the kernel can do it (the entries' replies
  // then go to the kernel in the same io_uring_enter as the disk I/O of the same turn), so the
  // ring is opened with room for them (src/fuse/README.md, "Transports").
  const transport = options.transport ?? "auto";
  const uringDepth = options.uringDepth ?? 8;
  let shared: { clientSlots: number; ringSetup: RingSetup } | undefined;
  if (transport !== "dev" && uringUnavailable() === undefined) {
    try {
      shared = sharedRingOptions(uringDepth);
    } catch { /* no /sys/devices/system/cpu/possible: FuseRing.open says so below */ }
  }
  const io = await openIoEngine({
    engine: options.io?.engine,
    uring: {
      ...(options.cluster ? { spinUs: 0 } : {}),
      ...(options.io?.libraryPath ? { libraryPath: options.io.libraryPath } : {}),
      ...shared,
    },
  });
  let kv;
  try {
    kv = await openMetaBackend(options.meta, {
      dataDir: dataDir.path,
      io,
      timeoutMs: options.curp?.timeoutMs,
      curp: { fastPath: options.curp?.fastPath, batchInFlight: options.curp?.batchInFlight },
      traceMeta: options.traceMeta,
      metaLog: options.metaLog,
    });
  } catch (error) {
    await io.shutdown();
    throw new UsageError((error as Error).message);
  }
  let node: ClusterNode | undefined;
  if (options.cluster) {
    try {
      node = await ClusterNode.start(kv, dataDir.path, {
        ...options.cluster,
        log,
        io,
        traceWatch: options.traceMeta ? (line) => console.error(line) : undefined,
      });
    } catch (error) {
      await kv.close();
      throw new UsageError(`Cannot join the cluster: ${(error as Error).message}`);
    }
  }
  // The server exists only after the mount; until then nothing can be cached in the kernel.
  let invalidate = (_ino: number) => {};
  let invalidateEntries = () => {};
  // The mount's flags decide atime (remount ro/noatime included); relatime until it exists.
  let atimeRule = (_isDir: boolean): AtimeRule => "relatime";
  const vfs = await createVfs({
    kv,
    io,
    dataDir: dataDir.path,
    onInodeChange: (ino) => invalidate(ino),
    onEntriesChange: () => invalidateEntries(),
    cluster: node?.data,
    localFileOps: options.localFileOps,
    localSpareFiles: options.localSpareFiles,
    keepClosedFiles: options.keepClosedFiles,
    atimeRule: (isDir) => atimeRule(isDir),
    volumes: {
      ...options.volumes,
      liveNodes: node ? async () => (await listNodes(kv)).map((info) => info.id) : undefined,
    },
  });
  const { pendingListed, pendingStored } = vfs.recovery;
  if (pendingListed > 0) {
    // Files whose close the previous daemon did not handle before it died (src/vfs/README.md).
    log(
      `skyfs: startup: size/mtime of ${pendingStored} of ${pendingListed} pending write-backs ` +
        "taken from their local files",
    );
  }
  // As mountinfo will show it; resolved now, since after the mount a path walk to it would ask
  // this very daemon (which must never touch its own mount).
  const realMountPoint = Deno.realPathSync(path);
  const mountOptions = ["default_permissions"];
  if (isRoot()) mountOptions.push("allow_other");
  // libfuse mounts nodev,nosuid unless asked otherwise: both only for trusted setups (README).
  if (options.dev) mountOptions.push("dev");
  if (options.suid) mountOptions.push("suid");
  // FUSE over io_uring: the ring is opened before the mount, so a kernel that cannot do it is
  // known before anything is mounted (src/fuse/README.md, "Transports").
  let ring: FuseRing | undefined;
  if (transport !== "dev") {
    try {
      ring = FuseRing.open({
        depth: uringDepth,
        payloadBytes: MAX_WRITE,
        libraryPath: options.io?.libraryPath,
        engine: io instanceof UringEngine ? io : undefined,
      });
    } catch (error) {
      const reason = (error as Error).message.replace(/^E[A-Z]+: /, "");
      if (transport === "uring") {
        await vfs.destroy();
        throw new UsageError(`fuse.transport = "uring" cannot work: ${reason}`);
      }
      log(`skyfs: FUSE transport /dev/fuse (io_uring unavailable: ${reason})`);
    }
  }
  let device: FuseDevice;
  try {
    device = FuseDevice.mount(path, { options: mountOptions, fsname: "skyfs", subtype: "skyfs" });
  } catch (error) {
    await ring?.close();
    await vfs.destroy(); // closes the kv too
    throw new UsageError((error as Error).message);
  }
  const mountFlags = new MountFlags(realMountPoint);
  atimeRule = (isDir) => mountFlags.atimeRule(isDir);
  // In a cluster, changes from other nodes arrive as notifications (attributes per inode, names
  // by an epoch bump, both from the metadata watch, which resubscribes without loss). A kernel
  // older than 7.44 has no epoch notification: there the entry and attribute timeouts drop to
  // 1 s, which bounds how long a name changed elsewhere can stay cached.
  const seconds = options.cacheSeconds ?? 10;
  let transportFailed = false;
  let stop = () => {};
  const server: FuseServer = new FuseServer(device, vfs, {
    // A cluster node uses passthrough only for files it writes whole (cluster.passthrough_writes).
    passthrough: options.passthrough && (!node || node.data.passthroughWrites),
    cacheDirs: !node, // other nodes change directories behind this kernel's back
    daemonLocks: Boolean(node), // other nodes must see them (src/fuse/README.md, Locks)
    onInit: (n) => {
      log(`skyfs: kernel FUSE 7.${n.minor}, passthrough ${n.passthrough ? "on" : "off"}`);
      if (node && n.minor < INC_EPOCH_MINOR && options.cacheSeconds === undefined) {
        server.validity = { entrySeconds: 1, attrSeconds: 1 };
        log(
          `skyfs: kernel FUSE 7.${n.minor} cannot be told of names changed on other nodes ` +
            `(FUSE_NOTIFY_INC_EPOCH needs 7.44, Linux 6.16); cache times cut to 1 s`,
        );
      }
    },
    validity: { entrySeconds: seconds, attrSeconds: seconds },
    idleSpinUs: options.idleSpinUs,
    parkUs: options.parkUs,
    ring,
    onTransport: (kind, detail) => {
      if (kind === "uring") log(`skyfs: FUSE transport ${detail}`);
      else if (ring === undefined) return; // "dev" chosen, or logged when the ring failed above
      else if (transport === "uring") {
        logger.error(`skyfs: fuse.transport = "uring" cannot work: ${detail}; unmounting`);
        transportFailed = true;
        stop();
      } else log(`skyfs: FUSE transport /dev/fuse (io_uring unavailable: ${detail})`);
    },
    trace: options.traceFuse ? (line) => console.error(line) : undefined,
    // A store that did not answer is not our bug: one line naming it, no stack.
    onInternalError: (op, error) =>
      logger.error(
        error instanceof MetaUnavailableError
          ? `skyfs: ${op} failed with EIO: metadata store unreachable: ${error.message}`
          : `skyfs: internal error in ${op}: ${(error as Error)?.stack ?? error}`,
      ),
    onIoError: (op, error) => logger.warn(`skyfs: ${op} failed with ${error.message}`),
  });
  invalidate = (ino) => server.invalidateAttributes(ino);
  // FUSE_NOTIFY_INC_EPOCH takes no kernel lock, so it is safe from an HTTP handler.
  invalidateEntries = () => void server.invalidateAllEntries();
  if (node) {
    // Changes made by other nodes. Attributes: INVAL_INODE without pages (pages follow
    // close-to-open: ClusterData.opened decides keep_cache). Names: INC_EPOCH, never
    // INVAL_ENTRY, which makes the kernel take the parent directory's lock: written from the JS
    // thread it deadlocks against a request holding that lock; from a thread-pool thread it
    // works, but a daemon killed while one waits cannot finish exiting and its mount hangs
    // (seen in a soak, src/cluster/README.md).
    node.onInodesChanged = (inos) => {
      for (const ino of inos) server.invalidateAttributes(ino);
    };
    node.onEntriesChanged = (dirs) => server.invalidateEntriesIn(dirs);
  }
  // The LD_PRELOAD shim's control socket: hands a process the local fd of a file it opened
  // through this mount (refused unless passthrough is on, see src/intercept/README.md).
  const shim = startShimServer({
    mountPoint: path,
    dataDir: dataDir.path,
    // Never on a cluster node: a handed-out fd would write its local file unseen.
    passthrough: () => !node && server.negotiated?.passthrough === true,
    // A file in a volume is written through the vfs only: its writes claim quota first.
    // A local file handed out is never recycled as another inode's (LocalStore.handedOut).
    mayServe: (ino) => {
      if (!vfs.volumes.outsideWritesAllowed(ino)) return false;
      vfs.localFileHandedOut(ino);
      return true;
    },
    // Sent at once: the shim's notices arrive on its socket, outside any FUSE request, and a
    // reader must not see the old size after the writer was told its write is visible.
    invalidate: (ino) => {
      device.writeMessage(notifyInvalInode(ino, -1, 0) as Uint8Array<ArrayBuffer>);
    },
    log,
  });
  let mounted = true;
  stop = () => {
    mounted = false;
    device.unmount();
    server.stopTransport(); // the ring's entries keep the connection alive until cancelled
  };
  // The endpoint shares this thread with the FUSE loop; Deno.serve reads and parses requests in
  // Rust, so only a complete request costs the JS thread anything (src/http/README.md).
  let http: HttpServer | undefined;
  try {
    // With --http off nothing of the endpoint exists: no registry, no event-loop monitor.
    if (listen !== "off") {
      http = startHttpServer(
        mountHttpContext({
          mountpoint: path,
          dataDir: dataDir.path,
          meta: options.meta ?? "embedded",
          fuse: server,
          vfs,
          kv,
          shim,
          io,
          cluster: node,
          logger,
          token: options.httpToken,
          mounted: () => mounted,
        }),
        listen,
        { fallbackToAnyPort: options.http === undefined },
      );
    }
  } catch (error) {
    logger.error(`skyfs: ${(error as Error).message}; serving without the HTTP endpoint`);
  }
  // For `skyfs stats MOUNTPOINT` and the other nodes' dashboards (src/http/endpoint_file.ts).
  const unpublish = http
    ? advertiseEndpoint(path, http.address, { membership: node?.membership, log })
    : () => {};
  // log.debug (SKYFS_DEBUG): SIGUSR2 logs the request counts so far (to split a workload into phases).
  const dumpCounts = () => {
    const counts = server.requestCounts().map(([name, n]) => `${name} ${n}`).join(", ");
    const engine = ring?.shared && io instanceof UringEngine ? io.stats() : undefined;
    const ringStats = server.transport === "uring" && ring
      ? `; ring: ${ring.stats.requests} requests, ${ring.stats.enters} enters, ` +
        `${ring.stats.devWakeups} /dev/fuse wake-ups` +
        (engine
          ? `; engine's ring: ${engine.submitCalls} submits (${engine.sharedSubmits} with ` +
            `replies and disk I/O), ${engine.submissions} disk ops and ` +
            `${engine.clientSubmissions} FUSE entries submitted`
          : "")
      : "";
    log(
      `skyfs: requests: ${counts}; transport ${server.transport}; parked waits ` +
        `${server.stats.wakeups} (idle spin found ${server.stats.spinHits}); woken on the JS ` +
        `thread ${server.stats.parkedOnThread} (epoll fds ${device.epollFds}); idle spin waits ` +
        `${server.stats.spinParks} (ended by a request ${server.stats.spinParkHits})${ringStats}; ` +
        `backing ids: ${server.backing.stats.opened} opened, ${server.backing.stats.closed} ` +
        `closed, ${server.backing.stats.reused} reused`,
    );
  };
  const debug = options.debug === true;
  if (debug) Deno.addSignalListener("SIGUSR2", dumpCounts);
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
  log(
    `skyfs: mounted ${path} (data ${dataDir.path}, io ${io.kind}, shim socket @${shim.socketName})`,
  );
  try {
    await server.serve();
  } finally {
    Deno.removeSignalListener("SIGINT", stop);
    Deno.removeSignalListener("SIGTERM", stop);
    mounted = false;
    device.unmount();
    mountFlags.close();
    unpublish();
    await http?.close();
    await shim.close();
    await node?.stop();
    await io.shutdown(); // the Vfs closed the kv when the server destroyed it
    if (debug) {
      Deno.removeSignalListener("SIGUSR2", dumpCounts);
      dumpCounts();
    }
    log(`skyfs: unmounted ${path}; shim ${JSON.stringify(shim.stats)}`);
  }
  if (transportFailed) {
    throw new UsageError(`fuse.transport = "uring" cannot work here; set it to "auto" or "dev"`);
  }
}

/** Unmount `mountPoint`, also when its daemon died (a dead mount answers ENOTCONN). */
export async function umount(mountPoint: string): Promise<void> {
  const path = resolve(mountPoint);
  const fstype = mountTable().get(path);
  if (fstype === undefined) throw new UsageError(`Cannot unmount "${path}": not mounted`);
  if (!fstype.startsWith("fuse")) {
    throw new UsageError(`Cannot unmount "${path}": it is ${fstype}, not a skyfs mount`);
  }
  const command = isRoot()
    ? new Deno.Command("umount", { args: ["-l", path], stderr: "piped" })
    : new Deno.Command("fusermount3", { args: ["-u", "-z", path], stderr: "piped" });
  const { code, stderr } = await command.output();
  if (code !== 0) {
    throw new UsageError(
      `Cannot unmount "${path}": ${new TextDecoder().decode(stderr).trim() || `exit ${code}`}`,
    );
  }
}
