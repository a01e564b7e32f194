/**
 * MetaKV: the one interface to metadata storage, with etcd v3 semantics (DESIGN.md section 3).
 *
 * Keys and values are bytes; keys order by unsigned byte comparison. Every successful write
 * transaction advances the store's revision by exactly one, and all keys it writes get that
 * revision as `modRevision`. A read-only transaction does not advance the revision. Backends:
 * embedded (this node, durable), curp (replicated), etcd. One conformance suite runs against all.
 * @module
 */

/** One stored key, as etcd's mvccpb.KeyValue. */
export interface KeyValue {
  key: Uint8Array;
  value: Uint8Array;
  /** Revision of the transaction that created the key (since its last deletion). */
  createRevision: number;
  /** Revision of the last transaction that wrote the key. */
  modRevision: number;
  /** Number of writes since creation: 1 after the first put. */
  version: number;
  /** Lease id the key is attached to, 0 for none. */
  lease: number;
}

/** Select one key, or the range [key, rangeEnd) when rangeEnd is given. */
export interface KeyRange {
  key: Uint8Array;
  /** Exclusive end; `prefixEnd(key)` selects every key with `key` as prefix. */
  rangeEnd?: Uint8Array;
}

export interface RangeRequest extends KeyRange {
  /** At most this many keys, 0 or absent for no limit; `more` tells if some were left out. */
  limit?: number;
  /** Leave `value` empty in the results. Default false. */
  keysOnly?: boolean;
  /** Only count; `kvs` is empty. Default false. */
  countOnly?: boolean;
}

export interface RangeResponse {
  kvs: KeyValue[];
  more: boolean;
  count: number;
  /** Store revision when the read was served. */
  revision: number;
}

export interface PutRequest {
  key: Uint8Array;
  value: Uint8Array;
  /** Attach to this lease (must exist), 0 or absent for none. */
  lease?: number;
  /** Return the previous key-value in the response. Default false. */
  prevKv?: boolean;
  /** The caller hands `key` and `value` over and never changes them afterwards, so a store that
   * keeps entries in memory may keep these very buffers instead of copies. Set only for a store
   * whose `keepsOwnedBuffers` is true (others may not expect the field). */
  owned?: boolean;
}

export interface PutResponse {
  prevKv?: KeyValue;
}

export interface DeleteRangeRequest extends KeyRange {
  /** Return the deleted key-values. Default false. */
  prevKv?: boolean;
}

export interface DeleteRangeResponse {
  deleted: number;
  prevKvs: KeyValue[];
}

/** A condition of a transaction, as etcd's Compare. A missing key has version, createRevision,
 * modRevision and lease 0; its value compares as absent (every value comparison is false).
 * `ignore` (stores with `merges` only, value compares only): these byte ranges of both values
 * count as equal, so a compare that ignores the fields merges change commutes with those merges
 * (CURP: no conflict). The values must have the same length to be equal. */
export type Compare =
  & { key: Uint8Array; result: "==" | "!=" | "<" | ">" }
  & (
    | { target: "version" | "createRevision" | "modRevision" | "lease"; value: number }
    | { target: "value"; value: Uint8Array; ignore?: { at: number; width: number }[] }
  );

/**
 * Change fields of an existing value in place, commutatively (stores with `merges` only): every
 * `max` field, a timespec of an i64 little-endian second count at `at` followed by a u32
 * little-endian nanosecond count, becomes the later of itself and the given time; every `add`
 * field, an unsigned little-endian integer of `width` bytes (1-4) at `at`, gains `delta` modulo
 * 2^(8 width). Two merges of one key give the same value in either order, so a replicated store
 * may run them side by side without ordering them (CURP: they do not conflict). A merge writes the
 * key (new modRevision and version, a put event for watches) but keeps its `baseRevision`; a
 * merge of a missing key writes nothing; a field beyond the value's end refuses the transaction.
 */
export interface MergeRequest {
  key: Uint8Array;
  max?: { at: number; sec: number; nsec: number }[];
  add?: { at: number; width: number; delta: number }[];
}

export type RequestOp =
  | { range: RangeRequest }
  | { put: PutRequest }
  | { deleteRange: DeleteRangeRequest }
  | { merge: MergeRequest };

export type ResponseOp =
  | { range: RangeResponse }
  | { put: PutResponse }
  | { deleteRange: DeleteRangeResponse }
  | { merge: Record<string, never> };

export interface TxnRequest {
  compare?: Compare[];
  success?: RequestOp[];
  failure?: RequestOp[];
  /**
   * The caller reads neither the response's `revision` nor the revisions of keys this txn writes
   * (they may come back 0), so a replicated backend may answer on its one-round-trip fast path
   * (DESIGN.md section 4). Default false. Backends without a fast path ignore it.
   */
  revisionsUnused?: boolean;
}

export interface TxnResponse {
  succeeded: boolean;
  /** Revision after the transaction: its own revision if it wrote anything. */
  revision: number;
  responses: ResponseOp[];
}

export type WatchEventType = "put" | "delete";

export interface WatchEvent {
  type: WatchEventType;
  /** For a delete: key with value empty and modRevision = the deleting revision. */
  kv: KeyValue;
  prevKv?: KeyValue;
}

export interface WatchOptions {
  rangeEnd?: Uint8Array;
  /** Deliver every event with revision >= startRevision (history permitting), then live ones.
   * Absent: only events after the watch is created. */
  startRevision?: number;
  /** Include prevKv in events. Default false. */
  prevKv?: boolean;
}

export interface Watcher {
  /** Stop delivery; events not yet delivered are dropped. */
  cancel(): void;
}

/** The metadata store did not answer in time (no quorum, unreachable, overloaded): the
 * operation's outcome is unknown. The mount answers EIO and logs one line, without a stack. */
export class MetaUnavailableError extends Error {
  override name = "MetaUnavailableError";
}

/** Thrown by watch when startRevision is older than the compacted history. */
export class CompactedError extends Error {
  constructor(readonly compactRevision: number) {
    super(`Requested revision is compacted; oldest available is ${compactRevision}`);
    this.name = "CompactedError";
  }
}

export interface LeaseGrantResponse {
  id: number;
  ttlSeconds: number;
}

/** The metadata store. Every method may reject with an Error (EIO at the edges). */
export interface MetaKV {
  /**
   * True when the store runs `merge` operations and `baseRevision` compares (the CURP replicas,
   * where they let writes of one directory's record commute). Other stores leave it undefined and
   * refuse both.
   */
  readonly merges?: boolean;
  /** True when the store honours `PutRequest.owned` (the embedded store: it then keeps the
   * caller's buffers, one allocation less per put; src/fuse/README.md, "A rename's and an
   * unlink's transaction"). */
  readonly keepsOwnedBuffers?: boolean;
  range(request: RangeRequest): Promise<RangeResponse>;
  /**
   * Only a store in this process (the embedded one): visit the entries with keys in [key,
   * rangeEnd) in key order, synchronously, with views of the stored bytes that are valid only
   * during the call. Callers fall back to `range` when it is missing.
   */
  scan?(
    key: Uint8Array,
    rangeEnd: Uint8Array,
    visit: (key: Uint8Array, value: Uint8Array) => void,
  ): void;
  put(request: PutRequest): Promise<PutResponse & { revision: number }>;
  deleteRange(request: DeleteRangeRequest): Promise<DeleteRangeResponse & { revision: number }>;
  /** Atomically: if every compare holds run `success`, else `failure`. */
  txn(request: TxnRequest): Promise<TxnResponse>;
  /** Events for keys in the range, in revision order, each revision's events together. */
  watch(
    range: KeyRange,
    options: Omit<WatchOptions, "rangeEnd">,
    onEvents: (events: WatchEvent[], revision: number) => void,
  ): Watcher;
  /** Grant a lease; keys attached to it are deleted when it expires or is revoked. */
  leaseGrant(ttlSeconds: number): Promise<LeaseGrantResponse>;
  leaseRevoke(id: number): Promise<void>;
  /** Renew the lease; rejects if it no longer exists. Returns the TTL granted. */
  leaseKeepAlive(id: number): Promise<number>;
  /** Drop history older than `revision` (watchers can no longer start before it). */
  compact(revision: number): Promise<void>;
  /** Resolve once every transaction acknowledged so far is durable (survives power loss). */
  sync(): Promise<void>;
  /** Current revision. */
  revision(): Promise<number>;
  close(): Promise<void>;
}

/** The smallest key greater than every key that starts with `prefix` (etcd's prefix end). */
export function prefixEnd(prefix: Uint8Array): Uint8Array {
  const end = prefix.slice();
  for (let i = end.length - 1; i >= 0; i--) {
    if (end[i] < 0xff) {
      end[i]++;
      return end.subarray(0, i + 1);
    }
  }
  return new Uint8Array([0]); // every key: etcd's "\0" rangeEnd means "to the end"
}

/** `value` with the merge applied (a copy): what a store with `merges` stores, and what the
 * namespace caches after its own merge. The caller checked that every field fits. */
export function applyMerge(m: MergeRequest, value: Uint8Array): Uint8Array {
  const out = value.slice();
  const view = new DataView(out.buffer);
  for (const f of m.max ?? []) {
    const sec = Number(view.getBigInt64(f.at, true));
    const nsec = view.getUint32(f.at + 8, true);
    if (f.sec > sec || (f.sec === sec && f.nsec > nsec)) {
      view.setBigInt64(f.at, BigInt(f.sec), true);
      view.setUint32(f.at + 8, f.nsec, true);
    }
  }
  for (const f of m.add ?? []) {
    let n = 0;
    for (let i = f.width - 1; i >= 0; i--) n = n * 256 + out[f.at + i];
    const modulus = 2 ** (8 * f.width);
    n = (((n + f.delta) % modulus) + modulus) % modulus;
    for (let i = 0; i < f.width; i++) {
      out[f.at + i] = n % 256;
      n = Math.floor(n / 256);
    }
  }
  return out;
}
