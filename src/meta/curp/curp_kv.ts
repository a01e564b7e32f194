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

import type {
  DeleteRangeRequest,
  DeleteRangeResponse,
  KeyRange,
  LeaseGrantResponse,
  MetaKV,
  PutRequest,
  PutResponse,
  RangeRequest,
  RangeResponse,
  TxnRequest,
  TxnResponse,
  Watcher,
  WatchEvent,
  WatchOptions,
} from "../kv.ts";
import { ClientCore, type Completion } from "./client_core.ts";
import type { Message } from "./core.ts";
import { fetchStatus, type ReplicaStatus } from "./server.ts";
import { Link, parseAddress } from "./wire.ts";

export interface CurpKVOptions {
  /** Milliseconds before an unanswered command rejects. Default 10000. */
  timeoutMs?: number;
  /** Milliseconds per client tick; a command is resent to every replica every 10 ticks. Default 50. */
  tickMs?: number;
  /** Most commands in flight at once (one per client session). Default 16. */
  maxSessions?: number;
  /** Accept fast-path results, whose revisions are 0. Default false: MetaKV callers (the
   * namespace's compares, the conformance suite) need revisions, which only the commit gives. */
  fastPath?: boolean;
  /** Replica id -> address to connect to instead of the one the cluster advertises (a proxy or
   * NAT in between). Default none. */
  routes?: Record<string, string>;
  log?: (line: string) => void;
}

/** A command that got no answer in time: no quorum reachable, or the cluster is overloaded. */
export class CurpTimeoutError extends Error {
  override name = "CurpTimeoutError";
}

interface Pending {
  core: ClientCore;
  resolve: (c: Completion) => void;
  reject: (e: Error) => void;
  timer: ReturnType<typeof setTimeout>;
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

export class CurpKV implements MetaKV {
  readonly members: Record<string, string>;
  readonly #options: Required<Omit<CurpKVOptions, "log" | "routes">>;
  readonly #links = new Map<string, Link>();
  readonly #prefix = crypto.randomUUID().slice(0, 8);
  #nextSession = 0;
  readonly #idle: ClientCore[] = [];
  readonly #busy = new Map<string, Pending>();
  readonly #cores = new Map<string, ClientCore>();
  readonly #waiters: Array<() => void> = [];
  readonly #timer: ReturnType<typeof setInterval>;
  #closed = false;
  fastCount = 0;
  slowCount = 0;

  constructor(status: ReplicaStatus, options: CurpKVOptions = {}) {
    this.members = status.members;
    this.#options = {
      timeoutMs: options.timeoutMs ?? 10_000,
      tickMs: options.tickMs ?? 50,
      maxSessions: options.maxSessions ?? 16,
      fastPath: options.fastPath ?? false,
    };
    const log = options.log ?? ((line: string) => console.error(line));
    for (const [id, address] of Object.entries(status.members)) {
      const route = options.routes?.[id] ?? address;
      const link = new Link(parseAddress(route), (body) => this.#onFrame(body), log);
      link.connect();
      this.#links.set(id, link);
    }
    this.#timer = setInterval(() => {
      for (const link of this.#links.values()) link.connect();
      for (const p of this.#busy.values()) {
        p.core.tick();
        this.#flush(p.core);
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
    const m = body as Message;
    if (m.type !== "proposeReply" && m.type !== "synced") return;
    const core = this.#cores.get(m.to);
    if (core === undefined) return;
    core.step(m);
    this.#flush(core);
  }

  #flush(core: ClientCore): void {
    const { messages, completions } = core.ready();
    for (const m of messages) this.#links.get(m.to)?.send(m);
    for (const c of completions) {
      const p = this.#busy.get(core.id);
      if (p === undefined) continue;
      this.#busy.delete(core.id);
      clearTimeout(p.timer);
      if (c.path === "fast") this.fastCount++;
      else this.slowCount++;
      this.#release(core);
      p.resolve(c);
    }
  }

  async #acquire(): Promise<ClientCore> {
    while (true) {
      if (this.#closed) throw new Error("CurpKV is closed");
      const idle = this.#idle.pop();
      if (idle !== undefined) return idle;
      if (this.#cores.size < this.#options.maxSessions) {
        const core = new ClientCore({
          id: `${this.#prefix}-${this.#nextSession++}`,
          replicas: Object.keys(this.members),
          retryTicks: 10,
          fastPath: this.#options.fastPath,
        });
        this.#cores.set(core.id, core);
        return core;
      }
      await new Promise<void>((r) => this.#waiters.push(r));
    }
  }

  #release(core: ClientCore): void {
    this.#idle.push(core);
    this.#waiters.shift()?.();
  }

  /** Run one transaction through the cluster; rejects on refusal or timeout. */
  async #run(txn: TxnRequest): Promise<TxnResponse> {
    const core = await this.#acquire();
    const completion = await new Promise<Completion>((resolve, reject) => {
      const timer = setTimeout(() => {
        // The command may still commit; this session cannot be reused for another seq.
        this.#busy.delete(core.id);
        this.#cores.delete(core.id);
        this.#waiters.shift()?.();
        reject(
          new CurpTimeoutError(
            `CURP cluster ${Object.values(this.members).join(",")} did not answer within ` +
              `${this.#options.timeoutMs} ms (no quorum? check \`skyfs meta status\`)`,
          ),
        );
      }, this.#options.timeoutMs);
      this.#busy.set(core.id, { core, resolve, reject, timer });
      core.submit(txn);
      this.#flush(core);
    });
    const result = completion.result;
    if (result === undefined) {
      throw new Error(`CURP command ${core.id}#${completion.seq} completed without a result`);
    }
    if (!result.ok) throw new Error(result.error);
    return result.txn;
  }

  txn(request: TxnRequest): Promise<TxnResponse> {
    return this.#run(request);
  }

  async range(request: RangeRequest): Promise<RangeResponse> {
    const r = await this.#run({ success: [{ range: request }] });
    return (r.responses[0] as { range: RangeResponse }).range;
  }

  async put(request: PutRequest): Promise<PutResponse & { revision: number }> {
    const r = await this.#run({ success: [{ put: request }] });
    return { ...(r.responses[0] as { put: PutResponse }).put, revision: r.revision };
  }

  async deleteRange(
    request: DeleteRangeRequest,
  ): Promise<DeleteRangeResponse & { revision: number }> {
    const r = await this.#run({ success: [{ deleteRange: request }] });
    const d = (r.responses[0] as { deleteRange: DeleteRangeResponse }).deleteRange;
    return { ...d, revision: r.revision };
  }

  /** A read-only empty transaction through the log: linearizable. */
  async revision(): Promise<number> {
    return (await this.#run({})).revision;
  }

  /** Nothing to do: a command completes only once a quorum fsync'd it (log or witness pools). */
  sync(): Promise<void> {
    return Promise.resolve();
  }

  watch(
    _range: KeyRange,
    _options: Omit<WatchOptions, "rangeEnd">,
    _onEvents: (events: WatchEvent[], revision: number) => void,
  ): Watcher {
    throw new Error("CURP backend: watch is not implemented yet (src/meta/curp/README.md)");
  }

  leaseGrant(_ttlSeconds: number): Promise<LeaseGrantResponse> {
    return Promise.reject(new Error("CURP backend: leases are not implemented yet"));
  }

  leaseRevoke(_id: number): Promise<void> {
    return Promise.reject(new Error("CURP backend: leases are not implemented yet"));
  }

  leaseKeepAlive(_id: number): Promise<number> {
    return Promise.reject(new Error("CURP backend: leases are not implemented yet"));
  }

  compact(_revision: number): Promise<void> {
    return Promise.reject(new Error("CURP backend: compaction is not implemented yet"));
  }

  close(): Promise<void> {
    if (this.#closed) return Promise.resolve();
    this.#closed = true;
    clearInterval(this.#timer);
    for (const link of this.#links.values()) link.close();
    for (const p of this.#busy.values()) {
      clearTimeout(p.timer);
      p.reject(new Error("CurpKV closed with the command outstanding"));
    }
    this.#busy.clear();
    for (const w of this.#waiters.splice(0)) w();
    return Promise.resolve();
  }
}
