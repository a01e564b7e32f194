/**
 * What one file operation costs the metadata store of a cluster target: the store's monotonic
 * counters (log entries appended by the leader, fdatasyncs) read before and after each metadata
 * phase, turned into per-operation figures. CURP replicas report theirs in `skyfs meta status`'s
 * reply (`fetchStatus`); etcd in its Prometheus text at `/metrics`.
 * @module
 */
import type { ReplicaStatus } from "../src/meta/curp/server.ts";

/** One replica's (or etcd member's) counters at one moment. */
export interface ReplicaCounters {
  /** CURP: entries appended to the log as leader; etcd: proposals committed. */
  proposals: number;
  /** CURP: fdatasync/fsync calls of the replica's storage; etcd: WAL fsyncs. */
  fsyncs: number;
}

/** The store's counters at one moment, by replica id; `leader` and `term` when the store says. */
export interface StoreCounters {
  replicas: Record<string, ReplicaCounters>;
  /** Replicas that did not answer (their counters are not in `replicas`). */
  missing: string[];
  leader?: string;
  term?: number;
}

/** Metric samples of a Prometheus text exposition, summed per metric name over label sets. */
export function parsePrometheusText(text: string): Map<string, number> {
  const sums = new Map<string, number>();
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) continue;
    // name{labels} value [timestamp]; label values may hold spaces, so split after the braces.
    const brace = line.indexOf("{");
    const space = line.indexOf(" ");
    let name: string;
    let rest: string;
    if (brace >= 0 && (space < 0 || brace < space)) {
      const close = line.lastIndexOf("}");
      if (close < brace) continue;
      name = line.slice(0, brace);
      rest = line.slice(close + 1).trim();
    } else {
      if (space < 0) continue;
      name = line.slice(0, space);
      rest = line.slice(space + 1).trim();
    }
    const value = Number(rest.split(/\s+/)[0]);
    if (name === "" || !Number.isFinite(value)) continue;
    sums.set(name, (sums.get(name) ?? 0) + value);
  }
  return sums;
}

/** The etcd metrics the bench reads: proposals committed, and WAL fsyncs (each an fdatasync). */
export const ETCD_PROPOSALS = "etcd_server_proposals_committed_total";
export const ETCD_WAL_FSYNCS = "etcd_disk_wal_fsync_duration_seconds_count";

/** One etcd member's counters from its `/metrics` text; throws when a metric is absent. */
export function etcdCounters(text: string, member = "etcd"): StoreCounters {
  const metrics = parsePrometheusText(text);
  const proposals = metrics.get(ETCD_PROPOSALS);
  const fsyncs = metrics.get(ETCD_WAL_FSYNCS);
  if (proposals === undefined || fsyncs === undefined) {
    const absent = [ETCD_PROPOSALS, ETCD_WAL_FSYNCS].filter((name) => !metrics.has(name));
    throw new TypeError(`etcd /metrics has no ${absent.join(" and no ")}`);
  }
  return { replicas: { [member]: { proposals, fsyncs } }, missing: [] };
}

/** CURP replicas' counters from their statuses (undefined: the replica did not answer). */
export function curpCounters(
  statuses: readonly { id: string; status: ReplicaStatus | undefined }[],
): StoreCounters {
  const counters: StoreCounters = { replicas: {}, missing: [] };
  for (const { id, status } of statuses) {
    if (status === undefined) {
      counters.missing.push(id);
      continue;
    }
    counters.replicas[id] = { proposals: status.proposals, fsyncs: status.fsyncs };
    if (status.role === "leader") {
      counters.leader = id;
      counters.term = status.term;
    }
  }
  return counters;
}

/**
 * Per-operation figures for one phase of `ops` operations, for a measurement's `details`:
 * `proposals_per_op` and `fsyncs_per_op` (summed over the replicas read both times), the raw
 * deltas, `fsyncs_per_op_<id>` per replica, and `store_note` when a replica was not read both
 * times, the leader changed, or a counter went backwards (a restarted replica).
 */
export function perOperation(
  before: StoreCounters,
  after: StoreCounters,
  ops: number,
): Record<string, number | string> {
  const notes: string[] = [];
  let proposals = 0;
  let fsyncs = 0;
  const perReplica: Record<string, number> = {};
  const ids = [...new Set([...Object.keys(before.replicas), ...Object.keys(after.replicas)])]
    .sort();
  for (const id of ids) {
    const a = before.replicas[id];
    const b = after.replicas[id];
    if (a === undefined || b === undefined) {
      notes.push(`replica ${id} not read ${a === undefined ? "before" : "after"} the phase`);
      continue;
    }
    const dp = b.proposals - a.proposals;
    const df = b.fsyncs - a.fsyncs;
    if (dp < 0 || df < 0) {
      notes.push(`replica ${id}'s counters went backwards (restarted?)`);
      continue;
    }
    proposals += dp;
    fsyncs += df;
    perReplica[id] = df;
  }
  for (const id of [...before.missing, ...after.missing]) {
    if (!ids.includes(id)) notes.push(`replica ${id} did not answer`);
  }
  if (before.leader !== after.leader || before.term !== after.term) {
    notes.push(
      `leader changed during the phase (${before.leader ?? "none"}@${before.term ?? "?"} -> ` +
        `${after.leader ?? "none"}@${after.term ?? "?"})`,
    );
  }
  const perOp = (n: number) => ops > 0 ? n / ops : 0;
  const details: Record<string, number | string> = {
    store_proposals: proposals,
    store_fsyncs: fsyncs,
    proposals_per_op: perOp(proposals),
    fsyncs_per_op: perOp(fsyncs),
  };
  for (const [id, df] of Object.entries(perReplica)) details[`fsyncs_per_op_${id}`] = perOp(df);
  if (notes.length > 0) details.store_note = [...new Set(notes)].join("; ");
  return details;
}

/** Reads every CURP replica's counters (one status request each, 1 s limit). */
export async function readCurpCounters(
  replicas: readonly { id: string; address: string }[],
  fetchStatus: (address: string, timeoutMs: number) => Promise<ReplicaStatus>,
): Promise<StoreCounters> {
  const statuses = await Promise.all(replicas.map(async (r) => ({
    id: r.id,
    status: await fetchStatus(r.address, 1000).catch(() => undefined),
  })));
  return curpCounters(statuses);
}

/** Reads one etcd member's counters from `http://<client address>/metrics` (2 s limit). */
export async function readEtcdCounters(clientAddress: string): Promise<StoreCounters> {
  const response = await fetch(`http://${clientAddress}/metrics`, {
    signal: AbortSignal.timeout(2000),
  });
  const text = await response.text();
  if (!response.ok) {
    throw new Error(`etcd ${clientAddress}/metrics answered ${response.status}`);
  }
  return etcdCounters(text);
}

/** FUSE requests answered so far by a skyfs mount, per opcode name (`skyfs_fuse_requests_total`'s
 * `op` label in its `/metrics` text). */
export function fuseRequestCounts(text: string): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const line of text.split("\n")) {
    if (!line.startsWith("skyfs_fuse_requests_total{")) continue;
    const op = /[{,]op="([^"]*)"/.exec(line)?.[1];
    const value = Number(line.slice(line.lastIndexOf("}") + 1).trim().split(/\s+/)[0]);
    if (op === undefined || !Number.isFinite(value)) continue;
    counts[op] = (counts[op] ?? 0) + value;
  }
  return counts;
}

/** Reads a skyfs mount's FUSE request counts from `url` (its `/metrics`; 2 s limit). */
export async function readFuseRequests(url: string): Promise<Record<string, number>> {
  const response = await fetch(url, { signal: AbortSignal.timeout(2000) });
  const text = await response.text();
  if (!response.ok) throw new Error(`${url} answered ${response.status}`);
  return fuseRequestCounts(text);
}

/**
 * FUSE requests per file operation of one phase, for a measurement's `details`:
 * `fuse_requests_per_op` (all opcodes) and `fuse_<op>_per_op` for each opcode that moved.
 */
export function fuseRequestsPerOperation(
  before: Record<string, number>,
  after: Record<string, number>,
  ops: number,
): Record<string, number> {
  const details: Record<string, number> = {};
  let total = 0;
  for (const op of Object.keys(after).sort()) {
    const delta = after[op] - (before[op] ?? 0);
    if (delta <= 0) continue;
    total += delta;
    details[`fuse_${op}_per_op`] = ops > 0 ? delta / ops : 0;
  }
  details.fuse_requests_per_op = ops > 0 ? total / ops : 0;
  return details;
}
