/**
 * How long a submit may wait in the kernel for a first completion (the "spin"), learned from what
 * happened last time. Waiting in io_uring_enter costs nothing when ops complete inline and saves a
 * `nonblocking` round trip (13-60 us) when io-wq finishes soon (ext4 buffered writes: tens of us
 * for 4 KiB, a few hundred for 1 MiB); it only stalls the JS thread when completions are far off
 * (disk-bound I/O, reads on a FIFO). Pure state, no clock inside: callers pass the time.
 * @module
 */

export interface SpinOptions {
  /** Spin after a reset, in microseconds; 0 turns spinning off. */
  baseUs: number;
  /** Longest spin it may learn, in microseconds. */
  maxUs: number;
}

/**
 * The rules: a spin that saw a completion keeps its length. A spin that saw none leaves the
 * verdict to the `nonblocking` wait that follows: if the completion came within `maxUs` of the
 * submit, the next spin is 1.25x that latency (so the next one is caught in the kernel); if it came
 * later, or a second spin missed before the verdict, spinning backs off for 2, 4, ... 64 submits
 * and restarts from `baseUs`.
 */
export class SpinPolicy {
  readonly baseNs: number;
  readonly maxNs: number;
  #spinNs: number;
  #misses = 0;
  #skips = 0;
  /** Start time (ms) of the spin that missed and awaits its verdict, or -1. */
  #missedAt = -1;

  constructor(options: SpinOptions) {
    if (!(options.baseUs >= 0 && options.maxUs >= options.baseUs && options.maxUs <= 1_000_000)) {
      throw new RangeError(
        `spin ${options.baseUs} us / max ${options.maxUs} us: need 0 <= base <= max <= 1000000`,
      );
    }
    this.baseNs = Math.round(options.baseUs * 1000);
    this.maxNs = Math.round(options.maxUs * 1000);
    this.#spinNs = this.baseNs;
  }

  /** The spin for the next submit, in nanoseconds (0: do not wait). */
  next(): number {
    if (this.baseNs === 0) return 0;
    if (this.#skips > 0) {
      this.#skips--;
      return 0;
    }
    return this.#spinNs;
  }

  /** After a submit that spun (next() was > 0) starting at `startMs`: did it see a completion? */
  spun(startMs: number, sawCompletion: boolean): void {
    if (sawCompletion) {
      this.#misses = 0;
      return;
    }
    if (this.#missedAt >= 0) {
      this.#backOff();
      return;
    }
    this.#missedAt = startMs;
  }

  /** A `nonblocking` wait returned with completions at `nowMs`. */
  woke(nowMs: number): void {
    if (this.#missedAt < 0) return;
    const latencyNs = (nowMs - this.#missedAt) * 1e6;
    this.#missedAt = -1;
    if (latencyNs <= this.maxNs) {
      this.#spinNs = Math.min(this.maxNs, Math.max(this.#spinNs, Math.round(latencyNs * 1.25)));
      this.#misses = 0;
    } else {
      this.#backOff();
    }
  }

  #backOff(): void {
    this.#missedAt = -1;
    this.#misses = Math.min(this.#misses + 1, 6);
    this.#skips = 1 << this.#misses;
    this.#spinNs = this.baseNs;
  }
}
