/** Tests of the namespace encoding, the optimistic transaction and inode allocation. */

import assert from "node:assert/strict";
import { openEmbeddedKV } from "./embedded.ts";
import {
  decodeInode,
  dentryKeyString,
  direntIno,
  encodeInode,
  inodeKeyString,
  type InodeRecord,
  keys,
  keyString,
  Namespace,
  ROOT_INO,
  systemNow,
  TxnConflictError,
} from "./namespace.ts";
import type { MetaKV, TxnRequest } from "./kv.ts";
import * as libc from "../io/libc.ts";

const name = (s: string) => new TextEncoder().encode(s);

function fileRecord(ino: number, extra: Partial<InodeRecord> = {}): InodeRecord {
  const t = { sec: 1_700_000_000, nsec: 123_456_789 };
  return {
    ino,
    mode: 0o100644,
    uid: 1000,
    gid: 1000,
    nlink: 1,
    rdev: 0,
    size: 0,
    parent: 0,
    generation: 1,
    atime: t,
    mtime: t,
    ctime: t,
    btime: t,
    ...extra,
  };
}

Deno.test("inode records round-trip, including >4 GiB sizes, negative times and targets", () => {
  const record = fileRecord(2 ** 40 + 3, {
    size: 2 ** 52 + 1,
    atime: { sec: -5, nsec: 999_999_999 },
    rdev: 0x0801,
    target: name("a/b/c"),
  });
  assert.deepEqual(decodeInode(record.ino, encodeInode(record)), record);
  assert.throws(() => decodeInode(1, new Uint8Array(10)), /upgrade skyfs/);
});

Deno.test("inode records: the uncounted flag (byte 44 bit 0) round-trips beside the volume id", () => {
  const record = fileRecord(7, { nlink: 0, volume: 0x12_3456, uncounted: true });
  const bytes = encodeInode(record);
  assert.equal(bytes[44], 1);
  assert.deepEqual(decodeInode(7, bytes), record);
  const counted = encodeInode(fileRecord(7, { nlink: 0, volume: 3 }));
  assert.equal(counted[44], 0);
  assert.equal(decodeInode(7, counted).uncounted, undefined);
});

Deno.test("keys sort a directory's entries together and after its inode number", () => {
  const a = keys.dentry(5, name("zz"));
  const b = keys.dentry(6, name("aa"));
  assert.ok(Buffer.compare(a, b) < 0);
  assert.ok(Buffer.compare(keys.inode(255), keys.inode(256)) < 0);
});

Deno.test("open creates the root once; a second open keeps it", async () => {
  const kv = await openEmbeddedKV(":memory:");
  try {
    const ns = await Namespace.open(kv, { rootUid: 7, rootGid: 8 });
    const root = await ns.getInode(ROOT_INO);
    assert.equal(root?.mode, 0o40755);
    assert.equal(root?.uid, 7);
    assert.equal(root?.nlink, 2);
    const again = await Namespace.open(kv, { rootUid: 9 });
    assert.equal((await again.getInode(ROOT_INO))?.uid, 7);
  } finally {
    await kv.close();
  }
});

Deno.test("a newer namespace format is refused with a clear message", async () => {
  const kv = await openEmbeddedKV(":memory:");
  try {
    await kv.put({ key: keys.format(), value: name('{"format":99}') });
    await assert.rejects(Namespace.open(kv), /format .*99.*upgrade skyfs/);
  } finally {
    await kv.close();
  }
});

Deno.test("inode numbers are unique, ranged, and never reused after reopen", async () => {
  const kv = await openEmbeddedKV(":memory:");
  try {
    const ns = await Namespace.open(kv, { inoRangeSize: 4 });
    const got = await Promise.all(Array.from({ length: 10 }, () => ns.allocIno()));
    assert.equal(new Set(got).size, 10);
    assert.ok(got.every((ino) => ino > ROOT_INO));
    const ns2 = await Namespace.open(kv, { inoRangeSize: 4 });
    const next = await ns2.allocIno();
    assert.ok(next > Math.max(...got), `${next} must be above ${Math.max(...got)}`);
  } finally {
    await kv.close();
  }
});

Deno.test("transact commits writes, reads its own writes, and caches", async () => {
  const kv = await openEmbeddedKV(":memory:");
  try {
    const ns = await Namespace.open(kv);
    const ino = await ns.allocIno();
    await ns.transact(async (tx) => {
      assert.equal(await tx.getDirent(ROOT_INO, name("f")), undefined);
      tx.putInode(fileRecord(ino));
      tx.putDirent(ROOT_INO, name("f"), { ino, type: 0o100000 });
      assert.equal((await tx.getDirent(ROOT_INO, name("f")))?.ino, ino);
      assert.equal(await tx.dirIsEmpty(ROOT_INO), false);
    });
    assert.deepEqual(await ns.getDirent(ROOT_INO, name("f")), { ino, type: 0o100000 });
    assert.deepEqual(await ns.listDir(ROOT_INO), [{ name: name("f"), ino, type: 0o100000 }]);
    const fresh = await Namespace.open(kv);
    assert.equal((await fresh.getInode(ino))?.uid, 1000);
  } finally {
    await kv.close();
  }
});

Deno.test("a conflicting writer makes the operation rerun on fresh reads", async () => {
  const kv = await openEmbeddedKV(":memory:");
  try {
    const ns = await Namespace.open(kv);
    const other = await Namespace.open(kv);
    const ino = await ns.allocIno();
    await ns.transact((tx) => Promise.resolve(tx.putInode(fileRecord(ino, { nlink: 1 }))));
    let runs = 0;
    await ns.transact(async (tx) => {
      runs++;
      const record = (await tx.getInode(ino))!;
      if (runs === 1) {
        // Another writer bumps nlink between our read and our commit.
        await other.transact(async (otx) => {
          const r = (await otx.getInode(ino))!;
          otx.putInode({ ...r, nlink: r.nlink + 1 });
        });
      }
      tx.putInode({ ...record, nlink: record.nlink + 1 });
    });
    assert.equal(runs, 2);
    const fresh = await Namespace.open(kv);
    assert.equal((await fresh.getInode(ino))?.nlink, 3);
  } finally {
    await kv.close();
  }
});

Deno.test("an operation that always conflicts fails with TxnConflictError", async () => {
  const kv = await openEmbeddedKV(":memory:");
  try {
    const ns = await Namespace.open(kv, { maxAttempts: 3 });
    const ino = await ns.allocIno();
    await ns.transact((tx) => Promise.resolve(tx.putInode(fileRecord(ino))));
    await assert.rejects(
      ns.transact(async (tx) => {
        const record = (await tx.getInode(ino))!;
        await bump(kv, ino);
        tx.putInode(record);
      }),
      TxnConflictError,
    );
  } finally {
    await kv.close();
  }
});

async function bump(kv: MetaKV, ino: number): Promise<void> {
  const found = await kv.range({ key: keys.inode(ino) });
  await kv.put({ key: keys.inode(ino), value: found.kvs[0].value });
}

Deno.test("deleteInode drops xattrs and the orphan mark; orphans are listed", async () => {
  const kv = await openEmbeddedKV(":memory:");
  try {
    const ns = await Namespace.open(kv);
    const ino = await ns.allocIno();
    await ns.transact((tx) => {
      tx.putInode(fileRecord(ino, { nlink: 0 }));
      tx.putXattr(ino, "user.a", name("1"));
      tx.putXattr(ino, "user.bb", name("22"));
      tx.addOrphan(ino);
      return Promise.resolve();
    });
    assert.deepEqual(await ns.listOrphans(), [ino]);
    const listed = await ns.transact((tx) => tx.listXattrs(ino));
    assert.deepEqual(listed, [{ name: "user.a", size: 1 }, { name: "user.bb", size: 2 }]);
    assert.deepEqual(await ns.transact((tx) => tx.getXattr(ino, "user.a")), name("1"));
    await ns.transact((tx) => Promise.resolve(tx.deleteInode(ino)));
    assert.deepEqual(await ns.listOrphans(), []);
    assert.equal(await ns.getInode(ino), undefined);
    assert.equal(await ns.transact((tx) => tx.getXattr(ino, "user.a")), undefined);
    assert.equal((await kv.range({ key: keys.xattr(ino, "user.bb") })).kvs.length, 0);
    assert.equal((await ns.existingInodes()).has(ino), false);
  } finally {
    await kv.close();
  }
});

Deno.test("a slow read never resurrects a key deleted meanwhile in the cache", async () => {
  const kv = await openEmbeddedKV(":memory:");
  try {
    const ns = await Namespace.open(kv);
    const ino = await ns.allocIno();
    await ns.transact((tx) => Promise.resolve(tx.putInode(fileRecord(ino))));
    ns.invalidate();
    const slow = ns.getInode(ino); // reads the store (cache was dropped)
    await ns.transact((tx) => Promise.resolve(tx.deleteInode(ino)));
    await slow;
    assert.equal(await ns.getInode(ino), undefined);
  } finally {
    await kv.close();
  }
});

Deno.test("a directory this namespace created answers lookups of missing names without the store, until another writer's change", async () => {
  const inner = await openEmbeddedKV(":memory:");
  // Counts the store reads the namespace makes (every read goes through txn or range).
  const counted = countingKv(inner);
  const kv = counted.kv;
  try {
    const ns = await Namespace.open(kv);
    const other = await Namespace.open(inner);
    const dir = await ns.allocIno();
    await ns.transact((tx) => {
      tx.putInode(fileRecord(dir, { mode: 0o040755, nlink: 2 }));
      tx.putDirent(ROOT_INO, name("d"), { ino: dir, type: 0o040000 });
      tx.newDirectory(dir);
      return Promise.resolve();
    });
    counted.reads = 0;
    assert.equal(await ns.getDirent(dir, name("missing")), undefined);
    assert.equal(await ns.getDirent(dir, name("another")), undefined);
    assert.equal(counted.reads, 0, "a lookup in a directory known complete went to the store");
    // Another writer adds a name; this namespace's watch reports it (here: by hand).
    const ino = await other.allocIno();
    await other.transact((tx) => {
      tx.putDirent(dir, name("theirs"), { ino, type: 0o100000 });
      return Promise.resolve();
    });
    ns.watched(keys.dentry(dir, name("theirs")), new Uint8Array([1]));
    assert.deepEqual(await ns.getDirent(dir, name("theirs")), { ino, type: 0o100000 });
    assert.ok(
      counted.reads > 0,
      "after another writer's change the directory is no longer complete",
    );
  } finally {
    await inner.close();
  }
});

Deno.test("a watch event of this namespace's own write that beats its commit's reply keeps the cache", async () => {
  const inner = await openEmbeddedKV(":memory:");
  let ns: Namespace | undefined;
  let echo: string | undefined;
  // The store applies a write and its watch reports it before the txn's reply reaches the client
  // (a CURP fast path waits for the slowest witness; the leader's watch can be faster).
  const counted = countingKv(inner, (args) => {
    for (const op of (args[0] as TxnRequest).success ?? []) {
      if ("put" in op && new TextDecoder().decode(op.put.key) === echo) {
        ns!.watched(op.put.key, op.put.value);
      }
    }
  });
  const kv = counted.kv;
  try {
    ns = await Namespace.open(kv, { validateReads: true });
    const dir = await ns.allocIno();
    await ns.transact((tx) => {
      tx.putInode(fileRecord(dir, { mode: 0o040755, nlink: 2 }));
      tx.putDirent(ROOT_INO, name("d"), { ino: dir, type: 0o040000 });
      tx.newDirectory(dir);
      return Promise.resolve();
    });
    const file = await ns.allocIno();
    echo = new TextDecoder().decode(keys.dentry(dir, name("f")));
    await ns.transact((tx) => {
      tx.putInode(fileRecord(file));
      tx.putDirent(dir, name("f"), { ino: file, type: 0o100000 });
      return Promise.resolve();
    });
    echo = undefined;
    counted.reads = 0;
    assert.deepEqual(await ns.getDirent(dir, name("f")), { ino: file, type: 0o100000 });
    assert.equal(await ns.getDirent(dir, name("missing")), undefined);
    assert.equal(counted.reads, 0, "the early echo of its own write made the directory incomplete");
    // Someone else's value for a key it is not writing still leaves the cache.
    ns.watched(keys.dentry(dir, name("theirs")), new Uint8Array([1]));
    await ns.getDirent(dir, name("theirs")).catch(() => undefined);
    assert.ok(counted.reads > 0, "another writer's change must still be read from the store");
  } finally {
    await inner.close();
  }
});

Deno.test("a late echo of an own directory entry removed since keeps the cache and the directory complete; an identical entry written later by another writer does not", async () => {
  const inner = await openEmbeddedKV(":memory:");
  const counted = countingKv(inner);
  try {
    const ns = await Namespace.open(counted.kv, { validateReads: true });
    const other = await Namespace.open(inner);
    const dir = await ns.allocIno();
    await ns.transact((tx) => {
      tx.putInode(fileRecord(dir, { mode: 0o040755, nlink: 2 }));
      tx.putDirent(ROOT_INO, name("d"), { ino: dir, type: 0o040000 });
      tx.newDirectory(dir);
      return Promise.resolve();
    });
    // git: an object's temporary name created, then removed within milliseconds.
    const file = await ns.allocIno();
    const key = keys.dentry(dir, name("tmp_obj"));
    await ns.transact((tx) => {
      tx.putInode(fileRecord(file));
      tx.putDirent(dir, name("tmp_obj"), { ino: file, type: 0o100000 });
      return Promise.resolve();
    });
    const created = (await inner.range({ key })).kvs[0].value;
    await ns.transact(async (tx) => {
      await tx.getDirent(dir, name("tmp_obj"));
      tx.deleteDirent(dir, name("tmp_obj"));
    });
    // The create's echo arrives after the removal was cached, then the removal's own.
    assert.equal(ns.watched(key, created), true, "the create's late echo is this node's own");
    assert.equal(ns.watched(key, undefined), true, "and so is the removal's");
    counted.reads = 0;
    assert.equal(await ns.getDirent(dir, name("tmp_obj")), undefined);
    assert.equal(await ns.getDirent(dir, name("missing")), undefined);
    assert.equal(counted.reads, 0, "the directory stays complete");
    // Another writer puts the very same bytes back (a rename back of that inode): each own
    // write matched one echo, so this one is theirs and is read from the store.
    await other.transact((tx) => {
      tx.putDirent(dir, name("tmp_obj"), { ino: file, type: 0o100000 });
      return Promise.resolve();
    });
    assert.equal(ns.watched(key, created), false, "another writer's identical entry");
    assert.deepEqual(await ns.getDirent(dir, name("tmp_obj")), { ino: file, type: 0o100000 });
    assert.ok(counted.reads > 0, "read from the store");
  } finally {
    await inner.close();
  }
});

Deno.test("a directory listing is kept until an entry of it changes: own commits and watch events drop it", async () => {
  const inner = await openEmbeddedKV(":memory:");
  let duringScan: (() => void) | undefined;
  const counted = countingKv(inner, (args) => {
    // A watch event that arrives while a listing is being read (after the store answered).
    if (duringScan && !("success" in (args[0] as object))) {
      const call = duringScan;
      duringScan = undefined;
      call();
    }
  });
  const list = async (ns: Namespace, dir: number) =>
    (await ns.listDir(dir)).map((entry) => new TextDecoder().decode(entry.name));
  try {
    const ns = await Namespace.open(counted.kv, { validateReads: true });
    const other = await Namespace.open(inner);
    const dir = await ns.allocIno();
    const file = await ns.allocIno();
    await ns.transact((tx) => {
      tx.putDirent(dir, name("a"), { ino: file, type: 0o100000 });
      return Promise.resolve();
    });
    assert.deepEqual(await list(ns, dir), ["a"]);
    counted.reads = 0;
    const again = await ns.listDir(dir);
    assert.deepEqual(again.map((e) => e.ino), [file]);
    assert.equal(counted.reads, 0, "an unchanged directory's second listing went to the store");
    again[0].ino = 99; // the caller's copy: the kept listing is not changed by it
    assert.deepEqual((await ns.listDir(dir)).map((e) => e.ino), [file]);

    // This namespace's own create and unlink show at once.
    await ns.transact((tx) => {
      tx.putDirent(dir, name("b"), { ino: file + 1, type: 0o100000 });
      return Promise.resolve();
    });
    assert.deepEqual(await list(ns, dir), ["a", "b"]);
    await ns.transact((tx) => {
      tx.deleteDirent(dir, name("a"));
      return Promise.resolve();
    });
    assert.deepEqual(await list(ns, dir), ["b"]);

    // Another writer's change shows once its watch event arrived (here: by hand).
    await other.transact((tx) => {
      tx.putDirent(dir, name("c"), { ino: file + 2, type: 0o100000 });
      return Promise.resolve();
    });
    ns.watched(keys.dentry(dir, name("c")), new Uint8Array([1]));
    assert.deepEqual(await list(ns, dir), ["b", "c"]);

    // A change whose event arrives while the listing is read: that listing is not kept.
    await other.transact((tx) => {
      tx.putDirent(dir, name("d"), { ino: file + 3, type: 0o100000 });
      return Promise.resolve();
    });
    duringScan = () => ns.watched(keys.dentry(dir, name("d")), new Uint8Array([1]));
    ns.watched(keys.dentry(dir, name("c")), undefined); // drop the kept listing first
    await list(ns, dir);
    counted.reads = 0;
    assert.deepEqual(await list(ns, dir), ["b", "c", "d"]);
    assert.equal(counted.reads, 1, "a listing read while an entry changed was kept");
  } finally {
    await inner.close();
  }
});

Deno.test("a directory this node made and watched since is listed from the cache: no read of the store until another writer changes it", async () => {
  const inner = await openEmbeddedKV(":memory:");
  const counted = countingKv(inner);
  const remote = new Proxy(counted.kv, {
    get: (target, prop, receiver) =>
      prop === "scan" ? undefined : Reflect.get(target, prop, receiver),
  }) as MetaKV;
  const list = async (ns: Namespace, dir: number) =>
    (await ns.listDir(dir)).map((e) => `${new TextDecoder().decode(e.name)}=${e.ino}:${e.type}`);
  try {
    const ns = await Namespace.open(remote, { validateReads: true });
    const other = await Namespace.open(inner);
    const dir = await ns.allocIno();
    const file = await ns.allocIno();
    await ns.transact((tx) => {
      tx.putDirent(ROOT_INO, name("d"), { ino: dir, type: 0o040000 });
      tx.newDirectory(dir);
      return Promise.resolve();
    });
    counted.reads = 0;
    assert.deepEqual(await list(ns, dir), []);
    // Own creates (names out of order, one past 0x7f), an unlink, a known-absent lookup.
    await ns.transact((tx) => {
      tx.putDirent(dir, name("tmp_b"), { ino: file, type: 0o100000 });
      return Promise.resolve();
    });
    await ns.transact((tx) => {
      tx.putDirent(dir, name("\u00e9"), { ino: file + 1, type: 0o100000 });
      tx.putDirent(dir, name("a"), { ino: file + 2, type: 0o120000 });
      return Promise.resolve();
    });
    await ns.transact((tx) => {
      tx.deleteDirent(dir, name("tmp_b"));
      return Promise.resolve();
    });
    assert.equal(await ns.getDirent(dir, name("nope")), undefined);
    assert.deepEqual(await list(ns, dir), [
      `a=${file + 2}:${0o120000}`,
      `\u00e9=${file + 1}:${0o100000}`,
    ]);
    assert.equal(counted.reads, 3, "only the three commits: a listing read the store");
    // The same listing through scanDir (what READDIRPLUS takes).
    const seen: string[] = [];
    await ns.scanDir(dir, (key, nameAt, dirent) => {
      seen.push(`${new TextDecoder().decode(key.subarray(nameAt))}=${direntIno(dirent)}`);
    });
    assert.deepEqual(seen, [`a=${file + 2}`, `\u00e9=${file + 1}`]);
    assert.equal(counted.reads, 3);

    // Another writer's change ends the completeness once its watch event arrived: the store is
    // read again, and shows it.
    await other.transact((tx) => {
      tx.putDirent(dir, name("c"), { ino: file + 3, type: 0o100000 });
      return Promise.resolve();
    });
    assert.equal(ns.watched(keys.dentry(dir, name("c")), new Uint8Array([1])), false);
    counted.reads = 0;
    assert.deepEqual((await ns.listDir(dir)).map((e) => new TextDecoder().decode(e.name)), [
      "a",
      "c",
      "\u00e9",
    ]);
    assert.equal(counted.reads, 1);
  } finally {
    await inner.close();
  }
});

/** `inner` with its txn and range calls counted (`reads`); `after` sees each call's arguments once
 * it resolved (before the caller does). */
Deno.test("scanDir on a store without scan (a cluster node's) visits the kept listing: an unchanged directory is read once", async () => {
  const inner = await openEmbeddedKV(":memory:");
  const counted = countingKv(inner);
  // A remote store has no in-process scan: hide the embedded one.
  const remote = new Proxy(counted.kv, {
    get: (target, prop, receiver) =>
      prop === "scan" ? undefined : Reflect.get(target, prop, receiver),
  }) as MetaKV;
  const scan = async (ns: Namespace, dir: number) => {
    const seen: string[] = [];
    await ns.scanDir(dir, (key, nameAt, dirent) => {
      seen.push(`${new TextDecoder().decode(key.subarray(nameAt))}=${direntIno(dirent)}`);
    });
    return seen;
  };
  try {
    const ns = await Namespace.open(remote, { validateReads: true });
    const dir = await ns.allocIno();
    const file = await ns.allocIno();
    await ns.transact((tx) => {
      tx.putDirent(dir, name("a"), { ino: file, type: 0o100000 });
      tx.putDirent(dir, name("b"), { ino: file + 1, type: 0o100000 });
      return Promise.resolve();
    });
    assert.deepEqual(await scan(ns, dir), [`a=${file}`, `b=${file + 1}`]);
    counted.reads = 0;
    assert.deepEqual(await scan(ns, dir), [`a=${file}`, `b=${file + 1}`]);
    assert.equal(counted.reads, 0, "an unchanged directory's second scan went to the store");
    await ns.transact((tx) => {
      tx.deleteDirent(dir, name("a"));
      return Promise.resolve();
    });
    assert.deepEqual(await scan(ns, dir), [`b=${file + 1}`]);
  } finally {
    await inner.close();
  }
});

function countingKv(
  inner: MetaKV,
  after?: (args: unknown[]) => void,
): { kv: MetaKV; reads: number } {
  const counted = { kv: inner, reads: 0 };
  counted.kv = new Proxy(inner, {
    get(target, prop, receiver) {
      const value = Reflect.get(target, prop, receiver);
      if (prop === "txn" || prop === "range") {
        return async (...args: unknown[]) => {
          counted.reads++;
          const result = await (value as (...a: unknown[]) => Promise<unknown>).apply(target, args);
          after?.(args);
          return result;
        };
      }
      return typeof value === "function" ? value.bind(target) : value;
    },
  }) as MetaKV;
  return counted;
}

Deno.test("chunk maps up to 96 KiB stay in the cache (own writes recognised by the watch), 64 MiB of them in all; larger ones are not cached", async () => {
  const inner = await openEmbeddedKV(":memory:");
  const counted = countingKv(inner);
  try {
    const ns = await Namespace.open(counted.kv);
    const map = new Uint8Array(90 << 10).fill(0x41);
    const tooBig = new Uint8Array((96 << 10) + 1).fill(0x42);
    await ns.transact((tx) => {
      tx.putChunkMap(7, map);
      tx.putChunkMap(8, tooBig);
      return Promise.resolve();
    });
    counted.reads = 0;
    assert.deepEqual((await ns.get(keys.chunkMap(7))).value, map);
    assert.equal(counted.reads, 0, "a 90 KiB chunk map this node wrote was read from the store");
    assert.equal(ns.watched(keys.chunkMap(7), map), true, "its own write coming back");
    assert.deepEqual((await ns.get(keys.chunkMap(8))).value, tooBig);
    assert.equal(counted.reads, 1, "a map over 96 KiB is not cached");
    // Another writer's change leaves the cache: the next read goes to the store.
    assert.equal(ns.watched(keys.chunkMap(7), tooBig), false);
    await ns.get(keys.chunkMap(7));
    assert.equal(counted.reads, 2);
    // 64 MiB in all: 800 maps of 90 KiB keep only the newest ~728 (the oldest leave first).
    await ns.transact((tx) => {
      for (let ino = 100; ino < 900; ino++) tx.putChunkMap(ino, map);
      return Promise.resolve();
    });
    counted.reads = 0;
    await ns.get(keys.chunkMap(899));
    assert.equal(counted.reads, 0, "the newest map was dropped");
    await ns.get(keys.chunkMap(100));
    assert.equal(counted.reads, 1, "the oldest map was kept over 64 MiB");
  } finally {
    await inner.close();
  }
});

Deno.test("the inode cache key built without bytes is the key's own string", () => {
  for (const ino of [1, 2, 255, 256, 0x1234_5678, 2 ** 32 - 1, 2 ** 32, 2 ** 40 + 3, 2 ** 53 - 1]) {
    assert.equal(inodeKeyString(ino), keyString(keys.inode(ino)), `inode ${ino}`);
  }
});

/** The record layout as written before session 11's encoder (DataView, a BigInt per 64-bit field):
 * the encoder without them must write the same bytes. */
function referenceEncode(record: InodeRecord): Uint8Array {
  const target = record.target ?? new Uint8Array(0);
  const out = new Uint8Array(96 + target.length);
  const view = new DataView(out.buffer);
  view.setUint8(0, 1);
  view.setUint32(4, record.mode, true);
  view.setUint32(8, record.uid, true);
  view.setUint32(12, record.gid, true);
  view.setUint32(16, record.nlink, true);
  view.setUint32(20, record.rdev, true);
  view.setBigUint64(24, BigInt(record.size), true);
  view.setBigUint64(32, BigInt(record.parent), true);
  view.setUint32(40, record.generation, true);
  const volume = record.volume ?? 0;
  out[45] = volume & 0xff;
  out[46] = (volume >>> 8) & 0xff;
  out[47] = (volume >>> 16) & 0xff;
  [record.atime, record.mtime, record.ctime, record.btime].forEach((time, i) => {
    view.setBigInt64(48 + 12 * i, BigInt(time.sec), true);
    view.setUint32(56 + 12 * i, time.nsec, true);
  });
  out.set(target, 96);
  return out;
}

Deno.test("encodeInode: the same bytes as the BigInt encoder, at the edges of every field", () => {
  const edges: InodeRecord[] = [
    {
      ino: 2 ** 53 - 1,
      mode: 0o120777,
      uid: 0xffff_ffff,
      gid: 0xffff_fffe,
      nlink: 0xffff_ffff,
      rdev: 0x8000_0001,
      size: 2 ** 53 - 1,
      parent: 2 ** 40 + 3,
      generation: 0xffff_ffff,
      volume: 0xff_ffff,
      atime: { sec: -1, nsec: 999_999_999 },
      mtime: { sec: -(2 ** 40) - 5, nsec: 0 },
      ctime: { sec: 2 ** 52 + 1, nsec: 1 },
      btime: { sec: 0xffff_ffff, nsec: 123 },
      target: name("some/link/target"),
    },
    {
      ino: 1,
      mode: 0o40755,
      uid: 0,
      gid: 0,
      nlink: 2,
      rdev: 0,
      size: 0,
      parent: 1,
      generation: 0,
      atime: { sec: 0, nsec: 0 },
      mtime: { sec: 1_765_000_000, nsec: 5 },
      ctime: { sec: -(2 ** 31), nsec: 7 },
      btime: { sec: 2 ** 32, nsec: 8 },
    },
  ];
  for (const record of edges) {
    const bytes = encodeInode(record);
    assert.deepEqual(bytes, referenceEncode(record));
    const back = decodeInode(record.ino, bytes);
    assert.deepEqual(back, record);
  }
});

Deno.test("dentryKeyString is keyString of the entry's key", () => {
  for (const parent of [1, 255, 2 ** 32 + 7, 2 ** 53 - 1]) {
    for (const entry of [name("a"), name("x".repeat(255)), new Uint8Array([0, 200, 255])]) {
      assert.equal(dentryKeyString(parent, entry), keyString(keys.dentry(parent, entry)));
    }
  }
});

Deno.test("systemNow is never ahead of the kernel's clock (a write's mtime right after)", async () => {
  // The kernel's clock as ext4 stamps a change (mtime = ctime). It stamps with its coarse clock (up
  // to a tick behind the real time) unless the file's times were read since the last change and
  // the coarse clock is not past them (multigrain timestamps, Linux 6.13+: ext4, xfs, btrfs,
  // tmpfs): then with the fine clock. So each round writes twice, reading the times after each:
  // the second write's mtime is the fine clock's, or a tick's that came after the first write;
  // either way not before the stamp taken ahead of both. Before session 12 the stamps' digits
  // below the millisecond were `performance.now() % 1`: 1706 of 2000 were ahead, by up to 0.8 ms.
  const dir = await Deno.makeTempDir({ prefix: "systemnow-" });
  const fd = libc.open(`${dir}/f`, libc.O_RDWR | libc.O_CREAT);
  try {
    const byte = new Uint8Array(1);
    const write = () => {
      libc.pwrite(fd, byte, 0);
      const st = libc.fstat(fd);
      return { sec: st.mtimeSec, nsec: st.mtimeNsec };
    };
    let previous = write();
    for (let i = 0; i < 20; i++) {
      const mtime = write();
      if (mtime.sec === previous.sec && mtime.nsec === previous.nsec) {
        console.log(`skipped: ${dir} stamps changes with a coarse clock (no multigrain times)`);
        return;
      }
      previous = mtime;
    }
    const rounds = 2000;
    let ahead = 0;
    let most = 0;
    for (let i = 0; i < rounds; i++) {
      const stamp = systemNow();
      write();
      const kernel = write();
      const by = (stamp.sec - kernel.sec) * 1e9 + stamp.nsec - kernel.nsec;
      if (by > 0) {
        ahead++;
        most = Math.max(most, by);
      }
    }
    assert.equal(
      ahead,
      0,
      `${ahead} of ${rounds} stamps ahead of the kernel's, by up to ${most} ns`,
    );
  } finally {
    libc.close(fd);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("systemNow never goes backwards and never repeats", () => {
  let last = systemNow();
  for (let i = 0; i < 100_000; i++) {
    const now = systemNow();
    assert.ok(now.nsec >= 0 && now.nsec < 1e9 && Number.isInteger(now.nsec));
    assert.ok(
      now.sec > last.sec || (now.sec === last.sec && now.nsec > last.nsec),
      `${JSON.stringify(now)} after ${JSON.stringify(last)}`,
    );
    last = now;
  }
});
