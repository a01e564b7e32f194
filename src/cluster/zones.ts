/**
 * Zones: every cluster node belongs to one (config cluster.zone, a cloud or data centre), and every
 * zone has one backend store, recorded in metadata at `cl/zones/<zone>` by the first node of the
 * zone that joins. A node whose `--backend` is not its zone's refuses to start. Placement across
 * zones and nearest-first reads are later work (issue 15 points 2 and 3): today a node writes its
 * own zone's backend and reads another zone's store when its own lacks an object (ZonedBackend).
 * @module
 */

import type { BackendStore } from "../cache/backend.ts";
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

/** How long the other zones' records are trusted before a read miss reads them again. */
const ZONE_RECORDS_TTL_MS = 10_000;

/** After a zone's store failed a read, it is not asked again for this long (the read fails at
 * once if no other zone has the object): an unreachable zone costs one timeout, not one per chunk,
 * as a failed peer does (peer_source.ts). */
const ZONE_DOWN_MS = 10_000;

/**
 * A node's backend in a cluster with zones: writes, deletes and listings go to its own zone's
 * store; a read that its own store does not have tries every other zone's store, in zone name
 * order, opened from their records on first need (so a zone's nodes reach the other zones' stores,
 * issue 15 point 1). Until placement copies chunks between zones (point 2), this is how a file
 * written in one zone is read in another when no peer holding it answers.
 */
export class ZonedBackend implements BackendStore {
  readonly kind: string;
  readonly #own: BackendStore;
  readonly #zone: string;
  readonly #kv: MetaKV;
  readonly #open: (spec: string, zone?: string) => Promise<BackendStore>;
  readonly #log: (line: string) => void;
  readonly #stores = new Map<string, Promise<BackendStore>>();
  #others: ZoneRecord[] = [];
  #readAt = -Infinity;
  #reading: Promise<void> | undefined;
  readonly #failed = new Set<string>();
  /** Zone -> when its last failed read happened (performance.now()). */
  readonly #downAt = new Map<string, number>();

  constructor(
    own: BackendStore,
    options: {
      zone: string;
      kv: MetaKV;
      /** Opens another zone's store from its record's URL (the zone: for a route to it). */
      open: (spec: string, zone?: string) => Promise<BackendStore>;
      log: (line: string) => void;
    },
  ) {
    this.#own = own;
    this.kind = own.kind;
    this.#zone = options.zone;
    this.#kv = options.kv;
    this.#open = options.open;
    this.#log = options.log;
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

  async get(key: string): Promise<Uint8Array | undefined> {
    const found = await this.#own.get(key);
    if (found !== undefined) return found;
    if (performance.now() - this.#readAt > ZONE_RECORDS_TTL_MS) {
      this.#reading ??= this.#readRecords().finally(() => this.#reading = undefined);
      await this.#reading;
    }
    let lastError: unknown;
    const now = performance.now();
    for (const record of this.#others) {
      if (now - (this.#downAt.get(record.zone) ?? -Infinity) < ZONE_DOWN_MS) {
        lastError ??= new Error(
          `zone ${record.zone}'s backend failed less than ${ZONE_DOWN_MS} ms ago; not asked`,
        );
        continue;
      }
      try {
        const store = await this.#store(record.backend, record.zone);
        const bytes = await store.get(key);
        if (bytes !== undefined) return bytes;
      } catch (error) {
        lastError = error;
        this.#downAt.set(record.zone, performance.now());
        if (!this.#failed.has(record.zone)) {
          this.#failed.add(record.zone);
          this.#log(
            `skyfs: zone ${record.zone}'s backend ${record.backend} failed a read (next zone ` +
              `tried): ${(error as Error).message}`,
          );
        }
      }
    }
    // Absent everywhere that answered; a zone that could not be asked turns "absent" into EIO.
    if (lastError !== undefined) throw lastError;
    return undefined;
  }

  async close(): Promise<void> {
    for (const store of this.#stores.values()) {
      await store.then((s) => s.close(), () => {});
    }
    await this.#own.close();
  }

  async #readRecords(): Promise<void> {
    const records = await listZones(this.#kv);
    this.#others = records.filter((r) => r.zone !== this.#zone).sort((a, b) =>
      a.zone < b.zone ? -1 : a.zone > b.zone ? 1 : 0
    );
    this.#readAt = performance.now();
  }

  #store(spec: string, zone?: string): Promise<BackendStore> {
    let store = this.#stores.get(spec);
    if (store === undefined) {
      store = this.#open(spec, zone);
      store.catch(() => this.#stores.delete(spec)); // opened again at the next miss
      this.#stores.set(spec, store);
    }
    return store;
  }
}
