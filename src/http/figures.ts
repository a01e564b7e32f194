/**
 * From `/metrics` to the figures people watch: a `Snapshot` keeps one scrape's cumulative
 * counters (by the names of the metric contract, README "Operating skyfs"), and `rates()` turns
 * two snapshots into per-second figures (operations, latency, bytes, hit ratios, CPU). Shared by
 * `skyfs stats`, the dashboard's sampler and its cluster table, so they cannot disagree.
 * @module
 */

import { MetricSet } from "./metrics_text.ts";

/** Count, errors and total seconds of one operation (a histogram's `_count` and `_sum`). */
export interface OpTotals {
  count: number;
  errors: number;
  seconds: number;
}

export const CACHE_TIERS = ["local", "peer", "backend"] as const;
export type CacheTier = typeof CACHE_TIERS[number];

/** One scrape's cumulative values. */
export interface Snapshot {
  timeMs: number;
  node?: string;
  mountpoint?: string;
  fuse: {
    ops: Record<string, OpTotals>;
    readBytes: number;
    writeBytes: number;
    passthroughOpens: number;
    openHandles: number;
  };
  shim: { granted: number; refused: number; reads: number; writes: number };
  meta: { transactions: number; seconds: number; conflicts: number; retries: number };
  curp: {
    fast: number;
    slow: number;
    seconds: number;
    /** Replica gauges: present on a `skyfs meta serve` process only. */
    isLeader?: number;
    term?: number;
    commitIndex?: number;
    appliedIndex?: number;
    logBytes?: number;
  };
  cache: {
    tiers: Record<CacheTier, { hits: number; misses: number; readBytes: number }>;
    evictions: number;
    usedBytes: number;
    capacityBytes: number;
  };
  peer: { servedBytes: number; fetchedBytes: number };
  backend: { ops: Record<string, OpTotals> };
  uring: { submissions: number; completions: number; enters: number; inflight: number };
  process: { rssBytes: number; heapBytes: number; loopDelaySeconds: number; cpuSeconds: number };
}

/** Read a snapshot out of `/metrics` text (or an already parsed set). */
export function snapshotOf(metrics: string | MetricSet, timeMs: number = Date.now()): Snapshot {
  const m = typeof metrics === "string" ? MetricSet.parse(metrics) : metrics;
  const tiers = {} as Snapshot["cache"]["tiers"];
  for (const tier of CACHE_TIERS) {
    tiers[tier] = {
      hits: m.sum("skyfs_cache_hits_total", { tier }),
      misses: m.sum("skyfs_cache_misses_total", { tier }),
      readBytes: m.sum("skyfs_cache_read_bytes_total", { tier }),
    };
  }
  return {
    timeMs,
    node: m.label("node"),
    mountpoint: m.label("mountpoint"),
    fuse: {
      ops: opTotals(
        m,
        "skyfs_fuse_requests_total",
        "skyfs_fuse_errors_total",
        "skyfs_fuse_request_duration_seconds",
      ),
      readBytes: m.sum("skyfs_fuse_read_bytes_total"),
      writeBytes: m.sum("skyfs_fuse_write_bytes_total"),
      passthroughOpens: m.sum("skyfs_fuse_passthrough_opens_total"),
      openHandles: m.sum("skyfs_fuse_open_handles"),
    },
    shim: {
      granted: m.sum("skyfs_shim_files_granted_total"),
      refused: m.sum("skyfs_shim_files_refused_total"),
      reads: m.sum("skyfs_shim_reads_total"),
      writes: m.sum("skyfs_shim_writes_total"),
    },
    meta: {
      transactions: m.sum("skyfs_meta_transactions_total"),
      seconds: m.sum("skyfs_meta_transaction_duration_seconds_sum"),
      conflicts: m.sum("skyfs_meta_conflicts_total"),
      retries: m.sum("skyfs_meta_retries_total"),
    },
    curp: {
      fast: m.sum("skyfs_curp_commits_total", { path: "fast" }),
      slow: m.sum("skyfs_curp_commits_total", { path: "slow" }),
      seconds: m.sum("skyfs_curp_commit_duration_seconds_sum"),
      isLeader: m.value("skyfs_curp_is_leader"),
      term: m.value("skyfs_curp_term"),
      commitIndex: m.value("skyfs_curp_commit_index"),
      appliedIndex: m.value("skyfs_curp_applied_index"),
      logBytes: m.value("skyfs_curp_log_bytes"),
    },
    cache: {
      tiers,
      evictions: m.sum("skyfs_cache_evictions_total"),
      usedBytes: m.sum("skyfs_cache_used_bytes"),
      capacityBytes: m.sum("skyfs_cache_capacity_bytes"),
    },
    peer: {
      servedBytes: m.sum("skyfs_peer_served_bytes_total"),
      fetchedBytes: m.sum("skyfs_peer_fetched_bytes_total"),
    },
    backend: {
      ops: opTotals(
        m,
        "skyfs_backend_requests_total",
        "skyfs_backend_errors_total",
        "skyfs_backend_request_duration_seconds",
      ),
    },
    uring: {
      submissions: m.sum("skyfs_uring_submissions_total"),
      completions: m.sum("skyfs_uring_completions_total"),
      enters: m.sum("skyfs_uring_enter_calls_total"),
      inflight: m.sum("skyfs_uring_inflight"),
    },
    process: {
      rssBytes: m.sum("process_resident_memory_bytes"),
      heapBytes: m.sum("skyfs_heap_used_bytes"),
      loopDelaySeconds: m.sum("skyfs_event_loop_delay_seconds"),
      cpuSeconds: m.sum("process_cpu_seconds_total"),
    },
  };
}

function opTotals(
  m: MetricSet,
  requests: string,
  errors: string,
  histogram: string,
): Record<string, OpTotals> {
  const out: Record<string, OpTotals> = {};
  const counts = m.byLabel(requests, "op");
  const failures = m.byLabel(errors, "op");
  const seconds = m.byLabel(`${histogram}_sum`, "op");
  for (const op of new Set([...counts.keys(), ...failures.keys(), ...seconds.keys()])) {
    out[op] = {
      count: counts.get(op) ?? 0,
      errors: failures.get(op) ?? 0,
      seconds: seconds.get(op) ?? 0,
    };
  }
  return out;
}

/** One operation's figures over an interval. Latency is the mean, null when nothing ran. */
export interface OpRates {
  perSecond: number;
  errorsPerSecond: number;
  latencyMs: number | null;
}

/** Per-second figures between two snapshots (ratios 0-1, null when there was nothing to count). */
export interface Figures {
  timeMs: number;
  seconds: number;
  node?: string;
  mountpoint?: string;
  fuse: {
    all: OpRates;
    ops: Record<string, OpRates>;
    readBytesPerSecond: number;
    writeBytesPerSecond: number;
    passthroughOpensPerSecond: number;
    openHandles: number;
  };
  shim: { readsPerSecond: number; writesPerSecond: number; grantedPerSecond: number };
  meta: {
    transactionsPerSecond: number;
    latencyMs: number | null;
    conflictsPerSecond: number;
    retriesPerSecond: number;
  };
  curp: {
    commitsPerSecond: number;
    fastRatio: number | null;
    latencyMs: number | null;
    isLeader?: boolean;
    term?: number;
    commitIndex?: number;
    /** A replica's commit index advance per second (log entries committed). */
    logEntriesPerSecond?: number;
  };
  cache: {
    tiers: Record<CacheTier, { hitRatio: number | null; readBytesPerSecond: number }>;
    evictionsPerSecond: number;
    usedBytes: number;
    capacityBytes: number;
  };
  peer: { servedBytesPerSecond: number; fetchedBytesPerSecond: number };
  backend: { all: OpRates; ops: Record<string, OpRates> };
  uring: {
    submissionsPerSecond: number;
    completionsPerSecond: number;
    entersPerSecond: number;
    inflight: number;
  };
  process: { cpuPercent: number; rssBytes: number; heapBytes: number; loopDelayMs: number };
}

/** A counter's increase; a smaller value means the process restarted and counts from zero. */
function increase(before: number, after: number): number {
  return after >= before ? after - before : after;
}

function opRates(
  before: OpTotals | undefined,
  after: OpTotals,
  seconds: number,
): OpRates {
  const count = increase(before?.count ?? 0, after.count);
  const spent = after.count >= (before?.count ?? 0)
    ? Math.max(0, after.seconds - (before?.seconds ?? 0))
    : after.seconds;
  return {
    perSecond: count / seconds,
    errorsPerSecond: increase(before?.errors ?? 0, after.errors) / seconds,
    latencyMs: count > 0 ? (1000 * spent) / count : null,
  };
}

function sumOps(ops: Record<string, OpTotals>): OpTotals {
  const total = { count: 0, errors: 0, seconds: 0 };
  for (const op of Object.values(ops)) {
    total.count += op.count;
    total.errors += op.errors;
    total.seconds += op.seconds;
  }
  return total;
}

function ratio(part: number, whole: number): number | null {
  return whole > 0 ? part / whole : null;
}

/** The figures between `before` and `after` (a later scrape of the same process). */
export function rates(before: Snapshot, after: Snapshot): Figures {
  const seconds = Math.max(0.001, (after.timeMs - before.timeMs) / 1000);
  const per = (a: number, b: number) => increase(a, b) / seconds;
  const opsOf = (b: Record<string, OpTotals>, a: Record<string, OpTotals>) => {
    const out: Record<string, OpRates> = {};
    for (const op of Object.keys(a).sort()) out[op] = opRates(b[op], a[op], seconds);
    return out;
  };
  const tiers = {} as Figures["cache"]["tiers"];
  for (const tier of CACHE_TIERS) {
    const b = before.cache.tiers[tier];
    const a = after.cache.tiers[tier];
    const hits = increase(b.hits, a.hits);
    tiers[tier] = {
      hitRatio: ratio(hits, hits + increase(b.misses, a.misses)),
      readBytesPerSecond: per(b.readBytes, a.readBytes),
    };
  }
  const fast = increase(before.curp.fast, after.curp.fast);
  const commits = fast + increase(before.curp.slow, after.curp.slow);
  const transactions = increase(before.meta.transactions, after.meta.transactions);
  return {
    timeMs: after.timeMs,
    seconds,
    node: after.node,
    mountpoint: after.mountpoint,
    fuse: {
      all: opRates(sumOps(before.fuse.ops), sumOps(after.fuse.ops), seconds),
      ops: opsOf(before.fuse.ops, after.fuse.ops),
      readBytesPerSecond: per(before.fuse.readBytes, after.fuse.readBytes),
      writeBytesPerSecond: per(before.fuse.writeBytes, after.fuse.writeBytes),
      passthroughOpensPerSecond: per(before.fuse.passthroughOpens, after.fuse.passthroughOpens),
      openHandles: after.fuse.openHandles,
    },
    shim: {
      readsPerSecond: per(before.shim.reads, after.shim.reads),
      writesPerSecond: per(before.shim.writes, after.shim.writes),
      grantedPerSecond: per(before.shim.granted, after.shim.granted),
    },
    meta: {
      transactionsPerSecond: transactions / seconds,
      latencyMs: transactions > 0
        ? (1000 * Math.max(0, after.meta.seconds - before.meta.seconds)) / transactions
        : null,
      conflictsPerSecond: per(before.meta.conflicts, after.meta.conflicts),
      retriesPerSecond: per(before.meta.retries, after.meta.retries),
    },
    curp: {
      commitsPerSecond: commits / seconds,
      fastRatio: ratio(fast, commits),
      latencyMs: commits > 0
        ? (1000 * Math.max(0, after.curp.seconds - before.curp.seconds)) / commits
        : null,
      isLeader: after.curp.isLeader === undefined ? undefined : after.curp.isLeader > 0,
      term: after.curp.term,
      commitIndex: after.curp.commitIndex,
      logEntriesPerSecond: after.curp.commitIndex === undefined
        ? undefined
        // An index, not a counter: a restarted replica resumes from its log, so no reset rule.
        : Math.max(
          0,
          after.curp.commitIndex - (before.curp.commitIndex ?? after.curp.commitIndex),
        ) /
          seconds,
    },
    cache: {
      tiers,
      evictionsPerSecond: per(before.cache.evictions, after.cache.evictions),
      usedBytes: after.cache.usedBytes,
      capacityBytes: after.cache.capacityBytes,
    },
    peer: {
      servedBytesPerSecond: per(before.peer.servedBytes, after.peer.servedBytes),
      fetchedBytesPerSecond: per(before.peer.fetchedBytes, after.peer.fetchedBytes),
    },
    backend: {
      all: opRates(sumOps(before.backend.ops), sumOps(after.backend.ops), seconds),
      ops: opsOf(before.backend.ops, after.backend.ops),
    },
    uring: {
      submissionsPerSecond: per(before.uring.submissions, after.uring.submissions),
      completionsPerSecond: per(before.uring.completions, after.uring.completions),
      entersPerSecond: per(before.uring.enters, after.uring.enters),
      inflight: after.uring.inflight,
    },
    process: {
      cpuPercent: (100 * increase(before.process.cpuSeconds, after.process.cpuSeconds)) / seconds,
      rssBytes: after.process.rssBytes,
      heapBytes: after.process.heapBytes,
      loopDelayMs: 1000 * after.process.loopDelaySeconds,
    },
  };
}
