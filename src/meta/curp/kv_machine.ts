/**
 * The replicated state machine: an in-memory KV with MetaKV (etcd v3) transaction semantics plus
 * client sessions for exactly-once execution.
 *
 * Every replica applies the same committed commands in the same order and so reaches the same
 * state, sessions included. `speculate` runs a command against the current state through an
 * overlay and writes nothing: the leader's fast-path answer.
 * @module
 */

import sortedBtree from "sorted-btree";
import { applyMerge } from "../kv.ts";
import type {
  Compare,
  KeyValue,
  MergeRequest,
  RequestOp,
  ResponseOp,
  TxnRequest,
  TxnResponse,
  WatchEvent,
} from "../kv.ts";
import {
  type AdminOp,
  type Command,
  type CommandResult,
  intervalOf,
  keyString,
  txnsOf,
} from "./command.ts";

/** Most results kept per client session; a client has one command outstanding, so a few do. */
const MAX_RESULTS_PER_SESSION = 16;

/** Most write revisions of watch history kept; older ones are compacted at apply, the same way on
 * every replica (deterministic), so memory stays bounded without anyone calling compact. */
export const MAX_HISTORY_REVISIONS = 20_000;

/** One write revision's events, for watches. */
export interface HistoryRecord {
  revision: number;
  events: WatchEvent[];
}

/** The whole machine as plain data (bytes stay Uint8Array): what a snapshot stores. */
export interface KvSnapshot {
  revision: number;
  compacted: number;
  kvs: KeyValue[];
  sessions: { clientId: string; firstUnacked: number; results: [number, CommandResult][] }[];
  leases: { id: number; ttlSeconds: number }[];
  history: HistoryRecord[];
}

interface Session {
  firstUnacked: number;
  results: Map<number, CommandResult>;
}

/** What applying one committed command did. */
export interface ApplyOutcome {
  /** False when the command had already run (a retry or a replayed duplicate). */
  executed: boolean;
  /** Undefined when the result was already acknowledged and forgotten. */
  result: CommandResult | undefined;
}

interface Store {
  get(key: string): KeyValue | undefined;
  set(key: string, kv: KeyValue | undefined): void;
  keysIn(start: string, end: string | undefined): string[];
}

const sortedBtreeClass = sortedBtree.default;

/** The committed store: a B+ tree (npm sorted-btree) of latin1 key strings, whose order is the
 * keys' unsigned byte order. A range visits only its keys and a single key is one lookup; a scan
 * of every key per range (what this was) made each lookup O(store) on a namespace of many files. */
class TreeStore implements Store {
  readonly #tree = new sortedBtreeClass<string, KeyValue>(
    undefined,
    (a: string, b: string) => a < b ? -1 : a > b ? 1 : 0,
  );
  get(key: string) {
    return this.#tree.get(key);
  }
  set(key: string, kv: KeyValue | undefined) {
    if (kv === undefined) this.#tree.delete(key);
    else this.#tree.set(key, kv);
  }
  keysIn(start: string, end: string | undefined): string[] {
    // intervalOf gives one key as [key, key + "\0").
    if (
      end !== undefined && end.length === start.length + 1 && end.endsWith("\0") &&
      end.startsWith(start)
    ) {
      return this.#tree.has(start) ? [start] : [];
    }
    const keys: string[] = [];
    if (end === undefined) {
      for (const k of this.#tree.keys(start)) keys.push(k);
      return keys;
    }
    this.#tree.forRange(start, end, false, (k) => {
      keys.push(k);
    });
    return keys;
  }
}

/** Writes go to a side table, so speculation never touches the real store. */
class OverlayStore implements Store {
  readonly changes = new Map<string, KeyValue | undefined>();
  constructor(readonly base: Store) {}
  get(key: string) {
    return this.changes.has(key) ? this.changes.get(key) : this.base.get(key);
  }
  set(key: string, kv: KeyValue | undefined) {
    this.changes.set(key, kv);
  }
  keysIn(start: string, end: string | undefined): string[] {
    const keys = new Set(this.base.keysIn(start, end));
    for (const [k, v] of this.changes) {
      if (k < start || (end !== undefined && k >= end)) continue;
      if (v === undefined) keys.delete(k);
      else keys.add(k);
    }
    return [...keys].sort();
  }
}

function compareNumbers(a: number, b: number, result: Compare["result"]): boolean {
  switch (result) {
    case "==":
      return a === b;
    case "!=":
      return a !== b;
    case "<":
      return a < b;
    case ">":
      return a > b;
  }
}

function compareHolds(store: Store, c: Compare): boolean {
  const kv = store.get(keyString(c.key));
  if (c.target === "value") {
    if (kv === undefined) return false;
    if (c.ignore !== undefined) {
      const equal = equalIgnoring(kv.value, c.value, c.ignore);
      return c.result === "==" ? equal : c.result === "!=" ? !equal : false;
    }
    const order = keyString(kv.value) < keyString(c.value)
      ? -1
      : keyString(kv.value) > keyString(c.value)
      ? 1
      : 0;
    return compareNumbers(order, 0, c.result);
  }
  const actual = kv === undefined ? 0 : kv[c.target];
  return compareNumbers(actual, c.value, c.result);
}

/** Whether `a` and `b` are equal outside the `ignore` ranges (same length required). */
export function equalIgnoring(
  a: Uint8Array,
  b: Uint8Array,
  ignore: { at: number; width: number }[],
): boolean {
  if (a.length !== b.length) return false;
  outer: for (let i = 0; i < a.length; i++) {
    if (a[i] === b[i]) continue;
    for (const r of ignore) if (i >= r.at && i < r.at + r.width) continue outer;
    return false;
  }
  return true;
}

function copyKv(kv: KeyValue, keysOnly = false): KeyValue {
  return { ...kv, value: keysOnly ? new Uint8Array(0) : kv.value.slice() };
}

export class KvMachine {
  readonly #store = new TreeStore();
  readonly #sessions = new Map<string, Session>();
  /** Lease id -> TTL and the keys attached to it. */
  readonly #leases = new Map<number, { ttlSeconds: number; keys: Set<string> }>();
  /** Write revisions >= #compacted, oldest first: `#history` from `#historyStart` on. Records
   * before `#historyStart` are dropped ones, cut off the array only once they are a quarter of
   * the bound: cutting one per commit copied the whole array (20,000 records) on every write. */
  #history: HistoryRecord[] = [];
  #historyStart = 0;
  #compacted = 1;
  /** etcd starts at 1: a fresh store's revision is 1 and its first write makes 2. */
  #revision = 1;

  get revision(): number {
    return this.#revision;
  }

  /** Oldest revision a watch may start from. */
  get compactRevision(): number {
    return this.#compacted;
  }

  /** Lease ids with their TTL, for the leader's expiry timers. */
  leases(): { id: number; ttlSeconds: number }[] {
    return [...this.#leases].map(([id, l]) => ({ id, ttlSeconds: l.ttlSeconds }));
  }

  hasLease(id: number): boolean {
    return this.#leases.has(id);
  }

  /** History records with revision >= `from` (from >= compactRevision), oldest first. */
  historyFrom(from: number): HistoryRecord[] {
    let lo = this.#historyStart;
    let hi = this.#history.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.#history[mid].revision < from) lo = mid + 1;
      else hi = mid;
    }
    return this.#history.slice(lo);
  }

  /** Leader-decided expiry, committed through the log: delete each lease and its keys, all in
   * one revision. Leases already gone are skipped. */
  expire(ids: number[]): void {
    const events: WatchEvent[] = [];
    let wrote = false;
    for (const id of ids) wrote = this.#dropLease(id, this.#revision + 1, events) || wrote;
    if (wrote) this.#revision++;
    this.#commitEvents({
      ok: true,
      txn: { succeeded: true, revision: this.#revision, responses: [] },
    }, events);
  }

  snapshot(): KvSnapshot {
    return {
      revision: this.#revision,
      compacted: this.#compacted,
      kvs: this.dump(),
      sessions: [...this.#sessions].map(([clientId, s]) => ({
        clientId,
        firstUnacked: s.firstUnacked,
        results: [...s.results],
      })),
      leases: this.leases(),
      history: this.#history.slice(this.#historyStart),
    };
  }

  static fromSnapshot(snapshot: KvSnapshot): KvMachine {
    const m = new KvMachine();
    m.#revision = snapshot.revision;
    m.#compacted = snapshot.compacted;
    for (const l of snapshot.leases) {
      m.#leases.set(l.id, { ttlSeconds: l.ttlSeconds, keys: new Set() });
    }
    for (const kv of snapshot.kvs) {
      const name = keyString(kv.key);
      m.#store.set(name, kv);
      if (kv.lease !== 0) m.#leases.get(kv.lease)?.keys.add(name);
    }
    for (const s of snapshot.sessions) {
      m.#sessions.set(s.clientId, { firstUnacked: s.firstUnacked, results: new Map(s.results) });
    }
    m.#history = snapshot.history.slice();
    return m;
  }

  #commitEvents(result: CommandResult, events: WatchEvent[]): void {
    if (!result.ok || result.txn.revision <= this.#revision && events.length === 0) return;
    if (result.txn.revision > this.#revision) this.#revision = result.txn.revision;
    if (events.length > 0) this.#history.push({ revision: this.#revision, events });
    if (this.#history.length - this.#historyStart > MAX_HISTORY_REVISIONS) {
      this.#historyStart = this.#history.length - MAX_HISTORY_REVISIONS;
      this.#compacted = this.#history[this.#historyStart].revision;
      if (this.#historyStart >= MAX_HISTORY_REVISIONS / 4) {
        this.#history = this.#history.slice(this.#historyStart);
        this.#historyStart = 0;
      }
    }
  }

  #admin(op: AdminOp, events: WatchEvent[]): CommandResult {
    const done = (revision: number, ttlSeconds?: number): CommandResult => ({
      ok: true,
      txn: { succeeded: true, revision, responses: [] },
      ...(ttlSeconds !== undefined ? { ttlSeconds } : {}),
    });
    if ("leaseGrant" in op) {
      const { id, ttlSeconds } = op.leaseGrant;
      if (!Number.isSafeInteger(id) || id <= 0) {
        return { ok: false, error: `Lease id ${id} is not a positive integer` };
      }
      if (!(ttlSeconds > 0)) {
        return { ok: false, error: `Lease TTL ${ttlSeconds} s is not positive` };
      }
      if (this.#leases.has(id)) return { ok: false, error: `Lease ${id} already exists` };
      this.#leases.set(id, { ttlSeconds, keys: new Set() });
      return done(this.#revision, ttlSeconds);
    }
    if ("leaseKeepAlive" in op) {
      const lease = this.#leases.get(op.leaseKeepAlive.id);
      if (lease === undefined) {
        return { ok: false, error: `Lease ${op.leaseKeepAlive.id} not found` };
      }
      return done(this.#revision, lease.ttlSeconds);
    }
    if ("leaseRevoke" in op) {
      const id = op.leaseRevoke.id;
      if (!this.#leases.has(id)) return { ok: false, error: `Lease ${id} not found` };
      const wrote = this.#dropLease(id, this.#revision + 1, events);
      return done(wrote ? this.#revision + 1 : this.#revision);
    }
    const revision = op.compact.revision;
    if (revision > this.#revision) {
      return {
        ok: false,
        error: `Cannot compact to revision ${revision}: the store is at ${this.#revision}`,
      };
    }
    if (revision <= this.#compacted) {
      return {
        ok: false,
        error: `Revision ${revision} is already compacted (at ${this.#compacted})`,
      };
    }
    this.#compacted = revision;
    this.#history = this.historyFrom(revision);
    this.#historyStart = 0;
    return done(this.#revision);
  }

  /** Remove lease `id` and delete its keys at `revision`; whether any key was deleted. */
  #dropLease(id: number, revision: number, events: WatchEvent[]): boolean {
    const lease = this.#leases.get(id);
    if (lease === undefined) return false;
    this.#leases.delete(id);
    for (const name of [...lease.keys].sort()) {
      const prev = this.#store.get(name)!;
      this.#store.set(name, undefined);
      events.push(deleteEvent(prev, revision));
    }
    return lease.keys.size > 0;
  }

  /** Execute a committed command once; a duplicate returns the remembered result. */
  apply(command: Command): ApplyOutcome {
    let session = this.#sessions.get(command.clientId);
    if (session === undefined) {
      session = { firstUnacked: 0, results: new Map() };
      this.#sessions.set(command.clientId, session);
    }
    if (command.firstUnacked > session.firstUnacked) {
      session.firstUnacked = command.firstUnacked;
      for (const seq of session.results.keys()) {
        if (seq < session.firstUnacked) session.results.delete(seq);
      }
    }
    // A client sends seq n+1 only after n completed, so a seq below firstUnacked has run.
    if (command.seq < session.firstUnacked) return { executed: false, result: undefined };
    const known = session.results.get(command.seq);
    if (known !== undefined) return { executed: false, result: known };
    if (session.results.size >= MAX_RESULTS_PER_SESSION) {
      throw new Error(
        `Client "${command.clientId}" has ${session.results.size} unacknowledged results; a client may have one command outstanding`,
      );
    }
    let result: CommandResult;
    if (command.admin === undefined && command.batch !== undefined) {
      result = this.#applyBatch(command.batch);
    } else {
      const events: WatchEvent[] = [];
      result = command.admin !== undefined
        ? this.#admin(command.admin, events)
        : this.#execute(this.#store, command.txn, this.#revision + 1, events);
      this.#commitEvents(result, events);
    }
    session.results.set(command.seq, result);
    return { executed: true, result };
  }

  /** A batch: each transaction exactly as if it were committed alone right after the one before
   * (its own compare result, revision and watch history record); one failing does not stop the
   * rest. */
  #applyBatch(batch: TxnRequest[]): CommandResult {
    const results: CommandResult[] = [];
    for (const txn of batch) {
      const events: WatchEvent[] = [];
      const result = this.#execute(this.#store, txn, this.#revision + 1, events);
      this.#commitEvents(result, events);
      results.push(result);
    }
    return {
      ok: true,
      txn: { succeeded: true, revision: this.#revision, responses: [] },
      batch: results,
    };
  }

  /** Whether the command has run already (its result is known or acknowledged). */
  executed(command: Command): boolean {
    const session = this.#sessions.get(command.clientId);
    if (session === undefined) return false;
    return command.seq < session.firstUnacked || session.results.has(command.seq);
  }

  resultOf(command: Command): CommandResult | undefined {
    return this.#sessions.get(command.clientId)?.results.get(command.seq);
  }

  /** The result the command would have if it ran now (after the commands of `after`, not yet
   * applied), with every revision field that depends on its position in the log set to 0 (the
   * speculative answer cannot know it). */
  speculate(command: Command, after: readonly Command[] = []): CommandResult {
    if (command.admin !== undefined) {
      return { ok: false, error: "Lease and compaction commands take the slow path" };
    }
    const overlay = new OverlayStore(this.#store);
    // Uncommitted earlier commands the result depends on (the same client's, core.ts
    // `#ownUncommitted`), run first in log order; their keys then carry revision 0.
    for (const earlier of after) {
      for (const txn of txnsOf(earlier)) this.#execute(overlay, txn, 0, []);
    }
    const speculated = (txn: TxnRequest): CommandResult => {
      const result = this.#execute(overlay, txn, 0, []);
      return result.ok ? { ok: true, txn: stripRevisions(result.txn) } : result;
    };
    if (command.batch === undefined) return speculated(command.txn);
    const batch = command.batch.map(speculated);
    return { ok: true, txn: { succeeded: true, revision: 0, responses: [] }, batch };
  }

  /** A read-only transaction (`isReadOnly`) on the applied state, with real revisions. */
  read(txn: TxnRequest): CommandResult {
    return this.#execute(this.#store, txn, 0, []);
  }

  /** Sorted key-values, for invariant checks. */
  dump(): KeyValue[] {
    return this.#store.keysIn("", undefined).map((k) => this.#store.get(k)!);
  }

  #execute(
    store: Store,
    txn: TxnRequest,
    nextRevision: number,
    events: WatchEvent[],
  ): CommandResult {
    let succeeded = true;
    for (const c of txn.compare ?? []) {
      if (!compareHolds(store, c)) {
        succeeded = false;
        break;
      }
    }
    const refused = invalidBranch(txn.success ?? []) ?? invalidBranch(txn.failure ?? []);
    if (refused !== undefined) return { ok: false, error: refused };
    const ops = (succeeded ? txn.success : txn.failure) ?? [];
    for (const op of ops) {
      if ("put" in op && (op.put.lease ?? 0) !== 0 && !this.#leases.has(op.put.lease!)) {
        return { ok: false, error: `Lease ${op.put.lease} not found` };
      }
      if ("merge" in op) {
        const prev = store.get(keyString(op.merge.key));
        const beyond = prev === undefined ? undefined : mergeBeyond(op.merge, prev.value.length);
        if (beyond !== undefined) return { ok: false, error: beyond };
      }
    }
    // Deleting or merging nothing writes nothing: only a put, a delete that finds keys or a merge
    // of a key that exists makes a revision.
    const writes = ops.some((op) =>
      "put" in op ||
      ("merge" in op && store.get(keyString(op.merge.key)) !== undefined) ||
      ("deleteRange" in op && store.keysIn(...spread(intervalOf(op.deleteRange))).length > 0)
    );
    const revision = writes ? nextRevision : this.#revision;
    // Lease bookkeeping and events only for the real store: speculation writes nothing.
    const real = store === this.#store;
    const responses = ops.map((op) =>
      runOp(store, op, revision, real ? events : undefined, real ? this.#leases : undefined)
    );
    return { ok: true, txn: { succeeded, revision, responses } };
  }
}

function spread(iv: { start: string; end: string | undefined }): [string, string | undefined] {
  return [iv.start, iv.end];
}

/** etcd's request checks, made on both branches whichever runs: no empty key, and no key put
 * twice or both put and deleted in one branch ("duplicate key given in txn request"). */
function invalidBranch(ops: RequestOp[]): string | undefined {
  const puts: string[] = [];
  const deletes: { start: string; end: string | undefined }[] = [];
  for (const op of ops) {
    const key = "range" in op
      ? op.range.key
      : "put" in op
      ? op.put.key
      : "merge" in op
      ? op.merge.key
      : op.deleteRange.key;
    if (key.length === 0) return "Key must not be empty (etcd: key is not provided)";
    if ("put" in op) puts.push(keyString(op.put.key));
    if ("merge" in op) {
      const bad = mergeShape(op.merge);
      if (bad !== undefined) return bad;
      // A key merged and put (or deleted, or merged twice) in one branch: as etcd's duplicates.
      puts.push(keyString(op.merge.key));
    }
    if ("deleteRange" in op) deletes.push(intervalOf(op.deleteRange));
  }
  const seen = new Set<string>();
  for (const k of puts) {
    if (seen.has(k)) return `Duplicate key ${JSON.stringify(k)} given in txn request`;
    seen.add(k);
    for (const d of deletes) {
      if (k >= d.start && (d.end === undefined || k < d.end)) {
        return `Key ${JSON.stringify(k)} is both put and deleted in one txn request`;
      }
    }
  }
  return undefined;
}

type LeaseTable = Map<number, { keys: Set<string> }>;

/** Why a merge's fields are malformed (not integers, a width outside 1-4), or undefined. */
function mergeShape(m: MergeRequest): string | undefined {
  for (const f of m.max ?? []) {
    if (
      !Number.isSafeInteger(f.at) || f.at < 0 || !Number.isSafeInteger(f.sec) ||
      !Number.isInteger(f.nsec) || f.nsec < 0 || f.nsec >= 1e9
    ) return `Merge max field ${JSON.stringify(f)} is not an offset, seconds and nanoseconds`;
  }
  for (const f of m.add ?? []) {
    if (
      !Number.isSafeInteger(f.at) || f.at < 0 || !Number.isInteger(f.width) || f.width < 1 ||
      f.width > 4 || !Number.isSafeInteger(f.delta)
    ) return `Merge add field ${JSON.stringify(f)} needs an offset, a width of 1-4 bytes, a delta`;
  }
  return undefined;
}

/** Why a merge's fields do not fit in a value of `length` bytes, or undefined. */
function mergeBeyond(m: MergeRequest, length: number): string | undefined {
  for (const f of m.max ?? []) {
    if (f.at + 12 > length) {
      return `Merge max field at ${f.at} is beyond the value's ${length} bytes`;
    }
  }
  for (const f of m.add ?? []) {
    if (f.at + f.width > length) {
      return `Merge add field at ${f.at} is beyond the value's ${length} bytes`;
    }
  }
  return undefined;
}

function deleteEvent(prev: KeyValue, revision: number): WatchEvent {
  return {
    type: "delete",
    kv: {
      key: prev.key,
      value: new Uint8Array(0),
      createRevision: 0,
      modRevision: revision,
      version: 0,
      lease: 0,
    },
    prevKv: prev,
  };
}

function runOp(
  store: Store,
  op: RequestOp,
  revision: number,
  events?: WatchEvent[],
  leases?: LeaseTable,
): ResponseOp {
  if ("range" in op) {
    const r = op.range;
    const iv = intervalOf(r);
    const keys = store.keysIn(iv.start, iv.end);
    const limit = r.limit ?? 0;
    const shown = limit > 0 ? keys.slice(0, limit) : keys;
    return {
      range: {
        kvs: r.countOnly ? [] : shown.map((k) => copyKv(store.get(k)!, r.keysOnly === true)),
        more: limit > 0 && keys.length > limit,
        count: keys.length,
        revision,
      },
    };
  }
  if ("merge" in op) {
    const key = keyString(op.merge.key);
    const prev = store.get(key);
    if (prev === undefined) return { merge: {} };
    const kv: KeyValue = {
      ...prev,
      value: applyMerge(op.merge, prev.value),
      modRevision: revision,
      version: prev.version + 1,
    };
    store.set(key, kv);
    events?.push({ type: "put", kv, prevKv: prev });
    return { merge: {} };
  }
  if ("put" in op) {
    const key = keyString(op.put.key);
    const prev = store.get(key);
    const kv: KeyValue = {
      key: op.put.key.slice(),
      value: op.put.value.slice(),
      createRevision: prev?.createRevision ?? revision,
      modRevision: revision,
      version: (prev?.version ?? 0) + 1,
      lease: op.put.lease ?? 0,
    };
    store.set(key, kv);
    if (prev !== undefined && prev.lease !== 0) leases?.get(prev.lease)?.keys.delete(key);
    if (kv.lease !== 0) leases?.get(kv.lease)?.keys.add(key);
    events?.push({ type: "put", kv, ...(prev !== undefined ? { prevKv: prev } : {}) });
    return { put: op.put.prevKv && prev !== undefined ? { prevKv: copyKv(prev) } : {} };
  }
  const iv = intervalOf(op.deleteRange);
  const keys = store.keysIn(iv.start, iv.end);
  const prevKvs = op.deleteRange.prevKv ? keys.map((k) => copyKv(store.get(k)!)) : [];
  for (const k of keys) {
    const prev = store.get(k)!;
    if (prev.lease !== 0) leases?.get(prev.lease)?.keys.delete(k);
    events?.push(deleteEvent(prev, revision));
    store.set(k, undefined);
  }
  return { deleteRange: { deleted: keys.length, prevKvs } };
}

/** Zero the revisions the command itself creates: its own revision and those of keys it writes.
 * Revisions of keys read but not written come from committed state and stay. */
function stripRevisions(txn: TxnResponse): TxnResponse {
  const responses = txn.responses.map((r): ResponseOp => {
    if ("range" in r) return { range: { ...r.range, revision: 0 } };
    return r;
  });
  return { succeeded: txn.succeeded, revision: 0, responses };
}
