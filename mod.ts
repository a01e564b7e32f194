/**
 * The skyfs command line: `skyfs mount DIR`, `skyfs umount DIR`, and help for each command.
 * Arguments are parsed with node:util parseArgs; bad input prints one line and exits non-zero.
 * @module
 */

import { parseArgs } from "node:util";
import { defaultDataDir } from "./src/datadir.ts";
import { mount, umount, UsageError } from "./src/mount.ts";
import { ensurePreloadLibrary } from "./src/intercept/mod.ts";
import { metaServe, metaStatus } from "./src/meta/curp/cli.ts";
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
  stats TARGET   one line per second of a daemon's activity (mount point or HOST:PORT)
  help           this text

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
  --node-id ID         cluster node id (default: random, kept in the data directory)
  --peer-listen H:P    peer cache server address (default 127.0.0.1:0)
  --cache-bytes N      local chunk cache limit in bytes (default 8 GiB)
  --http HOST:PORT     HTTP endpoint: /metrics, /healthz, /readyz, /api/v1/... (default
                       127.0.0.1:9570, or any free port when that one is taken; off = none)
  --http-token-file F  file holding the bearer token the admin API's changing actions need
                       (else SKYFS_HTTP_TOKEN; with neither they are refused)
  -h, --help           this text`;

const UMOUNT_USAGE = `Usage: skyfs umount DIR

Unmount a skyfs mount, lazily if files are still open. Also clears the dead mount left behind
when a daemon was killed.`;

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
status: ask each listed replica for its role, term, commit index and fast-path replies.`;

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
      options: { ...options, help: { type: "boolean", short: "h" } },
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

function clusterOptions(values: Record<string, string | boolean | undefined>) {
  const backend = values.backend as string | undefined;
  if (backend === undefined) return undefined;
  if (!values.meta || values.meta === "embedded") {
    throw new UsageError("--backend needs a shared --meta curp://... or etcd://... store");
  }
  const cacheText = values["cache-bytes"] as string | undefined;
  const cacheBytes = cacheText === undefined ? undefined : Number(cacheText);
  if (cacheBytes !== undefined && !(Number.isInteger(cacheBytes) && cacheBytes > 0)) {
    throw new UsageError(`--cache-bytes "${cacheText}" is not a positive number of bytes`);
  }
  return {
    backend,
    nodeId: values["node-id"] as string | undefined,
    listen: values["peer-listen"] as string | undefined,
    cacheBytes,
  };
}

/** The admin API's token: --http-token-file, else SKYFS_HTTP_TOKEN, else none. */
function httpToken(values: Record<string, string | boolean | undefined>): string | undefined {
  try {
    return readHttpToken(values["http-token-file"] as string | undefined);
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
}

function passthroughOption(text: string | undefined): boolean {
  const mode = text ?? "auto";
  if (mode === "auto") return Deno.uid() === 0;
  if (mode === "on" || mode === "off") return mode === "on";
  throw new UsageError(`--passthrough "${text}" is not one of auto, on, off`);
}

const commands: Record<string, Command> = {
  async mount(args) {
    const { values, positionals } = parse(args, MOUNT_USAGE, {
      data: { type: "string" },
      "cache-seconds": { type: "string" },
      passthrough: { type: "string" },
      meta: { type: "string" },
      backend: { type: "string" },
      "node-id": { type: "string" },
      "peer-listen": { type: "string" },
      "cache-bytes": { type: "string" },
      http: { type: "string" },
      "http-token-file": { type: "string" },
    });
    if (positionals.length !== 1) {
      throw new UsageError("skyfs mount needs exactly one mount point: skyfs mount DIR");
    }
    const cacheText = values["cache-seconds"] as string | undefined;
    const cacheSeconds = cacheText === undefined ? undefined : Number(cacheText);
    if (cacheSeconds !== undefined && !(cacheSeconds >= 0 && cacheSeconds <= 86400)) {
      throw new UsageError(`--cache-seconds "${cacheText}" is not a number of seconds (0-86400)`);
    }
    await mount(positionals[0], {
      dataDir: (values.data as string | undefined) ?? defaultDataDir(),
      cacheSeconds,
      passthrough: passthroughOption(values.passthrough as string | undefined),
      meta: values.meta as string | undefined,
      cluster: clusterOptions(values),
      http: values.http as string | undefined,
      httpToken: httpToken(values),
    });
  },
  async stats(args) {
    const { STATS_USAGE, runStats, StatsError, statsOptions } = await import("./src/http/stats.ts");
    const { values, positionals } = parse(args, STATS_USAGE, {
      interval: { type: "string" },
      count: { type: "string" },
      "header-every": { type: "string" },
    });
    if (positionals.length !== 1) {
      throw new UsageError(
        "skyfs stats needs one target: a skyfs mount point or the daemon's HOST:PORT",
      );
    }
    try {
      await runStats(positionals[0], statsOptions(values));
    } catch (error) {
      if (error instanceof StatsError) throw new UsageError(error.message);
      throw error;
    }
  },
  async status(args) {
    const { values } = parse(args, "Usage: skyfs status --meta curp://H:P,...|etcd://H:P,...", {
      meta: { type: "string" },
    });
    const { openMetaBackend } = await import("./src/meta/backend.ts");
    const { clusterStatus } = await import("./src/cluster/status.ts");
    if (!values.meta) throw new UsageError("skyfs status needs --meta URL of the cluster");
    const kv = await openMetaBackend(values.meta as string, { dataDir: "/nonexistent" });
    try {
      console.log(await clusterStatus(kv));
    } finally {
      await kv.close();
    }
  },
  async umount(args) {
    const { positionals } = parse(args, UMOUNT_USAGE, {});
    if (positionals.length !== 1) {
      throw new UsageError("skyfs umount needs exactly one mount point: skyfs umount DIR");
    }
    await umount(positionals[0]);
  },
  async meta(args) {
    const [sub, ...rest] = args;
    if (sub === undefined || sub === "--help" || sub === "-h") return console.log(META_USAGE);
    const { values, positionals } = parse(rest, META_USAGE, {
      id: { type: "string" },
      peers: { type: "string" },
      data: { type: "string" },
      "tick-ms": { type: "string" },
      http: { type: "string" },
      "http-token-file": { type: "string" },
    });
    if (sub === "serve") {
      await metaServe(values as Record<string, string | undefined>, httpToken(values));
    } else if (sub === "status") await metaStatus(positionals);
    else throw new UsageError(`skyfs meta needs "serve" or "status", not ${JSON.stringify(sub)}`);
  },
  async exec(args) {
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
    parse(
      args,
      "Usage: skyfs preload-path\n\nPrint the shim library's path (built if missing).",
      {},
    );
    console.log(await ensurePreloadLibrary());
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
    if (error instanceof UsageError) {
      console.error(`skyfs: ${error.message}`);
      return 1;
    }
    console.error(`skyfs: ${(error as Error)?.message ?? error}`);
    if (Deno.env.get("SKYFS_DEBUG")) console.error(error);
    return 1;
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
