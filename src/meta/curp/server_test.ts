/** The replica process's duty order: nothing a Ready sends leaves before that Ready is durable. */

import assert from "node:assert/strict";
import { ReplicaServer } from "./server.ts";
import { openCurpKV } from "./curp_kv.ts";
import { type IoEngine, openIoEngine } from "../../io/mod.ts";
import { keyBytes } from "./command.ts";

/** An engine whose log fdatasyncs (a writeAndSync, or an fdatasync after a plain write when
 * replies go out once the record is written) can be held back: a slow disk on demand. */
function gatedEngine(real: IoEngine) {
  let held: (() => void)[] | undefined;
  let appends = 0;
  let writes = 0;
  const io: IoEngine = {
    kind: real.kind,
    open: (path, flags, mode) => real.open(path, flags, mode),
    close: (fd) => real.close(fd),
    read: (fd, into, offset) => real.read(fd, into, offset),
    write: (fd, data, offset) => {
      writes++;
      return real.write(fd, data, offset);
    },
    readv: (fd, into, offset) => real.readv(fd, into, offset),
    writev: (fd, data, offset) => real.writev(fd, data, offset),
    fsync: async (fd, options) => {
      if (options?.datasync) {
        appends++;
        if (held !== undefined) await new Promise<void>((resolve) => held!.push(resolve));
      }
      return await real.fsync(fd, options);
    },
    writeAndSync: async (fd, data, offset) => {
      appends++;
      if (held !== undefined) await new Promise<void>((resolve) => held!.push(resolve));
      return await real.writeAndSync(fd, data, offset);
    },
    fallocate: (fd, mode, offset, length) => real.fallocate(fd, mode, offset, length),
    statx: (path) => real.statx(path),
    unlink: (path) => real.unlink(path),
    rename: (from, to) => real.rename(from, to),
    shutdown: () => real.shutdown(),
  };
  return {
    io,
    get appends() {
      return appends;
    },
    get writes() {
      return writes;
    },
    hold() {
      held = [];
    },
    get waiting() {
      return held?.length ?? 0;
    },
    release() {
      const waiting = held ?? [];
      held = undefined;
      for (const resolve of waiting) resolve();
    },
  };
}

function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

Deno.test("curp server: a proposal is answered only after its log append is durable", async () => {
  const real = await openIoEngine({ log: () => {} });
  const gate = gatedEngine(real);
  const dir = await Deno.makeTempDir({ prefix: "uring2-server-" });
  const address = `127.0.0.1:${freePort()}`;
  const server = await ReplicaServer.start({
    id: "a",
    peers: `a=${address}`,
    dataDir: dir,
    tickMs: 10,
    io: gate.io,
    log: () => {},
  });
  const kv = await openCurpKV([address], { timeoutMs: 10_000 });
  try {
    await kv.put({ key: keyBytes("before"), value: keyBytes("1") }); // a leader exists
    gate.hold();
    let answered = false;
    const put = kv.put({ key: keyBytes("k"), value: keyBytes("v") }).then((r) => {
      answered = true;
      return r;
    });
    // Until the append is let through, the reply must not arrive, however long we wait.
    while (gate.waiting === 0) await new Promise((r) => setTimeout(r, 5));
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(answered, false, "the reply left before its entry was durable");
    assert.ok(gate.waiting >= 1);
    gate.release();
    await put;
    assert.equal(answered, true);
    const got = await kv.range({ key: keyBytes("k") });
    assert.equal(new TextDecoder().decode(got.kvs[0].value), "v");
  } finally {
    gate.release();
    await kv.close();
    await server.close();
    await real.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});

for (const ackAfterWrite of [true, false]) {
  Deno.test(
    `curp server: witness_ack_after_write ${ackAfterWrite}: a fast-path proposal is answered ${
      ackAfterWrite ? "once written, before its fdatasync" : "only after its fdatasync"
    }`,
    async () => {
      const real = await openIoEngine({ log: () => {} });
      const gate = gatedEngine(real);
      const dir = await Deno.makeTempDir({ prefix: "uring2-server-" });
      const address = `127.0.0.1:${freePort()}`;
      const server = await ReplicaServer.start({
        id: "a",
        peers: `a=${address}`,
        dataDir: dir,
        tickMs: 10,
        io: gate.io,
        witnessAckAfterWrite: ackAfterWrite,
        log: () => {},
      });
      const kv = await openCurpKV([address], { timeoutMs: 10_000 });
      try {
        await kv.put({ key: keyBytes("before"), value: keyBytes("1") }); // a leader exists
        const fastBefore = kv.fastCount;
        gate.hold();
        let answered = false;
        const txn = kv.txn({
          success: [{ put: { key: keyBytes("k"), value: keyBytes("v") } }],
          revisionsUnused: true,
        }).then(() => answered = true, () => false);
        while (gate.waiting === 0) await new Promise((r) => setTimeout(r, 5));
        const deadline = Date.now() + 2_000;
        while (!answered && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
        assert.equal(answered, ackAfterWrite);
        assert.ok(gate.waiting >= 1, "the fdatasync was let through");
        // sync() after a fast completion is a barrier through the log: it cannot finish while the
        // fdatasync is held.
        let synced = false;
        const sync = kv.sync().then(() => synced = true, () => false);
        await new Promise((r) => setTimeout(r, 200));
        if (ackAfterWrite) assert.equal(synced, false, "sync() returned before any fdatasync");
        gate.release();
        assert.equal(await txn, true);
        await sync;
        await kv.sync(); // covers the txn when it completed after the first sync() began
        // One barrier when the txn completed on the fast path (always, answered before the
        // fdatasync; without early answers a single replica may commit it first).
        const barriers = kv.fastCount > fastBefore ? 1 : 0;
        if (ackAfterWrite) assert.equal(barriers, 1);
        assert.equal(kv.syncBarriers, barriers);
        await kv.sync(); // nothing completed fast since: no barrier
        assert.equal(kv.syncBarriers, barriers);
        const got = await kv.range({ key: keyBytes("k") });
        assert.equal(new TextDecoder().decode(got.kvs[0].value), "v");
      } finally {
        gate.release();
        await kv.close();
        await server.close();
        await real.shutdown();
        await Deno.remove(dir, { recursive: true });
      }
    },
  );
}

Deno.test("curp server: a failed log append stops the replica instead of answering", async () => {
  const real = await openIoEngine({ log: () => {} });
  let fail = false;
  const failing: IoEngine = new Proxy(real, {
    get(_target, name) {
      // Both ways a log append is synced: linked, or an fdatasync after the write.
      if ((name === "writeAndSync" || name === "fsync") && fail) {
        return () => Promise.reject(new Error("injected EIO"));
      }
      const value = Reflect.get(real, name);
      return typeof value === "function" ? value.bind(real) : value;
    },
  });
  const dir = await Deno.makeTempDir({ prefix: "uring2-server-" });
  const address = `127.0.0.1:${freePort()}`;
  const lines: string[] = [];
  const server = await ReplicaServer.start({
    id: "a",
    peers: `a=${address}`,
    dataDir: dir,
    tickMs: 10,
    io: failing,
    log: (line) => lines.push(line),
  });
  const kv = await openCurpKV([address], { timeoutMs: 2_000 });
  try {
    await kv.put({ key: keyBytes("before"), value: keyBytes("1") });
    fail = true;
    await assert.rejects(kv.put({ key: keyBytes("k"), value: keyBytes("v") }));
    await assert.rejects(server.stopped, /injected EIO/);
    assert.ok(lines.some((l) => l.includes("stops: storage")), lines.join("\n"));
  } finally {
    await kv.close();
    await server.close();
    await real.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("curp server: status counts entries appended as leader and storage fsyncs", async () => {
  const real = await openIoEngine({ log: () => {} });
  const gate = gatedEngine(real);
  const dir = await Deno.makeTempDir({ prefix: "uring2-server-" });
  const address = `127.0.0.1:${freePort()}`;
  const server = await ReplicaServer.start({
    id: "a",
    peers: `a=${address}`,
    dataDir: dir,
    tickMs: 10,
    io: gate.io,
    log: () => {},
  });
  const kv = await openCurpKV([address], { timeoutMs: 10_000 });
  try {
    await kv.put({ key: keyBytes("first"), value: keyBytes("1") }); // a leader exists
    const before = server.status();
    const appendsBefore = gate.appends;
    for (let i = 0; i < 3; i++) await kv.put({ key: keyBytes(`k${i}`), value: keyBytes("v") });
    const after = server.status();
    // One replica: each put is one entry, and every log append is one fdatasync.
    assert.equal(after.proposals - before.proposals, 3);
    assert.equal(after.fsyncs - before.fsyncs, gate.appends - appendsBefore);
    assert.ok(after.fsyncs - before.fsyncs >= 1);
  } finally {
    await kv.close();
    await server.close();
    await real.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("curp server: a witness record whose answer left early is fdatasync'd by the next tick, with no later Ready", async () => {
  const io = await openIoEngine({ log: () => {} });
  const dir = await Deno.makeTempDir({ prefix: "h1-server-" });
  // Replica b of three, the other two down: no leader, so no append ever follows the record.
  const [a, b, c] = [freePort(), freePort(), freePort()].map((p) => `127.0.0.1:${p}`);
  const server = await ReplicaServer.start({
    id: "b",
    peers: `a=${a},b=${b},c=${c}`,
    dataDir: dir,
    tickMs: 10,
    electionTicks: 1000, // no pre-vote messages (they would wait for an fdatasync) in the test
    io,
    log: () => {},
  });
  const kv = await openCurpKV([b], { timeoutMs: 1000 });
  try {
    const before = server.status().fsyncs;
    const put = kv.put({ key: keyBytes("k"), value: keyBytes("v") }).catch(() => {});
    const deadline = Date.now() + 800;
    while (server.replica.pool.size === 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 5));
    }
    assert.equal(server.replica.pool.size, 1, "the witness recorded nothing");
    while (server.status().fsyncs === before && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 5));
    }
    assert.ok(server.status().fsyncs > before, "the record was never fdatasync'd");
    await put;
  } finally {
    await kv.close();
    await server.close();
    await io.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});

/**
 * Three replicas on gated engines (`gatedEngine`: a test holds and releases each one's
 * fdatasyncs), "a" electing itself (its followers never time out while fdatasyncs are held), and
 * a client. `until` polls a condition for up to 3 s; `close` releases every gate and stops all.
 */
async function gatedTrio(prefix: string) {
  const real = await openIoEngine({ log: () => {} });
  const ids = ["a", "b", "c"];
  const gates = ids.map(() => gatedEngine(real));
  const addresses = ids.map(() => `127.0.0.1:${freePort()}`);
  const peers = ids.map((id, i) => `${id}=${addresses[i]}`).join(",");
  const dirs = await Promise.all(ids.map(() => Deno.makeTempDir({ prefix: `${prefix}-server-` })));
  const servers = await Promise.all(ids.map((id, i) =>
    ReplicaServer.start({
      id,
      peers,
      dataDir: dirs[i],
      tickMs: 10,
      electionTicks: id === "a" ? 60 : 100_000,
      io: gates[i].io,
      log: () => {},
    })
  ));
  const kv = await openCurpKV(addresses, { timeoutMs: 10_000 });
  const until = async (what: string, done: () => boolean) => {
    const deadline = Date.now() + 3_000;
    while (!done()) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 2));
    }
  };
  const close = async () => {
    for (const gate of gates) gate.release();
    await kv.close();
    for (const s of servers) await s.close();
    await real.shutdown();
    for (const dir of dirs) await Deno.remove(dir, { recursive: true });
  };
  return { gates, servers, kv, until, close };
}

Deno.test("curp server: watch events of a committed entry leave without waiting for a later Ready's fdatasync", async () => {
  const { gates, servers, kv, until, close } = await gatedTrio("h2");
  const [leader, b, c] = servers;
  const [gateA, gateB, gateC] = gates;
  try {
    await kv.put({ key: keyBytes("before"), value: keyBytes("1") });
    assert.equal(leader.replica.role, "leader");
    const seen: number[] = [];
    const watcher = kv.watch(
      { key: keyBytes("w") },
      {},
      (_events, revision) => seen.push(revision),
    );
    await kv.put({ key: keyBytes("sync"), value: keyBytes("1") }); // the watch is in place
    // The followers hold their fdatasyncs: w's entry reaches them, their answers wait.
    gateB.hold();
    gateC.hold();
    await kv.txn({
      success: [{ put: { key: keyBytes("w"), value: keyBytes("1") } }],
      revisionsUnused: true,
    });
    const wIndex = leader.replica.lastIndex;
    await until(
      "w's entry on the followers",
      () => b.replica.lastIndex >= wIndex && c.replica.lastIndex >= wIndex,
    );
    // w on the leader's disk (its appends left before that: wait for it). Now the leader holds
    // its fdatasyncs, and a later proposal's Ready waits on one.
    await until("w on the leader's disk", () => leader.replica.stableIndex >= wIndex);
    gateA.hold();
    await kv.txn({
      success: [{ put: { key: keyBytes("z"), value: keyBytes("1") } }],
      revisionsUnused: true,
    });
    await until("the leader's held fdatasync", () => gateA.waiting >= 1);
    assert.equal(seen.length, 0);
    gateB.release();
    gateC.release();
    await until("w's commit on the leader", () => leader.replica.commitIndex >= wIndex);
    // w committed and is on the leader's disk: its event needs no later fdatasync.
    await until("w's watch event", () => seen.length > 0);
    assert.ok(gateA.waiting >= 1, "the leader's fdatasync was let through");
    watcher.cancel();
  } finally {
    await close();
  }
});

Deno.test("curp server: a leader's appends leave before its own fdatasync, and it counts itself only after it", async () => {
  const { gates, servers, kv, until, close } = await gatedTrio("h3");
  const [leader, b, c] = servers;
  const [gateA, gateB] = gates;
  try {
    await kv.put({ key: keyBytes("before"), value: keyBytes("1") });
    assert.equal(leader.replica.role, "leader");
    // The leader's disk and b's hold their fdatasyncs; c's does not.
    gateA.hold();
    gateB.hold();
    const put = kv.put({ key: keyBytes("k"), value: keyBytes("v") });
    put.catch(() => {}); // awaited below; rejected by close() when the test fails first
    await until("the leader's held fdatasync", () => gateA.waiting >= 1);
    const index = leader.replica.lastIndex;
    // Its append left before that fdatasync: c holds the entry on its disk and answered.
    await until("the entry on c's disk", () => c.replica.stableIndex >= index);
    await until("the entry on b", () => b.replica.lastIndex >= index);
    // c's answer and the leader's unsynced copy are not a majority of disks: no commit.
    await new Promise((r) => setTimeout(r, 100));
    assert.ok(leader.replica.commitIndex < index, "committed on the leader's unsynced copy");
    assert.ok(gateA.waiting >= 1 && gateB.waiting >= 1, "an fdatasync was let through");
    gateA.release(); // the leader's copy now counts: with c's, a majority
    await until("the commit", () => leader.replica.commitIndex >= index);
    assert.ok(gateB.waiting >= 1, "b's fdatasync was let through");
    await put;
  } finally {
    await close();
  }
});

Deno.test("curp server: append replies that one fdatasync releases leave in one socket write", async () => {
  const { gates, servers, kv, until, close } = await gatedTrio("h4");
  const [leader, b] = servers;
  const [, gateB] = gates;
  try {
    await kv.put({ key: keyBytes("before"), value: keyBytes("1") });
    assert.equal(leader.replica.role, "leader");
    // b holds its fdatasyncs: every append it takes meanwhile is a Ready whose reply waits.
    gateB.hold();
    for (let i = 0; i < 8; i++) {
      await kv.txn({
        success: [{ put: { key: keyBytes(`k${i}`), value: keyBytes("v") } }],
        revisionsUnused: true,
      });
    }
    const index = leader.replica.lastIndex;
    await until("the entries on b", () => b.replica.lastIndex >= index);
    await until("b's held fdatasync", () => gateB.waiting >= 1);
    const before = b.status();
    gateB.release();
    await until("b's entries durable", () => b.replica.stableIndex >= index);
    await until(
      "b's replies sent",
      () =>
        (b.status().messagesOut!.appendReply ?? 0) - (before.messagesOut!.appendReply ?? 0) >= 8,
    );
    await new Promise((r) => setTimeout(r, 50)); // any write still in flight
    const after = b.status();
    const replies = after.messagesOut!.appendReply - (before.messagesOut!.appendReply ?? 0);
    const writes = after.peerWrites! - before.peerWrites!;
    // One fdatasync was held, a second covers the rest (storage shares one among waiting Readies);
    // heartbeats and their replies may add a write or two. Frame by frame would be a write each.
    assert.ok(writes <= replies / 2, `${replies} append replies in ${writes} writes`);
  } finally {
    await close();
  }
});
