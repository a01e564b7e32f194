/**
 * The CURP client as a pure state machine: it sends each command to every replica and decides
 * between the fast path (leader's speculative result plus a superquorum of witnesses in the same
 * term) and the slow path (the leader's result after commit). Retries keep the same (client, seq).
 * @module
 */

import type { TxnRequest } from "../kv.ts";
import { type AdminOp, BATCH_TXN, type Command, type CommandResult } from "./command.ts";
import { type Message, type NodeId, superquorum } from "./core.ts";

export interface Completion {
  /** The command's seq; 0 for a read answered outside the log. */
  seq: number;
  result: CommandResult | undefined;
  /** "fast": one round trip, result without revisions; "slow": after commit, with revisions;
   * "read": a read-only transaction answered by the leader outside the log, with revisions. */
  path: "fast" | "slow" | "read";
  /** A witness (or the leader) refused the proposal: it conflicted with a record still in that
   * replica's pool (or an uncommitted entry), so it could not complete on the fast path. */
  refused?: boolean;
}

export interface ClientConfig {
  id: string;
  replicas: NodeId[];
  /** Ticks before resending an unfinished command to every replica. Default 20. */
  retryTicks?: number;
  /** Complete on the fast path (result without revisions). False: always wait for the commit,
   * for callers that need revisions. Default true. */
  fastPath?: boolean;
}

/** A read outside the log (`submitRead`): replies by replica with their terms. */
interface OutstandingRead {
  readId: number;
  txn: TxnRequest;
  elapsed: number;
  terms: Map<NodeId, number>;
  leaderReply: { term: number; result: CommandResult } | undefined;
  /** Replicas sent this read so far; every replica once widened. */
  asked: Set<NodeId>;
}

export interface ReadOptions {
  /** The replica believed to lead. Given, the read goes to it and to just enough followers for a
   * majority (one of three), rotating; the others get it only if no answer completes it by the
   * next tick, or a reply names another leader. Without it, every replica at once. */
  leader?: NodeId;
  /** The followers to pick from for that first send (those the caller can reach); default all.
   * Fewer than a majority needs: the rest come from the others. */
  followers?: readonly NodeId[];
}

interface Outstanding {
  command: Command;
  elapsed: number;
  /** Latest reply per replica: term and whether its witness accepted. */
  accepts: Map<NodeId, number>;
  leaderReply: { term: number; result: CommandResult } | undefined;
  fastPath: boolean;
  /** Some replica refused it (`Completion.refused`). */
  refused?: boolean;
}

export interface SubmitOptions {
  /** Run this instead of the txn (lease and compaction operations: always the slow path). */
  admin?: AdminOp;
  /** Override the client's `fastPath` for this command. */
  fastPath?: boolean;
  /** Run these transactions in order as one command instead of the txn (`Command.batch`): the
   * result's `batch` holds one result each. Ignored with `admin`. */
  batch?: TxnRequest[];
}

export class ClientCore {
  readonly id: string;
  readonly replicas: NodeId[];
  readonly #retryTicks: number;
  readonly #superquorum: number;
  readonly #fastPath: boolean;
  #nextSeq = 1;
  #firstUnacked = 1;
  #outstanding: Outstanding | undefined;
  #read: OutstandingRead | undefined;
  #nextReadId = 1;
  /** Rotates the followers a targeted read goes to. */
  #nextFollower = 0;
  /** Followers that did not answer a targeted read before it was widened: picked last until
   * they answer a read again (a replica in a hiccup would otherwise cost every other read a
   * tick). */
  readonly #late = new Set<NodeId>();
  readonly #majority: number;
  #messages: Message[] = [];
  #completions: Completion[] = [];
  /** Counts for status and benchmarks. */
  fastCount = 0;
  slowCount = 0;
  readCount = 0;
  retryCount = 0;
  /** Reads that had to go to every replica after a targeted first send (`ReadOptions.leader`). */
  readWidenCount = 0;

  constructor(config: ClientConfig) {
    this.id = config.id;
    this.replicas = config.replicas;
    this.#retryTicks = config.retryTicks ?? 20;
    this.#superquorum = superquorum(config.replicas.length);
    this.#fastPath = config.fastPath ?? true;
    this.#majority = Math.floor(config.replicas.length / 2) + 1;
  }

  get busy(): boolean {
    return this.#outstanding !== undefined || this.#read !== undefined;
  }

  /**
   * Start a read-only transaction (compares and ranges only) outside the log: every replica asked
   * answers with its term, the leader also with the result from its applied state (Replica's
   * `#onRead` says why that is linearizable). It completes when a majority, leader included,
   * reports the leader's term: one round trip, nothing written anywhere. With `options.leader`
   * only the leader and enough followers for that majority are asked (`ReadOptions`). When the
   * leader refuses (a conflicting write is not committed yet), the read becomes an ordinary
   * command.
   */
  submitRead(txn: TxnRequest, options: ReadOptions = {}): void {
    if (this.busy) throw new Error(`Client "${this.id}" already has a request outstanding`);
    const r: OutstandingRead = {
      readId: this.#nextReadId++,
      txn,
      elapsed: 0,
      terms: new Map(),
      leaderReply: undefined,
      asked: new Set(),
    };
    this.#read = r;
    const leader = options.leader;
    if (leader === undefined || !this.replicas.includes(leader)) return this.#broadcastRead(r);
    const all = this.replicas.filter((id) => id !== leader);
    const reachable = all.filter((id) =>
      (options.followers?.includes(id) ?? true) && !this.#late.has(id)
    );
    const followers = reachable.concat(all.filter((id) => !reachable.includes(id)));
    const targets = [leader];
    // Rotate among the reachable ones, then fill up with the rest in order.
    const start = reachable.length > 0 ? this.#nextFollower++ % reachable.length : 0;
    for (let i = 0; targets.length < this.#majority && i < followers.length; i++) {
      const id = i < reachable.length ? reachable[(start + i) % reachable.length] : followers[i];
      targets.push(id);
    }
    this.#sendRead(r, targets);
  }

  /** Start a command; one at a time, which is what makes (client, seq) dedup sound. */
  submit(txn: TxnRequest, options: SubmitOptions = {}): number {
    if (this.busy) {
      throw new Error(
        `Client "${this.id}" already has a request outstanding (seq ${this.#outstanding?.command.seq})`,
      );
    }
    const command: Command = {
      clientId: this.id,
      seq: this.#nextSeq++,
      firstUnacked: this.#firstUnacked,
      txn,
      ...(options.admin !== undefined ? { admin: options.admin } : {}),
    };
    if (options.batch !== undefined && options.admin === undefined) {
      command.txn = BATCH_TXN;
      command.batch = options.batch;
    }
    this.#outstanding = {
      command,
      elapsed: 0,
      accepts: new Map(),
      leaderReply: undefined,
      fastPath: (options.fastPath ?? this.#fastPath) && options.admin === undefined,
    };
    this.#broadcast(command);
    return command.seq;
  }

  tick(): void {
    const r = this.#read;
    if (r !== undefined && ++r.elapsed >= this.#retryTicks) {
      r.elapsed = 0;
      this.retryCount++;
      this.#broadcastRead(r);
    } else if (r !== undefined && r.elapsed >= 2 && r.asked.size < this.replicas.length) {
      // A whole tick without an answer (the first tick may come right after the send).
      for (const id of r.asked) if (!r.terms.has(id)) this.#late.add(id);
      this.#widenRead(r);
    }
    const o = this.#outstanding;
    if (o === undefined) return;
    if (++o.elapsed >= this.#retryTicks) {
      o.elapsed = 0;
      this.retryCount++;
      this.#broadcast(o.command);
    }
  }

  step(m: Message): void {
    if (m.type === "readReply") return this.#stepRead(m);
    const o = this.#outstanding;
    if (o === undefined) return;
    if (m.type === "synced") {
      if (m.seq === o.command.seq) this.#complete(m.result, "slow");
      return;
    }
    if (m.type !== "proposeReply" || m.seq !== o.command.seq || !o.fastPath) return;
    if (m.accepted) o.accepts.set(m.from, m.term);
    else {
      o.accepts.delete(m.from);
      o.refused = true;
    }
    if (m.speculative !== undefined && m.leaderId === m.from) {
      o.leaderReply = { term: m.term, result: m.speculative };
    }
    const leader = o.leaderReply;
    if (leader === undefined) return;
    if (countInTerm(o.accepts, leader.term) >= this.#superquorum) {
      this.#complete(leader.result, "fast");
    }
  }

  #stepRead(m: Extract<Message, { type: "readReply" }>): void {
    this.#late.delete(m.from); // it answers again (perhaps an older read, late)
    const r = this.#read;
    if (r === undefined || m.readId !== r.readId) return;
    if (m.leaderId === m.from && m.refused) {
      // The leader cannot answer outside the log now: propose the read as a command instead.
      this.#read = undefined;
      this.submit(r.txn, { fastPath: true });
      return;
    }
    r.terms.set(m.from, m.term);
    if (m.result !== undefined && m.leaderId === m.from) {
      r.leaderReply = { term: m.term, result: m.result };
    }
    const leader = r.leaderReply;
    if (leader === undefined || countInTerm(r.terms, leader.term) < this.#majority) {
      // Asked the wrong replica (another leads, or the one asked knows of none): ask the rest
      // now rather than at the next tick.
      if (m.leaderId === undefined || !r.asked.has(m.leaderId)) this.#widenRead(r);
      return;
    }
    this.#read = undefined;
    this.readCount++;
    this.#completions.push({ seq: 0, result: leader.result, path: "read" });
  }

  /** Messages to send and commands completed since the last call. */
  ready(): { messages: Message[]; completions: Completion[] } {
    const r = { messages: this.#messages, completions: this.#completions };
    this.#messages = [];
    this.#completions = [];
    return r;
  }

  #complete(result: CommandResult | undefined, path: "fast" | "slow"): void {
    const seq = this.#outstanding!.command.seq;
    this.#firstUnacked = seq + 1;
    const refused = this.#outstanding!.refused === true;
    this.#outstanding = undefined;
    if (path === "fast") this.fastCount++;
    else this.slowCount++;
    this.#completions.push(refused ? { seq, result, path, refused } : { seq, result, path });
  }

  #broadcastRead(r: OutstandingRead): void {
    this.#sendRead(r, this.replicas);
  }

  /** Send a targeted read to the replicas not asked yet (once). */
  #widenRead(r: OutstandingRead): void {
    if (r.asked.size === this.replicas.length) return;
    this.readWidenCount++;
    this.#sendRead(r, this.replicas.filter((id) => !r.asked.has(id)));
  }

  #sendRead(r: OutstandingRead, targets: readonly NodeId[]): void {
    for (const to of targets) {
      r.asked.add(to);
      this.#messages.push({ type: "read", from: this.id, to, readId: r.readId, txn: r.txn });
    }
  }

  #broadcast(command: Command): void {
    for (const to of this.replicas) {
      this.#messages.push({ type: "propose", from: this.id, to, command });
    }
  }
}

/** How many replicas' latest replies were in `term`. */
function countInTerm(terms: Map<NodeId, number>, term: number): number {
  let count = 0;
  for (const t of terms.values()) if (t === term) count++;
  return count;
}
