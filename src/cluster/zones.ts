/**
 * Zones: every cluster node belongs to one (config cluster.zone, a cloud or data centre), and every
 * zone has one backend store, recorded in metadata at `cl/zones/<zone>` by the first node of the
 * zone that joins. A node whose `--backend` is not its zone's refuses to start. Placement across
 * zones and nearest-first reads are later work (issue 15 points 2 and 3): today a node writes its
 * own zone's backend and reads another zone's store when its own lacks an object (ZonedBackend).
 * @module
 */

import type { BackendStore } from "../cache/backend.ts";
import type { ZoneStores } from "../cache/cluster_data.ts";
import type { MetaKV } from "../meta/kv.ts";
import { prefixEnd } from "../meta/kv.ts";

export const ZONES_PREFIX = new TextEncoder().encode("cl/zones/");

/** A zone name: 1-32 characters of a-z, 0-9 and - (as config cluster.zone checks it). */
export const ZONE_NAME = /^[a-z0-9-]{1,32}$/;

/** The zone of a node record written before zones existed. */
export const DEFAULT_ZONE = "default";

export interface ZoneRecord {
  zone: string;
  /** The backend store of the zone's nodes, as their `--backend` gives it. */
  backend: string;
  /** The node that wrote the record, and when. */
  createdBy: string;
  createdMs: number;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

function zoneKey(zone: string): Uint8Array {
  return new Uint8Array([...ZONES_PREFIX, ...encoder.encode(zone)]);
}

/**
 * Join `zone` with `backend`: create its record if absent (one transaction, so two first nodes
 * racing agree on one), else check the record names the same backend. Throws a one-line error
 * naming both backends when they differ.
 */
export async function claimZone(
  kv: MetaKV,
  zone: string,
  backend: string,
  nodeId: string,
): Promise<ZoneRecord> {
  if (!ZONE_NAME.test(zone)) {
    throw new RangeError(`--zone "${zone}" must be 1-32 characters of a-z, 0-9 and -`);
  }
  const key = zoneKey(zone);
  const record: ZoneRecord = { zone, backend, createdBy: nodeId, createdMs: Date.now() };
  const answer = await kv.txn({
    compare: [{ key, target: "version", result: "==", value: 0 }],
    success: [{ put: { key, value: encoder.encode(JSON.stringify(record)) } }],
    failure: [{ range: { key } }],
  });
  if (answer.succeeded) return record;
  const found = answer.responses[0];
  const kv0 = found && "range" in found ? found.range.kvs[0] : undefined;
  if (!kv0) throw new Error(`zone ${zone}: its record vanished while this node joined; retry`);
  const existing = JSON.parse(decoder.decode(kv0.value)) as ZoneRecord;
  if (existing.backend !== backend) {
    throw new Error(
      `zone ${zone} has backend ${existing.backend} (recorded by node ${existing.createdBy}), ` +
        `but this node's --backend is ${backend}`,
    );
  }
  return existing;
}

/** Every zone's record, by name. */
export async function listZones(kv: MetaKV): Promise<ZoneRecord[]> {
  const found = await kv.range({ key: ZONES_PREFIX, rangeEnd: prefixEnd(ZONES_PREFIX) });
  const out: ZoneRecord[] = [];
  for (const item of found.kvs) {
    try {
      out.push(JSON.parse(decoder.decode(item.value)));
    } catch { /* a foreign value: not a zone */ }
  }
  return out.sort((a, b) => a.zone < b.zone ? -1 : a.zone > b.zone ? 1 : 0);
}

/** How long the zone records are trusted before a placement or a read miss reads them again. */
const ZONE_RECORDS_TTL_MS = 10_000;

/**
 * A node's backend in a cluster with zones: writes, deletes, listings and gets go to its own
 * zone's store; the other zones' stores are reached through `store(zone)` (opened from their
 * records on first need), which ClusterData uses for placement (synchronous copies), the
 * nearest-first read order and GC, and the replication queue for its copies (issue 15 points
 * 2-3).
 */
export class ZonedBackend implements BackendStore, ZoneStores {
  readonly kind: string;
  readonly zone: string;
  readonly #own: BackendStore;
  readonly #kv: MetaKV;
  readonly #open: (spec: string, zone: string) => Promise<BackendStore>;
  readonly #stores = new Map<string, Promise<BackendStore>>();
  #records: ZoneRecord[] = [];
  #readAt = -Infinity;
  #reading: Promise<void> | undefined;

  constructor(
    own: BackendStore,
    options: {
      zone: string;
      kv: MetaKV;
      /** Opens another zone's store (the node counts its requests). */
      open: (spec: string, zone: string) => Promise<BackendStore>;
    },
  ) {
    this.#own = own;
    this.kind = own.kind;
    this.zone = options.zone;
    this.#kv = options.kv;
    this.#open = options.open;
  }

  put(key: string, data: Uint8Array): Promise<void> {
    return this.#own.put(key, data);
  }

  delete(key: string): Promise<void> {
    return this.#own.delete(key);
  }

  list(prefix: string): Promise<{ key: string; modifiedMs: number }[]> {
    return this.#own.list(prefix);
  }

  get(key: string): Promise<Uint8Array | undefined> {
    return this.#own.get(key);
  }

  /** Every zone with a record, sorted by name (read again after ZONE_RECORDS_TTL_MS). */
  async zones(): Promise<string[]> {
    if (performance.now() - this.#readAt > ZONE_RECORDS_TTL_MS) {
      this.#reading ??= this.#readRecords().finally(() => this.#reading = undefined);
      await this.#reading;
    }
    return this.#records.map((r) => r.zone);
  }

  /** Read the zone records again at the next need (a node joined: its zone may be new). */
  forget(): void {
    this.#readAt = -Infinity;
  }

  /** The store of `zone` (this node's own for its zone); throws for a zone without a record. */
  async store(zone: string): Promise<BackendStore> {
    if (zone === this.zone) return this.#own;
    let record = this.#records.find((r) => r.zone === zone);
    if (!record) {
      this.#readAt = -Infinity;
      await this.zones();
      record = this.#records.find((r) => r.zone === zone);
    }
    if (!record) throw new Error(`zone ${zone} has no record (cl/zones/${zone})`);
    let store = this.#stores.get(record.backend);
    if (store === undefined) {
      store = this.#open(record.backend, zone);
      store.catch(() => this.#stores.delete(record.backend)); // opened again at the next need
      this.#stores.set(record.backend, store);
    }
    return await store;
  }

  async close(): Promise<void> {
    for (const store of this.#stores.values()) {
      await store.then((s) => s.close(), () => {});
    }
    await this.#own.close();
  }

  async #readRecords(): Promise<void> {
    let records: ZoneRecord[];
    try {
      records = await listZones(this.#kv);
    } catch (error) {
      // Metadata unreachable: the zones known stay in use (the publish that needs them fails on
      // its own transaction, with the metadata error); none known yet is the error.
      if (this.#records.length === 0) throw error;
      this.#readAt = performance.now();
      return;
    }
    if (!records.some((r) => r.zone === this.zone)) {
      records.push({ zone: this.zone, backend: "", createdBy: "", createdMs: 0 });
    }
    this.#records = records.sort((a, b) => a.zone < b.zone ? -1 : a.zone > b.zone ? 1 : 0);
    this.#readAt = performance.now();
  }
}
