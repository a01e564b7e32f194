/**
 * Zones: every cluster node belongs to one (config cluster.zone, a cloud or data centre), and every
 * zone has one backend store, recorded in metadata at `cl/zones/<zone>` by the first node of the
 * zone that joins. A node whose `--backend` is not its zone's refuses to start. Placement across
 * zones and nearest-first reads are later work (issue 15 points 2 and 3): today a node reads and
 * writes its own zone's backend only.
 * @module
 */

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
