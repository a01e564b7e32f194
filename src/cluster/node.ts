/**
 * One cluster node: the data path (ClusterData), the peer server and client, membership, and
 * the metadata watch that tells the kernel to drop what other nodes changed. A chunk missing
 * locally is asked of its owner on the ring (which fetches it from the backend once and keeps
 * it), and read from the backend directly when the owner is this node or unreachable.
 * @module
 */

import type { MetaKV } from "../meta/kv.ts";
import { prefixEnd } from "../meta/kv.ts";
import { ClusterData } from "../cache/cluster_data.ts";
import { type BackendStore, CountedBackend, openBackend } from "../cache/backend.ts";
import type { ChunkRef } from "../cache/chunk_map.ts";
import { peerThenBackend } from "./peer_source.ts";
import { Membership } from "./membership.ts";
import { claimZone, DEFAULT_ZONE, ZonedBackend } from "./zones.ts";
import { ReplicationQueue } from "./replication.ts";
import type { PeerTransport } from "./transport.ts";
import { openPeers, type PeerSendMode } from "./uring_transport.ts";
import { probeRdma } from "./rdma_probe.ts";
import type { IoEngine } from "../io/types.ts";
import { collectGarbage, purgeOrphans } from "../cache/gc.ts";
import { inodeOfKey, keys, parentOfDentryKey } from "../meta/namespace.ts";

export interface ClusterNodeOptions {
  /** Backend URL: an absolute path, dir:///path or s3://bucket?endpoint=... */
  backend: string;
  /** Default: a random id kept in `<dataDir>/node-id`. */
  nodeId?: string;
  /** This node's zone (config cluster.zone). Default "default". */
  zone?: string;
  /** host:port for the peer server. Default 127.0.0.1:0 (any free port). */
  listen?: string;
  /** Local cache limit. Default 8 GiB. */
  cacheBytes?: number;
  /** How long a file's open record outlives its last close here (config
   * cluster.open_linger_ms). Default 60 s (OpenRecords). */
  openLingerMs?: number;
  /** Zones holding each chunk (config cluster.zone_replicas). Default 2 (capped at the zones). */
  zoneReplicas?: number;
  /** Zones holding a chunk before fsync/close returns (config cluster.zone_sync). Default 1. */
  zoneSync?: number;
  /** Delay of the writer's own queued copies (config cluster.zone_replication_delay_ms). */
  zoneReplicationDelayMs?: number;
  /** How long a peer request waits (config peer.timeout_ms). Default 10 s. */
  peerTimeoutMs?: number;
  /** Where other zones reach this node's peer server, by zone (config cluster.peer_routes). */
  peerRoutes?: Record<string, string>;
  /** How this node reaches other zones' backend stores, by zone, instead of their recorded URL
   * (config cluster.backend_routes). */
  backendRoutes?: Record<string, string>;
  /** Timeout of a request to an http:// backend (config cluster.zone_timeout_ms). */
  zoneTimeoutMs?: number;
  /** How long another zone's failed store is skipped by reads (config cluster.zone_down_ms). */
  zoneDownMs?: number;
  /** Files up to this size keep their data in the chunk map (config cluster.inline_bytes). */
  inlineBytes?: number;
  /** Passthrough writes of files created or truncated at open (config
   * cluster.passthrough_writes). Default false. */
  passthroughWrites?: boolean;
  /** How the io_uring peer server sends a cached chunk (config peer.send). Default splice. */
  peerSend?: PeerSendMode;
  log?: (line: string) => void;
  /** One line per watch event that is not this node's own change coming back, and per epoch
   * bump (`SKYFS_DEBUG=meta`: `skyfs: watch @T other KEY`, `skyfs: watch @T epoch`). */
  traceWatch?: (line: string) => void;
  /** The process's I/O engine: a directory backend's objects are read and written through it. */
  io?: IoEngine;
}

export class ClusterNode {
  readonly data: ClusterData;
  readonly membership: Membership;
  readonly backend: BackendStore;
  readonly transport: PeerTransport;
  /** Request counters of every zone's store this node used, by zone (its own: `backend`). */
  zoneBackends = new Map<string, CountedBackend>();
  /** This zone's replication queue (copies to other zones, src/cluster/replication.ts). */
  readonly replication: ReplicationQueue;
  /** Set by the mount once the FUSE server exists: inodes other nodes changed (attributes), once
   * per batch of watch events, each inode once. */
  onInodesChanged: (inos: Set<number>) => void = () => {};
  /** Set by the mount: names changed elsewhere, in these parent directories (once per batch of
   * watch events). False when nothing had to be told to the kernel. */
  onEntriesChanged: (parents: Set<number>) => boolean = () => false;
  peerFetches = 0;
  peerFailures = 0;
  readonly #server: { address: string; close: () => void };
  readonly #kv: MetaKV;
  #watcher: { cancel(): void } | undefined;
  #traceWatch: ((line: string) => void) | undefined;
  #gcTimer: ReturnType<typeof setInterval> | undefined;
  readonly #orphanTimers = new Set<ReturnType<typeof setTimeout>>();

  private constructor(
    kv: MetaKV,
    data: ClusterData,
    backend: BackendStore,
    server: { address: string; close: () => void },
    transport: PeerTransport,
    membership: Membership,
    replication: ReplicationQueue,
  ) {
    this.#kv = kv;
    this.replication = replication;
    this.data = data;
    this.backend = backend;
    this.#server = server;
    this.membership = membership;
    this.transport = transport;
    const zone = membership.self.zone ?? DEFAULT_ZONE;
    data.source = peerThenBackend(data, this.transport, {
      // The peer ring of this node's zone: a miss asks a peer of its own zone first.
      owner: (ino, index) => {
        const owner = this.membership.ring.ownerIn(`${ino}/${index}`, zone);
        return owner && owner.id !== data.nodeId ? owner : undefined;
      },
      remoteOwner: (ino, index, zones) => {
        for (const other of zones) {
          const owner = this.membership.ring.ownerIn(`${ino}/${index}`, other);
          if (owner) return owner;
        }
        return undefined;
      },
      fetched: () => this.peerFetches++,
      failed: () => this.peerFailures++,
    });
  }

  static async start(kv: MetaKV, dataDir: string, options: ClusterNodeOptions) {
    const log = options.log ?? ((line: string) => console.error(line));
    const nodeId = options.nodeId ?? await stableNodeId(dataDir);
    if (!/^[0-9a-z]{1,32}$/.test(nodeId)) {
      throw new RangeError(`--node-id "${nodeId}" must be 1-32 lowercase letters or digits`);
    }
    const zone = options.zone ?? DEFAULT_ZONE;
    // The zone's backend is recorded by its first node; a node naming another refuses to start.
    await claimZone(kv, zone, options.backend, nodeId);
    const zoneBackends = new Map<string, CountedBackend>();
    const zoned = new ZonedBackend(await openBackend(options.backend, options.io), {
      zone,
      kv,
      open: async (spec, other) => {
        const store = new CountedBackend(
          await openBackend(options.backendRoutes?.[other] ?? spec, options.io, {
            timeoutMs: options.zoneTimeoutMs,
          }),
        );
        zoneBackends.set(other, store);
        return store;
      },
    });
    const backend = new CountedBackend(zoned);
    zoneBackends.set(zone, backend);
    const placement = { replicas: options.zoneReplicas ?? 2, sync: options.zoneSync ?? 1 };
    if (placement.sync > placement.replicas) {
      throw new RangeError(
        `cluster.zone_sync (${placement.sync}) exceeds cluster.zone_replicas ` +
          `(${placement.replicas}): lower zone_sync or raise zone_replicas`,
      );
    }
    const data = new ClusterData(dataDir, {
      nodeId,
      backend,
      capacityBytes: options.cacheBytes,
      openLingerMs: options.openLingerMs,
      zones: zoned,
      zoneDownMs: options.zoneDownMs,
      inlineBytes: options.inlineBytes,
      passthroughWrites: options.passthroughWrites,
      log,
      // Cluster-wide; a per-volume policy (issue 16) answers here by inode.
      placement: () => placement,
    });
    const [host, port] = splitHostPort(options.listen ?? "127.0.0.1:0");
    // io_uring sockets (splice from the cache file, reads into the reader's buffer) where the
    // engine can, else Deno TCP: uring_transport.ts.
    const { server, transport } = openPeers(
      options.io,
      host,
      port,
      (request) => {
        const ref: ChunkRef = {
          version: request.version,
          length: request.length,
          crc: request.crc,
          objectLength: request.objectLength,
        };
        return data.serveChunk(request.ino, request.index, ref).then((served) => {
          data.stats.peerServedBytes += served.length;
          return served;
        });
      },
      log,
      { sendMode: options.peerSend, timeoutMs: options.peerTimeoutMs },
    );
    const membership = new Membership(kv, {
      id: nodeId,
      zone,
      address: server.address,
      ...(options.peerRoutes ? { routes: options.peerRoutes } : {}),
      startedMs: Date.now(),
    }, { stats: () => ({ ...data.stats }) });
    const replication = new ReplicationQueue(kv, zoned, {
      nodeId,
      isLive: (id) => membership.ring.node(id) !== undefined,
      log,
      delayMs: options.zoneReplicationDelayMs,
    });
    const node = new ClusterNode(kv, data, backend, server, transport, membership, replication);
    node.zoneBackends = zoneBackends;
    node.#traceWatch = options.traceWatch;
    membership.self.stats = undefined;
    await membership.start();
    await node.#watch();
    data.onQueued = () => replication.queued();
    // A node that joins claimed its zone's record first: a new zone is placed from then on.
    membership.onRing = () => zoned.forget();
    membership.onLeft = (ids) => {
      node.#orphansOfLeft(ids, log);
      // Their queued copies (entries they owned) are this zone's nodes' to make now.
      replication.kick();
    };
    replication.start();
    node.#gcTimer = setInterval(() =>
      node.collectGarbage().catch((error) => {
        log(`skyfs: backend garbage collection failed: ${(error as Error).message}`);
      }), 10 * 60_000);
    Deno.unrefTimer(node.#gcTimer);
    log(
      `skyfs: cluster node ${nodeId} in zone ${zone}, peers on ${server.address} (${transport.kind}), ` +
        `backend ${backend.kind}, ` +
        `rdma: ${probeRdma().reason}`,
    );
    return node;
  }

  /** Watch the namespace: keys other nodes change leave the cache, and the kernel's too. From
   * a revision read first, which this node then acknowledges (the reclaim barrier of orphans,
   * src/cache/open_records.ts): it has nothing open yet. */
  async #watch(): Promise<void> {
    const { revision } = await this.#kv.range({ key: keys.format() });
    this.#watcher = this.#kv.watch(
      { key: keys.all(), rangeEnd: prefixEnd(keys.all()) },
      { startRevision: revision + 1 },
      (events) => {
        // Collected first and handed over once per batch: a create elsewhere changes the new
        // inode, its name and its parent's record in one commit, and its publish the inode again.
        let inodes: Set<number> | undefined;
        let parents: Set<number> | undefined;
        for (const event of events) {
          const key = event.kv.key;
          const own = this.data.forgetMetadata(
            key,
            event.type === "put" ? event.kv.value : undefined,
            event.kv.modRevision,
          );
          // This node's own change coming back: its kernel learned of it from the request.
          if (own) continue;
          this.#traceWatch?.(`skyfs: watch @${performance.now().toFixed(3)} other ${keyText(key)}`);
          const parent = parentOfDentryKey(key);
          if (parent !== undefined) (parents ??= new Set()).add(parent);
          const ino = inodeOfKey(key);
          if (ino !== undefined) (inodes ??= new Set()).add(ino);
        }
        if (inodes) {
          try {
            this.onInodesChanged(inodes);
          } catch (error) {
            console.error(`skyfs: kernel invalidation failed: ${(error as Error).message}`);
          }
        }
        // Names are not invalidated one by one (INVAL_ENTRY waits for the parent directory's
        // lock, which can wedge a daemon killed meanwhile, src/cluster/README.md): one epoch
        // bump per batch makes the kernel look every cached name up again (the mount skips it
        // when its kernel can hold no name in these directories).
        if (parents) {
          try {
            if (this.onEntriesChanged(parents)) {
              this.#traceWatch?.(`skyfs: watch @${performance.now().toFixed(3)} epoch`);
            }
          } catch (error) {
            console.error(`skyfs: kernel entry invalidation failed: ${(error as Error).message}`);
          }
        }
      },
    );
    await this.data.watchStarted(revision);
  }

  /** One sweep of unreferenced backend objects, run by the node owning "gc" on the ring (so
   * one node sweeps at a time while membership is stable). */
  async collectGarbage(): Promise<void> {
    if (this.membership.ring.owner("gc")?.id !== this.data.nodeId) return;
    const report = await collectGarbage(this.#kv, this.backend, { zones: this.data.zones });
    if (report.objectsDeleted + report.mapsDeleted > 0) {
      console.error(
        `skyfs: gc deleted ${report.objectsDeleted} objects, ${report.mapsDeleted} chunk maps`,
      );
    }
  }

  /**
   * Nodes left the ring: files they had open and another node unlinked are orphans nobody will
   * close. Their open records go with their lease, which expires about when the membership key
   * did (same TTL, renewed together), so the gc owner frees such orphans one TTL later.
   */
  #orphansOfLeft(ids: string[], log: (line: string) => void): void {
    const timer = setTimeout(async () => {
      this.#orphanTimers.delete(timer);
      if (this.membership.ring.owner("gc")?.id !== this.data.nodeId) return;
      try {
        const purged = await purgeOrphans(this.#kv);
        if (purged > 0) log(`skyfs: freed ${purged} orphans left open by ${ids.join(", ")}`);
      } catch (error) {
        log(`skyfs: freeing orphans of ${ids.join(", ")}: ${(error as Error).message}`);
      }
    }, 6_000);
    Deno.unrefTimer(timer);
    this.#orphanTimers.add(timer);
  }

  async stop(): Promise<void> {
    for (const timer of this.#orphanTimers) clearTimeout(timer);
    if (this.#gcTimer !== undefined) clearInterval(this.#gcTimer);
    await this.replication.stop();
    this.#watcher?.cancel();
    await this.membership.stop();
    this.#server.close();
    this.transport.close();
    await this.data.close();
    await this.backend.close();
  }
}

function splitHostPort(text: string): [string, number] {
  const at = text.lastIndexOf(":");
  const port = Number(text.slice(at + 1));
  if (at <= 0 || !Number.isInteger(port) || port < 0 || port > 65535) {
    throw new RangeError(`--peer-listen "${text}" is not host:port`);
  }
  return [text.slice(0, at), port];
}

async function stableNodeId(dataDir: string): Promise<string> {
  const path = `${dataDir}/node-id`;
  try {
    return (await Deno.readTextFile(path)).trim();
  } catch {
    const id = crypto.randomUUID().replaceAll("-", "").slice(0, 12);
    await Deno.writeTextFile(path, `${id}\n`);
    return id;
  }
}

/** Printable key for the trace: `fs/` keys as tag, inode number and the rest (a name) as text. */
function keyText(key: Uint8Array): string {
  const text = (bytes: Uint8Array) =>
    String.fromCharCode(...[...bytes].map((b) => b >= 0x20 && b < 0x7f ? b : 0x2e));
  if (key.length < 12) return text(key);
  let ino = 0;
  for (let i = 4; i < 12; i++) ino = ino * 256 + key[i];
  return `${text(key.subarray(0, 4))}${ino}${key.length > 12 ? "/" + text(key.subarray(12)) : ""}`;
}
