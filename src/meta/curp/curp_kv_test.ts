/** CurpKV against three real replicas (in this process, over TCP): where its reads go. */

import assert from "node:assert/strict";
import { ReplicaServer } from "./server.ts";
import { CurpKV, CurpTimeoutError, openCurpKV } from "./curp_kv.ts";
import type { ReplicaStatus } from "./server.ts";
import { keyBytes } from "./command.ts";
import { type IoEngine, openIoEngine } from "../../io/mod.ts";

function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

interface Trio {
  io: IoEngine;
  dir: string;
  addresses: string[];
  servers: Map<string, ReplicaServer>;
  kv: CurpKV;
}

async function withTrio(body: (t: Trio) => Promise<void>): Promise<void> {
  const io = await openIoEngine({ log: () => {} });
  const dir = await Deno.makeTempDir({ prefix: "h2-curp-kv-" });
  const ids = ["a", "b", "c"];
  const addresses = ids.map(() => `127.0.0.1:${freePort()}`);
  const peers = ids.map((id, i) => `${id}=${addresses[i]}`).join(",");
  const servers = new Map<string, ReplicaServer>();
  try {
    for (const id of ids) {
      await Deno.mkdir(`${dir}/${id}`);
      servers.set(
        id,
        await ReplicaServer.start({
          id,
          peers,
          dataDir: `${dir}/${id}`,
          tickMs: 20,
          io,
          log: () => {},
        }),
      );
    }
    const kv = await openCurpKV(addresses, { timeoutMs: 10_000, log: () => {} });
    try {
      await body({ io, dir, addresses, servers, kv });
    } finally {
      await kv.close();
    }
  } finally {
    for (const server of servers.values()) await server.close();
    await io.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
}

function readsReceived(servers: Iterable<ReplicaServer>): number {
  let n = 0;
  for (const s of servers) n += s.readsReceived;
  return n;
}

function leaderOf(servers: Map<string, ReplicaServer>): string | undefined {
  for (const [id, s] of servers) if (s.replica.role === "leader") return id;
  return undefined;
}

const N = 40;

Deno.test("CurpKV: a read goes to the leader and one follower, not to every replica", async () => {
  await withTrio(async ({ servers, kv }) => {
    await kv.put({ key: keyBytes("k"), value: keyBytes("v") }); // a leader, known to the client
    const before = readsReceived(servers.values());
    const readsBefore = kv.readCount;
    for (let i = 0; i < N; i++) {
      const got = await kv.range({ key: keyBytes("k") });
      assert.equal(new TextDecoder().decode(got.kvs[0].value), "v");
    }
    assert.equal(kv.readCount - readsBefore, N, "reads did not go outside the log");
    const sent = readsReceived(servers.values()) - before;
    // Two per read; a read that took more than a whole client tick (50 ms) on a loaded machine
    // also asks the third. Every replica asked: 3 per read.
    assert.ok(sent >= 2 * N && sent <= 2 * N + kv.readsWidened, `${sent} reads sent for ${N}`);
    assert.ok(sent < 2.5 * N, `${sent} read messages for ${N} reads (${kv.readsWidened} widened)`);
    // Both followers take their share.
    const leader = leaderOf(servers)!;
    for (const [id, s] of servers) {
      if (id !== leader) assert.ok(s.readsReceived >= N / 4, `follower ${id}: ${s.readsReceived}`);
    }
  });
});

Deno.test("CurpKV: reads go on when a follower stops, and when the leader stops", async () => {
  await withTrio(async ({ servers, kv }) => {
    await kv.put({ key: keyBytes("k"), value: keyBytes("v1") });
    const leader = leaderOf(servers)!;
    const follower = [...servers.keys()].find((id) => id !== leader)!;
    await servers.get(follower)!.close();
    servers.delete(follower);
    for (let i = 0; i < 10; i++) {
      const got = await kv.range({ key: keyBytes("k") });
      assert.equal(new TextDecoder().decode(got.kvs[0].value), "v1");
    }
    // Two replicas left, both needed for a majority: a write and a read of it still work.
    await kv.put({ key: keyBytes("k"), value: keyBytes("v2") });
    const got = await kv.range({ key: keyBytes("k") });
    assert.equal(new TextDecoder().decode(got.kvs[0].value), "v2");
  });
  await withTrio(async ({ servers, kv }) => {
    await kv.put({ key: keyBytes("k"), value: keyBytes("v1") });
    const leader = leaderOf(servers)!;
    await servers.get(leader)!.close();
    servers.delete(leader);
    // The client still names the old leader; the survivors elect one, and the read must see
    // every write acknowledged before it.
    await kv.put({ key: keyBytes("k"), value: keyBytes("v2") });
    for (let i = 0; i < 10; i++) {
      const got = await kv.range({ key: keyBytes("k") });
      assert.equal(new TextDecoder().decode(got.kvs[0].value), "v2");
    }
    assert.notEqual(leaderOf(servers), undefined);
  });
});

Deno.test("CurpKV: a command on a key goes to the idle session that last wrote it", async () => {
  const sessions: string[] = [];
  await withTrio(async ({ addresses }) => {
    const kv = await openCurpKV(addresses, {
      timeoutMs: 10_000,
      fastPath: true,
      // Each command on its own session: group commit would gather the second of two concurrent
      // writes into the next command of the first's session.
      batchInFlight: 0,
      log: () => {},
      trace: (line) => sessions.push(line.split("; session ")[1]),
    });
    try {
      const put = (key: string, value: string) =>
        kv.txn({ success: [{ put: { key: keyBytes(key), value: keyBytes(value) } }] });
      for (let round = 0; round < 5; round++) {
        // Two writers at once: two sessions, both idle afterwards (in either order).
        sessions.length = 0;
        await Promise.all([put(`x${round}`, "1"), put(`y${round}`, "1")]);
        assert.equal(sessions.length, 2);
        assert.notEqual(sessions[0], sessions[1], "two concurrent commands shared a session");
        const wrote = new Map([[`x${round}`, sessions[0]], [`y${round}`, sessions[1]]]);
        // One after the other, each key again (a file's publish after its create): the idle
        // stack alone hands the same session to both.
        for (const key of [`x${round}`, `y${round}`]) {
          sessions.length = 0;
          await put(key, "2");
          assert.equal(sessions[0], wrote.get(key), `${key} went to another session`);
        }
        // A key nobody wrote: the session that wrote least recently (x's), not the last (y's).
        sessions.length = 0;
        await put(`z${round}`, "1");
        assert.equal(sessions[0], wrote.get(`x${round}`), "a fresh key took the latest writer");
      }
      assert.equal(kv.writerPicks, 10);
    } finally {
      await kv.close();
    }
  });
});

Deno.test("CurpKV: commands arm no timer each, and one nobody answers still times out", async () => {
  // Counts setTimeout calls while commands run: the deadline is the client's tick's business.
  const original = globalThis.setTimeout;
  let timers = 0;
  const counting = ((...args: Parameters<typeof setTimeout>) => {
    timers++;
    return original(...args);
  }) as typeof setTimeout;
  await withTrio(async ({ kv }) => {
    globalThis.setTimeout = counting;
    try {
      for (let i = 0; i < 20; i++) {
        await kv.txn({
          success: [{ put: { key: keyBytes(`t${i}`), value: keyBytes("v") } }],
          revisionsUnused: true,
        });
        await kv.range({ key: keyBytes(`t${i}`) });
      }
    } finally {
      globalThis.setTimeout = original;
    }
    assert.equal(timers, 0, `${timers} timers for 40 commands`);
  });
  // Three replicas nobody serves: the command rejects after its timeout, its session is dropped,
  // and the next command (a fresh session) times out too.
  const status = { members: { a: "127.0.0.1:9", b: "127.0.0.1:9", c: "127.0.0.1:9" } };
  const kv = new CurpKV(status as unknown as ReplicaStatus, {
    timeoutMs: 150,
    tickMs: 20,
    log: () => {},
  });
  try {
    for (let i = 0; i < 2; i++) {
      await assert.rejects(
        kv.put({ key: keyBytes("k"), value: keyBytes("v") }),
        (e) => e instanceof CurpTimeoutError && /did not answer within 150 ms/.test(e.message),
      );
    }
  } finally {
    await kv.close();
  }
});

Deno.test("CurpKV: concurrent writes share proposals, each with its own result", async () => {
  await withTrio(async ({ servers, kv }) => {
    await kv.put({ key: keyBytes("seed"), value: keyBytes("v") }); // a leader, known
    const leader = servers.get(leaderOf(servers)!)!;
    const before = leader.replica.leaderAppends;
    const events: { key: string; revision: number }[] = [];
    const watcher = kv.watch({ key: keyBytes("w/"), rangeEnd: keyBytes("w0") }, {}, (evs) => {
      for (const e of evs) {
        events.push({ key: new TextDecoder().decode(e.kv.key), revision: e.kv.modRevision });
      }
    });
    const n = 24;
    const results = await Promise.all(Array.from({ length: n }, (_, i) => {
      if (i === 11) {
        // A compare that fails, in the middle: only this txn takes its failure branch.
        return kv.txn({
          compare: [{
            key: keyBytes("seed"),
            target: "value",
            result: "==",
            value: keyBytes("no"),
          }],
          success: [{ put: { key: keyBytes("w/never"), value: keyBytes("x") } }],
          failure: [{ range: { key: keyBytes("seed") } }],
        });
      }
      // Half of them marked (fast path allowed), half needing revisions.
      return kv.txn({
        success: [{ put: { key: keyBytes(`w/${i}`), value: keyBytes(`${i}`) } }],
        ...(i % 2 === 0 ? { revisionsUnused: true } : {}),
      });
    }));
    const proposals = leader.replica.leaderAppends - before;
    assert.ok(proposals < n, `${proposals} proposals for ${n} concurrent txns`);
    assert.ok(kv.batchCount > 0 && kv.batchedTxns > 1, `${kv.batchCount} batches`);
    results.forEach((r, i) => assert.equal(r.succeeded, i !== 11, `txn ${i}`));
    const failed = results[11].responses[0] as { range: { kvs: { value: Uint8Array }[] } };
    assert.equal(new TextDecoder().decode(failed.range.kvs[0].value), "v");
    // Unmarked txns carry real revisions, one each, none shared.
    const revisions = results.filter((_, i) => i % 2 === 1 && i !== 11).map((r) => r.revision);
    assert.ok(revisions.every((r) => r > 0));
    assert.equal(new Set(revisions).size, revisions.length);
    for (let i = 0; i < n; i++) {
      const got = await kv.range({ key: keyBytes(`w/${i}`) });
      assert.equal(got.kvs.length, i === 11 ? 0 : 1, `w/${i}`);
    }
    // Watchers see one event per txn, each at its own revision.
    for (let t = 0; t < 200 && events.length < n - 1; t++) {
      await new Promise((r) => setTimeout(r, 10));
    }
    watcher.cancel();
    assert.equal(events.length, n - 1);
    assert.equal(new Set(events.map((e) => e.revision)).size, n - 1);
  });
});

Deno.test("CurpKV: no batches with batchInFlight 0, nor against a replica of an earlier build", async () => {
  await withTrio(async ({ addresses, servers }) => {
    const kv = await openCurpKV(addresses, { batchInFlight: 0, log: () => {} });
    try {
      await Promise.all(
        Array.from(
          { length: 8 },
          (_, i) => kv.put({ key: keyBytes(`o${i}`), value: keyBytes("v") }),
        ),
      );
      assert.equal(kv.batchCount, 0);
    } finally {
      await kv.close();
    }
    // A status without `batches` (what earlier builds report): the client never batches.
    const status = { ...[...servers.values()][0].status() };
    delete status.batches;
    const old = new CurpKV(status, { log: () => {} });
    try {
      for (let t = 0; t < 100 && old.connectedCount() < 3; t++) {
        await new Promise((r) => setTimeout(r, 10));
      }
      await Promise.all(
        Array.from(
          { length: 8 },
          (_, i) => old.put({ key: keyBytes(`p${i}`), value: keyBytes("v") }),
        ),
      );
      assert.equal(old.batchCount, 0);
    } finally {
      await old.close();
    }
  });
});
