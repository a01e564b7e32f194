/**
 * The HttpContext of a `skyfs meta serve` replica: its CURP metrics (role, term, indexes, log,
 * witness pool, snapshots sent), readiness (a leader is known) and the snapshot action.
 * @module
 */

import type { IoEngine } from "../io/types.ts";
import type { Logger } from "../log.ts";
import type { ReplicaServer } from "../meta/curp/server.ts";
import { MetricsRegistry, processMetrics } from "./metrics.ts";
import { registerUringMetrics } from "./mount_metrics.ts";
import type { HttpContext } from "./server.ts";

export interface ReplicaParts {
  server: ReplicaServer;
  io: IoEngine;
  logger: Logger;
  token?: string;
}

export function replicaHttpContext(parts: ReplicaParts): HttpContext {
  const { server } = parts;
  const node = server.replica.id;
  const metrics = new MetricsRegistry({ node });
  processMetrics(metrics);
  registerUringMetrics(metrics, parts.io);
  const r = server.replica;
  metrics.gauge(
    "skyfs_curp_is_leader",
    "1 while this replica is the CURP leader.",
    () => r.role === "leader" ? 1 : 0,
  );
  metrics.gauge("skyfs_curp_term", "The replica's current term.", () => r.term);
  metrics.gauge(
    "skyfs_curp_commit_index",
    "Highest log index known committed.",
    () => r.commitIndex,
  );
  metrics.gauge("skyfs_curp_applied_index", "Highest log index applied.", () => r.appliedIndex);
  metrics.gauge(
    "skyfs_curp_log_bytes",
    "Bytes of the replica's log file (entries since its last snapshot).",
    () => server.status().logBytes ?? 0,
  );
  metrics.gauge(
    "skyfs_curp_witness_pool_size",
    "Commands in the witness pool (accepted, not yet known committed).",
    () => r.pool.size,
  );
  metrics.counter(
    "skyfs_curp_snapshots_sent_total",
    "Snapshot transfers this replica started to a lagging follower.",
    () => r.snapshotsSent,
  );
  metrics.counter(
    "skyfs_curp_proposals_led_total",
    "Proposals this replica answered as leader, by path (fast: with a speculative result).",
    () => [[{ path: "fast" }, server.fastReplies], [{ path: "slow" }, server.slowReplies]],
    ["path"],
  );
  return {
    kind: "replica",
    node,
    metrics,
    logger: parts.logger,
    token: parts.token,
    status: () => Promise.resolve({ kind: "replica", ...server.status() }),
    ready: () => {
      const s = server.status();
      return Promise.resolve([
        s.role === "leader" || s.leaderId !== undefined ? { name: "leader", ok: true } : {
          name: "leader",
          ok: false,
          reason: `no leader known (role ${s.role}, term ${s.term})`,
        },
      ]);
    },
    admin: {
      snapshot: () => Promise.resolve(server.compactNow()),
    },
  };
}
