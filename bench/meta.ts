/**
 * The metadata benchmark: a small C program (bench/meta/meta_worker.c) times create, stat,
 * open+close, readdir, rename and unlink of many small files with 1 or 4 threads, so the figures
 * measure the file system and not Deno. The harness compiles it once per source version.
 * @module
 */
import { createHash } from "node:crypto";
import { fileURLToPath } from "node:url";
import type { Measurement } from "./model.ts";
import { outputWithin, spawnTracked } from "./children.ts";
import { fuseRequestsPerOperation, perOperation, type StoreCounters } from "./store_counters.ts";

const SOURCE = fileURLToPath(new URL("./meta/meta_worker.c", import.meta.url));

export interface MetaRun {
  layout: "flat" | "tree";
  workers: number;
}

/** Layouts and worker counts in run order. */
export const META_RUNS: MetaRun[] = [
  { layout: "flat", workers: 1 },
  { layout: "flat", workers: 4 },
  { layout: "tree", workers: 1 },
  { layout: "tree", workers: 4 },
];

/** Phases the worker reports, in order, for a layout (stat-cold only when caches can be dropped). */
export function expectedPhases(layout: MetaRun["layout"], dropCaches: boolean): string[] {
  const phases = [
    "create",
    "stat",
    ...(dropCaches ? ["stat-cold"] : []),
    "open-close",
    "readdir",
    "rename",
    "unlink",
  ];
  return layout === "tree" ? ["mkdir", ...phases, "rmdir"] : phases;
}

/** Compiles meta_worker.c into a cache directory keyed by the source's hash; returns the binary. */
export async function buildMetaWorker(): Promise<string> {
  const source = await Deno.readFile(SOURCE);
  const hash = createHash("sha256").update(source).digest("hex").slice(0, 16);
  const cacheRoot = Deno.env.get("XDG_CACHE_HOME") ?? `${Deno.env.get("HOME") ?? "/tmp"}/.cache`;
  const dir = `${cacheRoot}/skyfs-bench`;
  const binary = `${dir}/meta_worker-${hash}`;
  try {
    await Deno.stat(binary);
    return binary;
  } catch {
    // Not built yet for this source.
  }
  await Deno.mkdir(dir, { recursive: true });
  let output: Deno.CommandOutput;
  try {
    output = await new Deno.Command("gcc", {
      args: ["-O2", "-Wall", "-pthread", "-o", `${binary}.tmp`, SOURCE],
      stdin: "null",
    }).output();
  } catch {
    throw new Error("gcc is not installed; run: apt-get install gcc");
  }
  if (output.code !== 0) {
    throw new Error(`gcc failed on ${SOURCE}: ${new TextDecoder().decode(output.stderr).trim()}`);
  }
  await Deno.rename(`${binary}.tmp`, binary);
  return binary;
}

/**
 * Parses the worker's JSON lines ({"phase","ops","seconds"}) into measurements; `costs` adds the
 * metadata store's per-operation figures of each phase to its details. `{"next"}` lines (--pause)
 * are skipped.
 */
export function measurementsFromWorker(
  stdout: string,
  run: MetaRun,
  target: string,
  costs: Record<string, Record<string, number | string>> = {},
): Measurement[] {
  const measurements: Measurement[] = [];
  for (const line of stdout.split("\n")) {
    if (line.trim() === "") continue;
    const phase = JSON.parse(line) as { phase?: string; ops: number; seconds: number };
    if (phase.phase === undefined) continue;
    const seconds = Math.max(phase.seconds, 1e-6);
    measurements.push({
      family: `meta-${run.layout}`,
      job: `meta-${run.layout}-${phase.phase}-w${run.workers}`,
      target,
      unit: "ops/s",
      value: phase.ops / seconds,
      higherIsBetter: true,
      details: { ops: phase.ops, seconds: phase.seconds, ...costs[phase.phase] },
    });
  }
  return measurements;
}

export interface MetaOptions {
  binary: string;
  dir: string;
  files: number;
  fileBytes: number;
  dropCaches: boolean;
  env: Record<string, string>;
  timeoutMs: number;
  /** A cluster target's store counters: the worker then pauses before each phase (untimed) so
   * they are read right before and right after it. */
  storeCounters?: () => Promise<StoreCounters>;
  /** A skyfs mount's FUSE request counts per opcode (its /metrics): read around each phase the
   * same way, giving the requests one file operation cost. */
  fuseRequests?: () => Promise<Record<string, number>>;
  /** A FUSE daemon's CPU seconds so far (all threads): read around each phase the same way. */
  daemonCpuSeconds?: () => number;
  /** A cluster target's store processes' CPU seconds so far, summed: read around each phase. */
  storeCpuSeconds?: () => number;
}

interface WorkerOutput {
  code: number;
  stdout: string;
  stderr: string;
  timedOut: boolean;
  /** Per phase: the store's cost per operation (perOperation), or why it could not be read. */
  costs: Record<string, Record<string, number | string>>;
}

/** Runs the worker with --pause: reads the store's (and the mount's) counters when it names the
 * next phase, lets it go, and reads them again when it reports the phase. */
async function runPausedWorker(
  binary: string,
  args: string[],
  options: MetaOptions,
): Promise<WorkerOutput> {
  const child = spawnTracked(binary, {
    args: [...args, "--pause"],
    env: options.env,
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  });
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    try {
      child.kill("SIGKILL");
    } catch {
      // Already exited.
    }
  }, options.timeoutMs);
  const stderr = new Response(child.stderr).text();
  const stdin = child.stdin.getWriter();
  const costs: WorkerOutput["costs"] = {};
  const read = async (): Promise<StoreCounters | string | undefined> =>
    options.storeCounters === undefined
      ? undefined
      : await options.storeCounters().catch((error) =>
        `store counters not read: ${error instanceof Error ? error.message : error}`
      );
  const readFuse = async (): Promise<Record<string, number> | undefined> =>
    await options.fuseRequests?.().catch(() => undefined);
  let stdout = "";
  let before: StoreCounters | string | undefined;
  let fuseBefore: Record<string, number> | undefined;
  const readClock = (clock: (() => number) | undefined): number | undefined => {
    try {
      return clock?.();
    } catch {
      return undefined; // the daemon is gone: its exit shows elsewhere
    }
  };
  const readCpu = () => readClock(options.daemonCpuSeconds);
  const readStoreCpu = () => readClock(options.storeCpuSeconds);
  let cpuBefore: number | undefined;
  let storeCpuBefore: number | undefined;
  try {
    for await (const line of lines(child.stdout)) {
      stdout += line + "\n";
      const message = JSON.parse(line) as { next?: string; phase?: string; ops?: number };
      if (message.next !== undefined) {
        before = await read();
        fuseBefore = await readFuse();
        cpuBefore = readCpu();
        storeCpuBefore = readStoreCpu();
        // A worker that died meanwhile shows in its exit code and stderr, not here.
        await stdin.write(new TextEncoder().encode("go\n")).catch(() => {});
      } else if (message.phase !== undefined) {
        const after = await read();
        const cpuAfter = readCpu();
        const storeCpuAfter = readStoreCpu();
        const fuseAfter = await readFuse();
        const ops = message.ops ?? 0;
        const cost: Record<string, number | string> = typeof before === "string"
          ? { store_note: before }
          : typeof after === "string"
          ? { store_note: after }
          : before !== undefined && after !== undefined
          ? perOperation(before, after, ops)
          : {};
        if (fuseBefore !== undefined && fuseAfter !== undefined) {
          Object.assign(cost, fuseRequestsPerOperation(fuseBefore, fuseAfter, ops));
        }
        if (cpuBefore !== undefined && cpuAfter !== undefined && ops > 0) {
          cost.daemon_cpu_us_per_op = (cpuAfter - cpuBefore) * 1e6 / ops;
        }
        if (storeCpuBefore !== undefined && storeCpuAfter !== undefined && ops > 0) {
          cost.store_cpu_us_per_op = (storeCpuAfter - storeCpuBefore) * 1e6 / ops;
        }
        costs[message.phase] = cost;
      }
    }
  } finally {
    clearTimeout(timer);
    await stdin.close().catch(() => {});
  }
  const status = await child.status;
  return { code: status.code, stdout, stderr: await stderr, timedOut, costs };
}

/** The lines of a byte stream, as they arrive. */
async function* lines(stream: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  let pending = "";
  for await (const text of stream.pipeThrough(new TextDecoderStream())) {
    pending += text;
    let end: number;
    while ((end = pending.indexOf("\n")) >= 0) {
      const line = pending.slice(0, end);
      pending = pending.slice(end + 1);
      if (line.trim() !== "") yield line;
    }
  }
  if (pending.trim() !== "") yield pending;
}

/** Runs the worker to its end (no pauses). */
async function runWorker(
  binary: string,
  args: string[],
  options: MetaOptions,
): Promise<WorkerOutput> {
  const { output, timedOut } = await outputWithin(binary, {
    args,
    env: options.env,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    timeoutMs: options.timeoutMs,
  });
  return {
    code: output.code,
    stdout: new TextDecoder().decode(output.stdout),
    stderr: new TextDecoder().decode(output.stderr),
    timedOut,
    costs: {},
  };
}

/** Runs one layout/worker combination on one target; failures become one error measurement. */
export async function runMeta(
  run: MetaRun,
  target: string,
  options: MetaOptions,
): Promise<Measurement[]> {
  const workDir = `${options.dir}/meta-${run.layout}-w${run.workers}`;
  const args = [
    workDir,
    String(options.files),
    String(run.workers),
    run.layout,
    "--size",
    String(
      options.fileBytes,
    ),
  ];
  if (options.dropCaches) args.push("--drop-caches");
  try {
    await Deno.mkdir(workDir, { recursive: true });
    const output = options.storeCounters || options.fuseRequests || options.daemonCpuSeconds ||
        options.storeCpuSeconds
      ? await runPausedWorker(options.binary, args, options)
      : await runWorker(options.binary, args, options);
    const measured = measurementsFromWorker(output.stdout, run, target, output.costs);
    for (const m of measured) m.details = { ...m.details, files: options.files };
    let error: string | undefined;
    if (output.timedOut) error = `meta_worker killed after ${options.timeoutMs / 1000} s`;
    else if (output.code !== 0) {
      error = output.stderr.trim() || `meta_worker exited with ${output.code}`;
    }
    if (error === undefined) {
      await Deno.remove(workDir, { recursive: true });
      return measured;
    }
    return [...measured, ...missingPhases(run, target, options, measured, error)];
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    return missingPhases(run, target, options, [], message);
  }
}

/** Error measurements for the phases a failed worker did not report, so every row shows it. */
function missingPhases(
  run: MetaRun,
  target: string,
  options: MetaOptions,
  measured: Measurement[],
  error: string,
): Measurement[] {
  return expectedPhases(run.layout, options.dropCaches)
    .map((phase) => `meta-${run.layout}-${phase}-w${run.workers}`)
    .filter((job) => !measured.some((m) => m.job === job))
    .map((job) => ({
      family: `meta-${run.layout}`,
      job,
      target,
      unit: "ops/s",
      value: null,
      higherIsBetter: true,
      error,
    }));
}
