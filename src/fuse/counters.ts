/**
 * What the FUSE server counts for /metrics: plain numbers and typed arrays allocated once, bumped
 * on the request path with no allocation, promise or timer, and read at scrape time by src/http.
 * @module
 */

import { DurationHistogram } from "../duration_histogram.ts";

/** Opcodes are below 64 (FUSE 7.45's largest is 53); larger ones share slot 63. */
export const OPCODE_SLOTS = 64;

export class FuseCounters {
  /** Requests answered per opcode. */
  readonly requests = new Float64Array(OPCODE_SLOTS);
  /** Requests answered with an errno per opcode. */
  readonly errors = new Float64Array(OPCODE_SLOTS);
  /** Time from reading a request to writing its reply, per opcode. */
  readonly durations = new DurationHistogram(OPCODE_SLOTS);
  readBytes = 0;
  writeBytes = 0;
  passthroughOpens = 0;

  /** Record one answered request; `seconds` from performance.now() differences. */
  record(opcode: number, seconds: number, failed: boolean): void {
    const slot = opcode < OPCODE_SLOTS ? opcode : OPCODE_SLOTS - 1;
    this.requests[slot]++;
    if (failed) this.errors[slot]++;
    this.durations.observe(seconds, slot);
  }
}
