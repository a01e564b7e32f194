/**
 * The CURP replica as a pure state machine: messages and ticks in, a Ready (what to persist, then
 * what to send) out. No clock, sockets, timers or randomness inside; the random source is injected.
 *
 * Protocol: the consensus variant of CURP (NSDI'19 appendix B.2) as Xline adapted it, on a
 * Raft-style log (DESIGN.md section 4). Each role is a handler table swapped on role change.
 * @module
 */

import type { TxnRequest } from "../kv.ts";
import {
  type Command,
  type CommandResult,
  ConflictIndex,
  conflicts,
  footprintOf,
  idKey,
  intervalOf,
  isReadOnly,
  overlaps,
  txnsOf,
} from "./command.ts";
import { type ApplyOutcome, KvMachine, type KvSnapshot } from "./kv_machine.ts";
import {
  SNAPSHOT_PIECE_BYTES,
  SnapshotAssembler,
  type SnapshotPart,
  SnapshotPieces,
} from "./snapshot_pieces.ts";

export type NodeId = string;

/** A log entry: a client command, or the no-op a new leader appends to commit its term. */
export interface Entry {
  index: number;
  term: number;
  command?: Command;
  /** Leases the leader found expired: applying the entry deletes them and their keys. */
  expire?: number[];
}

/** A witness record: a command not yet known to be committed, with the term it was accepted in. */
export interface WitnessRecord {
  term: number;
  command: Command;
}

export type Message =
  | { type: "propose"; from: NodeId; to: NodeId; command: Command }
  | {
    type: "proposeReply";
    from: NodeId;
    to: NodeId;
    clientId: string;
    seq: number;
    term: number;
    leaderId: NodeId | undefined;
    /** The witness recorded the command (it conflicts with nothing unsynced it holds). */
    accepted: boolean;
    /** Present only from a leader that can answer on the fast path. */
    speculative?: CommandResult;
  }
  | {
    /** A read-only transaction answered without the log: see `Replica.takeImmediate`. */
    type: "read";
    from: NodeId;
    to: NodeId;
    readId: number;
    txn: TxnRequest;
  }
  | {
    type: "readReply";
    from: NodeId;
    to: NodeId;
    readId: number;
    /** The replier's current term: a read completes once a majority, leader included, report the
     * leader's term (no newer leader can have been elected before the read started). */
    term: number;
    leaderId: NodeId | undefined;
    /** From the leader only: the transaction run on its applied state, with real revisions. */
    result?: CommandResult;
    /** From the leader only: it cannot answer now (an uncommitted entry touches the keys, or its
     * term's first entry has not committed); the client proposes the read through the log. */
    refused?: boolean;
  }
  | {
    type: "synced";
    from: NodeId;
    to: NodeId;
    clientId: string;
    seq: number;
    term: number;
    result: CommandResult | undefined;
  }
  | { type: "preVote"; from: NodeId; to: NodeId; term: number; lastIndex: number; lastTerm: number }
  | { type: "preVoteReply"; from: NodeId; to: NodeId; term: number; granted: boolean }
  | { type: "vote"; from: NodeId; to: NodeId; term: number; lastIndex: number; lastTerm: number }
  | {
    type: "voteReply";
    from: NodeId;
    to: NodeId;
    term: number;
    granted: boolean;
    /** The voter's witness pool, for the new leader's replay. */
    pool: WitnessRecord[];
  }
  | {
    type: "append";
    from: NodeId;
    to: NodeId;
    term: number;
    prevIndex: number;
    prevTerm: number;
    entries: Entry[];
    commit: number;
    /** Index of this leader's first no-op: once committed, older witness records are obsolete. */
    readyIndex: number;
    /** Only the commit index moved, for a follower known to hold every entry: a success needs no
     * answer (a failure is still answered). Absent from heartbeats, whose answers the leader's
     * quorum check counts; peers of earlier builds ignore it and answer. */
    quiet?: boolean;
  }
  | {
    /** One piece of the leader's state up to `index`, sent instead of `append` to a follower that
     * needs entries this leader compacted away. Pieces go in order, a few ahead of the
     * follower's acknowledgements (`snapshotReply`); the last one installs the state, answered by
     * an `appendReply`. */
    type: "snapshot";
    from: NodeId;
    to: NodeId;
    term: number;
    index: number;
    snapshotTerm: number;
    piece: number;
    last: boolean;
    data: SnapshotPart;
    readyIndex: number;
  }
  | {
    /** The follower holds pieces 0..received-1 of the snapshot up to `index`. */
    type: "snapshotReply";
    from: NodeId;
    to: NodeId;
    term: number;
    index: number;
    received: number;
  }
  | {
    type: "appendReply";
    from: NodeId;
    to: NodeId;
    term: number;
    success: boolean;
    /** On success the last index matched; on failure a guess at it. */
    matchIndex: number;
  };

/** The state machine after applying every entry up to `index`, which replaces those entries. */
export interface Snapshot {
  index: number;
  term: number;
  kv: KvSnapshot;
}

/** What survives a restart. `log` holds the entries after the snapshot's index. */
export interface PersistentState {
  term: number;
  votedFor: NodeId | undefined;
  log: Entry[];
  pool: WitnessRecord[];
  snapshot?: Snapshot;
}

/** One committed entry applied, reported for observers (tests, the simulator, metrics). */
export interface Applied {
  entry: Entry;
  outcome: ApplyOutcome | undefined;
}

/**
 * Output of the steps since the last `ready()`. The caller's duties, in this order:
 * 1. Durably write `hardState`; if `snapshot` is set (a state installed from the leader), store
 *    it and replace the stored log with `snapshot.log` (the entries after its index;
 *    `truncateFrom`/`entries` are then included); otherwise truncate the stored log at
 *    `truncateFrom` (drop every entry with index >= it) and append `entries`; replace the stored
 *    witness pool with `pool`; fsync.
 * 2. Only then send `messages` (to replicas and clients). A reply sent before step 1 could promise
 *    a vote, a log entry or a witness record that a crash then forgets. (server.ts sends a Ready's
 *    proposal replies, a leader's appends, its `synced` messages and watch events, once the
 *    Ready is written and before its fdatasync, unless it changes the hard state: README "Where a
 *    proposal's time goes" and "The leader's fdatasync off the commit chain".)
 * 3. Once the fdatasync covering it completed, call `stableTo(index, term)` with the log's last
 *    entry as it was when the Ready was taken (read `lastIndex` and `termAt(lastIndex)` right
 *    after `ready()`): a leader counts its own entries toward a commit only from then on.
 * If the process dies before step 1 finishes, the messages must not be sent: restart the replica
 * from what storage holds. `applied` needs nothing; it reports what was executed.
 * `compaction` (this replica folded its applied entries into a snapshot) needs nothing before the
 * messages either: store it when convenient, in the background, and only once it is durable drop
 * the stored entries it covers. Until then the stored log still holds them (they were in
 * `entries` of this or an earlier Ready), so a restart recovers the same state; a newer
 * `compaction` or `snapshot` supersedes one not yet stored.
 */
export interface Ready {
  hardState?: { term: number; votedFor: NodeId | undefined };
  truncateFrom?: number;
  entries: Entry[];
  pool?: WitnessRecord[];
  snapshot?: Snapshot & { log: Entry[] };
  compaction?: Snapshot;
  messages: Message[];
  applied: Applied[];
}

export interface ReplicaConfig {
  id: NodeId;
  /** Every replica of the cluster, this one included, 2f+1 of them. */
  replicas: NodeId[];
  /** Ticks without a leader before a pre-vote; the actual timeout is in [t, 2t). Default 10. */
  electionTicks?: number;
  /** Ticks between leader heartbeats. Default 2. */
  heartbeatTicks?: number;
  /** Most entries per append message. Default 64. */
  maxBatch?: number;
  /** Most witness records held; beyond it proposals are refused (slow path). Default 4096. */
  maxPool?: number;
  /** Applied entries kept in the log before they are folded into a snapshot. Default 10,000. */
  snapshotEvery?: number;
  /** Estimated encoded bytes per snapshot piece sent to a lagging follower. Default 1 MiB. */
  snapshotPieceBytes?: number;
  /** Called with one line for every role or term change, naming its reason (for the log: an
   * election nobody asked for must say why it happened). */
  onEvent?: (line: string) => void;
  /** Injected random source: an integer in [0, n). */
  random: (n: number) => number;
  /** Milliseconds one tick stands for, to turn lease TTLs into ticks. Default 50. */
  tickMs?: number;
  /** Bytes this process has queued for replica `to` and not yet handed to the network. While
   * any are, a snapshot transfer to it is neither resent nor restarted: the pieces sent have not
   * left yet, so a missing acknowledgement says nothing about loss, and resending would only pile
   * more copies behind them. Default: always 0 (the simulator's network has no queue). */
  unsentBytes?: (to: NodeId) => number;
}

type Role = "follower" | "preCandidate" | "candidate" | "leader";

interface RoleHandlers {
  tick(): void;
  step(m: Message): void;
}

/** Reads a leader holds for a commit at once; past it they are refused (and go through the log). */
const MAX_HELD_READS = 4096;

/** Clients whose completed commands a leader remembers, to skip their `synced` replies. */
const MAX_ACKED_CLIENTS = 4096;

/** Entries sent to one follower and not yet acknowledged, at most: flow control. */
const MAX_INFLIGHT_ENTRIES = 1024;
/** Snapshot pieces sent to one follower beyond those it acknowledged, at most. */
const SNAPSHOT_WINDOW = 4;

/** Leader: a snapshot on its way to one follower. */
interface Transfer {
  index: number;
  term: number;
  pieces: SnapshotPieces;
  /** Pieces the follower reported holding (0..acked-1). */
  acked: number;
  /** Next piece to send. */
  next: number;
  /** Ticks since the follower last acknowledged a new piece: at the retry interval the pieces
   * from the one it waits for are sent again (lost, or the follower restarted). */
  idleTicks: number;
  /** `acked` when pieces were last sent again: one resend per duplicate acknowledgement. */
  resentAt: number;
}

/** Follower: a snapshot being received from the leader. */
interface Incoming {
  from: NodeId;
  term: number;
  index: number;
  snapshotTerm: number;
  received: number;
  assembler: SnapshotAssembler;
}

/** The witness pool: records by command id, indexed by the keys their commands name, so that a
 * proposal is checked against the records sharing a key with it, not against every record. */
export class WitnessPool extends Map<string, WitnessRecord> {
  readonly index = new ConflictIndex<string>();

  override set(key: string, record: WitnessRecord): this {
    this.index.add(key, record.command);
    return super.set(key, record);
  }

  override delete(key: string): boolean {
    this.index.delete(key);
    return super.delete(key);
  }

  override clear(): void {
    this.index.clear();
    super.clear();
  }
}

/** Whether `earlier` is a command of the same client as `command`, issued before it. A client
 * sends a command only once the one before has completed, so such a record or entry never makes
 * `command` take the slow path (README "Own earlier commands"). */
function ownEarlier(earlier: Command, command: Command): boolean {
  return earlier.clientId === command.clientId && earlier.seq < command.seq;
}

export function superquorum(replicaCount: number): number {
  const f = (replicaCount - 1) / 2;
  return f + Math.ceil(f / 2) + 1;
}

export function recoveryThreshold(replicaCount: number): number {
  const f = (replicaCount - 1) / 2;
  return Math.ceil(f / 2) + 1;
}

export class Replica {
  readonly id: NodeId;
  readonly replicas: NodeId[];
  readonly f: number;
  role: Role = "follower";
  term: number;
  votedFor: NodeId | undefined;
  leaderId: NodeId | undefined;
  /** log[i - snapshotIndex - 1] holds index i: entries up to snapshotIndex are in the snapshot. */
  log: Entry[];
  snapshotIndex = 0;
  snapshotTerm = 0;
  commitIndex = 0;
  appliedIndex = 0;
  kv = new KvMachine();
  /** Entries appended to the log as leader (commands, the no-op of each term won, lease expiries):
   * monotonic over the process's life, read by benchmarks as proposals per file operation. */
  leaderAppends = 0;
  /** Witness pool keyed by command id. */
  readonly pool = new WitnessPool();

  readonly #electionTicks: number;
  /** The configured election timeout in ticks (actual: [t, 2t)). */
  get electionTicks(): number {
    return this.#electionTicks;
  }
  readonly #heartbeatTicks: number;
  readonly #maxBatch: number;
  readonly #maxPool: number;
  readonly #random: (n: number) => number;
  readonly #tickMs: number;
  readonly #snapshotEvery: number;
  /** Snapshot transfers started to followers (first piece sent), ever. */
  snapshotsSent = 0;
  readonly #snapshotPieceBytes: number;
  readonly #unsentBytes: (to: NodeId) => number;
  /** A snapshot from the leader was installed: the next Ready stores it and replaces the log. */
  #snapshotDirty = false;
  /** Applied entries were folded into a snapshot: the next Ready reports the compaction. */
  #compactionPending = false;
  /** Entries compacted away before any Ready reported them: the next Ready still must. */
  #compactedUnstable: Entry[] = [];
  /** Leader: snapshots on their way to followers. */
  readonly #transfers = new Map<NodeId, Transfer>();
  /** Follower: the snapshot being received. */
  #incoming: Incoming | undefined;
  /** Leader: new entries or a new commit index to send, batched until the next ready(). */
  #appendPending = false;
  #handlers: RoleHandlers;
  /** Ticks since start: the leader's lease clock. */
  #now = 0;
  /** Leader only: lease id -> tick at which it expires unless kept alive. Not replicated: a new
   * leader gives every lease a full TTL again (as etcd does), so expiry is never early. */
  #leaseDeadlines = new Map<number, number>();
  /** Leases with an expiry entry in the log not yet applied. */
  #expiring = new Set<number>();
  #electionElapsed = 0;
  #randomizedTimeout = 0;
  #heartbeatElapsed = 0;
  #votes = new Map<NodeId, WitnessRecord[]>();
  #nextIndex = new Map<NodeId, number>();
  /** Followers' match indexes (the leader's own is `#stableIndex`). */
  #matchIndex = new Map<NodeId, number>();
  /** The last log entry the caller reported durable (`stableTo`): as leader, how far this
   * replica counts itself toward a commit. */
  #stableIndex = 0;
  #heardFrom = new Set<NodeId>();
  #readyIndex = Number.MAX_SAFE_INTEGER;
  /** Leader: its uncommitted command entries by index, indexed by the keys they name: the
   * fast path's conflict check (`#ownUncommitted`) and reads' (`#conflictsWithUncommitted`) look
   * at those sharing a key with the command, not at every uncommitted entry. */
  readonly #uncommitted = new ConflictIndex<number>();
  /** Leader: index of the latest lease expiry entry in its log (an expiry conflicts with every
   * command: the keys it deletes are named nowhere in it). */
  #lastExpire = 0;
  /** Uncommitted command entries in the log by command id: leader's conflict check and dedup. */
  #inLog = new Map<string, number>();

  // Pending output.
  #hardStateDirty = false;
  #unstableFrom = Number.MAX_SAFE_INTEGER;
  #poolDirty = false;
  #messages: Message[] = [];
  #immediate: Message[] = [];
  /** Leader: reads waiting for a conflicting entry (or the term's no-op) to commit, by
   * "client/readId". */
  #heldReads = new Map<string, { message: Extract<Message, { type: "read" }>; since: number }>();
  #applied: Applied[] = [];
  readonly #onEvent: (line: string) => void;

  constructor(config: ReplicaConfig, persisted?: PersistentState) {
    if (config.replicas.length % 2 !== 1 || !config.replicas.includes(config.id)) {
      throw new RangeError(
        `Replica set ${
          JSON.stringify(config.replicas)
        } must have an odd size and include "${config.id}"`,
      );
    }
    this.id = config.id;
    this.replicas = config.replicas;
    this.f = (config.replicas.length - 1) / 2;
    this.#electionTicks = config.electionTicks ?? 10;
    this.#heartbeatTicks = config.heartbeatTicks ?? 2;
    this.#maxBatch = config.maxBatch ?? 64;
    this.#maxPool = config.maxPool ?? 4096;
    this.#random = config.random;
    this.#tickMs = config.tickMs ?? 50;
    this.#snapshotEvery = config.snapshotEvery ?? 10_000;
    this.#snapshotPieceBytes = config.snapshotPieceBytes ?? SNAPSHOT_PIECE_BYTES;
    this.#unsentBytes = config.unsentBytes ?? (() => 0);
    this.#onEvent = config.onEvent ?? (() => {});
    if (persisted?.snapshot !== undefined) {
      const snap = persisted.snapshot;
      this.kv = KvMachine.fromSnapshot(snap.kv);
      this.snapshotIndex = this.commitIndex = this.appliedIndex = snap.index;
      this.snapshotTerm = snap.term;
    }
    this.term = persisted?.term ?? 0;
    this.votedFor = persisted?.votedFor;
    this.log = persisted?.log.map((e) => ({ ...e })) ?? [];
    for (const r of persisted?.pool ?? []) {
      // A record of a command the snapshot already executed: its removal was written without an
      // fdatasync (storage.ts) and a crash forgot it. Nothing would collect it again.
      if (this.kv.executed(r.command)) {
        this.#poolDirty = true;
        continue;
      }
      this.pool.set(idKey(r.command), { ...r });
    }
    for (const e of this.log) if (e.command) this.#inLog.set(idKey(e.command), e.index);
    this.#handlers = this.#followerHandlers;
    this.#resetElectionTimer();
    this.#stableIndex = this.lastIndex; // read back from the disk
  }

  get lastIndex(): number {
    return this.snapshotIndex + this.log.length;
  }

  /** The entry at `index`, undefined if compacted into the snapshot or beyond the log. */
  entryAt(index: number): Entry | undefined {
    return index > this.snapshotIndex ? this.log[index - this.snapshotIndex - 1] : undefined;
  }

  /** A leader answers on the fast path only once its first entry of the term has committed. */
  get fastPathReady(): boolean {
    return this.role === "leader" && this.commitIndex >= this.#readyIndex;
  }

  termAt(index: number): number {
    if (index === this.snapshotIndex) return this.snapshotTerm;
    if (index < this.snapshotIndex) return -1; // compacted: committed, term no longer known
    return index === 0 ? 0 : this.log[index - this.snapshotIndex - 1]?.term ?? -1;
  }

  /** Advance logical time by one tick. */
  tick(): void {
    this.#now++;
    this.#handlers.tick();
  }

  /** Handle one message addressed to this replica. */
  step(m: Message): void {
    if (m.to !== this.id) {
      throw new Error(`Message for "${m.to}" stepped into replica "${this.id}"`);
    }
    if (m.type === "propose") return this.#onPropose(m);
    if (m.type === "read") return this.#onRead(m);
    if (m.type === "proposeReply" || m.type === "synced" || m.type === "readReply") return; // client-bound, misrouted
    if (m.type === "preVote") return this.#onPreVote(m);
    if (m.type === "preVoteReply") {
      if (!m.granted && m.term > this.term) {
        this.#becomeFollower(m.term, undefined, `pre-vote reply of term ${m.term} from ${m.from}`);
      } else this.#handlers.step(m);
      return;
    }
    if (m.term > this.term) {
      this.#becomeFollower(
        m.term,
        m.type === "append" ? m.from : undefined,
        `${m.type} of term ${m.term} from ${m.from}`,
      );
    }
    if (m.term < this.term) {
      // Tell a stale leader about the newer term; other stale messages need no answer.
      if (m.type === "append") {
        this.#send({
          type: "appendReply",
          from: this.id,
          to: m.from,
          term: this.term,
          success: false,
          matchIndex: 0,
        });
      }
      return;
    }
    if (m.type === "vote") return this.#onVote(m);
    this.#handlers.step(m);
  }

  /** Take the pending output. See `Ready` for what the caller must do with it, in order. */
  ready(): Ready {
    if (this.#appendPending) {
      this.#appendPending = false;
      if (this.role === "leader") this.#broadcastAppend(true);
    }
    const r: Ready = { entries: [], messages: this.#messages, applied: this.#applied };
    if (this.#hardStateDirty) r.hardState = { term: this.term, votedFor: this.votedFor };
    // Entries applied since the snapshot was decided are in the machine's state: fold them in.
    if (
      (this.#snapshotDirty || this.#compactionPending) && this.appliedIndex > this.snapshotIndex
    ) this.#takeSnapshot();
    if (this.#snapshotDirty) {
      r.snapshot = {
        index: this.snapshotIndex,
        term: this.snapshotTerm,
        kv: this.kv.snapshot(),
        log: this.log.map((e) => ({ ...e })),
      };
    } else {
      if (this.#unstableFrom !== Number.MAX_SAFE_INTEGER) {
        r.truncateFrom = this.#unstableFrom;
        const kept = this.log.slice(Math.max(0, this.#unstableFrom - this.snapshotIndex - 1));
        r.entries = this.#compactedUnstable.concat(kept).map((e) => ({ ...e }));
      }
      if (this.#compactionPending) {
        r.compaction = {
          index: this.snapshotIndex,
          term: this.snapshotTerm,
          kv: this.kv.snapshot(),
        };
      }
    }
    this.#snapshotDirty = false;
    this.#compactionPending = false;
    this.#compactedUnstable = [];
    if (this.#poolDirty) r.pool = [...this.pool.values()].map((w) => ({ ...w }));
    this.#hardStateDirty = false;
    this.#unstableFrom = Number.MAX_SAFE_INTEGER;
    this.#poolDirty = false;
    this.#messages = [];
    this.#applied = [];
    return r;
  }

  /** The last log entry reported durable by `stableTo` (or read back at start). */
  get stableIndex(): number {
    return this.#stableIndex;
  }

  /**
   * Step 3 of `Ready`: the fdatasync covering every Ready taken so far up to one completed, and
   * `index`/`term` were the log's last entry (`lastIndex`, `termAt(lastIndex)`) when that Ready
   * was taken. A leader counts its own copy of entries toward a commit only up to here, so it may
   * send its appends before its own fdatasync (README "The leader's fdatasync off the commit
   * chain"). A mark whose entry was since replaced (truncated, or a snapshot installed) is
   * ignored: a log holding an entry of that index and term holds the same entries up to it (log
   * matching), so it is a newer entry only if the term differs.
   */
  stableTo(index: number, term: number): void {
    if (index <= this.#stableIndex || this.termAt(index) !== term) return;
    this.#stableIndex = index;
    if (this.role === "leader") this.#advanceCommit();
  }

  hasReady(): boolean {
    return this.#hardStateDirty || this.#poolDirty || this.#snapshotDirty ||
      this.#compactionPending || this.#appendPending ||
      this.#messages.length > 0 ||
      this.#applied.length > 0 || this.#unstableFrom !== Number.MAX_SAFE_INTEGER;
  }

  // ---------------------------------------------------------------- roles

  readonly #followerHandlers: RoleHandlers = {
    tick: () => this.#tickElection(),
    step: (m) => {
      if (m.type === "append") this.#onAppend(m);
      if (m.type === "snapshot") this.#onSnapshot(m);
    },
  };

  readonly #preCandidateHandlers: RoleHandlers = {
    tick: () => this.#tickElection(),
    step: (m) => {
      if (m.type === "append") return this.#onAppend(m);
      if (m.type === "snapshot") return this.#onSnapshot(m);
      if (m.type !== "preVoteReply" || !m.granted || m.term !== this.term + 1) return;
      this.#votes.set(m.from, []);
      if (this.#votes.size > this.f) this.#becomeCandidate();
    },
  };

  readonly #candidateHandlers: RoleHandlers = {
    tick: () => this.#tickElection(),
    step: (m) => {
      if (m.type === "append") return this.#onAppend(m);
      if (m.type === "snapshot") return this.#onSnapshot(m);
      if (m.type !== "voteReply" || !m.granted) return;
      if (!this.#votes.has(m.from)) this.#votes.set(m.from, m.pool);
      if (this.#votes.size > this.f) this.#becomeLeader();
    },
  };

  readonly #leaderHandlers: RoleHandlers = {
    tick: () => {
      this.#heartbeatElapsed++;
      this.#electionElapsed++;
      if (this.#electionElapsed >= this.#electionTicks) {
        // Check quorum: a leader cut off from a majority steps down instead of lingering.
        this.#heardFrom.add(this.id);
        if (this.#heardFrom.size <= this.f) {
          return this.#becomeFollower(
            this.term,
            undefined,
            `leader heard from ${this.#heardFrom.size - 1} of ${this.replicas.length - 1} ` +
              `followers in ${this.#electionTicks} ticks (no quorum)`,
          );
        }
        this.#heardFrom.clear();
        this.#electionElapsed = 0;
      }
      if (this.#heartbeatElapsed >= this.#heartbeatTicks) {
        this.#heartbeatElapsed = 0;
        this.#broadcastAppend();
      }
      for (const [to, t] of this.#transfers) {
        if (++t.idleTicks < 2 * this.#heartbeatTicks) continue;
        t.idleTicks = 0;
        // Still leaving this process (a slow or just-resumed follower reads slowly): wait. Seen:
        // a follower resumed after SIGSTOP acknowledged nothing for seconds while the leader
        // resent 4 pieces every 200 ms and restarted the transfer twice, 66 MB queued to it.
        if (this.#unsentBytes(to) > 0) continue;
        if (t.acked === 0 && t.index < this.snapshotIndex) {
          // Nothing arrived (the follower is down): do not hold on to an old copy of the store.
          this.#transfers.delete(to);
          this.#sendAppend(to);
          continue;
        }
        // No progress: send again from the piece the follower waits for (this also keeps the
        // follower's election timer quiet while it has nothing else from this leader).
        t.next = t.resentAt = t.acked;
        this.#sendPieces(to, t);
      }
      this.#expireLeases();
      if (this.#heldReads.size > 0) this.#settleHeldReads();
    },
    step: (m) => {
      if (m.type === "snapshotReply") return this.#onSnapshotReply(m);
      if (m.type !== "appendReply") return;
      this.#heardFrom.add(m.from);
      if (m.success) {
        if (m.matchIndex > (this.#matchIndex.get(m.from) ?? 0)) {
          this.#matchIndex.set(m.from, m.matchIndex);
        }
        const transfer = this.#transfers.get(m.from);
        if (transfer !== undefined && m.matchIndex >= transfer.index) {
          this.#transfers.delete(m.from);
        }
        this.#nextIndex.set(m.from, Math.max(this.#nextIndex.get(m.from)!, m.matchIndex + 1));
        this.#advanceCommit();
        this.#maybeCompact(); // a compaction deferred for this follower may be due now
        if (this.#nextIndex.get(m.from)! <= this.lastIndex) this.#sendAppend(m.from);
      } else {
        const next = Math.max(1, Math.min(this.#nextIndex.get(m.from)! - 1, m.matchIndex + 1));
        this.#nextIndex.set(m.from, next);
        this.#sendAppend(m.from);
      }
    },
  };

  #becomeFollower(term: number, leaderId: NodeId | undefined, reason: string): void {
    if (term > this.term || this.role !== "follower") {
      this.#onEvent(
        `curp: replica "${this.id}" ${this.role} -> follower, term ${this.term} -> ${term}` +
          `${leaderId === undefined ? "" : `, leader ${leaderId}`}: ${reason}`,
      );
    }
    if (term > this.term) {
      this.term = term;
      this.votedFor = undefined;
      this.#hardStateDirty = true;
      this.#incoming = undefined; // pieces of an older term's snapshot: never completed now
    }
    this.#transfers.clear();
    this.#uncommitted.clear();
    this.role = "follower";
    this.leaderId = leaderId;
    this.#handlers = this.#followerHandlers;
    this.#resetElectionTimer();
    if (this.#heldReads.size > 0) this.#settleHeldReads(); // refused: no longer the leader
  }

  #becomePreCandidate(): void {
    this.role = "preCandidate";
    this.leaderId = undefined;
    this.#handlers = this.#preCandidateHandlers;
    this.#votes = new Map([[this.id, []]]);
    this.#resetElectionTimer();
    if (this.#votes.size > this.f) return this.#becomeCandidate();
    for (const to of this.#others()) {
      this.#send({
        type: "preVote",
        from: this.id,
        to,
        term: this.term + 1,
        lastIndex: this.lastIndex,
        lastTerm: this.termAt(this.lastIndex),
      });
    }
  }

  #becomeCandidate(): void {
    this.#onEvent(
      `curp: replica "${this.id}" -> candidate, term ${this.term} -> ${this.term + 1}: ` +
        `pre-vote granted by ${this.#votes.size} of ${this.replicas.length}`,
    );
    this.role = "candidate";
    this.term++;
    this.votedFor = this.id;
    this.#hardStateDirty = true;
    this.leaderId = undefined;
    this.#handlers = this.#candidateHandlers;
    this.#votes = new Map([[this.id, [...this.pool.values()]]]);
    this.#resetElectionTimer();
    if (this.#votes.size > this.f) return this.#becomeLeader();
    for (const to of this.#others()) {
      this.#send({
        type: "vote",
        from: this.id,
        to,
        term: this.term,
        lastIndex: this.lastIndex,
        lastTerm: this.termAt(this.lastIndex),
      });
    }
  }

  #becomeLeader(): void {
    this.#onEvent(
      `curp: replica "${this.id}" -> leader of term ${this.term}: votes from ${
        [...this.#votes.keys()].join(",")
      }`,
    );
    this.role = "leader";
    this.leaderId = this.id;
    this.#handlers = this.#leaderHandlers;
    this.#heartbeatElapsed = 0;
    this.#electionElapsed = 0;
    this.#heardFrom.clear();
    this.#transfers.clear();
    this.#incoming = undefined;
    // Replay what a fast path may have completed: any such command sits in at least
    // ceil(f/2)+1 of any f+1 pools. Two conflicting commands of different clients cannot both
    // reach that count (a pool never holds both), so their order among themselves does not
    // matter; a pool may hold conflicting commands of one client (`ownEarlier`), and (client, seq)
    // order replays them in the order it issued them (README "Own earlier commands").
    const pools = [...this.#votes.values()].slice(0, this.f + 1);
    const counts = new Map<string, { command: Command; count: number }>();
    for (const pool of pools) {
      const seen = new Set<string>();
      for (const record of pool) {
        const key = idKey(record.command);
        if (seen.has(key)) continue;
        seen.add(key);
        const c = counts.get(key);
        if (c === undefined) counts.set(key, { command: record.command, count: 1 });
        else c.count++;
      }
    }
    this.#uncommitted.clear();
    this.#lastExpire = 0;
    for (let i = this.commitIndex + 1; i <= this.lastIndex; i++) {
      const entry = this.entryAt(i)!;
      if (entry.expire !== undefined) this.#lastExpire = i;
      if (entry.command !== undefined) this.#uncommitted.add(i, entry.command);
    }
    const threshold = recoveryThreshold(this.replicas.length);
    const replay = [...counts.entries()]
      .filter(([key, c]) =>
        c.count >= threshold && !this.#inLog.has(key) && !this.kv.executed(c.command)
      )
      .map(([, c]) => c.command)
      .sort((a, b) => a.clientId < b.clientId ? -1 : a.clientId > b.clientId ? 1 : a.seq - b.seq);
    for (const command of replay) this.#appendLocal(command);
    this.#appendLocal(undefined);
    // Fast-path answers wait for this no-op to commit: until then an uncommitted entry of an
    // older term that this log lacks could still be committed by some later leader.
    this.#readyIndex = this.lastIndex;
    for (const r of this.#others()) {
      this.#nextIndex.set(r, this.lastIndex);
      this.#matchIndex.set(r, 0);
    }
    this.#leaseDeadlines.clear();
    this.#expiring.clear();
    for (const l of this.kv.leases()) {
      this.#leaseDeadlines.set(l.id, this.#leaseDeadline(l.ttlSeconds));
    }
    this.#broadcastAppend();
    this.#advanceCommit(); // a single-replica cluster commits alone
  }

  #leaseDeadline(ttlSeconds: number): number {
    return this.#now + Math.ceil((ttlSeconds * 1000) / this.#tickMs);
  }

  /** Leader: propose one log entry deleting the leases whose deadline passed. */
  #expireLeases(): void {
    const due: number[] = [];
    for (const [id, deadline] of this.#leaseDeadlines) {
      if (deadline <= this.#now && !this.#expiring.has(id)) due.push(id);
    }
    if (due.length === 0) return;
    due.sort((a, b) => a - b);
    for (const id of due) this.#expiring.add(id);
    const entry: Entry = { index: this.lastIndex + 1, term: this.term, expire: due };
    this.log.push(entry);
    this.#lastExpire = entry.index;
    this.leaderAppends++;
    this.#unstableFrom = Math.min(this.#unstableFrom, entry.index);
    this.#broadcastAppend();
    this.#advanceCommit();
  }

  /** Leader: keep its lease clocks in step with what was applied. */
  #trackLease(command: Command | undefined, entry: Entry, outcome: ApplyOutcome | undefined): void {
    if (this.role !== "leader") return;
    for (const id of entry.expire ?? []) {
      this.#leaseDeadlines.delete(id);
      this.#expiring.delete(id);
    }
    const admin = command?.admin;
    if (admin === undefined || !outcome?.result?.ok) {
      if (admin !== undefined && "leaseKeepAlive" in admin) {
        this.#leaseDeadlines.delete(admin.leaseKeepAlive.id);
      }
      return;
    }
    if ("leaseGrant" in admin) {
      this.#leaseDeadlines.set(
        admin.leaseGrant.id,
        this.#leaseDeadline(admin.leaseGrant.ttlSeconds),
      );
    } else if ("leaseKeepAlive" in admin && !this.#expiring.has(admin.leaseKeepAlive.id)) {
      const ttl = outcome.result.ttlSeconds ?? 0;
      this.#leaseDeadlines.set(admin.leaseKeepAlive.id, this.#leaseDeadline(ttl));
    } else if ("leaseRevoke" in admin) {
      this.#leaseDeadlines.delete(admin.leaseRevoke.id);
    }
  }

  // ---------------------------------------------------------------- elections

  #tickElection(): void {
    this.#electionElapsed++;
    if (this.#electionElapsed >= this.#randomizedTimeout) {
      this.#onEvent(
        `curp: replica "${this.id}" ${this.role} -> pre-candidate for term ${this.term + 1}: ` +
          `nothing from ${
            this.leaderId === undefined ? "a leader" : `leader ${this.leaderId}`
          } for ${this.#electionElapsed} ticks (${this.#electionElapsed * this.#tickMs} ms)`,
      );
      this.#becomePreCandidate();
    }
  }

  #resetElectionTimer(): void {
    this.#electionElapsed = 0;
    this.#randomizedTimeout = this.#electionTicks + this.#random(this.#electionTicks);
  }

  #logUpToDate(lastIndex: number, lastTerm: number): boolean {
    const myLastTerm = this.termAt(this.lastIndex);
    return lastTerm > myLastTerm || (lastTerm === myLastTerm && lastIndex >= this.lastIndex);
  }

  #onPreVote(m: Extract<Message, { type: "preVote" }>): void {
    // Refuse while a leader is known to be alive, so a partitioned node rejoining cannot depose it.
    const leaderAlive = this.leaderId !== undefined && this.#electionElapsed < this.#electionTicks;
    const granted = m.term > this.term && !leaderAlive &&
      this.#logUpToDate(m.lastIndex, m.lastTerm);
    this.#send({
      type: "preVoteReply",
      from: this.id,
      to: m.from,
      term: granted ? m.term : this.term,
      granted,
    });
  }

  #onVote(m: Extract<Message, { type: "vote" }>): void {
    const granted = (this.votedFor === undefined || this.votedFor === m.from) &&
      this.#logUpToDate(m.lastIndex, m.lastTerm);
    if (granted) {
      this.votedFor = m.from;
      this.#hardStateDirty = true;
      this.#resetElectionTimer();
    }
    this.#send({
      type: "voteReply",
      from: this.id,
      to: m.from,
      term: this.term,
      granted,
      pool: granted ? [...this.pool.values()].map((r) => ({ ...r })) : [],
    });
  }

  // ---------------------------------------------------------------- log replication

  #others(): NodeId[] {
    return this.replicas.filter((r) => r !== this.id);
  }

  #appendLocal(command: Command | undefined): void {
    const entry: Entry = { index: this.lastIndex + 1, term: this.term, command };
    this.log.push(entry);
    this.leaderAppends++;
    if (command) {
      this.#inLog.set(idKey(command), entry.index);
      this.#uncommitted.add(entry.index, command);
    }
    this.#unstableFrom = Math.min(this.#unstableFrom, entry.index);
  }

  #truncateFrom(index: number): void {
    if (index <= this.commitIndex) {
      throw new Error(`Replica "${this.id}" asked to truncate committed index ${index}`);
    }
    for (const e of this.log.splice(index - this.snapshotIndex - 1)) {
      if (e.command && this.#inLog.get(idKey(e.command)) === e.index) {
        this.#inLog.delete(idKey(e.command));
      }
    }
    this.#unstableFrom = Math.min(this.#unstableFrom, index);
    this.#stableIndex = Math.min(this.#stableIndex, index - 1);
  }

  /** `quiet`: an append carrying no entries to a follower that holds them all is marked quiet
   * (its success is not answered). */
  #broadcastAppend(quiet = false): void {
    for (const r of this.#others()) this.#sendAppend(r, quiet);
  }

  #sendAppend(to: NodeId, quiet = false): void {
    const next = this.#nextIndex.get(to)!;
    if (next <= this.snapshotIndex) {
      // The follower needs entries that were compacted: send the state instead, in pieces. One
      // transfer per follower at a time; acknowledgements and the tick's retry move it along.
      if (this.#transfers.has(to)) return;
      const t: Transfer = {
        // The machine is at appliedIndex, past the stored snapshot: send that state, labelled so.
        index: this.appliedIndex,
        term: this.termAt(this.appliedIndex),
        pieces: new SnapshotPieces(this.kv.snapshot(), this.#snapshotPieceBytes),
        acked: 0,
        next: 0,
        idleTicks: 0,
        resentAt: -1,
      };
      this.#transfers.set(to, t);
      this.#sendPieces(to, t);
      return;
    }
    const offset = next - this.snapshotIndex - 1;
    // Pipelining: at most maxInflight entries beyond what the follower acknowledged.
    const inflight = next - 1 - (this.#matchIndex.get(to) ?? 0);
    const room = Math.max(0, Math.min(this.#maxBatch, MAX_INFLIGHT_ENTRIES - inflight));
    const entries = this.log.slice(offset, offset + room).map((e) => ({ ...e }));
    const silent = quiet && entries.length === 0 && this.#matchIndex.get(to) === next - 1;
    this.#send({
      type: "append",
      from: this.id,
      to,
      term: this.term,
      prevIndex: next - 1,
      prevTerm: this.termAt(next - 1),
      entries,
      commit: this.commitIndex,
      readyIndex: this.#readyIndex,
      ...(silent ? { quiet: true } : {}),
    });
    // Optimistic: the next append carries only newer entries. A follower missing these (lost
    // message) rejects a later append, and the failure reply moves nextIndex back.
    this.#nextIndex.set(to, next + entries.length);
  }

  /** Send pieces up to SNAPSHOT_WINDOW beyond what the follower acknowledged. */
  #sendPieces(to: NodeId, t: Transfer): void {
    while (t.next < t.acked + SNAPSHOT_WINDOW && (t.pieces.count ?? Infinity) > t.next) {
      this.#sendPiece(to, t, t.next);
      t.next++;
    }
  }

  #sendPiece(to: NodeId, t: Transfer, piece: number): void {
    if (t.pieces.count !== undefined && piece >= t.pieces.count) return;
    if (piece === 0) this.snapshotsSent++;
    const { data, last } = t.pieces.piece(piece);
    this.#send({
      type: "snapshot",
      from: this.id,
      to,
      term: this.term,
      index: t.index,
      snapshotTerm: t.term,
      piece,
      last,
      data,
      readyIndex: this.#readyIndex,
    });
  }

  #onSnapshotReply(m: Extract<Message, { type: "snapshotReply" }>): void {
    this.#heardFrom.add(m.from);
    const t = this.#transfers.get(m.from);
    if (t === undefined || m.index !== t.index) return;
    if (m.received > t.acked) {
      t.idleTicks = 0;
    } else if (m.received < t.acked) {
      // The follower lost what it held (it restarted): start over from there.
      t.next = m.received;
    } else if (t.next > t.acked && t.resentAt !== t.acked) {
      // A duplicate acknowledgement: a piece after the one it waits for arrived, so that one was
      // lost (a link that was down, or reconnected). Go back once, not per duplicate.
      t.next = t.resentAt = t.acked;
    }
    // A follower may hold pieces of an earlier transfer of this same state (same index, term and
    // leader: the same pieces), and so report more than this one sent.
    t.acked = Math.min(m.received, (t.pieces.count ?? Infinity) - 1);
    t.next = Math.max(t.next, t.acked);
    this.#sendPieces(m.from, t);
  }

  #onAppend(m: Extract<Message, { type: "append" }>): void {
    if (this.role !== "follower") this.#becomeFollower(m.term, m.from, `${m.type} from ${m.from}`);
    this.leaderId = m.from;
    this.#electionElapsed = 0;
    const reply = (success: boolean, matchIndex: number) =>
      this.#send({
        type: "appendReply",
        from: this.id,
        to: m.from,
        term: this.term,
        success,
        matchIndex,
      });
    if (m.prevIndex > this.lastIndex) return reply(false, this.lastIndex);
    // Entries up to snapshotIndex are committed here, so they match the leader's.
    if (m.prevIndex >= this.snapshotIndex && this.termAt(m.prevIndex) !== m.prevTerm) {
      return reply(false, m.prevIndex - 1);
    }
    for (const e of m.entries) {
      if (e.index <= this.snapshotIndex) continue;
      if (e.index <= this.lastIndex) {
        if (this.termAt(e.index) === e.term) continue;
        this.#truncateFrom(e.index);
      }
      this.log.push({ ...e });
      if (e.command) this.#inLog.set(idKey(e.command), e.index);
      this.#unstableFrom = Math.min(this.#unstableFrom, e.index);
    }
    const lastNew = m.prevIndex + m.entries.length;
    const commit = Math.min(m.commit, lastNew);
    if (commit > this.commitIndex) {
      this.commitIndex = commit;
      this.#applyCommitted();
    }
    if (this.commitIndex >= m.readyIndex) this.#dropRecordsBefore(this.term);
    // A quiet append only moved the commit index: the leader knows this follower holds it all.
    if (m.quiet === true && m.entries.length === 0) return;
    reply(true, lastNew);
  }

  #advanceCommit(): void {
    // The leader's own copy counts only as far as its fdatasync covered it (`stableTo`): its
    // appends may leave before that fdatasync (Raft's parallel persist, Ongaro's thesis 10.2.1).
    const own = Math.min(this.#stableIndex, this.lastIndex);
    const matches = this.replicas.map((r) => r === this.id ? own : this.#matchIndex.get(r) ?? 0)
      .sort((a, b) => b - a);
    const majorityMatch = matches[this.f];
    // Only entries of the current term commit by counting (Raft's rule, figure 8).
    if (majorityMatch > this.commitIndex && this.termAt(majorityMatch) === this.term) {
      this.commitIndex = majorityMatch;
      this.#applyCommitted();
      if (this.commitIndex >= this.#readyIndex) this.#dropRecordsBefore(this.term);
      if (this.#heldReads.size > 0) this.#settleHeldReads();
      // Followers learn the commit index without waiting for a heartbeat (sent at ready()).
      this.#appendPending = true;
    }
  }

  #applyCommitted(): void {
    while (this.appliedIndex < this.commitIndex) {
      const entry = this.entryAt(this.appliedIndex + 1)!;
      this.appliedIndex++;
      this.#uncommitted.delete(entry.index);
      if (entry.command === undefined) {
        if (entry.expire !== undefined) this.kv.expire(entry.expire);
        this.#trackLease(undefined, entry, undefined);
        this.#applied.push({ entry, outcome: undefined });
        continue;
      }
      const outcome = this.kv.apply(entry.command);
      this.#trackLease(entry.command, entry, outcome);
      const key = idKey(entry.command);
      if (this.#inLog.get(key) === entry.index) this.#inLog.delete(key);
      if (this.pool.delete(key)) this.#poolDirty = true;
      this.#applied.push({ entry, outcome });
      // A client that already completed the command (its later proposals say so: firstUnacked)
      // would drop the reply (client_core.ts): it is not sent.
      if (this.role === "leader" && !this.#clientCompleted(entry.command)) {
        this.#send({
          type: "synced",
          from: this.id,
          to: entry.command.clientId,
          clientId: entry.command.clientId,
          seq: entry.command.seq,
          term: this.term,
          result: outcome.result,
        });
      }
    }
    this.#maybeCompact();
  }

  /** Compact once `snapshotEvery` applied entries sit in the log. A leader waits up to twice that
   * while a follower has not been sent every entry the compaction would drop (one receiving a
   * snapshot, or catching up after one): otherwise that follower needs another snapshot, and
   * under steady load might never catch up (seen: a 40 MB store installed twice in a row). */
  #maybeCompact(): void {
    let limit = this.#snapshotEvery;
    if (this.role === "leader") {
      for (const r of this.#others()) {
        if (this.#nextIndex.get(r)! <= this.appliedIndex) limit = 2 * this.#snapshotEvery;
      }
    }
    if (this.appliedIndex - this.snapshotIndex >= limit) this.#takeSnapshot();
  }

  /**
   * Compact now (the admin API's snapshot action): every applied entry is folded into a snapshot
   * stored by the next Ready. False when nothing was applied since the last snapshot.
   */
  compactNow(): boolean {
    if (this.appliedIndex <= this.snapshotIndex) return false;
    this.#takeSnapshot();
    return true;
  }

  /** Fold every applied entry into a snapshot and drop them from the log (bounded log). */
  #takeSnapshot(): void {
    const index = this.appliedIndex;
    this.snapshotTerm = this.termAt(index);
    const dropped = this.log.splice(0, index - this.snapshotIndex);
    // Entries not yet handed to storage (a follower applies what it appended in the same step)
    // still go out in the next Ready: the compaction may be stored long after it.
    for (const e of dropped) if (e.index >= this.#unstableFrom) this.#compactedUnstable.push(e);
    this.snapshotIndex = index;
    this.#compactionPending = true;
  }

  /** A follower behind the leader's snapshot collects its pieces in order, then installs it. */
  #onSnapshot(m: Extract<Message, { type: "snapshot" }>): void {
    if (this.role !== "follower") this.#becomeFollower(m.term, m.from, `${m.type} from ${m.from}`);
    this.leaderId = m.from;
    this.#electionElapsed = 0;
    if (m.index <= this.commitIndex) {
      // Installed already (a duplicate or a resent piece), or caught up meanwhile.
      this.#incoming = undefined;
      return this.#installed(m);
    }
    let incoming = this.#incoming;
    if (
      incoming === undefined || incoming.index !== m.index || incoming.term !== m.term ||
      incoming.from !== m.from
    ) {
      incoming = undefined;
      if (m.piece === 0) {
        incoming = this.#incoming = {
          from: m.from,
          term: m.term,
          index: m.index,
          snapshotTerm: m.snapshotTerm,
          received: 0,
          assembler: new SnapshotAssembler(),
        };
      }
    }
    if (incoming !== undefined && m.piece === incoming.received) {
      incoming.assembler.add(m.data);
      incoming.received++;
      if (m.last) {
        this.#incoming = undefined;
        this.#install({
          index: m.index,
          term: m.snapshotTerm,
          kv: incoming.assembler.finish(),
        });
        return this.#installed(m);
      }
    }
    this.#send({
      type: "snapshotReply",
      from: this.id,
      to: m.from,
      term: this.term,
      index: m.index,
      received: incoming?.received ?? 0,
    });
  }

  /** Tell the leader this replica's state reaches the snapshot's index (or beyond). */
  #installed(m: Extract<Message, { type: "snapshot" }>): void {
    // The kept suffix is not checked against the leader's log yet: the next append commits it.
    if (this.commitIndex >= m.readyIndex) this.#dropRecordsBefore(this.term);
    this.#send({
      type: "appendReply",
      from: this.id,
      to: m.from,
      term: this.term,
      success: true,
      matchIndex: Math.max(m.index, this.commitIndex),
    });
  }

  /** Replace this replica's state with the leader's snapshot (index > commitIndex). */
  #install(snap: Snapshot): void {
    // Keep a suffix that continues the snapshot (Raft's rule); otherwise drop the whole log.
    if (this.termAt(snap.index) === snap.term) {
      this.log.splice(0, snap.index - this.snapshotIndex);
    } else {
      this.log.length = 0;
      // Not durable until the Ready storing the snapshot is (its stableTo says so).
      this.#stableIndex = Math.min(this.#stableIndex, this.snapshotIndex);
    }
    this.#inLog.clear();
    for (const e of this.log) if (e.command) this.#inLog.set(idKey(e.command), e.index);
    this.kv = KvMachine.fromSnapshot(snap.kv);
    this.snapshotIndex = this.commitIndex = this.appliedIndex = snap.index;
    this.snapshotTerm = snap.term;
    this.#snapshotDirty = true;
    this.#unstableFrom = Number.MAX_SAFE_INTEGER; // the snapshot's log rewrite covers it
    for (const [key, record] of this.pool) {
      if (this.kv.executed(record.command)) {
        this.pool.delete(key);
        this.#poolDirty = true;
      }
    }
  }

  /** Once a leader of `term` committed its no-op, every record of an older term that mattered
   * was replayed and committed; the rest belong to commands no client saw complete. */
  #dropRecordsBefore(term: number): void {
    for (const [key, record] of this.pool) {
      if (record.term < term) {
        this.pool.delete(key);
        this.#poolDirty = true;
      }
    }
  }

  // ---------------------------------------------------------------- proposals

  /** Witness: record the command unless it conflicts with one held. Every role does this. */
  #witness(command: Command): boolean {
    const key = idKey(command);
    const held = this.pool.get(key);
    if (held !== undefined) {
      if (held.term !== this.term) {
        held.term = this.term;
        this.#poolDirty = true;
      }
      return true;
    }
    // Already executed here: a record would never be collected by a commit.
    if (this.kv.executed(command)) return false;
    if (this.pool.size >= this.#maxPool) return false;
    const conflict = this.pool.index.some(
      command,
      (_, other) => conflicts(other, command) && !ownEarlier(other, command),
    );
    if (conflict) return false;
    this.pool.set(key, { term: this.term, command });
    this.#poolDirty = true;
    return true;
  }

  /** Leader: per client, the `firstUnacked` of its latest proposal (every seq below it completed
   * at the client), in the order last heard from; at most `MAX_ACKED_CLIENTS`. */
  #ackedBelow = new Map<string, number>();

  #noteAcked(command: Command): void {
    const id = command.clientId;
    const known = this.#ackedBelow.get(id);
    if (known !== undefined && known >= command.firstUnacked) return;
    this.#ackedBelow.delete(id); // re-inserted last: the oldest is the first
    this.#ackedBelow.set(id, command.firstUnacked);
    if (this.#ackedBelow.size > MAX_ACKED_CLIENTS) {
      this.#ackedBelow.delete(this.#ackedBelow.keys().next().value!);
    }
  }

  #clientCompleted(command: Command): boolean {
    return command.seq < (this.#ackedBelow.get(command.clientId) ?? 0);
  }

  #onPropose(m: Extract<Message, { type: "propose" }>): void {
    const command = m.command;
    if (this.role === "leader") this.#noteAcked(command);
    const reply = (accepted: boolean, speculative?: CommandResult) =>
      this.#send({
        type: "proposeReply",
        from: this.id,
        to: m.from,
        clientId: command.clientId,
        seq: command.seq,
        term: this.term,
        leaderId: this.leaderId,
        accepted,
        ...(speculative ? { speculative } : {}),
      });
    if (this.role !== "leader") return reply(this.#witness(command));
    if (this.kv.executed(command)) {
      this.#send({
        type: "synced",
        from: this.id,
        to: m.from,
        clientId: command.clientId,
        seq: command.seq,
        term: this.term,
        result: this.kv.resultOf(command),
      });
      return;
    }
    const key = idKey(command);
    if (this.#inLog.has(key)) return reply(this.#witness(command)); // a retry: wait for the commit
    const accepted = this.#witness(command);
    const before = accepted && command.admin === undefined &&
        this.commitIndex >= this.#readyIndex
      ? this.#ownUncommitted(command)
      : undefined;
    const speculative = before !== undefined ? this.kv.speculate(command, before) : undefined;
    this.#appendLocal(command);
    this.#appendPending = true; // one append per follower for every proposal of this batch
    this.#advanceCommit();
    reply(accepted, speculative);
  }

  /**
   * A read outside the log. Every replica answers with its term at once; the leader also answers
   * the transaction from its applied state when that state holds every write that can have
   * completed: its term's first entry has committed (so every command an earlier leader may have
   * completed, replayed or committed, is applied), and no uncommitted entry of its own log touches
   * the keys read (a fast-path write that completed is in the leader's log). The client needs the
   * leader's term from a majority: a leader of a newer term needs a majority that voted in it, so a
   * write completed by such a leader before the read started would show as a newer term in at
   * least one reply. Nothing is persisted (no fsync, no log entry); a replica's term in memory is
   * never below the one it stored, so replying from memory is safe.
   */
  #onRead(m: Extract<Message, { type: "read" }>): void {
    const reply = this.#readReply(m);
    if (this.role === "leader") {
      const key = `${m.from}/${m.readId}`;
      if (this.#heldReads.has(key)) return; // a retry of a read already waiting here
      if (this.#canAnswer(m.txn)) reply.result = this.kv.read(m.txn);
      else if (!isReadOnly(m.txn) || this.#heldReads.size >= MAX_HELD_READS) reply.refused = true;
      else {
        // A write it must see (or this term's no-op) is not committed yet: answer once it is,
        // rather than send the read through the log (an entry and an fsync on every replica).
        this.#heldReads.set(key, { message: m, since: this.#now });
        return;
      }
    }
    this.#immediate.push(reply);
  }

  /** A reply to `m` carrying this replica's term and leader, without a result yet. */
  #readReply(m: Extract<Message, { type: "read" }>): Extract<Message, { type: "readReply" }> {
    return {
      type: "readReply",
      from: this.id,
      to: m.from,
      readId: m.readId,
      term: this.term,
      leaderId: this.leaderId,
    };
  }

  /** Whether a read-only `txn` can be answered from the applied state now (see `#onRead`). */
  #canAnswer(txn: TxnRequest): boolean {
    if (this.commitIndex < this.#readyIndex || this.appliedIndex !== this.commitIndex) return false;
    if (!isReadOnly(txn)) return false;
    return !this.#conflictsWithUncommitted({ clientId: "", seq: 0, firstUnacked: 0, txn });
  }

  /** Leader: answer the held reads that can be answered now; refuse those held too long (the
   * client then sends them through the log) or all of them when this replica stops leading. */
  #settleHeldReads(): void {
    for (const [key, held] of this.#heldReads) {
      const m = held.message;
      const reply = this.#readReply(m);
      if (this.role === "leader" && this.#canAnswer(m.txn)) reply.result = this.kv.read(m.txn);
      else if (this.role === "leader" && this.#now - held.since < this.#electionTicks) continue;
      else reply.refused = true;
      this.#heldReads.delete(key);
      this.#immediate.push(reply);
    }
  }

  /** Replies that need nothing persisted first (read replies): send them at once, ahead of any
   * `Ready` still being written. The caller takes them after each `step` and `tick`. */
  takeImmediate(): Message[] {
    const out = this.#immediate;
    this.#immediate = [];
    return out;
  }

  /**
   * Leader, fast path: the uncommitted commands `command`'s speculative result must run after, or
   * undefined when it cannot be answered fast. Undefined when an uncommitted entry of another
   * client conflicts with it (or an expiry is uncommitted). Otherwise the uncommitted commands of
   * the same client with a lower seq, in log order, when one of them conflicts with it (empty
   * when none does): each was answered fast by this leader in this term (an earlier leader's, or
   * one answered on the slow path, is committed by now), so running them on the applied state
   * gives what `command` will see at its place in the log (README "Own earlier commands"). A
   * compare on the modification or creation revision of a key they write cannot be answered over
   * them (their revisions are unknown): undefined then.
   */
  #ownUncommitted(command: Command): Command[] | undefined {
    if (this.#lastExpire > this.commitIndex) return undefined;
    let dependsOnOwn = false;
    const blocked = this.#someUncommitted(command, (other) => {
      if (!conflicts(other, command)) return false;
      if (!ownEarlier(other, command)) return true;
      dependsOnOwn = true;
      return false;
    });
    if (blocked) return undefined;
    if (!dependsOnOwn) return [];
    const own: Command[] = [];
    const seqs = new Set<number>();
    for (let i = this.commitIndex + 1; i <= this.lastIndex; i++) {
      const other = this.entryAt(i)!.command;
      if (other === undefined || !ownEarlier(other, command) || seqs.has(other.seq)) continue;
      seqs.add(other.seq);
      own.push(other);
    }
    for (const c of txnsOf(command).flatMap((t) => t.compare ?? [])) {
      if (c.target !== "modRevision" && c.target !== "createRevision") continue;
      const key = intervalOf({ key: c.key });
      for (const earlier of own) {
        const fp = footprintOf(earlier);
        if (fp.writes.some((w) => overlaps(w, key))) return undefined;
        if (fp.merges.some((m) => overlaps(m.key, key))) return undefined;
      }
    }
    return own;
  }

  #conflictsWithUncommitted(command: Command): boolean {
    // An expiry deletes keys not named anywhere in the entry: it conflicts with everything.
    if (this.#lastExpire > this.commitIndex) return true;
    return this.#someUncommitted(command, (other) => conflicts(other, command));
  }

  /** Leader: `test` on the uncommitted command entries that may conflict with `command`
   * (`#uncommitted`), until it holds; whether it did. */
  #someUncommitted(command: Command, test: (other: Command) => boolean): boolean {
    return this.#uncommitted.some(command, (index, other) => {
      if (index <= this.commitIndex || this.entryAt(index)?.command !== other) {
        this.#uncommitted.delete(index); // committed or gone: kept by mistake, never a candidate
        return false;
      }
      return test(other);
    });
  }

  #send(m: Message): void {
    this.#messages.push(m);
  }
}
