/**
 * `skyfs stats TARGET`: a per-second terminal view of one daemon, in the manner of dstat and
 * `juicefs stats`. It scrapes the daemon's `/metrics` every interval and prints one line of
 * rates (FUSE operations and latency, bytes through the daemon, metadata transactions and their
 * latency, the CURP fast-path share, cache hit ratio and bytes by tier, backend requests, CPU and
 * memory) in columns that fit 100 characters, with the header again every `headerEvery` lines.
 * TARGET is a mount point (its address is found through endpoint_file.ts) or HOST:PORT.
 * @module
 */

import { type Figures, rates, type Snapshot, snapshotOf } from "./figures.ts";
import { findEndpoint } from "./endpoint_file.ts";

/** Bad input or an unreachable endpoint: printed as one line, exit status 1. */
export class StatsError extends Error {
  override name = "StatsError";
}

interface Column {
  title: string;
  width: number;
  value: (f: Figures) => string;
}

interface Group {
  title: string;
  columns: Column[];
}

const KIB = 1024;

/** A number in at most 5 characters: 0, 0.05, 12.3, 123, 1234, 12.3k, 123k, 1.2M ... */
export function compact(value: number | null | undefined, base = 1000): string {
  if (value === null || value === undefined || !Number.isFinite(value)) return "-";
  if (value === 0) return "0";
  const units = base === KIB ? ["", "K", "M", "G", "T", "P"] : ["", "k", "M", "G", "T", "P"];
  let scaled = Math.abs(value);
  let unit = 0;
  // Below 10,000 the number itself fits; above, scale until it does with a one-letter unit.
  if (scaled >= 10_000) {
    while (scaled >= 999.5 && unit < units.length - 1) {
      scaled /= base;
      unit++;
    }
  }
  const sign = value < 0 ? "-" : "";
  let text: string;
  if (unit === 0) {
    text = scaled < 10
      ? trimZeros(scaled.toFixed(2))
      : scaled < 100
      ? trimZeros(scaled.toFixed(1))
      : scaled.toFixed(0);
  } else {
    text = scaled < 10 ? trimZeros(scaled.toFixed(1)) : scaled.toFixed(0);
  }
  return sign + text + units[unit];
}

function trimZeros(text: string): string {
  return text.includes(".") ? text.replace(/\.?0+$/, "") || "0" : text;
}

function percent(ratio: number | null | undefined): string {
  if (ratio === null || ratio === undefined) return "-";
  const value = 100 * ratio;
  return value >= 99.95 || value === 0 ? value.toFixed(0) : value.toFixed(1);
}

const bytes = (value: number) => compact(value, KIB);

/** The columns, by group. Widths are 5 (a compact number) or less. */
export const GROUPS: Group[] = [
  {
    title: "fuse",
    columns: [
      { title: "ops", width: 5, value: (f) => compact(f.fuse.all.perSecond) },
      { title: "ms", width: 5, value: (f) => compact(f.fuse.all.latencyMs) },
      { title: "err", width: 4, value: (f) => compact(f.fuse.all.errorsPerSecond) },
      { title: "read", width: 5, value: (f) => bytes(f.fuse.readBytesPerSecond) },
      { title: "write", width: 5, value: (f) => bytes(f.fuse.writeBytesPerSecond) },
    ],
  },
  {
    title: "metadata",
    columns: [
      { title: "txn", width: 5, value: (f) => compact(f.meta.transactionsPerSecond) },
      { title: "ms", width: 5, value: (f) => compact(f.meta.latencyMs) },
      { title: "fast%", width: 5, value: (f) => percent(f.curp.fastRatio) },
    ],
  },
  {
    title: "cache",
    columns: [
      { title: "hit%", width: 5, value: (f) => percent(f.cache.tiers.local.hitRatio) },
      { title: "local", width: 5, value: (f) => bytes(f.cache.tiers.local.readBytesPerSecond) },
      { title: "peer", width: 5, value: (f) => bytes(f.cache.tiers.peer.readBytesPerSecond) },
      { title: "bknd", width: 5, value: (f) => bytes(f.cache.tiers.backend.readBytesPerSecond) },
      { title: "used", width: 5, value: (f) => bytes(f.cache.usedBytes) },
    ],
  },
  {
    title: "backend",
    columns: [
      { title: "req", width: 5, value: (f) => compact(f.backend.all.perSecond) },
      { title: "ms", width: 5, value: (f) => compact(f.backend.all.latencyMs) },
    ],
  },
  {
    title: "process",
    columns: [
      { title: "cpu%", width: 5, value: (f) => compact(f.process.cpuPercent) },
      { title: "rss", width: 5, value: (f) => bytes(f.process.rssBytes) },
    ],
  },
];

function groupWidth(group: Group): number {
  return group.columns.reduce((sum, column) => sum + column.width, 0) + group.columns.length - 1;
}

const GROUP_SEPARATOR = "|";

/** The two header lines: group titles over dashes, then column titles. */
export function renderHeader(groups: Group[] = GROUPS): string {
  const titles = groups.map((group) => {
    const width = groupWidth(group);
    const text = group.title.slice(0, width);
    const left = Math.floor((width - text.length) / 2);
    return "-".repeat(left) + text + "-".repeat(width - text.length - left);
  });
  const columns = groups.map((group) =>
    group.columns.map((column) => column.title.padStart(column.width)).join(" ")
  );
  return `${titles.join(" ")}\n${columns.join(GROUP_SEPARATOR)}`;
}

/** One line of figures. */
export function renderLine(figures: Figures, groups: Group[] = GROUPS): string {
  return groups.map((group) =>
    group.columns.map((column) =>
      column.value(figures).slice(0, column.width).padStart(column.width)
    ).join(" ")
  ).join(GROUP_SEPARATOR);
}

export interface StatsOptions {
  /** Seconds between lines (default 1). */
  intervalSeconds?: number;
  /** Lines to print before exiting (default: until interrupted). */
  count?: number;
  /** Print the header again every this many lines (default 20). */
  headerEvery?: number;
  /** Where lines go (default: stdout). */
  write?: (line: string) => void;
  /** Milliseconds one scrape may take (default 2000). */
  timeoutMs?: number;
}

/** The `/metrics` URL of TARGET: `http(s)://...`, `HOST:PORT`, or a skyfs mount point. */
export function metricsUrl(target: string): string {
  if (/^https?:\/\//.test(target)) {
    const url = new URL(target);
    if (url.pathname === "/" || url.pathname === "") url.pathname = "/metrics";
    return url.href;
  }
  if (/^[^/]*:\d+$/.test(target)) return `http://${target}/metrics`;
  let address: string;
  try {
    address = findEndpoint(target);
  } catch (error) {
    throw new StatsError((error as Error).message);
  }
  return `http://${address}/metrics`;
}

/** One scrape; a StatsError names the endpoint, what went wrong and what to do. */
export async function scrape(url: string, timeoutMs = 2000): Promise<Snapshot> {
  let response: Response;
  try {
    response = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
  } catch (error) {
    const cause = (error as Error).name === "TimeoutError"
      ? `no answer within ${timeoutMs} ms`
      : shortReason(error as Error);
    throw new StatsError(
      `cannot read ${url}: ${cause}; is the daemon running with its HTTP endpoint there ` +
        `(\`skyfs mount ... --http HOST:PORT\` prints it at start)?`,
    );
  }
  const text = await response.text();
  if (!response.ok) {
    throw new StatsError(`${url} answered ${response.status}; is it a skyfs endpoint?`);
  }
  try {
    return snapshotOf(text);
  } catch (error) {
    throw new StatsError(`${url} is not Prometheus text: ${(error as Error).message}`);
  }
}

function shortReason(error: Error): string {
  // Deno's fetch says "fetch failed"; the socket's own reason is in the cause.
  const message = `${error.message ?? error} ${(error.cause as Error | undefined)?.message ?? ""}`;
  if (/refused/i.test(message)) return "connection refused";
  if (/dns error|lookup address/i.test(message)) return "unknown host";
  if (/timed out/i.test(message)) return "connection timed out";
  return message.trim().split("\n")[0];
}

/** Print `count` lines (or forever) of per-interval figures from TARGET. */
export async function runStats(target: string, options: StatsOptions = {}): Promise<void> {
  const intervalMs = 1000 * (options.intervalSeconds ?? 1);
  const write = options.write ?? ((line: string) => console.log(line));
  const headerEvery = options.headerEvery ?? 20;
  const url = metricsUrl(target);
  let before = await scrape(url, options.timeoutMs);
  const where = [before.node && `node ${before.node}`, before.mountpoint].filter(Boolean);
  write(
    `skyfs stats: ${url}${where.length ? ` (${where.join(", ")})` : ""}, every ${
      intervalMs / 1000
    } s`,
  );
  for (let line = 0; options.count === undefined || line < options.count; line++) {
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
    const after = await scrape(url, options.timeoutMs);
    if (line % headerEvery === 0) write(renderHeader());
    write(renderLine(rates(before, after)));
    before = after;
  }
}

export const STATS_USAGE =
  `Usage: skyfs stats TARGET [--interval SECONDS] [--count N] [--header-every N]

Print one line per interval of what a skyfs daemon is doing, read from its /metrics: FUSE
operations per second, their mean latency (ms), errors and bytes read and written; metadata
transactions, their latency and the CURP fast-path share; cache hit ratio of the local tier and
bytes per second read from the local, peer and backend tiers, cache used; backend requests and
latency; the daemon's CPU use and resident memory. Byte figures are per second, in
binary units (K = 1024).

TARGET is a skyfs mount point (the daemon publishes its address under /run/skyfs, see README
"Operating skyfs") or the HTTP address of a daemon or replica, HOST:PORT or http://HOST:PORT.

Options:
  --interval SECONDS   time between lines (default 1; 0.1 to 3600)
  --count N            print N lines, then exit (default: until Ctrl-C)
  --header-every N     repeat the header every N lines (default 20)
  -h, --help           this text`;

/** Parse and check the command's flag values (strings from parseArgs). */
export function statsOptions(values: Record<string, string | boolean | undefined>): StatsOptions {
  const number = (flag: string, low: number, high: number, integer: boolean) => {
    const text = values[flag] as string | undefined;
    if (text === undefined) return undefined;
    const value = Number(text);
    if (
      !(Number.isFinite(value) && value >= low && value <= high) ||
      (integer && !Number.isInteger(value))
    ) {
      throw new StatsError(
        `--${flag} "${text}" is not ${
          integer ? "a whole number" : "a number"
        } from ${low} to ${high}`,
      );
    }
    return value;
  };
  return {
    intervalSeconds: number("interval", 0.1, 3600, false),
    count: number("count", 1, 1e9, true),
    headerEvery: number("header-every", 1, 1e6, true),
  };
}
