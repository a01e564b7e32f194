/**
 * The namespace on a store with merges (MetaKV.merges, here the CURP state machine itself behind a
 * minimal MetaKV) and without (embedded): a directory's entry-change stamp goes as a merge with a
 * compare that ignores the merged bytes, and only on a store that has merges.
 * @module
 */

import assert from "node:assert/strict";
import { openEmbeddedKV } from "./embedded.ts";
import {
  decodeInode,
  encodeInode,
  type InodeRecord,
  keys,
  Namespace,
  ROOT_INO,
} from "./namespace.ts";
import type { MetaKV, RangeRequest, TxnRequest, TxnResponse } from "./kv.ts";
import { KvMachine } from "./curp/kv_machine.ts";

const enc = new TextEncoder();

/** The replicated state machine as a MetaKV with merges (txn and range only: what the
 * namespace calls here), recording every transaction. */
function machineKv(): { kv: MetaKV; txns: TxnRequest[]; machine: KvMachine } {
  const machine = new KvMachine();
  const txns: TxnRequest[] = [];
  let seq = 0;
  const run = (txn: TxnRequest): TxnResponse => {
    const r = machine.apply({ clientId: "t", seq: ++seq, firstUnacked: seq, txn }).result!;
    if (!r.ok) throw new Error(r.error);
    return r.txn;
  };
  const kv = {
    merges: true,
    txn: (txn: TxnRequest) => {
      txns.push(txn);
      return Promise.resolve(run(txn));
    },
    range: (r: RangeRequest) =>
      Promise.resolve((run({ success: [{ range: r }] }).responses[0] as { range: never }).range),
  } as unknown as MetaKV;
  return { kv, txns, machine };
}

function dirRecord(ino: number, nlink = 2): InodeRecord {
  const t = { sec: 1_700_000_000, nsec: 5 };
  return {
    ino,
    mode: 0o040755,
    uid: 0,
    gid: 0,
    nlink,
    rdev: 0,
    size: 4096,
    parent: ROOT_INO,
    generation: 1,
    atime: t,
    mtime: t,
    ctime: t,
    btime: t,
  };
}

/** What the vfs does for a create (or, with `directory`, a mkdir) in `dir`. */
async function create(ns: Namespace, dir: number, name: string, directory: boolean, sec: number) {
  const ino = await ns.allocIno();
  await ns.transact(async (tx) => {
    const parent = (await tx.getInode(dir))!;
    assert.equal(await tx.getDirent(dir, enc.encode(name)), undefined);
    tx.putInode({ ...dirRecord(ino), mode: directory ? 0o040755 : 0o100644 });
    tx.putDirent(dir, enc.encode(name), { ino, type: directory ? 0o040000 : 0o100000 });
    parent.mtime = parent.ctime = { sec, nsec: 0 };
    if (directory) parent.nlink++;
    tx.putInode(parent);
  });
}

Deno.test("namespace with merges: entry changes write the directory as a merge", async () => {
  const { kv, txns, machine } = machineKv();
  const ns = await Namespace.open(kv, { rootUid: 0, rootGid: 0 });
  const dir = await ns.allocIno();
  await ns.transact((tx) => {
    tx.putInode(dirRecord(dir));
    tx.putDirent(ROOT_INO, enc.encode("d"), { ino: dir, type: 0o040000 });
    return Promise.resolve();
  });
  const before = txns.length;
  await create(ns, dir, "f", false, 1_800_000_000);
  await create(ns, dir, "s", true, 1_800_000_002);
  await create(ns, dir, "g", false, 1_800_000_001); // an earlier clock: max keeps the later
  const mine = txns.slice(before).filter((t) => (t.success ?? []).length > 1);
  assert.equal(mine.length, 3);
  for (const txn of mine) {
    const ops = txn.success!;
    assert.ok(ops.some((op) => "merge" in op), "the directory went as a merge");
    assert.ok(
      !ops.some((op) =>
        "put" in op && keys.inode(dir).every((b, i) => op.put.key[i] === b) &&
        op.put.key.length === keys.inode(dir).length
      ),
    );
    const masked = txn.compare!.find((c) => c.target === "value" && c.ignore !== undefined);
    assert.ok(masked, "the directory's compare ignores the merged bytes");
    assert.ok(txn.compare!.some((c) => c.target === "version" && c.value === 0));
  }
  const stored = decodeInode(
    dir,
    machine.dump().find((kv) =>
      kv.key.length === keys.inode(dir).length && kv.key.every((b, i) => b === keys.inode(dir)[i])
    )!.value,
  );
  assert.equal(stored.nlink, 3);
  assert.deepEqual(stored.mtime, { sec: 1_800_000_002, nsec: 0 });
  assert.deepEqual(stored.ctime, { sec: 1_800_000_002, nsec: 0 });
  // The namespace's cache agrees with the store (it merged the same way).
  assert.deepEqual(await ns.getInode(dir), stored);
});

Deno.test("namespace without merges (embedded): the directory is put whole", async () => {
  const dir0 = await Deno.makeTempDir({ prefix: "ns-merge-" });
  const kv = await openEmbeddedKV(`${dir0}/meta.db`);
  const txns: TxnRequest[] = [];
  const wrapped = new Proxy(kv, {
    get(target, prop, receiver) {
      const value = Reflect.get(target, prop, receiver);
      if (prop === "txn") {
        return (txn: TxnRequest) => {
          txns.push(txn);
          return kv.txn(txn);
        };
      }
      return typeof value === "function" ? value.bind(target) : value;
    },
  }) as MetaKV;
  try {
    assert.equal((kv as MetaKV).merges, undefined);
    const ns = await Namespace.open(wrapped, { rootUid: 0, rootGid: 0 });
    const dir = await ns.allocIno();
    await ns.transact((tx) => {
      tx.putInode(dirRecord(dir));
      tx.putDirent(ROOT_INO, enc.encode("d"), { ino: dir, type: 0o040000 });
      return Promise.resolve();
    });
    await create(ns, dir, "s", true, 1_800_000_000);
    for (const txn of txns) {
      assert.ok(!(txn.success ?? []).some((op) => "merge" in op));
      assert.ok(!(txn.compare ?? []).some((c) => c.target === "value" && c.ignore));
    }
    assert.equal((await ns.getInode(dir))!.nlink, 3);
  } finally {
    await kv.close();
    await Deno.remove(dir0, { recursive: true });
  }
});

Deno.test("namespace: a late echo of an older own write of an inode record keeps the cache", async () => {
  const { kv } = machineKv();
  const ns = await Namespace.open(kv, { rootUid: 0, rootGid: 0, validateReads: true });
  const dir = await ns.allocIno();
  await ns.transact((tx) => {
    tx.putInode(dirRecord(dir));
    tx.putDirent(ROOT_INO, enc.encode("d"), { ino: dir, type: 0o040000 });
    return Promise.resolve();
  });
  const seen: Uint8Array[] = [];
  for (let i = 0; i < 3; i++) {
    await create(ns, dir, `f${i}`, false, 1_800_000_000 + i);
    seen.push((await ns.get(keys.inode(dir))).value!);
  }
  // The echoes of the first two creates arrive after the third is cached: still this node's.
  assert.equal(ns.watched(keys.inode(dir), seen[0]), true);
  assert.equal(ns.watched(keys.inode(dir), seen[1]), true);
  // Another node's change of the record is not: the key leaves the cache.
  const theirs = encodeInode({ ...(await ns.getInode(dir))!, mode: 0o040700 });
  assert.equal(ns.watched(keys.inode(dir), theirs), false);
});
