/**
 * `deno task bench`: measures skyfs (one node, with the shim, and a cluster node on CURP and on
 * etcd) beside ext4, bindfs and mergerfs in one run, alternating targets job by job, and writes raw
 * JSON, a markdown table with ratios to ext4 and SVG charts.
 * @module
 */
import { parseArgs } from "node:util";
import { fileURLToPath } from "node:url";
import {
  coreJobs,
  datenlordJobs,
  type FioJob,
  fioTimeMs,
  layoutReadFiles,
  runFioJob,
} from "./fio.ts";
import { ConfigError, flagsOf, resolveConfig } from "../src/config/mod.ts";
import { formatValue } from "./format.ts";
import { runIoFamily } from "./io_family.ts";
import { runWanFamily } from "./meta_wan/family.ts";
import { runZonesFamily } from "./zones/family.ts";
import { runClusterFamily } from "./cluster/family.ts";
import { buildMetaWorker, META_RUNS, runMeta } from "./meta.ts";
import {
  CLUSTER_TARGETS,
  DEFAULT_FAMILY_GROUPS,
  FAMILY_GROUPS,
  type FamilyGroup,
  type MachineInfo,
  type Measurement,
  type Mode,
  MODE_SETTINGS,
  type RunResult,
  TARGET_NAMES,
  type TargetName,
  type TargetReport,
} from "./model.ts";
import {
  groupByFamily,
  markdownReport,
  ratioToBaseline,
  replaceReadmeSection,
  shortLabels,
} from "./report.ts";
import { barChart, type ChartGroup } from "./svg.ts";
import {
  forceUnmount,
  isMounted,
  mountPoints,
  type ReadyTarget,
  setUpTarget,
  TargetSkipped,
} from "./targets.ts";
import { killAllTracked } from "./children.ts";
import { turnOnUring, type UringSwitch } from "./uring_switch.ts";

const REPO_DIR = fileURLToPath(new URL("..", import.meta.url)).replace(/\/$/, "");

const HELP = `Usage: deno task bench [options]

Runs fio job families and a metadata benchmark on ext4 (the limit), skyfs through FUSE, skyfs with
the LD_PRELOAD shim, a skyfs cluster node (three CURP replicas, or etcd, and two mounts started by
the bench), bindfs and mergerfs in one run, alternating targets job by job. On the cluster targets
each metadata phase also reports the store's proposals and fsyncs per operation.

Options:
  --quick              short runs and small files (about 6 minutes with the cluster targets)
  --tiny               tiny files and runs (CI: proves the harness works, asserts no speed)
  --only LIST          job families, comma-separated: ${FAMILY_GROUPS.join(", ")}
                       (default: ${
  DEFAULT_FAMILY_GROUPS.join(",")
}; datenlord, wan and zones run only when named)
  --targets LIST       targets, comma-separated (default: ${TARGET_NAMES.join(",")})
  --out DIR            where results go (default: bench/results)
  --scratch DIR        where targets are mounted and files written (default: /tmp/skyfs-bench-PID);
                       must be on the disk to compare against (not tmpfs)
  --no-readme          do not update README.md's Performance section (only full runs do)
  --strict             exit 1 when a requested target could not be measured or a job failed
  --keep-scratch       leave the scratch directory for inspection
  --no-uring-switch    leave /sys/module/fuse/parameters/enable_uring as it is (by default a run
                       with skyfs-uring turns it on, as root, and puts it back at the end)
  --list               print the jobs of the chosen families and exit
  --render FILE.json   rewrite the table, charts (and README for a full run) from raw results
  --config FILE        TOML file: the options above (but --list, --render) as keys of [bench]
                       (\`deno task skyfs config bench\` shows them and their SKYFS_BENCH_* names)
  -h, --help           this text

Output: a progress line per job; <out>/<stamp>.json (raw), <stamp>.md (tables with ratios to
ext4), <stamp>/<family>.svg (charts). A full run also rewrites README.md between its bench markers.`;

interface Options {
  mode: Mode;
  families: FamilyGroup[];
  targets: TargetName[];
  outDir: string;
  scratch: string;
  readme: boolean;
  strict: boolean;
  keepScratch: boolean;
  noUringSwitch: boolean;
  list: boolean;
  render?: string;
}

function fail(message: string): never {
  console.error(`bench: ${message}`);
  Deno.exit(2);
}

function splitList<T extends string>(value: string, allowed: readonly T[], what: string): T[] {
  const items = value.split(",").map((s) => s.trim()).filter((s) => s !== "");
  for (const item of items) {
    if (!allowed.includes(item as T)) {
      fail(`unknown ${what} "${item}"; choose from: ${allowed.join(", ")}`);
    }
  }
  if (items.length === 0) {
    fail(`--${what === "family" ? "only" : "targets"} needs at least one name`);
  }
  return items as T[];
}

function parseOptions(args: string[]): Options {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      options: {
        ...flagsOf("bench"),
        config: { type: "string" },
        list: { type: "boolean" },
        render: { type: "string" },
        help: { type: "boolean", short: "h" },
      },
      strict: true,
      allowPositionals: false,
    });
  } catch (error) {
    fail(`${error instanceof Error ? error.message : error}; see --help`);
  }
  if (parsed.values.help) {
    console.log(HELP);
    Deno.exit(0);
  }
  // Flags, SKYFS_BENCH_* and the [bench] section of --config FILE (src/config/keys.ts).
  let config;
  try {
    config = resolveConfig("bench", { flags: parsed.values });
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    fail(error.message);
  }
  const only = config.get("bench.only");
  const targets = config.get("bench.targets");
  const mode: Mode = config.get("bench.tiny")
    ? "tiny"
    : config.get("bench.quick")
    ? "quick"
    : "full";
  return {
    mode,
    families: only ? splitList(only, FAMILY_GROUPS, "family") : [...DEFAULT_FAMILY_GROUPS],
    targets: targets ? splitList(targets, TARGET_NAMES, "target") : [...TARGET_NAMES],
    outDir: config.get("bench.out") ?? `${REPO_DIR}/bench/results`,
    scratch: config.get("bench.scratch") ?? `/tmp/skyfs-bench-${Deno.pid}`,
    readme: !config.get("bench.no_readme"),
    strict: config.get("bench.strict") ?? false,
    keepScratch: config.get("bench.keep_scratch") ?? false,
    noUringSwitch: config.get("bench.no_uring_switch") ?? false,
    list: parsed.values.list ?? false,
    render: parsed.values.render,
  };
}

function commandExists(command: string): boolean {
  return (Deno.env.get("PATH") ?? "").split(":").some((dir) => {
    try {
      return Deno.statSync(`${dir}/${command}`).isFile;
    } catch {
      return false;
    }
  });
}

async function commandOutput(command: string, args: string[]): Promise<string> {
  try {
    const out = await new Deno.Command(command, { args, stdin: "null" }).output();
    return new TextDecoder().decode(out.stdout).trim();
  } catch {
    return "";
  }
}

async function machineInfo(scratch: string): Promise<MachineInfo> {
  let cpu = "unknown CPU";
  try {
    const cpuinfo = await Deno.readTextFile("/proc/cpuinfo");
    cpu = /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1]?.trim() ?? cpu;
  } catch {
    // Not Linux or no procfs: keep the placeholder.
  }
  return {
    hostname: Deno.hostname(),
    kernel: Deno.osRelease(),
    cpu,
    cpus: navigator.hardwareConcurrency,
    memoryGiB: Math.round(Deno.systemMemoryInfo().total / 2 ** 30),
    scratchFs: (await commandOutput("findmnt", ["-no", "FSTYPE,SOURCE", "-T", scratch])).replace(
      /\s+/g,
      " ",
    ) || "unknown",
    fio: (await commandOutput("fio", ["--version"])) || "fio missing",
    deno: Deno.version.deno,
    loadAverage: { start: loadAverage(), end: Number.NaN },
  };
}

function loadAverage(): number {
  try {
    return Number(Deno.readTextFileSync("/proc/loadavg").split(" ")[0]);
  } catch {
    return Number.NaN;
  }
}

/** Runs `work` for each ready target, starting one further along per item so drift hits all. */
function rotated<T>(items: readonly T[], shift: number): T[] {
  if (items.length === 0) return [];
  const s = shift % items.length;
  return [...items.slice(s), ...items.slice(0, s)];
}

class Progress {
  done = 0;
  constructor(readonly total: number) {}

  line(job: string, target: string, measurements: Measurement[], seconds: number): void {
    const main = measurements.find((m) => m.job === job) ?? measurements[0];
    const figure = !main
      ? "no result"
      : main.value === null
      ? `error: ${main.error}`
      : `${formatValue(main.value, main.unit)} ${main.unit}`;
    this.print(job, target, figure, seconds);
  }

  /** One line for a metadata run: every phase's rate, or the first error. */
  metaLine(label: string, target: string, measurements: Measurement[], seconds: number): void {
    const failed = measurements.find((m) => m.value === null);
    const rates = measurements.filter((m) => m.value !== null).map((m) => {
      const phase = m.job.replace(/^meta-(flat|tree)-/, "").replace(/-w\d+$/, "");
      const p = m.details?.proposals_per_op;
      const f = m.details?.fsyncs_per_op;
      // Cluster targets: the store's proposals and fsyncs per operation beside the rate.
      const cost = typeof p === "number" && typeof f === "number"
        ? ` [${p === 0 ? "0" : formatValue(p, "")}p ${f === 0 ? "0" : formatValue(f, "")}f]`
        : "";
      // skyfs: FUSE requests per operation beside the rate.
      const r = m.details?.fuse_requests_per_op;
      const c = m.details?.daemon_cpu_us_per_op;
      const requests =
        (typeof r === "number" ? ` [${r === 0 ? "0" : formatValue(r, "")} req]` : "") +
        (typeof c === "number" ? ` [${c.toFixed(0)} us cpu]` : "") +
        (typeof m.details?.store_cpu_us_per_op === "number"
          ? ` [${m.details.store_cpu_us_per_op.toFixed(0)} us store]`
          : "");
      return `${phase} ${formatValue(m.value!, m.unit)}${cost}${requests}`;
    });
    this.print(
      label,
      target,
      failed ? `error: ${failed.error}` : `${rates.join(", ")} ops/s`,
      seconds,
    );
  }

  private print(job: string, target: string, figure: string, seconds: number): void {
    this.done++;
    const width = String(this.total).length;
    const head = `[${String(this.done).padStart(width)}/${this.total}]`;
    console.log(
      `${head} ${job.padEnd(32)} ${target.padEnd(18)} ${figure} (${seconds.toFixed(1)} s)`,
    );
  }
}

function timestamp(date: Date): string {
  return date.toISOString().replace(/\.\d+Z$/, "Z").replace(/:/g, "-");
}

function chartGroups(run: RunResult, family: string, rows: Measurement[]): ChartGroup[] {
  const baselineName = run.baselines[family] ?? "ext4";
  const columns = baselineName === "ext4"
    ? run.targets.map((t) => t.name)
    : [...new Set(rows.map((m) => m.target))];
  const jobs = [...new Set(rows.map((m) => m.job))];
  const labels = shortLabels(jobs);
  return jobs.map((job, index) => {
    const ofJob = rows.filter((m) => m.job === job);
    const baseline = ofJob.find((m) => m.target === baselineName);
    return {
      label: labels[index],
      bars: columns.map((target) => {
        const m = ofJob.find((x) => x.target === target);
        const state = run.targets.find((t) => t.name === target)?.state;
        return {
          target,
          value: m?.value ?? null,
          ratio: m && m !== baseline ? ratioToBaseline(m, baseline) : null,
          missingLabel: m
            ? "error"
            : state === "unavailable"
            ? "not available"
            : state === "failed"
            ? "failed to mount"
            : "not measured",
        };
      }),
    };
  });
}

async function writeOutputs(run: RunResult, options: Options, stamp: string): Promise<string> {
  await Deno.mkdir(`${options.outDir}/${stamp}`, { recursive: true });
  const jsonPath = `${options.outDir}/${stamp}.json`;
  await Deno.writeTextFile(jsonPath, JSON.stringify(run, null, 2) + "\n");
  for (const [family, rows] of groupByFamily(run.measurements)) {
    const unit = rows[0].unit;
    const svg = barChart(chartGroups(run, family, rows), {
      title: `${family} (${run.mode} run ${run.startedAt})`,
      unit,
      targets: run.baselines[family] && run.baselines[family] !== "ext4"
        ? [...new Set(rows.map((m) => m.target))]
        : run.targets.map((t) => t.name),
      format: (v) => formatValue(v, unit),
    });
    await Deno.writeTextFile(`${options.outDir}/${stamp}/${family}.svg`, svg);
  }
  const markdown = markdownReport(run, { chartDir: stamp });
  await Deno.writeTextFile(`${options.outDir}/${stamp}.md`, markdown);
  return markdown;
}

async function updateReadme(run: RunResult, options: Options, stamp: string): Promise<void> {
  const readmePath = `${REPO_DIR}/README.md`;
  const outRelative = options.outDir.startsWith(`${REPO_DIR}/`)
    ? options.outDir.slice(REPO_DIR.length + 1)
    : null;
  if (outRelative === null) {
    console.log(`bench: README not updated: --out ${options.outDir} is outside the repository`);
    return;
  }
  let readme: string;
  try {
    readme = await Deno.readTextFile(readmePath);
  } catch {
    console.log(`bench: README not updated: ${readmePath} does not exist`);
    return;
  }
  const block = markdownReport(run, { chartDir: `${outRelative}/${stamp}` }) +
    `\nRaw results: [${outRelative}/${stamp}.json](${outRelative}/${stamp}.json)\n`;
  await Deno.writeTextFile(readmePath, replaceReadmeSection(readme, block));
  // `deno fmt --check` (part of `deno task test`) covers README.md: leave it formatted.
  const fmt = await new Deno.Command(Deno.execPath(), {
    args: ["fmt", "--quiet", readmePath],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).output();
  if (fmt.code !== 0) {
    console.log(`bench: deno fmt README.md failed: ${new TextDecoder().decode(fmt.stderr).trim()}`);
  }
  console.log(`bench: README.md Performance section updated from this run`);
}

/** Re-renders the outputs of an earlier run from its raw JSON (after a change to the charts). */
async function render(options: Options, path: string): Promise<number> {
  const run = JSON.parse(await Deno.readTextFile(path)) as RunResult;
  if (run.formatVersion !== 1) fail(`${path}: unknown formatVersion ${run.formatVersion}`);
  const stamp = path.replace(/^.*\//, "").replace(/\.json$/, "");
  const outDir = path.includes("/") ? path.slice(0, path.lastIndexOf("/")) : ".";
  const resolved = {
    ...options,
    outDir: outDir.startsWith("/") ? outDir : `${Deno.cwd()}/${outDir}`,
  };
  await writeOutputs(run, resolved, stamp);
  console.log(
    `bench: rewrote ${resolved.outDir}/${stamp}.md and ${resolved.outDir}/${stamp}/*.svg`,
  );
  if (run.mode === "full" && options.readme) await updateReadme(run, resolved, stamp);
  return 0;
}

async function main(): Promise<number> {
  const options = parseOptions(Deno.args);
  if (options.render) return await render(options, options.render);
  const settings = MODE_SETTINGS[options.mode];
  // Tiny runs only prove the harness works, so one job per job file and engine is enough.
  const fioJobs: FioJob[] = [
    ...(options.families.includes("fio") ? coreJobs() : []),
    ...(options.families.includes("datenlord") ? datenlordJobs() : []),
  ].filter((job) => options.mode !== "tiny" || job.numjobs === 1 || job.kind === "sweep");
  if (options.list) {
    for (const job of fioJobs) console.log(`${job.family.padEnd(24)} ${job.name}`);
    if (options.families.includes("meta")) {
      for (const run of META_RUNS) {
        console.log(`${`meta-${run.layout}`.padEnd(24)} workers=${run.workers}`);
      }
    }
    if (options.families.includes("io")) console.log(`${"io".padEnd(24)} bench/io/main.ts`);
    if (options.families.includes("cluster")) {
      console.log(`${"cluster".padEnd(24)} bench/cluster/main.ts`);
    }
    return 0;
  }

  const startedAt = new Date();
  const stamp = timestamp(startedAt) + (options.mode === "full" ? "" : `-${options.mode}`);
  const skippedFamilies: RunResult["skippedFamilies"] = [];
  const measurements: Measurement[] = [];
  const baselines: Record<string, string> = {};
  const isRoot = Deno.uid() === 0;

  await Deno.mkdir(options.scratch, { recursive: true });
  const machine = await machineInfo(options.scratch);
  const tmpDir = await Deno.makeTempDir({ prefix: "skyfs-bench-fio-" });
  const ready: ReadyTarget[] = [];
  const reports = new Map<TargetName, TargetReport>();

  let stopping = false;
  let cleaning: Promise<void> | null = null;
  let settingUp: ReturnType<typeof setUpTarget> | null = null;
  let uringSwitch: UringSwitch | null = null;
  // One clean-up for both ways out (normal end, signal); a second call waits for the first.
  const cleanUp = (): Promise<void> => {
    cleaning ??= (async () => {
      try {
        await killAllTracked();
        // A target still starting (a cluster's replicas and mounts) is torn down once it is up.
        const starting = settingUp;
        if (starting) {
          const target = await starting.catch(() => undefined);
          if (target && !ready.includes(target)) ready.push(target);
        }
        for (const target of [...ready].reverse()) {
          try {
            await target.tearDown();
          } catch (error) {
            console.error(`bench: tearing down ${target.name}: ${error}`);
          }
        }
        ready.length = 0;
        // Whatever a failed tear-down left mounted under the scratch directory (a cluster's mounts
        // included), deepest first, so that removing the directory cannot reach into a mount.
        const leftOver = mountPoints(await Deno.readTextFile("/proc/self/mountinfo"))
          .filter((path) => path.startsWith(`${options.scratch}/`)).sort().reverse();
        for (const path of leftOver) if (isMounted(path)) await forceUnmount(path);
      } finally {
        // After the tear-downs (a mount on the ring fails the moment the switch goes off), and
        // also when one of them threw.
        const restored = uringSwitch?.restore();
        if (restored) console.log(restored);
      }
      if (!options.keepScratch) {
        await Deno.remove(options.scratch, { recursive: true }).catch(() => {});
      }
      await Deno.remove(tmpDir, { recursive: true }).catch(() => {});
    })();
    return cleaning;
  };
  const onSignal = () => {
    if (stopping) return;
    stopping = true;
    console.error("bench: interrupted; stopping jobs and unmounting targets");
    cleanUp().finally(() => Deno.exit(130));
  };
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);

  // An error that escapes a job (a bug here) must not leave mounts and daemons behind.
  try {
    console.log(
      `bench: ${options.mode} run, families ${options.families.join(",")}, ` +
        `targets ${options.targets.join(",")}, scratch ${options.scratch}`,
    );
    // Every skyfs mount of the run but skyfs-uring's is on /dev/fuse, whatever the kernel offers:
    // the targets say so by flag or option (bench/targets.ts), and every process the run starts
    // (the io, cluster, wan and zones families' mounts) inherits fuse.transport = dev.
    // A cluster mount on the ring was measured no cheaper than on /dev/fuse (src/cluster/README.md,
    // "Session 16: a cluster mount on FUSE over io_uring"), so the cluster targets stay on dev.
    Deno.env.set("SKYFS_FUSE_TRANSPORT", "dev");
    if (options.targets.includes("skyfs-uring")) {
      uringSwitch = turnOnUring(undefined, options.noUringSwitch);
      if (uringSwitch.changed) {
        console.log(
          `bench: turned the kernel's FUSE over io_uring on for this run (enable_uring was ` +
            `${uringSwitch.before}; put back at the end)`,
        );
      }
    }
    for (const name of options.targets) {
      if (stopping) break;
      try {
        settingUp = setUpTarget(name, options.scratch, {
          uringUnavailable: uringSwitch?.unavailable,
        });
        const target = await settingUp;
        settingUp = null;
        if (stopping) break; // the clean-up took it
        ready.push(target);
        reports.set(name, target.report);
        console.log(`bench: target ${name}: ready (${target.report.command})`);
      } catch (error) {
        const report: TargetReport = error instanceof TargetSkipped
          ? { name, state: error.state, reason: error.message, command: error.command }
          : { name, state: "failed", reason: `failed to mount: ${error}` };
        reports.set(name, report);
        console.log(`bench: target ${name}: ${report.reason}`);
      }
    }

    const fioMissing = !commandExists("fio");
    if (fioJobs.length > 0 && fioMissing) {
      skippedFamilies.push({
        family: "fio",
        reason: "fio is not installed; run: apt-get install fio (or deno task setup)",
      });
    }
    const runFioFamilies = fioJobs.length > 0 && !fioMissing;
    let metaBinary: string | null = null;
    if (options.families.includes("meta")) {
      try {
        metaBinary = await buildMetaWorker();
      } catch (error) {
        skippedFamilies.push({
          family: "meta",
          reason: String(error instanceof Error ? error.message : error),
        });
      }
    }
    const total = ready.length *
      ((runFioFamilies ? fioJobs.length : 0) + (metaBinary ? META_RUNS.length : 0));
    const progress = new Progress(total);
    const jobTimeoutMs = Math.max(20_000, 6 * fioTimeMs(settings.runtime) + 20_000);

    const shimTotals = { jobs: 0, reads: 0, writes: 0, gib: 0 };
    if (runFioFamilies) {
      const laidOut = new Set<string>();
      for (const [index, job] of fioJobs.entries()) {
        for (const target of rotated(ready, index)) {
          if (stopping) return await cleanUp().then(() => 130);
          const runOptions = {
            dir: target.dir,
            settings,
            env: target.env,
            timeoutMs: jobTimeoutMs,
            tmpDir,
            fioArgs: target.fioArgs,
          };
          const started = performance.now();
          let results: Measurement[];
          if (job.kind === "read" && !laidOut.has(target.name)) {
            try {
              await layoutReadFiles(runOptions);
              laidOut.add(target.name);
            } catch (error) {
              console.log(`bench: laying out read files on ${target.name} failed: ${error}`);
            }
          }
          if (job.kind === "read" && !laidOut.has(target.name)) {
            results = [{
              family: job.family,
              job: job.name,
              target: target.name,
              unit: job.metric === "bw" ? "MiB/s" : "IOPS",
              value: null,
              higherIsBetter: true,
              error: "read files could not be laid out",
            }];
          } else {
            await target.takeShimCounters?.(); // the layout and earlier processes are not this job
            results = await runFioJob(job, target.name, runOptions);
            // Proof that the shim served this job in-process (io_uring jobs pass through: zero).
            const counters = await target.takeShimCounters?.();
            if (counters) {
              for (const result of results) {
                for (const [key, value] of Object.entries(counters)) {
                  result.details = { ...result.details, [`shim_${key}`]: value };
                }
              }
              shimTotals.jobs++;
              shimTotals.reads += counters.reads ?? 0;
              shimTotals.writes += counters.writes ?? 0;
              shimTotals.gib += ((counters.bytes_read ?? 0) + (counters.bytes_written ?? 0)) /
                2 ** 30;
            }
          }
          measurements.push(...results);
          progress.line(job.name, target.name, results, (performance.now() - started) / 1000);
        }
      }
    }

    if (shimTotals.jobs > 0) {
      console.log(
        `bench: skyfs-shim: the shim served ${shimTotals.reads} reads and ${shimTotals.writes} ` +
          `writes (${shimTotals.gib.toFixed(2)} GiB) in-process over ${shimTotals.jobs} fio jobs ` +
          "(SKYFS_PRELOAD_STATS; per job: shim_* in the raw JSON)",
      );
    }

    if (metaBinary) {
      for (const [index, run] of META_RUNS.entries()) {
        for (const target of rotated(ready, index)) {
          if (stopping) return await cleanUp().then(() => 130);
          const started = performance.now();
          const results = await runMeta(run, target.name, {
            binary: metaBinary,
            dir: target.dir,
            files: CLUSTER_TARGETS.includes(target.name)
              ? settings.clusterMetaFiles
              : settings.metaFiles,
            fileBytes: settings.metaFileBytes,
            dropCaches: isRoot,
            env: target.env,
            timeoutMs: options.mode === "full" ? 300_000 : 120_000,
            storeCounters: target.storeCounters,
            fuseRequests: target.fuseRequests,
            daemonCpuSeconds: target.daemonCpuSeconds,
            storeCpuSeconds: target.storeCpuSeconds,
          });
          measurements.push(...results);
          const seconds = (performance.now() - started) / 1000;
          progress.metaLine(`meta-${run.layout}-w${run.workers}`, target.name, results, seconds);
        }
      }
      if (!isRoot) {
        skippedFamilies.push({ family: "meta stat-cold", reason: "needs root to drop caches" });
      }
    }

    if (options.families.includes("io")) {
      console.log("bench: io family: bench/io/main.ts");
      try {
        const io = await runIoFamily(`${options.scratch}/io`, options.mode, {
          jsonPath: `${tmpDir}/io.json`,
          timeoutMs: options.mode === "full" ? 600_000 : 150_000,
        });
        for (const family of new Set(io.measurements.map((m) => m.family))) {
          baselines[family] = io.baseline;
        }
        measurements.push(...io.measurements);
      } catch (error) {
        const reason = error instanceof Error ? error.message : String(error);
        skippedFamilies.push({ family: "io", reason });
        console.log(`bench: io family: ${reason}`);
      }
    }

    if (options.families.includes("cluster")) {
      // Cluster read paths (src/cluster/README.md); targets are paths, loopback TCP the baseline.
      console.log("bench: cluster family: bench/cluster/main.ts");
      try {
        const cluster = await runClusterFamily(options.mode, {
          jsonPath: `${tmpDir}/cluster.json`,
          timeoutMs: options.mode === "full" ? 600_000 : 150_000,
        });
        baselines.cluster = cluster.baseline;
        measurements.push(...cluster.measurements);
      } catch (error) {
        const reason = error instanceof Error ? error.message : String(error);
        skippedFamilies.push({ family: "cluster", reason });
        console.log(`bench: cluster family: ${reason}`);
      }
    }

    if (options.families.includes("wan")) {
      // CURP beside etcd behind WAN delay proxies (src/meta/curp/README.md); targets are systems.
      console.log("bench: wan family: bench/meta_wan/main.ts");
      try {
        const wan = await runWanFamily(options.mode, {
          jsonPath: `${tmpDir}/wan.json`,
          timeoutMs: options.mode === "full" ? 900_000 : 300_000,
        });
        baselines.wan = wan.baseline;
        measurements.push(...wan.measurements);
      } catch (error) {
        const reason = error instanceof Error ? error.message : String(error);
        skippedFamilies.push({ family: "wan", reason });
        console.log(`bench: wan family: ${reason}`);
      }
    }

    if (options.families.includes("zones")) {
      // 3 emulated zones, CURP and etcd: operations in WAN round trips (bench/zones/main.ts).
      console.log("bench: zones family: bench/zones/main.ts");
      try {
        const zones = await runZonesFamily(options.mode, {
          jsonPath: `${tmpDir}/zones.json`,
          timeoutMs: options.mode === "full" ? 900_000 : 300_000,
        });
        baselines.zones = zones.baseline;
        measurements.push(...zones.measurements);
      } catch (error) {
        const reason = error instanceof Error ? error.message : String(error);
        skippedFamilies.push({ family: "zones", reason });
        console.log(`bench: zones family: ${reason}`);
      }
    }

    if (machine.loadAverage) machine.loadAverage.end = loadAverage();
  } finally {
    await cleanUp();
  }

  const run: RunResult = {
    formatVersion: 1,
    startedAt: startedAt.toISOString(),
    finishedAt: new Date().toISOString(),
    mode: options.mode,
    command: ["deno task bench", ...Deno.args].join(" "),
    machine,
    targets: options.targets.map((name) => reports.get(name)!),
    skippedFamilies,
    baselines,
    measurements,
  };
  const markdown = await writeOutputs(run, options, stamp);
  console.log("\n" + markdown);
  console.log(`bench: raw results ${options.outDir}/${stamp}.json`);
  console.log(
    `bench: table ${options.outDir}/${stamp}.md, charts ${options.outDir}/${stamp}/*.svg`,
  );
  if (options.mode === "full" && options.readme) await updateReadme(run, options, stamp);

  const measuredTargets = run.targets.filter((t) => t.state === "ok");
  if (measuredTargets.length === 0) {
    console.error("bench: no target could be measured");
    return 1;
  }
  if (options.strict) {
    const problems = run.targets.filter((t) => t.state !== "ok").length +
      measurements.filter((m) => m.value === null).length + skippedFamilies.length;
    if (problems > 0) {
      console.error(`bench: --strict: ${problems} target(s), job(s) or families were not measured`);
      return 1;
    }
  }
  return 0;
}

if (import.meta.main) {
  Deno.exit(await main());
}
