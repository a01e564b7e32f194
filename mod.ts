/**
 * The skyfs command line: `skyfs mount DIR`, `skyfs umount DIR`, and help for each command.
 * Arguments are parsed with node:util parseArgs; bad input prints one line and exits non-zero.
 * @module
 */

import { parseArgs } from "node:util";
import { mount, umount, UsageError } from "./src/mount.ts";
import { ensurePreloadLibrary } from "./src/intercept/mod.ts";
import { metaServe, metaStatus } from "./src/meta/curp/cli.ts";
import {
  type CommandName,
  COMMANDS,
  type Config,
  ConfigError,
  envName,
  flagsOf,
  formatConfig,
  readConfigFile,
  resolveConfig,
} from "./src/config/mod.ts";
import { readHttpToken } from "./src/http/server.ts";

const USAGE = `skyfs: a userspace distributed file system

Usage: skyfs <command> [options]

Commands:
  mount DIR      mount skyfs on DIR and serve it in the foreground
  umount DIR     unmount DIR (also a dead mount left by a crashed daemon)
  exec -- CMD    run CMD with the LD_PRELOAD shim (file I/O on mounts served in-process)
  preload-path   print the path of the shim library (for LD_PRELOAD), building it if needed
  meta serve     run a CURP metadata replica (skyfs meta serve --help)
  meta status    show the leader, term, commit index and members of a CURP cluster
  status         show a cluster's live nodes, cache use and hit rates (--meta URL)
  config [CMD]   print the effective configuration of CMD and where each value came from
  stats TARGET   one line per second of a daemon's activity (mount point or HOST:PORT)
  volume CMD     create, list, resize, delete volumes with quotas, show usage (--help)
  csi            serve the Container Storage Interface for Kubernetes (skyfs csi --help)
  help           this text

Every command takes --config FILE (TOML; or SKYFS_CONFIG=FILE): each option of each command is a
key there, and a SKYFS_* environment variable; a flag beats the environment, which beats the
file, which beats the default (README.md, "Operating skyfs"; docs/skyfs.example.toml).

Run \`skyfs <command> --help\` for a command's options.`;

const MOUNT_USAGE = `Usage: skyfs mount DIR [options]

Mount skyfs on DIR (an existing empty directory) and serve it until SIGINT or SIGTERM, which
unmount cleanly. As root the mount allows every user (allow_other) and the kernel checks
permissions (default_permissions).

Options:
  --data DIR           local data directory (default: /var/lib/skyfs as root,
                       else ~/.local/share/skyfs)
  --cache-seconds N    seconds the kernel caches entries and attributes (default 10)
  --passthrough MODE   auto|on|off: let the kernel read, write and mmap local data files
                       directly (FUSE passthrough, Linux 6.9+, needs root). auto (default)
                       = on when root and the kernel offers it
  --meta URL           metadata store: embedded (default, this node only), curp://H:P,...
                       (replicas run by \`skyfs meta serve\`) or etcd://H:P,... (etcd v3)
  --backend URL        cluster mode: chunks in a backend store (/shared/dir, dir:///path or
                       s3://BUCKET?endpoint=http://H:P); needs a shared --meta (curp/etcd)
  --transport T        auto|uring|dev: how FUSE requests cross. auto (default) = FUSE over
                       io_uring when the kernel offers it (enable_uring), else /dev/fuse
  --node-id ID         cluster node id (default: random, kept in the data directory)
  --peer-listen H:P    peer cache server address (default 127.0.0.1:0)
  --peer-routes Z=H:P,...     where other zones reach this node's peer server
  --backend-routes Z=URL,...  how this node reaches other zones' backend stores
  --cache-bytes N      local chunk cache limit in bytes (default 8 GiB)
  --dev                honour device nodes on the mount (default nodev: opening one fails
                       with EACCES); root only, for trusted setups
  --suid               honour set-user-id and set-group-id bits of programs run from the
                       mount (default nosuid); root only, for trusted setups
  --http HOST:PORT     HTTP endpoint: /metrics, /healthz, /readyz, /api/v1/... (default
                       127.0.0.1:9570, or any free port when that one is taken; off = none)
  --http-token-file F  file holding the bearer token the admin API's changing actions need
                       (else SKYFS_HTTP_TOKEN; with neither they are refused)
  --config FILE        TOML configuration file: every option above and the tuning keys
                       ([mount], [fuse], [cluster], [peer], [cache], [io], [curp], [http],
                       [log]); \`skyfs config mount\` shows them with their environment variables
  -h, --help           this text

DIR may come from the file instead (mount.mountpoint).`;

const UMOUNT_USAGE = `Usage: skyfs umount DIR

Unmount a skyfs mount, lazily if files are still open. Also clears the dead mount left behind
when a daemon was killed. DIR may come from --config FILE (mount.mountpoint).`;

const META_USAGE =
  `Usage: skyfs meta serve --id ID --peers ID=HOST:PORT,... --data DIR [--tick-ms N]
       skyfs meta status HOST:PORT[,HOST:PORT...]

serve: run one replica of a CURP metadata cluster in the foreground until SIGINT or SIGTERM.
  --id ID        this replica's id, one of the --peers ids
  --peers LIST   every replica, this one included: a=10.0.0.1:7001,b=10.0.0.2:7001,c=...
                 (an odd number; the same list on every replica)
  --data DIR     where the log, witness pool and vote are kept (fsync'd)
  --tick-ms N    milliseconds per tick (default 50; elections after 10-20 ticks)
  --http H:P     HTTP endpoint: /metrics, /healthz, /readyz, /api/v1/... (default
                 127.0.0.1:9590, or any free port when that one is taken; off = none)
  --http-token-file F  bearer token for the admin API's changing actions (else
                 SKYFS_HTTP_TOKEN; with neither they are refused)
  --config FILE  TOML configuration file ([meta], [curp], [io], [http], [log];
                 \`skyfs config meta serve\`)
status: ask each listed replica for its role, term, commit index and fast-path replies
  (default: the replicas of meta.peers from --config FILE).`;

const CONFIG_USAGE = `Usage: skyfs config [--config FILE] [COMMAND [ITS OPTIONS...]]

Print the effective configuration of COMMAND as TOML (default: every key), each key with where
its value came from (flag, env, file or default) and its environment variable. COMMAND is one of:
  ${COMMANDS.join(", ")}
(cluster and bench: \`deno task cluster\` and \`deno task bench\`).

Precedence: flag > SKYFS_* environment variable > file > default. An unknown key, a wrong type
or a value out of range is a one-line error naming the key, the value and what is allowed, exit
status 1. Format and keys: README.md, "Operating skyfs"; docs/skyfs.example.toml.`;

const EXEC_USAGE = `Usage: skyfs exec [--] CMD [ARGS...]

Run CMD with libskyfs_preload.so in LD_PRELOAD (added to any already there): reads and writes of
regular files on skyfs mounts go straight to their local data inside the process, everything else
through the kernel as usual. SKYFS_PRELOAD=0 turns it off; SKYFS_PRELOAD_STATS=1 prints counters
at exit. Exits with CMD's status. See src/intercept/README.md.`;

type Command = (args: string[]) => Promise<void>;

interface Parsed {
  values: Record<string, string | boolean | undefined>;
  positionals: string[];
}

function parse(
  args: string[],
  usage: string,
  options: Record<string, { type: "string" | "boolean"; short?: string }>,
) {
  try {
    const parsed = parseArgs({
      args,
      options: {
        ...options,
        config: { type: "string" },
        help: { type: "boolean", short: "h" },
      },
      allowPositionals: true,
    });
    if (parsed.values.help) {
      console.log(usage);
      Deno.exit(0);
    }
    return parsed as Parsed;
  } catch (error) {
    throw new UsageError(`${(error as Error).message}; see --help`);
  }
}

/** Parse a command's arguments and resolve its configuration (flag > env > file > default). */
function configure(
  command: CommandName,
  args: string[],
  usage: string,
): { config: Config; positionals: string[] } {
  const { values, positionals } = parse(args, usage, flagsOf(command));
  const positional = command === "mount" || command === "umount" ? positionals[0] : undefined;
  return { config: resolveConfig(command, { flags: values, positional }), positionals };
}

function clusterOptions(config: Config) {
  const backend = config.get("cluster.backend");
  if (backend === undefined) return undefined;
  if (config.get("mount.meta")?.startsWith("embedded")) {
    throw new UsageError("--backend needs a shared --meta curp://... or etcd://... store");
  }
  const replicas = config.get("cluster.zone_replicas") ?? 2;
  const sync = config.get("cluster.zone_sync") ?? 1;
  if (sync > replicas) {
    throw new UsageError(
      `cluster.zone_sync (${sync}) exceeds cluster.zone_replicas (${replicas}): ` +
        `lower zone_sync or raise zone_replicas`,
    );
  }
  return {
    backend,
    nodeId: config.get("cluster.node_id"),
    zone: config.get("cluster.zone"),
    listen: config.get("peer.listen"),
    cacheBytes: config.get("cache.bytes"),
    openLingerMs: config.get("cluster.open_linger_ms"),
    zoneReplicas: config.get("cluster.zone_replicas"),
    zoneSync: config.get("cluster.zone_sync"),
    zoneReplicationDelayMs: config.get("cluster.zone_replication_delay_ms"),
    peerSend: config.get("peer.send"),
    peerTimeoutMs: config.get("peer.timeout_ms"),
    peerRoutes: parseRoutes(config.get("cluster.peer_routes")),
    backendRoutes: parseRoutes(config.get("cluster.backend_routes")),
    zoneTimeoutMs: config.get("cluster.zone_timeout_ms"),
    zoneDownMs: config.get("cluster.zone_down_ms"),
    inlineBytes: config.get("cluster.inline_bytes"),
    passthroughWrites: config.get("cluster.passthrough_writes"),
  };
}

/** "ZONE=X,ZONE=Y" (checked by the config schema) as a map. */
function parseRoutes(text: string | undefined): Record<string, string> | undefined {
  if (text === undefined) return undefined;
  return Object.fromEntries(
    text.split(",").map((entry) => {
      const at = entry.indexOf("=");
      return [entry.slice(0, at), entry.slice(at + 1)];
    }),
  );
}

/** Where DIR comes from: the argument, else mount.mountpoint of the file or environment. */
function mountPointOf(command: "mount" | "umount", config: Config, positionals: string[]) {
  const mountPoint = config.get("mount.mountpoint");
  if (positionals.length > 1 || mountPoint === undefined) {
    throw new UsageError(
      `skyfs ${command} needs exactly one mount point: skyfs ${command} DIR ` +
        `(or mount.mountpoint in --config FILE)`,
    );
  }
  return mountPoint;
}

/** The admin API's token: http.token_file (--http-token-file), else http.token
 * (SKYFS_HTTP_TOKEN), else none. */
/** mount.local_spare_files: "auto" or a count (the schema allows nothing else). */
function spareFiles(value: string | undefined): number | "auto" {
  return value === undefined || value === "auto" ? "auto" : Number(value);
}

function httpToken(config: Config): string | undefined {
  const file = config.get("http.token_file");
  if (file === undefined) return config.get("http.token");
  try {
    return readHttpToken(file);
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
}

const commands: Record<string, Command> = {
  async mount(args) {
    const { config, positionals } = configure("mount", args, MOUNT_USAGE);
    if (config.file !== undefined) console.error(`skyfs: config ${config.file}`);
    const mode = config.get("mount.passthrough");
    const cacheSeconds = config.get("fuse.cache_seconds");
    const debug = config.get("log.debug") ?? "";
    await mount(mountPointOf("mount", config, positionals), {
      dataDir: config.get("mount.data")!,
      // Unset keeps the mount's own choice (1 s on a cluster node of an older kernel).
      cacheSeconds: config.source("fuse.cache_seconds").kind === "default"
        ? undefined
        : cacheSeconds,
      passthrough: mode === "auto" ? Deno.uid() === 0 : mode === "on",
      meta: config.get("mount.meta"),
      cluster: clusterOptions(config),
      idleSpinUs: config.get("fuse.spin_us"),
      parkUs: config.get("fuse.park_us"),
      volumes: {
        root: config.get("volume.root"),
        reserveBytes: config.get("volume.reserve_bytes"),
        releaseMs: config.get("volume.release_ms"),
      },
      metaLog: config.get("mount.meta_log"),
      localFileOps: config.get("mount.local_file_ops"),
      localSpareFiles: spareFiles(config.get("mount.local_spare_files")),
      keepClosedFiles: config.get("mount.keep_closed_files"),
      transport: config.get("fuse.transport") as "auto" | "uring" | "dev",
      uringDepth: config.get("fuse.uring_depth"),
      io: { engine: config.get("io.engine"), libraryPath: config.get("io.uring_lib") },
      curp: {
        timeoutMs: config.get("curp.timeout_ms"),
        fastPath: config.get("curp.fast_path") ? "marked" : false,
        batchInFlight: config.get("curp.batch_in_flight"),
      },
      debug: debug !== "",
      traceMeta: debug.split(",").includes("meta"),
      traceFuse: debug.split(",").includes("fuse"),
      http: config.get("http.listen"),
      httpToken: httpToken(config),
      dev: config.get("mount.dev"),
      suid: config.get("mount.suid"),
    });
  },
  async stats(args) {
    const { STATS_USAGE, runStats, StatsError } = await import("./src/http/stats.ts");
    const { config, positionals } = configure("stats", args, STATS_USAGE);
    if (positionals.length !== 1) {
      throw new UsageError(
        "skyfs stats needs one target: a skyfs mount point or the daemon's HOST:PORT",
      );
    }
    try {
      await runStats(positionals[0], {
        intervalSeconds: config.get("stats.interval"),
        count: config.get("stats.count"),
        headerEvery: config.get("stats.header_every"),
      });
    } catch (error) {
      if (error instanceof StatsError) throw new UsageError(error.message);
      throw error;
    }
  },
  async volume(args) {
    const { VOLUME_USAGE, runVolumeCommand, VolumeCliError } = await import(
      "./src/http/volume_cli.ts"
    );
    let parsed;
    try {
      parsed = parseArgs({
        args,
        options: {
          capacity: { type: "string" },
          inodes: { type: "string" },
          param: { type: "string", multiple: true },
          "http-token-file": { type: "string" },
          config: { type: "string" },
          help: { type: "boolean", short: "h" },
        },
        allowPositionals: true,
      });
    } catch (error) {
      throw new UsageError(`${(error as Error).message}; see skyfs volume --help`);
    }
    if (parsed.values.help) return console.log(VOLUME_USAGE);
    const config = resolveConfig("volume", {
      flags: { config: parsed.values.config, "http-token-file": parsed.values["http-token-file"] },
    });
    try {
      await runVolumeCommand(parsed.positionals, {
        capacity: parsed.values.capacity,
        inodes: parsed.values.inodes,
        params: parsed.values.param,
        token: httpToken(config),
      });
    } catch (error) {
      if (error instanceof VolumeCliError) throw new UsageError(error.message);
      throw error;
    }
  },
  async csi(args) {
    const { CSI_USAGE, runCsi } = await import("./src/csi/cli.ts");
    const { config, positionals } = configure("csi", args, CSI_USAGE);
    if (positionals.length > 0) {
      throw new UsageError(`skyfs csi takes no arguments, not "${positionals[0]}"; see --help`);
    }
    // Its errors (a bad socket, a missing --mount) print as one line and exit 1 in main().
    await runCsi({
      endpoint: config.get("csi.endpoint")!,
      mode: config.get("csi.mode")!,
      nodeId: config.get("csi.node_id"),
      // cluster.zone has a default; only a zone someone set goes into the topology.
      zone: config.source("cluster.zone").kind === "default"
        ? undefined
        : config.get("cluster.zone"),
      mountPoint: config.get("csi.mount"),
      apiUrl: config.get("csi.api"),
      token: httpToken(config),
      defaultCapacityBytes: config.get("csi.default_capacity_bytes")!,
    });
  },
  async status(args) {
    const { config } = configure(
      "status",
      args,
      "Usage: skyfs status --meta curp://H:P,...|etcd://H:P,... [--config FILE]",
    );
    const { openMetaBackend } = await import("./src/meta/backend.ts");
    const { clusterStatus } = await import("./src/cluster/status.ts");
    const meta = config.get("mount.meta");
    if (meta === undefined || meta.startsWith("embedded")) {
      throw new UsageError("skyfs status needs --meta URL of the cluster (or mount.meta)");
    }
    const kv = await openMetaBackend(meta, {
      dataDir: "/nonexistent",
      timeoutMs: config.get("curp.timeout_ms"),
      curp: {
        fastPath: config.get("curp.fast_path") ? "marked" : false,
        batchInFlight: config.get("curp.batch_in_flight"),
      },
      traceMeta: (config.get("log.debug") ?? "").split(",").includes("meta"),
    });
    try {
      console.log(await clusterStatus(kv));
    } finally {
      await kv.close();
    }
  },
  async umount(args) {
    const { config, positionals } = configure("umount", args, UMOUNT_USAGE);
    await umount(mountPointOf("umount", config, positionals));
  },
  async meta(args) {
    const [sub, ...rest] = args;
    if (sub === undefined || sub === "--help" || sub === "-h") return console.log(META_USAGE);
    if (sub !== "serve" && sub !== "status") {
      throw new UsageError(`skyfs meta needs "serve" or "status", not ${JSON.stringify(sub)}`);
    }
    const { config, positionals } = configure(`meta ${sub}`, rest, META_USAGE);
    if (sub === "serve") {
      const debug = config.get("log.debug") ?? "";
      await metaServe({
        id: config.get("meta.id"),
        peers: config.get("meta.peers"),
        dataDir: config.get("meta.data"),
        tickMs: config.get("meta.tick_ms")!,
        snapshotEvery: config.get("curp.snapshot_every"),
        witnessAckAfterWrite: config.get("curp.witness_ack_after_write"),
        logWrites: config.get("curp.log_writes"),
        io: { engine: config.get("io.engine"), libraryPath: config.get("io.uring_lib") },
        debug: debug !== "",
        http: config.get("meta.http"),
        httpToken: httpToken(config),
      });
    } else {
      // No address given: the replicas of meta.peers (ID=HOST:PORT,...).
      const peers = config.get("meta.peers");
      const fromPeers = peers === undefined ? [] : [peers.replace(/[^=,]+=/g, "")];
      await metaStatus(positionals.length > 0 ? positionals : fromPeers);
    }
  },
  async exec(args) {
    // --config FILE is checked like everywhere else; no key concerns exec (the shim reads
    // SKYFS_PRELOAD and SKYFS_PRELOAD_STATS in the program's own process).
    if (args[0] === "--config") {
      readConfigFile(args[1]);
      args = args.slice(2);
    }
    const command = args[0] === "--" ? args.slice(1) : args;
    if (command[0] === "--help" || command[0] === "-h") {
      console.log(EXEC_USAGE);
      return;
    }
    if (command.length === 0) throw new UsageError("skyfs exec needs a command: skyfs exec -- CMD");
    const library = await ensurePreloadLibrary();
    const preload = [library, Deno.env.get("LD_PRELOAD")].filter(Boolean).join(":");
    let child: Deno.ChildProcess;
    try {
      child = new Deno.Command(command[0], { args: command.slice(1), env: { LD_PRELOAD: preload } })
        .spawn();
    } catch (error) {
      throw new UsageError(`Cannot run "${command[0]}": ${(error as Error).message}`);
    }
    const status = await child.status;
    Deno.exit(status.signal ? 128 + signalNumber(status.signal) : status.code);
  },
  async "preload-path"(args) {
    const { values } = parse(
      args,
      "Usage: skyfs preload-path [--config FILE]\n\nPrint the shim library's path (built if missing).",
      {},
    );
    // No key concerns it; a file given is still checked.
    if (typeof values.config === "string") readConfigFile(values.config);
    console.log(await ensurePreloadLibrary());
  },
  config(args) {
    // The command's own flags count, so `skyfs config mount --passthrough off` shows a flag win.
    let first = 0;
    while (first < args.length && args[first].startsWith("-")) {
      first += args[first] === "--config" ? 2 : 1;
    }
    let command: CommandName | undefined;
    let rest = args;
    if (first < args.length) {
      const name = args[first] === "meta" ? `meta ${args[first + 1] ?? ""}`.trim() : args[first];
      if (!(COMMANDS as readonly string[]).includes(name)) {
        throw new UsageError(
          `skyfs config: "${name}" is not a command with options; one of ${COMMANDS.join(", ")}`,
        );
      }
      command = name as CommandName;
      rest = [...args.slice(0, first), ...args.slice(first + name.split(" ").length)];
    }
    const flags = command === undefined ? {} : flagsOf(command);
    const { values, positionals } = parse(rest, CONFIG_USAGE, flags);
    const positional = command === "mount" || command === "umount" ? positionals[0] : undefined;
    const config = resolveConfig(command, { flags: values, positional });
    console.log(formatConfig(config, command));
    return Promise.resolve();
  },
  help() {
    console.log(USAGE);
    return Promise.resolve();
  },
};

function signalNumber(signal: Deno.Signal): number {
  const numbers: Partial<Record<Deno.Signal, number>> = {
    SIGHUP: 1,
    SIGINT: 2,
    SIGQUIT: 3,
    SIGABRT: 6,
    SIGKILL: 9,
    SIGSEGV: 11,
    SIGPIPE: 13,
    SIGTERM: 15,
  };
  return numbers[signal] ?? 1;
}

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === "--help" || name === "-h") {
    console.log(USAGE);
    return name === undefined ? 2 : 0;
  }
  const command = commands[name];
  if (!command) {
    console.error(`skyfs: unknown command "${name}"; run \`skyfs help\``);
    return 2;
  }
  try {
    await command(rest);
    return 0;
  } catch (error) {
    if (error instanceof UsageError || error instanceof ConfigError) {
      console.error(`skyfs: ${error.message}`);
      return 1;
    }
    console.error(`skyfs: ${(error as Error)?.message ?? error}`);
    if (Deno.env.get(envName("log.debug"))) console.error(error);
    return 1;
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
