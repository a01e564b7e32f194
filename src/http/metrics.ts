/**
 * Prometheus metrics for /metrics, produced by prom-client. The processes count on their hot paths
 * into plain numbers and typed arrays allocated once (src/fuse/counters.ts, the shim server's and
 * the cache's stats, the io_uring engine's counters); here each metric is declared once with a
 * `collect()` that copies those numbers into prom-client at scrape time. Nothing here runs per
 * FUSE request.
 * @module
 */

import client from "prom-client";
import { monitorEventLoopDelay } from "node:perf_hooks";

export type Labels = Record<string, string>;
/** A metric's current values: one number (no labels) or one per label set. */
export type Sample = number | [Labels, number][];

/** One histogram series: cumulative bucket counts (one per bound plus +Inf), sum and count. */
export interface HistogramSeries {
  labels: Labels;
  cumulative: ArrayLike<number>;
  sum: number;
}

/** A prom-client registry with skyfs's constant labels and helpers to declare collected metrics. */
export class MetricsRegistry {
  readonly registry: client.Registry;

  /** `labels`: constant labels on every series (`node`, and `mountpoint` on a mount). */
  constructor(labels: Labels) {
    this.registry = new client.Registry();
    this.registry.setDefaultLabels(labels);
  }

  /** A counter whose value is read from `read()` at each scrape. */
  counter(name: string, help: string, read: () => Sample, labelNames: string[] = []): void {
    new client.Counter({
      name,
      help,
      labelNames,
      registers: [this.registry],
      collect() {
        this.reset();
        const value = read();
        if (typeof value === "number") this.inc(value);
        else for (const [labels, v] of value) this.inc(labels, v);
      },
    });
  }

  /** A gauge whose value is read from `read()` at each scrape. */
  gauge(name: string, help: string, read: () => Sample, labelNames: string[] = []): void {
    new client.Gauge({
      name,
      help,
      labelNames,
      registers: [this.registry],
      collect() {
        this.reset();
        const value = read();
        if (typeof value === "number") this.set(value);
        else for (const [labels, v] of value) this.set(labels, v);
      },
    });
  }

  /**
   * A histogram whose buckets are counted elsewhere (preallocated arrays) and read at scrape
   * time. prom-client's Histogram only takes one observation at a time, so this registers an
   * object with the registry's metric interface (`get()`); prom-client formats it.
   */
  histogram(
    name: string,
    help: string,
    buckets: readonly number[],
    read: () => HistogramSeries[],
  ): void {
    const metric = {
      name,
      help,
      type: "histogram",
      aggregator: "sum",
      reset() {},
      get() {
        const values: { metricName: string; labels: Labels; value: number }[] = [];
        for (const series of read()) {
          const count = series.cumulative[buckets.length];
          buckets.forEach((bound, i) =>
            values.push({
              metricName: `${name}_bucket`,
              labels: { ...series.labels, le: String(bound) },
              value: series.cumulative[i],
            })
          );
          values.push({
            metricName: `${name}_bucket`,
            labels: { ...series.labels, le: "+Inf" },
            value: count,
          });
          values.push({ metricName: `${name}_sum`, labels: series.labels, value: series.sum });
          values.push({ metricName: `${name}_count`, labels: series.labels, value: count });
        }
        return Promise.resolve({ name, help, type: "histogram", aggregator: "sum", values });
      },
    };
    this.registry.registerMetric(metric as unknown as client.Metric);
  }

  /** The exposition text. */
  metrics(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}

const PROMTOOL_REJECTED = [
  "nodejs_active_handles_total",
  "nodejs_active_requests_total",
  "nodejs_active_resources_total",
];

/**
 * Process metrics: prom-client's default collectors (they work under Deno 2.9: process CPU,
 * resident memory, file descriptors, heap, event-loop lag; three of them removed, see below), plus `skyfs_heap_used_bytes` from
 * Deno.memoryUsage and `skyfs_event_loop_delay_seconds`, the largest event-loop delay since the
 * previous scrape (a histogram sampled by the runtime every 20 ms, reset at each scrape).
 */
export function processMetrics(metrics: MetricsRegistry): void {
  client.collectDefaultMetrics({ register: metrics.registry });
  // Gauges named like counters (promtool check metrics rejects them); the same counts are in
  // nodejs_active_handles, nodejs_active_requests and nodejs_active_resources by type.
  for (const name of PROMTOOL_REJECTED) metrics.registry.removeSingleMetric(name);
  metrics.gauge(
    "skyfs_heap_used_bytes",
    "JavaScript heap in use (Deno.memoryUsage().heapUsed).",
    () => Deno.memoryUsage().heapUsed,
  );
  const delay = monitorEventLoopDelay({ resolution: 20 });
  delay.enable();
  metrics.gauge(
    "skyfs_event_loop_delay_seconds",
    "Largest delay of the event loop since the previous scrape (sampled every 20 ms).",
    () => {
      const max = delay.count > 0 ? delay.max / 1e9 : 0;
      delay.reset();
      return max;
    },
  );
}
