/**
 * The mount daemon's metrics (names are a contract with the dashboard and `skyfs stats`; see the
 * README's "Operating skyfs"). Every value is read at scrape time from counters the daemon keeps
 * anyway; see metrics.ts.
 * @module
 */

import { DURATION_BUCKETS } from "../duration_histogram.ts";
import { OPCODE_SLOTS } from "../fuse/counters.ts";
import type { FuseServer } from "../fuse/server.ts";
import { opcodeNames } from "../fuse/wire.ts";
import type { ShimServer } from "../intercept/server.ts";
import type { IoEngine } from "../io/types.ts";
import type { UringStats } from "../io/uring.ts";
import type { ClusterNode } from "../cluster/node.ts";
import type { VfsWithRecovery } from "../vfs/vfs.ts";
import type { MetaKV } from "../meta/kv.ts";
import { CurpKV } from "../meta/curp/curp_kv.ts";
import { BACKEND_OPS, CountedBackend } from "../cache/backend.ts";
import type { DurationHistogram } from "../duration_histogram.ts";
import {
  type HistogramSeries,
  type Labels,
  type MetricsRegistry,
  processMetrics,
} from "./metrics.ts";

export interface MountMetricSources {
  fuse: FuseServer;
  vfs: VfsWithRecovery;
  kv: MetaKV;
  shim: ShimServer;
  io: IoEngine;
  cluster?: ClusterNode;
}

const opNames: string[] = Array.from(
  { length: OPCODE_SLOTS },
  (_, opcode) => (opcodeNames.get(opcode) ?? `OP${opcode}`).toLowerCase(),
);

/** [labels, value] for every opcode with a non-zero entry in `values`. */
function perOp(values: Float64Array, seen: Float64Array): [Labels, number][] {
  const out: [Labels, number][] = [];
  for (let opcode = 0; opcode < OPCODE_SLOTS; opcode++) {
    if (seen[opcode] > 0) out.push([{ op: opNames[opcode] }, values[opcode]]);
  }
  return out;
}

export function registerMountMetrics(metrics: MetricsRegistry, sources: MountMetricSources): void {
  processMetrics(metrics);
  const counters = sources.fuse.counters;
  metrics.counter(
    "skyfs_fuse_requests_total",
    "FUSE requests answered, per operation.",
    () => perOp(counters.requests, counters.requests),
    ["op"],
  );
  metrics.counter(
    "skyfs_fuse_errors_total",
    "FUSE requests answered with an errno, per operation.",
    () => perOp(counters.errors, counters.requests),
    ["op"],
  );
  metrics.histogram(
    "skyfs_fuse_request_duration_seconds",
    "Time from reading a FUSE request to writing its reply, per operation.",
    DURATION_BUCKETS,
    () => {
      const series: HistogramSeries[] = [];
      for (let opcode = 0; opcode < OPCODE_SLOTS; opcode++) {
        if (counters.requests[opcode] === 0) continue;
        series.push({
          labels: { op: opNames[opcode] },
          cumulative: counters.durations.cumulative(opcode),
          sum: counters.durations.sums[opcode],
        });
      }
      return series;
    },
  );
  metrics.counter(
    "skyfs_fuse_read_bytes_total",
    "Bytes returned by FUSE READ requests (reads served by passthrough or the page cache never reach the daemon).",
    () => counters.readBytes,
  );
  metrics.counter(
    "skyfs_fuse_write_bytes_total",
    "Bytes written by FUSE WRITE requests.",
    () => counters.writeBytes,
  );
  metrics.counter(
    "skyfs_fuse_passthrough_opens_total",
    "Opens answered with FUSE passthrough (the kernel then reads and writes the local file).",
    () => counters.passthroughOpens,
  );
  metrics.gauge(
    "skyfs_fuse_open_handles",
    "File and directory handles open now.",
    () => sources.vfs.openHandles().length,
  );

  const shim = sources.shim.stats;
  metrics.counter(
    "skyfs_shim_files_granted_total",
    "Files whose local fd the daemon handed to a process running the LD_PRELOAD shim.",
    () => shim.granted,
  );
  metrics.counter(
    "skyfs_shim_files_refused_total",
    "Shim requests for a file's local fd that the daemon refused.",
    () => shim.refused,
  );
  metrics.counter(
    "skyfs_shim_reads_total",
    "Reads the LD_PRELOAD shim served in-process, as processes reported them (at closes, at most once a second, and at exit).",
    () => shim.reads,
  );
  metrics.counter(
    "skyfs_shim_writes_total",
    "Writes the LD_PRELOAD shim served in-process, as processes reported them (at closes, at most once a second, and at exit).",
    () => shim.writes,
  );

  registerMetaMetrics(metrics, sources.vfs, sources.kv);
  registerUringMetrics(metrics, sources.io);
  registerCacheMetrics(metrics, sources.cluster, counters);
}

/** One histogram series per label set, from the series of a DurationHistogram. */
function seriesOf(histogram: DurationHistogram, labels: Labels[]): HistogramSeries[] {
  return labels.map((l, i) => ({
    labels: l,
    cumulative: histogram.cumulative(i),
    sum: histogram.sums[i],
  }));
}

/** The namespace's transactions and, on CURP, the client's commits by path. */
function registerMetaMetrics(metrics: MetricsRegistry, vfs: VfsWithRecovery, kv: MetaKV): void {
  const meta = vfs.metaCounters;
  metrics.counter(
    "skyfs_meta_transactions_total",
    "Metadata operations run, each one transaction (retries included in one).",
    () => meta.transactions,
  );
  metrics.histogram(
    "skyfs_meta_transaction_duration_seconds",
    "Time of a metadata operation, its retries included.",
    DURATION_BUCKETS,
    () => seriesOf(meta.durations, [{}]),
  );
  metrics.counter(
    "skyfs_meta_conflicts_total",
    "Commits or read validations refused because a key read had changed.",
    () => meta.conflicts,
  );
  metrics.counter(
    "skyfs_meta_retries_total",
    "Metadata operations run again after a conflict.",
    () => meta.retries,
  );
  const curp = kv instanceof CurpKV ? kv : undefined;
  metrics.counter(
    "skyfs_curp_commits_total",
    "CURP commands committed by this client: fast (one round trip) or slow path (zero when the metadata is not CURP).",
    () => [[{ path: "fast" }, curp?.fastCount ?? 0], [{ path: "slow" }, curp?.slowCount ?? 0]],
    ["path"],
  );
  metrics.histogram(
    "skyfs_curp_commit_duration_seconds",
    "Time from submitting a CURP command to its completion, by path.",
    DURATION_BUCKETS,
    () => curp ? seriesOf(curp.commitDurations, [{ path: "fast" }, { path: "slow" }]) : [],
  );
}

/** io_uring counters; all zero on the portable engine. */
export function registerUringMetrics(metrics: MetricsRegistry, io: IoEngine): void {
  const engine = io as IoEngine & { stats?: () => UringStats; inFlight?: number };
  const stats = () => engine.kind === "io_uring" && engine.stats ? engine.stats() : undefined;
  metrics.counter(
    "skyfs_uring_submissions_total",
    "Operations submitted to io_uring.",
    () => stats()?.submissions ?? 0,
  );
  metrics.counter(
    "skyfs_uring_completions_total",
    "io_uring operations completed.",
    () => stats()?.completions ?? 0,
  );
  metrics.counter(
    "skyfs_uring_enter_calls_total",
    "Calls into the native ring that enter the kernel (submit, reap and wait calls).",
    () => {
      const s = stats();
      return s ? s.submitCalls + s.reapCalls + s.waitCalls : 0;
    },
  );
  metrics.gauge(
    "skyfs_uring_inflight",
    "io_uring operations holding a slot now.",
    () => engine.kind === "io_uring" ? engine.inFlight ?? 0 : 0,
  );
}

/** The chunk cache of a cluster node; zero on a single node, whose local files are the data. */
function registerCacheMetrics(
  metrics: MetricsRegistry,
  cluster: ClusterNode | undefined,
  fuse: FuseServer["counters"],
): void {
  const stats = cluster?.data.stats;
  metrics.counter(
    "skyfs_cache_read_bytes_total",
    "Bytes read through this node by where they came from: local (FUSE reads answered from the local file), peer, backend (fetched into the cache or a reader), inline (a small file's data from its chunk map).",
    () => [
      [{ tier: "local" }, stats ? Math.max(0, fuse.readBytes - stats.peerDirectBytes) : 0],
      [{ tier: "peer" }, stats?.peerFetchedBytes ?? 0],
      [{ tier: "backend" }, stats?.backendFetchedBytes ?? 0],
      [{ tier: "inline" }, stats?.inlineBytes ?? 0],
    ],
    ["tier"],
  );
  metrics.counter(
    "skyfs_read_bytes_total",
    "Bytes a cache miss read, by tier nearest first: peer_zone (a peer of this node's zone), backend_zone (this zone's store), peer_remote (a peer of another zone), backend_remote (another zone's store), inline (a small file's data kept in its chunk map, cluster.inline_bytes).",
    () => [
      [{ tier: "peer_zone" }, stats?.peerZoneBytes ?? 0],
      [{ tier: "backend_zone" }, stats?.backendZoneBytes ?? 0],
      [{ tier: "peer_remote" }, stats?.peerRemoteBytes ?? 0],
      [{ tier: "backend_remote" }, stats?.backendRemoteBytes ?? 0],
      [{ tier: "inline" }, stats?.inlineBytes ?? 0],
    ],
    ["tier"],
  );
  const replication = cluster?.replication.stats;
  metrics.gauge(
    "skyfs_replication_queue_length",
    "Copies to other zones queued in this node's zone (cl/repl/<zone>/), at this node's last look.",
    () => replication?.queueLength ?? 0,
  );
  metrics.gauge(
    "skyfs_replication_queue_oldest_seconds",
    "Age of the oldest queued copy of this node's zone at its last look (0: none).",
    () => (replication?.oldestMs ?? 0) / 1000,
  );
  metrics.counter(
    "skyfs_replication_copies_total",
    "Chunk copies to other zones this node made: queued (one per target zone) or sync (before a publish, cluster.zone_sync).",
    () => [
      [{ mode: "queued" }, replication?.copies ?? 0],
      [{ mode: "sync" }, stats?.syncCopies ?? 0],
    ],
    ["mode"],
  );
  metrics.counter(
    "skyfs_replication_copied_bytes_total",
    "Bytes this node copied to other zones' stores from the replication queue.",
    () => replication?.copiedBytes ?? 0,
  );
  metrics.counter(
    "skyfs_replication_failures_total",
    "Queued copies this node tried and could not make (left queued, retried).",
    () => replication?.failures ?? 0,
  );
  metrics.counter(
    "skyfs_replication_takeovers_total",
    "Queued copies this node took over from a node of its zone that left.",
    () => replication?.takenOver ?? 0,
  );
  metrics.counter(
    "skyfs_peer_served_bytes_total",
    "Bytes of chunks served to other nodes (a range request counts its whole chunk).",
    () => stats?.peerServedBytes ?? 0,
  );
  metrics.counter(
    "skyfs_peer_fetched_bytes_total",
    "Bytes received from other nodes.",
    () => stats?.peerFetchedBytes ?? 0,
  );
  const backend = cluster?.backend instanceof CountedBackend ? cluster.backend : undefined;
  const perBackendOp = (values: Float64Array | undefined): [Labels, number][] =>
    BACKEND_OPS.map((op, i) => [{ op }, values?.[i] ?? 0]);
  metrics.counter(
    "skyfs_backend_requests_total",
    "Requests to the backend store by operation (zero without a backend).",
    () => perBackendOp(backend?.requests),
    ["op"],
  );
  metrics.counter(
    "skyfs_zone_backend_requests_total",
    "Requests to each zone's backend store this node made (its own zone's and the others': placement copies, reads of other zones, GC), by operation.",
    () =>
      [...(cluster?.zoneBackends ?? [])].flatMap(([zone, store]) =>
        BACKEND_OPS.map((op, i): [Labels, number] => [{ zone, op }, store.requests[i]])
      ),
    ["zone", "op"],
  );
  metrics.gauge(
    "skyfs_zone_store_down",
    "1 for another zone's store marked down (a read request to it failed; skipped for cluster.zone_down_ms unless it is the last place a chunk can come from) until it answers again.",
    () =>
      [...(cluster?.zoneBackends.keys() ?? [])].filter((z) => z !== cluster?.data.zones?.zone)
        .map((zone): [Labels, number] => [{ zone }, cluster?.data.zonesDown.has(zone) ? 1 : 0]),
    ["zone"],
  );
  metrics.counter(
    "skyfs_backend_errors_total",
    "Backend requests that failed, by operation.",
    () => perBackendOp(backend?.errors),
    ["op"],
  );
  metrics.histogram(
    "skyfs_backend_request_duration_seconds",
    "Time of a backend request, by operation.",
    DURATION_BUCKETS,
    () => backend ? seriesOf(backend.durations, BACKEND_OPS.map((op) => ({ op }))) : [],
  );
  metrics.counter(
    "skyfs_cache_hits_total",
    "Chunk reads answered from a tier: local (this node's cache), peer, backend.",
    () => [
      [{ tier: "local" }, stats?.hits ?? 0],
      [{ tier: "peer" }, (stats?.peerFills ?? 0) + (stats?.peerReads ?? 0)],
      [{ tier: "backend" }, Math.max(0, (stats?.misses ?? 0) - (stats?.peerFills ?? 0))],
    ],
    ["tier"],
  );
  metrics.counter(
    "skyfs_cache_misses_total",
    "Chunk reads a tier could not answer (local: went to a peer or the backend).",
    () => [[{ tier: "local" }, stats?.misses ?? 0]],
    ["tier"],
  );
  metrics.counter(
    "skyfs_cache_evictions_total",
    "Chunks evicted from the local cache.",
    () => stats?.evictions ?? 0,
  );
  metrics.gauge(
    "skyfs_cache_used_bytes",
    "Bytes held in the local chunk cache.",
    () => stats?.bytes ?? 0,
  );
  metrics.gauge(
    "skyfs_cache_capacity_bytes",
    "Limit of the local chunk cache.",
    () => stats?.capacityBytes ?? 0,
  );
}
