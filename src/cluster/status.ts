/**
 * `skyfs status`: the live nodes of a cluster (from their membership records in metadata), each
 * with its peer address, cache use and hit rate, and whether the backend answers.
 * @module
 */

import type { MetaKV } from "../meta/kv.ts";
import { listNodes } from "./membership.ts";
import { probeRdma } from "./rdma_probe.ts";

export async function clusterStatus(kv: MetaKV): Promise<string> {
  const nodes = await listNodes(kv);
  const lines = [`${nodes.length} live node(s); rdma: ${probeRdma().reason}`];
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
