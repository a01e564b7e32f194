/**
 * Cluster mode's open records: which nodes have a file open, so that an unlink or rename-over on
 * one node keeps the inode (as an orphan) while another node still has it open, as POSIX wants.
 *
 * A node's first open of an inode puts `cl/open/<ino hex>/<node>` on this node's lease (a
 * crashed node's records vanish with it), and its last close deletes it, `lingerMs` later: a
 * file opened again meanwhile (the common open/close/open) costs no metadata write, and an
 * unlink elsewhere meanwhile is seen by the metadata watch, which frees the file at once
 * (ClusterData.forgetMetadata). Both writes also write the
 * inode's guard key `cl/openguard/<ino hex>`: a transaction deciding whether to delete an
 * inode reads the guard and the records in one snapshot and compares the guard at commit
 * (Namespace's `readGuarded`), so an open or close landing between that read and the commit
 * makes it rerun instead of deleting an inode just opened, or orphaning one just closed.
 * @module
 */

import { type KeyValue, type MetaKV, MetaUnavailableError } from "../meta/kv.ts";
import { decodeInode, keys, type NsTxn } from "../meta/namespace.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

const hex = (ino: number) => ino.toString(16).padStart(16, "0");

/** Every node's open records of `ino` share this prefix. */
export function openRecordsPrefix(ino: number): Uint8Array {
  return encoder.encode(`cl/open/${hex(ino)}/`);
}

export function openRecordKey(ino: number, nodeId: string): Uint8Array {
  return encoder.encode(`cl/open/${hex(ino)}/${nodeId}`);
}

/** Written with every change of `ino`'s open records. */
export function openGuardKey(ino: number): Uint8Array {
  return encoder.encode(`cl/openguard/${hex(ino)}`);
}

/** The node id of an open record key. */
export function openRecordNode(key: Uint8Array): string {
  const text = decoder.decode(key);
  return text.slice(text.lastIndexOf("/") + 1);
}

/** Most records lingering at once on one node; past it the oldest goes first. */
export const MAX_LINGERING = 10_000;

/**
 * The default linger: 60 s (a mount takes config cluster.open_linger_ms, SKYFS_OPEN_LINGER_MS;
 * bench/cluster/open_close.ts compares values). Long, because an
 * open whose record already exists writes nothing (one read), while a first open costs a
 * replicated write and its close another one later: with 3 s, a file reopened a few seconds
 * after its create (a build, `git status`, the bench's open+close pass) paid both again. An
 * unlink elsewhere still ends the linger at once (the watch).
 */
export const DEFAULT_LINGER_MS = 60_000;

export class OpenRecords {
  readonly #kv: MetaKV;
  readonly #nodeId: string;
  readonly #ttlSeconds: number;
  /** Inodes whose record this node has put (and not deleted). */
  readonly #held = new Set<number>();
  /**
   * Files this node created whose open guard only the create wrote (version 1, on this lease):
   * no other node has put a record since, for every record put writes the guard too. Forgotten
   * at this node's next write of the guard (a hold, a release, a lease renewal) and at the
   * first use (`openElsewhere`), so a retried transaction reads.
   */
  readonly #fresh = new Map<number, number>();
  /** Per inode, the tail of its record operations: a put and a delete of one key never race. */
  readonly #tails = new Map<number, Promise<unknown>>();
  /** Held inodes closed here, and when their record goes. */
  readonly #lingering = new Map<number, number>();
  /** Held inodes whose record is being deleted: the next open must put it again. */
  readonly #releasing = new Set<number>();
  readonly #lingerMs: number;
  #sweeper: ReturnType<typeof setInterval> | undefined;
  /** Called when a record released after its linger shows the inode as an orphan (nlink 0):
   * the vfs may now free it. */
  onOrphan: (ino: number) => void = () => {};
  #lease: Promise<number> | undefined;
  #leaseId: number | undefined;
  /** The last renewal failed because the store did not answer (logged once per outage). */
  #renewFailing = false;
  #timer: ReturnType<typeof setInterval> | undefined;
  #closed = false;

  constructor(kv: MetaKV, nodeId: string, ttlSeconds = 5, lingerMs = DEFAULT_LINGER_MS) {
    this.#kv = kv;
    this.#nodeId = nodeId;
    this.#ttlSeconds = ttlSeconds;
    this.#lingerMs = lingerMs;
  }

  /** The lease the records are on, once one was granted (tests revoke it to play a crash). */
  get leaseId(): number | undefined {
    return this.#leaseId;
  }

  /** This node's record of `ino` exists and is not being deleted. */
  isHeld(ino: number): boolean {
    return this.#held.has(ino) && !this.#releasing.has(ino);
  }

  /** An open of `ino` here: true if this node's record already covers it (then kept). */
  reuse(ino: number): boolean {
    if (!this.isHeld(ino)) return false;
    this.#lingering.delete(ino);
    return true;
  }

  /** The last handle of `ino` here closed: its record goes `lingerMs` from now. */
  closeLater(ino: number): void {
    if (!this.isHeld(ino)) return;
    if (this.#lingerMs <= 0) return this.#releaseInBackground(ino);
    this.#lingering.delete(ino); // to the end of the insertion order: the newest
    this.#lingering.set(ino, Date.now() + this.#lingerMs);
    if (this.#lingering.size > MAX_LINGERING) {
      const oldest = this.#lingering.keys().next().value!;
      this.#lingering.delete(oldest);
      this.#releaseInBackground(oldest);
    }
    if (this.#sweeper === undefined && !this.#closed) {
      this.#sweeper = setInterval(() => this.#sweep(), Math.max(100, this.#lingerMs / 3));
      Deno.unrefTimer(this.#sweeper);
    }
  }

  /** This node's record of `ino` exists (held, lingering or being released). */
  hasRecord(ino: number): boolean {
    return this.#held.has(ino);
  }

  /** The transaction that deleted `ino` also deleted this node's record of it. */
  deletedWithInode(ino: number): void {
    this.#lingering.delete(ino);
    this.#held.delete(ino);
  }

  isLingering(ino: number): boolean {
    return this.#lingering.has(ino);
  }

  /** The inode was unlinked elsewhere (the watch): a record lingering for it goes now, so the
   * file is freed without waiting. */
  releaseIfLingering(ino: number): void {
    if (this.#lingering.delete(ino)) this.#releaseInBackground(ino);
  }

  #sweep(): void {
    const now = Date.now();
    for (const [ino, due] of this.#lingering) {
      if (due > now) continue;
      this.#lingering.delete(ino);
      this.#releaseInBackground(ino);
    }
  }

  #releaseInBackground(ino: number): void {
    this.release(ino).then((stored) => {
      if (stored && decodeInode(ino, stored).nlink === 0) this.onOrphan(ino);
    }).catch((error) => {
      // The record stays (on this node's lease): an unlink elsewhere keeps the inode as an
      // orphan until this process ends, and gc then frees it.
      console.error(`skyfs: removing the open record of inode ${ino}: ${error}`);
    });
  }

  /** The lease this node's records go on (granted at the first use, then kept alive). */
  lease(): Promise<number> {
    return this.#grant();
  }

  /** In the transaction that creates `ino` (opened by its creator): this node's record and the
   * guard go in the same commit, so a create costs no second write. Call `created` after it. */
  putInTxn(tx: NsTxn, ino: number, lease: number): void {
    const node = encoder.encode(this.#nodeId);
    tx.putOutside(openRecordKey(ino, this.#nodeId), node, lease);
    tx.putOutside(openGuardKey(ino), node, lease);
  }

  /** The transaction of `putInTxn` (on `lease`) committed: the record exists. */
  created(ino: number, lease: number): void {
    this.#held.add(ino);
    this.#fresh.set(ino, lease);
    // Bounded: an old entry only costs its unlink one read.
    if (this.#fresh.size > MAX_LINGERING) this.#fresh.delete(this.#fresh.keys().next().value!);
  }

  /**
   * First open of `ino` here: put this node's record if the inode still exists, reading
   * `alsoRead` (the chunk map) in the same snapshot. Undefined when the inode is gone.
   */
  hold(ino: number, alsoRead: Uint8Array): Promise<{ value?: Uint8Array } | undefined> {
    this.#fresh.delete(ino);
    return this.#serial(ino, async () => {
      const lease = await this.#grant();
      const node = encoder.encode(this.#nodeId);
      const response = await this.#kv.txn({
        compare: [{ key: keys.inode(ino), target: "version", result: ">", value: 0 }],
        success: [
          { put: { key: openRecordKey(ino, this.#nodeId), value: node, lease } },
          { put: { key: openGuardKey(ino), value: node, lease } },
          { range: { key: alsoRead } },
        ],
        revisionsUnused: true, // values only: CURP's one-round-trip fast path
      });
      if (!response.succeeded) return undefined;
      this.#held.add(ino);
      const found = (response.responses[2] as { range: { kvs: KeyValue[] } }).range.kvs[0];
      return { value: found?.value };
    });
  }

  /**
   * Last close of `ino` here: delete this node's record. Returns the inode's stored record as of
   * that commit (undefined if deleted), so the caller knows whether it may now free an orphan.
   */
  release(ino: number): Promise<Uint8Array | undefined> {
    this.#fresh.delete(ino);
    this.#lingering.delete(ino);
    if (this.#held.has(ino)) this.#releasing.add(ino);
    return this.#serial(ino, async () => {
      if (!this.#held.has(ino)) return undefined;
      const lease = await this.#grant();
      // The guard only while the inode exists: a release racing with the unlink that deleted
      // the inode (its watch event before its reply, `forget`) put it back for good otherwise,
      // a stray key on this node's lease (seen in 5-9 of 300 unlinks on `deno task cluster`).
      const response = await this.#kv.txn({
        compare: [{ key: keys.inode(ino), target: "version", result: ">", value: 0 }],
        success: [
          { deleteRange: { key: openRecordKey(ino, this.#nodeId) } },
          { put: { key: openGuardKey(ino), value: encoder.encode(this.#nodeId), lease } },
          { range: { key: keys.inode(ino) } },
        ],
        failure: [{ deleteRange: { key: openRecordKey(ino, this.#nodeId) } }],
        revisionsUnused: true,
      });
      this.#held.delete(ino);
      if (!response.succeeded) return undefined;
      return (response.responses[2] as { range: { kvs: KeyValue[] } }).range.kvs[0]?.value;
    }).finally(() => {
      // A hold queued behind this release has put the record again (it runs after it).
      this.#releasing.delete(ino);
    });
  }

  /** Inside a transaction that may delete `ino`: whether another node has it open, and the
   * value of `also` read in the same snapshot. */
  async openElsewhere(
    tx: NsTxn,
    ino: number,
    also?: Uint8Array,
  ): Promise<{ elsewhere: boolean; read: boolean; also?: Uint8Array }> {
    const lease = this.#fresh.get(ino);
    if (lease !== undefined) {
      // No read: the guard still as this node's create wrote it proves that no other node put a
      // record since (each put rewrites the guard: version 2 or more, or another lease; gone
      // with its lease, a rewrite makes it version 1 on another lease). Else the commit fails
      // and the transaction runs again, reading.
      this.#fresh.delete(ino);
      const guard = openGuardKey(ino);
      tx.compareOutside({ key: guard, target: "version", result: "==", value: 1 });
      tx.compareOutside({ key: guard, target: "lease", result: "==", value: lease });
      return { elsewhere: false, read: false };
    }
    const found = await tx.readGuarded(openGuardKey(ino), openRecordsPrefix(ino), also);
    // A record under this node's id is this process's (its own handles are counted in memory)
    // or a crashed predecessor's, whose lease is about to expire: neither keeps the inode.
    const elsewhere = found.kvs.some((kv) => openRecordNode(kv.key) !== this.#nodeId);
    return { elsewhere, read: true, also: found.also };
  }

  /** `ino` was deleted: forget (and delete) this node's record of it. */
  forget(ino: number): void {
    this.#lingering.delete(ino);
    if (!this.#held.has(ino)) return;
    this.release(ino).catch((error) => {
      console.error(`skyfs: removing the open record of deleted inode ${ino}: ${error}`);
    });
  }

  #serial<T>(ino: number, run: () => Promise<T>): Promise<T> {
    const tail = this.#tails.get(ino) ?? Promise.resolve();
    const next = tail.catch(() => {}).then(run);
    this.#tails.set(ino, next);
    next.catch(() => {}).finally(() => {
      if (this.#tails.get(ino) === next) this.#tails.delete(ino);
    });
    return next;
  }

  /** This node's lease, granted at the first open and kept alive until close. */
  #grant(): Promise<number> {
    if (this.#closed) return Promise.reject(new Error("open records are closed"));
    this.#lease ??= this.#kv.leaseGrant(this.#ttlSeconds).then((granted) => {
      this.#leaseId = granted.id;
      const interval = Math.max(300, (this.#ttlSeconds * 1000) / 3);
      this.#timer = setInterval(() => this.#renew(), interval);
      Deno.unrefTimer(this.#timer);
      return granted.id;
    }, (error) => {
      this.#lease = undefined;
      throw error;
    });
    return this.#lease;
  }

  async #renew(): Promise<void> {
    if (this.#leaseId === undefined || this.#closed) return;
    try {
      await this.#kv.leaseKeepAlive(this.#leaseId);
      this.#renewFailing = false;
      return;
    } catch (error) {
      if (this.#closed) return;
      if (error instanceof MetaUnavailableError) {
        // The store did not answer: the lease may well still be there. Try again at the next
        // interval; if it did expire meanwhile, that renewal says so and the records go back.
        if (!this.#renewFailing) {
          console.error(
            `skyfs: cannot renew the lease of this node's open records yet ` +
              `(${(error as Error).message}); retrying`,
          );
        }
        this.#renewFailing = true;
        return;
      }
      this.#renewFailing = false;
      console.error(
        `skyfs: the lease of this node's open records expired (${(error as Error).message}); ` +
          `putting ${this.#held.size} records on a new one`,
      );
    }
    // The metadata store was unreachable longer than the TTL: the records are gone, and an
    // unlink elsewhere meanwhile may have deleted a file open here. Put back the rest.
    this.#fresh.clear();
    try {
      const granted = await this.#kv.leaseGrant(this.#ttlSeconds);
      this.#leaseId = granted.id;
      this.#lease = Promise.resolve(granted.id);
      for (const ino of [...this.#held]) {
        await this.#serial(ino, async () => {
          if (!this.#held.has(ino)) return;
          const node = encoder.encode(this.#nodeId);
          const response = await this.#kv.txn({
            compare: [{ key: keys.inode(ino), target: "version", result: ">", value: 0 }],
            success: [
              { put: { key: openRecordKey(ino, this.#nodeId), value: node, lease: granted.id } },
              { put: { key: openGuardKey(ino), value: node, lease: granted.id } },
            ],
          });
          if (!response.succeeded) {
            console.error(`skyfs: inode ${ino}, open here, was deleted while the lease was gone`);
          }
        });
      }
    } catch (error) {
      console.error(`skyfs: renewing the open records' lease: ${(error as Error).message}`);
    }
  }

  /** Stop renewing and revoke the lease: every record of this node goes at once. */
  async close(): Promise<void> {
    this.#closed = true;
    if (this.#timer !== undefined) clearInterval(this.#timer);
    if (this.#sweeper !== undefined) clearInterval(this.#sweeper);
    this.#timer = this.#sweeper = undefined;
    this.#lingering.clear();
    if (this.#leaseId !== undefined) await this.#kv.leaseRevoke(this.#leaseId).catch(() => {});
    this.#held.clear();
  }
}
