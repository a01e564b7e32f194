/**
 * `skyfs status`: the metadata replicas (CURP: each one's role, term and applied index, or why it
 * does not answer) and the live nodes of a cluster (from their membership records in metadata),
 * each with its peer address, cache use and hit rate.
 * @module
 */

import type { MetaKV } from "../meta/kv.ts";
import { CurpKV } from "../meta/curp/curp_kv.ts";
import { fetchStatus } from "../meta/curp/server.ts";
import { listNodes } from "./membership.ts";
import { probeRdma } from "./rdma_probe.ts";

export async function clusterStatus(kv: MetaKV): Promise<string> {
  const lines = kv instanceof CurpKV ? await replicaLines(kv) : [];
  const nodes = await listNodes(kv);
  lines.push(`${nodes.length} live node(s); rdma: ${probeRdma().reason}`);
  lines.push("node          peer address           cache used / limit     hit rate  peer fills");
  for (const node of nodes.sort((a, b) => a.id < b.id ? -1 : 1)) {
    const s = node.stats ?? {};
    const lookups = (s.hits ?? 0) + (s.misses ?? 0);
    const rate = lookups === 0 ? "-" : `${((100 * (s.hits ?? 0)) / lookups).toFixed(1)}%`;
    const gib = (n: number | undefined) => `${((n ?? 0) / 2 ** 30).toFixed(2)} GiB`;
    lines.push(
      `${node.id.padEnd(13)} ${node.address.padEnd(22)} ${
        `${gib(s.bytes)} / ${gib(s.capacityBytes)}`.padEnd(22)
      } ${rate.padStart(8)}  ${s.peerFills ?? 0}`,
    );
  }
  return lines.join("\n");
}

/** One line per CURP replica, asked in parallel (a dead one costs one second, not more). */
async function replicaLines(kv: CurpKV): Promise<string[]> {
  const members = Object.entries(kv.members).sort(([a], [b]) => a < b ? -1 : 1);
  const answers = await Promise.all(
    members.map(([, address]) => fetchStatus(address, 1000).catch((e) => e as Error)),
  );
  const leaders = answers.flatMap((s) => s instanceof Error || s.role !== "leader" ? [] : [s.id]);
  const lines = [
    `metadata: ${members.length} CURP replicas, ${
      leaders.length > 0 ? `leader ${leaders.join(",")}` : "no leader"
    }`,
  ];
  members.forEach(([id, address], i) => {
    const s = answers[i];
    lines.push(
      `  ${id.padEnd(11)} ${address.padEnd(22)} ${
        s instanceof Error
          ? `unreachable: ${s.message}`
          : `${s.role} term ${s.term} applied ${s.appliedIndex} revision ${s.revision}`
      }`,
    );
  });
  return lines;
}
