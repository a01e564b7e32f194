/**
 * The fio job families: which pinned job file runs with which parameters, how warm and cold runs
 * are prepared, and how fio's JSON becomes measurements.
 * @module
 */
import { fileURLToPath } from "node:url";
import type { Measurement, ModeSettings } from "./model.ts";
import { outputWithin } from "./children.ts";

const FIO_DIR = fileURLToPath(new URL("./fio/", import.meta.url));
const LAYOUT_JOBS = 4;

/** One fio run: a pinned job file and the variables it is run with. */
export interface FioJob {
  /** Unique job name; also the table row. */
  name: string;
  family: string;
  /** Job file under bench/fio/. */
  file: string;
  numjobs: number;
  /** "read" jobs share the files of layout_read.fio and have a warm or cold variant. */
  kind: "read" | "write" | "verify" | "sweep";
  cache?: "warm" | "cold";
  /** Which figure of fio's JSON is the headline: bandwidth or IOPS. */
  metric: "bw" | "iops";
  /** Extra job-file variables (RW and BS of the DatenLord sweep). */
  vars?: Record<string, string>;
}

/** The core job set (issue 3, point 1) in run order: writes first so later jobs find their files. */
export function coreJobs(): FioJob[] {
  const jobs: FioJob[] = [];
  for (const numjobs of [1, 4]) {
    jobs.push({
      name: `seq-write-1m-j${numjobs}`,
      family: "seq-write",
      file: "seq_write.fio",
      numjobs,
      kind: "write",
      metric: "bw",
    });
  }
  for (const numjobs of [1, 4]) {
    for (const cache of ["warm", "cold"] as const) {
      jobs.push({
        name: `seq-read-1m-j${numjobs}-${cache}`,
        family: "seq-read",
        file: "seq_read.fio",
        numjobs,
        kind: "read",
        cache,
        metric: "bw",
      });
    }
  }
  for (const engine of ["psync-qd1", "uring-qd32"] as const) {
    const fileEngine = engine.startsWith("psync") ? "psync" : "uring";
    for (const numjobs of [1, 4]) {
      jobs.push({
        name: `rand-write-4k-${engine}-j${numjobs}`,
        family: `rand-write-${engine}`,
        file: `rand_write_${fileEngine}.fio`,
        numjobs,
        kind: "write",
        metric: "iops",
      });
    }
    for (const numjobs of [1, 4]) {
      for (const cache of ["warm", "cold"] as const) {
        jobs.push({
          name: `rand-read-4k-${engine}-j${numjobs}-${cache}`,
          family: `rand-read-${engine}`,
          file: `rand_read_${fileEngine}.fio`,
          numjobs,
          kind: "read",
          cache,
          metric: "iops",
        });
      }
    }
  }
  jobs.push({
    name: "write-verify-crc32c",
    family: "verify-crc32c",
    file: "write_verify_crc32c.fio",
    numjobs: 1,
    kind: "verify",
    metric: "bw",
  });
  return jobs;
}

/** DatenLord's published sweep: 4k..512k blocks at 1 job, 1..32 jobs at 4k; direct, QD1. */
export function datenlordJobs(): FioJob[] {
  const jobs: FioJob[] = [];
  for (const rw of ["randread", "randwrite"]) {
    for (const bs of ["4k", "8k", "16k", "32k", "64k", "128k", "256k", "512k"]) {
      jobs.push({
        name: `datenlord-${rw}-${bs}-j1`,
        family: `datenlord-${rw}-bs`,
        file: "datenlord_sweep.fio",
        numjobs: 1,
        kind: "sweep",
        metric: "bw",
        vars: { RW: rw, BS: bs },
      });
    }
    for (const numjobs of [1, 2, 4, 8, 16, 32]) {
      jobs.push({
        name: `datenlord-${rw}-4k-j${numjobs}`,
        family: `datenlord-${rw}-jobs`,
        file: "datenlord_sweep.fio",
        numjobs,
        kind: "sweep",
        metric: "iops",
        vars: { RW: rw, BS: "4k" },
      });
    }
  }
  return jobs;
}

/** Parses an fio time ("5s", "200ms") into milliseconds. */
export function fioTimeMs(time: string): number {
  const match = /^(\d+(?:\.\d+)?)(ms|s|m)?$/.exec(time.trim());
  if (!match) throw new RangeError(`Cannot parse fio time "${time}": use e.g. "5s" or "200ms"`);
  const n = Number(match[1]);
  return match[2] === "ms" ? n : match[2] === "m" ? n * 60_000 : n * 1000;
}

/** The job-file variables for one run. */
export function jobVars(job: FioJob, dir: string, settings: ModeSettings): Record<string, string> {
  const base: Record<string, string> = {
    DIR: dir,
    SIZE: job.kind === "verify"
      ? settings.verifySize
      : job.kind === "sweep"
      ? settings.sweepFileSize
      : settings.fileSize,
    NUMJOBS: String(job.numjobs),
    RUNTIME: job.cache === "cold" ? settings.coldRuntimeCap : settings.runtime,
    // Cold reads are one pass over uncached data (capped); warm reads loop for RUNTIME.
    TIME_BASED: job.cache === "cold" ? "0" : "1",
    INVALIDATE: job.cache === "cold" ? "1" : "0",
  };
  return { ...base, ...job.vars };
}

interface FioDirStats {
  bw: number;
  iops: number;
  io_bytes: number;
  clat_ns?: { mean?: number; percentile?: Record<string, number> };
}

interface FioJson {
  jobs?: {
    jobname: string;
    error: number;
    job_runtime?: number;
    read: FioDirStats;
    write: FioDirStats;
  }[];
}

/** Extracts fio's JSON from its output file (fio may print notes before the object). */
export function parseFioJson(text: string): FioJson {
  const start = text.indexOf("{");
  if (start < 0) throw new Error(`fio wrote no JSON: ${text.slice(0, 200)}`);
  return JSON.parse(text.slice(start)) as FioJson;
}

function latencyDetails(prefix: string, stats: FioDirStats): Record<string, number> {
  const details: Record<string, number> = {
    [`${prefix}_bw_mib_s`]: stats.bw / 1024,
    [`${prefix}_iops`]: stats.iops,
    [`${prefix}_bytes`]: stats.io_bytes,
  };
  if (stats.clat_ns?.mean !== undefined) {
    details[`${prefix}_clat_mean_us`] = stats.clat_ns.mean / 1e3;
  }
  const p99 = stats.clat_ns?.percentile?.["99.000000"];
  if (p99 !== undefined) details[`${prefix}_clat_p99_us`] = p99 / 1e3;
  return details;
}

/** Turns fio's JSON for one job into measurements (two for write-and-verify). */
export function measurementsFromFio(job: FioJob, target: string, fio: FioJson): Measurement[] {
  const result = fio.jobs?.[0];
  if (!result) throw new Error("fio JSON has no jobs");
  const direction = job.kind === "write" || job.kind === "verify" ||
      (job.vars?.RW ?? "").includes("write")
    ? "write"
    : "read";
  const stats = result[direction];
  const unit = job.metric === "bw" ? "MiB/s" : "IOPS";
  const value = job.metric === "bw" ? stats.bw / 1024 : stats.iops;
  const details = { ...latencyDetails(direction, stats), runtime_ms: result.job_runtime ?? 0 };
  const error = result.error !== 0 ? `fio job error ${result.error}` : undefined;
  const main: Measurement = {
    family: job.family,
    job: job.name,
    target,
    unit,
    value: error ? null : value,
    higherIsBetter: true,
    details,
    ...(error ? { error } : {}),
  };
  if (job.kind !== "verify") return [main];
  const verify: Measurement = {
    family: job.family,
    job: `${job.name}-verify-read`,
    target,
    unit: "MiB/s",
    value: error ? null : result.read.bw / 1024,
    higherIsBetter: true,
    details: latencyDetails("read", result.read),
    ...(error ? { error } : {}),
  };
  return [main, verify];
}

/** Reads every file once with 1 MiB reads so a warm job starts from a filled page cache. */
export async function warmFiles(paths: string[]): Promise<void> {
  const buffer = new Uint8Array(1 << 20);
  for (const path of paths) {
    using file = await Deno.open(path, { read: true });
    while ((await file.read(buffer)) !== null) {
      // Reading is the point; the bytes are not needed.
    }
  }
}

/** Flushes dirty data and drops the page, dentry and inode caches; false when not permitted. */
export async function dropCaches(): Promise<boolean> {
  try {
    await new Deno.Command("sync").output();
    await Deno.writeTextFile("/proc/sys/vm/drop_caches", "3\n");
    return true;
  } catch {
    return false;
  }
}

export interface FioRunOptions {
  dir: string;
  settings: ModeSettings;
  env: Record<string, string>;
  /** Kills fio after this long; a stuck file system must not stall the whole run. */
  timeoutMs: number;
  tmpDir: string;
  /** Extra fio options before the job file (`--thread` for the shim target). */
  fioArgs?: string[];
}

/** Runs `fio` on a job file with the given variables; returns its parsed JSON or throws. */
export async function runFio(
  file: string,
  vars: Record<string, string>,
  options: { env: Record<string, string>; timeoutMs: number; outputPath: string; args?: string[] },
): Promise<FioJson> {
  const { output, timedOut } = await outputWithin("fio", {
    args: [
      "--output-format=json",
      `--output=${options.outputPath}`,
      ...(options.args ?? []),
      `${FIO_DIR}${file}`,
    ],
    env: { ...options.env, ...vars },
    // fio may drop state files into its working directory; keep them next to its output.
    cwd: options.outputPath.slice(0, options.outputPath.lastIndexOf("/")) || "/",
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    timeoutMs: options.timeoutMs,
  });
  const stderr = new TextDecoder().decode(output.stderr).trim();
  if (timedOut) throw new Error(`fio ${file} killed after ${options.timeoutMs / 1000} s`);
  let text = "";
  try {
    text = await Deno.readTextFile(options.outputPath);
  } catch {
    // fio failed before writing its output; the exit status and stderr say why.
  }
  if (output.code !== 0) {
    // fio repeats one io_u error per failed I/O; the first line says it all.
    const first = stderr.split("\n").find((l) => l.trim() !== "") ?? "(no message)";
    throw new Error(`fio ${file} exited with ${output.code}: ${first.slice(0, 300)}`);
  }
  return parseFioJson(text);
}

/** Lays out the shared read files (read.0.0 .. read.3.0) on a target. */
export async function layoutReadFiles(options: FioRunOptions): Promise<void> {
  await runFio("layout_read.fio", {
    DIR: options.dir,
    SIZE: options.settings.fileSize,
    NUMJOBS: String(LAYOUT_JOBS),
  }, {
    env: options.env,
    timeoutMs: options.timeoutMs * 4,
    outputPath: `${options.tmpDir}/layout.json`,
    args: options.fioArgs,
  });
}

export function readFilePaths(dir: string, numjobs: number): string[] {
  return Array.from({ length: numjobs }, (_, i) => `${dir}/read.${i}.0`);
}

/**
 * Runs one job on one target: prepares the cache state, runs fio, returns measurements. Failures
 * become measurements with an error so the table shows them.
 */
export async function runFioJob(
  job: FioJob,
  target: string,
  options: FioRunOptions,
): Promise<Measurement[]> {
  const failed = (error: string): Measurement[] => [{
    family: job.family,
    job: job.name,
    target,
    unit: job.metric === "bw" ? "MiB/s" : "IOPS",
    value: null,
    higherIsBetter: true,
    error,
  }];
  try {
    if (job.cache === "warm") await warmFiles(readFilePaths(options.dir, job.numjobs));
    if (job.cache === "cold" && !await dropCaches()) {
      return failed("cold run needs root to write /proc/sys/vm/drop_caches");
    }
    const fio = await runFio(job.file, jobVars(job, options.dir, options.settings), {
      env: options.env,
      timeoutMs: options.timeoutMs,
      outputPath: `${options.tmpDir}/${job.name}.${target}.json`,
      args: options.fioArgs,
    });
    return measurementsFromFio(job, target, fio);
  } catch (error) {
    return failed(error instanceof Error ? error.message : String(error));
  }
}
