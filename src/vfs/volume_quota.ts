/**
 * Volume quotas: keeping each volume's usage (bytes of regular files, inodes) exact in metadata,
 * in the same transaction as the change that moves it, and letting a writer extend files only
 * inside capacity it has reserved.
 *
 * Three numbers per volume live in its quota record (src/meta/namespace.ts `QuotaRecord`):
 * `usedBytes` (the sum of the stored sizes of its regular files), `usedInodes`, and per node the
 * bytes it has reserved for writes not yet published. The invariant is
 * `usedBytes + sum(reserved) <= capacityBytes`: every transaction that would raise the left side
 * past the capacity fails with EDQUOT and changes nothing.
 *
 * A write does not run a transaction (attribute write-back, core.ts), so before a write extends a
 * file it claims the growth from its node's reservation (`claim`): if the reservation is too
 * small the node reserves more in one transaction (at least `reserveBytes`), and if the volume has
 * no room left the write fails with EDQUOT before touching the data. When the new size is stored
 * (flush, close, fsync, the write-back timer; in cluster mode the publish), that transaction adds
 * the growth to `usedBytes` and takes the same amount off the node's reservation (`account`), so
 * the sum does not move. Spare reservation goes back after `releaseMs` without claims, and at
 * unmount; a crashed node's reservation is dropped when it starts again.
 * @module
 */

import { FsError } from "../fs_error.ts";
import type { InodeRecord, QuotaRecord } from "../meta/namespace.ts";
import type { OpTxn, VfsCore } from "./core.ts";
import { isReg } from "./perm.ts";

export interface VolumeQuotaOptions {
  /** Bytes a node reserves at a time when a write needs more. Default 64 MiB. */
  reserveBytes?: number;
  /** How long a node keeps spare reserved bytes after its last claim. Default 1000 ms. */
  releaseMs?: number;
  /** Cluster mode: the ids of the live nodes (membership), so that at start the reservations
   * of nodes that are gone are dropped too. Default: only this node's own are dropped. */
  liveNodes?: () => Promise<string[]>;
}

/** What this node holds of one volume's capacity. */
interface VolumeGrant {
  /** Equal to the quota record's `reserved[node]` once every commit of this node is applied. */
  granted: number;
  /** Bytes of growth written to files and not stored yet (sum of the claims). */
  claimed: number;
  /** Reservations of this volume run one at a time (each needs the previous one's record). */
  chain: Promise<unknown>;
  timer?: ReturnType<typeof setTimeout>;
}

/** One inode's growth written and not yet stored: from `base` (its stored size) to `end`. */
interface Claim {
  volume: number;
  base: number;
  end: number;
}

/** What a transaction settles, applied once it has committed (`afterCommit`). */
export interface QuotaPlan {
  released: Map<number, number>;
  settled: { ino: number; volume: number; consumed: number; deleted: boolean }[];
}

export class VolumeQuotas {
  readonly #core: VfsCore;
  readonly #node: string;
  readonly #reserveBytes: number;
  readonly #releaseMs: number;
  readonly #liveNodes: (() => Promise<string[]>) | undefined;
  readonly #grants = new Map<number, VolumeGrant>();
  readonly #claims = new Map<number, Claim>();
  #closed = false;

  constructor(core: VfsCore, node: string, options: VolumeQuotaOptions = {}) {
    this.#core = core;
    this.#node = node;
    this.#reserveBytes = options.reserveBytes ?? 64 * 1024 * 1024;
    this.#releaseMs = options.releaseMs ?? 1000;
    this.#liveNodes = options.liveNodes;
  }

  get node(): string {
    return this.#node;
  }

  #grant(volume: number): VolumeGrant {
    let grant = this.#grants.get(volume);
    if (!grant) {
      this.#grants.set(volume, grant = { granted: 0, claimed: 0, chain: Promise.resolve() });
    }
    return grant;
  }

  /**
   * Inside a transaction, after the operation: add what it changes of each volume's usage to the
   * volume's quota record, checking the limits. Returns what to apply in memory after the commit.
   */
  async account(t: OpTxn): Promise<QuotaPlan | undefined> {
    const changes = await t.tx.volumeChanges();
    if (changes.length === 0) return undefined;
    const deltas = new Map<
      number,
      {
        bytes: number;
        inodes: number;
        released: number;
        recountedInodes: number;
        recountedBytes: number;
      }
    >();
    const plan: QuotaPlan = { released: new Map(), settled: [] };
    for (const { volume, before, after } of changes) {
      let delta = deltas.get(volume);
      if (!delta) {
        deltas.set(
          volume,
          delta = { bytes: 0, inodes: 0, released: 0, recountedInodes: 0, recountedBytes: 0 },
        );
      }
      // An orphan whose unlink took its usage off (`uncounted`) counts for nothing, until a
      // node holding it open writes it again (the flag goes, OpTxn.putInode): then its inode and
      // stored size count again (`recounted`: not checked against the limits, they were counted
      // before its unlink), and what the transaction changes beyond that is checked as usual.
      const counted = (record?: InodeRecord) => record !== undefined && !record.uncounted;
      const recount = before?.uncounted === true && counted(after);
      if ((!counted(before) && counted(after)) && !recount) delta.inodes++;
      if (counted(before) && !counted(after)) delta.inodes--;
      if (recount) delta.recountedInodes++;
      if (!isReg((after ?? before)!.mode)) continue;
      const oldSize = counted(before) || recount ? before!.size : 0;
      const newSize = counted(after) ? after!.size : 0;
      if (recount) delta.recountedBytes += oldSize;
      delta.bytes += newSize - oldSize;
      const ino = (after ?? before)!.ino;
      const claim = this.#claims.get(ino);
      if (!claim) continue;
      // The part of the claim (base, end] that the stored size now covers becomes used bytes,
      // and the reservation behind it goes back in the same commit; a deleted (or uncounted)
      // inode's whole claim goes back. A transaction that leaves the size alone settles nothing.
      const gone = !counted(after);
      const consumed = gone
        ? Math.max(0, claim.end - claim.base)
        : Math.max(0, Math.min(newSize, claim.end) - Math.max(oldSize, claim.base));
      if (consumed === 0 && !gone) continue;
      delta.released += consumed;
      plan.settled.push({ ino, volume, consumed, deleted: gone });
    }
    for (const [volume, delta] of deltas) {
      const quota = await t.tx.getQuota(volume);
      if (!quota) continue; // the volume is being deleted: nothing left to count
      const mine = quota.reserved[this.#node] ?? 0;
      const released = Math.min(Math.max(0, delta.released), mine);
      const usedInodes = Math.max(0, quota.usedInodes + delta.inodes + delta.recountedInodes);
      if (delta.inodes > 0 && quota.inodes > 0 && usedInodes > quota.inodes) {
        throw new FsError("EDQUOT", `volume inode limit ${quota.inodes} reached`);
      }
      const usedBytes = Math.max(0, quota.usedBytes + delta.recountedBytes + delta.bytes);
      const reservedAfter = totalReserved(quota) - released;
      const grown = delta.bytes - released;
      if (grown > 0 && usedBytes + reservedAfter > quota.capacityBytes) {
        throw new FsError(
          "EDQUOT",
          `volume capacity ${quota.capacityBytes} bytes: ${usedBytes} used and ` +
            `${reservedAfter} reserved would exceed it`,
        );
      }
      const next: QuotaRecord = {
        ...quota,
        usedBytes,
        usedInodes,
        reserved: { ...quota.reserved },
      };
      setReserved(next, this.#node, mine - released);
      t.tx.putQuota(volume, next);
      if (released > 0) plan.released.set(volume, released);
    }
    return plan;
  }

  /** After the commit of a transaction `account` planned: the node's grants and claims follow. */
  afterCommit(plan: QuotaPlan): void {
    for (const [volume, released] of plan.released) this.#grant(volume).granted -= released;
    for (const { ino, volume, consumed, deleted } of plan.settled) {
      const claim = this.#claims.get(ino);
      if (!claim) continue;
      const grant = this.#grant(volume);
      if (deleted) {
        this.#claims.delete(ino);
        grant.claimed -= Math.max(0, claim.end - claim.base);
        continue;
      }
      // Writes that came in while the transaction ran keep their claim beyond it.
      const taken = Math.min(consumed, Math.max(0, claim.end - claim.base));
      claim.base += taken;
      grant.claimed -= taken;
      if (claim.end <= claim.base) this.#claims.delete(ino);
    }
    for (const volume of plan.released.keys()) this.#releaseLater(volume);
  }

  /**
   * Before a write, fallocate or copy extends inode `ino` of `volume` (now `size` bytes long) to
   * `end`: claim the growth, reserving more of the volume's capacity if needed. EDQUOT when the
   * volume has no room; then nothing was written.
   */
  async claim(ino: number, volume: number, size: number, end: number): Promise<void> {
    let claim = this.#claims.get(ino);
    if (!claim) this.#claims.set(ino, claim = { volume, base: size, end: size });
    const grant = this.#grant(volume);
    for (;;) {
      const need = end - claim.end;
      if (need <= 0) return;
      if (grant.claimed + need <= grant.granted) {
        claim.end = end;
        grant.claimed += need;
        if (grant.timer !== undefined) clearTimeout(grant.timer);
        grant.timer = undefined;
        return;
      }
      await this.#reserve(volume, need);
      // The claim may have been settled (and dropped) while the reservation ran.
      const current = this.#claims.get(ino);
      if (!current) this.#claims.set(ino, claim = { volume, base: size, end: size });
      else claim = current;
    }
  }

  /** Reserve enough of `volume` for this node to claim `need` more bytes (EDQUOT if it has
   * not that much free). */
  #reserve(volume: number, need: number): Promise<void> {
    const grant = this.#grant(volume);
    const run = grant.chain.catch(() => {}).then(async () => {
      // A reservation that finished while this one waited may already cover it.
      const still = grant.claimed + need - grant.granted;
      if (still <= 0) return;
      const granted = await this.#core.txn(async (t) => {
        const quota = await t.tx.getQuota(volume);
        if (!quota) throw new FsError("ENOENT", `volume ${volume} was deleted`);
        const free = quota.capacityBytes - quota.usedBytes - totalReserved(quota);
        if (free < still) {
          throw new FsError(
            "EDQUOT",
            `volume capacity ${quota.capacityBytes} bytes reached (${quota.usedBytes} used, ` +
              `${totalReserved(quota)} reserved by writers)`,
          );
        }
        const amount = Math.min(free, Math.max(still, this.#reserveBytes));
        const next = { ...quota, reserved: { ...quota.reserved } };
        setReserved(next, this.#node, (quota.reserved[this.#node] ?? 0) + amount);
        t.tx.putQuota(volume, next);
        return amount;
      });
      grant.granted += granted;
    });
    grant.chain = run;
    return run;
  }

  /**
   * A truncate (setattr, O_TRUNC) stored `size`: growth claimed beyond it is gone with the data
   * (its reservation stays with the node as spare, returned after `releaseMs`).
   */
  truncated(ino: number, size: number): void {
    const claim = this.#claims.get(ino);
    if (!claim) return;
    const grant = this.#grant(claim.volume);
    const before = Math.max(0, claim.end - claim.base);
    claim.end = Math.min(claim.end, size);
    claim.base = Math.min(claim.base, size);
    const after = Math.max(0, claim.end - claim.base);
    grant.claimed += after - before;
    if (after === 0) this.#claims.delete(ino);
    this.#releaseLater(claim.volume);
  }

  /** The inode's last handle on this node closed (after its publish): its claim goes. */
  closed(ino: number): void {
    const claim = this.#claims.get(ino);
    if (!claim) return;
    this.#claims.delete(ino);
    const grant = this.#grant(claim.volume);
    grant.claimed -= Math.max(0, claim.end - claim.base);
    this.#releaseLater(claim.volume);
  }

  /** Spare reservation goes back once no write has claimed any for `releaseMs`. */
  #releaseLater(volume: number): void {
    const grant = this.#grant(volume);
    if (this.#closed || grant.granted <= grant.claimed || grant.timer !== undefined) return;
    grant.timer = setTimeout(() => {
      grant.timer = undefined;
      this.#release(volume).catch((error) =>
        console.error(`skyfs: returning reserved bytes of volume ${volume}: ${error}`)
      );
    }, this.#releaseMs);
    Deno.unrefTimer(grant.timer);
  }

  #release(volume: number): Promise<void> {
    const grant = this.#grant(volume);
    const run = grant.chain.catch(() => {}).then(async () => {
      const spare = grant.granted - grant.claimed;
      if (spare <= 0) return;
      // Taken off before the await, so a claim meanwhile cannot count on it.
      grant.granted -= spare;
      try {
        await this.#core.txn(async (t) => {
          const quota = await t.tx.getQuota(volume);
          if (!quota) return;
          const next = { ...quota, reserved: { ...quota.reserved } };
          setReserved(next, this.#node, (quota.reserved[this.#node] ?? 0) - spare);
          t.tx.putQuota(volume, next);
        });
      } catch (error) {
        grant.granted += spare;
        throw error;
      }
    });
    grant.chain = run;
    return run;
  }

  /** Unmount: every spare reservation goes back now (claims were stored by the flush before). */
  async close(): Promise<void> {
    this.#closed = true;
    for (const [volume, grant] of this.#grants) {
      if (grant.timer !== undefined) clearTimeout(grant.timer);
      grant.timer = undefined;
      await this.#release(volume).catch((error) =>
        console.error(`skyfs: returning reserved bytes of volume ${volume}: ${error}`)
      );
    }
  }

  /**
   * At start: reservations this node held before a crash are void (their writes were never
   * stored, and the local data beyond the stored size is cut at the next open). On one node
   * every reservation is this node's; in a cluster, those of nodes no longer in the membership
   * (their lease expired: crashed and not back) go too.
   */
  async dropStaleReservations(singleNode: boolean): Promise<number> {
    let dropped = 0;
    const quotas = await this.#core.ns.listQuotas();
    if (quotas.length === 0) return 0;
    const live = new Set(singleNode || !this.#liveNodes ? [] : await this.#liveNodes());
    live.delete(this.#node);
    const gone = (node: string) =>
      singleNode || node === this.#node || (this.#liveNodes && !live.has(node));
    for (const { id } of quotas) {
      await this.#core.txn(async (t) => {
        const quota = await t.tx.getQuota(id);
        if (!quota) return;
        const stale = Object.keys(quota.reserved).filter(gone);
        if (stale.length === 0) return;
        const next = { ...quota, reserved: { ...quota.reserved } };
        for (const node of stale) delete next.reserved[node];
        t.tx.putQuota(id, next);
        dropped += stale.length;
      });
    }
    return dropped;
  }

  /** For tests and the admin API: this node's grant of `volume`. */
  grantOf(volume: number): { granted: number; claimed: number } {
    const grant = this.#grants.get(volume);
    return { granted: grant?.granted ?? 0, claimed: grant?.claimed ?? 0 };
  }
}

export function totalReserved(quota: QuotaRecord): number {
  let sum = 0;
  for (const bytes of Object.values(quota.reserved)) sum += bytes;
  return sum;
}

function setReserved(quota: QuotaRecord, node: string, bytes: number): void {
  if (bytes > 0) quota.reserved[node] = bytes;
  else delete quota.reserved[node];
}
