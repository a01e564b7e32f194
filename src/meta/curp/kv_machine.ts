/**
 * The replicated state machine: an in-memory KV with MetaKV (etcd v3) transaction semantics plus
 * client sessions for exactly-once execution.
 *
 * Every replica applies the same committed commands in the same order and so reaches the same
 * state, sessions included. `speculate` runs a command against the current state through an
 * overlay and writes nothing: the leader's fast-path answer.
 * @module
 */

import type { Compare, KeyValue, RequestOp, ResponseOp, TxnResponse } from "../kv.ts";
import { type Command, type CommandResult, intervalOf, keyString } from "./command.ts";

/** Most results kept per client session; a client has one command outstanding, so a few do. */
const MAX_RESULTS_PER_SESSION = 16;

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

class MapStore implements Store {
  constructor(readonly map: Map<string, KeyValue>) {}
  get(key: string) {
    return this.map.get(key);
  }
  set(key: string, kv: KeyValue | undefined) {
    if (kv === undefined) this.map.delete(key);
    else this.map.set(key, kv);
  }
  keysIn(start: string, end: string | undefined): string[] {
    const keys: string[] = [];
    for (const k of this.map.keys()) if (k >= start && (end === undefined || k < end)) keys.push(k);
    return keys.sort();
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

function copyKv(kv: KeyValue, keysOnly = false): KeyValue {
  return { ...kv, value: keysOnly ? new Uint8Array(0) : kv.value.slice() };
}

export class KvMachine {
  readonly #data = new Map<string, KeyValue>();
  readonly #store = new MapStore(this.#data);
  readonly #sessions = new Map<string, Session>();
  /** etcd starts at 1: a fresh store's revision is 1 and its first write makes 2. */
  #revision = 1;

  get revision(): number {
    return this.#revision;
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
    const result = this.#execute(this.#store, command, this.#revision + 1);
    if (result.ok && result.txn.revision > this.#revision) this.#revision = result.txn.revision;
    session.results.set(command.seq, result);
    return { executed: true, result };
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

  /** The result the command would have if it ran now, with every revision field that depends on
   * its position in the log set to 0 (the speculative answer cannot know it). */
  speculate(command: Command): CommandResult {
    const overlay = new OverlayStore(this.#store);
    const result = this.#execute(overlay, command, 0);
    return result.ok ? { ok: true, txn: stripRevisions(result.txn) } : result;
  }

  /** Sorted key-values, for invariant checks. */
  dump(): KeyValue[] {
    return this.#store.keysIn("", undefined).map((k) => this.#data.get(k)!);
  }

  #execute(store: Store, command: Command, nextRevision: number): CommandResult {
    const txn = command.txn;
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
      if ("put" in op && (op.put.lease ?? 0) !== 0) {
        return {
          ok: false,
          error: `Lease ${op.put.lease} not found (leases are not replicated yet)`,
        };
      }
    }
    // Deleting nothing writes nothing: only a put or a delete that finds keys makes a revision.
    const writes = ops.some((op) =>
      "put" in op ||
      ("deleteRange" in op && store.keysIn(...spread(intervalOf(op.deleteRange))).length > 0)
    );
    const revision = writes ? nextRevision : this.#revision;
    const responses = ops.map((op) => runOp(store, op, revision));
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
    const key = "range" in op ? op.range.key : "put" in op ? op.put.key : op.deleteRange.key;
    if (key.length === 0) return "Key must not be empty (etcd: key is not provided)";
    if ("put" in op) puts.push(keyString(op.put.key));
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

function runOp(store: Store, op: RequestOp, revision: number): ResponseOp {
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
  if ("put" in op) {
    const key = keyString(op.put.key);
    const prev = store.get(key);
    store.set(key, {
      key: op.put.key.slice(),
      value: op.put.value.slice(),
      createRevision: prev?.createRevision ?? revision,
      modRevision: revision,
      version: (prev?.version ?? 0) + 1,
      lease: op.put.lease ?? 0,
    });
    return { put: op.put.prevKv && prev !== undefined ? { prevKv: copyKv(prev) } : {} };
  }
  const iv = intervalOf(op.deleteRange);
  const keys = store.keysIn(iv.start, iv.end);
  const prevKvs = op.deleteRange.prevKv ? keys.map((k) => copyKv(store.get(k)!)) : [];
  for (const k of keys) store.set(k, undefined);
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
