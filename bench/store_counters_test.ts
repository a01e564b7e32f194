import assert from "node:assert/strict";
import type { ReplicaStatus } from "../src/meta/curp/server.ts";
import {
  curpCounters,
  ETCD_PROPOSALS,
  ETCD_WAL_FSYNCS,
  etcdCounters,
  fuseRequestCounts,
  fuseRequestsPerOperation,
  parsePrometheusText,
  perOperation,
  type StoreCounters,
} from "./store_counters.ts";

// The shape of etcd 3.4's /metrics: HELP/TYPE comments, labelled samples, histogram series, and
// Go's exponent notation for large values.
const ETCD_METRICS =
  `# HELP etcd_disk_wal_fsync_duration_seconds The latency distributions of fsync called by WAL.
# TYPE etcd_disk_wal_fsync_duration_seconds histogram
etcd_disk_wal_fsync_duration_seconds_bucket{le="0.001"} 10
etcd_disk_wal_fsync_duration_seconds_bucket{le="+Inf"} 42
etcd_disk_wal_fsync_duration_seconds_sum 0.125
etcd_disk_wal_fsync_duration_seconds_count 42
# HELP etcd_server_proposals_committed_total The total number of consensus proposals committed.
# TYPE etcd_server_proposals_committed_total gauge
etcd_server_proposals_committed_total 1.234567e+06
etcd_grpc_requests{method="Range",note="a b}"} 3 1700000000000
etcd_grpc_requests{method="Txn"} 4
garbage-line-without-value
`;

Deno.test("parsePrometheusText sums samples per name, skipping comments and labels", () => {
  const m = parsePrometheusText(ETCD_METRICS);
  assert.equal(m.get(ETCD_WAL_FSYNCS), 42);
  assert.equal(m.get(ETCD_PROPOSALS), 1_234_567);
  assert.equal(m.get("etcd_disk_wal_fsync_duration_seconds_sum"), 0.125);
  // Label sets of one name add up; a timestamp after the value is ignored.
  assert.equal(m.get("etcd_grpc_requests"), 7);
  assert.equal(m.get("etcd_disk_wal_fsync_duration_seconds_bucket"), 52);
  assert.equal(m.has("garbage-line-without-value"), false);
});

Deno.test("etcdCounters reads proposals committed and WAL fsyncs, or names what is missing", () => {
  assert.deepEqual(etcdCounters(ETCD_METRICS), {
    replicas: { etcd: { proposals: 1_234_567, fsyncs: 42 } },
    missing: [],
  });
  assert.throws(
    () => etcdCounters(`${ETCD_PROPOSALS} 5\n`),
    /no etcd_disk_wal_fsync_duration_seconds_count/,
  );
});

function status(id: string, role: string, proposals: number, fsyncs: number): ReplicaStatus {
  return {
    id,
    role,
    term: 3,
    leaderId: "m1",
    commitIndex: 0,
    appliedIndex: 0,
    lastIndex: 0,
    snapshotIndex: 0,
    revision: 0,
    members: {},
    fastReplies: 0,
    slowReplies: 0,
    poolSize: 0,
    proposals,
    fsyncs,
    maxTickLagMs: 0,
    tickStalls: 0,
  };
}

Deno.test("curpCounters keeps each replica's counters, the leader, and who did not answer", () => {
  const c = curpCounters([
    { id: "m1", status: status("m1", "leader", 10, 20) },
    { id: "m2", status: status("m2", "follower", 0, 19) },
    { id: "m3", status: undefined },
  ]);
  assert.deepEqual(c, {
    replicas: { m1: { proposals: 10, fsyncs: 20 }, m2: { proposals: 0, fsyncs: 19 } },
    missing: ["m3"],
    leader: "m1",
    term: 3,
  });
});

function counters(
  replicas: Record<string, [number, number]>,
  leader = "m1",
  term = 1,
): StoreCounters {
  return {
    replicas: Object.fromEntries(
      Object.entries(replicas).map(([id, [proposals, fsyncs]]) => [id, { proposals, fsyncs }]),
    ),
    missing: [],
    leader,
    term,
  };
}

Deno.test("perOperation divides the deltas summed over replicas by the operations", () => {
  const before = counters({ m1: [100, 50], m2: [0, 48], m3: [0, 49] });
  const after = counters({ m1: [130, 70], m2: [0, 68], m3: [0, 69] });
  assert.deepEqual(perOperation(before, after, 10), {
    store_proposals: 30,
    store_fsyncs: 60,
    proposals_per_op: 3,
    fsyncs_per_op: 6,
    fsyncs_per_op_m1: 2,
    fsyncs_per_op_m2: 2,
    fsyncs_per_op_m3: 2,
  });
  // No operations (an empty phase): zero per operation, not NaN.
  assert.equal(perOperation(before, after, 0).proposals_per_op, 0);
});

Deno.test("perOperation notes a replica read once, a restart and a leader change", () => {
  const before = counters({ m1: [100, 50], m2: [7, 48] });
  const after = { ...counters({ m1: [90, 60], m3: [1, 1] }, "m3", 2), missing: ["m2"] };
  const d = perOperation(before, after, 5);
  // Only replicas read before and after with counters that did not go back are summed: none.
  assert.equal(d.store_proposals, 0);
  assert.equal(d.fsyncs_per_op, 0);
  const note = String(d.store_note);
  assert.match(note, /replica m1's counters went backwards/);
  assert.match(note, /replica m2 not read after/);
  assert.match(note, /replica m3 not read before/);
  assert.match(note, /leader changed during the phase \(m1@1 -> m3@2\)/);
  assert.equal(perOperation(before, before, 5).store_note, undefined);
});

Deno.test("FUSE request counts per opcode from a mount's /metrics, and per file operation", () => {
  const text = (lookups: number, creates: number) =>
    [
      "# TYPE skyfs_fuse_requests_total counter",
      `skyfs_fuse_requests_total{op="lookup",mount="/m"} ${lookups}`,
      `skyfs_fuse_requests_total{mount="/m",op="create"} ${creates}`,
      `skyfs_fuse_request_errors_total{op="lookup",mount="/m"} 3`,
    ].join("\n");
  const before = fuseRequestCounts(text(10, 4));
  assert.deepEqual(before, { lookup: 10, create: 4 });
  const after = fuseRequestCounts(text(30, 24));
  assert.deepEqual(fuseRequestsPerOperation(before, after, 20), {
    fuse_create_per_op: 1,
    fuse_lookup_per_op: 1,
    fuse_requests_per_op: 2,
  });
});
