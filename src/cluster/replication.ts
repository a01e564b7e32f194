/**
 * The replication queue of a zone (issue 15 point 2): a publish that places chunks in other
 * zones writes one entry per chunk version at `cl/repl/<writer's zone>/<ino hex>/<index>/<version>`
 * in the same transaction as the chunk map (ClusterData.applyInTxn), so a crash of the writer
 * after its close or fsync returned loses no copy. The nodes of the writer's zone drain it: the
 * writer copies its own entries at once (after `delayMs`), and any live node of the zone takes
 * over an entry whose owner is not a live member (its lease is gone: kill -9, power loss), by a
 * transaction comparing the entry's revision, so one node copies it. A copy reads the object from
 * this zone's store, checks its CRC and puts it in every target zone's store; the entries done in
 * a pass are then deleted in one transaction (per 64). An entry whose version the chunk map no longer names (overwritten, truncated, deleted)
 * is dropped without a copy.
 * @module
 */

import { crc32 } from "node:zlib";
import type { KeyValue, MetaKV } from "../meta/kv.ts";
import { prefixEnd } from "../meta/kv.ts";
import { keys } from "../meta/namespace.ts";
import { type ChunkMap, decodeChunkMap } from "../cache/chunk_map.ts";
import { chunkObjectKey } from "../cache/backend.ts";
import { REPL_PREFIX, type ReplEntry, type ZoneStores } from "../cache/cluster_data.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** How often a node looks at its zone's queue without being told to (failed copies, owners that
 * left while this node missed it). */
const SWEEP_EVERY_MS = 30_000;
/** Copies in flight per node. */
const PARALLEL = 4;

export interface ReplicationStats {
  /** Entries in this zone's queue at the last look (owned by any node). */
  queueLength: number;
  /** Age of the oldest of them, ms (0 when empty). */
  oldestMs: number;
  /** Chunk copies made by this node, and their bytes (one per target zone). */
  copies: number;
  copiedBytes: number;
  /** Entries this node took over from an owner that was gone. */
  takenOver: number;
  /** Entries dropped because the map no longer names their version. */
  dropped: number;
  /** Copies that failed (left queued, retried at the next sweep). */
  failures: number;
}

export class ReplicationQueue {
  readonly stats: ReplicationStats = {
    queueLength: 0,
    oldestMs: 0,
    copies: 0,
    copiedBytes: 0,
    takenOver: 0,
    dropped: 0,
    failures: 0,
  };
  readonly #kv: MetaKV;
  readonly #zones: ZoneStores;
  readonly #nodeId: string;
  readonly #isLive: (id: string) => boolean;
  readonly #log: (line: string) => void;
  readonly #delayMs: number;
  readonly #prefix: Uint8Array;
  #running: Promise<void> | undefined;
  #again = false;
  #stopped = false;
  #timer: ReturnType<typeof setInterval> | undefined;
  #delayTimer: ReturnType<typeof setTimeout> | undefined;
  readonly #failedOnce = new Set<string>();

  constructor(
    kv: MetaKV,
    zones: ZoneStores,
    options: {
      nodeId: string;
      isLive: (id: string) => boolean;
      log: (line: string) => void;
      /** How long the writer waits before copying its own entries (config
       * cluster.zone_replication_delay_ms): a chunk overwritten meanwhile is never copied. */
      delayMs?: number;
    },
  ) {
    this.#kv = kv;
    this.#zones = zones;
    this.#nodeId = options.nodeId;
    this.#isLive = options.isLive;
    this.#log = options.log;
    this.#delayMs = options.delayMs ?? 0;
    this.#prefix = encoder.encode(`${REPL_PREFIX}${zones.zone}/`);
  }

  /** Look at the queue now, and every SWEEP_EVERY_MS. */
  start(): void {
    this.kick();
    this.#timer = setInterval(() => this.kick(), SWEEP_EVERY_MS);
    Deno.unrefTimer(this.#timer);
  }

  /** This node queued copies (after `delayMs`), or an owner may have gone: drain. */
  queued(): void {
    if (this.#delayMs <= 0) return this.kick();
    if (this.#delayTimer !== undefined) return;
    this.#delayTimer = setTimeout(() => {
      this.#delayTimer = undefined;
      this.kick();
    }, this.#delayMs);
    Deno.unrefTimer(this.#delayTimer);
  }

  /** Drain now (one pass at a time; a kick during a pass runs another after it). */
  kick(): void {
    if (this.#stopped) return;
    if (this.#running) {
      this.#again = true;
      return;
    }
    this.#running = this.#drain().catch((error) => {
      this.#log(
        `skyfs: replication queue of zone ${this.#zones.zone}: ${(error as Error).message}`,
      );
    }).finally(() => {
      this.#running = undefined;
      if (this.#again) {
        this.#again = false;
        this.kick();
      }
    });
  }

  /** Resolves once no pass is running (tests, shutdown). */
  async idle(): Promise<void> {
    while (this.#running) await this.#running;
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#timer !== undefined) clearInterval(this.#timer);
    if (this.#delayTimer !== undefined) clearTimeout(this.#delayTimer);
    await this.idle();
  }

  async #drain(): Promise<void> {
    for (let pass = 0; !this.#stopped; pass++) {
      const found = await this.#kv.range({ key: this.#prefix, rangeEnd: prefixEnd(this.#prefix) });
      const now = Date.now();
      const entries: { kv: KeyValue; entry: ReplEntry }[] = [];
      for (const item of found.kvs) {
        try {
          entries.push({ kv: item, entry: JSON.parse(decoder.decode(item.value)) });
        } catch { /* a foreign value */ }
      }
      this.stats.queueLength = entries.length;
      this.stats.oldestMs = entries.reduce(
        (oldest, { entry }) => Math.max(oldest, now - entry.queuedMs),
        0,
      );
      // Own entries old enough, and entries of owners that left the ring.
      const mine = entries.filter(({ entry }) =>
        entry.owner === this.#nodeId
          ? now - entry.queuedMs >= this.#delayMs
          : !this.#isLive(entry.owner)
      );
      // Own entries still within the delay: drained when the youngest is due.
      const waiting = entries.filter(({ entry }) =>
        entry.owner === this.#nodeId && now - entry.queuedMs < this.#delayMs
      );
      if (waiting.length > 0) this.queued();
      if (mine.length === 0) return;
      const work = [...mine];
      // Per pass: each inode's chunk map read once, and the entries done deleted together.
      const maps = new Map<number, Promise<ChunkMap | undefined>>();
      const done: Uint8Array[] = [];
      const next = async () => {
        for (let item = work.shift(); item; item = work.shift()) {
          if (await this.#copy(item.kv, item.entry, maps)) done.push(item.kv.key);
        }
      };
      await Promise.all(Array.from({ length: PARALLEL }, next));
      // A copy made is made whoever owns the entry now (a takeover rewrites it with the same
      // object and targets), so the deletes compare nothing; one transaction per 64 entries.
      for (let i = 0; i < done.length; i += 64) {
        await this.#kv.txn({
          success: done.slice(i, i + 64).map((key) => ({ deleteRange: { key } })),
        });
      }
      if (done.length === 0) return; // every copy failed: the sweep retries later
    }
  }

  /** Copy one entry's object to its targets; true when the entry can go (copied, or its
   * version is no longer in the map), false when it failed or another node took it. */
  async #copy(
    item: KeyValue,
    entry: ReplEntry,
    maps: Map<number, Promise<ChunkMap | undefined>>,
  ): Promise<boolean> {
    if (entry.owner !== this.#nodeId) {
      // Take it over: one node wins (the others' compare fails and they skip it).
      const taken = encoder.encode(JSON.stringify({ ...entry, owner: this.#nodeId }));
      const answer = await this.#kv.txn({
        compare: [{ key: item.key, target: "modRevision", result: "==", value: item.modRevision }],
        success: [{ put: { key: item.key, value: taken } }],
      });
      if (!answer.succeeded) return false;
      this.stats.takenOver++;
      this.#log(
        `skyfs: replication: took over chunk ${entry.ino}/${entry.index} (${entry.version}) from ` +
          `node ${entry.owner}, which left`,
      );
    }
    let map = maps.get(entry.ino);
    if (!map) {
      map = this.#kv.range({ key: keys.chunkMap(entry.ino) }).then((found) =>
        found.kvs[0] ? decodeChunkMap(found.kvs[0].value) : undefined
      );
      maps.set(entry.ino, map);
    }
    const ref = (await map)?.get(entry.index);
    if (ref?.version !== entry.version) {
      this.stats.dropped++;
      return true;
    }
    const objectKey = chunkObjectKey(entry.ino, entry.index, entry.version);
    const name = `${objectKey} -> ${entry.targets.join(", ")}`;
    try {
      const own = await this.#zones.store(this.#zones.zone);
      const data = await own.get(objectKey);
      if (!data) throw new Error(`zone ${this.#zones.zone}'s store lacks it`);
      if (crc32(data) !== entry.crc) {
        throw new Error(`zone ${this.#zones.zone}'s copy fails its checksum`);
      }
      for (const zone of entry.targets) {
        await (await this.#zones.store(zone)).put(objectKey, data);
        this.stats.copies++;
        this.stats.copiedBytes += data.length;
      }
    } catch (error) {
      this.stats.failures++;
      if (!this.#failedOnce.has(name)) {
        this.#failedOnce.add(name);
        this.#log(`skyfs: replication of ${name} failed (retried): ${(error as Error).message}`);
      }
      return false;
    }
    this.#failedOnce.delete(name);
    return true;
  }
}
