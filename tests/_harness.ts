/**
 * Shared test harness: starts and stops a skyfs mount as a real daemon process, and hands every
 * suite the directories to test (a plain ext4 directory as the reference, the skyfs mount, or both).
 *
 * Environment:
 * - SKYFS_TEST_TARGET = ext4 | skyfs | both (default both): which targets the suites run against.
 * - SKYFS_TEST_PYTHON: the python3 used by the suites (default /usr/bin/python3, which is reachable
 *   by the other uids the suites switch to, unlike a pyenv shim under /root).
 * - SKYFS_TEST_TMP: where temp dirs, mountpoints and data dirs go (default /tmp; must be ext4 for
 *   the ext4 target to be the reference).
 * - SKYFS_TEST_META = curp | etcd (default unset: single node): every skyfs mount is a cluster node
 *   instead, on a cluster of its own (three CURP replicas or one etcd member, and a directory
 *   backend, started with the mount and stopped with it; src/cluster/local_cluster.ts).
 * - SKYFS_TEST_FUSE_TRANSPORT = auto | uring | dev (default unset: the daemon's own default):
 *   config key fuse.transport of every skyfs mount (env SKYFS_FUSE_TRANSPORT). With `uring` a mount
 *   must come up on FUSE over io_uring: startMount throws (the test fails) when the daemon refuses
 *   or falls back to /dev/fuse.
 * @module
 */

import { dirname, join } from "node:path";
import { LocalCluster } from "../src/cluster/local_cluster.ts";
import { fileURLToPath } from "node:url";

/** The repository root, found from this file's location. */
export const REPO_ROOT: string = dirname(dirname(fileURLToPath(import.meta.url)));
/** The CLI entry point the lead implements (`mod.ts mount|umount`). */
export const MOD_TS: string = join(REPO_ROOT, "mod.ts");
/** Python used by the suites; see the module doc. */
export const PYTHON: string = Deno.env.get("SKYFS_TEST_PYTHON") ?? "/usr/bin/python3";
/** Base directory for everything the suites create. */
export const TEST_TMP: string = Deno.env.get("SKYFS_TEST_TMP") ?? "/tmp";

/** A file system under test. */
export type TargetKind = "ext4" | "skyfs";

/** How long a mount may take to appear in mountinfo (first run compiles TypeScript). */
const MOUNT_READY_TIMEOUT_MS = 60_000;
/** How long a clean unmount (SIGTERM) may take before the harness calls it a hang. */
const STOP_TIMEOUT_MS = 20_000;

/** The targets selected by SKYFS_TEST_TARGET; an unknown value is an error, not a silent skip. */
export function targetKinds(): TargetKind[] {
  const value = Deno.env.get("SKYFS_TEST_TARGET") ?? "both";
  switch (value) {
    case "ext4":
      return ["ext4"];
    case "skyfs":
      return ["skyfs"];
    case "both":
      return ["ext4", "skyfs"];
    default:
      throw new RangeError(
        `SKYFS_TEST_TARGET="${value}" is not one of ext4, skyfs, both: set it to one of those`,
      );
  }
}

/** True when the selection includes both targets (differential tests need that). */
export function bothTargetsSelected(): boolean {
  return targetKinds().length === 2;
}

/** Makes a fresh directory under TEST_TMP that other uids can traverse. */
export async function makeTempDir(prefix: string): Promise<string> {
  const dir = await Deno.makeTempDir({ dir: TEST_TMP, prefix: `tests-${prefix}-` });
  await Deno.chmod(dir, 0o755);
  return dir;
}

/** One line of /proc/self/mountinfo, the fields the tests look at. */
export interface MountInfo {
  mountpoint: string;
  fstype: string;
  source: string;
  superOptions: string;
  mountOptions: string;
}

/** Decodes the octal escapes (\040 for space...) the kernel uses in mountinfo paths. */
function unescapeMountinfo(text: string): string {
  return text.replace(/\\([0-7]{3})/g, (_, octal) => String.fromCharCode(parseInt(octal, 8)));
}

/** Every mount whose mountpoint is `path`, most recent last. */
export function mountsAt(path: string): MountInfo[] {
  const lines = Deno.readTextFileSync("/proc/self/mountinfo").split("\n");
  const found: MountInfo[] = [];
  for (const line of lines) {
    if (!line) continue;
    const [left, right] = line.split(" - ");
    const fields = left.split(" ");
    const after = right.split(" ");
    if (unescapeMountinfo(fields[4]) !== path) continue;
    found.push({
      mountpoint: path,
      mountOptions: fields[5],
      fstype: after[0],
      source: unescapeMountinfo(after[1]),
      superOptions: after[2] ?? "",
    });
  }
  return found;
}

/** True when a live or dead skyfs mount sits on `path`. */
export function isSkyfsMounted(path: string): boolean {
  return mountsAt(path).some((m) => m.fstype === "fuse.skyfs");
}

/** A running skyfs daemon with its mountpoint and data directory. */
export interface Mount {
  mountpoint: string;
  dataDir: string;
  /** Everything the daemon wrote to stderr so far (all incarnations). */
  stderr(): string;
  /** The daemon's pid, or undefined while stopped. */
  pid(): number | undefined;
  /** SIGTERM, wait for exit code 0 and the mount to disappear; throws with stderr otherwise. */
  stop(): Promise<void>;
  /** SIGKILL the daemon, then clear the dead mount with `mod.ts umount`. */
  kill9(): Promise<void>;
  /** stop() (or kill9() when `crash`) then start again on the same mountpoint and data. */
  restart(options?: { crash?: boolean }): Promise<void>;
  /** stop(), then remove the mountpoint and data directory if startMount created them. */
  dispose(): Promise<void>;
}

/** Options for startMount; every field is optional. */
export interface StartMountOptions {
  /** Data directory (default: a fresh one beside the mountpoint). */
  dataDir?: string;
  /** Mountpoint (default: a fresh empty directory). */
  mountpoint?: string;
  /** Extra CLI arguments after `mount <mp> --data <dir>`. */
  extraArgs?: string[];
  /** Make the mount a cluster node of its own cluster (as SKYFS_TEST_META does for all). */
  meta?: "curp" | "etcd";
  /** Extra environment of the daemon (over SKYFS_TEST_FUSE_TRANSPORT's SKYFS_FUSE_TRANSPORT). */
  env?: Record<string, string>;
}

/** SKYFS_TEST_FUSE_TRANSPORT: the fuse.transport every skyfs mount gets, if set. */
export function testTransport(): "auto" | "uring" | "dev" | undefined {
  const value = Deno.env.get("SKYFS_TEST_FUSE_TRANSPORT") ?? "";
  if (value === "") return undefined;
  if (value === "auto" || value === "uring" || value === "dev") return value;
  throw new RangeError(
    `SKYFS_TEST_FUSE_TRANSPORT="${value}" is not auto, uring or dev: set one of those or unset it`,
  );
}

/** SKYFS_TEST_META: which metadata service a skyfs mount is a cluster node of, if any. */
export function testMeta(): "curp" | "etcd" | undefined {
  const value = Deno.env.get("SKYFS_TEST_META") ?? "";
  if (value === "") return undefined;
  if (value === "curp" || value === "etcd") return value;
  throw new RangeError(
    `SKYFS_TEST_META="${value}" is not curp or etcd: set one of those or unset it`,
  );
}

/** Runs `mod.ts` with arguments and returns its exit code and output (bounded by `timeoutMs`). */
export async function runSkyfs(
  args: string[],
  options: { timeoutMs?: number; env?: Record<string, string> } = {},
): Promise<{ code: number; stdout: string; stderr: string; timedOut: boolean }> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--quiet", MOD_TS, ...args],
    cwd: REPO_ROOT,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: options.env,
  }).spawn();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    try {
      child.kill("SIGKILL");
    } catch { /* already gone */ }
  }, options.timeoutMs ?? 60_000);
  const out = await child.output();
  clearTimeout(timer);
  const decoder = new TextDecoder();
  return {
    code: out.code,
    stdout: decoder.decode(out.stdout),
    stderr: decoder.decode(out.stderr),
    timedOut,
  };
}

/** Reads a stream into a growing string until it ends. */
async function collect(stream: ReadableStream<Uint8Array>, sink: { text: string }) {
  const decoder = new TextDecoder();
  for await (const chunk of stream) sink.text += decoder.decode(chunk, { stream: true });
}

/**
 * Starts `mod.ts mount` in the foreground as a child and waits until mountinfo shows fuse.skyfs on
 * the mountpoint. Throws (with the daemon's stderr) if the daemon exits or the wait runs out.
 */
export async function startMount(options: StartMountOptions = {}): Promise<Mount> {
  let base: string | undefined;
  if (!options.mountpoint || !options.dataDir) base = await makeTempDir("skyfs");
  const mountpoint = options.mountpoint ?? join(base!, "mnt");
  const dataDir = options.dataDir ?? join(base!, "data");
  await Deno.mkdir(mountpoint, { recursive: true });
  const meta = options.meta ?? testMeta();
  // A cluster of its own (no mounts of the cluster's; this mount is its node "a").
  const cluster = meta === undefined
    ? undefined
    : await LocalCluster.start("tests-cluster-", { nodes: 0, meta, parentDir: TEST_TMP });
  const clusterArgs = cluster === undefined
    ? []
    : ["--meta", cluster.meta, "--backend", cluster.backend, "--node-id", "a"];
  const env: Record<string, string> = {};
  const testDefault = testTransport();
  if (testDefault !== undefined) env.SKYFS_FUSE_TRANSPORT = testDefault;
  Object.assign(env, options.env ?? {});
  const transport = env.SKYFS_FUSE_TRANSPORT;
  const log = { text: "" };
  let child: Deno.ChildProcess | undefined;
  let status: Promise<Deno.CommandStatus> | undefined;
  let drained: Promise<void> | undefined;

  const launch = async () => {
    log.text += `--- mod.ts mount ${mountpoint} --data ${dataDir}\n`;
    child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        "--quiet",
        MOD_TS,
        "mount",
        mountpoint,
        "--data",
        dataDir,
        ...clusterArgs,
        ...(options.extraArgs ?? []),
      ],
      cwd: REPO_ROOT,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      env,
    }).spawn();
    status = child.status;
    drained = Promise.all([collect(child.stdout, log), collect(child.stderr, log)]).then(() => {});
    let exited: Deno.CommandStatus | undefined;
    status.then((s) => exited = s);
    const deadline = Date.now() + MOUNT_READY_TIMEOUT_MS;
    while (!isSkyfsMounted(mountpoint)) {
      if (exited) {
        await drained;
        throw new Error(
          `skyfs mount of "${mountpoint}" failed: the daemon exited with code ${exited.code} ` +
            `before mounting. Its output:\n${log.text}`,
        );
      }
      if (Date.now() > deadline) {
        child.kill("SIGKILL");
        await status;
        await unmountDead(mountpoint);
        throw new Error(
          `skyfs mount of "${mountpoint}" did not appear in /proc/self/mountinfo with fstype ` +
            `fuse.skyfs within ${MOUNT_READY_TIMEOUT_MS} ms. Daemon output:\n${log.text}`,
        );
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    liveMounts.add(mountpoint);
    // The daemon logs its transport after INIT, which follows the mount.
    if (transport === "uring") {
      const uringDeadline = Date.now() + MOUNT_READY_TIMEOUT_MS;
      while (!log.text.includes("skyfs: FUSE transport io_uring")) {
        if (exited || Date.now() > uringDeadline) {
          throw new Error(
            `skyfs mount of "${mountpoint}" is not on FUSE over io_uring ` +
              `(SKYFS_TEST_FUSE_TRANSPORT=uring). Daemon output:\n${log.text}`,
          );
        }
        await Deno.stat(mountpoint).catch(() => {}); // any request makes the kernel send INIT
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    }
  };

  const waitGone = async (what: string) => {
    const deadline = Date.now() + STOP_TIMEOUT_MS;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<"timeout">((resolve) => {
      timer = setTimeout(() => resolve("timeout"), Math.max(0, deadline - Date.now()));
    });
    const result = await Promise.race([status!, timeout]);
    clearTimeout(timer);
    if (result === "timeout") {
      child!.kill("SIGKILL");
      await status;
      await drained;
      await unmountDead(mountpoint);
      throw new Error(
        `skyfs daemon on "${mountpoint}" did not exit within ${STOP_TIMEOUT_MS} ms after ${what}. ` +
          `Output:\n${log.text}`,
      );
    }
    await drained;
    child = undefined;
    return result;
  };

  const mount: Mount = {
    mountpoint,
    dataDir,
    stderr: () => log.text,
    pid: () => child?.pid,
    async stop() {
      if (!child) return;
      try {
        child.kill("SIGTERM");
      } catch { /* it already exited (a test sent its own signal): collect its status */ }
      const result = await waitGone("SIGTERM");
      const stillMounted = isSkyfsMounted(mountpoint);
      if (stillMounted) await unmountDead(mountpoint);
      liveMounts.delete(mountpoint);
      if (result.code !== 0 || stillMounted) {
        throw new Error(
          `skyfs daemon on "${mountpoint}" did not unmount cleanly on SIGTERM (exit code ` +
            `${result.code}, still mounted: ${stillMounted}). Output:\n${log.text}`,
        );
      }
    },
    async kill9() {
      if (!child) return;
      try {
        child.kill("SIGKILL");
      } catch { /* it already exited: still clear whatever mount it left */ }
      await waitGone("SIGKILL");
      const result = await runSkyfs(["umount", mountpoint], { timeoutMs: 30_000 });
      const stillMounted = isSkyfsMounted(mountpoint);
      if (stillMounted) await unmountDead(mountpoint);
      liveMounts.delete(mountpoint);
      if (result.code !== 0 || stillMounted) {
        throw new Error(
          `"mod.ts umount ${mountpoint}" after kill -9 failed (exit ${result.code}, still ` +
            `mounted: ${stillMounted}): ${result.stderr.trim()}`,
        );
      }
    },
    async restart(restartOptions = {}) {
      if (restartOptions.crash) await mount.kill9();
      else await mount.stop();
      await launch();
    },
    async dispose() {
      try {
        await mount.stop();
      } finally {
        await cluster?.stop();
        if (base && !isSkyfsMounted(mountpoint)) await Deno.remove(base, { recursive: true });
      }
    },
  };
  try {
    await launch();
  } catch (error) {
    await cluster?.stop().catch(() => {});
    throw error;
  }
  return mount;
}

/** Mountpoints this process mounted and has not yet unmounted, cleared on exit as a last resort. */
const liveMounts = new Set<string>();

globalThis.addEventListener("unload", () => {
  for (const mountpoint of liveMounts) {
    try {
      new Deno.Command("umount", { args: ["-l", mountpoint], stderr: "null" }).outputSync();
    } catch { /* nothing more to do on the way out */ }
  }
});

/** Last-resort cleanup of a dead FUSE mount that the daemon left behind. */
async function unmountDead(mountpoint: string): Promise<void> {
  if (!isSkyfsMounted(mountpoint)) return;
  await new Deno.Command("umount", { args: ["-l", mountpoint], stderr: "null" }).output();
}

/** A target ready for a suite: a directory to work in, and the mount behind it for skyfs. */
export interface Target {
  kind: TargetKind;
  /** Empty directory, mode 0755, owned by root, on the target file system. */
  dir: string;
  /** The skyfs mount, for targets of kind skyfs. */
  mount?: Mount;
  /** Removes the directory (ext4) or unmounts (skyfs). */
  close(): Promise<void>;
}

/**
 * Opens a target. For skyfs this starts a daemon; when that fails it throws with the daemon's
 * output, so a suite reports the failure instead of silently passing.
 */
export async function openTarget(
  kind: TargetKind,
  options: StartMountOptions = {},
): Promise<Target> {
  if (kind === "ext4") {
    const dir = await makeTempDir("ext4");
    return {
      kind,
      dir,
      close: () => Deno.remove(dir, { recursive: true }),
    };
  }
  const mount = await startMount(options);
  const dir = join(mount.mountpoint, "t");
  await Deno.mkdir(dir);
  await Deno.chmod(dir, 0o755);
  return {
    kind,
    dir,
    mount,
    close: () => mount.dispose(),
  };
}

/** Copies of a Deno binary made by this process, by source path. */
const denoCopies = new Map<string, Promise<string>>();

/**
 * A Deno binary every uid can execute, for whatever runs TypeScript as another user: a copy of
 * `source` (default: the Deno running the tests) at TEST_TMP/skyfs-deno-SHA/deno, owned by the
 * caller (root), mode 0755, in a directory of mode 0755. `npx deno` runs from npx's cache under
 * /root (mode 0700), which no other uid can reach, so Deno.execPath() will not do (issue 12). It is
 * a copy on every machine, also where Deno is installed for everyone, so all take the same path.
 * Named by the binary's SHA-256: made once per Deno build, reused by later runs.
 */
export function denoForEveryUid(source: string = Deno.execPath()): Promise<string> {
  let copy = denoCopies.get(source);
  if (!copy) {
    copy = copyDenoForEveryUid(source);
    denoCopies.set(source, copy);
  }
  return copy;
}

async function copyDenoForEveryUid(source: string): Promise<string> {
  const bytes = await Deno.readFile(source);
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  const sha = Array.from(digest.subarray(0, 12), (b) => b.toString(16).padStart(2, "0")).join("");
  const dir = join(TEST_TMP, `skyfs-deno-${sha}`);
  await Deno.mkdir(dir).catch((error) => {
    if (!(error instanceof Deno.errors.AlreadyExists)) throw error;
  });
  // Another user could have made this directory first and would then control what uid 1000 runs.
  const dirInfo = await Deno.lstat(dir);
  if (!dirInfo.isDirectory || dirInfo.uid !== Deno.uid()) {
    throw new Error(
      `"${dir}" is not a directory of uid ${Deno.uid()}: remove it so the tests can copy Deno there`,
    );
  }
  await Deno.chmod(dir, 0o755);
  const path = join(dir, "deno");
  const existing = await Deno.lstat(path).catch(() => undefined);
  if (
    existing?.isFile && existing.uid === Deno.uid() && (existing.mode! & 0o7777) === 0o755 &&
    existing.size === bytes.length
  ) {
    return path;
  }
  // Written aside and renamed, so a concurrent run never executes half a binary.
  const partial = `${path}.${crypto.randomUUID()}`;
  await Deno.writeFile(partial, bytes, { mode: 0o755 });
  await Deno.chmod(partial, 0o755); // the umask may have cleared bits
  await Deno.rename(partial, path);
  return path;
}

/**
 * Runs `command args...` as `uid` (gid the same, no supplementary groups) through setpriv, with
 * only `env` in its environment (PATH defaults to the system directories). The command must be one
 * that uid can execute: for Deno, use denoForEveryUid().
 */
export function runAs(
  uid: number,
  command: string,
  args: string[],
  options: { env?: Record<string, string> } = {},
): Promise<RunResult> {
  const env = { PATH: "/usr/local/bin:/usr/bin:/bin", ...options.env };
  return run("setpriv", [
    `--reuid=${uid}`,
    `--regid=${uid}`,
    "--clear-groups",
    "env",
    "-i",
    ...Object.entries(env).map(([name, value]) => `${name}=${value}`),
    command,
    ...args,
  ], { check: false });
}

/**
 * Runs `mod.ts args...` as `uid` from denoForEveryUid(`options.deno`), with a fresh HOME and
 * DENO_DIR owned by that uid and PATH `options.path` (default: the system directories).
 */
export async function runSkyfsAs(
  uid: number,
  args: string[],
  options: { path?: string; deno?: string } = {},
): Promise<RunResult> {
  const deno = await denoForEveryUid(options.deno);
  const home = await makeTempDir("home");
  try {
    await Deno.chown(home, uid, uid);
    const env: Record<string, string> = { HOME: home, DENO_DIR: join(home, "deno") };
    if (options.path !== undefined) env.PATH = options.path;
    return await runAs(uid, deno, ["run", "-A", "--quiet", MOD_TS, ...args], { env });
  } finally {
    await Deno.remove(home, { recursive: true });
  }
}

/** Result of running a program. */
export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a program to completion; throws with its output when `check` and the exit is non-zero. */
export async function run(
  cmd: string,
  args: string[],
  options: { cwd?: string; env?: Record<string, string>; check?: boolean; stdin?: string } = {},
): Promise<RunResult> {
  const child = new Deno.Command(cmd, {
    args,
    cwd: options.cwd,
    env: options.env,
    stdin: options.stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (options.stdin !== undefined) {
    const writer = child.stdin.getWriter();
    await writer.write(new TextEncoder().encode(options.stdin));
    await writer.close();
  }
  const out = await child.output();
  const decoder = new TextDecoder();
  const result = {
    code: out.code,
    stdout: decoder.decode(out.stdout),
    stderr: decoder.decode(out.stderr),
  };
  if ((options.check ?? true) && result.code !== 0) {
    throw new Error(
      `"${cmd} ${args.join(" ")}" in ${options.cwd ?? "."} exited ${result.code}:\n` +
        `${result.stdout}\n${result.stderr}`,
    );
  }
  return result;
}

/**
 * Registers one Deno test per selected target; each test opens the target, runs `cases` as steps
 * (each in a fresh subdirectory), and closes the target. Sanitizers are off because the daemon is
 * a child process that lives across steps.
 */
export function suite(
  name: string,
  cases: Record<string, (ctx: CaseContext) => Promise<void>>,
  options: { targets?: TargetKind[]; passthroughModes?: boolean } = {},
): void {
  const variants: { kind: TargetKind; label: string; extraArgs?: string[] }[] = [];
  for (const kind of options.targets ?? targetKinds()) {
    variants.push({ kind, label: kind });
    // `passthroughModes`: skyfs once more without passthrough (page cache and daemon reads and
    // writes). Cluster nodes use passthrough only with cluster.passthrough_writes (off by
    // default), for a file a write-only open created or truncated; so there the first run is
    // that run already.
    if (kind === "skyfs" && options.passthroughModes && testMeta() === undefined) {
      variants.push({
        kind,
        label: "skyfs --passthrough off",
        extraArgs: ["--passthrough", "off"],
      });
    }
  }
  for (const { kind, label, extraArgs } of variants) {
    Deno.test({
      name: `${name} [${label}]`,
      sanitizeOps: false,
      sanitizeResources: false,
      sanitizeExit: false,
      async fn(t) {
        const target = await openTarget(kind, { extraArgs });
        try {
          let index = 0;
          for (const [caseName, body] of Object.entries(cases)) {
            const dir = join(target.dir, `c${index++}`);
            await t.step(caseName, async () => {
              await Deno.mkdir(dir);
              await Deno.chmod(dir, 0o755);
              await body({ kind, dir, target, variant: label });
            });
          }
        } finally {
          await target.close();
        }
      },
    });
  }
}

/** What a suite case receives. */
export interface CaseContext {
  kind: TargetKind;
  /** A fresh empty directory (mode 0755, root-owned) for this case only. */
  dir: string;
  target: Target;
  /** The target as the test is named: `ext4`, `skyfs`, or `skyfs --passthrough off`. */
  variant: string;
}

/** A small seeded generator (mulberry32), so a failing round's random choices can be replayed. */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
