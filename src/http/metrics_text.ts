/**
 * A reader of the Prometheus text exposition format (version 0.0.4), the output of `/metrics`:
 * what `skyfs stats`, the dashboard's sampler and its cluster table read from every node. It
 * keeps samples only (name, labels, value); HELP and TYPE lines are skipped, since every figure
 * skyfs shows is named by the metric contract (README "Operating skyfs").
 * @module
 */

/** One sample line: `name{label="value",...} 12.5 [timestamp]`. */
export interface MetricSample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*/;

/** Parse exposition text into samples; throws a SyntaxError naming the line that is not one. */
export function parseMetricsText(text: string): MetricSample[] {
  const samples: MetricSample[] = [];
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].trim();
    if (line === "" || line.startsWith("#")) continue;
    try {
      samples.push(parseSampleLine(line));
    } catch (error) {
      throw new SyntaxError(
        `metrics line ${i + 1} is not a sample (${(error as Error).message}): ${
          JSON.stringify(line.slice(0, 120))
        }`,
      );
    }
  }
  return samples;
}

function parseSampleLine(line: string): MetricSample {
  const name = NAME.exec(line)?.[0];
  if (name === undefined) throw new Error("no metric name");
  let at = name.length;
  const labels: Record<string, string> = {};
  if (line[at] === "{") {
    at++;
    for (;;) {
      while (line[at] === " " || line[at] === ",") at++;
      if (line[at] === "}") {
        at++;
        break;
      }
      const label = LABEL_NAME.exec(line.slice(at))?.[0];
      if (label === undefined) throw new Error(`bad label name at column ${at + 1}`);
      at += label.length;
      if (line[at] !== "=" || line[at + 1] !== '"') {
        throw new Error(`label ${label} has no ="value"`);
      }
      at += 2;
      let value = "";
      for (;;) {
        const c = line[at];
        if (c === undefined) throw new Error(`label ${label}'s value is not closed`);
        at++;
        if (c === '"') break;
        if (c === "\\") {
          const escaped = line[at++];
          value += escaped === "n" ? "\n" : escaped;
        } else {
          value += c;
        }
      }
      labels[label] = value;
    }
  }
  const fields = line.slice(at).trim().split(/\s+/);
  if (fields.length < 1 || fields.length > 2 || fields[0] === "") {
    throw new Error("expected a value and an optional timestamp");
  }
  const value = parseValue(fields[0]);
  return { name, labels, value };
}

function parseValue(text: string): number {
  if (text === "+Inf" || text === "Inf") return Infinity;
  if (text === "-Inf") return -Infinity;
  // prom-client writes "Nan" (e.g. the event loop lag gauges before their first sample);
  // Prometheus reads any case, as Go's ParseFloat.
  if (text.toLowerCase() === "nan") return NaN;
  const value = Number(text);
  if (Number.isNaN(value)) throw new Error(`value ${JSON.stringify(text)} is not a number`);
  return value;
}

/** Samples indexed by name, with the sums and groupings the figures need. */
export class MetricSet {
  readonly #byName = new Map<string, MetricSample[]>();

  constructor(samples: MetricSample[]) {
    for (const sample of samples) {
      const list = this.#byName.get(sample.name);
      if (list) list.push(sample);
      else this.#byName.set(sample.name, [sample]);
    }
  }

  static parse(text: string): MetricSet {
    return new MetricSet(parseMetricsText(text));
  }

  has(name: string): boolean {
    return this.#byName.has(name);
  }

  /** Every sample of `name`. */
  samples(name: string): MetricSample[] {
    return this.#byName.get(name) ?? [];
  }

  /** The sum of `name` over the samples whose labels match `where` (0 when there is none). */
  sum(name: string, where: Record<string, string> = {}): number {
    let total = 0;
    for (const sample of this.samples(name)) {
      if (matches(sample.labels, where)) total += sample.value;
    }
    return total;
  }

  /** The value of `name` (summed over label sets), or undefined when it is not exported. */
  value(name: string): number | undefined {
    return this.has(name) ? this.sum(name) : undefined;
  }

  /** `name` summed per value of `label`. */
  byLabel(name: string, label: string): Map<string, number> {
    const out = new Map<string, number>();
    for (const sample of this.samples(name)) {
      const key = sample.labels[label];
      if (key === undefined) continue;
      out.set(key, (out.get(key) ?? 0) + sample.value);
    }
    return out;
  }

  /** A label's value on the first sample that has it (the constant `node` and `mountpoint`). */
  label(label: string): string | undefined {
    for (const list of this.#byName.values()) {
      for (const sample of list) {
        if (sample.labels[label] !== undefined) return sample.labels[label];
      }
    }
    return undefined;
  }
}

function matches(labels: Record<string, string>, where: Record<string, string>): boolean {
  for (const key in where) if (labels[key] !== where[key]) return false;
  return true;
}
