/**
 * Every configuration key of skyfs, in one table: its section, zod schema, default, the flag and
 * environment variable that set it, the commands that read it, and what it allows. The loader
 * (load.ts), `skyfs config`, the CLI flags and docs/skyfs.example.toml all follow this table.
 * @module
 */

import { z } from "zod";
import { defaultDataDir } from "../datadir.ts";

/** The commands that read configuration keys (`skyfs config COMMAND` takes these names). */
export const COMMANDS = [
  "mount",
  "umount",
  "status",
  "meta serve",
  "meta status",
  // The developer tasks: `deno task cluster` (src/cluster/cluster_main.ts) and `deno task bench`.
  "cluster",
  "bench",
  "stats",
  "volume",
  "csi",
] as const;
export type CommandName = typeof COMMANDS[number];

export interface KeySpec {
  /** How flag and environment text becomes a value before the schema checks it. */
  kind: "string" | "number" | "boolean";
  schema: z.ZodTypeAny;
  /** The value when nothing sets it; undefined = unset (the code's own behaviour applies). */
  default?: unknown | (() => unknown);
  /** What an unset key means, when it is more than "nothing" (shown by `skyfs config`). */
  unsetMeans?: string;
  /** Flag name without the dashes, the same in every command listed in `commands`. */
  flag?: string;
  /** Set by the command's positional argument (mount DIR) rather than a flag. */
  positional?: boolean;
  /** Environment variable; default SKYFS_<SECTION>_<NAME>. Only variables that existed before the
   * config file keep another name (SKYFS_IO, SKYFS_URING_LIB, SKYFS_OPEN_LINGER_MS, SKYFS_DEBUG). */
  env?: string;
  commands: readonly CommandName[];
  /** What the key allows, for error messages: "a whole number of milliseconds from 0 to 86400000". */
  allowed: string;
  /** One line for `skyfs config` and the example file. */
  doc: string;
  /** Never printed: `skyfs config` and error messages show it hidden. */
  secret?: boolean;
}

const int = (min: number, max: number) => z.number().int().min(min).max(max);
const hostPort = z.string().regex(/^[^\s:]+:\d{1,5}$/);
const MOUNTING = ["mount"] as const;
/** HOST:PORT, [IPv6]:PORT or off (src/http/server.ts parses it further). */
const LISTEN = /^(off|\[[0-9a-fA-F:.]+\]:\d{1,5}|[^\s:[\]]+:\d{1,5})$/;

/** Keys by "section.name". The order is the order of `skyfs config` and the example file. */
export const KEYS = {
  // [mount]: `skyfs mount` (and `skyfs umount`, `skyfs status` for the shared keys)
  "mount.mountpoint": {
    kind: "string",
    schema: z.string().min(1),
    positional: true,
    commands: ["mount", "umount"],
    unsetMeans: "then DIR is required",
    allowed: "a directory path",
    doc: "where to mount (the DIR argument of `skyfs mount` and `skyfs umount`)",
  },
  "mount.data": {
    kind: "string",
    schema: z.string().min(1),
    default: defaultDataDir,
    flag: "data",
    commands: MOUNTING,
    allowed: "a directory path",
    doc: "local data directory (/var/lib/skyfs as root, else ~/.local/share/skyfs)",
  },
  "mount.meta": {
    kind: "string",
    schema: z.string().regex(/^(embedded(:\/\/)?|(curp|etcd):\/\/\S+)$/),
    default: "embedded",
    flag: "meta",
    commands: ["mount", "status"],
    allowed: "embedded, curp://HOST:PORT,... or etcd://HOST:PORT,...",
    doc: "metadata store: embedded (this node only), curp://H:P,... or etcd://H:P,...",
  },
  "mount.meta_log": {
    kind: "string",
    schema: z.enum(["mapped", "engine"]),
    default: "mapped",
    commands: MOUNTING,
    allowed: "mapped or engine",
    doc: "how the embedded store writes its log: mapped = copied into a shared mapping of the " +
      "file, engine = a write through the I/O engine (src/fuse/README.md, metadata log)",
  },
  "mount.local_file_ops": {
    kind: "string",
    schema: z.enum(["inline", "engine"]),
    default: "inline",
    commands: MOUNTING,
    allowed: "inline or engine",
    doc: "how the small syscalls on local data files are made (open, O_CREAT included, close, " +
      "the unlink of a small deleted file): inline = a synchronous libc call, engine = through " +
      "the I/O engine (io-wq for O_CREAT and unlink); on a cluster node too since session 13 " +
      "(src/fuse/README.md, Daemon CPU per request)",
  },
  "mount.local_spare_files": {
    kind: "string",
    schema: z.string().regex(/^(auto|\d{1,7})$/).refine((v) => v === "auto" || +v <= 1_000_000),
    default: "auto",
    commands: MOUNTING,
    allowed: "auto or a whole number from 0 to 1000000",
    doc: "how many emptied local files of deleted inodes to keep (data/spare) and rename into " +
      "place for new inodes instead of creating one; auto = 4096 when the data directory is on " +
      "an ext4 without a journal (whose inode allocation scans recently freed inodes), else 0; " +
      "0 = unlink and create as before; inline local_file_ops only, never on a cluster node " +
      "(src/fuse/README.md, Spare local files)",
  },
  "mount.keep_closed_files": {
    kind: "number",
    schema: int(0, 1_000_000),
    default: 16_384,
    commands: MOUNTING,
    allowed: "a whole number from 0 to 1000000",
    doc: "how many local data files to keep open after their last close (with their FUSE " +
      "passthrough backing ids), least recently closed dropped first, so that the next open " +
      "of the file skips the local open and the backing registration; at most a quarter of " +
      "the daemon's RLIMIT_NOFILE; 0 = off; inline local_file_ops only, never on a cluster " +
      "node (src/fuse/README.md, Kept local files)",
  },
  "mount.passthrough": {
    kind: "string",
    schema: z.enum(["auto", "on", "off"]),
    default: "auto",
    flag: "passthrough",
    commands: MOUNTING,
    allowed: "auto, on or off",
    doc: "FUSE passthrough (Linux 6.9+, root): auto = on when root and the kernel offers it",
  },
  "mount.dev": {
    kind: "boolean",
    schema: z.boolean(),
    default: false,
    flag: "dev",
    commands: MOUNTING,
    allowed: "true or false (env: 1/0, true/false, on/off)",
    doc: "honour device nodes on the mount (default nodev); root only, for trusted setups",
  },
  "mount.suid": {
    kind: "boolean",
    schema: z.boolean(),
    default: false,
    flag: "suid",
    commands: MOUNTING,
    allowed: "true or false (env: 1/0, true/false, on/off)",
    doc: "honour set-id bits of programs run from the mount (default nosuid); root only",
  },
  // [fuse]: the kernel protocol
  "fuse.cache_seconds": {
    kind: "number",
    schema: z.number().min(0).max(86_400),
    default: 10,
    flag: "cache-seconds",
    commands: MOUNTING,
    allowed: "a number of seconds from 0 to 86400",
    doc: "seconds the kernel caches entries and attributes (1 on a cluster node before Linux " +
      "6.16 unless set)",
  },
  "fuse.spin_us": {
    kind: "number",
    schema: z.number().min(0).max(10_000),
    default: 50,
    commands: MOUNTING,
    allowed: "a number of microseconds from 0 to 10000",
    doc: "how long the FUSE reader looks for the next request before parking (event-loop " +
      "turns, or one ppoll on the JS thread when no request is being handled); 0 = park at " +
      "once (src/fuse/README.md, Idle spin)",
  },
  "fuse.park_us": {
    kind: "number",
    schema: z.number().min(0).max(10_000),
    default: 0,
    commands: MOUNTING,
    allowed: "a number of microseconds from 0 to 10000",
    doc: "how long the /dev/fuse reader, idle after its spin, blocks the JS thread in one poll " +
      "of /dev/fuse and the event loop's epoll fds before parking on the thread pool; timers " +
      "and other work of the event loop (HTTP replies) can wait up to this long; 0 = never " +
      "(src/fuse/README.md, Parking on the JS thread)",
  },
  "fuse.transport": {
    kind: "string",
    schema: z.enum(["auto", "uring", "dev"]),
    default: "auto",
    flag: "transport",
    commands: MOUNTING,
    allowed: "auto, uring or dev",
    doc: "how FUSE requests cross: io_uring when the kernel offers it (auto, else /dev/fuse " +
      "with one info line), uring (an error when it cannot), or dev (src/fuse/README.md, " +
      "Transports)",
  },
  "fuse.uring_depth": {
    kind: "number",
    schema: z.number().int().min(1).max(128),
    default: 8,
    commands: MOUNTING,
    allowed: "an integer from 1 to 128",
    doc: "FUSE over io_uring: ring entries (requests in flight) per CPU queue; each holds a " +
      "1 MiB buffer",
  },
  // [volume]: volumes with quotas (src/vfs/volumes.ts)
  "volume.root": {
    kind: "string",
    schema: z.string().regex(/^[A-Za-z0-9._-]{1,255}$/).refine((v) => v !== "." && v !== ".."),
    default: "volumes",
    commands: MOUNTING,
    allowed: "one directory name (letters, digits, '.', '_', '-'), not . or ..",
    doc: "the directory under the mount's root that holds the volumes (/<root>/<name>)",
  },
  "volume.reserve_bytes": {
    kind: "number",
    schema: int(4096, 2 ** 40),
    default: 64 * 1024 * 1024,
    commands: MOUNTING,
    allowed: "a whole number of bytes from 4096 to 1099511627776",
    doc: "bytes of a volume's capacity a node reserves at a time for its writers",
  },
  "volume.release_ms": {
    kind: "number",
    schema: int(0, 3_600_000),
    default: 1000,
    commands: MOUNTING,
    allowed: "a whole number of milliseconds from 0 to 3600000",
    doc: "how long a node keeps reserved capacity that no write is using before returning it",
  },
  // [cluster]: cluster mode (a backend store shared by several nodes)
  "cluster.backend": {
    kind: "string",
    schema: z.string().min(1),
    flag: "backend",
    commands: MOUNTING,
    unsetMeans: "single node",
    allowed: "/shared/dir, dir:///path or s3://BUCKET?endpoint=http://H:P",
    doc: "cluster mode: chunks in this backend store; needs a curp:// or etcd:// mount.meta",
  },
  "cluster.node_id": {
    kind: "string",
    schema: z.string().regex(/^[0-9a-z]{1,32}$/),
    flag: "node-id",
    commands: MOUNTING,
    unsetMeans: "random, kept in the data directory",
    allowed: "1-32 lowercase letters or digits",
    doc: "this node's id in the cluster",
  },
  "cluster.zone": {
    kind: "string",
    schema: z.string().regex(/^[a-z0-9-]{1,32}$/),
    default: "default",
    flag: "zone",
    commands: ["mount", "csi"],
    allowed: "1-32 characters of a-z, 0-9 and -",
    doc: "this node's zone (a cloud or data centre); the zone's nodes share one backend store",
  },
  "cluster.zone_replicas": {
    kind: "number",
    schema: int(1, 64),
    default: 2,
    env: "SKYFS_ZONE_REPLICAS",
    commands: MOUNTING,
    allowed: "a whole number of zones from 1 to 64",
    doc: "zones holding each chunk (the writer's first; capped at the zones that exist, so 1 " +
      "with one zone); copies beyond cluster.zone_sync go through the replication queue",
  },
  "cluster.zone_sync": {
    kind: "number",
    schema: int(1, 64),
    default: 1,
    env: "SKYFS_ZONE_SYNC",
    commands: MOUNTING,
    allowed: "a whole number of zones from 1 to cluster.zone_replicas",
    doc: "zones holding a chunk before fsync or close returns (1: the writer's only, the other " +
      "copies asynchronous)",
  },
  "cluster.zone_replication_delay_ms": {
    kind: "number",
    schema: int(0, 86_400_000),
    default: 0,
    env: "SKYFS_ZONE_REPLICATION_DELAY_MS",
    commands: MOUNTING,
    allowed: "a whole number of milliseconds from 0 to 86400000",
    doc: "how long a queued copy to other zones waits before its writer makes it (a chunk " +
      "overwritten meanwhile is never copied); a node taking over a dead writer's copies does " +
      "not wait",
  },
  "cluster.peer_routes": {
    kind: "string",
    schema: z.string().regex(
      /^([a-z0-9-]{1,32}=[^\s:,=]+:\d{1,5})(,[a-z0-9-]{1,32}=[^\s:,=]+:\d{1,5})*$/,
    ),
    flag: "peer-routes",
    commands: MOUNTING,
    unsetMeans: "every zone dials the peer server's own address",
    allowed: "ZONE=HOST:PORT[,ZONE=HOST:PORT...]",
    doc: "where the nodes of another zone reach this node's peer server (a NAT, a gateway, a " +
      "delay proxy), carried in its membership record",
  },
  "cluster.backend_routes": {
    kind: "string",
    schema: z.string().regex(/^([a-z0-9-]{1,32}=\S+?)(,[a-z0-9-]{1,32}=\S+?)*$/),
    flag: "backend-routes",
    commands: MOUNTING,
    unsetMeans: "another zone's store at the URL in its zone record",
    allowed: "ZONE=URL[,ZONE=URL...] (URLs without commas)",
    doc: "how this node reaches other zones' backend stores, instead of their recorded URL " +
      "(another endpoint of the same store)",
  },
  "cluster.zone_timeout_ms": {
    kind: "number",
    schema: int(100, 3_600_000),
    default: 10_000,
    commands: MOUNTING,
    allowed: "a whole number of milliseconds from 100 to 3600000",
    doc: "how long a request to another zone's http:// backend waits before it fails (an " +
      "unreachable zone costs this much, then the next zone's copy is tried)",
  },
  "cluster.zone_down_ms": {
    kind: "number",
    schema: int(0, 3_600_000),
    default: 10_000,
    commands: MOUNTING,
    allowed: "a whole number of milliseconds from 0 to 3600000",
    doc: "how long another zone's store is skipped by reads after a request to it failed (an " +
      "error or timeout, not a missing object) unless it is the last place a chunk can come from",
  },
  "cluster.open_linger_ms": {
    kind: "number",
    schema: int(0, 86_400_000),
    default: 60_000,
    env: "SKYFS_OPEN_LINGER_MS",
    commands: MOUNTING,
    allowed: "a whole number of milliseconds from 0 to 86400000",
    doc: "no effect since session 13 (an open writes no record; a record is put only for a file " +
      "seen unlinked while open, and goes at its last close; src/cluster/README.md)",
  },
  "cluster.passthrough_writes": {
    kind: "boolean",
    schema: z.boolean(),
    default: false,
    commands: MOUNTING,
    allowed: "true or false (env: 1/0, true/false, on/off)",
    doc: "let the kernel write a file this node created or truncated at a write-only open " +
      "straight into its local file (FUSE passthrough, with mount.passthrough); its close and " +
      "fsync then upload the whole file; a read-write open of it meanwhile fails with ETXTBSY " +
      "(src/cluster/README.md, Data path)",
  },
  "cluster.inline_bytes": {
    kind: "number",
    schema: int(0, 65_536),
    default: 4096,
    commands: MOUNTING,
    allowed: "a whole number of bytes from 0 (off) to 65536",
    doc: "files up to this size keep their data in their chunk map in the metadata store, " +
      "written with the close's metadata (no backend object); larger files are chunks in the " +
      "backend as before (src/cluster/README.md, Small files inline)",
  },
  // [peer]: the peer cache server and client
  "peer.listen": {
    kind: "string",
    schema: hostPort,
    default: "127.0.0.1:0",
    flag: "peer-listen",
    commands: MOUNTING,
    allowed: "HOST:PORT (port 0: any free port)",
    doc: "address of this node's peer cache server",
  },
  "peer.timeout_ms": {
    kind: "number",
    schema: int(100, 3_600_000),
    default: 10_000,
    commands: MOUNTING,
    allowed: "a whole number of milliseconds from 100 to 3600000",
    doc: "how long a peer request waits before the chunk is read from the backend instead (the " +
      "peer is then not asked for as long again)",
  },
  "peer.send": {
    kind: "string",
    schema: z.enum(["splice", "copy"]),
    default: "splice",
    commands: MOUNTING,
    allowed: "splice or copy",
    doc: "how the io_uring peer server sends a cached chunk: splice (file -> pipe -> socket) or " +
      "copy (read, then send)",
  },
  // [cache]: the local chunk cache of a cluster node
  "cache.bytes": {
    kind: "number",
    schema: int(1, Number.MAX_SAFE_INTEGER),
    default: 8 * 1024 ** 3,
    flag: "cache-bytes",
    commands: MOUNTING,
    allowed: "a whole number of bytes >= 1",
    doc: "local chunk cache limit in bytes (cluster mode)",
  },
  // [io]: the process's disk and socket I/O engine
  "io.engine": {
    kind: "string",
    schema: z.enum(["auto", "io_uring", "portable"]),
    default: "auto",
    env: "SKYFS_IO",
    commands: ["mount", "meta serve"],
    allowed: "auto, io_uring or portable",
    doc: "I/O engine: io_uring (fail if refused), portable, or auto (io_uring, else portable)",
  },
  "io.uring_lib": {
    kind: "string",
    schema: z.string().min(1),
    env: "SKYFS_URING_LIB",
    commands: ["mount", "meta serve"],
    unsetMeans: "lib/uring/build/libskyfs_uring.so of this checkout",
    allowed: "a file path",
    doc: "path of libskyfs_uring.so (io_uring, and the wrappers of every local syscall)",
  },
  // [curp]: CURP tuning, client (mount, status) and replica (meta serve)
  "curp.timeout_ms": {
    kind: "number",
    schema: int(100, 3_600_000),
    default: 10_000,
    commands: ["mount", "status"],
    allowed: "a whole number of milliseconds from 100 to 3600000",
    doc: "how long a CURP client waits for a command's answer before EIO",
  },
  "curp.fast_path": {
    kind: "boolean",
    schema: z.boolean(),
    default: true,
    commands: ["mount", "status"],
    allowed: "true or false (env: 1/0, true/false, on/off)",
    doc: "let non-conflicting metadata writes complete in one round trip (CURP fast path)",
  },
  "curp.batch_in_flight": {
    kind: "number",
    schema: int(0, 64),
    default: 1,
    commands: ["mount", "status"],
    allowed: "a whole number from 0 to 64",
    doc:
      "writes a CURP client has in flight before more are gathered into one batch command (0: never)",
  },
  "curp.snapshot_every": {
    kind: "number",
    schema: int(1, 100_000_000),
    default: 10_000,
    commands: ["meta serve"],
    allowed: "a whole number of log entries from 1 to 100000000",
    doc: "a replica compacts its log into a snapshot once this many applied entries sit in it",
  },
  "curp.witness_ack_after_write": {
    kind: "boolean",
    schema: z.boolean(),
    default: true,
    commands: ["meta serve"],
    allowed: "true or false (env: 1/0, true/false, on/off)",
    doc: "a replica answers a proposal once its witness record is written, before the fdatasync " +
      "(survives kill -9; kv.sync() covers power loss, src/meta/curp/README.md)",
  },
  "curp.log_writes": {
    kind: "string",
    schema: z.enum(["mapped", "engine"]),
    default: "mapped",
    commands: ["meta serve"],
    allowed: "mapped or engine",
    doc: "how a replica writes its log.bin: mapped = copied into a shared mapping of the file " +
      "(survives kill -9; the fdatasync after covers power loss), engine = a write through the " +
      "I/O engine (src/meta/curp/README.md)",
  },
  // [meta]: `skyfs meta serve` (one CURP replica) and `skyfs meta status`
  "meta.id": {
    kind: "string",
    schema: z.string().regex(/^[A-Za-z0-9_-]{1,64}$/),
    flag: "id",
    commands: ["meta serve"],
    unsetMeans: "required by meta serve",
    allowed: "1-64 letters, digits, _ or -",
    doc: "this replica's id, one of meta.peers",
  },
  "meta.peers": {
    kind: "string",
    schema: z.string().regex(/^[^=,\s]+=[^\s,:]+:\d{1,5}(,[^=,\s]+=[^\s,:]+:\d{1,5})*$/),
    flag: "peers",
    commands: ["meta serve", "meta status"],
    unsetMeans: "required by meta serve",
    allowed: "ID=HOST:PORT,ID=HOST:PORT,... (every replica, this one included)",
    doc: "every replica of the cluster (the same list on each); `meta status` asks these",
  },
  "meta.data": {
    kind: "string",
    schema: z.string().min(1),
    flag: "data",
    commands: ["meta serve"],
    unsetMeans: "required by meta serve",
    allowed: "a directory path",
    doc: "where the replica keeps its log, witness pool and vote (fsync'd)",
  },
  "meta.tick_ms": {
    kind: "number",
    schema: int(1, 10_000),
    default: 50,
    flag: "tick-ms",
    commands: ["meta serve"],
    allowed: "a whole number of milliseconds from 1 to 10000",
    doc: "milliseconds per replica tick (elections after 10-20 ticks)",
  },
  "meta.http": {
    kind: "string",
    schema: z.string().regex(LISTEN),
    flag: "http",
    commands: ["meta serve"],
    unsetMeans: "127.0.0.1:9590, or any free port when that one is taken",
    allowed: "HOST:PORT (port 0-65535) or off",
    doc: "the replica's HTTP endpoint (/metrics, /healthz, /readyz, /api/v1/...; src/http)",
  },
  // [http]: the HTTP endpoint of the mount (src/http/README.md); the token serves both
  "http.listen": {
    kind: "string",
    schema: z.string().regex(LISTEN),
    flag: "http",
    commands: MOUNTING,
    unsetMeans: "127.0.0.1:9570, or any free port when that one is taken",
    allowed: "HOST:PORT (port 0-65535) or off",
    doc: "the mount's HTTP endpoint (/metrics, /healthz, /readyz, /api/v1/..., the dashboard)",
  },
  "http.token_file": {
    kind: "string",
    schema: z.string().min(1),
    flag: "http-token-file",
    commands: ["mount", "meta serve", "volume", "csi"],
    unsetMeans: "http.token",
    allowed: "a file path (its first line: the token, 16 characters or more)",
    doc: "file holding the bearer token the admin API's changing actions need",
  },
  "http.token": {
    kind: "string",
    schema: z.string().min(16),
    secret: true,
    commands: ["mount", "meta serve", "volume", "csi"],
    unsetMeans: "none: the admin API's changing actions are refused",
    allowed: "a token of 16 characters or more",
    doc: "the bearer token itself when no token_file is set (better in the environment or " +
      "a file than in this one); `skyfs config` prints it hidden",
  },
  // [local_cluster]: `deno task cluster` (a whole cluster on this machine, for trying skyfs)
  "local_cluster.nodes": {
    kind: "number",
    schema: int(1, 26),
    default: 3,
    flag: "nodes",
    commands: ["cluster"],
    allowed: "a whole number from 1 to 26",
    doc: "mounts to start",
  },
  "local_cluster.zones": {
    kind: "number",
    schema: int(1, 26),
    default: 1,
    flag: "zones",
    commands: ["cluster"],
    allowed: "a whole number from 1 to 26",
    doc: "zones z1..zN, nodes assigned round-robin, each zone its own backend directory " +
      "(1: one zone named default)",
  },
  "local_cluster.rtt_ms": {
    kind: "number",
    schema: int(0, 10_000),
    default: 0,
    flag: "rtt-ms",
    commands: ["cluster"],
    allowed: "a whole number of milliseconds from 0 to 10000",
    doc: "with zones > 1: round trip added to every connection crossing zones (metadata, " +
      "peer cache, another zone's backend) by userspace delay proxies; 0 = none",
  },
  "local_cluster.bandwidth_mbit": {
    kind: "number",
    schema: int(0, 100_000),
    default: 0,
    flag: "bandwidth-mbit",
    commands: ["cluster"],
    allowed: "a whole number of megabits per second from 0 to 100000",
    doc: "with rtt_ms: each delay proxy also limits each direction to this bandwidth; 0 = none",
  },
  "local_cluster.etcd": {
    kind: "boolean",
    schema: z.boolean(),
    default: false,
    flag: "etcd",
    commands: ["cluster"],
    allowed: "true or false",
    doc: "one etcd member for metadata instead of three CURP replicas",
  },
  "local_cluster.netns": {
    kind: "boolean",
    schema: z.boolean(),
    default: false,
    flag: "netns",
    commands: ["cluster"],
    allowed: "true or false",
    doc: "a network namespace per mount",
  },
  // [bench]: `deno task bench` (bench/README.md); --list and --render stay flags (actions)
  "bench.quick": {
    kind: "boolean",
    schema: z.boolean(),
    default: false,
    flag: "quick",
    commands: ["bench"],
    allowed: "true or false",
    doc: "short runs and small files",
  },
  "bench.tiny": {
    kind: "boolean",
    schema: z.boolean(),
    default: false,
    flag: "tiny",
    commands: ["bench"],
    allowed: "true or false",
    doc: "tiny files and runs (CI: proves the harness works)",
  },
  "bench.only": {
    kind: "string",
    schema: z.string().regex(/^[a-z0-9_-]+(,[a-z0-9_-]+)*$/),
    flag: "only",
    commands: ["bench"],
    unsetMeans: "fio,meta,io,cluster",
    allowed: "job families, comma-separated (deno task bench --help lists them)",
    doc: "job families to run",
  },
  "bench.targets": {
    kind: "string",
    schema: z.string().regex(/^[a-z0-9_.-]+(,[a-z0-9_.-]+)*$/),
    flag: "targets",
    commands: ["bench"],
    unsetMeans: "every target",
    allowed: "targets, comma-separated (deno task bench --help lists them)",
    doc: "targets to measure",
  },
  "bench.out": {
    kind: "string",
    schema: z.string().min(1),
    flag: "out",
    commands: ["bench"],
    unsetMeans: "bench/results of the checkout",
    allowed: "a directory path",
    doc: "where results go",
  },
  "bench.scratch": {
    kind: "string",
    schema: z.string().min(1),
    flag: "scratch",
    commands: ["bench"],
    unsetMeans: "/tmp/skyfs-bench-PID",
    allowed: "a directory path on the disk to compare against (not tmpfs)",
    doc: "where targets are mounted and files written",
  },
  "bench.no_readme": {
    kind: "boolean",
    schema: z.boolean(),
    default: false,
    flag: "no-readme",
    commands: ["bench"],
    allowed: "true or false",
    doc: "do not update README.md's Performance section (only full runs do)",
  },
  "bench.strict": {
    kind: "boolean",
    schema: z.boolean(),
    default: false,
    flag: "strict",
    commands: ["bench"],
    allowed: "true or false",
    doc: "exit 1 when a requested target could not be measured or a job failed",
  },
  "bench.keep_scratch": {
    kind: "boolean",
    schema: z.boolean(),
    default: false,
    flag: "keep-scratch",
    commands: ["bench"],
    allowed: "true or false",
    doc: "leave the scratch directory for inspection",
  },
  "bench.no_uring_switch": {
    kind: "boolean",
    schema: z.boolean(),
    default: false,
    flag: "no-uring-switch",
    commands: ["bench"],
    allowed: "true or false",
    doc: "leave /sys/module/fuse/parameters/enable_uring as it is (by default a run with " +
      "skyfs-uring turns it on, as root, and puts it back at the end)",
  },
  // [stats]: `skyfs stats TARGET`
  "stats.interval": {
    kind: "number",
    schema: z.number().min(0.1).max(3600),
    default: 1,
    flag: "interval",
    commands: ["stats"],
    allowed: "a number of seconds from 0.1 to 3600",
    doc: "seconds between two lines of skyfs stats",
  },
  "stats.count": {
    kind: "number",
    schema: int(1, 1_000_000_000),
    flag: "count",
    commands: ["stats"],
    unsetMeans: "until interrupted",
    allowed: "a whole number from 1 to 1000000000",
    doc: "lines skyfs stats prints before it exits",
  },
  "stats.header_every": {
    kind: "number",
    schema: int(1, 1_000_000),
    default: 20,
    flag: "header-every",
    commands: ["stats"],
    allowed: "a whole number from 1 to 1000000",
    doc: "lines between two headers of skyfs stats",
  },
  // [csi]: `skyfs csi` (src/csi/README.md)
  "csi.endpoint": {
    kind: "string",
    schema: z.string().regex(/^unix:\/\/\/\S+$/),
    default: "unix:///run/skyfs/csi.sock",
    flag: "endpoint",
    commands: ["csi"],
    allowed: "unix:///path/to/csi.sock",
    doc: "the unix socket the CSI driver serves gRPC on",
  },
  "csi.mode": {
    kind: "string",
    schema: z.enum(["node", "controller", "both"]),
    default: "both",
    flag: "mode",
    commands: ["csi"],
    allowed: "node, controller or both",
    doc: "which CSI services to serve besides Identity",
  },
  "csi.node_id": {
    kind: "string",
    schema: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$/),
    flag: "node-id",
    commands: ["csi"],
    unsetMeans: "the host name",
    allowed: "1-253 letters, digits, '.', '_' or '-' (a Kubernetes node name)",
    doc: "the node id NodeGetInfo reports",
  },
  "csi.mount": {
    kind: "string",
    schema: z.string().regex(/^(\/|https?:\/\/[^/\s]+\/?$)/),
    flag: "mount",
    commands: ["csi"],
    unsetMeans: "none (controller mode with csi.api only)",
    allowed: "an absolute directory path, or http://HOST:PORT (controller mode: as csi.api)",
    doc: "the node's skyfs mount point, which volumes are bound from (needed in node mode); " +
      "a mount's endpoint URL serves controller mode as csi.api does",
  },
  "csi.api": {
    kind: "string",
    schema: z.string().regex(/^https?:\/\/[^/\s]+\/?$/),
    flag: "api",
    commands: ["csi"],
    unsetMeans: "the HTTP endpoint the mount on csi.mount published",
    allowed: "http://HOST:PORT",
    doc: "a skyfs mount's HTTP endpoint, whose volume admin API the driver calls",
  },
  "csi.default_capacity_bytes": {
    kind: "number",
    schema: int(1, 2 ** 53 - 1),
    default: 1024 ** 3,
    commands: ["csi"],
    allowed: "a whole number of bytes from 1 to 2^53-1",
    doc: "capacity of a volume created without a capacity range",
  },
  // [log]
  "log.debug": {
    kind: "string",
    schema: z.string().regex(/^[a-z0-9,]*$/),
    default: "",
    env: "SKYFS_DEBUG",
    commands: ["mount", "status", "meta serve"],
    allowed: 'a comma-separated list of words, e.g. "1" or "meta" ("" = off)',
    doc: "debug output: any word turns on request counts at unmount (and on SIGUSR2) and " +
      "stacks of errors; meta adds one line per CURP command, fuse one per FUSE request",
  },
} as const satisfies Record<string, KeySpec>;

export type KeyName = keyof typeof KEYS;

/** The environment variable of a key. */
export function envName(key: KeyName): string {
  const spec: KeySpec = KEYS[key];
  return spec.env ?? `SKYFS_${key.replace(".", "_").toUpperCase()}`;
}

/** The sections, in table order. */
export function sections(): string[] {
  return [...new Set(Object.keys(KEYS).map((k) => k.split(".")[0]))];
}

/** Keys a command reads (every key when `command` is undefined). */
export function keysOf(command?: CommandName): KeyName[] {
  return (Object.keys(KEYS) as KeyName[]).filter((key) =>
    command === undefined || (KEYS[key] as KeySpec).commands.includes(command)
  );
}
