/**
 * A CURP replica as a process: drives the pure `Replica` (core.ts) with a real clock, TCP frames
 * (wire.ts) and fsync'd storage (storage.ts). `skyfs meta serve` runs one.
 *
 * Order of duties per `Ready`: persist and fsync first, then send (core.ts documents why and the
 * messages that may leave once the Ready is written: `#drain`), then tell the core what is durable.
 * Persistence goes through the process's I/O engine and is awaited, so frames keep being stepped
 * while the disk syncs; drains run one at a time, so every other message of a `Ready` leaves only
 * after that `Ready` and all earlier ones are durable, and what was stepped meanwhile is persisted
 * in the next `Ready` (group commit: one fdatasync for everything that arrived during the last
 * one).
 * @module
 */

import { Replica } from "./core.ts";
import type { Message, PersistentState } from "./core.ts";
import { intervalOf, keyString } from "./command.ts";
import type { WatchEvent } from "../kv.ts";
import { type ClusterIdentity, type LogWrites, ReplicaStorage } from "./storage.ts";
import type { IoEngine } from "../../io/types.ts";
import { FrameConn, Link, parseAddress, parsePeers, type WriteCounter } from "./wire.ts";

export interface ServeOptions {
  /** This replica's id; must be one of `peers`. */
  id: string;
  /** "a=host:port,b=host:port,c=host:port": every replica, this one included. */
  peers: string;
  /** Data directory (created if missing). */
  dataDir: string;
  /** Milliseconds per tick. Election timeout is 30-60 ticks, heartbeats every 2. Default 50. */
  tickMs?: number;
  /** Address to listen on instead of this replica's --peers address: peers then reach it through
   * whatever forwards that address to this one (the WAN benchmark's delay proxies). */
  listen?: string;
  /** Election timeout in ticks (actual: [t, 2t)). Default 30 (`ELECTION_TICKS`). */
  electionTicks?: number;
  /** Applied log entries kept before a snapshot replaces them. Default 10,000. */
  snapshotEvery?: number;
  /** Send proposal replies (witness accepts, the leader's speculative result) once the Ready is
   * written, before its fdatasync, unless it changes the hard state (README "Witness records
   * acknowledged from the page cache"). Default true. */
  witnessAckAfterWrite?: boolean;
  /** How log.bin is written: "mapped" (default) or "engine" (config curp.log_writes,
   * storage.ts `LogWrites`). */
  logWrites?: LogWrites;
  log?: (line: string) => void;
}

export interface ServeIo {
  /** The process's I/O engine (`openIoEngine()` in src/io); the replica's files go through it.
   * The caller owns it: shut it down after `close()`. */
  io: IoEngine;
}

export interface ReplicaStatus {
  id: string;
  role: string;
  term: number;
  leaderId: string | undefined;
  commitIndex: number;
  appliedIndex: number;
  lastIndex: number;
  /** Entries up to here are folded into the snapshot and gone from the log. */
  snapshotIndex: number;
  revision: number;
  members: Record<string, string>;
  /** Proposals this replica answered as leader: with a speculative result, and without. */
  fastReplies: number;
  slowReplies: number;
  poolSize: number;
  /** Entries this replica appended as leader, ever (core.ts `leaderAppends`). */
  proposals: number;
  /** fdatasync/fsync calls its storage made, ever (storage.ts `fsyncs`). */
  fsyncs: number;
  /** The latest a tick timer has fired, ever, in ms past its due time (GC pauses, a busy event
   * loop or a starved CPU); the election timeout must stay well above it. */
  maxTickLagMs: number;
  /** Ticks that fired `TICK_STALL_MS` or more late. */
  tickStalls: number;
  /** Bytes of the log file now. */
  logBytes?: number;
  /** Snapshot transfers this replica started as leader, ever. */
  snapshotsSent?: number;
  /** This build runs batch commands (`Command.batch`); earlier builds leave it out, and a
   * `CurpKV` connecting through such a replica sends no batches. */
  batches?: boolean;
  /** Frames this replica received and sent, ever, by message type (watch events count as
   * `watchEvents` frames, and `watchEventsOut` counts the events in them): where a cluster
   * operation's replica CPU goes (README "Where a proposal's time goes", per cluster create). */
  messagesIn?: Record<string, number>;
  messagesOut?: Record<string, number>;
  /** Socket writes this replica made, ever: to its peers (its links) and to clients (connections
   * it accepted). Against `messagesOut`, frames per write: the frames of one turn to one socket
   * leave in one write (wire.ts `FrameConn`). */
  peerWrites?: number;
  clientWrites?: number;
}

/** Election timeout in ticks, [t, 2t) actual: 1.5-3 s at 50 ms ticks. At 10 ticks (0.5-1 s) a
 * replica on this 2-core machine at load 12 saw tick timers fire up to 1.96 s late (GC pauses up
 * to 0.47 s, starved CPU) and its term went from 1 to 33 in 65 minutes with one leader kill;
 * at 30 ticks a 10-minute soak at load 12 kept term 1 (tests/meta/curp_soak_test.ts). The cost:
 * a dead leader is replaced after 1.5-3 s instead of 0.5-1 s. */
export const ELECTION_TICKS = 30;

/** A tick this late (ms) counts as a stall in `ReplicaStatus.tickStalls`. */
export const TICK_STALL_MS = 500;

/** A client's watch request: events for [key, rangeEnd) from `startRevision`, or when absent from
 * after max(`afterRevision`, this replica's revision). Replies go on the connection it came on:
 * `watchStarted` (the start revision, pinned for resubscriptions), `watchEvents` per revision,
 * `watchError` when the start is compacted. */
export interface WatchRequest {
  type: "watch";
  from: string;
  watchId: number;
  key: Uint8Array;
  rangeEnd?: Uint8Array;
  startRevision?: number;
  afterRevision: number;
  prevKv: boolean;
}

interface ServedWatch {
  conn: FrameConn;
  watchId: number;
  start: string;
  end: string | undefined;
  prevKv: boolean;
  /** Next revision to look at. */
  next: number;
}

/** What a written Ready sends once the fdatasync covering it completed (server `#drain`). */
interface OutboxEntry {
  later: Message[];
  /** Pump the watches (entries were applied). */
  applied: boolean;
  /** Its fdatasync completed, or failed and the replica stopped. */
  settled: boolean;
  /** Resolves the entry's promise (`#outbox`) once sent. */
  sent: () => void;
}

/** Most watches one replica serves; a request beyond it gets a watchError. */
const MAX_WATCHES = 10_000;

const PEER_TYPES = new Set([
  "preVote",
  "preVoteReply",
  "vote",
  "voteReply",
  "append",
  "appendReply",
  "snapshot",
  "snapshotReply",
]);

export class ReplicaServer {
  readonly replica: Replica;
  readonly #storage: ReplicaStorage;
  readonly #listener: Deno.TcpListener;
  readonly #links = new Map<string, Link>();
  readonly #clients = new Map<string, FrameConn>();
  readonly #conns = new Set<FrameConn>();
  readonly #members: Record<string, string>;
  readonly #timer: ReturnType<typeof setInterval>;
  readonly #log: (line: string) => void;
  #drainScheduled = false;
  /** The drain in progress (it awaits persistence), which close() waits for. */
  #draining: Promise<void> | undefined;
  /** Messages of written Readies waiting for their fdatasync, sent in Ready order
   * (`#flushOutbox`). */
  readonly #outboxQueue: OutboxEntry[] = [];
  /** Settles once the latest Ready in the outbox has been sent (or dropped: stopped). */
  #outbox: Promise<void> = Promise.resolve();
  /** The log's last entry when the latest written Ready was taken (core.ts `stableTo`). */
  #written = { index: 0, term: 0 };
  #closed = false;
  readonly #ackAfterWrite: boolean;
  #stopped!: { resolve: () => void; reject: (error: unknown) => void };
  /** Settles when the replica stops: resolves after close(), rejects when storage failed (the
   * replica then sends nothing more; restart it from its data directory). */
  readonly stopped: Promise<void>;
  /** "clientPrefix/watchId" -> watch. */
  readonly #watches = new Map<string, ServedWatch>();
  fastReplies = 0;
  slowReplies = 0;
  /** `read` frames received from clients (reads outside the log, each replica asked counts). */
  readsReceived = 0;
  /** Frames received and sent by type, ever (status `messagesIn`/`messagesOut`). */
  readonly messagesIn: Record<string, number> = {};
  readonly messagesOut: Record<string, number> = {};
  readonly #peerWrites: WriteCounter = { writes: 0 };
  readonly #clientWrites: WriteCounter = { writes: 0 };
  maxTickLagMs = 0;
  tickStalls = 0;

  private constructor(
    options: ServeOptions,
    peers: Map<string, string>,
    identity: ClusterIdentity,
    opened: { storage: ReplicaStorage; state: PersistentState },
  ) {
    this.#log = options.log ?? ((line) => console.error(line));
    this.#ackAfterWrite = options.witnessAckAfterWrite ?? true;
    this.stopped = new Promise((resolve, reject) => this.#stopped = { resolve, reject });
    this.stopped.catch(() => {}); // a caller that never looks at it must not crash the process
    const ids = [...peers.keys()];
    this.#members = Object.fromEntries(peers);
    const { storage, state } = opened;
    this.#storage = storage;
    storage.onCompactionError = (error) =>
      this.#log(
        `curp: replica "${options.id}" could not store a snapshot in "${storage.dir}" (its log ` +
          `stays longer until the next one): ${(error as Error).message}`,
      );
    this.replica = new Replica(
      {
        id: options.id,
        replicas: ids,
        electionTicks: options.electionTicks ?? ELECTION_TICKS,
        tickMs: options.tickMs ?? 50,
        snapshotEvery: options.snapshotEvery,
        onEvent: this.#log,
        random: (n) => Math.floor(Math.random() * n),
        unsentBytes: (to) => this.#links.get(to)?.unsentBytes ?? 0,
      },
      state,
    );
    const address = parseAddress(options.listen ?? peers.get(options.id)!);
    try {
      this.#listener = Deno.listen({ hostname: address.hostname, port: address.port });
    } catch (error) {
      throw new Error(`Cannot listen on ${peers.get(options.id)}: ${(error as Error).message}`);
    }
    for (const [id, a] of peers) {
      if (id === options.id) continue;
      // Peers send their replies over their own links, so frames arriving here are unexpected.
      this.#links.set(id, new Link(parseAddress(a), () => {}, this.#log, this.#peerWrites));
    }
    void this.#acceptLoop();
    const tickMs = options.tickMs ?? 50;
    let lastTick = performance.now();
    this.#timer = setInterval(() => {
      const now = performance.now();
      const lag = now - lastTick - tickMs;
      lastTick = now;
      if (lag > this.maxTickLagMs) this.maxTickLagMs = Math.round(lag);
      if (lag >= TICK_STALL_MS) {
        this.tickStalls++;
        this.#log(
          `curp: replica "${options.id}" tick fired ${Math.round(lag)} ms late (event loop or ` +
            `CPU stalled; elections start after ${this.replica.electionTicks * tickMs} ms)`,
        );
      }
      this.replica.tick();
      this.#syncLeftOver();
      for (const reply of this.replica.takeImmediate()) this.#send(reply);
      for (const link of this.#links.values()) link.connect();
      this.#scheduleDrain();
    }, tickMs);
    this.#log(
      `curp: replica "${options.id}" of ${identity.cluster} serving on ${peers.get(options.id)}, ` +
        `term ${state.term}, snapshot at ${state.snapshot?.index ?? 0}, ${state.log.length} log ` +
        `entries after it, ${state.pool.length} witness records`,
    );
  }

  /** Open the data directory through `io`, then serve. */
  static async start(options: ServeOptions & ServeIo): Promise<ReplicaServer> {
    const peers = parsePeers(options.peers);
    if (!peers.has(options.id)) {
      throw new RangeError(
        `--id "${options.id}" is not one of the --peers ids ${JSON.stringify([...peers.keys()])}`,
      );
    }
    const identity: ClusterIdentity = {
      cluster: [...peers].map(([id, a]) => `${id}=${a}`).join(","),
      id: options.id,
    };
    const opened = await ReplicaStorage.open(options.dataDir, identity, options.io, {
      logWrites: options.logWrites,
    });
    try {
      return new ReplicaServer(options, peers, identity, opened);
    } catch (error) {
      await opened.storage.close();
      throw error;
    }
  }

  status(): ReplicaStatus {
    const r = this.replica;
    return {
      id: r.id,
      role: r.role,
      term: r.term,
      leaderId: r.leaderId,
      commitIndex: r.commitIndex,
      appliedIndex: r.appliedIndex,
      lastIndex: r.lastIndex,
      snapshotIndex: r.snapshotIndex,
      revision: r.kv.revision,
      members: this.#members,
      fastReplies: this.fastReplies,
      slowReplies: this.slowReplies,
      poolSize: r.pool.size,
      proposals: r.leaderAppends,
      fsyncs: this.#storage.fsyncs,
      maxTickLagMs: this.maxTickLagMs,
      tickStalls: this.tickStalls,
      logBytes: this.#storage.logBytes,
      snapshotsSent: r.snapshotsSent,
      batches: true,
      messagesIn: { ...this.messagesIn },
      messagesOut: { ...this.messagesOut },
      peerWrites: this.#peerWrites.writes,
      clientWrites: this.#clientWrites.writes,
    };
  }

  /** Fold the applied log into a snapshot now (stored in the background, as a compaction).
   * Resolves to whether there was anything to fold and the snapshot's index. */
  compactNow(): { taken: boolean; snapshotIndex: number } {
    const taken = this.replica.compactNow();
    if (taken) this.#scheduleDrain();
    return { taken, snapshotIndex: this.replica.snapshotIndex };
  }

  async #acceptLoop(): Promise<void> {
    try {
      for await (const conn of this.#listener) {
        const remote = conn.remoteAddr as Deno.NetAddr;
        const fc = new FrameConn(
          conn,
          `from ${remote.hostname}:${remote.port}`,
          this.#log,
          this.#clientWrites,
        );
        this.#conns.add(fc);
        fc.onClose(() => this.#conns.delete(fc));
        void fc.readLoop((body) => this.#onFrame(fc, body), { views: true });
      }
    } catch (error) {
      if (!this.#closed) this.#log(`curp: accept failed: ${(error as Error).message}`);
    }
  }

  #onFrame(fc: FrameConn, body: unknown): void {
    const received = String((body as { type: string }).type);
    this.messagesIn[received] = (this.messagesIn[received] ?? 0) + 1;
    if ((body as { type: string }).type === "status") {
      fc.send({ type: "statusReply", status: this.status() });
      return;
    }
    const type = (body as { type: string }).type;
    if (type === "watch") return this.#onWatch(fc, body as WatchRequest);
    if (type === "watchCancel") {
      const b = body as { from: string; watchId: number };
      this.#watches.delete(`${b.from}/${b.watchId}`);
      return;
    }
    const m = body as Message;
    const problem = this.#invalid(m);
    if (problem !== undefined) throw new TypeError(problem); // readLoop closes fc and logs
    if (m.type === "propose" || m.type === "read") this.#clients.set(m.from, fc);
    if (m.type === "read") this.readsReceived++;
    this.replica.step(m);
    // Read replies need nothing persisted: they leave now, not behind a drain's fsync.
    for (const reply of this.replica.takeImmediate()) this.#send(reply);
    if (m.type !== "read") this.#scheduleDrain();
  }

  /** Why a frame is not a message this replica may step, or undefined. */
  #invalid(m: Message): string | undefined {
    if (typeof m.from !== "string" || m.to !== this.replica.id) {
      return `message for ${JSON.stringify(m.to)} from ${
        JSON.stringify(m.from)
      } sent to "${this.replica.id}"`;
    }
    if (m.type === "propose") {
      const c = (m as {
        command?: {
          clientId?: unknown;
          seq?: unknown;
          firstUnacked?: unknown;
          txn?: unknown;
          batch?: unknown;
        };
      }).command;
      if (
        c === undefined || c.clientId !== m.from || !Number.isSafeInteger(c.seq) ||
        !Number.isSafeInteger(c.firstUnacked) || c.txn === null || typeof c.txn !== "object" ||
        (c.batch !== undefined &&
          (!Array.isArray(c.batch) || c.batch.length === 0 ||
            c.batch.some((t) => t === null || typeof t !== "object")))
      ) return "malformed propose";
      return undefined;
    }
    if (m.type === "read") {
      const r = m as { readId?: unknown; txn?: unknown };
      if (!Number.isSafeInteger(r.readId) || r.txn === null || typeof r.txn !== "object") {
        return "malformed read";
      }
      return undefined;
    }
    if (!PEER_TYPES.has(m.type)) return `unknown message type ${JSON.stringify(m.type)}`;
    if (!this.#links.has(m.from)) return `peer message from non-member ${JSON.stringify(m.from)}`;
    if (!Number.isSafeInteger((m as { term?: unknown }).term)) return "peer message without a term";
    return undefined;
  }

  #onWatch(fc: FrameConn, w: WatchRequest): void {
    if (
      typeof w.from !== "string" || !Number.isSafeInteger(w.watchId) ||
      !(w.key instanceof Uint8Array) || !Number.isSafeInteger(w.afterRevision) ||
      (w.startRevision !== undefined && !Number.isSafeInteger(w.startRevision))
    ) throw new TypeError("malformed watch request"); // readLoop closes fc and logs
    const kv = this.replica.kv;
    const id = `${w.from}/${w.watchId}`;
    const start = w.startRevision ?? Math.max(w.afterRevision, kv.revision) + 1;
    if (start < kv.compactRevision) {
      fc.send({ type: "watchError", watchId: w.watchId, compactRevision: kv.compactRevision });
      return;
    }
    if (!this.#watches.has(id) && this.#watches.size >= MAX_WATCHES) {
      fc.send({
        type: "watchError",
        watchId: w.watchId,
        error: `more than ${MAX_WATCHES} watches`,
      });
      return;
    }
    const iv = intervalOf({ key: w.key, rangeEnd: w.rangeEnd });
    const served: ServedWatch = {
      conn: fc,
      watchId: w.watchId,
      start: iv.start,
      end: iv.end,
      prevKv: w.prevKv === true,
      next: start,
    };
    fc.onClose(() => {
      if (this.#watches.get(id) === served) this.#watches.delete(id);
    });
    this.#watches.set(id, served);
    fc.send({ type: "watchStarted", watchId: w.watchId, startRevision: start });
    this.#pump(id, served);
  }

  /** Send a watch what was applied since its last look: history and live events are one path. */
  #pump(id: string, w: ServedWatch): void {
    const kv = this.replica.kv;
    if (w.next > kv.revision) return;
    if (w.next < kv.compactRevision) {
      w.conn.send({ type: "watchError", watchId: w.watchId, compactRevision: kv.compactRevision });
      this.#watches.delete(id);
      return;
    }
    for (const record of kv.historyFrom(w.next)) {
      const events: WatchEvent[] = [];
      for (const e of record.events) {
        const k = keyString(e.kv.key);
        if (k < w.start || (w.end !== undefined && k >= w.end)) continue;
        events.push(w.prevKv || e.prevKv === undefined ? e : { type: e.type, kv: e.kv });
      }
      if (events.length > 0) {
        this.messagesOut.watchEvents = (this.messagesOut.watchEvents ?? 0) + 1;
        this.messagesOut.watchEventsOut = (this.messagesOut.watchEventsOut ?? 0) + events.length;
        w.conn.send({
          type: "watchEvents",
          watchId: w.watchId,
          revision: record.revision,
          events,
        });
      }
    }
    w.next = kv.revision + 1;
  }

  #scheduleDrain(): void {
    // A running drain looks at hasReady() again after each persist, so it picks this up.
    if (this.#drainScheduled || this.#draining !== undefined || this.#closed) return;
    this.#drainScheduled = true;
    // setImmediate, not a microtask: frames that arrived on other connections in the same turn of
    // the event loop are stepped first, so one fsync covers all of them (group commit). Not
    // setTimeout(0) either: Deno rounds that up to the next millisecond tick (1-2 ms measured per
    // hop), which cost every proposal two to four of them (leader, follower, leader again).
    setImmediate(() => {
      this.#drainScheduled = false;
      if (this.#draining !== undefined || this.#closed) return;
      this.#draining = this.#drain().finally(() => {
        this.#draining = undefined;
        // Stepped (or made durable: `#durable`) after the loop's last look, while it returned.
        if (this.replica.hasReady()) this.#scheduleDrain();
      });
    });
  }

  /**
   * Write each Ready and send what it allows, without waiting for the disk in between (pipelined
   * group commit): a Ready is copied into the log (storage `write`), its answers that need no
   * durability of it leave at once, and the rest wait for the fdatasync covering it (storage
   * `durable`), which covers every Ready written before it too. Meanwhile the next Readies are
   * written, and one fdatasync then covers all of them.
   *
   * Leaving at once: the Ready's `proposeReply` messages (a witness's accept, the leader's
   * speculative result: README "Witness records acknowledged from the page cache"), a leader's
   * appends (it counts its own copy toward a commit only once the fdatasync covering it completed
   * and `#durable` told the core: README "The leader's fdatasync off the commit chain"), a
   * leader's `synced` messages and the watch events of what was applied: each says only
   * "committed", which the commit index alone makes true (on a majority of disks: the core counts
   * this replica's copy only up to `stableTo`, the followers' through their append replies, sent
   * after their fdatasync). Everything else (append replies, votes, snapshot pieces) leaves
   * after the fdatasync, in Ready order. A Ready that changes the hard state or installs a
   * snapshot sends nothing early and is waited for whole before the next one is built (a term or
   * vote is on disk before anything is stepped under it).
   */
  async #drain(): Promise<void> {
    while (!this.#closed && this.replica.hasReady()) {
      const ready = this.replica.ready();
      // What an fdatasync covering this Ready makes durable (core.ts `stableTo`).
      const mark = {
        index: this.replica.lastIndex,
        term: this.replica.termAt(this.replica.lastIndex),
      };
      const started = performance.now();
      const barrier = ready.hardState !== undefined || ready.snapshot !== undefined;
      try {
        await this.#storage.write(ready); // before any send: see core.ts Ready
      } catch (error) {
        return this.#failStorage(error);
      }
      if (this.#closed) return; // written, but close() said to send nothing more
      this.#written = mark;
      if (ready.snapshot !== undefined) {
        this.#log(
          `curp: replica "${this.replica.id}" installed the leader's snapshot at index ` +
            `${ready.snapshot.index} (${ready.snapshot.kv.kvs.length} keys), stored in ` +
            `${Math.round(performance.now() - started)} ms`,
        );
      }
      // Committed means on a majority of disks (the core counts this replica's own copy only up
      // to `stableTo`), whether or not this disk is among them: a `synced` says no more.
      const later: Message[] = [];
      for (const m of ready.messages) {
        const early = !barrier && (
          (this.#ackAfterWrite && m.type === "proposeReply") ||
          m.type === "append" || m.type === "synced"
        );
        if (early) this.#send(m);
        else later.push(m);
      }
      // Watch events carry applied, so committed, entries: on a majority of disks already, they
      // promise nothing this Ready's fdatasync adds (the argument of `synced`).
      let applied = ready.applied.length > 0;
      if (applied && !barrier) {
        for (const [id, w] of this.#watches) this.#pump(id, w);
        applied = false;
      }
      // A leader's entries whose appends all left early still need the fdatasync that lets it
      // count itself. Not a follower's: its entries come with append replies that wait for one,
      // and a witness record alone starts none (`#syncLeftOver`).
      const unstable = this.replica.role === "leader" && mark.index > this.replica.stableIndex;
      if (later.length > 0 || applied || unstable) {
        let sent!: () => void;
        const next = new Promise<void>((resolve) => sent = resolve);
        const entry: OutboxEntry = { later, applied, settled: false, sent };
        this.#outboxQueue.push(entry);
        const settle = () => {
          entry.settled = true;
          this.#flushOutbox();
        };
        this.#durable().then(settle, (error) => {
          this.#failStorage(error); // the replica stopped: nothing more is sent
          settle();
        });
        this.#outbox = next;
        if (barrier) await next;
      } else if (barrier) {
        await this.#outbox.catch(() => {});
        await this.#durable().catch((error) => this.#failStorage(error));
      }
      // Connections write what was queued in a microtask (one write per connection per turn,
      // wire.ts): let those writes start before the next Ready is built and submitted.
      await Promise.resolve();
    }
  }

  /** Send what the settled Readies at the head of the outbox hold, in Ready order, in one go:
   * the Readies one fdatasync covers settle in the same run of microtasks, and their frames to
   * one peer (a follower's append replies) are queued before the connection's write starts, so
   * they leave in one write and the peer wakes once for them (wire.ts `FrameConn.sendFrame`). A
   * chain of awaits per Ready let each one's frames go in a write of their own. */
  #flushOutbox(): void {
    const queue = this.#outboxQueue;
    while (queue.length > 0 && queue[0].settled) {
      const entry = queue.shift()!;
      try {
        if (!this.#closed) {
          for (const m of entry.later) this.#send(m);
          if (entry.applied) { for (const [id, w] of this.#watches) this.#pump(id, w); }
        }
      } catch (error) {
        // Not expected (encoding errors are caught per frame): the rest of the queue still goes.
        this.#log(
          `curp: replica "${this.replica.id}" failed sending after an fdatasync: ` +
            `${(error as Error).message}`,
        );
      }
      entry.sent();
    }
  }

  /** A Ready whose messages all left early (a witness's record and its answer) starts no
   * fdatasync: the next Ready that needs one covers it (an append of the same command, within a
   * round trip under load). Idle, the tick starts it, so a record waits at most one tick for the
   * disk. */
  #syncLeftOver(): void {
    if (this.#closed || this.#draining !== undefined || !this.#storage.unsynced) return;
    this.#durable().catch((error) => this.#failStorage(error));
  }

  /** Storage `durable`, then the core told how far the log is durable (core.ts `stableTo`): what
   * was written when it was called is on disk once it resolves. A leader may commit more then. */
  #durable(): Promise<void> {
    const mark = this.#written;
    return this.#storage.durable().then(() => {
      if (this.#closed) return;
      this.replica.stableTo(mark.index, mark.term);
      if (this.replica.hasReady()) this.#scheduleDrain();
    });
  }

  #failStorage(error: unknown): void {
    if (this.#closed) return;
    this.#log(
      `curp: replica "${this.replica.id}" stops: storage in "${this.#storage.dir}" failed: ` +
        `${(error as Error).message}; restart it from its data directory`,
    );
    this.#stop(error);
  }

  #send(m: Message): void {
    this.messagesOut[m.type] = (this.messagesOut[m.type] ?? 0) + 1;
    if (m.type === "proposeReply" && m.leaderId === this.replica.id) {
      if (m.speculative !== undefined) this.fastReplies++;
      else this.slowReplies++;
    }
    if (m.type === "snapshot" && m.piece === 0) {
      this.#log(
        `curp: leader "${m.from}" sends "${m.to}" its state at index ${m.index}, in pieces`,
      );
    }
    const link = this.#links.get(m.to);
    if (link !== undefined) {
      link.send(m);
      return;
    }
    const client = this.#clients.get(m.to);
    if (client === undefined) return;
    if (client.closed) {
      this.#clients.delete(m.to);
      return;
    }
    client.send(m);
  }

  /** Stop serving; resolves when the persist in progress has finished and the log is closed. */
  async close(): Promise<void> {
    if (!this.#closed) this.#stop(undefined);
    await this.#draining;
    await this.#outbox.catch(() => {});
    await this.#storage.close();
  }

  #stop(error: unknown): void {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#timer);
    try {
      this.#listener.close();
    } catch { /* closed */ }
    for (const link of this.#links.values()) link.close();
    for (const c of this.#conns) c.close();
    if (error === undefined) this.#stopped.resolve();
    else this.#stopped.reject(error);
  }
}

/** Ask one replica for its status over TCP; rejects after `timeoutMs`. */
export async function fetchStatus(address: string, timeoutMs = 2000): Promise<ReplicaStatus> {
  const a = parseAddress(address);
  const conn = await Deno.connect({ hostname: a.hostname, port: a.port });
  const fc = new FrameConn(conn, `to ${address}`, () => {});
  try {
    return await new Promise<ReplicaStatus>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`Replica ${address} did not answer status within ${timeoutMs} ms`)),
        timeoutMs,
      );
      fc.onClose(() => {
        clearTimeout(timer);
        reject(new Error(`Replica ${address} closed the connection`));
      });
      void fc.readLoop((body) => {
        const b = body as { type: string; status?: ReplicaStatus };
        if (b.type === "statusReply" && b.status) {
          clearTimeout(timer);
          resolve(b.status);
        }
      });
      fc.send({ type: "status" });
    });
  } finally {
    fc.close();
  }
}
