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

/** Operations other than a key-value transaction, each one log command like a txn. */
export type AdminOp =
  | { leaseGrant: { id: number; ttlSeconds: number } }
  | { leaseRevoke: { id: number } }
  | { leaseKeepAlive: { id: number } }
  | { compact: { revision: number } };

export interface Command extends CommandId {
  /** The client holds results for every seq below this; replicas may forget them. */
  firstUnacked: number;
  /** The transaction to run; ignored (send `{}`) when `admin` is present, `BATCH_TXN` when
   * `batch` is. */
  txn: TxnRequest;
  admin?: AdminOp;
  /** Several transactions run in order as one command (client-side group commit, CurpKV): each
   * is executed as if proposed alone right after the one before, with its own compare result,
   * revision and watch events; the result carries one `CommandResult` each (`batch`). A command
   * kind that replicas of earlier builds do not know: they would run `txn`, which is `BATCH_TXN`
   * and which they refuse ("Key must not be empty"), so a batch sent to such a cluster fails
   * instead of writing nothing; a cluster mixing builds would diverge (run one build). */
  batch?: TxnRequest[];
}

/** The `txn` of a batch command: what a replica of an earlier build runs instead of the batch,
 * and refuses (an empty key), so a batch never silently does nothing there. */
export const BATCH_TXN: TxnRequest = { success: [{ deleteRange: { key: new Uint8Array(0) } }] };

/** The transactions a command runs, in order: its batch, or its one txn. */
export function txnsOf(command: Command): TxnRequest[] {
  return command.batch ?? [command.txn];
}

/** Result of executing a command: a transaction response (plus the TTL a lease operation
 * granted), or a refusal with the reason. */
export type CommandResult =
  | {
    ok: true;
    txn: TxnResponse;
    ttlSeconds?: number;
    /** A batch command's results, one per transaction in order (`txn` then holds the last
     * revision and no responses). */
    batch?: CommandResult[];
  }
  | { ok: false; error: string };

/** Half-open byte-string interval [start, end); end undefined = to the end of the key space. */
export interface Interval {
  start: string;
  end: string | undefined;
}

/** A key and byte ranges of its value. */
export interface Masked {
  key: Interval;
  ranges: { at: number; width: number }[];
}

/** The keys a command may read and may write, whichever transaction branch runs. */
export interface Footprint {
  reads: Interval[];
  writes: Interval[];
  /** Keys merged (`merge` ops) with the byte ranges each merge changes: merges commute with each
   * other, and with a masked read that ignores every range they change. */
  merges: Masked[];
  /** Keys compared by value with `ignore` ranges. */
  maskedReads: Masked[];
  /** Lease ids whose existence the command depends on (a put attaching to one). */
  leaseReads: number[];
  /** Lease ids the command creates, renews or removes. */
  leaseWrites: number[];
}

/** Every key: what a lease revocation (keys unknown from the command alone) or a compaction
 * (depends on the store's revision, which every write moves) may touch. */
const EVERY_KEY: Interval = { start: "", end: undefined };

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
/** Whether a transaction only reads (compares and ranges): such a one may skip the log. */
export function isReadOnly(txn: TxnRequest): boolean {
  for (const op of txn.success ?? []) if (!("range" in op)) return false;
  for (const op of txn.failure ?? []) if (!("range" in op)) return false;
  return true;
}

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
  else if ("put" in op) {
    fp.writes.push(intervalOf({ key: op.put.key }));
    if ((op.put.lease ?? 0) !== 0) fp.leaseReads.push(op.put.lease!);
  } else if ("merge" in op) {
    const ranges = [
      ...(op.merge.max ?? []).map((f) => ({ at: f.at, width: 12 })),
      ...(op.merge.add ?? []).map((f) => ({ at: f.at, width: f.width })),
    ];
    fp.merges.push({ key: intervalOf({ key: op.merge.key }), ranges });
  } else fp.writes.push(intervalOf(op.deleteRange));
}

const footprints = new WeakMap<Command, Footprint>();

/** Footprint of a command, computed once per command object. */
export function footprintOf(command: Command): Footprint {
  let fp = footprints.get(command);
  if (fp !== undefined) return fp;
  fp = { reads: [], writes: [], merges: [], maskedReads: [], leaseReads: [], leaseWrites: [] };
  const admin = command.admin;
  if (admin !== undefined) {
    if ("leaseGrant" in admin) fp.leaseWrites.push(admin.leaseGrant.id);
    else if ("leaseKeepAlive" in admin) fp.leaseWrites.push(admin.leaseKeepAlive.id);
    else if ("leaseRevoke" in admin) {
      fp.leaseWrites.push(admin.leaseRevoke.id);
      fp.writes.push(EVERY_KEY);
    } else fp.writes.push(EVERY_KEY);
  }
  // A batch's footprint is the union of its transactions': witnesses and the leader check it
  // whole, as one command.
  for (const txn of txnsOf(command)) {
    for (const c of txn.compare ?? []) {
      const key = intervalOf({ key: c.key });
      if (c.target === "value" && c.ignore !== undefined) {
        fp.maskedReads.push({ key, ranges: c.ignore });
      } else fp.reads.push(key);
    }
    for (const op of txn.success ?? []) addOp(op, fp);
    for (const op of txn.failure ?? []) addOp(op, fp);
  }
  footprints.set(command, fp);
  return fp;
}

/** Intervals split into single keys (a hash set) and the rest: a conflict check costs a lookup
 * per key instead of two string comparisons per pair of intervals. A batch command (a union of
 * many transactions' keys) checked against a pool of such ones made the pairwise check the
 * largest cost of a replica (18% of the leader's ticks in `StringLessThan`, 16 clients). */
interface IntervalSet {
  points: Set<string>;
  ranges: Interval[];
}

/** Whether `iv` is one key: [k, k + "\0"). */
function isPoint(iv: Interval): boolean {
  const end = iv.end;
  return end !== undefined && end.length === iv.start.length + 1 &&
    end.charCodeAt(end.length - 1) === 0 && end.startsWith(iv.start);
}

function intervalSet(list: Interval[]): IntervalSet {
  const set: IntervalSet = { points: new Set(), ranges: [] };
  for (const iv of list) {
    if (isPoint(iv)) set.points.add(iv.start);
    else set.ranges.push(iv);
  }
  return set;
}

/** A footprint's intervals by kind, as sets (computed once per footprint). */
interface FootprintSets {
  writes: IntervalSet;
  reads: IntervalSet;
  merges: IntervalSet;
  maskedReads: IntervalSet;
}

const footprintSets = new WeakMap<Footprint, FootprintSets>();

function setsOf(fp: Footprint): FootprintSets {
  let sets = footprintSets.get(fp);
  if (sets === undefined) {
    sets = {
      writes: intervalSet(fp.writes),
      reads: intervalSet(fp.reads),
      merges: intervalSet(fp.merges.map((m) => m.key)),
      maskedReads: intervalSet(fp.maskedReads.map((m) => m.key)),
    };
    footprintSets.set(fp, sets);
  }
  return sets;
}

/** Whether key `p` lies in `iv` (`overlaps` of the point [p, p + "\0") and `iv`). */
function contains(iv: Interval, p: string): boolean {
  return iv.start <= p && (iv.end === undefined || p < iv.end);
}

function anyOverlap(a: IntervalSet, b: IntervalSet): boolean {
  const [small, large] = a.points.size <= b.points.size ? [a, b] : [b, a];
  for (const p of small.points) if (large.points.has(p)) return true;
  for (const r of a.ranges) {
    for (const p of b.points) if (contains(r, p)) return true;
    for (const s of b.ranges) if (overlaps(r, s)) return true;
  }
  for (const r of b.ranges) for (const p of a.points) if (contains(r, p)) return true;
  return false;
}

/** Whether a merge changing `merge.ranges` may change what a masked read of the same key sees:
 * some changed byte lies outside the ranges the read ignores. */
function mergeSeen(merge: Masked, read: Masked): boolean {
  if (isPoint(merge.key) && isPoint(read.key)) {
    if (merge.key.start !== read.key.start) return false;
  } else if (!overlaps(merge.key, read.key)) return false;
  return merge.ranges.some((m) =>
    !read.ranges.some((r) => r.at <= m.at && m.at + m.width <= r.at + r.width)
  );
}

function anyMergeSeen(merges: Masked[], reads: Masked[]): boolean {
  for (const m of merges) for (const r of reads) if (mergeSeen(m, r)) return true;
  return false;
}

/** Two commands conflict when one may write a key the other may read, write, merge or
 * mask-compare, when one merges a key the other reads whole, or when one merges bytes that the
 * other's masked compare looks at. Two reads never conflict, nor two merges (they commute: max and
 * modular add), nor a merge and a compare that ignores every byte it changes. Symmetric by
 * construction. */
export function conflicts(a: Command, b: Command): boolean {
  const fa = footprintOf(a);
  const fb = footprintOf(b);
  const sa = setsOf(fa);
  const sb = setsOf(fb);
  return anyOverlap(sa.writes, sb.writes) || anyOverlap(sa.writes, sb.reads) ||
    anyOverlap(sa.reads, sb.writes) || anyOverlap(sa.writes, sb.merges) ||
    anyOverlap(sa.merges, sb.writes) || anyOverlap(sa.writes, sb.maskedReads) ||
    anyOverlap(sa.maskedReads, sb.writes) || anyOverlap(sa.merges, sb.reads) ||
    anyOverlap(sa.reads, sb.merges) || anyMergeSeen(fa.merges, fb.maskedReads) ||
    anyMergeSeen(fb.merges, fa.maskedReads) ||
    fa.leaseWrites.some((l) => fb.leaseWrites.includes(l)) ||
    fa.leaseWrites.some((l) => fb.leaseReads.includes(l)) ||
    fa.leaseReads.some((l) => fb.leaseWrites.includes(l));
}

export function idKey(id: CommandId): string {
  return `${id.clientId}#${id.seq}`;
}

/** Whether a footprint names a key range or a lease id: such a command is checked against every
 * other, and every other against it (`ConflictIndex`). */
function isWide(fp: Footprint, sets: FootprintSets): boolean {
  return sets.writes.ranges.length > 0 || sets.reads.ranges.length > 0 ||
    sets.merges.ranges.length > 0 || sets.maskedReads.ranges.length > 0 ||
    fp.leaseReads.length > 0 || fp.leaseWrites.length > 0;
}

/**
 * Commands indexed by the single keys they name, so that a new command is checked (`conflicts`)
 * against the few that share a key with it rather than against each: a witness pool holds every
 * command proposed and not yet known committed (120-130 records seen on a follower under one
 * client's fast-path load, where the commit trails the fast answers), and a leader's uncommitted
 * log as many. Two commands naming only single keys and no lease can conflict only when they
 * share a key; a command naming a range or a lease is a candidate for every other, and every
 * other for it.
 */
export class ConflictIndex<K> {
  readonly #commands = new Map<K, Command>();
  readonly #byKey = new Map<string, Set<K>>();
  /** Commands naming a range or a lease. */
  readonly #wide = new Set<K>();

  get size(): number {
    return this.#commands.size;
  }

  add(id: K, command: Command): void {
    if (this.#commands.get(id) === command) return;
    this.delete(id);
    this.#commands.set(id, command);
    const fp = footprintOf(command);
    const sets = setsOf(fp);
    if (isWide(fp, sets)) {
      this.#wide.add(id);
      return;
    }
    for (const set of [sets.writes, sets.reads, sets.merges, sets.maskedReads]) {
      for (const key of set.points) {
        let ids = this.#byKey.get(key);
        if (ids === undefined) this.#byKey.set(key, ids = new Set());
        ids.add(id);
      }
    }
  }

  delete(id: K): boolean {
    const command = this.#commands.get(id);
    if (command === undefined) return false;
    this.#commands.delete(id);
    if (this.#wide.delete(id)) return true;
    const sets = setsOf(footprintOf(command));
    for (const set of [sets.writes, sets.reads, sets.merges, sets.maskedReads]) {
      for (const key of set.points) {
        const ids = this.#byKey.get(key);
        if (ids === undefined) continue;
        ids.delete(id);
        if (ids.size === 0) this.#byKey.delete(key);
      }
    }
    return true;
  }

  clear(): void {
    this.#commands.clear();
    this.#byKey.clear();
    this.#wide.clear();
  }

  /** Call `visit` with the indexed commands that may conflict with `command` (every one that
   * does, some that do not, some more than once) until it returns true; whether one did. */
  some(command: Command, visit: (id: K, other: Command) => boolean): boolean {
    const fp = footprintOf(command);
    const sets = setsOf(fp);
    if (isWide(fp, sets)) {
      for (const [id, other] of this.#commands) if (visit(id, other)) return true;
      return false;
    }
    for (const id of this.#wide) {
      const other = this.#commands.get(id);
      if (other !== undefined && visit(id, other)) return true;
    }
    for (const set of [sets.writes, sets.reads, sets.merges, sets.maskedReads]) {
      for (const key of set.points) {
        const ids = this.#byKey.get(key);
        if (ids === undefined) continue;
        for (const id of ids) {
          const other = this.#commands.get(id);
          if (other !== undefined && visit(id, other)) return true;
        }
      }
    }
    return false;
  }
}
