/**
 * Cluster mode's open records: which nodes have an unlinked file open, so that an unlink or
 * rename-over on one node keeps the inode (as an orphan) while another node still has it open, as
 * POSIX wants, without a write at open (issue 13: an open costs no log append).
 *
 * Deferred reclaim: a transaction that drops a regular file's last name always leaves an orphan
 * (the orphan mark, written by that commit at revision R). Each node's metadata watch, seeing the
 * inode at nlink 0 while the file is open here, puts `cl/open/<ino hex>/<node>` on this node's
 * lease (a crashed node's records vanish with it), and after the records of everything it
 * processed up to R are in the store it puts its acknowledgement `cl/ack/<node>` = R (same lease).
 * The orphan is freed (`reclaimBarrier`, then the records read) once every node's
 * acknowledgement is at R or later and no other node's record exists. An open that races the
 * unlink puts its own record before it returns when the watch already saw the unlink (or it read
 * nlink 0), compared against the inode's existence, so it either keeps the inode or gets ENOENT.
 * A record goes at the holder's last close. Every record write also writes the inode's guard key
 * `cl/openguard/<ino hex>`: a transaction deciding whether to delete an inode reads the guard and
 * the records in one snapshot and compares the guard at commit (Namespace's `readGuarded`), so a
 * record landing between that read and the commit makes it rerun instead of deleting an inode just
 * opened.
 * @module
 */

import { type KeyValue, type MetaKV, MetaUnavailableError, prefixEnd } from "../meta/kv.ts";
import { keys, type NsTxn } from "../meta/namespace.ts";

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

/** Node `nodeId`'s acknowledgement: the revision up to which its metadata watch has processed
 * every event, with a record put for each unlinked file it had open (on the records' lease). */
export function ackKey(nodeId: string): Uint8Array {
  return encoder.encode(`cl/ack/${nodeId}`);
}

/** Every node's acknowledgement shares this prefix. */
export const ACK_PREFIX = encoder.encode("cl/ack/");

/**
 * The reclaim barrier of orphan `ino`: "passed" once every node taking part (an acknowledgement
 * on its lease) acknowledged the revision that made it an orphan, so every record a node holding
 * it open must write is in the store (a node writes its records before its acknowledgement);
 * "waiting" until then; "gone" when it is not on the orphan list. Read it before the records: a
 * read of them afterwards sees every record the barrier waited for.
 */
export async function reclaimBarrier(
  kv: MetaKV,
  ino: number,
): Promise<"passed" | "waiting" | "gone"> {
  const response = await kv.txn({
    success: [
      { range: { key: keys.orphan(ino) } },
      { range: { key: ACK_PREFIX, rangeEnd: prefixEnd(ACK_PREFIX) } },
    ],
    revisionsUnused: true, // read kvs carry their committed modRevisions
  });
  const [orphan, acks] = response.responses.map((r) =>
    (r as { range: { kvs: KeyValue[] } }).range.kvs
  );
  if (orphan.length === 0) return "gone";
  const unlinkedAt = orphan[0].modRevision;
  return acks.every((kv) => Number(decoder.decode(kv.value)) >= unlinkedAt) ? "passed" : "waiting";
}

/** `reclaimBarrier` of several orphans in one read. */
export async function reclaimBarriers(
  kv: MetaKV,
  inos: number[],
): Promise<Map<number, "passed" | "waiting" | "gone">> {
  const out = new Map<number, "passed" | "waiting" | "gone">();
  if (inos.length === 0) return out;
  const response = await kv.txn({
    success: [
      { range: { key: ACK_PREFIX, rangeEnd: prefixEnd(ACK_PREFIX) } },
      ...inos.map((ino) => ({ range: { key: keys.orphan(ino) } })),
    ],
    revisionsUnused: true,
  });
  const [acks, ...orphans] = response.responses.map((r) =>
    (r as { range: { kvs: KeyValue[] } }).range.kvs
  );
  const least = Math.min(...acks.map((kv) => Number(decoder.decode(kv.value))));
  inos.forEach((ino, i) => {
    const orphan = orphans[i][0];
    out.set(ino, !orphan ? "gone" : least >= orphan.modRevision ? "passed" : "waiting");
  });
  return out;
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

/** How long an acknowledgement waits for more unlinks to cover (a burst costs one write). */
export const ACK_DELAY_MS = 50;
/** Least time between two acknowledgements of a node (a steady stream of unlinks costs each
 * node about 10 writes per second, whatever its rate). */
export const ACK_INTERVAL_MS = 100;

export class OpenRecords {
  readonly #kv: MetaKV;
  readonly #nodeId: string;
  readonly #ttlSeconds: number;
  /** Inodes whose record this node has put (and not deleted). */
  readonly #held = new Set<number>();
  /** Per inode, the tail of its record operations: a put and a delete of one key never race. */
  readonly #tails = new Map<number, Promise<unknown>>();
  /** Held inodes whose record is being deleted: the next open must put it again. */
  readonly #releasing = new Set<number>();
  #lease: Promise<number> | undefined;
  #leaseId: number | undefined;
  /** The last renewal failed because the store did not answer (logged once per outage). */
  #renewFailing = false;
  #timer: ReturnType<typeof setInterval> | undefined;
  #closed = false;
  /** Acknowledgements (`acknowledge`): the revision wanted, the last one stored, the write in
   * flight, and the records it must wait for. */
  #ackTarget = 0;
  #acked = 0;
  #acking: Promise<void> | undefined;
  /** When the last acknowledgement was written (Date.now()). */
  #ackAt = 0;
  readonly #ackBlockers: Promise<void>[] = [];
  /** `holdBeforeAck`'s records being put, by inode. */
  readonly #holding = new Map<number, Promise<void>>();
  /** Called after each `hold` that put this node's record (ClusterData: the volume recount). */
  onHeld: (ino: number) => void = () => {};

  constructor(kv: MetaKV, nodeId: string, ttlSeconds = 5) {
    this.#kv = kv;
    this.#nodeId = nodeId;
    this.#ttlSeconds = ttlSeconds;
  }

  /** The lease the records are on, once one was granted (tests revoke it to play a crash). */
  get leaseId(): number | undefined {
    return this.#leaseId;
  }

  /** This node's record of `ino` exists and is not being deleted. */
  isHeld(ino: number): boolean {
    return this.#held.has(ino) && !this.#releasing.has(ino);
  }

  /** This node's record of `ino` exists (held or being released). */
  hasRecord(ino: number): boolean {
    return this.#held.has(ino);
  }

  /** The transaction that deleted `ino` also deleted this node's record of it. */
  deletedWithInode(ino: number): void {
    this.#held.delete(ino);
  }

  /** The lease this node's records go on (granted at the first use, then kept alive). */
  lease(): Promise<number> {
    return this.#grant();
  }

  /**
   * Put this node's record of `ino` (open here, seen unlinked) if the inode still exists, reading
   * `alsoRead` (the chunk map) in the same snapshot. Undefined when the inode is gone.
   */
  hold(ino: number, alsoRead?: Uint8Array): Promise<{ value?: Uint8Array } | undefined> {
    return this.#serial(ino, async () => {
      const lease = await this.#grant();
      const node = encoder.encode(this.#nodeId);
      const response = await this.#kv.txn({
        compare: [{ key: keys.inode(ino), target: "version", result: ">", value: 0 }],
        success: [
          { put: { key: openRecordKey(ino, this.#nodeId), value: node, lease } },
          { put: { key: openGuardKey(ino), value: node, lease } },
          ...(alsoRead ? [{ range: { key: alsoRead } }] : []),
        ],
        revisionsUnused: true, // values only: CURP's one-round-trip fast path
      });
      if (!response.succeeded) return undefined;
      this.#held.add(ino);
      this.onHeld(ino);
      if (!alsoRead) return {};
      const found = (response.responses[2] as { range: { kvs: KeyValue[] } }).range.kvs[0];
      return { value: found?.value };
    });
  }

  /**
   * The watch saw `ino` unlinked (nlink 0) while it is open here: put this node's record before
   * the next acknowledgement (retried until it lands or the inode is gone; the acknowledgement
   * waits, and with it the orphan's reclaim everywhere).
   */
  holdBeforeAck(ino: number): void {
    const hold = async (): Promise<void> => {
      for (let delay = 100;; delay = Math.min(delay * 2, 2000)) {
        if (this.#closed) return;
        try {
          await this.hold(ino);
          return;
        } catch (error) {
          console.error(`skyfs: recording inode ${ino} open here (retrying): ${error}`);
          await new Promise((resolve) => setTimeout(resolve, delay));
        }
      }
    };
    const holding = hold();
    this.#holding.set(ino, holding);
    holding.finally(() => {
      if (this.#holding.get(ino) === holding) this.#holding.delete(ino);
    });
    this.#ackBlockers.push(holding);
  }

  /** Resolves once a record `holdBeforeAck` is putting for `ino` landed (or was given up): the
   * last close waits for it, so that it releases the record instead of leaving it behind. */
  holding(ino: number): Promise<void> | undefined {
    return this.#holding.get(ino);
  }

  /** The watch processed every event up to `revision` (an orphan mark among them): acknowledge
   * it once the records `holdBeforeAck` asked for so far are in (one write in flight at a time;
   * later revisions coalesce into the next). */
  acknowledge(revision: number): Promise<void> {
    if (revision > this.#ackTarget) this.#ackTarget = revision;
    this.#acking ??= this.#flushAcks().finally(() => this.#acking = undefined);
    return this.#acking;
  }

  /** The revision this node last acknowledged (0: none yet). */
  get acknowledged(): number {
    return this.#acked;
  }

  async #flushAcks(): Promise<void> {
    // The rest of the watch's batch first, and the next unlinks of a burst (one write for many):
    // ACK_DELAY_MS, and at least ACK_INTERVAL_MS after the previous acknowledgement.
    let wait = Math.max(ACK_DELAY_MS, this.#ackAt + ACK_INTERVAL_MS - Date.now());
    for (let delay = 100; this.#ackTarget > this.#acked && !this.#closed;) {
      await new Promise((resolve) => setTimeout(resolve, wait));
      wait = ACK_INTERVAL_MS;
      this.#ackAt = Date.now();
      const target = this.#ackTarget;
      await Promise.all(this.#ackBlockers.splice(0));
      try {
        await this.#putAck(target);
        this.#acked = target;
        delay = 100;
      } catch (error) {
        if (this.#closed) return;
        console.error(`skyfs: acknowledging revision ${target} (retrying): ${error}`);
        wait = delay;
        delay = Math.min(delay * 2, 2000);
      }
    }
  }

  async #putAck(revision: number, lease?: number): Promise<void> {
    lease ??= await this.#grant();
    await this.#kv.txn({
      success: [{
        put: { key: ackKey(this.#nodeId), value: encoder.encode(String(revision)), lease },
      }],
      revisionsUnused: true,
    });
  }

  /**
   * Last close of `ino` here: delete this node's record. Returns the inode's stored record as of
   * that commit (undefined if deleted), so the caller knows whether it may now free an orphan.
   */
  release(ino: number): Promise<Uint8Array | undefined> {
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
  ): Promise<{ elsewhere: boolean; also?: Uint8Array }> {
    const found = await tx.readGuarded(openGuardKey(ino), openRecordsPrefix(ino), also);
    // A record under this node's id is this process's (its own handles are counted in memory)
    // or a crashed predecessor's, whose lease is about to expire: neither keeps the inode.
    const elsewhere = found.kvs.some((kv) => openRecordNode(kv.key) !== this.#nodeId);
    return { elsewhere, also: found.also };
  }

  /** `openElsewhere` of several inodes, one read for all. */
  async openElsewhereMany(
    tx: NsTxn,
    inos: number[],
    also: (ino: number) => Uint8Array,
  ): Promise<Map<number, { elsewhere: boolean; also?: Uint8Array }>> {
    const found = await tx.readGuardedMany(
      inos.map((ino) => ({
        guard: openGuardKey(ino),
        prefix: openRecordsPrefix(ino),
        also: also(ino),
      })),
    );
    return new Map(inos.map((ino, i) => [ino, {
      elsewhere: found[i].kvs.some((kv) => openRecordNode(kv.key) !== this.#nodeId),
      also: found[i].also,
    }]));
  }

  /** `ino` was deleted: forget (and delete) this node's record of it. */
  forget(ino: number): void {
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
      // Back in the barrier: without the acknowledgement other nodes skipped this one.
      if (this.#acked > 0) await this.#putAck(this.#acked, granted.id);
    } catch (error) {
      console.error(`skyfs: renewing the open records' lease: ${(error as Error).message}`);
    }
  }

  /** Stop renewing and revoke the lease: every record of this node goes at once. */
  async close(): Promise<void> {
    this.#closed = true;
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
    if (this.#leaseId !== undefined) await this.#kv.leaseRevoke(this.#leaseId).catch(() => {});
    this.#held.clear();
  }
}
