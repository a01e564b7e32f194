/**
 * Latency histograms counted into arrays allocated once, for /metrics: `observe` costs a few
 * comparisons and two array writes, no allocation, no promise. src/http copies them into the
 * exposition format at scrape time.
 * @module
 */

/** Upper bounds (seconds) of every skyfs duration histogram; +Inf is implied. */
export const DURATION_BUCKETS: readonly number[] = [
  0.00001,
  0.000025,
  0.00005,
  0.0001,
  0.00025,
  0.0005,
  0.001,
  0.0025,
  0.005,
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  0.5,
  1,
  2.5,
  5,
  10,
];

const SLOTS = DURATION_BUCKETS.length + 1;

/** `series` histograms side by side (one per opcode, per path, ...). */
export class DurationHistogram {
  readonly series: number;
  /** Non-cumulative counts: [series * SLOTS + bucket]; the last bucket of a series is +Inf. */
  readonly #counts: Float64Array;
  /** Observations per series. */
  readonly counts: Float64Array;
  /** Sum of the observed seconds per series. */
  readonly sums: Float64Array;

  constructor(series = 1) {
    this.series = series;
    this.#counts = new Float64Array(series * SLOTS);
    this.counts = new Float64Array(series);
    this.sums = new Float64Array(series);
  }

  observe(seconds: number, series = 0): void {
    let bucket = 0;
    while (bucket < DURATION_BUCKETS.length && seconds > DURATION_BUCKETS[bucket]) bucket++;
    this.#counts[series * SLOTS + bucket]++;
    this.counts[series]++;
    this.sums[series] += seconds;
  }

  /** Cumulative bucket counts of `series` (one per bound, then +Inf), newly allocated. */
  cumulative(series = 0): number[] {
    const out: number[] = [];
    let total = 0;
    for (let bucket = 0; bucket < SLOTS; bucket++) {
      total += this.#counts[series * SLOTS + bucket];
      out.push(total);
    }
    return out;
  }
}
