/**
 * CurpKV: the MetaKV interface over a cluster of `skyfs meta serve` replicas, driving pure
 * `ClientCore`s (client_core.ts) with TCP links and a real clock.
 *
 * One ClientCore has one command outstanding (what makes (client, seq) dedup sound), so the store
 * keeps a bounded set of them and queues callers beyond it. A command unanswered within the
 * timeout rejects with an error naming the cluster; its core is dropped (a fresh client id
 * replaces it), since its command may still commit later.
 * @module
 */

import { DurationHistogram } from "../../duration_histogram.ts";
import { monotonicSeconds } from "../../io/libc.ts";
import {
  CompactedError,
  type DeleteRangeRequest,
  type DeleteRangeResponse,
  type KeyRange,
  type LeaseGrantResponse,
  type MetaKV,
  MetaUnavailableError,
  type PutRequest,
  type PutResponse,
  type RangeRequest,
  type RangeResponse,
  type TxnRequest,
  type TxnResponse,
  type Watcher,
  type WatchEvent,
  type WatchOptions,
} from "../kv.ts";
import { ClientCore, type Completion, type SubmitOptions } from "./client_core.ts";
import { type CommandResult, isReadOnly, keyString } from "./command.ts";
import type { Message } from "./core.ts";
import { fetchStatus, type ReplicaStatus } from "./server.ts";
import { encodeFramesSharing, Link, parseAddress } from "./wire.ts";

export interface CurpKVOptions {
  /** Milliseconds before an unanswered command rejects. Default 10000 (a mount takes config
   * curp.timeout_ms, SKYFS_CURP_TIMEOUT_MS: tests that lose the quorum shorten the wait). */
  timeoutMs?: number;
  /** Milliseconds per client tick; a command is resent to every replica every 10 ticks. Default 50. */
  tickMs?: number;
  /** Most commands in flight at once (one per client session). Default 16. */
  maxSessions?: number;
  /** Which commands may complete on the fast path (one round trip, revisions 0 in the result):
   * "marked" = transactions with `revisionsUnused` (what the namespace sends); true = every
   * transaction (benchmarks); false = none. Lease and compaction commands never do. Default
   * "marked" (a mount: false when config curp.fast_path is false, SKYFS_CURP_FAST_PATH=0). */
  fastPath?: boolean | "marked";
  /** Read-only transactions (ranges and compares only) go outside the log: the leader answers
   * from its applied state once a majority confirms its term (core.ts, `#onRead`), one round
   * trip with no fsync anywhere. False sends them through the log as commands. Default true. */
  readsOutsideLog?: boolean;
  /** Called after every command with one line: its path (read, fast, slow), milliseconds from
   * submit to completion, and the keys it compared, read and wrote. For finding where an
   * operation's time goes (`SKYFS_DEBUG=meta` on a mount); default none. */
  trace?: (line: string) => void;
  /** Replica id -> address to connect to instead of the one the cluster advertises (a proxy or
   * NAT in between). Default none. */
  routes?: Record<string, string>;
  /** Group commit: write transactions in flight (each its own command, or a batch) before
   * further ones are gathered; the gathered ones go as ONE batch command (`Command.batch`; two
   * when some may take the fast path and some need revisions) when one in flight completes, or
   * at once when `maxBatch` are gathered. A transaction arriving
   * with fewer in flight and nothing gathered is sent at once, alone (no added latency at one
   * client). 0 = never batch (every transaction its own command, as before). Default 1 (a mount:
   * config curp.batch_in_flight, SKYFS_CURP_BATCH_IN_FLIGHT). Off against replicas whose status
   * does not say `batches` (earlier builds). */
  batchInFlight?: number;
  /** Most transactions in one batch command. Default 64. */
  maxBatch?: number;
  log?: (line: string) => void;
}

type WatchFrame =
  | { type: "watchStarted"; watchId: number; startRevision: number }
  | { type: "watchEvents"; watchId: number; revision: number; events: WatchEvent[] }
  | { type: "watchError"; watchId: number; compactRevision?: number; error?: string };

/** A command that got no answer in time: no quorum reachable, or the cluster is overloaded. */
export class CurpTimeoutError extends MetaUnavailableError {
  override name = "CurpTimeoutError";
}

interface ClientWatch {
  id: number;
  key: Uint8Array;
  rangeEnd: Uint8Array | undefined;
  prevKv: boolean;
  /** Next revision to deliver; undefined until a replica pinned the start. */
  next: number | undefined;
  afterRevision: number;
  onEvents: (events: WatchEvent[], revision: number) => void;
  /** Replica serving it and that link's connection generation when subscribed. */
  replica: string | undefined;
  generation: number;
}

/** A write transaction waiting for the next batch command (`batchInFlight`). */
interface Gathered {
  txn: TxnRequest;
  /** It may complete on the fast path (`revisionsUnused` under "marked"): such ones are batched
   * apart from the others, which wait for the commit. */
  fast: boolean;
  resolve: (r: TxnResponse) => void;
  reject: (e: Error) => void;
}

interface Pending {
  core: ClientCore;
  /** monotonicSeconds() at submission, for the commit duration histogram. */
  startedAt: number;
  resolve: (c: Completion) => void;
  reject: (e: Error) => void;
  /** performance.now() past which the command rejects (`timeoutMs`): checked by the client's
   * tick, so a command costs no timer of its own. */
  deadline: number;
}

/** Connect to the cluster that one of `addresses` ("host:port") belongs to. */
export async function openCurpKV(
  addresses: string[],
  options: CurpKVOptions = {},
): Promise<CurpKV> {
  if (addresses.length === 0) throw new RangeError("No CURP replica address given (host:port,...)");
  for (const a of addresses) parseAddress(a);
  const timeoutMs = options.timeoutMs ?? 10_000;
  const deadline = Date.now() + timeoutMs;
  const errors: string[] = [];
  while (Date.now() < deadline) {
    for (const a of addresses) {
      try {
        const status = await fetchStatus(a, Math.min(2000, Math.max(1, deadline - Date.now())));
        const kv = new CurpKV(status, options);
        // Commands sent before the links are up would wait for a retry; a second is plenty.
        const linksDeadline = Date.now() + 1000;
        while (kv.connectedCount() < kv.replicaCount && Date.now() < linksDeadline) {
          await new Promise((r) => setTimeout(r, 5));
        }
        return kv;
      } catch (error) {
        errors.push(`${a}: ${(error as Error).message}`);
      }
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new CurpTimeoutError(
    `No CURP replica of ${addresses.join(",")} answered within ${timeoutMs} ms (${
      errors.slice(-addresses.length).join("; ")
    }): start them with \`skyfs meta serve\``,
  );
}

/** Printable start of a key: bytes outside ASCII as dots. */
function keyText(key: Uint8Array): string {
  let out = "";
  for (const b of key.subarray(0, 32)) out += b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : ".";
  return out;
}

function traceLine(
  txn: TxnRequest,
  options: SubmitOptions,
  completion: Completion,
  startedAt: number,
  session: string,
): string {
  const parts: string[] = [];
  for (const c of txn.compare ?? []) parts.push(`compare ${keyText(c.key)}`);
  for (const op of txn.success ?? []) {
    if ("range" in op) parts.push(`range ${keyText(op.range.key)}`);
    else if ("put" in op) parts.push(`put ${keyText(op.put.key)}`);
    else if ("merge" in op) parts.push(`merge ${keyText(op.merge.key)}`);
    else parts.push(`delete ${keyText(op.deleteRange.key)}`);
  }
  if (options.admin) parts.push(Object.keys(options.admin)[0]);
  const ms = (performance.now() - startedAt).toFixed(2);
  const path = completion.refused ? `${completion.path} (refused)` : completion.path;
  const at = performance.now().toFixed(3);
  return `skyfs: meta @${at} ${path} ${ms} ms: ${parts.join(", ")}; session ${session}`;
}

/** Keys a transaction writes one by one (puts, single-key deletes). Merges are left out: two
 * merges commute, so many sessions merging one directory record need no preference. */
export function writtenKeys(txn: TxnRequest): string[] {
  const keys: string[] = [];
  for (const ops of [txn.success, txn.failure]) {
    for (const op of ops ?? []) {
      if ("put" in op) keys.push(keyString(op.put.key));
      else if ("deleteRange" in op && op.deleteRange.rangeEnd === undefined) {
        keys.push(keyString(op.deleteRange.key));
      }
    }
  }
  return keys;
}

/** Keys where an unsynced write of another session would make a transaction conflict: `written`
 * (what it writes, `writtenKeys`) first, then the ones it compares. */
function pointKeys(txn: TxnRequest, written: string[]): string[] {
  if (txn.compare === undefined || txn.compare.length === 0) return written;
  const keys = written.slice();
  for (const c of txn.compare) keys.push(keyString(c.key));
  return keys;
}

/** How long a key's last writer stays preferred: its command has normally committed and left
 * the witness pools within milliseconds; past this the preference only costs a lookup. */
const WRITER_TTL_MS = 1000;
/** Most keys remembered with their last writer (the oldest go first). */
const WRITERS_MAX = 4096;

/** The key a `sync()` barrier deletes: nobody stores it, so the barrier writes nothing (no
 * revision, no watch event); it only has to go through the log. */
const SYNC_BARRIER_KEY = new TextEncoder().encode("\u0000curp/sync-barrier");

export class CurpKV implements MetaKV {
  /** The replicas' state machine runs `merge` and `baseRevision` compares (kv_machine.ts). */
  readonly merges = true;
  readonly members: Record<string, string>;
  readonly #options: Required<Omit<CurpKVOptions, "log" | "routes" | "trace">>;
  /** Write commands (single or batch) in flight through `#write`. */
  #writesInFlight = 0;
  /** Write transactions waiting for the next batch, in arrival order. */
  #gathered: Gathered[] = [];
  /** Batch commands sent (two or more transactions each), and the transactions they carried. */
  batchCount = 0;
  batchedTxns = 0;
  readonly #trace: ((line: string) => void) | undefined;
  readonly #links = new Map<string, Link>();
  readonly #prefix = crypto.randomUUID().slice(0, 8);
  #nextSession = 0;
  readonly #idle: ClientCore[] = [];
  readonly #busy = new Map<string, Pending>();
  readonly #cores = new Map<string, ClientCore>();
  readonly #waiters: Array<() => void> = [];
  /** Key -> the session whose command last wrote it, and when (performance.now()), oldest
   * first: a later command on the key goes to that session when it is idle, so that it conflicts
   * only with its own client's earlier commands in the witness pools and may still go fast
   * (README "Own earlier commands"). Only a preference: a busy session is never waited for. */
  readonly #writers = new Map<string, { core: ClientCore; at: number }>();
  /** Commands sent to an idle session picked because it last wrote one of their keys. */
  writerPicks = 0;
  /** Session -> when its last write completed (performance.now()): a command that prefers no
   * session takes the idle one that wrote least recently, leaving the others to the commands
   * that follow up their writes. */
  readonly #lastWrite = new WeakMap<ClientCore, number>();
  readonly #timer: ReturnType<typeof setInterval>;
  readonly #log: (line: string) => void;
  #closed = false;
  /** Leader as the replicas last reported it: watches subscribe there first. */
  #leaderId: string | undefined;
  /** Highest revision seen in a committed result: a watch without a start begins after it. */
  #maxRevision = 0;
  /** Compaction this client knows of: a watch from before it throws CompactedError. */
  #compacted = 0;
  #nextWatchId = 1;
  readonly #watches = new Map<number, ClientWatch>();
  fastCount = 0;
  slowCount = 0;
  /** Barrier commands `sync()` proposed (one per sync after fast-path completions). */
  syncBarriers = 0;
  /** Fast-path completions not yet covered by a `sync()` barrier. */
  #fastSinceBarrier = 0;
  /** Commands some witness refused (a conflict with a record in its pool): these cannot go
   * fast; a slow command that nobody refused only lost the race with its own commit. */
  refusedCount = 0;
  /** Read-only transactions answered outside the log (one round trip, no fsync anywhere). */
  readCount = 0;
  /** Reads sent to the leader and one follower that then went to every replica (no answer by
   * the next tick, or the replies named another leader). */
  get readsWidened(): number {
    let n = 0;
    for (const core of this.#cores.values()) n += core.readWidenCount;
    return n;
  }
  /** Time from submission to completion of fast-path (series 0) and slow-path (1) commits. */
  readonly commitDurations = new DurationHistogram(2);

  constructor(status: ReplicaStatus, options: CurpKVOptions = {}) {
    this.members = status.members;
    this.#options = {
      timeoutMs: options.timeoutMs ?? 10_000,
      tickMs: options.tickMs ?? 50,
      maxSessions: options.maxSessions ?? 16,
      fastPath: options.fastPath ?? "marked",
      readsOutsideLog: options.readsOutsideLog ?? true,
      // Replicas of earlier builds would refuse a batch: never send them one.
      batchInFlight: status.batches === true ? options.batchInFlight ?? 1 : 0,
      maxBatch: Math.max(1, options.maxBatch ?? 64),
    };
    const log = options.log ?? ((line: string) => console.error(line));
    this.#log = log;
    this.#trace = options.trace;
    for (const [id, address] of Object.entries(status.members)) {
      const route = options.routes?.[id] ?? address;
      const link = new Link(parseAddress(route), (body) => this.#onFrame(body), log);
      link.connect();
      this.#links.set(id, link);
    }
    this.#timer = setInterval(() => {
      for (const link of this.#links.values()) link.connect();
      const now = performance.now();
      for (const p of this.#busy.values()) {
        if (now >= p.deadline) {
          this.#timeOut(p);
          continue;
        }
        p.core.tick();
        this.#flush(p.core);
      }
      for (const w of this.#watches.values()) {
        const link = w.replica === undefined ? undefined : this.#links.get(w.replica);
        if (link === undefined || !link.connected || link.generation !== w.generation) {
          this.#subscribe(w);
        } else if (
          this.#leaderId !== undefined && w.replica !== this.#leaderId &&
          this.#links.get(this.#leaderId)?.connected
        ) {
          // The cluster elected another leader (its replies say so): follow it. A replica cut
          // off by a partition keeps its connection open and sends nothing, so without this a
          // watch there stalled silently while the rest of the cluster moved on (seen in
          // tests/cluster/zone_loss_test.ts: names created elsewhere never reached this node).
          // The new subscription starts at the next undelivered revision; duplicates are dropped.
          this.#links.get(w.replica!)?.send({
            type: "watchCancel",
            from: this.#prefix,
            watchId: w.id,
          });
          this.#subscribe(w);
        }
      }
    }, this.#options.tickMs);
  }

  get replicaCount(): number {
    return this.#links.size;
  }

  /** Replicas this client currently holds a connection to. */
  connectedCount(): number {
    let n = 0;
    for (const link of this.#links.values()) if (link.connected) n++;
    return n;
  }

  #onFrame(body: unknown): void {
    const type = (body as { type: string }).type;
    if (type === "watchStarted" || type === "watchEvents" || type === "watchError") {
      return this.#onWatchFrame(body as WatchFrame);
    }
    const m = body as Message;
    if (m.type === "proposeReply" && m.leaderId !== undefined) this.#leaderId = m.leaderId;
    if (m.type === "synced") this.#leaderId = m.from;
    if (m.type === "readReply" && m.leaderId !== undefined) this.#leaderId = m.leaderId;
    if (m.type !== "proposeReply" && m.type !== "synced" && m.type !== "readReply") return;
    const core = this.#cores.get(m.to);
    if (core === undefined) return;
    core.step(m);
    this.#flush(core);
  }

  #flush(core: ClientCore): void {
    const { messages, completions } = core.ready();
    if (messages.length > 1 && messages[0].type === "propose") {
      // One proposal to every replica: the command is encoded once, not once per replica.
      const frames = encodeFramesSharing(messages, "command");
      messages.forEach((m, i) => this.#links.get(m.to)?.sendFrame(frames[i]));
    } else for (const m of messages) this.#links.get(m.to)?.send(m);
    for (const c of completions) {
      const p = this.#busy.get(core.id);
      if (p === undefined) continue;
      this.#busy.delete(core.id);
      const seconds = monotonicSeconds() - p.startedAt;
      if (c.refused) this.refusedCount++;
      if (c.path === "fast") {
        this.fastCount++;
        this.#fastSinceBarrier++;
        this.commitDurations.observe(seconds, 0);
      } else if (c.path === "read") this.readCount++;
      else {
        this.slowCount++;
        this.commitDurations.observe(seconds, 1);
      }
      if (c.result?.ok && c.result.txn.revision > this.#maxRevision) {
        this.#maxRevision = c.result.txn.revision;
      }
      this.#release(core);
      p.resolve(c);
    }
  }

  /** An idle session, taken out of the idle stack: the one that last wrote one of `keys`
   * (recently), else the one that wrote least recently; undefined if none is idle. */
  #takeSession(keys: string[]): ClientCore | undefined {
    if (this.#writers.size === 0 || this.#idle.length < 2) return this.#idle.pop();
    const now = performance.now();
    for (const key of keys) {
      const w = this.#writers.get(key);
      if (w === undefined) continue;
      if (now - w.at > WRITER_TTL_MS) {
        this.#writers.delete(key);
        continue;
      }
      const i = this.#idle.indexOf(w.core);
      if (i < 0) continue; // busy, or dropped after a timeout
      this.writerPicks++;
      if (i === this.#idle.length - 1) return this.#idle.pop();
      return this.#idle.splice(i, 1)[0];
    }
    // None: the idle session that wrote least recently (the top of the stack on a tie).
    let best = this.#idle.length - 1;
    let bestAt = this.#lastWrite.get(this.#idle[best]) ?? -Infinity;
    for (let i = best - 1; i >= 0; i--) {
      const at = this.#lastWrite.get(this.#idle[i]) ?? -Infinity;
      if (at < bestAt) [best, bestAt] = [i, at];
    }
    if (best === this.#idle.length - 1) return this.#idle.pop();
    return this.#idle.splice(best, 1)[0];
  }

  #noteWriter(keys: string[], core: ClientCore): void {
    if (keys.length === 0) return;
    const at = performance.now();
    this.#lastWrite.set(core, at);
    for (const key of keys) {
      this.#writers.delete(key); // to the end: the map stays in time order
      this.#writers.set(key, { core, at });
    }
    while (this.#writers.size > WRITERS_MAX) {
      this.#writers.delete(this.#writers.keys().next().value!);
    }
  }

  async #acquire(keys: string[] = []): Promise<ClientCore> {
    while (true) {
      if (this.#closed) throw new Error("CurpKV is closed");
      const idle = this.#takeSession(keys);
      if (idle !== undefined) return idle;
      if (this.#cores.size < this.#options.maxSessions) {
        const core = new ClientCore({
          id: `${this.#prefix}-${this.#nextSession++}`,
          replicas: Object.keys(this.members),
          retryTicks: 10,
          fastPath: this.#options.fastPath === true,
        });
        this.#cores.set(core.id, core);
        return core;
      }
      await new Promise<void>((r) => this.#waiters.push(r));
    }
  }

  /** A command past its deadline: it may still commit, so its session cannot be reused for
   * another seq; a fresh one replaces it. */
  #timeOut(p: Pending): void {
    this.#busy.delete(p.core.id);
    this.#cores.delete(p.core.id);
    this.#waiters.shift()?.();
    p.reject(
      new CurpTimeoutError(
        `CURP cluster ${Object.values(this.members).join(",")} did not answer within ` +
          `${this.#options.timeoutMs} ms (no quorum? check \`skyfs meta status\`)`,
      ),
    );
  }

  #release(core: ClientCore): void {
    this.#idle.push(core);
    this.#waiters.shift()?.();
  }

  /** Run one transaction through the cluster; rejects on refusal or timeout. */
  async #run(txn: TxnRequest, options: SubmitOptions = {}): Promise<TxnResponse> {
    const result = await this.#runCommand(txn, options);
    return result.txn;
  }

  async #runCommand(
    txn: TxnRequest,
    options: SubmitOptions,
  ): Promise<Extract<CommandResult, { ok: true }>> {
    const startedAt = performance.now();
    const batch = options.admin === undefined ? options.batch : undefined;
    const reads = options.admin === undefined && batch === undefined &&
      this.#options.readsOutsideLog && isReadOnly(txn);
    // Written keys once: the session choice and, after the commit, its writer memory use them.
    const written = reads || options.admin !== undefined
      ? []
      : batch === undefined
      ? writtenKeys(txn)
      : batch.flatMap(writtenKeys);
    const core = await this.#acquire(
      reads || options.admin !== undefined
        ? []
        : batch === undefined
        ? pointKeys(txn, written)
        : batch.flatMap((t) => pointKeys(t, writtenKeys(t))),
    );
    const completion = await new Promise<Completion>((resolve, reject) => {
      this.#busy.set(core.id, {
        core,
        resolve,
        reject,
        deadline: startedAt + this.#options.timeoutMs,
        startedAt: monotonicSeconds(),
      });
      if (reads) {
        // To the leader and one follower (ClientCore's ReadOptions), when the leader is known
        // and connected; otherwise to every replica.
        const leader = this.#leaderId;
        if (leader !== undefined && this.#links.get(leader)?.connected === true) {
          const followers: string[] = [];
          for (const [id, link] of this.#links) {
            if (id !== leader && link.connected) followers.push(id);
          }
          core.submitRead(txn, { leader, followers });
        } else core.submitRead(txn);
      } else core.submit(txn, options);
      this.#flush(core);
    });
    if (this.#trace) {
      if (batch === undefined) this.#trace(traceLine(txn, options, completion, startedAt, core.id));
      else {
        batch.forEach((t, i) =>
          this.#trace!(
            traceLine(
              t,
              options,
              completion,
              startedAt,
              `${core.id}, batch ${i + 1}/${batch.length}`,
            ),
          )
        );
      }
    }
    if (completion.path !== "read" && options.admin === undefined) {
      this.#noteWriter(written, core);
    }
    const result = completion.result;
    if (result === undefined) {
      throw new Error(`CURP command ${core.id}#${completion.seq} completed without a result`);
    }
    if (!result.ok) throw new Error(result.error);
    return result;
  }

  /** `revisionsUnused` requests take the fast path (one round trip when nothing conflicts). */
  txn(request: TxnRequest): Promise<TxnResponse> {
    const marked = this.#options.fastPath === "marked" && request.revisionsUnused === true;
    return this.#write(request, marked);
  }

  /**
   * Group commit (`batchInFlight`): a write transaction is sent at once, alone, while fewer than
   * `batchInFlight` writes are in flight and none is gathered; otherwise it joins the gathered
   * ones, which go as one batch command (one of those marked fast, one of the others) when a
   * write in flight completes (or when `maxBatch` are gathered). Replicas run a batch's transactions in order, each as if proposed alone, so
   * each caller gets the result it would have had: the transactions were concurrent, and any
   * order of concurrent operations is a linearizable one. Read-only transactions go outside the
   * log as before.
   */
  #write(txn: TxnRequest, fast: boolean): Promise<TxnResponse> {
    const options: SubmitOptions = fast ? { fastPath: true } : {};
    const limit = this.#options.batchInFlight;
    if (limit === 0 || (this.#options.readsOutsideLog && isReadOnly(txn))) {
      return this.#run(txn, options);
    }
    if (this.#writesInFlight < limit && this.#gathered.length === 0) {
      this.#writesInFlight++;
      const done = this.#run(txn, options);
      done.then(this.#writeDone, this.#writeDone);
      return done;
    }
    if (this.#closed) return Promise.reject(new Error("CurpKV is closed"));
    return new Promise<TxnResponse>((resolve, reject) => {
      this.#gathered.push({ txn, fast, resolve, reject });
      if (this.#gathered.length >= this.#options.maxBatch) this.#sendGathered(true);
    });
  }

  readonly #writeDone = () => {
    this.#writesInFlight--;
    this.#sendGathered(false);
  };

  /** Send what is gathered (in batches of at most `maxBatch`) while fewer than `batchInFlight`
   * writes are in flight, or one batch regardless when `force`. */
  #sendGathered(force: boolean): void {
    while (
      this.#gathered.length > 0 && (force || this.#writesInFlight < this.#options.batchInFlight)
    ) {
      force = false;
      const group = this.#gathered.splice(0, this.#options.maxBatch);
      // Those that may complete on the fast path apart from those that need revisions (which
      // wait for the commit): one slow transaction would make the whole batch wait.
      const fast = group.filter((g) => g.fast);
      for (const part of [fast, group.filter((g) => !g.fast)]) {
        if (part.length === 0) continue;
        this.#writesInFlight++;
        this.#runBatch(part).then(this.#writeDone);
      }
    }
  }

  /** Run gathered transactions, all marked fast or none, as one command (a lone one as an
   * ordinary command); settles each with its own result. Never rejects. */
  async #runBatch(group: Gathered[]): Promise<void> {
    const options: SubmitOptions = group[0].fast ? { fastPath: true } : {};
    if (group.length === 1) {
      const g = group[0];
      await this.#run(g.txn, options).then(g.resolve, g.reject);
      return;
    }
    this.batchCount++;
    this.batchedTxns += group.length;
    let results: CommandResult[];
    try {
      const r = await this.#runCommand({}, { ...options, batch: group.map((g) => g.txn) });
      if (r.batch === undefined || r.batch.length !== group.length) {
        throw new Error(
          `CURP batch of ${group.length} answered without ${group.length} results (a replica of an earlier build?)`,
        );
      }
      results = r.batch;
    } catch (error) {
      for (const g of group) g.reject(error as Error);
      return;
    }
    results.forEach((r, i) => {
      if (!r.ok) return group[i].reject(new Error(r.error));
      if (r.txn.revision > this.#maxRevision) this.#maxRevision = r.txn.revision;
      group[i].resolve(r.txn);
    });
  }

  async range(request: RangeRequest): Promise<RangeResponse> {
    const r = await this.#run({ success: [{ range: request }] });
    return (r.responses[0] as { range: RangeResponse }).range;
  }

  async put(request: PutRequest): Promise<PutResponse & { revision: number }> {
    const r = await this.#write({ success: [{ put: request }] }, false);
    return { ...(r.responses[0] as { put: PutResponse }).put, revision: r.revision };
  }

  async deleteRange(
    request: DeleteRangeRequest,
  ): Promise<DeleteRangeResponse & { revision: number }> {
    const r = await this.#write({ success: [{ deleteRange: request }] }, false);
    const d = (r.responses[0] as { deleteRange: DeleteRangeResponse }).deleteRange;
    return { ...d, revision: r.revision };
  }

  /** A read-only empty transaction (outside the log, see `readsOutsideLog`): linearizable. */
  async revision(): Promise<number> {
    return (await this.#run({})).revision;
  }

  /**
   * Durable against power loss: a command completed on the fast path may rest in witness records
   * that are written but not yet fdatasync'd (a replica answers once its record is in the page
   * cache, curp.witness_ack_after_write; a kill -9 keeps it, a power loss may not). So when this
   * client completed any since the last barrier, propose one on the slow path: it commits after
   * every command this client completed (they sit before it in the leader's log, or a new leader
   * replayed them before its no-op), and a commit means fdatasync'd on a majority (log appends
   * are always synced before they are acknowledged). Slow-path completions were durable already.
   */
  async sync(): Promise<void> {
    const covered = this.#fastSinceBarrier;
    if (covered === 0) return;
    const startedAt = performance.now();
    await this.#run({ success: [{ deleteRange: { key: SYNC_BARRIER_KEY } }] }, {
      fastPath: false,
    });
    this.#fastSinceBarrier = Math.max(0, this.#fastSinceBarrier - covered);
    // Every write completed before the barrier has committed: no session needs preferring for it.
    for (const [key, w] of this.#writers) {
      if (w.at >= startedAt) break;
      this.#writers.delete(key);
    }
    this.syncBarriers++;
  }

  /** Served by one replica (the leader when known) from its history, then live; on a lost
   * connection it resubscribes elsewhere from the next undelivered revision, so no event is lost
   * or repeated. Without a start it begins after every write this client has seen complete and
   * after the serving replica's state when the request reaches it (sent on the link that later
   * proposals use, so a write issued after watch() returns is always included). */
  watch(
    range: KeyRange,
    options: Omit<WatchOptions, "rangeEnd">,
    onEvents: (events: WatchEvent[], revision: number) => void,
  ): Watcher {
    if (options.startRevision !== undefined && options.startRevision < this.#compacted) {
      throw new CompactedError(this.#compacted);
    }
    const w: ClientWatch = {
      id: this.#nextWatchId++,
      key: range.key.slice(),
      rangeEnd: range.rangeEnd?.slice(),
      prevKv: options.prevKv === true,
      next: options.startRevision,
      afterRevision: this.#maxRevision,
      onEvents,
      replica: undefined,
      generation: -1,
    };
    this.#watches.set(w.id, w);
    this.#subscribe(w);
    return {
      cancel: () => {
        if (!this.#watches.delete(w.id)) return;
        if (w.replica !== undefined) {
          this.#links.get(w.replica)?.send({
            type: "watchCancel",
            from: this.#prefix,
            watchId: w.id,
          });
        }
      },
    };
  }

  #subscribe(w: ClientWatch): void {
    const ids = Object.keys(this.members);
    const leader = this.#leaderId !== undefined && this.#links.get(this.#leaderId)?.connected
      ? this.#leaderId
      : undefined;
    const id = leader ?? ids.find((i) => this.#links.get(i)!.connected);
    w.replica = undefined;
    if (id === undefined) return; // the tick retries
    const link = this.#links.get(id)!;
    const sent = link.send({
      type: "watch",
      from: this.#prefix,
      to: id,
      watchId: w.id,
      key: w.key,
      ...(w.rangeEnd !== undefined ? { rangeEnd: w.rangeEnd } : {}),
      ...(w.next !== undefined ? { startRevision: w.next } : {}),
      afterRevision: w.afterRevision,
      prevKv: w.prevKv,
    });
    if (!sent) return;
    w.replica = id;
    w.generation = link.generation;
  }

  #onWatchFrame(f: WatchFrame): void {
    const w = this.#watches.get(f.watchId);
    if (w === undefined) return;
    if (f.type === "watchStarted") {
      w.next ??= f.startRevision;
      return;
    }
    if (f.type === "watchError") {
      this.#watches.delete(w.id);
      if (f.compactRevision !== undefined) {
        this.#compacted = Math.max(this.#compacted, f.compactRevision);
      }
      this.#log(
        `curp: watch ${w.id} stopped: ${
          f.compactRevision !== undefined
            ? `revision ${w.next} is compacted (oldest ${f.compactRevision})`
            : f.error
        }`,
      );
      return;
    }
    if (w.next === undefined || f.revision < w.next) return; // a duplicate after resubscribing
    w.next = f.revision + 1;
    w.onEvents(f.events, f.revision);
  }

  async leaseGrant(ttlSeconds: number): Promise<LeaseGrantResponse> {
    // The id is chosen here so that a retried grant is the same command (exactly-once).
    const id = 1 + Math.floor(Math.random() * 2 ** 48);
    const r = await this.#runCommand({}, { admin: { leaseGrant: { id, ttlSeconds } } });
    return { id, ttlSeconds: r.ttlSeconds ?? ttlSeconds };
  }

  async leaseRevoke(id: number): Promise<void> {
    await this.#runCommand({}, { admin: { leaseRevoke: { id } } });
  }

  async leaseKeepAlive(id: number): Promise<number> {
    const r = await this.#runCommand({}, { admin: { leaseKeepAlive: { id } } });
    return r.ttlSeconds ?? 0;
  }

  async compact(revision: number): Promise<void> {
    await this.#runCommand({}, { admin: { compact: { revision } } });
    this.#compacted = Math.max(this.#compacted, revision);
  }

  close(): Promise<void> {
    if (this.#closed) return Promise.resolve();
    this.#closed = true;
    clearInterval(this.#timer);
    this.#watches.clear();
    for (const link of this.#links.values()) link.close();
    for (const p of this.#busy.values()) {
      p.reject(new Error("CurpKV closed with the command outstanding"));
    }
    this.#busy.clear();
    for (const g of this.#gathered.splice(0)) {
      g.reject(new Error("CurpKV closed with the transaction gathered for a batch"));
    }
    for (const w of this.#waiters.splice(0)) w();
    return Promise.resolve();
  }
}
