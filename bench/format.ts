/** Number formatting shared by the tables, the charts and the progress lines. */

/** Short human form of a figure: 3 significant digits, k/M above 10 000 (bandwidth stays whole). */
export function formatValue(value: number, unit: string): string {
  if (!Number.isFinite(value)) return String(value);
  if (unit === "MiB/s" && value >= 100) return Math.round(value).toString();
  const abs = Math.abs(value);
  if (abs >= 1e6) return `${trimDigits(value / 1e6)}M`;
  if (abs >= 1e4) return `${trimDigits(value / 1e3)}k`;
  return trimDigits(value);
}

function trimDigits(value: number): string {
  const abs = Math.abs(value);
  if (abs >= 100) return Math.round(value).toString();
  if (abs >= 10) return value.toFixed(1);
  if (abs >= 1) return value.toFixed(2);
  return value.toPrecision(2);
}

/** Ratio to the baseline, with enough digits to tell 0.004x from 0.04x. */
export function formatRatio(ratio: number): string {
  if (!Number.isFinite(ratio)) return "n/a";
  if (ratio >= 10) return `${ratio.toFixed(0)}x`;
  if (ratio >= 0.01) return `${ratio.toFixed(2)}x`;
  return `${ratio.toPrecision(1)}x`;
}
