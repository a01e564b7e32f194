/**
 * What the FUSE server counts for /metrics: plain numbers and typed arrays allocated once, bumped
 * on the request path with no allocation, promise or timer, and read at scrape time by src/http.
 * @module
 */

/** Upper bounds (seconds) of the request duration histogram; +Inf is implied. */
export const FUSE_DURATION_BUCKETS = [
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

/** Opcodes are below 64 (FUSE 7.45's largest is 53); larger ones share slot 63. */
export const OPCODE_SLOTS = 64;
const BUCKET_SLOTS = FUSE_DURATION_BUCKETS.length + 1;

export class FuseCounters {
  /** Requests answered per opcode. */
  readonly requests = new Float64Array(OPCODE_SLOTS);
  /** Requests answered with an errno per opcode. */
  readonly errors = new Float64Array(OPCODE_SLOTS);
  /** Sum of durations (seconds) per opcode. */
  readonly durationSum = new Float64Array(OPCODE_SLOTS);
  /** Non-cumulative bucket counts: [opcode * BUCKET_SLOTS + bucket], the last bucket is +Inf. */
  readonly durationBuckets = new Float64Array(OPCODE_SLOTS * BUCKET_SLOTS);
  readBytes = 0;
  writeBytes = 0;
  passthroughOpens = 0;

  /** Record one answered request; `seconds` from performance.now() differences. */
  record(opcode: number, seconds: number, failed: boolean): void {
    const slot = opcode < OPCODE_SLOTS ? opcode : OPCODE_SLOTS - 1;
    this.requests[slot]++;
    if (failed) this.errors[slot]++;
    this.durationSum[slot] += seconds;
    let bucket = 0;
    while (bucket < FUSE_DURATION_BUCKETS.length && seconds > FUSE_DURATION_BUCKETS[bucket]) {
      bucket++;
    }
    this.durationBuckets[slot * BUCKET_SLOTS + bucket]++;
  }

  /** Cumulative bucket counts of `opcode` (for the exposition format), newly allocated. */
  cumulativeBuckets(opcode: number): number[] {
    const out: number[] = [];
    let total = 0;
    for (let bucket = 0; bucket < BUCKET_SLOTS; bucket++) {
      total += this.durationBuckets[opcode * BUCKET_SLOTS + bucket];
      out.push(total);
    }
    return out;
  }
}
