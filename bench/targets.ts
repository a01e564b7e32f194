/**
 * The file systems the benchmark compares: each is mounted, warmed and unmounted by the harness,
 * and one that cannot be mounted is reported with its reason instead of being dropped.
 * @module
 */
import { fileURLToPath } from "node:url";
import type { TargetName, TargetReport } from "./model.ts";
import { LocalCluster, type LocalClusterOptions } from "../src/cluster/local_cluster.ts";
import { fetchStatus } from "../src/meta/curp/server.ts";
import {
  readCurpCounters,
  readEtcdCounters,
  readFuseRequests,
  type StoreCounters,
} from "./store_counters.ts";

const REPO_DIR = fileURLToPath(new URL("..", import.meta.url)).replace(/\/$/, "");
const MOUNT_TIMEOUT_MS = 30_000;
const STOP_TIMEOUT_MS = 20_000;

/** A prepared target: where jobs run and what environment their processes get. */
export interface ReadyTarget {
  name: TargetName;
  dir: string;
  /** Extra environment for workload processes (LD_PRELOAD for the shim). */
  env: Record<string, string>;
  /** Extra fio options (`--thread` for the shim, so its counters are written at fio's exit). */
  fioArgs?: string[];
  /**
   * The shim's counters summed over the processes that exited since the last call (the lines
   * SKYFS_PRELOAD_STATS appended), then forgotten; only on the shim target.
   */
  takeShimCounters?: () => Promise<Record<string, number>>;
  /** Cluster targets: the metadata store's counters (proposals, fsyncs), read around each
   * metadata phase to give its cost per file operation. */
  storeCounters?: () => Promise<StoreCounters>;
  /** The `skyfs` target: its FUSE requests answered so far per opcode (from /metrics), read
   * around each metadata phase to give the requests per file operation. */
  fuseRequests?: () => Promise<Record<string, number>>;
  /** FUSE targets: CPU seconds the daemon process (all its threads) used so far; on a cluster
   * target the measured mount's daemon. */
  daemonCpuSeconds?: () => number;
  /** Cluster targets: CPU seconds the metadata store's processes used so far, summed (the CURP
   * replicas, or etcd). */
  storeCpuSeconds?: () => number;
  report: TargetReport;
  tearDown(): Promise<void>;
}

/** A target that could not be set up; `state` says whether it is broken or simply not built yet. */
export class TargetSkipped extends Error {
  constructor(
    readonly state: "failed" | "unavailable",
    message: string,
    readonly command?: string,
  ) {
    super(message);
    this.name = "TargetSkipped";
  }
}

/** Decodes the octal escapes (\040 for space) that /proc/self/mountinfo uses in paths. */
export function unescapeMountPath(path: string): string {
  return path.replace(/\\([0-7]{3})/g, (_, octal) => String.fromCharCode(parseInt(octal, 8)));
}

/** Mount points listed in a mountinfo text (field 5 of each line). */
export function mountPoints(mountinfo: string): string[] {
  return mountinfo.split("\n").filter((line) => line.trim() !== "").map((line) =>
    unescapeMountPath(line.split(" ")[4])
  );
}

export function isMounted(path: string): boolean {
  return mountPoints(Deno.readTextFileSync("/proc/self/mountinfo")).includes(path);
}

/**
 * Picks the line of a program's output that says what went wrong: the last line mentioning an
 * error, else the last line, ignoring colour codes and Rust backtrace noise (RUST_BACKTRACE=1).
 */
export function tellingLine(output: string): string {
  // deno-lint-ignore no-control-regex -- ANSI colour codes start with ESC by definition.
  const lines = output.replace(/\x1b\[[0-9;]*m/g, "").split("\n").map((l) => l.trim())
    .filter((l) => l !== "" && l !== "Stack backtrace:" && !/^\d+: /.test(l) && !/^at /.test(l));
  if (lines.length === 0) return "(no output)";
  const errors = lines.filter((l) => /error|failed|cannot|denied|not found/i.test(l));
  const line = errors.length > 0 ? errors[errors.length - 1] : lines[lines.length - 1];
  return line.length > 300 ? `${line.slice(0, 300)}...` : line;
}

/** A command line as a reader would type it: `deno` for this executable, repo-relative paths. */
export function displayCommand(command: string, args: string[]): string {
  return [command === Deno.execPath() ? "deno" : command, ...args]
    .map((part) => part.startsWith(`${REPO_DIR}/`) ? part.slice(REPO_DIR.length + 1) : part)
    .join(" ");
}

/** Clock ticks per second of /proc's CPU times (USER_HZ, 100 on every Linux port in use). */
const USER_HZ = 100;

/** CPU seconds process `pid` used so far, all its threads (io_uring's io-wq workers included, and
 * threads that have ended): utime + stime of /proc/PID/stat, in 10 ms ticks. */
export function processCpuSeconds(pid: number, proc = "/proc"): number {
  const stat = Deno.readTextFileSync(`${proc}/${pid}/stat`);
  // The command name (field 2) may hold spaces: count fields after its closing parenthesis.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / USER_HZ;
}

/** Run time in ns of each live thread of `pid` (first field of /proc/PID/task/TID/schedstat). */
function threadRunTimes(pid: number, proc: string): Map<string, number> {
  const times = new Map<string, number>();
  for (const entry of Deno.readDirSync(`${proc}/${pid}/task`)) {
    try {
      const text = Deno.readTextFileSync(`${proc}/${pid}/task/${entry.name}/schedstat`);
      times.set(entry.name, Number(text.split(" ")[0]));
    } catch {
      // The thread ended between the listing and the read: the next sample sees it gone.
    }
  }
  return times;
}

/**
 * CPU seconds a daemon used so far, all its threads, as a counter whose difference between two
 * readings has nanosecond resolution: the sum of its threads' run times (schedstat) since the
 * previous reading, a thread born in between counted whole. When a thread of the previous reading
 * has ended (its run time is gone from /proc), that interval falls back to utime + stime of the
 * whole process (10 ms ticks, but it keeps ended threads' time). With ticks alone a metadata phase
 * of 60 ms showed bindfs's CPU as 0, 6 or 12 us per operation (issue 17, session 12).
 */
export class DaemonCpuClock {
  #threads: Map<string, number> | undefined;
  #ticks = 0;
  #seconds = 0;
  /** Readings whose interval had to fall back to ticks (a thread ended), for tests. */
  coarseIntervals = 0;

  constructor(readonly pid: number, readonly proc = "/proc") {}

  /** CPU seconds so far (from the first reading's 0 + the process's ticks at that point). */
  seconds(): number {
    const threads = threadRunTimes(this.pid, this.proc);
    const ticks = processCpuSeconds(this.pid, this.proc);
    const previous = this.#threads;
    if (previous === undefined) {
      this.#seconds = ticks;
    } else if ([...previous.keys()].every((tid) => threads.has(tid))) {
      let ns = 0;
      for (const [tid, time] of threads) ns += time - (previous.get(tid) ?? 0);
      this.#seconds += ns / 1e9;
    } else {
      this.coarseIntervals++;
      this.#seconds += Math.max(0, ticks - this.#ticks);
    }
    this.#threads = threads;
    this.#ticks = ticks;
    return this.#seconds;
  }
}

/**
 * CPU seconds a set of processes used so far, summed, one `DaemonCpuClock` per process: a cluster
 * store's replicas. `pids` is asked at each reading; a process that is gone makes the reading
 * throw (the phase then has no figure rather than a wrong one).
 */
export function summedCpuClock(pids: () => number[], proc = "/proc"): () => number {
  const clocks = new Map<number, DaemonCpuClock>();
  return () => {
    let seconds = 0;
    for (const pid of pids()) {
      let clock = clocks.get(pid);
      if (clock === undefined) clocks.set(pid, clock = new DaemonCpuClock(pid, proc));
      seconds += clock.seconds();
    }
    return seconds;
  };
}

/** A daemon's `daemonCpuSeconds`: one `DaemonCpuClock` per daemon process. */
function cpuClock(pid: number): () => number {
  const clock = new DaemonCpuClock(pid);
  return () => clock.seconds();
}

/** A child process whose last output lines are kept for error messages. */
class Daemon {
  readonly child: Deno.ChildProcess;
  private tail = "";
  private readonly drained: Promise<void>;
  exitCode: number | null = null;
  readonly exited: Promise<number>;

  constructor(readonly command: string, readonly args: string[], env?: Record<string, string>) {
    this.child = new Deno.Command(command, {
      args,
      env,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.drained = Promise.all([this.drain(this.child.stdout), this.drain(this.child.stderr)])
      .then(() => {});
    this.exited = this.child.status.then((status) => {
      this.exitCode = status.code;
      return status.code;
    });
  }

  private async drain(stream: ReadableStream<Uint8Array>): Promise<void> {
    const decoder = new TextDecoder();
    for await (const chunk of stream) {
      const text = decoder.decode(chunk, { stream: true });
      this.tail = (this.tail + text).slice(-4096);
      this.httpUrl ??= /http: listening on (http:\/\/\S+)/.exec(this.tail)?.[1];
      this.transport ??= /skyfs: FUSE transport ([^\n]+)\n/.exec(this.tail)?.[1];
    }
  }

  /** What a skyfs daemon logged about its FUSE transport ("io_uring, 2 queues x 8 entries"), once
   * it has (nothing is logged for a mount pinned to /dev/fuse). */
  transport: string | undefined;

  /** The address a skyfs daemon printed for its HTTP endpoint, once it has. */
  httpUrl: string | undefined;

  /** With SKYFS_DEBUG set, the transport part of the request counts a skyfs daemon logs at
   * unmount ("transport uring; parked waits ...; ring: N requests, ..."), once it has exited. */
  transportAtExit(): string | undefined {
    return [...this.tail.matchAll(/skyfs: requests: [^\n]*?; (transport [^\n]*)\n/g)].pop()?.[1];
  }

  /** The most telling output line, for one-line error messages. */
  lastLine(): string {
    return tellingLine(this.tail);
  }

  async waitExit(timeoutMs: number): Promise<boolean> {
    const timer = delay(timeoutMs).then(() => false);
    const done = await Promise.race([this.exited.then(() => true), timer]);
    if (done) await this.drained;
    return done;
  }

  kill(signal: Deno.Signal): void {
    try {
      this.child.kill(signal);
    } catch {
      // Already exited: nothing to signal.
    }
  }

  commandLine(): string {
    return displayCommand(this.command, this.args);
  }
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Waits until `mountpoint` appears in mountinfo; throws with the daemon's last line if it dies. */
async function waitForMount(daemon: Daemon, mountpoint: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (isMounted(mountpoint)) return;
    if (daemon.exitCode !== null) {
      await daemon.waitExit(1000);
      throw new TargetSkipped(
        "failed",
        `failed to mount: \`${daemon.commandLine()}\` exited with ${daemon.exitCode}: ${daemon.lastLine()}`,
        daemon.commandLine(),
      );
    }
    await delay(50);
  }
  daemon.kill("SIGKILL");
  await daemon.waitExit(5000);
  await forceUnmount(mountpoint);
  throw new TargetSkipped(
    "failed",
    `failed to mount: ${mountpoint} not in /proc/self/mountinfo after ${timeoutMs / 1000} s ` +
      `(last output: ${daemon.lastLine()})`,
    daemon.commandLine(),
  );
}

async function run(command: string, args: string[]): Promise<{ code: number; output: string }> {
  try {
    const out = await new Deno.Command(command, { args, stdin: "null" }).output();
    const text = new TextDecoder().decode(out.stderr) + new TextDecoder().decode(out.stdout);
    return { code: out.code, output: text.trim() };
  } catch (error) {
    return { code: 127, output: String(error) };
  }
}

/** Clears a mount whose daemon is gone or stuck, so the scratch directory can be removed. */
export async function forceUnmount(mountpoint: string): Promise<void> {
  if (!isMounted(mountpoint)) return;
  const isRoot = Deno.uid() === 0;
  const attempt = isRoot ? await run("umount", ["-l", mountpoint]) : await run("fusermount3", [
    "-uz",
    mountpoint,
  ]);
  if (attempt.code !== 0 && isMounted(mountpoint)) {
    console.error(`bench: could not unmount ${mountpoint}: ${attempt.output}`);
  }
}

function which(command: string): string | null {
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    const path = `${dir}/${command}`;
    try {
      if (Deno.statSync(path).isFile) return path;
    } catch {
      // Not in this PATH entry.
    }
  }
  return null;
}

/** Writes, reads back and deletes a small file so the first job does not pay for cold start-up. */
/** Warm a freshly mounted target; on failure unmount it and report it as failed (skipped). */
async function warmUpOrTearDown(
  mountpoint: string,
  tearDown: () => Promise<void>,
  what: string,
  commandLine?: string,
): Promise<void> {
  try {
    await warmUp(mountpoint);
  } catch (error) {
    await tearDown();
    throw error instanceof TargetSkipped ? error : new TargetSkipped(
      "failed",
      `${what}: ${error instanceof Error ? error.message : error}`,
      commandLine,
    );
  }
}

async function warmUp(dir: string): Promise<void> {
  const path = `${dir}/.bench-warmup`;
  const data = new Uint8Array(1 << 20).fill(7);
  await Deno.writeFile(path, data);
  const back = await Deno.readFile(path);
  if (back.length !== data.length || back[back.length - 1] !== 7) {
    throw new TargetSkipped("failed", `warm-up read back ${back.length} bytes from ${path}`);
  }
  await Deno.stat(path);
  await Deno.remove(path);
}

/** Mounts a FUSE file system run in the foreground by `command args` (bindfs, mergerfs). */
async function mountForeground(
  name: TargetName,
  scratch: string,
  command: string,
  argsFor: (backing: string, mountpoint: string) => string[],
): Promise<ReadyTarget> {
  if (!which(command)) {
    throw new TargetSkipped(
      "failed",
      `failed to mount: ${command} is not installed; run: apt-get install ${command} (or deno task setup)`,
    );
  }
  const backing = `${scratch}/${name}-backing`;
  const mountpoint = `${scratch}/${name}-mnt`;
  await Deno.mkdir(backing, { recursive: true });
  await Deno.mkdir(mountpoint, { recursive: true });
  const daemon = new Daemon(command, argsFor(backing, mountpoint));
  await waitForMount(daemon, mountpoint, MOUNT_TIMEOUT_MS);
  const tearDown = async () => {
    const how = Deno.uid() === 0 ? ["umount", [mountpoint]] as const : [
      "fusermount3",
      ["-u", mountpoint],
    ] as const;
    const result = await run(how[0], [...how[1]]);
    if (result.code !== 0) console.error(`bench: ${how[0]} ${mountpoint}: ${result.output}`);
    if (!await daemon.waitExit(STOP_TIMEOUT_MS)) {
      daemon.kill("SIGKILL");
      await daemon.waitExit(5000);
    }
    await forceUnmount(mountpoint);
  };
  await warmUpOrTearDown(mountpoint, tearDown, "failed to warm up");
  return {
    daemonCpuSeconds: cpuClock(daemon.child.pid),
    name,
    dir: mountpoint,
    env: {},
    report: { name, state: "ok", command: daemon.commandLine(), dir: mountpoint },
    tearDown,
  };
}

async function scratchFsDescription(dir: string): Promise<string> {
  const result = await run("findmnt", ["-no", "FSTYPE,SOURCE", "-T", dir]);
  return result.code === 0 ? result.output.replace(/\s+/g, " ") : "unknown file system";
}

async function setUpExt4(scratch: string): Promise<ReadyTarget> {
  const dir = `${scratch}/ext4`;
  await Deno.mkdir(dir, { recursive: true });
  const fs = await scratchFsDescription(dir);
  await warmUp(dir);
  return {
    name: "ext4",
    dir,
    env: {},
    report: { name: "ext4", state: "ok", command: `plain directory on ${fs}`, dir },
    tearDown: async () => {},
  };
}

/**
 * Fetches `url` every second until stopped, as a Prometheus server would scrape it (the cost the
 * `skyfs` target carries and `skyfs-http-off` does not). Each scrape reads the whole body.
 */
function startScraper(url: string): { stop(): Promise<{ scrapes: number; failures: number }> } {
  let scrapes = 0;
  let failures = 0;
  let inFlight: Promise<void> = Promise.resolve();
  const timer = setInterval(() => {
    inFlight = inFlight.then(async () => {
      try {
        const response = await fetch(url);
        await response.text();
        if (response.ok) scrapes++;
        else failures++;
      } catch {
        failures++;
      }
    });
  }, 1000);
  return {
    async stop() {
      clearInterval(timer);
      await inFlight;
      return { scrapes, failures };
    },
  };
}

/** Starts `deno run -A mod.ts mount DIR --data DATA [extraArgs]` and waits for the mount. */
async function mountSkyfs(
  name: TargetName,
  scratch: string,
  env: Record<string, string>,
  extraArgs: string[] = [],
): Promise<ReadyTarget> {
  const modTs = `${REPO_DIR}/mod.ts`;
  try {
    Deno.statSync(modTs);
  } catch {
    throw new TargetSkipped("failed", `failed to mount: ${modTs} does not exist yet`);
  }
  const mountpoint = `${scratch}/${name}-mnt`;
  const data = `${scratch}/${name}-data`;
  await Deno.mkdir(mountpoint, { recursive: true });
  await Deno.mkdir(data, { recursive: true });
  const daemon = new Daemon(Deno.execPath(), [
    "run",
    "-A",
    modTs,
    "mount",
    mountpoint,
    "--data",
    data,
    ...extraArgs,
  ]);
  await waitForMount(daemon, mountpoint, MOUNT_TIMEOUT_MS);
  // The `skyfs` target is scraped like a monitored mount; `skyfs-http-off` has no endpoint.
  let scraper: ReturnType<typeof startScraper> | undefined;
  if (name === "skyfs" || name === "skyfs-uring") {
    const deadline = Date.now() + 10_000;
    while (!daemon.httpUrl && Date.now() < deadline) await delay(20);
    if (!daemon.httpUrl) {
      daemon.kill("SIGTERM");
      await daemon.waitExit(STOP_TIMEOUT_MS);
      await forceUnmount(mountpoint);
      throw new TargetSkipped(
        "failed",
        `mounted but printed no "http: listening on" line: ${daemon.lastLine()}`,
        daemon.commandLine(),
      );
    }
    scraper = startScraper(`${daemon.httpUrl}/metrics`);
  }
  // The brief of `skyfs mount`: SIGTERM unmounts cleanly. Waiting for it checks that too.
  const tearDown = async () => {
    if (scraper) {
      const { scrapes, failures } = await scraper.stop();
      console.log(`bench: ${name}: /metrics scraped ${scrapes} times, ${failures} failed`);
    }
    daemon.kill("SIGTERM");
    if (!await daemon.waitExit(STOP_TIMEOUT_MS)) {
      console.error(
        `bench: ${name} did not exit within ${STOP_TIMEOUT_MS / 1000} s of SIGTERM; killing it`,
      );
      daemon.kill("SIGKILL");
      await daemon.waitExit(5000);
    }
    await forceUnmount(mountpoint);
    const transport = daemon.transportAtExit();
    if (transport) console.log(`bench: ${name}: the daemon at exit (SKYFS_DEBUG): ${transport}`);
  };
  await warmUpOrTearDown(
    mountpoint,
    tearDown,
    "mounted but failed to warm up",
    daemon.commandLine(),
  );
  if (name === "skyfs-uring") {
    // The warm-up went through the mount, so INIT is done and the daemon has said which transport
    // it took; `--transport uring` exits rather than fall back, but the figures must not rest on it.
    const deadline = Date.now() + 5_000;
    while (!daemon.transport && daemon.exitCode === null && Date.now() < deadline) await delay(20);
    if (!daemon.transport?.startsWith("io_uring")) {
      await tearDown();
      throw new TargetSkipped(
        "failed",
        `mounted but not on FUSE over io_uring: ${
          daemon.transport ? `"FUSE transport ${daemon.transport}"` : daemon.lastLine()
        }`,
        daemon.commandLine(),
      );
    }
  }
  const command = daemon.commandLine() +
    (scraper ? ` (its /metrics fetched every 1 s while mounted)` : "") +
    (daemon.transport ? ` (daemon: FUSE transport ${daemon.transport})` : "");
  const metricsUrl = daemon.httpUrl ? `${daemon.httpUrl}/metrics` : undefined;
  return {
    name,
    dir: mountpoint,
    env,
    fuseRequests: scraper && metricsUrl ? () => readFuseRequests(metricsUrl) : undefined,
    daemonCpuSeconds: cpuClock(daemon.child.pid),
    report: { name, state: "ok", command, dir: mountpoint },
    tearDown,
  };
}

/** Asks `skyfs preload-path` for the shim; until that command exists the target is unavailable. */
async function preloadPath(): Promise<string> {
  const modTs = `${REPO_DIR}/mod.ts`;
  try {
    Deno.statSync(modTs);
  } catch {
    throw new TargetSkipped("unavailable", "not available yet: mod.ts does not exist yet");
  }
  const result = await run(Deno.execPath(), ["run", "-A", modTs, "preload-path"]);
  const path = result.code === 0 ? (result.output.split("\n").pop()?.trim() ?? "") : "";
  if (result.code !== 0 || !path.startsWith("/")) {
    throw new TargetSkipped(
      "unavailable",
      `not available yet: \`skyfs preload-path\` exited with ${result.code}: ${
        tellingLine(result.output)
      }`,
    );
  }
  try {
    Deno.statSync(path);
  } catch {
    throw new TargetSkipped(
      "unavailable",
      `not available yet: preload library ${path} does not exist (deno task build)`,
    );
  }
  return path;
}

/** Sums the counters of the `skyfs-preload: pid N adopted A reads R ...` lines the shim writes. */
export function sumShimCounters(text: string): Record<string, number> {
  const sums: Record<string, number> = {};
  for (const line of text.split("\n")) {
    if (!line.startsWith("skyfs-preload: ")) continue;
    const words = line.slice("skyfs-preload: ".length).trim().split(" ");
    for (let i = 0; i + 1 < words.length; i += 2) {
      if (words[i] === "pid" || words[i] === "mounts") continue;
      sums[words[i]] = (sums[words[i]] ?? 0) + Number(words[i + 1]);
    }
  }
  return sums;
}

/**
 * Starts a whole cluster under `scratch` with src/cluster/local_cluster.ts (as `deno task cluster`
 * does): the metadata store (three CURP replicas, or one etcd 3.4 member from /usr/bin/etcd on
 * loopback ports), a directory backend and two mounts. Jobs run on mount a; mount b stays idle, so
 * the store carries a real cluster's upkeep (two membership leases, two watches) beside the jobs.
 */
async function setUpCluster(
  name: "skyfs-cluster" | "skyfs-cluster-etcd",
  scratch: string,
): Promise<ReadyTarget> {
  const options = clusterTargetOptions(name, scratch);
  const meta = options.meta;
  if (Deno.uid() !== 0) {
    throw new TargetSkipped(
      "failed",
      "failed to start: a cluster target mounts as root (as deno task cluster does); run as root",
    );
  }
  if (meta === "etcd" && !which("etcd")) {
    throw new TargetSkipped(
      "failed",
      "failed to start: etcd is not installed; run: apt-get install etcd-server (or deno task setup)",
    );
  }
  let cluster: LocalCluster;
  try {
    cluster = await LocalCluster.start(`${name}-`, options);
  } catch (error) {
    throw new TargetSkipped(
      "failed",
      `failed to start: ${tellingLine(error instanceof Error ? error.message : String(error))}`,
    );
  }
  const [node, idle] = cluster.nodes;
  // Plain text: the report puts the whole line in one code span.
  const store = meta === "etcd"
    ? `/usr/bin/etcd (3.4) --name=m --data-dir=<dir>/etcd on ${
      cluster.meta.slice("etcd://".length)
    }`
    : `3 x deno run -A mod.ts meta serve --id mN --peers ${
      cluster.replicas.map((r) => `${r.id}=${r.address}`).join(",")
    } --data <dir>/meta-mN`;
  const command =
    `${store}; ${
      Object.entries(options.nodeEnv ?? {}).map(([k, v]) => `${k}=${v} `).join("")
    }deno run -A mod.ts mount <dir>/mnt-${node.id} --data ` +
    `<dir>/data-${node.id} --meta ${cluster.meta} --backend <dir>/backend --node-id ${node.id} ` +
    `(measured), mount ${idle.id} alike (idle); <dir> = ${cluster.dir} ` +
    "(src/cluster/local_cluster.ts)";
  const tearDown = async () => {
    try {
      await cluster.stop({ keep: true }); // SIGTERM, SIGKILL after 10 s, lazy unmount
    } finally {
      for (const n of cluster.nodes) await forceUnmount(n.mountpoint);
    }
  };
  await warmUpOrTearDown(node.mountpoint, tearDown, "started but failed to warm up", command);
  const storeCounters = meta === "etcd"
    ? () => readEtcdCounters(cluster.meta.slice("etcd://".length))
    : () => readCurpCounters(cluster.replicas, fetchStatus);
  // The store's CPU: every replica (or etcd) process, summed; the mount's: the measured one's.
  const storePids = cluster.storePids();
  return {
    name,
    dir: node.mountpoint,
    env: {},
    storeCounters,
    daemonCpuSeconds: node.child ? cpuClock(node.child.pid) : undefined,
    storeCpuSeconds: storePids.length > 0 ? summedCpuClock(() => cluster.storePids()) : undefined,
    report: { name, state: "ok", command, dir: node.mountpoint },
    tearDown,
  };
}

/**
 * The flags a skyfs target mounts with after `mount DIR --data DATA`. Every one but skyfs-uring is
 * pinned to /dev/fuse: the bench turns the kernel's FUSE over io_uring on for its run
 * (bench/uring_switch.ts), and a mount left at `auto` would then take the ring.
 */
export function skyfsTargetFlags(
  name: "skyfs" | "skyfs-http-off" | "skyfs-uring" | "skyfs-shim",
): string[] {
  switch (name) {
    case "skyfs":
      // The endpoint on and scraped every second; skyfs-http-off is the same mount without it.
      return ["--http", "127.0.0.1:0", "--transport", "dev"];
    case "skyfs-http-off":
      return ["--http", "off", "--transport", "dev"];
    case "skyfs-uring":
      // The skyfs mount on FUSE over io_uring: an error, not /dev/fuse, when it cannot be had.
      return ["--http", "127.0.0.1:0", "--transport", "uring"];
    case "skyfs-shim":
      return ["--transport", "dev"];
  }
}

/** How a cluster target starts its LocalCluster: both mounts pinned to /dev/fuse (config key
 * fuse.transport through its environment name, as skyfsTargetFlags pins the one-node targets). */
export function clusterTargetOptions(
  name: "skyfs-cluster" | "skyfs-cluster-etcd",
  scratch: string,
): LocalClusterOptions {
  return {
    nodes: 2,
    meta: name === "skyfs-cluster-etcd" ? "etcd" : "curp",
    parentDir: scratch,
    nodeEnv: { SKYFS_FUSE_TRANSPORT: "dev" },
  };
}

/** What a target's set-up needs to know about the run. */
export interface TargetContext {
  /** Why the kernel does not offer FUSE over io_uring for this run (bench/uring_switch.ts), or
   * null/undefined when it does: skyfs-uring is skipped with this reason instead of mounted. */
  uringUnavailable?: string | null;
}

/** Prepares one target under `scratch`; throws TargetSkipped with a one-line reason. */
export async function setUpTarget(
  name: TargetName,
  scratch: string,
  context: TargetContext = {},
): Promise<ReadyTarget> {
  switch (name) {
    case "ext4":
      return await setUpExt4(scratch);
    case "bindfs":
      // bindfs (libfuse 2) and mergerfs as a user gets them: default options, foreground so the
      // harness owns the process.
      return await mountForeground(name, scratch, "bindfs", (b, m) => ["-f", b, m]);
    case "mergerfs":
      return await mountForeground(name, scratch, "mergerfs", (b, m) => ["-f", b, m]);
    case "skyfs":
    case "skyfs-http-off":
      return await mountSkyfs(name, scratch, {}, skyfsTargetFlags(name));
    case "skyfs-uring":
      if (context.uringUnavailable) {
        throw new TargetSkipped("failed", `not mounted: ${context.uringUnavailable}`);
      }
      return await mountSkyfs(name, scratch, {}, skyfsTargetFlags(name));
    case "skyfs-cluster":
    case "skyfs-cluster-etcd":
      return await setUpCluster(name, scratch);
    case "skyfs-shim": {
      const library = await preloadPath();
      // fio's jobs are forked processes that leave by _exit, which skips the shim's exit report:
      // as threads of one fio process (--thread) they are served the same and counted.
      const statsPath = `${scratch}/skyfs-shim-stats`;
      await Deno.writeTextFile(statsPath, "");
      await Deno.chmod(statsPath, 0o666);
      const target = await mountSkyfs(name, scratch, {
        LD_PRELOAD: library,
        SKYFS_PRELOAD_STATS: statsPath,
      }, skyfsTargetFlags(name));
      target.fioArgs = ["--thread"];
      target.takeShimCounters = async () => {
        const text = await Deno.readTextFile(statsPath);
        await Deno.writeTextFile(statsPath, "");
        return sumShimCounters(text);
      };
      target.report.command = `LD_PRELOAD=$(skyfs preload-path) fio --thread ..., on ` +
        target.report.command;
      return target;
    }
  }
}
