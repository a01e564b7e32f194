/**
 * A small dependency-free SVG grouped bar chart: one group per job, one bar per target side by side,
 * value and ratio to the baseline written on each bar. Opens in any browser.
 * @module
 */
import { formatRatio } from "./format.ts";

export interface ChartBar {
  target: string;
  /** Null draws no bar and writes `missingLabel` instead (failed or skipped). */
  value: number | null;
  /** Ratio to the baseline target, shown under the value; null to omit. */
  ratio: number | null;
  missingLabel?: string;
}

export interface ChartGroup {
  label: string;
  bars: ChartBar[];
}

export interface ChartOptions {
  title: string;
  unit: string;
  /** Targets in legend order; each gets a fixed colour. */
  targets: string[];
  /** Short value formatter (defaults to String). */
  format?: (value: number) => string;
  /** "auto" (default) switches to a log axis when the largest bar is over 30x the smallest. */
  scale?: "linear" | "log" | "auto";
}

const PALETTE = ["#4e79a7", "#e15759", "#b07aa1", "#59a14f", "#f28e2b", "#76b7b2", "#edc948"];
const BAR_WIDTH = 22;
const BAR_GAP = 3;
const GROUP_GAP = 26;
const PLOT_HEIGHT = 260;
const LEFT = 70;
const TOP = 56;
const BOTTOM = 96;

/** XML-escapes text for element content and attribute values. */
export function escapeXml(text: string): string {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;")
    .replace(/"/g, "&quot;");
}

/** Picks the axis: log when values span more than 30x (FUSE vs page cache often spans 100x). */
export function chooseScale(values: number[], scale: ChartOptions["scale"]): "linear" | "log" {
  if (scale === "linear" || scale === "log") return scale;
  const positive = values.filter((v) => v > 0);
  if (positive.length < 2) return "linear";
  return Math.max(...positive) / Math.min(...positive) > 30 ? "log" : "linear";
}

/** Rounded axis ticks: powers of ten for log, 1/2/5 steps for linear. */
export function axisTicks(maxValue: number, minValue: number, scale: "linear" | "log"): number[] {
  if (maxValue <= 0) return [0];
  if (scale === "log") {
    const low = Math.floor(Math.log10(Math.max(minValue, 1e-9)));
    const high = Math.ceil(Math.log10(maxValue));
    const ticks: number[] = [];
    for (let e = low; e <= high; e++) ticks.push(10 ** e);
    return ticks;
  }
  const rough = maxValue / 5;
  const magnitude = 10 ** Math.floor(Math.log10(rough));
  const step = [1, 2, 5, 10].map((f) => f * magnitude).find((s) => s >= rough) ?? rough;
  const ticks: number[] = [];
  for (let t = 0; t <= maxValue + step * 0.999; t += step) ticks.push(Number(t.toPrecision(12)));
  return ticks;
}

/** Renders the chart as a standalone SVG document. */
export function barChart(groups: ChartGroup[], options: ChartOptions): string {
  const format = options.format ?? String;
  const values = groups.flatMap((g) => g.bars.map((b) => b.value)).filter((v): v is number =>
    v !== null && v > 0
  );
  const scale = chooseScale(values, options.scale);
  const maxValue = values.length > 0 ? Math.max(...values) : 1;
  const minValue = values.length > 0 ? Math.min(...values) : 1;
  const ticks = axisTicks(maxValue, minValue, scale);
  const axisMax = ticks[ticks.length - 1] || 1;
  const axisMin = scale === "log" ? ticks[0] : 0;
  const y = (v: number): number => {
    if (scale === "log") {
      const f = (Math.log10(Math.max(v, axisMin)) - Math.log10(axisMin)) /
        (Math.log10(axisMax) - Math.log10(axisMin) || 1);
      return TOP + PLOT_HEIGHT * (1 - f);
    }
    return TOP + PLOT_HEIGHT * (1 - v / axisMax);
  };

  const barsPerGroup = Math.max(1, ...groups.map((g) => g.bars.length));
  const groupWidth = barsPerGroup * (BAR_WIDTH + BAR_GAP) - BAR_GAP;
  const legendWidth = options.targets.reduce((w, t) => w + 24 + t.length * 7 + 16, 0);
  // Room for the title, the legend and the last group's label, which is drawn rotated to the right.
  const lastLabel = groups.length > 0 ? groups[groups.length - 1].label.length : 0;
  const width = Math.ceil(Math.max(
    LEFT + groups.length * (groupWidth + GROUP_GAP) +
      Math.max(20, lastLabel * 5.5 - groupWidth / 2),
    legendWidth + LEFT,
    LEFT + options.title.length * 9,
  ));
  const height = TOP + PLOT_HEIGHT + BOTTOM;
  const colour = (target: string): string => {
    const i = options.targets.indexOf(target);
    return PALETTE[(i < 0 ? options.targets.length : i) % PALETTE.length];
  };

  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" ` +
    `viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="11">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="${LEFT}" y="20" font-size="15" font-weight="bold">${escapeXml(options.title)}</text>`,
    `<text x="${LEFT}" y="36" fill="#555">${escapeXml(options.unit)}` +
    `${scale === "log" ? ", log scale" : ""}; label: value (ratio to baseline)</text>`,
  ];
  // Legend.
  let legendX = LEFT;
  for (const target of options.targets) {
    parts.push(
      `<rect x="${legendX}" y="42" width="12" height="10" fill="${colour(target)}"/>`,
      `<text x="${legendX + 16}" y="51">${escapeXml(target)}</text>`,
    );
    legendX += 24 + target.length * 7 + 16;
  }
  // Axis and grid.
  for (const tick of ticks) {
    const ty = y(tick);
    parts.push(
      `<line x1="${LEFT}" x2="${width - 10}" y1="${ty}" y2="${ty}" stroke="#ddd"/>`,
      `<text x="${LEFT - 6}" y="${ty + 4}" text-anchor="end" fill="#555">${
        escapeXml(format(tick))
      }</text>`,
    );
  }
  parts.push(
    `<line x1="${LEFT}" x2="${LEFT}" y1="${TOP}" y2="${TOP + PLOT_HEIGHT}" stroke="#333"/>`,
    `<line x1="${LEFT}" x2="${width - 10}" y1="${TOP + PLOT_HEIGHT}" y2="${
      TOP + PLOT_HEIGHT
    }" stroke="#333"/>`,
  );
  // Bars.
  groups.forEach((group, gi) => {
    const gx = LEFT + GROUP_GAP / 2 + gi * (groupWidth + GROUP_GAP);
    group.bars.forEach((bar, bi) => {
      const bx = gx + bi * (BAR_WIDTH + BAR_GAP);
      const cx = bx + BAR_WIDTH / 2;
      const baseY = TOP + PLOT_HEIGHT;
      if (bar.value === null || bar.value <= 0) {
        const label = bar.value === null ? (bar.missingLabel ?? "n/a") : "0";
        parts.push(
          `<text transform="translate(${cx + 4},${baseY - 4}) rotate(-90)" fill="#999">${
            escapeXml(`${bar.target}: ${label}`)
          }</text>`,
        );
        return;
      }
      const top = y(bar.value);
      const label = format(bar.value) + (bar.ratio === null ? "" : ` (${formatRatio(bar.ratio)})`);
      parts.push(
        `<rect x="${bx}" y="${top.toFixed(1)}" width="${BAR_WIDTH}" height="${
          (baseY - top).toFixed(1)
        }" fill="${colour(bar.target)}"><title>${
          escapeXml(`${group.label} on ${bar.target}: ${label} ${options.unit}`)
        }</title></rect>`,
      );
      // Label inside the bar when it is tall enough, else above it; rotated to fit the width.
      const inside = baseY - top > label.length * 6 + 8;
      const ly = inside ? top + 6 : top - 4;
      parts.push(
        `<text transform="translate(${cx + 4},${ly.toFixed(1)}) rotate(-90)" ` +
          `text-anchor="${inside ? "end" : "start"}" font-size="10" fill="${
            inside ? "white" : "#222"
          }">${escapeXml(label)}</text>`,
      );
    });
    const labelX = gx + groupWidth / 2;
    parts.push(
      `<text transform="translate(${labelX},${TOP + PLOT_HEIGHT + 12}) rotate(30)" ` +
        `font-size="10">${escapeXml(group.label)}</text>`,
    );
  });
  parts.push("</svg>");
  return parts.join("\n") + "\n";
}
