/**
 * Deterministic simulator: a whole CURP cluster and its clients in one process, driven by a seed,
 * with message loss, duplication, reordering and delay, partitions, crashes and restarts that lose
 * whatever had not reached the disk. Invariants are checked as it runs; the client history goes to
 * the linearizability checker at the end. The same seed replays the same run exactly.
 * @module
 */

import type { TxnRequest } from "../kv.ts";
import { type Command, type CommandResult, idKey, keyBytes, keyString } from "./command.ts";
import { ClientCore } from "./client_core.ts";
import {
  type Message,
  type NodeId,
  type PersistentState,
  type Ready,
  Replica,
  type Snapshot,
} from "./core.ts";
import {
  checkKvHistory,
  type KvInput,
  type KvOperation,
  type KvOutput,
  mergedRanges,
  type MergeFields,
} from "../lincheck/kv_model.ts";

/** Small, fast, seedable PRNG (mulberry32): the only source of randomness in a run. */
export class Rng {
  #s: number;
  constructor(seed: number) {
    this.#s = seed >>> 0;
  }
  next(): number {
    this.#s = (this.#s + 0x6d2b79f5) >>> 0;
    let t = this.#s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
}

export interface SimOptions {
  /** Replicas: 3 or 5. Default: chosen by the seed. */
  replicas?: number;
  /** Concurrent clients. Default 3. */
  clients?: number;
  /** Operations each client performs. Default 20. */
  opsPerClient?: number;
  /** Inject faults (loss, duplication, partitions, crashes). Default true. */
  faults?: boolean;
  /** Time units with faults; then the network heals and everyone restarts. Default 4000. */
  faultTime?: number;
  /** Time allowed after healing for every operation to finish. Default 6000. */
  settleTime?: number;
  /** Clients also send merges (MetaKV `merge`, a third of them behind a compare that ignores the
   * merged bytes, as the namespace's directory updates), which witnesses accept side by side.
   * Values are then 20 bytes, so the merge's fields fit. Default false (the seeds of earlier runs
   * replay as they did). */
  merges?: boolean;
  /** Replicas answer proposals once a Ready is written, before it is durable
   * (curp.witness_ack_after_write), and a crash is a process kill: the written Readies survive
   * (the page cache), the unsent messages do not. Default false. */
  earlyAck?: boolean;
  /** A wrong variant, to show the simulator catches it: a leader counts its own entries toward a
   * commit once their Ready is taken (sent to the disk), not once it is durable. With crashes
   * that lose what was not durable (not `earlyAck`), committed entries get lost. Default false. */
  countUnsynced?: boolean;
  /** Each client mostly works on the key of its previous command (four in five), its gets go
   * through the log, and the leader crashes ten times as often: consecutive conflicting commands
   * of one client, the second sent while the first is still in the witness pools (a file's
   * create, then its publish at close). Default false. */
  ownConflicts?: boolean;
  /** Clients send a third of their writes as batch commands of 2-4 operations (CurpKV's group
   * commit, `Command.batch`): concurrent operations in the history, run by one command in
   * order. Default false. */
  batches?: boolean;
}

export interface SimResult {
  seed: number;
  replicas: number;
  violations: string[];
  completed: number;
  pending: number;
  fast: number;
  slow: number;
  /** Reads answered outside the log. */
  reads: number;
  elections: number;
  crashes: number;
  time: number;
  linearizable: boolean | undefined;
  /** Time units after the clients finished until every acknowledged command was committed. */
  commitWait: number;
  /** Snapshots written by replicas (installed or compacted), last snapshot pieces and all snapshot
   * pieces a live replica received. */
  snapshotsTaken: number;
  snapshotsSent: number;
  snapshotPieces: number;
  /** Batch commands submitted (SimOptions.batches). */
  batches: number;
}

/** Time units per tick: messages take 1-30 units, so some arrive within a tick, some later. */
const TICK = 10;
const KEYS = ["a", "b", "c", "d"];

interface SimReplica {
  id: NodeId;
  replica: Replica | undefined;
  disk: PersistentState;
  /** Readies waiting for the disk: lost on a crash, sent once written; `mark` is the log's last
   * entry when the Ready was taken (core.ts `stableTo`, called once it is stored). */
  diskQueue: { at: number; ready: Ready; mark: { index: number; term: number } }[];
  /** A compaction being written in the background: lost on a crash. */
  compaction: { at: number; snapshot: Snapshot } | undefined;
  downUntil: number;
}

interface SimClient {
  core: ClientCore;
  remaining: number;
  nextAt: number;
  /** The operation in flight, or the operations of a batch in flight (`ops`, in batch order). */
  current: { op: KvOperation; ops?: KvOperation[]; command: string | undefined } | undefined;
  /** The leader named by the latest reply (possibly stale): gets go to it and one follower. */
  leaderHint?: NodeId;
}

type Event = { kind: "deliver"; message: Message };

/** A cluster under test. Exposed for targeted scenarios: tests drive it step by step. */
export class Cluster {
  readonly rng: Rng;
  readonly ids: NodeId[];
  /** Random client operations include merges (SimOptions.merges). */
  merges = false;
  /** Proposal replies leave before the disk write completes; crashes keep what was written
   * (SimOptions.earlyAck). */
  earlyAck = false;
  /** The wrong variant of SimOptions.countUnsynced. */
  countUnsynced = false;
  /** Clients mostly reuse the key of their previous command (SimOptions.ownConflicts). */
  ownConflicts = false;
  /** Clients send some writes as batches (SimOptions.batches). */
  batches = false;
  /** Batch commands submitted, and the operations they carried. */
  batchesSent = 0;
  batchedOps = 0;
  /** The key of each client's latest operation. */
  readonly #lastKey = new Map<string, string>();
  /** The value each key had in the last get that found it: what a merge's compare expects, so
   * such compares often hold and their outcome depends on the merges ordered before them. */
  readonly recent = new Map<string, string>();
  readonly nodes = new Map<NodeId, SimReplica>();
  readonly clients = new Map<string, SimClient>();
  readonly violations: string[] = [];
  time = 0;
  #clock = 0;
  readonly #events = new Map<number, Event[]>();
  /** What a replica's process would still hold unsent for another (`ReplicaConfig.unsentBytes`);
   * the simulated network has no queue, so 0 unless a test says otherwise. */
  unsentBytes: (from: NodeId, to: NodeId) => number = () => 0;
  /** Messages matching this are dropped (tests use it to cut chosen links). */
  dropIf: (m: Message) => boolean = () => false;
  lossRate = 0;
  duplicateRate = 0;
  maxDelay = 30;
  diskDelay = 0;
  /** Partition group per replica; messages between different groups are lost. */
  group = new Map<NodeId, number>();

  // Invariant bookkeeping.
  readonly leaders = new Map<number, NodeId>();
  readonly committed: { term: number; id: string; executed: boolean | undefined }[] = [];
  readonly executions = new Map<string, number>();
  readonly committedResults = new Map<string, CommandResult | undefined>();
  readonly fastResults = new Map<string, CommandResult | undefined>();
  readonly acknowledged = new Set<string>();
  readonly history: KvOperation[] = [];
  readonly completions: {
    command: string;
    path: "fast" | "slow";
    result: CommandResult | undefined;
  }[] = [];
  crashes = 0;
  /** Gets completed outside the log. */
  readCompletions = 0;
  snapshotsTaken = 0;
  snapshotsSent = 0;
  snapshotPieces = 0;

  constructor(
    seed: number,
    replicaCount: number,
    readonly electionTicks = 10,
    /** Applied entries before a replica snapshots and drops them (small: exercise snapshots). */
    readonly snapshotEvery = 10_000,
    /** Budget of one snapshot piece (small: snapshots go in many pieces). */
    readonly snapshotPieceBytes = 1024 * 1024,
  ) {
    this.rng = new Rng(seed);
    this.ids = Array.from({ length: replicaCount }, (_, i) => `r${i}`);
    for (const id of this.ids) {
      this.nodes.set(id, {
        id,
        replica: undefined,
        disk: { term: 0, votedFor: undefined, log: [], pool: [] },
        diskQueue: [],
        compaction: undefined,
        downUntil: 0,
      });
      this.#start(id);
    }
  }

  addClient(id: string, operations: number): ClientCore {
    const core = new ClientCore({ id, replicas: this.ids, retryTicks: 3 * this.electionTicks });
    this.clients.set(id, { core, remaining: operations, nextAt: 0, current: undefined });
    return core;
  }

  replica(id: NodeId): Replica {
    const r = this.nodes.get(id)!.replica;
    if (r === undefined) throw new Error(`Replica "${id}" is down`);
    return r;
  }

  leader(): Replica | undefined {
    let best: Replica | undefined;
    for (const n of this.nodes.values()) {
      const r = n.replica;
      if (r?.role === "leader" && (best === undefined || r.term > best.term)) best = r;
    }
    return best;
  }

  crash(id: NodeId, downFor: number): void {
    const n = this.nodes.get(id)!;
    if (n.replica === undefined) return;
    n.replica = undefined;
    // With early answers a crash is a kill -9: what was written (every queued Ready) is in the
    // page cache and survives; nothing more is sent.
    if (this.earlyAck) { for (const { ready } of n.diskQueue) this.#store(n, ready); }
    n.diskQueue = [];
    n.compaction = undefined;
    n.downUntil = this.time + downFor;
    this.crashes++;
  }

  restart(id: NodeId): void {
    if (this.nodes.get(id)!.replica === undefined) this.#start(id);
  }

  /** Submit a client operation (a KV operation of the linearizability model). */
  submit(clientId: string, input: KvInput, options: { logRead?: boolean } = {}): void {
    const c = this.clients.get(clientId)!;
    // Gets go outside the log (readId, no seq) unless asked otherwise; a refused one becomes a
    // command with a seq this harness does not see, so reads are never counted as acknowledged.
    let command: string | undefined;
    if (input.kind === "get" && !options.logRead) {
      c.core.submitRead(toTxn(input), { leader: c.leaderHint });
    } else command = idKey({ clientId, seq: c.core.submit(toTxn(input)) });
    c.current = {
      op: { clientId, input, output: undefined, call: this.#clock++, return: Infinity },
      command,
    };
    this.history.push(c.current.op);
    this.#flushClient(c);
  }

  /** Submit several client operations as one batch command: concurrent operations of the
   * history, each completing with its own result from the batch's. */
  submitBatch(clientId: string, inputs: KvInput[]): void {
    const c = this.clients.get(clientId)!;
    const seq = c.core.submit({}, { batch: inputs.map(toTxn) });
    const ops = inputs.map((input): KvOperation => ({
      clientId,
      input,
      output: undefined,
      call: this.#clock++,
      return: Infinity,
    }));
    c.current = { op: ops[0], ops, command: idKey({ clientId, seq }) };
    this.history.push(...ops);
    this.batchesSent++;
    this.batchedOps += ops.length;
    this.#flushClient(c);
  }

  /** Advance one time unit: deliver what is due, write what the disk finished, tick on tick
   * boundaries. */
  advance(): void {
    const due = this.#events.get(this.time);
    this.#events.delete(this.time);
    for (const e of due ?? []) this.#deliver(e.message);
    for (const n of this.nodes.values()) this.#drainDisk(n);
    if (this.time % TICK === 0) {
      for (const n of this.nodes.values()) {
        if (n.replica === undefined) continue;
        n.replica.tick();
        for (const reply of n.replica.takeImmediate()) this.#send(reply);
        this.#collect(n);
      }
      for (const c of this.clients.values()) {
        c.core.tick();
        this.#flushClient(c);
      }
    }
    this.time++;
  }

  run(units: number): void {
    for (let i = 0; i < units; i++) this.advance();
  }

  /** Run until `done` holds or `units` pass; returns whether it held. */
  runUntil(done: () => boolean, units: number): boolean {
    for (let i = 0; i < units; i++) {
      if (done()) return true;
      this.advance();
    }
    return done();
  }

  /** Check log matching and election safety across live replicas now. */
  checkLogs(): void {
    const live = [...this.nodes.values()].filter((n) => n.replica).map((n) => n.replica!);
    for (let i = 0; i < live.length; i++) {
      for (let j = i + 1; j < live.length; j++) {
        const a = live[i], b = live[j];
        let k = Math.min(a.lastIndex, b.lastIndex);
        while (k > 0 && a.termAt(k) !== b.termAt(k)) k--;
        for (let x = 1; x <= k; x++) {
          const ea = a.entryAt(x), eb = b.entryAt(x);
          if (ea === undefined || eb === undefined) continue; // compacted into a snapshot
          const ida = ea.command ? idKey(ea.command) : "noop";
          const idb = eb.command ? idKey(eb.command) : "noop";
          if (ea.term !== eb.term || ida !== idb) {
            this.#violate(
              `log matching: ${a.id} and ${b.id} agree at index ${k} but differ at ${x} (${ea.term}/${ida} vs ${eb.term}/${idb})`,
            );
            return;
          }
        }
      }
    }
  }

  #violate(what: string): void {
    if (this.violations.length < 20) this.violations.push(`t=${this.time}: ${what}`);
  }

  #start(id: NodeId): void {
    const n = this.nodes.get(id)!;
    n.replica = new Replica(
      {
        id,
        replicas: this.ids,
        electionTicks: this.electionTicks,
        snapshotEvery: this.snapshotEvery,
        snapshotPieceBytes: this.snapshotPieceBytes,
        random: (k) => this.rng.int(k),
        unsentBytes: (to) => this.unsentBytes(id, to),
      },
      n.disk,
    );
  }

  #deliver(m: Message): void {
    const client = this.clients.get(m.to);
    if (client !== undefined) {
      if (m.type === "synced") client.leaderHint = m.from;
      else if ((m.type === "proposeReply" || m.type === "readReply") && m.leaderId !== undefined) {
        client.leaderHint = m.leaderId;
      }
      client.core.step(m);
      this.#flushClient(client);
      return;
    }
    const n = this.nodes.get(m.to)!;
    if (n.replica === undefined) return;
    if (m.type === "snapshot") {
      this.snapshotPieces++;
      if (m.last) this.snapshotsSent++;
    }
    n.replica.step(m);
    for (const reply of n.replica.takeImmediate()) this.#send(reply);
    this.#collect(n);
  }

  #send(m: Message): void {
    if (this.dropIf(m)) return;
    const gf = this.group.get(m.from), gt = this.group.get(m.to);
    if (gf !== undefined && gt !== undefined && gf !== gt) return;
    if (this.rng.chance(this.lossRate)) return;
    const copies = this.rng.chance(this.duplicateRate) ? 2 : 1;
    for (let i = 0; i < copies; i++) {
      const at = this.time + 1 + this.rng.int(this.maxDelay);
      let bucket = this.#events.get(at);
      if (bucket === undefined) this.#events.set(at, bucket = []);
      bucket.push({ kind: "deliver", message: m });
    }
  }

  #collect(n: SimReplica): void {
    const r = n.replica!;
    if (!r.hasReady()) return;
    let ready = r.ready();
    const mark = { index: r.lastIndex, term: r.termAt(r.lastIndex) };
    this.#observe(r, ready);
    if (this.earlyAck && ready.hardState === undefined && ready.snapshot === undefined) {
      // curp.witness_ack_after_write: proposal replies leave once the Ready is written.
      for (const m of ready.messages) if (m.type === "proposeReply") this.#send(m);
      ready = { ...ready, messages: ready.messages.filter((m) => m.type !== "proposeReply") };
    }
    if (ready.hardState === undefined && ready.snapshot === undefined) {
      // A leader's appends leave before its own disk write: it counts itself toward a commit only
      // once the write is stored (`stableTo` in #drainDisk), and a crash loses what was queued.
      for (const m of ready.messages) if (m.type === "append") this.#send(m);
      ready = { ...ready, messages: ready.messages.filter((m) => m.type !== "append") };
    }
    if (ready.hardState === undefined && ready.snapshot === undefined) {
      // The server's pipelined output: a leader's `synced` replies leave at once (committed means
      // on a majority of disks: the leader counts its own copy only once stored, `stableTo`).
      if (ready.messages.some((m) => m.type === "synced")) {
        for (const m of ready.messages) if (m.type === "synced") this.#send(m);
        ready = { ...ready, messages: ready.messages.filter((m) => m.type !== "synced") };
      }
    }
    const last = n.diskQueue.at(-1)?.at ?? 0;
    const at = Math.max(last, this.time + (this.diskDelay > 0 ? this.rng.int(this.diskDelay) : 0));
    n.diskQueue.push({ at, ready, mark });
    if (this.countUnsynced) r.stableTo(mark.index, mark.term); // the wrong variant
    this.#drainDisk(n);
    this.#collect(n); // what stableTo committed (the wrong variant), if #drainDisk did not
  }

  #drainDisk(n: SimReplica): void {
    this.#storeCompaction(n);
    while (n.diskQueue.length > 0 && n.diskQueue[0].at <= this.time) {
      const { ready, mark } = n.diskQueue.shift()!;
      this.#store(n, ready);
      for (const m of ready.messages) this.#send(m);
      if (n.replica !== undefined) {
        n.replica.stableTo(mark.index, mark.term);
        this.#collect(n); // what that committed
      }
    }
    this.#storeCompaction(n);
  }

  /** A Ready's state on the node's disk. */
  #store(n: SimReplica, ready: Ready): void {
    const d = n.disk;
    if (ready.hardState) {
      d.term = ready.hardState.term;
      d.votedFor = ready.hardState.votedFor;
    }
    if (ready.snapshot !== undefined) {
      this.snapshotsTaken++;
      const { log, ...snapshot } = ready.snapshot;
      d.snapshot = snapshot;
      d.log = log;
    } else if (ready.truncateFrom !== undefined) {
      const base = d.snapshot?.index ?? 0;
      d.log = d.log.slice(0, ready.truncateFrom - base - 1).concat(ready.entries);
    }
    if (ready.pool) d.pool = ready.pool;
    if (ready.compaction !== undefined) {
      // Written in the background, after this Ready's entries: it may take long or be lost.
      const delay = this.diskDelay > 0 ? this.rng.int(4 * this.diskDelay) : 0;
      n.compaction = { at: this.time + delay, snapshot: ready.compaction };
    }
  }

  /** The background compaction, once written: the snapshot replaces the entries it covers. */
  #storeCompaction(n: SimReplica): void {
    const c = n.compaction;
    if (c === undefined || c.at > this.time) return;
    n.compaction = undefined;
    const d = n.disk;
    if (c.snapshot.index <= (d.snapshot?.index ?? 0)) return; // an install superseded it
    const covered = d.log.find((e) => e.index === c.snapshot.index);
    if (covered === undefined || covered.term !== c.snapshot.term) {
      this.#violate(
        `compaction: ${n.id} stored a snapshot at ${c.snapshot.index} that its log does not hold`,
      );
      return;
    }
    this.snapshotsTaken++;
    d.snapshot = c.snapshot;
    d.log = d.log.filter((e) => e.index > c.snapshot.index);
  }

  #observe(r: Replica, ready: Ready): void {
    if (r.role === "leader") {
      const known = this.leaders.get(r.term);
      if (known === undefined) this.leaders.set(r.term, r.id);
      else if (known !== r.id) {
        this.#violate(`election safety: ${known} and ${r.id} both lead term ${r.term}`);
      }
    }
    for (const { entry, outcome } of ready.applied) {
      const id = entry.command ? idKey(entry.command) : "noop";
      const known = this.committed[entry.index];
      if (known === undefined) {
        this.committed[entry.index] = { term: entry.term, id, executed: outcome?.executed };
        this.#checkDurable(entry.index, entry.term, id);
        if (outcome?.executed) {
          this.executions.set(id, (this.executions.get(id) ?? 0) + 1);
          this.committedResults.set(id, outcome.result);
          if (this.executions.get(id)! > 1) this.#violate(`exactly-once: ${id} executed twice`);
          this.#compareFast(id);
        }
      } else if (known.term !== entry.term || known.id !== id) {
        this.#violate(
          `state machine safety: ${r.id} applied ${entry.term}/${id} at ${entry.index}, committed was ${known.term}/${known.id}`,
        );
      } else if (known.executed !== outcome?.executed) {
        this.#violate(`determinism: ${r.id} disagrees on whether ${id} executed`);
      }
    }
  }

  /** Raft's durability: an entry is committed only once a majority holds it on disk (what a
   * crash keeps; the Readies still queued are not there yet), whatever crashes follow. */
  #checkDurable(index: number, term: number, id: string): void {
    let holders = 0;
    for (const n of this.nodes.values()) {
      const d = n.disk;
      if (index <= (d.snapshot?.index ?? 0)) holders++;
      else if (d.log[index - (d.snapshot?.index ?? 0) - 1]?.term === term) holders++;
    }
    if (holders <= this.ids.length / 2) {
      this.#violate(
        `durability: ${term}/${id} at ${index} committed while on ${holders} of ${this.ids.length} disks`,
      );
    }
  }

  #compareFast(id: string): void {
    if (!this.fastResults.has(id) || !this.committedResults.has(id)) return;
    const fast = normalize(this.fastResults.get(id));
    const slow = normalize(this.committedResults.get(id));
    if (fast !== slow) {
      this.#violate(`speculation: ${id} fast result ${fast} but committed ${slow}`);
    }
  }

  #flushClient(c: SimClient): void {
    const { messages, completions } = c.core.ready();
    for (const m of messages) this.#send(m);
    for (const done of completions) {
      const cur = c.current;
      if (cur === undefined) continue;
      if (cur.ops !== undefined) {
        // A batch: each operation's output from its own result (none if the batch failed).
        const results = done.result?.ok ? done.result.batch : undefined;
        if (results?.length !== cur.ops.length && done.result?.ok) {
          this.#violate(`batch ${cur.command}: ${results?.length} results for ${cur.ops.length}`);
        }
        cur.ops.forEach((op, i) => {
          op.output = toOutput(op.input, results?.[i]);
          op.return = this.#clock++;
        });
      } else cur.op.output = toOutput(cur.op.input, done.result);
      const seen = cur.op.output as { value?: string | null } | undefined;
      if (cur.op.input.kind === "get" && typeof seen?.value === "string") {
        this.recent.set(cur.op.input.key, seen.value);
      }
      if (cur.ops === undefined) cur.op.return = this.#clock++;
      if (cur.command === undefined) {
        this.readCompletions++;
        c.current = undefined;
        c.nextAt = this.time + this.rng.int(3 * TICK);
        continue;
      }
      if (done.path === "read") this.#violate(`read completion for command ${cur.command}`);
      this.acknowledged.add(cur.command);
      this.completions.push({
        command: cur.command,
        path: done.path === "fast" ? "fast" : "slow",
        result: done.result,
      });
      if (done.path === "fast") {
        this.fastResults.set(cur.command, done.result);
        this.#compareFast(cur.command);
      }
      c.current = undefined;
      c.nextAt = this.time + this.rng.int(3 * TICK);
    }
  }

  /** Let idle clients start their next random operation. */
  driveClients(): void {
    for (const [id, c] of this.clients) {
      if (c.core.busy || c.remaining === 0 || this.time < c.nextAt) continue;
      c.remaining--;
      const last = this.#lastKey.get(id);
      const key = this.ownConflicts && last !== undefined && this.rng.chance(0.8)
        ? last
        : undefined;
      const input = randomInput(
        this.rng,
        id,
        c.remaining,
        this.merges ? this.recent : undefined,
        key,
      );
      this.#lastKey.set(id, input.key);
      if (this.batches && input.kind !== "get" && this.rng.chance(0.33)) {
        const inputs: KvInput[] = [input];
        const size = 2 + this.rng.int(3);
        while (inputs.length < size && c.remaining > 0) {
          c.remaining--;
          inputs.push(
            randomInput(this.rng, id, c.remaining, this.merges ? this.recent : undefined),
          );
        }
        if (inputs.length > 1) {
          this.submitBatch(id, inputs);
          continue;
        }
      }
      const logRead = input.kind === "get" && (this.ownConflicts || this.rng.chance(0.25));
      this.submit(id, input, { logRead });
    }
  }

  get allDone(): boolean {
    for (const c of this.clients.values()) if (c.core.busy || c.remaining > 0) return false;
    return true;
  }

  /** End-of-run checks: acknowledged commands committed and executed once. */
  finalChecks(): void {
    this.checkLogs();
    const committedIds = new Set(this.committed.filter((e) => e).map((e) => e.id));
    for (const id of this.acknowledged) {
      if (!committedIds.has(id)) {
        this.#violate(`lost: acknowledged ${id} is not in the committed log`);
      } else if (this.executions.get(id) !== 1) {
        this.#violate(
          `exactly-once: acknowledged ${id} executed ${this.executions.get(id) ?? 0} times`,
        );
      }
    }
  }
}

function normalize(result: CommandResult | undefined): string {
  if (result === undefined) return "undefined";
  if (!result.ok) return `error:${result.error}`;
  if (result.batch !== undefined) return `batch[${result.batch.map(normalize).join(",")}]`;
  // Revisions aside: a fast result has none, and a key written by its client's own uncommitted
  // commands shows create and mod revision 0 in it (core.ts `#ownUncommitted`).
  return JSON.stringify(result.txn, (k, v) => {
    if (k === "revision" || k === "createRevision" || k === "modRevision") return 0;
    if (v instanceof Uint8Array) return keyString(v);
    return v;
  });
}

function toTxn(input: KvInput): TxnRequest {
  const key = keyBytes(input.key);
  switch (input.kind) {
    case "get":
      return { success: [{ range: { key } }] };
    case "put":
      return { success: [{ put: { key, value: keyBytes(input.value!), prevKv: true } }] };
    case "delete":
      return { success: [{ deleteRange: { key } }] };
    case "cas":
      return {
        compare: input.expected === null
          ? [{ key, target: "version", result: "==", value: 0 }]
          : [{ key, target: "value", result: "==", value: keyBytes(input.expected!) }],
        success: [{ put: { key, value: keyBytes(input.value!) } }],
      };
    case "merge":
      return {
        compare: input.expected === undefined ? [] : [{
          key,
          target: "value",
          result: "==",
          value: keyBytes(input.expected),
          ignore: mergedRanges(input.merge),
        }],
        success: [{ merge: { key, ...input.merge } }],
      };
  }
}

function toOutput(input: KvInput, result: CommandResult | undefined): KvOutput | undefined {
  if (result === undefined || !result.ok) return undefined;
  const r = result.txn.responses[0];
  switch (input.kind) {
    case "get": {
      const kv = r && "range" in r ? r.range.kvs[0] : undefined;
      return { value: kv ? keyString(kv.value) : null };
    }
    case "put": {
      const prev = r && "put" in r ? r.put.prevKv : undefined;
      return { value: prev ? keyString(prev.value) : null };
    }
    case "delete":
      return { deleted: r && "deleteRange" in r ? r.deleteRange.deleted : 0 };
    case "cas":
    case "merge":
      return { succeeded: result.txn.succeeded };
  }
}

/** Values of a run with merges: 20 bytes, the text then NULs (room for a timespec at 8). */
function padded(text: string): string {
  return text.padEnd(20, "\0").slice(0, 20);
}

function randomInput(
  rng: Rng,
  clientId: string,
  n: number,
  recent: Map<string, string> | undefined,
  sameKey?: string,
): KvInput {
  const merges = recent !== undefined;
  const drawn = KEYS[rng.int(KEYS.length)];
  const key = sameKey ?? drawn;
  if (merges) {
    const p = rng.int(10);
    if (p < 4) {
      // A random non-empty choice of three fields, so some merges change bytes that another's
      // compare looks at (they must conflict) and some do not (they may go side by side).
      const pick = 1 + rng.int(7);
      const merge: MergeFields = {
        max: pick & 1 ? [{ at: 8, sec: rng.int(50), nsec: rng.int(1e9) }] : [],
        add: [
          ...(pick & 2 ? [{ at: 0, width: 1, delta: 1 + rng.int(3) }] : []),
          ...(pick & 4 ? [{ at: 4, width: 4, delta: rng.int(5) - 2 }] : []),
        ],
      };
      // Half behind a compare with the merge's own fields ignored: of the value last seen.
      const expected = rng.chance(0.5) ? recent.get(key) : undefined;
      return expected === undefined
        ? { kind: "merge", key, merge }
        : { kind: "merge", key, merge, expected };
    }
  }
  const text = (i: number) => merges ? padded(`${clientId}.${i}`) : `${clientId}.${i}`;
  const value = text(n);
  const p = rng.int(10);
  if (p < 3) return { kind: "get", key };
  if (p < 7) return { kind: "put", key, value };
  if (p < 8) return { kind: "delete", key };
  return { kind: "cas", key, expected: rng.chance(0.3) ? null : text(n + 1), value };
}

/** One whole seeded run: faults for a while, then heal and let every operation finish. */
export function simulate(seed: number, options: SimOptions = {}): SimResult {
  const probe = new Rng(seed ^ 0x5bd1e995);
  const replicaCount = options.replicas ?? (probe.chance(0.6) ? 3 : 5);
  const faults = options.faults ?? true;
  const faultTime = options.faultTime ?? 4000;
  const settleTime = options.settleTime ?? 6000;
  // Most seeds snapshot every few entries, so compaction and snapshot installs on lagging or
  // restarted replicas happen under every fault; one seed in four never snapshots.
  const snapshotEvery = [10_000, 8, 16, 24][seed % 4];
  // Pieces of about one history record, of a few, or the whole snapshot in one.
  const pieceBytes = [300, 2000, 1024 * 1024][probe.int(3)];
  const cluster = new Cluster(seed, replicaCount, 10, snapshotEvery, pieceBytes);
  cluster.merges = options.merges ?? false;
  cluster.earlyAck = options.earlyAck ?? false;
  cluster.countUnsynced = options.countUnsynced ?? false;
  cluster.ownConflicts = options.ownConflicts ?? false;
  cluster.batches = options.batches ?? false;
  const rng = cluster.rng;
  for (let i = 0; i < (options.clients ?? 3); i++) {
    cluster.addClient(`c${i}`, options.opsPerClient ?? 20);
  }
  if (faults) {
    cluster.lossRate = [0, 0.02, 0.1][rng.int(3)];
    cluster.duplicateRate = [0, 0.05][rng.int(2)];
    cluster.maxDelay = [5, 30, 60][rng.int(3)];
    cluster.diskDelay = [0, 10, 40][rng.int(3)];
  }
  const f = (replicaCount - 1) / 2;
  // Its own source, so that adding it left the other draws of a seed where they were.
  const pendingRng = new Rng(seed ^ 0x2545f491);
  for (; cluster.time < faultTime && !cluster.allDone;) {
    cluster.driveClients();
    if (faults && cluster.time % TICK === 0) {
      injectFaults(cluster, rng, f);
      crashWhileWriting(cluster, pendingRng);
    }
    cluster.advance();
    if (cluster.time % 100 === 0) cluster.checkLogs();
  }
  // Heal: no more loss, partitions or crashes; whoever is down comes back.
  cluster.lossRate = 0;
  cluster.duplicateRate = 0;
  cluster.group.clear();
  for (const id of cluster.ids) cluster.restart(id);
  const settleEnd = cluster.time + settleTime;
  while (cluster.time < settleEnd && !cluster.allDone) {
    cluster.driveClients();
    cluster.advance();
    if (cluster.time % 100 === 0) cluster.checkLogs();
  }
  // Let every acknowledged command commit (a fast-path one may still await its commit, or a
  // replay by the next leader), bounded: running out is reported as a lost write.
  const committedIds = () => new Set(cluster.committed.filter((e) => e).map((e) => e.id));
  const settled = () => {
    const ids = committedIds();
    for (const id of cluster.acknowledged) if (!ids.has(id)) return false;
    return true;
  };
  const commitStart = cluster.time;
  cluster.runUntil(settled, 300 * TICK);
  const commitWait = cluster.time - commitStart;
  cluster.run(10 * TICK);
  cluster.finalChecks();
  for (const n of cluster.nodes.values()) {
    const r = n.replica;
    // A leader sending a snapshot may keep twice the interval (core.ts #maybeCompact).
    if (r !== undefined && r.appliedIndex - r.snapshotIndex >= 2 * snapshotEvery) {
      cluster.violations.push(
        `bounded log: ${r.id} keeps ${r.appliedIndex - r.snapshotIndex} applied entries (limit ${
          2 * snapshotEvery
        })`,
      );
    }
  }
  let pending = 0;
  for (const c of cluster.clients.values()) pending += (c.core.busy ? 1 : 0) + c.remaining;
  if (pending > 0) {
    cluster.violations.push(
      `liveness: ${pending} operations unfinished ${settleTime} units after healing`,
    );
  }
  const lin = checkKvHistory(cluster.history, { maxSteps: 2_000_000 });
  if (lin === false) {
    cluster.violations.push("linearizability: the client history has no legal order");
  }
  let fast = 0, slow = 0, reads = 0;
  for (const c of cluster.clients.values()) {
    fast += c.core.fastCount;
    slow += c.core.slowCount;
    reads += c.core.readCount;
  }
  return {
    seed,
    replicas: replicaCount,
    violations: cluster.violations,
    completed: cluster.history.filter((o) => o.return !== Infinity).length,
    pending,
    fast,
    slow,
    reads,
    elections: cluster.leaders.size,
    crashes: cluster.crashes,
    time: cluster.time,
    linearizable: lin,
    commitWait,
    snapshotsTaken: cluster.snapshotsTaken,
    snapshotsSent: cluster.snapshotsSent,
    snapshotPieces: cluster.snapshotPieces,
    batches: cluster.batchesSent,
  };
}

function injectFaults(cluster: Cluster, rng: Rng, f: number): void {
  for (const id of cluster.ids) {
    const n = cluster.nodes.get(id)!;
    if (n.replica === undefined && cluster.time >= n.downUntil) cluster.restart(id);
  }
  if (rng.chance(0.01)) {
    const down = cluster.ids.filter((id) => cluster.nodes.get(id)!.replica === undefined).length;
    // Crashing more than f at once is allowed now and then: safety must hold anyway.
    if (down < f || rng.chance(0.2)) {
      cluster.crash(cluster.ids[rng.int(cluster.ids.length)], 50 + rng.int(400));
    }
  }
  if (rng.chance(0.005)) {
    if (cluster.group.size > 0) cluster.group.clear();
    else for (const id of cluster.ids) cluster.group.set(id, rng.int(2));
  }
  if (rng.chance(cluster.ownConflicts ? 0.03 : 0.003)) {
    const leader = cluster.leader();
    if (leader) cluster.crash(leader.id, 50 + rng.int(300));
  }
}

/** Now and then crash a replica while Readies wait for its disk, the leader if it has some: the
 * window in which a crash (without `earlyAck`, a power loss) loses what it had sent out before
 * its write, such as a leader's appends. Random crashes hit it too rarely to find a leader that
 * counted its own entries too early (SimOptions.countUnsynced). */
function crashWhileWriting(cluster: Cluster, rng: Rng): void {
  if (!rng.chance(0.005)) return;
  const writing = cluster.ids.filter((id) => {
    const n = cluster.nodes.get(id)!;
    return n.replica !== undefined && n.diskQueue.length > 0;
  });
  if (writing.length === 0) return;
  const leader = writing.find((id) => cluster.nodes.get(id)!.replica!.role === "leader");
  cluster.crash(leader ?? writing[rng.int(writing.length)], 50 + rng.int(300));
}

export type { Command };
