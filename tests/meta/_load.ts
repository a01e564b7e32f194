/**
 * Test helper: metadata load against a CURP cluster. `prefill` grows the store to a given size;
 * `MixedLoad` runs writers (puts, fast-path compare-and-put transactions, deletes, small ranges)
 * and lease holders that renew like a mount's membership (TTL 5 s, keepAlive every 1.7 s, a key
 * attached), and records every failure, the slowest operation and any lease key that vanished.
 * @module
 */

import type { MetaKV, WatchEvent } from "../../src/meta/kv.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export const LEASE_PREFIX = "load-lease/";

/** Write about `bytes` of values (1 KiB each) under `prefix`, `perTxn` puts per transaction. */
export async function prefill(
  kv: MetaKV,
  bytes: number,
  prefix = "fill/",
  perTxn = 64,
): Promise<number> {
  const value = new Uint8Array(1024).fill(120);
  const keys = Math.ceil(bytes / value.length);
  const txns: Promise<unknown>[] = [];
  for (let i = 0; i < keys; i += perTxn) {
    const success = [];
    for (let j = i; j < Math.min(keys, i + perTxn); j++) {
      success.push({ put: { key: encoder.encode(`${prefix}${j}`), value } });
    }
    txns.push(kv.txn({ success }));
    if (txns.length >= 8) await Promise.all(txns.splice(0));
  }
  await Promise.all(txns);
  return keys;
}

export interface LoadReport {
  operations: number;
  failures: string[];
  /** Slowest operation, ms, and when it started (ms since the load started). */
  maxLatencyMs: number;
  maxLatencyAtMs: number;
  p99LatencyMs: number;
  keepAlives: number;
  /** Lease keys deleted while their holder kept renewing (a lease expired). */
  leaseKeysLost: string[];
}

export interface MixedLoadOptions {
  writers?: number;
  leaseHolders?: number;
  /** Keys the writers spread over. */
  keySpace?: number;
  /** Value size of the writers' puts. */
  valueBytes?: number;
}

/** Mixed metadata load until `stop()`. */
export class MixedLoad {
  readonly #kv: MetaKV;
  readonly #latencies: number[] = [];
  readonly #failures: string[] = [];
  readonly #lost: string[] = [];
  readonly #tasks: Promise<void>[] = [];
  readonly #start = performance.now();
  #maxLatencyMs = 0;
  #maxLatencyAtMs = 0;
  #keepAlives = 0;
  #stopped = false;
  #watch: { cancel(): void } | undefined;

  constructor(kv: MetaKV, readonly options: MixedLoadOptions = {}) {
    this.#kv = kv;
  }

  /** Grant the leases, attach their keys, start the watch and the workers. */
  async start(): Promise<void> {
    const holders = this.options.leaseHolders ?? 3;
    const leases: number[] = [];
    for (let h = 0; h < holders; h++) {
      const { id } = await this.#kv.leaseGrant(5);
      await this.#kv.put({
        key: encoder.encode(`${LEASE_PREFIX}${h}`),
        value: encoder.encode(String(id)),
        lease: id,
      });
      leases.push(id);
    }
    this.#watch = this.#kv.watch(
      { key: encoder.encode(LEASE_PREFIX), rangeEnd: encoder.encode("load-lease0") },
      {},
      (events: WatchEvent[]) => {
        for (const e of events) {
          if (e.type === "delete") this.#lost.push(decoder.decode(e.kv.key));
        }
      },
    );
    for (let h = 0; h < holders; h++) this.#tasks.push(this.#holder(leases[h]));
    for (let w = 0; w < (this.options.writers ?? 6); w++) this.#tasks.push(this.#writer(w));
  }

  /** Operations finished so far (failed ones included). */
  get operations(): number {
    return this.#latencies.length;
  }

  async stop(): Promise<LoadReport> {
    this.#stopped = true;
    await Promise.all(this.#tasks);
    this.#watch?.cancel();
    const sorted = this.#latencies.slice().sort((a, b) => a - b);
    return {
      operations: sorted.length,
      failures: this.#failures,
      maxLatencyMs: Math.round(this.#maxLatencyMs),
      maxLatencyAtMs: Math.round(this.#maxLatencyAtMs),
      p99LatencyMs: Math.round(sorted[Math.floor(sorted.length * 0.99)] ?? 0),
      keepAlives: this.#keepAlives,
      leaseKeysLost: this.#lost,
    };
  }

  async #timed(what: string, op: () => Promise<unknown>): Promise<void> {
    const t0 = performance.now();
    try {
      await op();
    } catch (error) {
      if (this.#failures.length < 20) {
        this.#failures.push(
          `${what} at ${Math.round(t0 - this.#start)} ms: ${(error as Error).message}`,
        );
      }
    }
    const ms = performance.now() - t0;
    this.#latencies.push(ms);
    if (ms > this.#maxLatencyMs) {
      this.#maxLatencyMs = ms;
      this.#maxLatencyAtMs = t0 - this.#start;
    }
  }

  /** Renews like src/cluster/membership.ts: keepAlive every 1.7 s. */
  async #holder(lease: number): Promise<void> {
    while (!this.#stopped) {
      await this.#timed("keepAlive", async () => {
        await this.#kv.leaseKeepAlive(lease);
        this.#keepAlives++;
      });
      await new Promise((r) => setTimeout(r, 1700));
    }
  }

  async #writer(w: number): Promise<void> {
    const space = this.options.keySpace ?? 2000;
    const value = new Uint8Array(this.options.valueBytes ?? 256).fill(97 + w);
    for (let i = 0; !this.#stopped; i++) {
      const key = encoder.encode(`load/${(i * 7919 + w * 104729) % space}`);
      switch (i % 5) {
        case 0:
        case 1:
          await this.#timed("put", () => this.#kv.put({ key, value }));
          break;
        case 2:
          // A namespace-style commit: compare by value, fast path.
          await this.#timed("txn", () =>
            this.#kv.txn({
              compare: [{ key, target: "version", result: "!=", value: -1 }],
              success: [{ put: { key, value } }],
              revisionsUnused: true,
            }));
          break;
        case 3:
          await this.#timed(
            "range",
            () =>
              this.#kv.range({
                key: encoder.encode(`load/${w}`),
                rangeEnd: encoder.encode(`load/${w + 1}`),
                limit: 10,
              }),
          );
          break;
        case 4:
          await this.#timed("delete", () => this.#kv.deleteRange({ key }));
          break;
      }
    }
  }
}
