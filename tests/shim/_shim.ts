/**
 * Helpers of the shim tests and benchmark: start `skyfs mount` on a fresh mount, and run
 * a program on it with or without libskyfs_preload.so, collecting the shim's counters.
 * @module
 */

import { fileURLToPath } from "node:url";
import { ensurePreloadLibrary } from "../../src/intercept/mod.ts";

const here = fileURLToPath(new URL(".", import.meta.url)).replace(/\/$/, "");

export interface ShimMount {
  mountpoint: string;
  dataDir: string;
  library: string;
  log(): string;
  stop(): Promise<void>;
}

function mounted(path: string): boolean {
  return Deno.readTextFileSync("/proc/self/mountinfo").split("\n").some((line) =>
    line.split(" ")[4] === path && line.includes(" - fuse.skyfs ")
  );
}

/** Mount skyfs with the shim server under a fresh /tmp/shim-* directory. */
export async function startShimMount(
  options: { passthrough?: boolean } = {},
): Promise<ShimMount> {
  const library = await ensurePreloadLibrary();
  const base = await Deno.makeTempDir({ prefix: "shim-" });
  const mountpoint = `${base}/mnt`;
  const dataDir = `${base}/data`;
  await Deno.mkdir(mountpoint);
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--quiet",
      `${here}/../../mod.ts`,
      "mount",
      mountpoint,
      "--data",
      dataDir,
      "--passthrough",
      options.passthrough === false ? "off" : "on",
    ],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { SKYFS_PRELOAD: "0" },
  }).spawn();
  let text = "";
  const decoder = new TextDecoder();
  const drain = (stream: ReadableStream<Uint8Array>) =>
    (async () => {
      for await (const chunk of stream) text += decoder.decode(chunk, { stream: true });
    })();
  const drained = Promise.all([drain(child.stdout), drain(child.stderr)]);
  let exited = false;
  const status = child.status.then((s) => {
    exited = true;
    return s;
  });
  const deadline = Date.now() + 20_000;
  while (!mounted(mountpoint) || !text.includes("shim socket")) {
    if (exited || Date.now() > deadline) {
      if (!exited) child.kill("SIGKILL");
      await status;
      throw new Error(`shim daemon did not mount "${mountpoint}":\n${text}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return {
    mountpoint,
    dataDir,
    library,
    log: () => text,
    async stop() {
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
      await status;
      clearTimeout(timer);
      await drained;
      await Deno.remove(base, { recursive: true }).catch(() => {});
    },
  };
}

export interface Counters {
  adopted: number;
  refused: number;
  reads: number;
  writes: number;
  bytes_read: number;
  bytes_written: number;
  wrote_notices: number;
}

export interface ProgramResult {
  code: number;
  stdout: string;
  stderr: string;
  /** Sum of the shim's counters over every process of the run (zeros without the shim). */
  counters: Counters;
}

/** Run `command` (through bash -c) in `cwd`, with the shim loaded when `shim` is true. */
export async function runProgram(
  mount: ShimMount,
  command: string,
  options: { cwd: string; shim: boolean; env?: Record<string, string> },
): Promise<ProgramResult> {
  const statsFile = await Deno.makeTempFile({ prefix: "shim-stats-" });
  const env: Record<string, string> = { ...options.env };
  if (options.shim) {
    env.LD_PRELOAD = mount.library;
    env.SKYFS_PRELOAD_STATS = statsFile;
  }
  const out = await new Deno.Command("bash", {
    args: ["-c", command],
    cwd: options.cwd,
    env,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const counters: Counters = {
    adopted: 0,
    refused: 0,
    reads: 0,
    writes: 0,
    bytes_read: 0,
    bytes_written: 0,
    wrote_notices: 0,
  };
  for (const line of (await Deno.readTextFile(statsFile)).split("\n")) {
    for (const key of Object.keys(counters) as (keyof Counters)[]) {
      const value = line.match(new RegExp(` ${key} (\\d+)`))?.[1];
      if (value) counters[key] += Number(value);
    }
  }
  await Deno.remove(statsFile);
  const decoder = new TextDecoder();
  return {
    code: out.code,
    stdout: decoder.decode(out.stdout),
    stderr: decoder.decode(out.stderr),
    counters,
  };
}
