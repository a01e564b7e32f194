/**
 * `skyfs status`: the metadata replicas (CURP: each one's role, term and applied index, or why it
 * does not answer) and the live nodes of a cluster (from their membership records in metadata),
 * each with its peer address, cache use and hit rate, and the zones' replication queues. `clusterStatusReport` is the data (also
 * served as JSON at /api/v1/status), `clusterStatus` the text the command prints.
 * @module
 */

import type { MetaKV } from "../meta/kv.ts";
import { prefixEnd } from "../meta/kv.ts";
import { REPL_PREFIX } from "../cache/cluster_data.ts";
import { CurpKV } from "../meta/curp/curp_kv.ts";
import { fetchStatus, type ReplicaStatus } from "../meta/curp/server.ts";
import { listNodes, type NodeInfo } from "./membership.ts";
import { probeRdma } from "./rdma_probe.ts";
import { DEFAULT_ZONE, listZones } from "./zones.ts";

export interface ReplicaReport {
  id: string;
  address: string;
  /** The replica's answer, or why it did not answer. */
  status?: ReplicaStatus;
  unreachable?: string;
}

/** A zone: its backend store (from its record) and how many live nodes it has. */
export interface ZoneReport {
  zone: string;
  /** Absent for a zone whose live nodes have no record (nodes older than zones). */
  backend?: string;
  liveNodes: number;
  /** Copies to other zones queued by writers of this zone (`cl/repl/<zone>/`), when any. */
  queued?: number;
  /** Age of the oldest of them, ms. */
  oldestQueuedMs?: number;
}

export interface ClusterStatusReport {
  /** CURP replicas (absent for etcd and the embedded store). */
  replicas?: ReplicaReport[];
  leaders?: string[];
  nodes: NodeInfo[];
  zones: ZoneReport[];
  rdma: string;
}

export async function clusterStatusReport(kv: MetaKV): Promise<ClusterStatusReport> {
  const replicas = kv instanceof CurpKV ? await replicaReports(kv) : undefined;
  const nodes = (await listNodes(kv)).sort((a, b) => a.id < b.id ? -1 : 1);
  const leaders = replicas?.flatMap((r) => r.status?.role === "leader" ? [r.id] : []);
  for (const node of nodes) node.zone ??= DEFAULT_ZONE;
  const zones = new Map<string, ZoneReport>();
  for (const record of await listZones(kv)) {
    zones.set(record.zone, { zone: record.zone, backend: record.backend, liveNodes: 0 });
  }
  for (const node of nodes) {
    const zone = zones.get(node.zone!) ?? { zone: node.zone!, liveNodes: 0 };
    zone.liveNodes++;
    zones.set(zone.zone, zone);
  }
  const now = Date.now();
  const prefix = new TextEncoder().encode(REPL_PREFIX);
  for (const item of (await kv.range({ key: prefix, rangeEnd: prefixEnd(prefix) })).kvs) {
    let entry: { queuedMs?: number };
    try {
      entry = JSON.parse(new TextDecoder().decode(item.value));
    } catch {
      continue; // a foreign value
    }
    const name = new TextDecoder().decode(item.key.subarray(prefix.length)).split("/")[0];
    const zone = zones.get(name) ?? { zone: name, liveNodes: 0 };
    zone.queued = (zone.queued ?? 0) + 1;
    zone.oldestQueuedMs = Math.max(zone.oldestQueuedMs ?? 0, now - (entry.queuedMs ?? now));
    zones.set(name, zone);
  }
  const sorted = [...zones.values()].sort((a, b) => a.zone < b.zone ? -1 : 1);
  return { replicas, leaders, nodes, zones: sorted, rdma: probeRdma().reason };
}

export async function clusterStatus(kv: MetaKV): Promise<string> {
  const report = await clusterStatusReport(kv);
  const lines = report.replicas ? replicaLines(report.replicas, report.leaders ?? []) : [];
  lines.push(`${report.zones.length} zone(s)`);
  lines.push("  zone                              live nodes  backend");
  for (const zone of report.zones) {
    lines.push(
      `  ${zone.zone.padEnd(33)} ${String(zone.liveNodes).padStart(10)}  ${
        zone.backend ?? "(no record)"
      }`,
    );
  }
  const queues = report.zones.filter((z) => z.queued);
  if (queues.length > 0 || report.zones.length > 1) {
    lines.push(
      `replication queue: ${
        queues.length === 0
          ? "empty"
          : queues.map((z) =>
            `${z.zone} ${z.queued} cop${z.queued === 1 ? "y" : "ies"} (oldest ${
              ((z.oldestQueuedMs ?? 0) / 1000).toFixed(1)
            } s)`
          ).join(", ")
      }`,
    );
  }
  lines.push(`${report.nodes.length} live node(s); rdma: ${report.rdma}`);
  lines.push(
    "node          zone          peer address           cache used / limit     hit rate  peer fills",
  );
  for (const node of report.nodes) {
    const s = node.stats ?? {};
    const lookups = (s.hits ?? 0) + (s.misses ?? 0);
    const rate = lookups === 0 ? "-" : `${((100 * (s.hits ?? 0)) / lookups).toFixed(1)}%`;
    const gib = (n: number | undefined) => `${((n ?? 0) / 2 ** 30).toFixed(2)} GiB`;
    lines.push(
      `${node.id.padEnd(13)} ${(node.zone ?? DEFAULT_ZONE).padEnd(13)} ${node.address.padEnd(22)} ${
        `${gib(s.bytes)} / ${gib(s.capacityBytes)}`.padEnd(22)
      } ${rate.padStart(8)}  ${s.peerFills ?? 0}`,
    );
  }
  return lines.join("\n");
}

/** Every CURP replica, asked in parallel (a dead one costs one second, not more). */
async function replicaReports(kv: CurpKV): Promise<ReplicaReport[]> {
  const members = Object.entries(kv.members).sort(([a], [b]) => a < b ? -1 : 1);
  const answers = await Promise.all(
    members.map(([, address]) => fetchStatus(address, 1000).catch((e) => e as Error)),
  );
  return members.map(([id, address], i) => {
    const s = answers[i];
    return s instanceof Error
      ? { id, address, unreachable: s.message }
      : { id, address, status: s };
  });
}

function replicaLines(replicas: ReplicaReport[], leaders: string[]): string[] {
  const lines = [
    `metadata: ${replicas.length} CURP replicas, ${
      leaders.length > 0 ? `leader ${leaders.join(",")}` : "no leader"
    }`,
  ];
  for (const { id, address, status: s, unreachable } of replicas) {
    lines.push(
      `  ${id.padEnd(11)} ${address.padEnd(22)} ${
        s === undefined
          ? `unreachable: ${unreachable}`
          : `${s.role} term ${s.term} applied ${s.appliedIndex} revision ${s.revision}`
      }`,
    );
  }
  return lines;
}
