import assert from "node:assert/strict";
import { rates, snapshotOf } from "./figures.ts";
import { sampleMetrics } from "./_sample_metrics.ts";

const close = (actual: number | null | undefined, expected: number) =>
  assert(
    actual !== null && actual !== undefined && Math.abs(actual - expected) < 1e-9,
    `${actual} is not ${expected}`,
  );

Deno.test("rates: per-second figures between two scrapes one second apart", () => {
  const before = snapshotOf(sampleMetrics(1), 10_000);
  const after = snapshotOf(sampleMetrics(2), 11_000);
  const f = rates(before, after);
  assert.deepEqual(f.node, "a");
  assert.deepEqual(f.mountpoint, "/mnt/a");
  close(f.seconds, 1);
  close(f.fuse.all.perSecond, 1500);
  close(f.fuse.all.errorsPerSecond, 10);
  close(f.fuse.all.latencyMs, (1000 * 0.5) / 1500);
  close(f.fuse.ops.write.latencyMs, 1);
  close(f.fuse.ops.lookup.latencyMs, 0.05);
  close(f.fuse.readBytesPerSecond, 1048576);
  close(f.fuse.writeBytesPerSecond, 4 * 1048576);
  assert.deepEqual(f.fuse.openHandles, 3);
  close(f.meta.transactionsPerSecond, 200);
  close(f.meta.latencyMs, 2);
  close(f.curp.fastRatio, 0.9);
  close(f.curp.latencyMs, 1.2);
  assert.deepEqual(f.curp.isLeader, undefined);
  close(f.cache.tiers.local.hitRatio, 0.75);
  close(f.cache.tiers.peer.hitRatio, 0.8);
  close(f.cache.tiers.backend.hitRatio, 1);
  close(f.cache.tiers.local.readBytesPerSecond, 3 * 1048576);
  close(f.backend.all.perSecond, 10);
  close(f.backend.all.latencyMs, 10);
  close(f.uring.submissionsPerSecond, 5000);
  close(f.uring.entersPerSecond, 700);
  assert.deepEqual(f.uring.inflight, 10);
  close(f.process.cpuPercent, 35);
  close(f.process.loopDelayMs, 2.1);
});

Deno.test("rates: idle interval gives zero rates and no latency or ratio", () => {
  const before = snapshotOf(sampleMetrics(1), 0);
  const after = snapshotOf(sampleMetrics(1), 2000);
  const f = rates(before, after);
  assert.deepEqual(f.fuse.all.perSecond, 0);
  assert.deepEqual(f.fuse.all.latencyMs, null);
  assert.deepEqual(f.curp.fastRatio, null);
  assert.deepEqual(f.cache.tiers.local.hitRatio, null);
  assert.deepEqual(f.meta.latencyMs, null);
});

Deno.test("rates: a restarted daemon (counters went down) counts from zero", () => {
  const before = snapshotOf(sampleMetrics(5), 0);
  const after = snapshotOf(sampleMetrics(1), 1000);
  const f = rates(before, after);
  close(f.fuse.all.perSecond, 1500);
  close(f.fuse.ops.write.latencyMs, 1);
  assert(f.process.cpuPercent >= 0);
});

Deno.test("snapshotOf: replica gauges are present only where exported", () => {
  const replica = snapshotOf(
    sampleMetrics(1, "skyfs_curp_is_leader 1\nskyfs_curp_term 7\nskyfs_curp_commit_index 42\n"),
  );
  assert.deepEqual(replica.curp.isLeader, 1);
  assert.deepEqual(replica.curp.term, 7);
  const later = snapshotOf(
    sampleMetrics(1, "skyfs_curp_is_leader 1\nskyfs_curp_term 7\nskyfs_curp_commit_index 52\n"),
    replica.timeMs + 2000,
  );
  const f = rates(replica, later);
  assert.deepEqual(f.curp.isLeader, true);
  assert.deepEqual(f.curp.commitIndex, 52);
  assert.deepEqual(f.curp.logEntriesPerSecond, 5);
  assert.deepEqual(rates(later, later).curp.logEntriesPerSecond, 0);
  assert.deepEqual(snapshotOf(sampleMetrics(1)).curp.term, undefined);
});
