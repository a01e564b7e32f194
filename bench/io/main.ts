/**
 * The I/O engine benchmark (issue 4): 4 KiB random reads and writes at queue depth 1 and 32 and
 * 1 MiB sequential reads and writes on one file, with skyfs's io_uring engine (src/io), with
 * Deno.FsFile, and with fio's own io_uring engine on the same file in the same run, reported as
 * ratios, plus JS<->native crossings per completed I/O of the skyfs engine.
 *
 * Usage: deno run -A bench/io/main.ts [--dir DIR] [--json PATH] [--quick | --tiny]
 *          [--only JOB,...] [--runtime-ms N] [--file-mib N] [--rounds N]
 * Defaults: full 7 interleaved rounds of 0.7 s per engine and job on a 1 GiB file; --quick 1 round
 * of 1 s on 256 MiB; --tiny 1 round of 200 ms on 8 MiB. A figure is the median round; a ratio is
 * the median of the ratios within each round (the engines of one round run back to back, so
 * drift on a shared machine cancels out of them better than out of a ratio of medians).
 * Besides IOPS, the CPU time of the whole process (every thread: io-wq workers, Deno's blocking
 * pool) is measured for the two in-process engines, since on a shared machine an engine with more
 * threads gets more CPU: "per CPU-second" compares what each does with the CPU it got.
 * Output: a markdown table on stdout; with --json, {baseline, measurements} as bench/README.md's
 * contract for the io family says (bench/io_family.ts reads it).
 * @module
 */
import { cpuUsage } from "node:process";
import { parseArgs } from "node:util";
import { alignedBuffer } from "../../src/io/mod.ts";
import { openUringEngine, type UringEngine, type UringStats } from "../../src/io/uring.ts";

const O_RDWR = 0o2;
const KIB = 1024;
const MIB = 1024 * 1024;

type Engine = "fio" | "skyfs-io_uring" | "Deno.FsFile";
const ENGINES: Engine[] = ["fio", "skyfs-io_uring", "Deno.FsFile"];

interface Job {
  name: string;
  family: string;
  pattern: "rand" | "seq";
  write: boolean;
  blockBytes: number;
  queueDepth: number;
  unit: "IOPS" | "MiB/s";
}

const JOBS: Job[] = [
  job("rand-read-4k-qd1", "rand", false, 4 * KIB, 1),
  job("rand-read-4k-qd32", "rand", false, 4 * KIB, 32),
  job("rand-write-4k-qd1", "rand", true, 4 * KIB, 1),
  job("rand-write-4k-qd32", "rand", true, 4 * KIB, 32),
  job("seq-read-1m-qd1", "seq", false, MIB, 1),
  job("seq-write-1m-qd1", "seq", true, MIB, 1),
];

function job(
  name: string,
  pattern: "rand" | "seq",
  write: boolean,
  blockBytes: number,
  queueDepth: number,
): Job {
  const unit = blockBytes >= MIB ? "MiB/s" : "IOPS";
  return {
    name,
    family: `io-${name.replace(/-qd\d+$/, "")}`,
    pattern,
    write,
    blockBytes,
    queueDepth,
    unit,
  };
}

/** The measurement shape of bench/model.ts (kept structural so this file runs on its own). */
interface Measurement {
  family: string;
  job: string;
  target: string;
  unit: string;
  value: number | null;
  higherIsBetter: boolean;
  error?: string;
  details?: Record<string, number | string>;
}

interface Result {
  ops: number;
  seconds: number;
  /** CPU time of this whole process (every thread, io-wq workers included) during the run. */
  cpuSeconds?: number;
  crossings?: UringStats;
}

interface Options {
  dir: string;
  json?: string;
  runtimeMs: number;
  /** Rounds per engine and job; the median round is the figure. */
  rounds: number;
  fileBytes: number;
  jobs: Job[];
}

function parseOptions(): Options {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      dir: { type: "string" },
      json: { type: "string" },
      quick: { type: "boolean" },
      tiny: { type: "boolean" },
      only: { type: "string" },
      "runtime-ms": { type: "string" },
      "file-mib": { type: "string" },
      rounds: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    console.log(
      "Usage: deno run -A bench/io/main.ts [--dir DIR] [--json PATH] [--quick|--tiny]\n" +
        `         [--only ${JOBS.map((j) => j.name).join(",")}]\n` +
        "         [--runtime-ms N] [--file-mib N] [--rounds N]",
    );
    Deno.exit(0);
  }
  const mode = values.tiny ? "tiny" : values.quick ? "quick" : "full";
  const defaults = { full: [700, 1024, 7], quick: [1000, 256, 1], tiny: [200, 8, 1] }[mode];
  const runtimeMs = Number(values["runtime-ms"] ?? defaults[0]);
  const fileMiB = Number(values["file-mib"] ?? defaults[1]);
  const rounds = Number(values.rounds ?? defaults[2]);
  if (!(runtimeMs > 0) || !(fileMiB >= 2) || !(Number.isInteger(rounds) && rounds >= 1)) {
    console.error(
      `bench/io: --runtime-ms ${runtimeMs} / --file-mib ${fileMiB} / --rounds ${rounds}: ` +
        "need > 0 / >= 2 / a whole number >= 1",
    );
    Deno.exit(2);
  }
  let jobs = JOBS;
  if (values.only) {
    const names = values.only.split(",");
    const unknown = names.filter((n) => !JOBS.some((j) => j.name === n));
    if (unknown.length > 0) {
      console.error(`bench/io: unknown job "${unknown[0]}"; jobs: ${JOBS.map((j) => j.name)}`);
      Deno.exit(2);
    }
    jobs = JOBS.filter((j) => names.includes(j.name));
  }
  return {
    dir: values.dir ?? `/var/tmp/skyfs-bench-io-${Deno.pid}`,
    json: values.json,
    runtimeMs,
    rounds,
    fileBytes: fileMiB * MIB,
    jobs,
  };
}

/** xorshift32: cheap, deterministic block numbers that every engine draws the same way. */
function randomBlocks(seed: number, blocks: number): () => number {
  let x = (seed * 2654435761) >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) % blocks;
  };
}

/** The offsets one worker visits: random blocks, or its own sequential stream. */
function offsets(job: Job, worker: number, fileBytes: number): () => number {
  const blocks = Math.floor(fileBytes / job.blockBytes);
  if (job.pattern === "rand") {
    const next = randomBlocks(worker + 1, blocks);
    return () => next() * job.blockBytes;
  }
  let block = Math.floor((worker * blocks) / job.queueDepth);
  return () => {
    const offset = block * job.blockBytes;
    block = (block + 1) % blocks;
    return offset;
  };
}

/** Runs `queueDepth` workers until the deadline; each checks the clock every few operations
 * because inline completions can keep the loop in microtasks, where no timer fires. */
async function runWorkers(
  job: Job,
  runtimeMs: number,
  fileBytes: number,
  once: (worker: number, buffer: Uint8Array, offset: number) => Promise<number>,
): Promise<Result> {
  const cpuBefore = cpuUsage();
  const start = performance.now();
  const deadline = start + runtimeMs;
  let ops = 0;
  const worker = async (id: number) => {
    // Page-aligned like fio's buffers, for every engine: alignment alone moves copies by ~10%.
    const buffer = alignedBuffer(job.blockBytes).fill(id + 1);
    const next = offsets(job, id, fileBytes);
    for (let i = 0;; i++) {
      if ((i & 7) === 0 && performance.now() >= deadline) return;
      const n = await once(id, buffer, next());
      if (n !== job.blockBytes) throw new Error(`${job.name}: short transfer ${n}`);
      ops++;
    }
  };
  await Promise.all(Array.from({ length: job.queueDepth }, (_, i) => worker(i)));
  const seconds = (performance.now() - start) / 1000;
  const cpu = cpuUsage(cpuBefore);
  return { ops, seconds, cpuSeconds: (cpu.user + cpu.system) / 1e6 };
}

/** The task-work setup the skyfs engine's ring got (reported once). */
let skyfsRing = "";

async function runSkyfs(job: Job, path: string, options: Options): Promise<Result> {
  const io: UringEngine = openUringEngine({ queueDepth: Math.max(32, job.queueDepth) });
  try {
    const fd = await io.open(path, O_RDWR);
    const before = io.stats();
    const result = await runWorkers(
      job,
      options.runtimeMs,
      options.fileBytes,
      job.write
        ? (_, buffer, offset) => io.write(fd, buffer, offset)
        : (_, buffer, offset) => io.read(fd, buffer, offset),
    );
    const after = io.stats();
    await io.close(fd);
    result.crossings = {
      submissions: after.submissions - before.submissions,
      completions: after.completions - before.completions,
      submitCalls: after.submitCalls - before.submitCalls,
      reapCalls: after.reapCalls - before.reapCalls,
      waitCalls: after.waitCalls - before.waitCalls,
      asyncWrites: after.asyncWrites - before.asyncWrites,
      fdProbes: after.fdProbes - before.fdProbes,
      clientSubmissions: 0,
      sharedSubmits: 0,
    };
    skyfsRing = io.ringSetup;
    return result;
  } finally {
    await io.shutdown();
  }
}

/** Deno.FsFile has no pread: each worker owns a handle and seeks before every read or write. */
async function runFsFile(job: Job, path: string, options: Options): Promise<Result> {
  const files = await Promise.all(
    Array.from({ length: job.queueDepth }, () => Deno.open(path, { read: true, write: true })),
  );
  try {
    return await runWorkers(job, options.runtimeMs, options.fileBytes, async (id, buf, offset) => {
      const file = files[id];
      await file.seek(offset, Deno.SeekMode.Start);
      if (job.write) return await file.write(buf);
      let done = 0;
      while (done < buf.length) {
        const n = await file.read(buf.subarray(done));
        if (n === null) break;
        done += n;
      }
      return done;
    });
  } finally {
    for (const file of files) file.close();
  }
}

function fioArgs(job: Job, path: string, options: Options): string[] {
  const rw = job.pattern === "rand"
    ? (job.write ? "randwrite" : "randread")
    : (job.write ? "write" : "read");
  return [
    `--name=${job.name}`,
    `--filename=${path}`,
    `--size=${options.fileBytes}`,
    "--ioengine=io_uring",
    `--rw=${rw}`,
    `--bs=${job.blockBytes}`,
    `--iodepth=${job.queueDepth}`,
    "--direct=0",
    // Keep the page cache as the other engines see it (fio drops it by default).
    "--invalidate=0",
    "--time_based=1",
    `--runtime=${options.runtimeMs}ms`,
    "--norandommap=1",
    "--randrepeat=0",
    "--output-format=json",
  ];
}

async function runFio(job: Job, path: string, options: Options): Promise<Result> {
  const args = fioArgs(job, path, options);
  const out = await new Deno.Command("fio", { args, stdout: "piped", stderr: "piped" }).output();
  if (!out.success) {
    throw new Error(`fio ${args.join(" ")} failed: ${new TextDecoder().decode(out.stderr).trim()}`);
  }
  const report = JSON.parse(new TextDecoder().decode(out.stdout));
  const side = report.jobs[0][job.write ? "write" : "read"];
  return { ops: side.total_ios, seconds: side.runtime / 1000 };
}

/** Lays out the file once with real data (not a sparse hole). */
async function layOut(path: string, bytes: number): Promise<void> {
  const file = await Deno.open(path, { read: true, write: true, create: true, truncate: true });
  const chunk = new Uint8Array(MIB);
  for (let i = 0; i < chunk.length; i++) chunk[i] = (i * 31 + 7) & 0xff;
  for (let done = 0; done < bytes; done += MIB) await file.write(chunk);
  await file.sync();
  file.close();
}

/**
 * Reads the whole file so every engine starts from a warm page cache: on a shared machine another
 * benchmark may drop caches (echo 3 > /proc/sys/vm/drop_caches) between two rounds.
 */
function warm(path: string): void {
  const file = Deno.openSync(path, { read: true });
  const chunk = new Uint8Array(4 * MIB);
  while (file.readSync(chunk) !== null) { /* only the page cache matters */ }
  file.close();
}

/** The median round as the figure, every round in the details; plus the crossings row. */
function summarize(job: Job, engine: Engine, results: Result[], error?: string): Measurement[] {
  const m: Measurement = {
    family: job.family,
    job: job.name,
    target: engine,
    unit: job.unit,
    value: null,
    higherIsBetter: true,
  };
  if (results.length === 0) {
    m.error = error ?? "no round completed";
    return [m];
  }
  const values = results.map((r) => value(job, r));
  const sorted = [...values].sort((a, b) => a - b);
  m.value = sorted[Math.floor(sorted.length / 2)];
  m.details = {
    rounds: values.map((v) => Math.round(v)).join(" "),
    ops: results.reduce((sum, r) => sum + r.ops, 0),
    seconds: Number(results.reduce((sum, r) => sum + r.seconds, 0).toFixed(3)),
  };
  if (results.every((r) => r.cpuSeconds !== undefined)) {
    const cpu = results.reduce((sum, r) => sum + r.cpuSeconds!, 0);
    m.details.cpuSeconds = Number(cpu.toFixed(3));
    m.details.cpusUsed = Number((cpu / (m.details.seconds as number)).toFixed(2));
  }
  if (!results[0].crossings) return [m];
  const c = results.map((r) => r.crossings!).reduce((a, b) => ({
    submissions: a.submissions + b.submissions,
    completions: a.completions + b.completions,
    submitCalls: a.submitCalls + b.submitCalls,
    reapCalls: a.reapCalls + b.reapCalls,
    waitCalls: a.waitCalls + b.waitCalls,
    asyncWrites: a.asyncWrites + b.asyncWrites,
    fdProbes: a.fdProbes + b.fdProbes,
    clientSubmissions: 0,
    sharedSubmits: 0,
  }));
  const crossingsPerIo = (c.submitCalls + c.reapCalls + c.waitCalls + c.fdProbes) /
    c.completions;
  m.details.crossingsPerIo = crossingsPerIo;
  m.details.waitCallsPerIo = c.waitCalls / c.completions;
  m.details.submitCallsPerIo = c.submitCalls / c.completions;
  m.details.asyncWritesPerIo = c.asyncWrites / c.completions;
  // Its own family, so the harness's table shows the figure (there is no fio column there).
  const crossings: Measurement = {
    family: "io-crossings",
    job: `${job.name}-crossings`,
    target: engine,
    unit: "crossings/IO",
    value: crossingsPerIo,
    higherIsBetter: false,
    details: { nonblockingPerIo: c.waitCalls / c.completions },
  };
  return [m, crossings];
}

/** Median over rounds of a / b within each round, or null when no round has both. */
function pairedRatio(
  job: Job,
  a: (Result | undefined)[],
  b: (Result | undefined)[],
  measure: (job: Job, result: Result) => number = value,
): number | null {
  const ratios: number[] = [];
  for (let i = 0; i < a.length; i++) {
    const x = a[i];
    const y = b[i];
    if (x && y && measure(job, y) > 0) ratios.push(measure(job, x) / measure(job, y));
  }
  if (ratios.length === 0) return null;
  ratios.sort((p, q) => p - q);
  return ratios[Math.floor(ratios.length / 2)];
}

/** Operations per CPU-second of the process (0 when unknown): what an engine gets out of the CPU
 * it is given, which on a shared machine moves less than IOPS (more threads get more CPU). */
function perCpuSecond(job: Job, result: Result): number {
  if (!result.cpuSeconds) return 0;
  return value(job, result) * result.seconds / result.cpuSeconds;
}

function value(job: Job, result: Result): number {
  const perSecond = result.ops / result.seconds;
  return job.unit === "IOPS" ? perSecond : (perSecond * job.blockBytes) / MIB;
}

function format(n: number | null, unit: string): string {
  if (n === null) return "error";
  if (unit === "MiB/s") return `${Math.round(n)} MiB/s`;
  return n >= 1e4 ? `${(n / 1e3).toFixed(1)}k` : `${Math.round(n)}`;
}

async function main(): Promise<void> {
  const options = parseOptions();
  await Deno.mkdir(options.dir, { recursive: true });
  const path = `${options.dir}/io-bench.dat`;
  const measurements: Measurement[] = [];
  try {
    await layOut(path, options.fileBytes);
    console.error(
      `bench/io: ${options.jobs.length} jobs x ${ENGINES.length} engines, ` +
        `${options.rounds} x ${options.runtimeMs} ms each, file ${path} (${
          options.fileBytes / MIB
        } MiB, page cache warm)`,
    );
    for (const [index, job] of options.jobs.entries()) {
      // By engine, one entry per round (undefined where that engine failed).
      const rounds = new Map<Engine, (Result | undefined)[]>(ENGINES.map((engine) => [engine, []]));
      const errors = new Map<Engine, string>();
      for (let round = 0; round < options.rounds; round++) {
        // Interleave engines and rotate their order, so drift on a shared machine (other jobs
        // starting, writeback) spreads over all of them instead of favouring one.
        const order = ENGINES.map((_, i) => ENGINES[(i + index + round) % ENGINES.length]);
        for (const engine of order) {
          if (errors.has(engine)) continue;
          try {
            warm(path);
            const result = engine === "fio"
              ? await runFio(job, path, options)
              : engine === "Deno.FsFile"
              ? await runFsFile(job, path, options)
              : await runSkyfs(job, path, options);
            rounds.get(engine)![round] = result;
            console.error(
              `bench/io: ${job.name.padEnd(20)} ${engine.padEnd(15)} round ${round + 1}: ` +
                format(value(job, result), job.unit),
            );
          } catch (error) {
            errors.set(engine, error instanceof Error ? error.message : String(error));
          }
        }
      }
      for (const engine of ENGINES) {
        const done = rounds.get(engine)!.filter((r): r is Result => r !== undefined);
        measurements.push(...summarize(job, engine, done, errors.get(engine)));
      }
      const sky = measurements.find((m) => m.job === job.name && m.target === "skyfs-io_uring");
      if (sky?.details) {
        for (const [other, key] of [["fio", "ratioToFio"], ["Deno.FsFile", "ratioToFsFile"]]) {
          const paired = pairedRatio(
            job,
            rounds.get("skyfs-io_uring")!,
            rounds.get(other as Engine)!,
          );
          if (paired !== null) sky.details[key] = Number(paired.toFixed(3));
        }
        const perCpu = pairedRatio(
          job,
          rounds.get("skyfs-io_uring")!,
          rounds.get("Deno.FsFile")!,
          perCpuSecond,
        );
        if (perCpu !== null) sky.details.perCpuRatioToFsFile = Number(perCpu.toFixed(3));
      }
    }
  } finally {
    await Deno.remove(options.dir, { recursive: true }).catch(() => {});
  }
  console.error(
    `bench/io: skyfs ring setup "${skyfsRing}", IOSQE_ASYNC on writes to buffered regular files`,
  );
  console.log(table(options, measurements));
  if (options.json) {
    await Deno.writeTextFile(
      options.json,
      JSON.stringify({ baseline: "fio", measurements }, null, 2) + "\n",
    );
  }
}

function cpus(m: Measurement | undefined): string {
  const used = m?.details?.cpusUsed;
  return typeof used === "number" ? used.toFixed(2) : "n/a";
}

function table(options: Options, measurements: Measurement[]): string {
  const lines = [
    "| job | fio io_uring | skyfs io_uring | Deno.FsFile | skyfs / fio | skyfs / FsFile | " +
    "skyfs / FsFile per CPU-second | CPUs used (skyfs / FsFile) | " +
    "crossings per I/O (all / nonblocking) |",
    "|---|--:|--:|--:|--:|--:|--:|--:|--:|",
  ];
  const ratioText = (x: unknown) => typeof x === "number" ? `${x.toFixed(2)}x` : "n/a";
  for (const job of options.jobs) {
    const get = (target: Engine) =>
      measurements.find((m) => m.job === job.name && m.target === target);
    const sky = get("skyfs-io_uring");
    const d = sky?.details ?? {};
    const crossings = typeof d.crossingsPerIo === "number" && typeof d.waitCallsPerIo === "number"
      ? `${d.crossingsPerIo.toFixed(3)} / ${d.waitCallsPerIo.toFixed(3)}`
      : "n/a";
    const cells = [
      job.name,
      format(get("fio")?.value ?? null, job.unit),
      format(sky?.value ?? null, job.unit),
      format(get("Deno.FsFile")?.value ?? null, job.unit),
      ratioText(d.ratioToFio),
      ratioText(d.ratioToFsFile),
      ratioText(d.perCpuRatioToFsFile),
      `${cpus(sky)} / ${cpus(get("Deno.FsFile"))}`,
      crossings,
    ];
    lines.push(`| ${cells.join(" | ")} |`);
  }
  return lines.join("\n");
}

if (import.meta.main) await main();
