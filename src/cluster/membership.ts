/**
 * Cluster membership through metadata leases, and chunk ownership by consistent hashing over
 * the live nodes. Each node keeps `cl/nodes/<id>` alive on a lease (its peer address, and cache
 * statistics rewritten every STATS_EVERY_MS); a node that dies stops renewing and its key expires, so it leaves the ring
 * within the lease TTL, and only the chunks it owned move (consistent hashing).
 * @module
 */

import type { MetaKV, WatchEvent } from "../meta/kv.ts";
import { prefixEnd } from "../meta/kv.ts";

export const NODES_PREFIX = new TextEncoder().encode("cl/nodes/");

export interface NodeInfo {
  id: string;
  /** Its zone (config cluster.zone); records written before zones existed have none ("default"). */
  zone?: string;
  /** host:port of its peer server. */
  address: string;
  /** Where the nodes of other zones reach its peer server instead of `address`, by zone (config
   * cluster.peer_routes: a gateway, a NAT, the local emulation's delay proxies). */
  routes?: Record<string, string>;
  /** host:port of its HTTP endpoint (metrics, dashboard), when it serves one. */
  http?: string;
  startedMs: number;
  /** Cache statistics, refreshed with the lease. */
  stats?: Record<string, number>;
}

const VNODES = 64;

/** How often a node rewrites its record with fresh cache statistics (`skyfs status`). */
export const STATS_EVERY_MS = 10_000;

/** FNV-1a, 32 bits: spreads node ids and chunk keys over the ring. */
export function hash32(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  // Final avalanche (murmur3 fmix32): FNV alone clusters similar short keys.
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b) >>> 0;
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35) >>> 0;
  h ^= h >>> 16;
  return h >>> 0;
}

/** A consistent-hash ring with VNODES points per node. */
export class Ring {
  readonly #points: { at: number; node: NodeInfo }[] = [];

  constructor(nodes: NodeInfo[]) {
    for (const node of nodes) {
      for (let i = 0; i < VNODES; i++) this.#points.push({ at: hash32(`${node.id}#${i}`), node });
    }
    this.#points.sort((a, b) => a.at - b.at || (a.node.id < b.node.id ? -1 : 1));
  }

  get size(): number {
    return this.#points.length / VNODES;
  }

  /** The node with this id, if it is on the ring. */
  node(id: string): NodeInfo | undefined {
    return this.#points.find((p) => p.node.id === id)?.node;
  }

  /** The ids of the nodes on the ring. */
  get ids(): string[] {
    return [...new Set(this.#points.map((p) => p.node.id))];
  }

  /** Per zone, the ring of that zone's nodes (built at first use). */
  readonly #zones = new Map<string, Ring>();

  /**
   * The node owning `key` among the nodes of `zone` (a record without a zone is in "default"),
   * or undefined when the zone has none: the peer ring of a zone (issue 15 point 3), so a miss
   * asks a peer of its own zone first.
   */
  ownerIn(key: string, zone: string): NodeInfo | undefined {
    let ring = this.#zones.get(zone);
    if (!ring) {
      const nodes = [...new Set(this.#points.map((p) => p.node))].filter((n) =>
        (n.zone ?? "default") === zone
      );
      this.#zones.set(zone, ring = new Ring(nodes));
    }
    return ring.owner(key);
  }

  /** The node owning `key`, or undefined on an empty ring. */
  owner(key: string): NodeInfo | undefined {
    if (this.#points.length === 0) return undefined;
    const h = hash32(key);
    let lo = 0;
    let hi = this.#points.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.#points[mid].at < h) lo = mid + 1;
      else hi = mid;
    }
    return this.#points[lo % this.#points.length].node;
  }
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Every live node's record. */
export async function listNodes(kv: MetaKV): Promise<NodeInfo[]> {
  const found = await kv.range({ key: NODES_PREFIX, rangeEnd: prefixEnd(NODES_PREFIX) });
  const out: NodeInfo[] = [];
  for (const item of found.kvs) {
    try {
      out.push(JSON.parse(decoder.decode(item.value)));
    } catch { /* a foreign value: not a node */ }
  }
  return out;
}

/** This node's registration: lease, renewal, ring kept current by a watch. */
export class Membership {
  readonly self: NodeInfo;
  ring: Ring = new Ring([]);
  readonly #kv: MetaKV;
  readonly #ttlSeconds: number;
  #lease = 0;
  #publishedAt = 0;
  #timer: ReturnType<typeof setInterval> | undefined;
  #watcher: { cancel(): void } | undefined;
  #stats: () => Record<string, number>;
  /** Called with the ids of nodes that left the ring (lease expired or revoked). */
  onLeft: (ids: string[]) => void = () => {};
  /** Called after the ring was rebuilt (a node joined, left or moved). */
  onRing: () => void = () => {};

  constructor(
    kv: MetaKV,
    self: NodeInfo,
    options: { ttlSeconds?: number; stats?: () => Record<string, number> } = {},
  ) {
    this.#kv = kv;
    this.self = self;
    this.#ttlSeconds = options.ttlSeconds ?? 5;
    this.#stats = options.stats ?? (() => ({}));
  }

  async start(): Promise<void> {
    this.#lease = (await this.#kv.leaseGrant(this.#ttlSeconds)).id;
    await this.#publish();
    this.#watcher = this.#kv.watch(
      { key: NODES_PREFIX, rangeEnd: prefixEnd(NODES_PREFIX) },
      {},
      (events) => {
        // Stats updates rewrite a node's key every few seconds; only a node joining, leaving or
        // moving changes the ring, so only those cost a read of the member list.
        if (events.some((e) => this.#changesRing(e))) this.refresh().catch(() => {});
      },
    );
    await this.refresh();
    const interval = Math.max(500, (this.#ttlSeconds * 1000) / 3);
    this.#timer = setInterval(() =>
      this.#renew().catch((error) => {
        console.error(`skyfs: membership lease renewal failed: ${(error as Error).message}`);
      }), interval);
    Deno.unrefTimer(this.#timer);
  }

  /** Whether a watch event adds, removes or moves a node on the ring. */
  #changesRing(event: WatchEvent): boolean {
    const id = decoder.decode(event.kv.key.subarray(NODES_PREFIX.length));
    const known = this.ring.node(id);
    if (event.type === "delete") return known !== undefined;
    try {
      const info = this.#routed(JSON.parse(decoder.decode(event.kv.value)) as NodeInfo);
      return known === undefined || known.address !== info.address;
    } catch {
      return false; // a foreign value: not a node (listNodes skips it too)
    }
  }

  /** Rewrite this node's record now (after `self` changed, e.g. its HTTP endpoint started). */
  announce(): Promise<void> {
    return this.#publish();
  }

  async #publish(): Promise<void> {
    this.#publishedAt = Date.now();
    const value = { ...this.self, stats: this.#stats() };
    await this.#kv.put({
      key: new Uint8Array([...NODES_PREFIX, ...encoder.encode(this.self.id)]),
      value: encoder.encode(JSON.stringify(value)),
      lease: this.#lease,
    });
  }

  /** Add this node's HTTP endpoint to its record (the endpoint starts after the node joins),
   * so the other nodes' dashboards can scrape it. */
  async advertiseHttp(address: string): Promise<void> {
    this.self.http = address;
    await this.#publish();
  }

  async #renew(): Promise<void> {
    try {
      await this.#kv.leaseKeepAlive(this.#lease);
    } catch {
      // The lease expired (metadata unreachable for a while): join again with a new one.
      this.#lease = (await this.#kv.leaseGrant(this.#ttlSeconds)).id;
      await this.#publish();
      return;
    }
    // The record only carries statistics for `skyfs status` between joins: rewriting it at every
    // renewal made each node one more replicated write every 1.7 s, and every other node's watch
    // one more member-list read.
    if (Date.now() - this.#publishedAt >= STATS_EVERY_MS) await this.#publish();
  }

  /** A node's record with `address` as this node's zone reaches it (its route, if any). */
  #routed(info: NodeInfo): NodeInfo {
    const route = info.id === this.self.id ? undefined : info.routes?.[this.self.zone ?? ""];
    return route ? { ...info, address: route } : info;
  }

  async refresh(): Promise<void> {
    const nodes = (await listNodes(this.#kv)).map((n) => this.#routed(n));
    if (!nodes.some((n) => n.id === this.self.id)) nodes.push(this.self);
    const before = this.ring.ids;
    this.ring = new Ring(nodes);
    const left = before.filter((id) => !nodes.some((n) => n.id === id));
    this.onRing();
    if (left.length > 0) this.onLeft(left);
  }

  async stop(): Promise<void> {
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#watcher?.cancel();
    await this.#kv.leaseRevoke(this.#lease).catch(() => {});
  }
}
