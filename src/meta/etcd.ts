/**
 * EtcdKV: the MetaKV interface over an etcd v3 (or Xline) cluster through the etcd3 npm gRPC
 * client's raw RPC stubs, so that requests map one to one onto etcd's own KV, Lease and Watch.
 * @module
 */

import { Buffer } from "node:buffer";
import { Etcd3 } from "etcd3";
import {
  CompactedError,
  type Compare,
  type DeleteRangeRequest,
  type DeleteRangeResponse,
  type KeyRange,
  type KeyValue,
  type LeaseGrantResponse,
  type MetaKV,
  MetaUnavailableError,
  type PutRequest,
  type PutResponse,
  type RangeRequest,
  type RangeResponse,
  type RequestOp,
  type ResponseOp,
  type TxnRequest,
  type TxnResponse,
  type Watcher,
  type WatchEvent,
  type WatchOptions,
} from "./kv.ts";

export interface EtcdKVOptions {
  /** Milliseconds before a request fails. Default 10000. */
  timeoutMs?: number;
}

// deno-lint-ignore no-explicit-any
type Any = any;

const buf = (b: Uint8Array) => Buffer.from(b.buffer, b.byteOffset, b.byteLength);
const bytes = (b: Buffer | undefined) => new Uint8Array(b ?? []);

function fromKv(kv: Any): KeyValue {
  return {
    key: bytes(kv.key),
    value: bytes(kv.value),
    createRevision: Number(kv.create_revision),
    modRevision: Number(kv.mod_revision),
    version: Number(kv.version),
    lease: Number(kv.lease),
  };
}

const RESULTS = { "==": "Equal", "!=": "NotEqual", "<": "Less", ">": "Greater" } as const;
const TARGETS = {
  version: ["Version", "version"],
  createRevision: ["Create", "create_revision"],
  modRevision: ["Mod", "mod_revision"],
  lease: ["Lease", "lease"],
  value: ["Value", "value"],
} as const;

function toCompare(c: Compare): Any {
  if (c.target === "value" && c.ignore !== undefined) {
    throw new TypeError("etcd has no value compare with ignore (MetaKV.merges is false)");
  }
  const [target, field] = TARGETS[c.target];
  const value = c.target === "value" ? buf(c.value) : c.value;
  return { key: buf(c.key), result: RESULTS[c.result], target, [field]: value };
}

function toRange(r: RangeRequest): Any {
  return {
    key: buf(r.key),
    range_end: r.rangeEnd ? buf(r.rangeEnd) : undefined,
    limit: r.limit ?? 0,
    keys_only: r.keysOnly ?? false,
    count_only: r.countOnly ?? false,
  };
}

function toPut(p: PutRequest): Any {
  return { key: buf(p.key), value: buf(p.value), lease: p.lease ?? 0, prev_kv: p.prevKv ?? false };
}

function toDelete(d: DeleteRangeRequest): Any {
  return {
    key: buf(d.key),
    range_end: d.rangeEnd ? buf(d.rangeEnd) : undefined,
    prev_kv: d.prevKv ?? false,
  };
}

function toOp(op: RequestOp): Any {
  if ("range" in op) return { request_range: toRange(op.range) };
  if ("put" in op) return { request_put: toPut(op.put) };
  if ("merge" in op) throw new TypeError("etcd has no merge operation (MetaKV.merges is false)");
  return { request_delete_range: toDelete(op.deleteRange) };
}

function fromRange(r: Any): RangeResponse {
  return {
    kvs: (r.kvs ?? []).map(fromKv),
    more: !!r.more,
    count: Number(r.count),
    revision: Number(r.header.revision),
  };
}

function fromPut(r: Any): PutResponse {
  return r.prev_kv ? { prevKv: fromKv(r.prev_kv) } : {};
}

function fromDelete(r: Any): DeleteRangeResponse {
  return { deleted: Number(r.deleted), prevKvs: (r.prev_kvs ?? []).map(fromKv) };
}

function fromOp(op: Any, revision: number): ResponseOp {
  if (op.response_range) return { range: { ...fromRange(op.response_range), revision } };
  if (op.response_put) return { put: fromPut(op.response_put) };
  return { deleteRange: fromDelete(op.response_delete_range) };
}

/** Connect to etcd at `endpoints` ("host:port"); checks it answers within the timeout. */
export async function openEtcdKV(
  endpoints: string[],
  options: EtcdKVOptions = {},
): Promise<EtcdKV> {
  const kv = new EtcdKV(endpoints, options);
  try {
    await kv.revision();
  } catch (error) {
    await kv.close();
    // MetaUnavailableError names etcd already ("etcd at ... did not answer ...").
    if (error instanceof MetaUnavailableError) throw new Error(error.message);
    throw new Error(
      `etcd at ${endpoints.join(",")} did not answer: ${(error as Error).message}`,
    );
  }
  return kv;
}

/** A connection-level error (no connection, connection lost, server unavailable): etcd3's
 * marker, `RecoverableError in error` (its `isRecoverableError`), or a raw grpc-js status 14
 * (UNAVAILABLE), which a stream's error event carries uncast. */
function connectionError(error: unknown): boolean {
  return typeof error === "object" && error !== null &&
    (Object.getOwnPropertySymbols(error).some((s) => s.description === "RecoverableError") ||
      (error as { code?: unknown }).code === 14);
}

/** A fault-handling policy that runs the call once: no circuit breaker (etcd3's default kept
 * refusing calls for 5 s after three failures, also after etcd was back) and no retries of its
 * own; `EtcdKV.#call` decides what is retried. */
const runOnce: Any = {
  execute: <T>(fn: (context: { signal: AbortSignal; attempt: number }) => T) =>
    Promise.resolve().then(() => fn({ signal: new AbortController().signal, attempt: 0 })),
};

export class EtcdKV implements MetaKV {
  readonly #client: Any;
  readonly #timeoutMs: number;
  readonly #endpoints: string;
  /** Watches whose create request etcd has not confirmed: writes wait for them, so that a watch
   * created before a write (by this client) sees it, as the embedded store guarantees. */
  readonly #creating = new Set<Promise<void>>();
  #compacted = 0;
  #closed = false;
  readonly #streams = new Set<Any>();

  constructor(endpoints: string[], options: EtcdKVOptions = {}) {
    this.#timeoutMs = options.timeoutMs ?? 10_000;
    this.#endpoints = endpoints.join(",");
    this.#client = new Etcd3({
      hosts: endpoints.map((e) => `http://${e}`),
      dialTimeout: this.#timeoutMs,
      faultHandling: { host: () => runOnce, global: runOnce },
    });
  }

  /**
   * One request, within the timeout. A connection-level error (etcd down or restarting) retries
   * a read, and a write that was never sent (no connection), until the timeout; a write whose
   * connection broke fails at once, its outcome unknown (it may have been applied). Both end as a
   * MetaUnavailableError naming etcd: the mount answers EIO and logs one line.
   */
  async #call<T = Any>(kind: "read" | "write", request: () => Promise<T>): Promise<T> {
    const deadline = Date.now() + this.#timeoutMs;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () =>
          reject(
            new MetaUnavailableError(
              `etcd at ${this.#endpoints} did not answer within ${this.#timeoutMs} ms`,
            ),
          ),
        this.#timeoutMs,
      );
    });
    try {
      for (let pause = 50;; pause = Math.min(pause * 2, 500)) {
        try {
          return await Promise.race([request(), timeout]);
        } catch (error) {
          if (!connectionError(error)) throw error;
          // grpc-js: "14 UNAVAILABLE: No connection established. Last error: ... Resolution
          // note: ..." (never sent), "Connection dropped", "read ECONNRESET" (maybe applied).
          const message = (error as Error).message.split("\n")[0].replace(
            /\.? *Resolution note:.*$/,
            "",
          );
          const why = `etcd at ${this.#endpoints} did not answer: ${message}`;
          const unsent = /No connection established/.test(message);
          if ((kind === "write" && !unsent) || Date.now() + pause >= deadline) {
            throw new MetaUnavailableError(why);
          }
          await Promise.race([new Promise((r) => setTimeout(r, pause)), timeout]);
        }
      }
    } finally {
      clearTimeout(timer);
    }
  }

  async #writesMayStart(): Promise<void> {
    if (this.#creating.size > 0) await Promise.all(this.#creating);
  }

  async range(request: RangeRequest): Promise<RangeResponse> {
    if (request.key.length === 0) throw new RangeError("Key must not be empty");
    return fromRange(await this.#call<Any>("read", () => this.#client.kv.range(toRange(request))));
  }

  async put(request: PutRequest): Promise<PutResponse & { revision: number }> {
    await this.#writesMayStart();
    const r = await this.#call<Any>("write", () => this.#client.kv.put(toPut(request)));
    return { ...fromPut(r), revision: Number(r.header.revision) };
  }

  async deleteRange(
    request: DeleteRangeRequest,
  ): Promise<DeleteRangeResponse & { revision: number }> {
    await this.#writesMayStart();
    const r = await this.#call<Any>(
      "write",
      () => this.#client.kv.deleteRange(toDelete(request)),
    );
    return { ...fromDelete(r), revision: Number(r.header.revision) };
  }

  async txn(request: TxnRequest): Promise<TxnResponse> {
    await this.#writesMayStart();
    // A transaction of reads only (Namespace.get) is retried like a read.
    const ops = [...(request.success ?? []), ...(request.failure ?? [])];
    const kind = ops.every((op) => "range" in op) ? "read" : "write";
    const r = await this.#call<Any>(kind, () =>
      this.#client.kv.txn({
        compare: (request.compare ?? []).map(toCompare),
        success: (request.success ?? []).map(toOp),
        failure: (request.failure ?? []).map(toOp),
      }));
    const revision = Number(r.header.revision);
    return {
      succeeded: !!r.succeeded,
      revision,
      responses: (r.responses ?? []).map((op: Any) => fromOp(op, revision)),
    };
  }

  /**
   * A watch that outlives its stream: when the stream breaks (etcd restarted, connection lost) it
   * is created again, after a pause, from the revision after the last one delivered, so no event
   * is lost or delivered twice (unless etcd compacted that history meanwhile: then the watch
   * resumes at the compaction and logs one line, as events were dropped).
   */
  watch(
    range: KeyRange,
    options: Omit<WatchOptions, "rangeEnd">,
    onEvents: (events: WatchEvent[], revision: number) => void,
  ): Watcher {
    if (options.startRevision !== undefined && options.startRevision < this.#compacted) {
      throw new CompactedError(this.#compacted);
    }
    let cancelled = false;
    let stream: Any;
    /** The first revision not delivered yet (0: from the watch's creation on). */
    let next = options.startRevision ?? 0;
    let created!: () => void;
    const ready = new Promise<void>((resolve) => created = resolve);
    this.#creating.add(ready);
    const done = () => {
      this.#creating.delete(ready);
      created();
    };
    const open = async () => {
      let mine: Any;
      try {
        mine = await this.#client.watchClient.watch();
      } catch {
        done();
        return reopen(undefined);
      }
      stream = mine;
      this.#streams.add(mine);
      if (cancelled || this.#closed) return end(mine);
      mine.on("error", () => reopen(mine));
      mine.on("end", () => reopen(mine));
      mine.on("data", (response: Any) => {
        if (response.created) {
          if (next === 0) next = Number(response.header.revision) + 1;
          done();
        }
        const compactedTo = Number(response.compact_revision ?? 0);
        if (compactedTo > 0 && compactedTo >= next) {
          console.error(
            `skyfs: etcd watch resumed at revision ${compactedTo}: revisions ${next} to ` +
              `${compactedTo - 1} were compacted while it was down`,
          );
          next = compactedTo;
        }
        if (response.canceled) {
          done();
          return reopen(mine);
        }
        if (cancelled || !response.events?.length) return;
        // One callback per revision, in order, as the embedded store delivers them.
        let batch: WatchEvent[] = [];
        let revision = 0;
        for (const e of response.events) {
          const kv = fromKv(e.kv);
          if (kv.modRevision !== revision && batch.length > 0) {
            onEvents(batch, revision);
            batch = [];
          }
          revision = kv.modRevision;
          const event: WatchEvent = { type: e.type === "Delete" ? "delete" : "put", kv };
          if (options.prevKv && e.prev_kv) event.prevKv = fromKv(e.prev_kv);
          batch.push(event);
        }
        if (batch.length > 0 && !cancelled) onEvents(batch, revision);
        next = revision + 1;
      });
      mine.write({
        create_request: {
          key: buf(range.key),
          range_end: range.rangeEnd ? buf(range.rangeEnd) : undefined,
          start_revision: next,
          prev_kv: options.prevKv ?? false,
        },
      });
    };
    const end = (s: Any) => {
      this.#streams.delete(s);
      try {
        s.end();
        s.cancel();
      } catch { /* closed */ }
    };
    let reopening = false;
    /** The stream `s` broke (or none could be made): a new one after a pause. */
    const reopen = (s: Any) => {
      if (s !== undefined) {
        if (s !== stream) return; // an older stream's late event
        end(s);
        stream = undefined;
      }
      if (cancelled || this.#closed || reopening) return;
      reopening = true;
      setTimeout(() => {
        reopening = false;
        if (!cancelled && !this.#closed) void open();
      }, 300);
    };
    void open();
    return {
      cancel: () => {
        cancelled = true;
        done();
        if (stream !== undefined) end(stream);
      },
    };
  }

  async leaseGrant(ttlSeconds: number): Promise<LeaseGrantResponse> {
    // etcd picks 64-bit ids, beyond a JavaScript number's 2^53: choose a safe one ourselves.
    const id = 1 + Math.floor(Math.random() * (2 ** 52));
    const r = await this.#call<Any>(
      "write",
      () => this.#client.leaseClient.leaseGrant({ TTL: ttlSeconds, ID: id }),
    );
    if (r.error) throw new Error(`etcd refused lease ${id}: ${r.error}`);
    return { id: Number(r.ID), ttlSeconds: Number(r.TTL) };
  }

  async leaseRevoke(id: number): Promise<void> {
    await this.#writesMayStart();
    await this.#call<Any>("write", () => this.#client.leaseClient.leaseRevoke({ ID: id }));
  }

  async leaseKeepAlive(id: number): Promise<number> {
    const stream = await this.#call<Any>("read", () => this.#client.leaseClient.leaseKeepAlive());
    try {
      const ttl = await this.#call("write", () =>
        new Promise<number>((resolve, reject) => {
          stream.on("data", (r: Any) => resolve(Number(r.TTL)));
          stream.on("error", reject);
          stream.write({ ID: id });
        }));
      if (ttl <= 0) throw new Error(`Lease ${id} not found (expired or revoked)`);
      return ttl;
    } finally {
      try {
        stream.end();
        stream.cancel();
      } catch { /* closed */ }
    }
  }

  async compact(revision: number): Promise<void> {
    await this.#call<Any>("write", () => this.#client.kv.compact({ revision, physical: true }));
    this.#compacted = Math.max(this.#compacted, revision);
  }

  /** etcd acknowledges a write only after a quorum fsync'd it. */
  sync(): Promise<void> {
    return Promise.resolve();
  }

  async revision(): Promise<number> {
    // A range over one key reads the header's revision through the leader (linearizable).
    const r = await this.#call<Any>(
      "read",
      () => this.#client.kv.range({ key: Buffer.from([0]), count_only: true }),
    );
    return Number(r.header.revision);
  }

  close(): Promise<void> {
    this.#closed = true;
    for (const s of this.#streams) {
      try {
        s.cancel();
      } catch { /* closed */ }
    }
    this.#client.close();
    return Promise.resolve();
  }
}
