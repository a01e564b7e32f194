/**
 * Turns a run's raw results into the markdown that people read: tables in which every figure also
 * appears as a ratio to the family's baseline (ext4 unless the family says otherwise).
 * @module
 */
import { formatRatio, formatValue } from "./format.ts";
import type { Measurement, RunResult } from "./model.ts";

/** Families in first-seen order with their measurements. */
export function groupByFamily(measurements: readonly Measurement[]): Map<string, Measurement[]> {
  const families = new Map<string, Measurement[]>();
  for (const m of measurements) {
    const list = families.get(m.family) ?? [];
    list.push(m);
    families.set(m.family, list);
  }
  return families;
}

/**
 * Chart labels for a family's jobs: the dash-separated words that every job name starts with are
 * dropped ("rand-read-4k-uring-qd32-j1-warm" -> "j1-warm"), unless that would empty a label.
 */
export function shortLabels(jobs: readonly string[]): string[] {
  if (jobs.length < 2) return [...jobs];
  const words = jobs.map((job) => job.split("-"));
  let common = 0;
  while (words.every((w) => common < w.length - 1 && w[common] === words[0][common])) common++;
  return words.map((w) => w.slice(common).join("-"));
}

/** A family's columns: for file-system families the run's targets, else targets as first seen. */
export function familyColumns(run: RunResult, family: string, rows: Measurement[]): string[] {
  const baseline = run.baselines[family] ?? "ext4";
  if (baseline === "ext4") return run.targets.map((t) => t.name);
  const seen: string[] = [];
  for (const m of rows) if (!seen.includes(m.target)) seen.push(m.target);
  return seen;
}

/** Ratio of one measurement to its job's baseline measurement, or null when either is missing. */
export function ratioToBaseline(
  m: Measurement,
  baseline: Measurement | undefined,
): number | null {
  if (m.value === null || !baseline || baseline.value === null || baseline.value === 0) return null;
  return m.higherIsBetter ? m.value / baseline.value : baseline.value / m.value;
}

function cell(m: Measurement, baseline: Measurement | undefined): string {
  if (m.value === null) return "error";
  const text = formatValue(m.value, m.unit);
  if (!baseline || baseline === m) return text;
  const ratio = ratioToBaseline(m, baseline);
  return ratio === null ? text : `${text} (${formatRatio(ratio)})`;
}

/** One markdown table per family (rows: jobs; columns: targets). */
export function familyTable(run: RunResult, family: string, rows: Measurement[]): string {
  const columns = familyColumns(run, family, rows);
  const baselineName = run.baselines[family] ?? "ext4";
  const jobs = [...new Set(rows.map((m) => m.job))];
  const lines = [
    `| ${family} | unit | ${columns.join(" | ")} |`,
    `|---|---|${columns.map(() => "--:").join("|")}|`,
  ];
  for (const job of jobs) {
    const ofJob = rows.filter((m) => m.job === job);
    const baseline = ofJob.find((m) => m.target === baselineName);
    const unit = ofJob[0].unit;
    const cells = columns.map((column) => {
      const m = ofJob.find((x) => x.target === column);
      if (!m) {
        const target = run.targets.find((t) => t.name === column);
        return target && target.state !== "ok" ? "—" : "";
      }
      return cell(m, baseline);
    });
    lines.push(`| ${job} | ${unit} | ${cells.join(" | ")} |`);
  }
  return lines.join("\n");
}

/** The single-node target that cluster rows are also compared with (issue 13's goal: 0.3x). */
export const SINGLE_NODE_TARGET = "skyfs";

/** Targets (in column order) whose rows of a family carry the metadata store's cost. */
function costColumns(run: RunResult, rows: Measurement[]): string[] {
  return run.targets.map((t) => t.name).filter((name) =>
    rows.some((m) =>
      m.target === name &&
      (m.details?.proposals_per_op !== undefined || m.details?.store_note !== undefined)
    )
  );
}

/** A CPU figure per operation (us) for a table cell: "" when absent. */
function cpuCell(value: unknown): string {
  return typeof value === "number" ? (value >= 100 ? value.toFixed(0) : value.toFixed(1)) : "";
}

/**
 * The cluster targets' side table of a metadata family: each row's rate, its ratio to single-node
 * skyfs in the same run, what one file operation cost the metadata store (proposals and fsyncs
 * per operation, from details written by store_counters.ts `perOperation`) and the CPU it cost
 * the measured mount's daemon (`daemon_cpu_us_per_op`) and the store's processes summed
 * (`store_cpu_us_per_op`: the three CURP replicas, or etcd). Empty when no target of the family
 * reported them.
 */
export function storeCostTable(run: RunResult, family: string, rows: Measurement[]): string {
  const columns = costColumns(run, rows);
  if (columns.length === 0) return "";
  const jobs = [...new Set(rows.map((m) => m.job))];
  const header = columns.flatMap((c) => [
    `${c} ops/s`,
    `÷ ${SINGLE_NODE_TARGET}`,
    "proposals/op",
    "fsyncs/op",
    "mount CPU us/op",
    "store CPU us/op",
  ]);
  const lines = [
    `| ${family}: cluster cost | ${header.join(" | ")} |`,
    `|---|${header.map(() => "--:").join("|")}|`,
  ];
  const perOp = (m: Measurement | undefined, key: string): string => {
    const value = m?.details?.[key];
    if (typeof value !== "number") return m?.details?.store_note !== undefined ? "?" : "";
    const text = value === 0 ? "0" : formatValue(value, "");
    return text + (m?.details?.store_note !== undefined ? "*" : "");
  };
  for (const job of jobs) {
    const ofJob = rows.filter((m) => m.job === job);
    const single = ofJob.find((m) => m.target === SINGLE_NODE_TARGET);
    const cells = columns.flatMap((column) => {
      const m = ofJob.find((x) => x.target === column);
      if (!m) return ["", "", "", "", "", ""];
      const ratio = ratioToBaseline(m, single);
      return [
        m.value === null ? "error" : formatValue(m.value, m.unit),
        ratio === null ? "" : formatRatio(ratio),
        perOp(m, "proposals_per_op"),
        perOp(m, "fsyncs_per_op"),
        cpuCell(m.details?.daemon_cpu_us_per_op),
        cpuCell(m.details?.store_cpu_us_per_op),
      ];
    });
    lines.push(`| ${job} | ${cells.join(" | ")} |`);
  }
  return lines.join("\n");
}

/**
 * What one file operation of a metadata family's rows cost the FUSE targets that report it: the
 * daemon's CPU time (all its threads, from /proc around each phase: a figure the machine's other
 * load moves far less than the rates), and for `skyfs` the FUSE requests (from its /metrics),
 * total and per opcode, e.g. "lookup 1, create 1, flush 1". Empty when no target reported them.
 */
export function fuseRequestTable(run: RunResult, family: string, rows: Measurement[]): string {
  const has = (name: string, key: string) =>
    rows.some((m) => m.target === name && typeof m.details?.[key] === "number");
  // Cluster targets' mount CPU is in their cluster cost table, beside the store's.
  const cluster = costColumns(run, rows);
  const columns = run.targets.map((t) => t.name).filter((name) =>
    !cluster.includes(name) &&
    (has(name, "fuse_requests_per_op") || has(name, "daemon_cpu_us_per_op"))
  );
  if (columns.length === 0) return "";
  const jobs = [...new Set(rows.map((m) => m.job))];
  const header = columns.flatMap((c) =>
    has(c, "fuse_requests_per_op")
      ? [`${c} CPU us/op`, `${c} requests/op`, "by opcode"]
      : [`${c} CPU us/op`]
  );
  const lines = [
    `| ${family}: daemon cost | ${header.join(" | ")} |`,
    `|---|${header.map((h) => h === "by opcode" ? "---" : "--:").join("|")}|`,
  ];
  const round = (n: number) => n === 0 ? "0" : n >= 10 ? n.toFixed(0) : n.toPrecision(2);
  for (const job of jobs) {
    const cells = columns.flatMap((column) => {
      const m = rows.find((x) => x.job === job && x.target === column);
      const cpu = m?.details?.daemon_cpu_us_per_op;
      const cpuCell = typeof cpu === "number" ? cpu.toFixed(1) : "";
      if (!has(column, "fuse_requests_per_op")) return [cpuCell];
      const total = m?.details?.fuse_requests_per_op;
      if (typeof total !== "number") return [cpuCell, "", ""];
      const parts = Object.entries(m!.details!)
        .filter(([key, value]) =>
          key.startsWith("fuse_") && key.endsWith("_per_op") && key !== "fuse_requests_per_op" &&
          typeof value === "number" &&
          value >= 0.01
        )
        .sort((a, b) => (b[1] as number) - (a[1] as number))
        .map(([key, value]) => `${key.slice(5, -7)} ${round(value as number)}`);
      return [cpuCell, round(total), parts.join(", ")];
    });
    lines.push(`| ${job} | ${cells.join(" | ")} |`);
  }
  return lines.join("\n");
}

/** The phase of a metadata job: "meta-flat-stat-cold-w4" -> "stat-cold". */
export function metaPhase(job: string): string {
  return job.replace(/^meta-[a-z]+-/, "").replace(/-w\d+$/, "");
}

/** One condition of a goal: the row's ratio to `target` must be at least `atLeast`. */
export interface GoalCondition {
  target: string;
  atLeast: number;
}

/**
 * Issue 17's goal for a metadata row of single-node skyfs, by its phase: at or above bindfs
 * everywhere; create and rename at 2x bindfs; stat, open+close and readdir also at 0.5x ext4.
 */
export function singleNodeGoal(job: string): { text: string; conditions: GoalCondition[] } {
  const phase = metaPhase(job);
  if (phase === "create" || phase === "rename") {
    return { text: "≥ 2x bindfs", conditions: [{ target: "bindfs", atLeast: 2 }] };
  }
  if (["stat", "stat-cold", "open-close", "readdir"].includes(phase)) {
    return {
      text: "≥ bindfs, ≥ 0.5x ext4",
      conditions: [{ target: "bindfs", atLeast: 1 }, { target: "ext4", atLeast: 0.5 }],
    };
  }
  return { text: "≥ bindfs", conditions: [{ target: "bindfs", atLeast: 1 }] };
}

/** Issue 13's goal for a cluster row: 0.3x of single-node skyfs in the same run. */
export const CLUSTER_GOAL = 0.3;

/** Whether measured ratios meet their thresholds: "no" when one known ratio falls short, "?" when
 * none does but one is unknown (a target not measured), else "yes". */
export function goalMet(checks: readonly { ratio: number | null; atLeast: number }[]): string {
  if (checks.some((c) => c.ratio !== null && c.ratio < c.atLeast)) return "no";
  if (checks.some((c) => c.ratio === null)) return "?";
  return "yes";
}

function ratioCell(ratio: number | null): string {
  return ratio === null ? "" : formatRatio(ratio);
}

function requestsCell(value: unknown): string {
  return typeof value === "number" ? (value === 0 ? "0" : formatValue(value, "")) : "";
}

/**
 * Issue 17's goals for a metadata family, one row per job: the goal, skyfs's measured ratios to
 * bindfs and ext4, met or not, and what stands in the way side by side: the CPU one operation
 * cost the skyfs and bindfs daemons, and the FUSE requests skyfs answered for it. Generated from
 * the run's measurements; empty when the family has no skyfs row (not a metadata family).
 */
export function singleNodeGoalTable(family: string, rows: Measurement[]): string {
  if (!family.startsWith("meta-")) return "";
  const jobs = [...new Set(rows.map((m) => m.job))].filter((job) =>
    rows.some((m) => m.job === job && m.target === SINGLE_NODE_TARGET)
  );
  if (jobs.length === 0) return "";
  const lines: string[] = [];
  let met = 0;
  for (const job of jobs) {
    const ofJob = rows.filter((m) => m.job === job);
    const find = (target: string) => ofJob.find((m) => m.target === target);
    const skyfs = find(SINGLE_NODE_TARGET)!;
    const goal = singleNodeGoal(job);
    const ratio = (target: string) =>
      skyfs.value === null ? null : ratioToBaseline(skyfs, find(target));
    const verdict = goalMet(
      goal.conditions.map((c) => ({ ratio: ratio(c.target), atLeast: c.atLeast })),
    );
    if (verdict === "yes") met++;
    lines.push(
      `| ${job} | ${goal.text} | ${ratioCell(ratio("bindfs"))} | ${ratioCell(ratio("ext4"))} | ` +
        `${verdict} | ${cpuCell(skyfs.details?.daemon_cpu_us_per_op)} | ` +
        `${cpuCell(find("bindfs")?.details?.daemon_cpu_us_per_op)} | ` +
        `${requestsCell(skyfs.details?.fuse_requests_per_op)} |`,
    );
  }
  return [
    `Issue 17 in ${family}: ${SINGLE_NODE_TARGET} meets its goal in ${met} of ${jobs.length} rows.`,
    "",
    `| ${family}: issue 17 | goal | ÷ bindfs | ÷ ext4 | met | ${SINGLE_NODE_TARGET} CPU us/op | ` +
    "bindfs CPU us/op | requests/op |",
    "|---|---|--:|--:|---|--:|--:|--:|",
    ...lines,
  ].join("\n");
}

/**
 * Issue 13's goals for a metadata family, one row per job and cluster target: the ratio to
 * single-node skyfs, met or not (0.3x), and what stands in the way side by side: proposals and
 * fsyncs per operation, the CPU one operation cost the cluster's mount and its store's processes,
 * and single-node skyfs's daemon CPU for the same operation. Empty when no cluster target
 * reported store costs.
 */
export function clusterGoalTable(run: RunResult, family: string, rows: Measurement[]): string {
  const columns = costColumns(run, rows);
  if (columns.length === 0) return "";
  const jobs = [...new Set(rows.map((m) => m.job))];
  const lines: string[] = [];
  const met = new Map<string, number>(columns.map((c) => [c, 0]));
  const perOp = (m: Measurement, key: string) =>
    typeof m.details?.[key] === "number" ? requestsCell(m.details[key]) : "";
  for (const job of jobs) {
    const ofJob = rows.filter((m) => m.job === job);
    const single = ofJob.find((m) => m.target === SINGLE_NODE_TARGET);
    for (const column of columns) {
      const m = ofJob.find((x) => x.target === column);
      if (!m) continue;
      const ratio = m.value === null ? null : ratioToBaseline(m, single);
      const verdict = goalMet([{ ratio, atLeast: CLUSTER_GOAL }]);
      if (verdict === "yes") met.set(column, met.get(column)! + 1);
      lines.push(
        `| ${job} | ${column} | ${ratioCell(ratio)} | ${verdict} | ` +
          `${perOp(m, "proposals_per_op")} | ${perOp(m, "fsyncs_per_op")} | ` +
          `${cpuCell(m.details?.daemon_cpu_us_per_op)} | ` +
          `${cpuCell(m.details?.store_cpu_us_per_op)} | ` +
          `${cpuCell(single?.details?.daemon_cpu_us_per_op)} |`,
      );
    }
  }
  const summary = columns.map((c) =>
    `${c} in ${met.get(c)} of ${rows.filter((m) => m.target === c).length} rows`
  ).join(", ");
  return [
    `Issue 13 in ${family} (goal: ${formatRatio(CLUSTER_GOAL)} of ${SINGLE_NODE_TARGET} or ` +
    `better): met by ${summary}.`,
    "",
    `| ${family}: issue 13 | target | ÷ ${SINGLE_NODE_TARGET} | met | proposals/op | fsyncs/op | ` +
    `mount CPU us/op | store CPU us/op | ${SINGLE_NODE_TARGET} CPU us/op |`,
    "|---|---|--:|---|--:|--:|--:|--:|--:|",
    ...lines,
  ].join("\n");
}

/** What the cost tables mean and how many files each target's runs had, in one paragraph. */
function costLegend(run: RunResult): string {
  const files = new Map<string, number>();
  for (const m of run.measurements) {
    if (typeof m.details?.files === "number") files.set(m.target, m.details.files);
  }
  const counts = [...new Set(files.values())].map((n) =>
    `${[...files].filter(([, f]) => f === n).map(([t]) => t).join(", ")}: ${n}`
  );
  return "Cluster cost tables: proposals/op = log entries the CURP leader appended (etcd: " +
    "proposals committed) during the phase, per file operation; fsyncs/op = fdatasync/fsync " +
    "calls of all replicas together (etcd: WAL fsyncs), per file operation; mount CPU us/op = " +
    "CPU time of the measured mount's daemon, store CPU us/op = CPU time of the store's " +
    "processes summed (the three CURP replicas, or etcd), both all threads from schedstat, per " +
    `file operation, on a machine of ${run.machine.cpus} cores. All include the ` +
    "cluster's upkeep during the phase (both mounts' membership leases and watches; a CURP " +
    "lease renewal is a log entry, etcd renews without a proposal); * = see " +
    `notes. ÷ ${SINGLE_NODE_TARGET} = rate over single-node ${SINGLE_NODE_TARGET} in this run ` +
    "(issue 13's goal: 0.3x or better)." +
    (counts.length > 1 ? ` Files per metadata run: ${counts.join("; ")}.` : "");
}

/** Lines explaining every target that was not measured and every job that failed. */
export function notes(run: RunResult): string[] {
  const lines: string[] = [];
  for (const t of run.targets) {
    if (t.state === "failed" || t.state === "unavailable") lines.push(`- ${t.name}: ${t.reason}`);
  }
  for (const s of run.skippedFamilies) lines.push(`- ${s.family}: ${s.reason}`);
  for (const m of run.measurements) {
    if (m.value === null) lines.push(`- ${m.job} on ${m.target}: ${m.error ?? "failed"}`);
    else if (m.details?.store_note !== undefined) {
      lines.push(`- ${m.job} on ${m.target}, store counters: ${m.details.store_note}`);
    }
  }
  return lines;
}

/** The full markdown report: header, one table per family, chart links and notes. */
export function markdownReport(
  run: RunResult,
  options: { chartDir?: string; heading?: string } = {},
): string {
  const { machine } = run;
  const out: string[] = [];
  if (options.heading) out.push(options.heading, "");
  out.push(
    `Run ${run.startedAt} (${run.mode} mode): \`${run.command}\``,
    "",
    `Machine: ${machine.cpus} x ${machine.cpu}, ${machine.memoryGiB} GiB, Linux ${machine.kernel}, ` +
      `scratch on ${machine.scratchFs}, ${machine.fio}, deno ${machine.deno}` +
      (machine.loadAverage
        ? `; load average ${machine.loadAverage.start} at the start, ${machine.loadAverage.end} ` +
          `at the end (other work on the machine skews figures)`
        : "") +
      ".",
    "",
    "Each cell: figure (ratio to the row's baseline, ext4 unless the table says otherwise; " +
      "above 1x is better than the baseline). — = target not measured, see notes.",
    "",
  );
  let legend = false;
  for (const [family, rows] of groupByFamily(run.measurements)) {
    const baseline = run.baselines[family] ?? "ext4";
    if (baseline !== "ext4") out.push(`Baseline for ${family}: ${baseline}.`, "");
    out.push(familyTable(run, family, rows), "");
    const costs = storeCostTable(run, family, rows);
    if (costs !== "") {
      if (!legend) out.push(costLegend(run), "");
      legend = true;
      out.push(costs, "");
    }
    const requests = fuseRequestTable(run, family, rows);
    if (requests !== "") out.push(requests, "");
    const singleGoals = singleNodeGoalTable(family, rows);
    if (singleGoals !== "") out.push(singleGoals, "");
    const clusterGoals = clusterGoalTable(run, family, rows);
    if (clusterGoals !== "") out.push(clusterGoals, "");
    if (options.chartDir !== undefined) {
      out.push(`![${family}](${options.chartDir}/${family}.svg)`, "");
    }
  }
  const endpoint = endpointCostTable(run);
  if (endpoint !== "") out.push(endpoint, "");
  const noteLines = notes(run);
  if (noteLines.length > 0) out.push("Notes:", "", ...noteLines, "");
  const mounted = run.targets.filter((t) => t.command);
  if (mounted.length > 0) {
    out.push("Targets as mounted:", "");
    for (const t of mounted) out.push(`- ${t.name}: \`${t.command}\``);
    out.push("");
  }
  return out.join("\n");
}

/** The endpoint's cost: `skyfs` (HTTP endpoint on, /metrics fetched every second) against
 * `skyfs-http-off` (the same mount with `--http off`), per job; the geometric mean in the title. */
export function endpointCostRatios(run: RunResult): { job: string; ratio: number }[] {
  const out: { job: string; ratio: number }[] = [];
  for (const m of run.measurements) {
    if (m.target !== "skyfs") continue;
    const off = run.measurements.find((o) => o.job === m.job && o.target === "skyfs-http-off");
    const ratio = ratioToBaseline(m, off);
    if (ratio !== null) out.push({ job: m.job, ratio });
  }
  return out;
}

export function endpointCostTable(run: RunResult): string {
  const ratios = endpointCostRatios(run);
  if (ratios.length === 0) return "";
  const mean = Math.exp(ratios.reduce((a, r) => a + Math.log(r.ratio), 0) / ratios.length);
  const sorted = ratios.map((r) => r.ratio).sort((a, b) => a - b);
  const lines = [
    `Cost of the HTTP endpoint: \`skyfs\` (endpoint on, /metrics fetched every 1 s) against ` +
    `\`skyfs-http-off\` (\`--http off\`), ${ratios.length} jobs: geometric mean ` +
    `${formatRatio(mean)}, range ${formatRatio(sorted[0])}-${
      formatRatio(sorted[sorted.length - 1])
    } (above 1x: faster with the endpoint on; run-to-run noise on this machine is larger than ` +
    `the goal of 3%).`,
    "",
    "| job | endpoint on / off |",
    "| --- | ---: |",
    ...ratios.map((r) => `| ${r.job} | ${formatRatio(r.ratio)} |`),
  ];
  return lines.join("\n");
}

export const README_START = "<!-- bench:start -->";
export const README_END = "<!-- bench:end -->";

/** Replaces the text between the README's bench markers; throws when the markers are missing. */
export function replaceReadmeSection(readme: string, block: string): string {
  const start = readme.indexOf(README_START);
  const end = readme.indexOf(README_END);
  if (start < 0 || end < start) {
    throw new Error(
      `README has no "${README_START}" ... "${README_END}" markers; add them to the Performance section`,
    );
  }
  return readme.slice(0, start + README_START.length) + "\n" + block.trimEnd() + "\n" +
    readme.slice(end);
}
