/**
 * CURP commands: what a client proposes, and the conflict rule witnesses and leaders apply to them.
 *
 * Conflicts are decided from the command alone (the keys and key ranges it names), never from the
 * store's state (DESIGN.md section 4), so every replica decides the same way without coordinating.
 * @module
 */

import type { KeyRange, RequestOp, TxnRequest, TxnResponse } from "../kv.ts";

/** Identifies one proposal across retries and leader changes: exactly-once hangs on it. */
export interface CommandId {
  clientId: string;
  seq: number;
}

export interface Command extends CommandId {
  /** The client holds results for every seq below this; replicas may forget them. */
  firstUnacked: number;
  txn: TxnRequest;
}

/** Result of executing a command: a transaction response, or a refusal with the reason. */
export type CommandResult = { ok: true; txn: TxnResponse } | { ok: false; error: string };

/** Half-open byte-string interval [start, end); end undefined = to the end of the key space. */
export interface Interval {
  start: string;
  end: string | undefined;
}

/** The keys a command may read and may write, whichever transaction branch runs. */
export interface Footprint {
  reads: Interval[];
  writes: Interval[];
}

/** Bytes as a binary string: JavaScript string order is then unsigned byte order. */
export function keyString(key: Uint8Array): string {
  let s = "";
  for (let i = 0; i < key.length; i++) s += String.fromCharCode(key[i]);
  return s;
}

export function keyBytes(key: string): Uint8Array {
  const bytes = new Uint8Array(key.length);
  for (let i = 0; i < key.length; i++) bytes[i] = key.charCodeAt(i);
  return bytes;
}

/** etcd's range rule: no rangeEnd = one key, rangeEnd "\0" = every key from `key` on. */
export function intervalOf(range: KeyRange): Interval {
  const start = keyString(range.key);
  const end = range.rangeEnd;
  if (end === undefined || end.length === 0) return { start, end: start + "\0" };
  if (end.length === 1 && end[0] === 0) return { start, end: undefined };
  return { start, end: keyString(end) };
}

export function overlaps(a: Interval, b: Interval): boolean {
  const aBeforeBEnd = b.end === undefined || a.start < b.end;
  const bBeforeAEnd = a.end === undefined || b.start < a.end;
  return aBeforeBEnd && bBeforeAEnd;
}

function addOp(op: RequestOp, fp: Footprint): void {
  if ("range" in op) fp.reads.push(intervalOf(op.range));
  else if ("put" in op) fp.writes.push(intervalOf({ key: op.put.key }));
  else fp.writes.push(intervalOf(op.deleteRange));
}

const footprints = new WeakMap<Command, Footprint>();

/** Footprint of a command, computed once per command object. */
export function footprintOf(command: Command): Footprint {
  let fp = footprints.get(command);
  if (fp !== undefined) return fp;
  fp = { reads: [], writes: [] };
  for (const c of command.txn.compare ?? []) fp.reads.push(intervalOf({ key: c.key }));
  for (const op of command.txn.success ?? []) addOp(op, fp);
  for (const op of command.txn.failure ?? []) addOp(op, fp);
  footprints.set(command, fp);
  return fp;
}

function anyOverlap(a: Interval[], b: Interval[]): boolean {
  for (const x of a) for (const y of b) if (overlaps(x, y)) return true;
  return false;
}

/** Two commands conflict when one may write a key the other may read or write. Two reads never
 * conflict. Commutative by construction. */
export function conflicts(a: Command, b: Command): boolean {
  const fa = footprintOf(a);
  const fb = footprintOf(b);
  return anyOverlap(fa.writes, fb.writes) || anyOverlap(fa.writes, fb.reads) ||
    anyOverlap(fa.reads, fb.writes);
}

export function idKey(id: CommandId): string {
  return `${id.clientId}#${id.seq}`;
}
