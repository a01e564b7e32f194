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

/**
 * The cluster targets' side table of a metadata family: each row's rate, its ratio to single-node
 * skyfs in the same run, and what one file operation cost the metadata store (proposals and
 * fsyncs per operation, from details written by store_counters.ts `perOperation`). Empty when no
 * target of the family reported them.
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
      if (!m) return ["", "", "", ""];
      const ratio = ratioToBaseline(m, single);
      return [
        m.value === null ? "error" : formatValue(m.value, m.unit),
        ratio === null ? "" : formatRatio(ratio),
        perOp(m, "proposals_per_op"),
        perOp(m, "fsyncs_per_op"),
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
  const columns = run.targets.map((t) => t.name).filter((name) =>
    has(name, "fuse_requests_per_op") || has(name, "daemon_cpu_us_per_op")
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
    "calls of all replicas together (etcd: WAL fsyncs), per file operation. Both include the " +
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
