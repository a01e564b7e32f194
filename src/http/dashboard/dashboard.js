// The skyfs dashboard in the browser: polls /api/v1/dashboard (one point of figures per second,
// computed by the daemon from its own /metrics, src/http/figures.ts) and /api/v1/cluster, draws
// uPlot charts, and writes each series' latest value into an element with a data-figure
// attribute (what the Chromium test reads). Plain JavaScript, served as is: no build step.
/* global uPlot */
"use strict";

const POLL_MS = 1000;
const CLUSTER_POLL_MS = 2000;
const STATUS_POLL_MS = 10_000;
const KEEP_POINTS = 600;
const TOP_OPS = 6;
const COLORS = ["#2b6cb0", "#c05621", "#2f855a", "#805ad5", "#b7791f", "#c53030", "#319795"];

/** A number in a few characters (k, M, G; binary units for bytes). */
function compact(value, unit) {
  if (value === null || value === undefined || !Number.isFinite(value)) return "-";
  if (unit === "%") return `${value.toFixed(value >= 99.95 || value === 0 ? 0 : 1)}%`;
  const base = unit === "B" ? 1024 : 1000;
  const units = unit === "B" ? ["B", "KiB", "MiB", "GiB", "TiB"] : ["", "k", "M", "G", "T"];
  let scaled = Math.abs(value);
  let i = 0;
  while (scaled >= base && i < units.length - 1) {
    scaled /= base;
    i++;
  }
  const whole = i === 0 && Number.isInteger(value);
  const digits = whole || scaled === 0 ? 0 : scaled < 10 ? 2 : scaled < 100 ? 1 : 0;
  const text = (value < 0 ? "-" : "") + scaled.toFixed(digits);
  return unit === "ms" ? `${text}${units[i]} ms` : `${text}${units[i] ? " " + units[i] : ""}`;
}

const percent = (ratio) => ratio === null || ratio === undefined ? null : 100 * ratio;

/** The charts: each series reads one figure from a point; `key` names its data-figure. */
const CHARTS = [
  {
    id: "chart-ops",
    unit: "/s",
    series: () => [
      { label: "FUSE", key: "fuse.opsPerSecond", get: (f) => f.fuse.all.perSecond },
      {
        label: "metadata txn",
        key: "meta.transactionsPerSecond",
        get: (f) => f.meta.transactionsPerSecond,
      },
      { label: "backend", key: "backend.requestsPerSecond", get: (f) => f.backend.all.perSecond },
      {
        label: "shim I/O",
        key: "shim.ioPerSecond",
        get: (f) => f.shim.readsPerSecond + f.shim.writesPerSecond,
      },
      { label: "FUSE errors", key: "fuse.errorsPerSecond", get: (f) => f.fuse.all.errorsPerSecond },
    ],
  },
  {
    id: "chart-latency",
    unit: "ms",
    series: (points) => [
      { label: "FUSE, all", key: "fuse.latencyMs", get: (f) => f.fuse.all.latencyMs },
      ...topOps(points).map((op) => ({
        label: op,
        key: `fuse.op.${op}.latencyMs`,
        get: (f) => f.fuse.ops[op]?.latencyMs ?? null,
      })),
      { label: "metadata txn", key: "meta.latencyMs", get: (f) => f.meta.latencyMs },
      { label: "backend", key: "backend.latencyMs", get: (f) => f.backend.all.latencyMs },
    ],
  },
  {
    id: "chart-bytes",
    unit: "B",
    series: () => [
      { label: "FUSE read", key: "fuse.readBytesPerSecond", get: (f) => f.fuse.readBytesPerSecond },
      {
        label: "FUSE write",
        key: "fuse.writeBytesPerSecond",
        get: (f) => f.fuse.writeBytesPerSecond,
      },
      {
        label: "cache: local",
        key: "cache.local.readBytesPerSecond",
        get: (f) => f.cache.tiers.local.readBytesPerSecond,
      },
      {
        label: "cache: peer",
        key: "cache.peer.readBytesPerSecond",
        get: (f) => f.cache.tiers.peer.readBytesPerSecond,
      },
      {
        label: "cache: backend",
        key: "cache.backend.readBytesPerSecond",
        get: (f) => f.cache.tiers.backend.readBytesPerSecond,
      },
      {
        label: "served to peers",
        key: "peer.servedBytesPerSecond",
        get: (f) => f.peer.servedBytesPerSecond,
      },
    ],
  },
  {
    id: "chart-hits",
    unit: "%",
    series: () =>
      ["local", "peer", "backend"].map((tier) => ({
        label: tier,
        key: `cache.${tier}.hitPercent`,
        get: (f) => percent(f.cache.tiers[tier].hitRatio),
      })),
  },
  {
    id: "chart-curp",
    unit: "%",
    series: () => [
      { label: "fast path", key: "curp.fastPercent", get: (f) => percent(f.curp.fastRatio) },
      {
        label: "commits/s",
        key: "curp.commitsPerSecond",
        unit: "/s",
        scale: "rate",
        get: (f) => f.curp.commitsPerSecond,
      },
      {
        label: "replica log entries/s",
        key: "curp.logEntriesPerSecond",
        unit: "/s",
        scale: "rate",
        get: (f) => f.curp.logEntriesPerSecond ?? null,
      },
    ],
  },
  {
    id: "chart-uring",
    unit: "/s",
    series: () => [
      {
        label: "submissions",
        key: "uring.submissionsPerSecond",
        get: (f) => f.uring.submissionsPerSecond,
      },
      {
        label: "completions",
        key: "uring.completionsPerSecond",
        get: (f) => f.uring.completionsPerSecond,
      },
      {
        label: "io_uring_enter",
        key: "uring.entersPerSecond",
        get: (f) => f.uring.entersPerSecond,
      },
      {
        label: "in flight",
        key: "uring.inflight",
        unit: "",
        scale: "count",
        get: (f) => f.uring.inflight,
      },
    ],
  },
];

/** The FUSE operations with the most requests over the kept points. */
function topOps(points) {
  const counts = new Map();
  for (const point of points) {
    for (const [op, r] of Object.entries(point.fuse.ops)) {
      counts.set(op, (counts.get(op) ?? 0) + r.perSecond);
    }
  }
  return [...counts].filter(([, n]) => n > 0).sort((a, b) => b[1] - a[1]).slice(0, TOP_OPS)
    .map(([op]) => op).sort();
}

const state = { points: [], after: 0, charts: new Map(), lastError: "" };
globalThis.skyfs = state;

function makeChart(spec, series) {
  const section = document.getElementById(spec.id);
  const plot = section.querySelector(".plot");
  plot.textContent = "";
  const scales = { x: { time: true } };
  const axes = [{}, { size: 70, values: (_u, ticks) => ticks.map((v) => compact(v, spec.unit)) }];
  if (series.some((s) => s.scale)) {
    const other = series.find((s) => s.scale);
    axes.push({
      scale: other.scale,
      side: 1,
      size: 60,
      grid: { show: false },
      values: (_u, ticks) => ticks.map((v) => compact(v, other.unit)),
    });
  }
  if (spec.unit === "%") scales.y = { range: [0, 100] };
  const options = {
    width: Math.max(300, plot.clientWidth),
    height: 200,
    scales,
    axes,
    legend: { show: false }, // the figures below the chart show the latest values
    series: [
      {},
      ...series.map((s, i) => ({
        label: s.label,
        scale: s.scale ?? "y",
        stroke: COLORS[i % COLORS.length],
        width: 1.5,
        spanGaps: false,
        value: (_u, v) => compact(v, s.unit ?? spec.unit),
      })),
    ],
  };
  let now = section.querySelector("dl.now");
  if (!now) {
    now = document.createElement("dl");
    now.className = "now";
    section.appendChild(now);
  }
  now.textContent = "";
  series.forEach((s, i) => {
    const dt = document.createElement("dt");
    dt.textContent = s.label;
    dt.style.borderLeft = `10px solid ${COLORS[i % COLORS.length]}`;
    dt.style.paddingLeft = "4px";
    const dd = document.createElement("dd");
    dd.dataset.figure = s.key;
    dd.textContent = "-";
    now.append(dt, dd);
  });
  const chart = new uPlot(options, chartData(series), plot);
  return { chart, series, labels: series.map((s) => s.label).join("\n") };
}

function chartData(series) {
  const xs = state.points.map((p) => p.timeMs / 1000);
  return [xs, ...series.map((s) => state.points.map((p) => s.get(p)))];
}

function render() {
  for (const spec of CHARTS) {
    const series = spec.series(state.points);
    let entry = state.charts.get(spec.id);
    if (!entry || entry.labels !== series.map((s) => s.label).join("\n")) {
      entry?.chart.destroy();
      entry = makeChart(spec, series);
      state.charts.set(spec.id, entry);
    } else {
      entry.chart.setData(chartData(series));
    }
    const last = state.points.at(-1);
    if (!last) continue;
    for (const s of series) {
      const dd = document.querySelector(`#${spec.id} [data-figure="${CSS.escape(s.key)}"]`);
      const value = s.get(last);
      dd.textContent = compact(value, s.unit ?? spec.unit);
      dd.dataset.value = value === null || value === undefined ? "" : String(value);
    }
  }
  const last = state.points.at(-1);
  if (last) {
    setFigure("process.cpuPercent", last.process.cpuPercent, "%");
    setFigure("process.rssBytes", last.process.rssBytes, "B");
    setFigure("process.heapBytes", last.process.heapBytes, "B");
    setFigure("process.loopDelayMs", last.process.loopDelayMs, "ms");
    setFigure("fuse.openHandles", last.fuse.openHandles, "");
    const cache = last.cache.capacityBytes > 0
      ? `${compact(last.cache.usedBytes, "B")} of ${compact(last.cache.capacityBytes, "B")}`
      : "-";
    setFigure("cache.used", last.cache.usedBytes, "B", cache);
  }
}

function setFigure(key, value, unit, text) {
  const element = document.querySelector(`header [data-figure="${key}"]`);
  if (!element) return;
  element.textContent = text ?? compact(value, unit);
  element.dataset.value = value === null || value === undefined ? "" : String(value);
}

function showError(text) {
  if (text === state.lastError) return;
  state.lastError = text;
  document.getElementById("error").textContent = text;
}

async function getJson(path) {
  const response = await fetch(path, { cache: "no-store" });
  if (!response.ok) throw new Error(`${path} answered ${response.status}`);
  return await response.json();
}

async function poll() {
  try {
    const body = await getJson(`/api/v1/dashboard?after=${state.after}`);
    const where = [body.node && `node ${body.node}`, body.mountpoint].filter(Boolean).join(", ");
    document.getElementById("where").textContent = where || "metadata replica";
    for (const point of body.points) {
      state.points.push(point);
      state.after = point.timeMs;
    }
    if (state.points.length > KEEP_POINTS) {
      state.points.splice(0, state.points.length - KEEP_POINTS);
    }
    showError(body.error ? `scrape failed: ${body.error}` : "");
    render();
  } catch (error) {
    showError(`cannot reach the daemon: ${error.message}`);
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

async function pollCluster() {
  try {
    const body = await getJson("/api/v1/cluster");
    const section = document.getElementById("cluster");
    section.hidden = !body.cluster;
    if (body.cluster) renderCluster(body.nodes);
  } catch {
    // the main poll reports an unreachable daemon
  } finally {
    setTimeout(pollCluster, CLUSTER_POLL_MS);
  }
}

function renderCluster(nodes) {
  const tbody = document.querySelector("#cluster tbody");
  tbody.textContent = "";
  for (const node of nodes) {
    const f = node.figures;
    const cells = [
      node.self ? `${node.id} (this node)` : node.id,
      node.zone ?? "-",
      node.http ?? "-",
      f && compact(f.fuse.all.perSecond, ""),
      f && compact(f.fuse.all.latencyMs, "ms"),
      f && compact(f.fuse.readBytesPerSecond, "B"),
      f && compact(f.fuse.writeBytesPerSecond, "B"),
      f && compact(percent(f.cache.tiers.local.hitRatio), "%"),
      f && compact(percent(f.cache.tiers.peer.hitRatio), "%"),
      f && compact(f.meta.transactionsPerSecond, ""),
      f && compact(percent(f.curp.fastRatio), "%"),
      f && compact(f.uring.submissionsPerSecond, ""),
      f && compact(f.process.cpuPercent, "%"),
      f && compact(f.process.rssBytes, "B"),
      node.error ?? (f ? "up" : "waiting for a second scrape"),
    ];
    const row = document.createElement("tr");
    row.dataset.node = node.id;
    if (f) row.dataset.opsPerSecond = String(f.fuse.all.perSecond);
    for (const text of cells) {
      const cell = document.createElement("td");
      cell.textContent = text ?? "-";
      row.appendChild(cell);
    }
    tbody.appendChild(row);
  }
}

/** The metadata leader from /api/v1/status (a mount in a CURP cluster, or a replica). */
async function pollStatus() {
  try {
    const body = await getJson("/api/v1/status");
    let text = "-";
    const leaders = body.cluster?.leaders;
    if (Array.isArray(leaders)) {
      text = leaders.length > 0 ? `CURP leader ${leaders.join(", ")}` : "CURP: no leader";
    } else if (body.kind === "replica") {
      text = `replica ${body.id}: ${body.role}, term ${body.term}` +
        (body.role === "leader" ? "" : `, leader ${body.leaderId ?? "unknown"}`);
    } else if (body.meta) {
      text = String(body.meta);
    }
    setFigure("curp.leader", null, "", text);
  } catch {
    // optional: an endpoint without /api/v1/status shows "-"
  } finally {
    setTimeout(pollStatus, STATUS_POLL_MS);
  }
}

globalThis.addEventListener("resize", () => {
  for (const { chart } of state.charts.values()) {
    const width = chart.root.parentElement.clientWidth;
    chart.setSize({ width: Math.max(300, width), height: 200 });
  }
});

poll();
pollCluster();
pollStatus();
