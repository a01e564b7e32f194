import assert from "node:assert/strict";
import { openEmbeddedKV } from "../meta/embedded.ts";
import { ClusterLocks, lockPrefix, type MirroredLock } from "./cluster_lock.ts";
import { prefixEnd } from "../meta/kv.ts";

const write = (start: number, end: number): MirroredLock => ({
  kind: "posix",
  type: 1,
  start,
  end,
  pid: 7,
});

Deno.test("cluster locks: a node sees the other's locks, and a stale view cannot grant", async () => {
  const kv = await openEmbeddedKV(":memory:");
  try {
    const leaseA = (await kv.leaseGrant(60)).id;
    const a = new ClusterLocks(kv, "a", () => Promise.resolve(leaseA));
    const b = new ClusterLocks(kv, "b", () => Promise.resolve(leaseA));
    const viewB = await b.read(5);
    const viewA = await a.read(5);
    assert.deepEqual(viewA.others, []);
    assert.equal(await a.grant(5, [write(0, 9)], viewA), true);
    assert.deepEqual((await b.read(5)).others, [write(0, 9)]);
    assert.deepEqual((await a.read(5)).others, [], "a node's own key is not another's");
    // B decided on a view from before A's grant: the guard moved, so B must read again.
    assert.equal(await b.grant(5, [write(20, 29)], viewB), false);
    assert.equal(await b.grant(5, [write(20, 29)], await b.read(5)), true);
    assert.deepEqual((await a.read(5)).others, [write(20, 29)]);
  } finally {
    await kv.close();
  }
});

Deno.test("cluster locks: a waiter wakes at a release, and at the holder's lease end", async () => {
  const kv = await openEmbeddedKV(":memory:");
  try {
    const leaseA = (await kv.leaseGrant(60)).id;
    const a = new ClusterLocks(kv, "a", () => Promise.resolve(leaseA));
    const b = new ClusterLocks(kv, "b", () => Promise.resolve(leaseA));
    assert.equal(await a.grant(9, [write(0, -1)], await a.read(9)), true);
    let view = await b.read(9);
    let woke = b.changed(9, view, undefined);
    await a.publish(9, []);
    await woke;
    assert.deepEqual((await b.read(9)).others, []);

    assert.equal(await a.grant(9, [write(0, -1)], await a.read(9)), true);
    view = await b.read(9);
    woke = b.changed(9, view, undefined);
    await kv.leaseRevoke(leaseA); // node A died
    await woke;
    assert.deepEqual((await b.read(9)).others, []);
    // The guard outlives the lease: one key per inode ever locked, nothing else.
    const left = await kv.range({ key: lockPrefix(9), rangeEnd: prefixEnd(lockPrefix(9)) });
    assert.equal(left.count, 1);
  } finally {
    await kv.close();
  }
});

Deno.test("cluster locks: an interrupted wait rejects with EINTR", async () => {
  const kv = await openEmbeddedKV(":memory:");
  try {
    const b = new ClusterLocks(kv, "b", () => kv.leaseGrant(60).then((l) => l.id));
    const controller = new AbortController();
    const waiting = b.changed(3, await b.read(3), controller.signal);
    controller.abort();
    await assert.rejects(waiting, /EINTR/);
  } finally {
    await kv.close();
  }
});
