/**
 * Locks other nodes see (cluster mode). Each node mirrors the record locks (POSIX and OFD) and
 * flock locks its processes hold on an inode into one key, `cl/lock/<ino hex>/<node>` (a JSON
 * list), on the lease of its open records: a node that dies takes its locks with it when the
 * lease expires. A lock is granted only if no other node's key conflicts, read and written in one
 * guarded transaction: the guard `cl/lock/<ino hex>/` (the prefix itself, so one range reads it
 * with the keys) is rewritten by every grant, so of two nodes granting conflicting locks at once
 * only one commits and the other reads again. Releases write without the guard (fewer locks can
 * never make another node's grant wrong). A node waiting for a lock watches the prefix.
 *
 * The guard has no lease: on a lease, a node dying would delete it and a later compare against
 * "absent" could succeed over locks put meanwhile. It stays, one small key per inode ever locked
 * in the cluster.
 * @module
 */

import { FsError } from "../fs_error.ts";
import { CompactedError, type MetaKV, prefixEnd } from "../meta/kv.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** One lock as another node sees it. `end` is inclusive, -1 for "to end of file". */
export interface MirroredLock {
  kind: "posix" | "flock";
  type: number;
  start: number;
  end: number;
  pid: number;
}

/** Other nodes' locks of an inode, and what a grant must compare against. */
export interface LocksView {
  others: MirroredLock[];
  guardRevision: number;
  revision: number;
}

const hex = (ino: number) => ino.toString(16).padStart(16, "0");

export function lockPrefix(ino: number): Uint8Array {
  return encoder.encode(`cl/lock/${hex(ino)}/`);
}

export class ClusterLocks {
  readonly #kv: MetaKV;
  readonly #nodeId: string;
  readonly #lease: () => Promise<number>;
  /** Per inode, the tail of this node's lock operations: a grant and a release never race. */
  readonly #tails = new Map<number, Promise<unknown>>();

  constructor(kv: MetaKV, nodeId: string, lease: () => Promise<number>) {
    this.#kv = kv;
    this.#nodeId = nodeId;
    this.#lease = lease;
  }

  /** Run `fn` after every earlier operation on `ino`'s locks here has finished. */
  serial<T>(ino: number, fn: () => Promise<T>): Promise<T> {
    const run = (this.#tails.get(ino) ?? Promise.resolve()).then(fn, fn);
    const tail = run.catch(() => {});
    this.#tails.set(ino, tail);
    tail.then(() => {
      if (this.#tails.get(ino) === tail) this.#tails.delete(ino);
    });
    return run;
  }

  /** Other nodes' locks of `ino`, read in one snapshot with the guard. */
  async read(ino: number): Promise<LocksView> {
    const prefix = lockPrefix(ino);
    const found = await this.#kv.range({ key: prefix, rangeEnd: prefixEnd(prefix) });
    const others: MirroredLock[] = [];
    let guardRevision = 0;
    for (const item of found.kvs) {
      const node = decoder.decode(item.key.subarray(prefix.length));
      if (node === "") guardRevision = item.modRevision;
      else if (node !== this.#nodeId) {
        try {
          others.push(...JSON.parse(decoder.decode(item.value)) as MirroredLock[]);
        } catch {
          throw new FsError("EIO", `lock record of node ${node} on inode ${ino} is not JSON`);
        }
      }
    }
    return { others, guardRevision, revision: found.revision };
  }

  /** Store this node's locks of `ino` (a grant): false if another grant committed since `view`
   * was read (read again). */
  async grant(ino: number, mine: MirroredLock[], view: LocksView): Promise<boolean> {
    const prefix = lockPrefix(ino);
    const lease = await this.#lease();
    const response = await this.#kv.txn({
      compare: [{ key: prefix, target: "modRevision", result: "==", value: view.guardRevision }],
      success: [
        { put: { key: this.#key(ino), value: encoder.encode(JSON.stringify(mine)), lease } },
        { put: { key: prefix, value: encoder.encode(this.#nodeId) } },
      ],
    });
    return response.succeeded;
  }

  /** Store this node's locks of `ino` after a release. */
  async publish(ino: number, mine: MirroredLock[]): Promise<void> {
    if (mine.length === 0) {
      await this.#kv.deleteRange({ key: this.#key(ino) });
      return;
    }
    const lease = await this.#lease();
    await this.#kv.put({ key: this.#key(ino), value: encoder.encode(JSON.stringify(mine)), lease });
  }

  /** Resolves at the first change of `ino`'s lock keys after `view` was read (a lease expiry
   * included), or rejects with EINTR when `signal` aborts. */
  changed(ino: number, view: LocksView, signal: AbortSignal | undefined): Promise<void> {
    const prefix = lockPrefix(ino);
    return new Promise((resolve, reject) => {
      let watcher: { cancel(): void } | undefined;
      let finished = false;
      const done = () => {
        finished = true;
        watcher?.cancel();
        signal?.removeEventListener("abort", onAbort);
      };
      const onAbort = () => {
        done();
        reject(new FsError("EINTR", "lock wait interrupted"));
      };
      if (signal?.aborted) return onAbort();
      signal?.addEventListener("abort", onAbort, { once: true });
      try {
        watcher = this.#kv.watch(
          { key: prefix, rangeEnd: prefixEnd(prefix) },
          { startRevision: view.revision + 1 },
          () => {
            done();
            resolve();
          },
        );
        if (finished) watcher.cancel(); // delivered from history before watch() returned
      } catch (error) {
        done();
        // History gone: something changed since; the caller reads again.
        if (error instanceof CompactedError) resolve();
        else reject(error);
      }
    });
  }

  #key(ino: number): Uint8Array {
    return encoder.encode(`cl/lock/${hex(ino)}/${this.#nodeId}`);
  }
}
