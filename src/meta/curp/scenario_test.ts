/** Targeted CURP scenarios driven step by step through the simulator's cluster. */

import assert from "node:assert/strict";
import { Cluster } from "./sim.ts";
import { Replica } from "./core.ts";

function steadyCluster(seed: number): { cluster: Cluster; leader: Replica } {
  const cluster = new Cluster(seed, 3);
  cluster.maxDelay = 3;
  assert.ok(
    cluster.runUntil(() => cluster.leader()?.fastPathReady === true, 2000),
    "no leader ready after 2000 units",
  );
  return { cluster, leader: cluster.leader()! };
}

function finish(cluster: Cluster, clientId: string): void {
  const client = cluster.clients.get(clientId)!;
  assert.ok(cluster.runUntil(() => !client.core.busy, 5000), `${clientId} did not finish`);
}

function last(cluster: Cluster) {
  return cluster.completions.at(-1)!;
}

Deno.test("curp: a command that conflicts with nothing completes on the fast path", () => {
  const { cluster } = steadyCluster(1);
  cluster.addClient("c0", 0);
  cluster.submit("c0", { kind: "put", key: "a", value: "1" });
  finish(cluster, "c0");
  assert.equal(last(cluster).path, "fast");
  cluster.submit("c0", { kind: "get", key: "a" });
  finish(cluster, "c0");
  assert.deepEqual(cluster.history.at(-1)!.output, { value: "1" });
  cluster.run(500);
  cluster.finalChecks();
  assert.deepEqual(cluster.violations, []);
});

Deno.test("curp: a command conflicting with an unsynced one takes the slow path, ordered after it", () => {
  const { cluster, leader } = steadyCluster(2);
  cluster.addClient("c0", 0);
  cluster.addClient("c1", 0);
  // Hold replication so the first put stays unsynced in every witness pool.
  cluster.dropIf = (m) => m.type === "append" && m.from === leader.id;
  cluster.submit("c0", { kind: "put", key: "a", value: "first" });
  finish(cluster, "c0");
  assert.equal(last(cluster).path, "fast");
  cluster.submit("c1", { kind: "put", key: "a", value: "second" });
  // Shorter than the leader's quorum check (10 ticks), which would otherwise start an election
  // whose replay syncs the first put and lets a retry of this one go fast.
  cluster.run(60);
  assert.equal(
    cluster.clients.get("c1")!.core.busy,
    true,
    "conflicting put finished while unsynced",
  );
  cluster.dropIf = () => false;
  finish(cluster, "c1");
  assert.equal(last(cluster).path, "slow");
  assert.deepEqual(cluster.history.at(-1)!.output, { value: "first" });
  cluster.run(500);
  cluster.finalChecks();
  assert.deepEqual(cluster.violations, []);
});

Deno.test("curp: a fast-path write whose leader crashes before replicating is replayed", () => {
  const { cluster, leader } = steadyCluster(3);
  cluster.addClient("c0", 0);
  cluster.addClient("c1", 0);
  cluster.dropIf = (m) => m.type === "append" && m.from === leader.id;
  cluster.submit("c0", { kind: "put", key: "a", value: "kept" });
  finish(cluster, "c0");
  assert.equal(last(cluster).path, "fast");
  const [command] = [...cluster.acknowledged];
  // Only the crashed leader's log had it: witnesses are the sole copies left.
  for (const id of cluster.ids) {
    if (id === leader.id) continue;
    assert.equal(cluster.replica(id).log.some((e) => e.command?.seq === 1), false);
  }
  cluster.crash(leader.id, 1_000_000);
  cluster.dropIf = () => false;
  assert.ok(
    cluster.runUntil(() => cluster.leader()?.fastPathReady === true, 5000),
    "no new leader",
  );
  assert.notEqual(cluster.leader()!.id, leader.id);
  cluster.submit("c1", { kind: "get", key: "a" });
  finish(cluster, "c1");
  assert.deepEqual(cluster.history.at(-1)!.output, { value: "kept" });
  assert.equal(cluster.executions.get(command), 1);
  cluster.finalChecks();
  assert.deepEqual(cluster.violations, []);
});

Deno.test("curp: a retry after a leader change gets the first execution's result", () => {
  const { cluster, leader } = steadyCluster(4);
  cluster.addClient("c0", 0);
  // Commit happens, but the client hears nothing back.
  cluster.dropIf = (m) => m.to === "c0";
  cluster.submit("c0", { kind: "put", key: "a", value: "once" });
  assert.ok(cluster.runUntil(() => cluster.executions.get("c0#1") === 1, 2000), "never committed");
  cluster.crash(leader.id, 1_000_000);
  cluster.dropIf = () => false;
  finish(cluster, "c0");
  assert.notEqual(cluster.leader()?.id, leader.id);
  assert.equal(cluster.clients.get("c0")!.core.retryCount > 0, true);
  assert.equal(last(cluster).path, "slow");
  assert.deepEqual(cluster.history.at(-1)!.output, { value: null });
  cluster.run(500);
  assert.equal(cluster.executions.get("c0#1"), 1);
  cluster.finalChecks();
  assert.deepEqual(cluster.violations, []);
});

Deno.test("curp: a new leader gives no fast answer until its term's first entry commits", () => {
  // An older-term entry D that the new leader lacks could still be committed by a later leader
  // holding it; a fast answer that ignored D would then be wrong (removing the check
  // makes this test see C answered with no previous value, then ordered after D).
  const c5 = new Cluster(6, 5);
  c5.maxDelay = 3;
  assert.ok(c5.runUntil(() => c5.leader()?.fastPathReady === true, 3000), "no first leader");
  const old = c5.leader()!.id;
  const [holder, x, y, z] = c5.ids.filter((id) => id !== old);
  c5.addClient("c0", 0);
  c5.addClient("c1", 0);
  // D reaches only the old leader's log and the holder's log, and is never known committed.
  c5.dropIf = (m) =>
    (m.type === "propose" && m.from === "c0" && m.to !== old) ||
    (m.type === "append" && m.from === old && m.to !== holder) ||
    (m.type === "appendReply" && m.from === holder);
  c5.submit("c0", { kind: "put", key: "a", value: "D" });
  c5.run(40);
  assert.ok(c5.replica(holder).log.some((e) => e.command?.clientId === "c0"), "D not at holder");
  c5.crash(old, 1_000_000);
  // x, y, z elect a leader whose no-op never leaves it.
  c5.dropIf = (m) => m.type === "append";
  c5.group.set(holder, 1);
  assert.ok(
    c5.runUntil(() => [x, y, z].some((id) => c5.replica(id).role === "leader"), 5000),
    "no second leader",
  );
  const second = [x, y, z].find((id) => c5.replica(id).role === "leader")!;
  c5.submit("c1", { kind: "put", key: "a", value: "C" });
  c5.run(40);
  assert.equal(c5.clients.get("c1")!.core.busy, true, "C answered before the no-op committed");
  // The holder (or the restarted old leader) wins next, with D in its log, and replays C after D.
  c5.crash(second, 1_000_000);
  c5.restart(old);
  c5.group.clear();
  const excluded = [x, y, z].find((id) => id !== second)!;
  c5.group.set(excluded, 1);
  for (const id of c5.ids) if (id !== excluded) c5.group.set(id, 0);
  c5.dropIf = () => false;
  assert.ok(c5.runUntil(() => !c5.clients.get("c1")!.core.busy, 20000), "C never finished");
  assert.deepEqual(c5.history.at(-1)!.output, { value: "D" });
  c5.finalChecks();
  assert.deepEqual(c5.violations, []);
});

Deno.test("curp: no synced reply for a command its client already completed on the fast path", () => {
  const { cluster, leader } = steadyCluster(3);
  cluster.addClient("c0", 0);
  const synced: number[] = [];
  cluster.dropIf = (m) => {
    if (m.type === "synced") synced.push(m.seq);
    // Hold replication: seq 1 stays uncommitted while the client goes on to seq 2.
    return m.type === "append" && m.from === leader.id;
  };
  cluster.submit("c0", { kind: "put", key: "a", value: "1" });
  finish(cluster, "c0");
  assert.equal(last(cluster).path, "fast");
  cluster.submit("c0", { kind: "put", key: "b", value: "2" }); // says: seq 1 completed
  finish(cluster, "c0");
  cluster.dropIf = (m) => {
    if (m.type === "synced") synced.push(m.seq);
    return false;
  };
  cluster.run(500);
  // Seq 1 commits after the leader heard seq 2: no reply. Seq 2's client completed it too, but
  // no later proposal said so: its synced reply still goes.
  assert.ok(!synced.includes(1), `synced replies for seqs ${synced}`);
  assert.ok(synced.includes(2), `synced replies for seqs ${synced}`);
  cluster.finalChecks();
  assert.deepEqual(cluster.violations, []);
});

Deno.test("curp: an append that only moves the commit index to a caught-up follower is not answered", () => {
  const { cluster } = steadyCluster(4);
  cluster.addClient("c0", 0);
  const seen = { quiet: 0, appends: 0, replies: 0 };
  // Replies sent up to 2 units from now may answer appends sent before (delays are 1-3 units).
  const since = cluster.time;
  cluster.dropIf = (m) => {
    if (m.type === "append") {
      seen.appends++;
      if (m.quiet) {
        seen.quiet++;
        assert.deepEqual(m.entries, []);
      }
    }
    if (m.type === "appendReply" && cluster.time > since + 2) seen.replies++;
    return false;
  };
  for (let i = 0; i < 5; i++) {
    cluster.submit("c0", { kind: "put", key: `k${i}`, value: "v" });
    finish(cluster, "c0");
  }
  cluster.run(200);
  assert.ok(seen.quiet >= 5, `${seen.quiet} quiet appends of ${seen.appends}`);
  // Every other append (entries, heartbeats) is answered.
  assert.ok(seen.replies <= seen.appends - seen.quiet, JSON.stringify(seen));
  assert.ok(seen.replies >= seen.appends - seen.quiet - 4, JSON.stringify(seen));
  cluster.finalChecks();
  assert.deepEqual(cluster.violations, []);
});

Deno.test("curp: a command conflicting only with its own client's unsynced commands takes the fast path", () => {
  const { cluster, leader } = steadyCluster(5);
  cluster.addClient("c0", 0);
  cluster.addClient("c1", 0);
  // Hold replication: every put below stays uncommitted, in the witness pools.
  cluster.dropIf = (m) => m.type === "append" && m.from === leader.id;
  cluster.submit("c0", { kind: "put", key: "a", value: "1" });
  finish(cluster, "c0");
  assert.equal(last(cluster).path, "fast");
  // The same key again, by the same client: answered over its own first put (old code: slow).
  cluster.submit("c0", { kind: "cas", key: "a", expected: "1", value: "2" });
  finish(cluster, "c0");
  assert.equal(last(cluster).path, "fast");
  assert.deepEqual(cluster.history.at(-1)!.output, { succeeded: true });
  cluster.submit("c0", { kind: "put", key: "a", value: "3" });
  finish(cluster, "c0");
  assert.equal(last(cluster).path, "fast");
  assert.deepEqual(cluster.history.at(-1)!.output, { value: "2" });
  assert.equal(leader.commitIndex < leader.lastIndex, true, "the puts committed meanwhile");
  // Another client's conflicting command still waits for the commit.
  cluster.submit("c1", { kind: "put", key: "a", value: "other" });
  cluster.run(60);
  assert.equal(cluster.clients.get("c1")!.core.busy, true, "another client's put went fast");
  cluster.dropIf = () => false;
  finish(cluster, "c1");
  assert.equal(last(cluster).path, "slow");
  assert.deepEqual(cluster.history.at(-1)!.output, { value: "3" });
  cluster.run(500);
  cluster.finalChecks(); // includes: each fast result equals the committed one
  assert.deepEqual(cluster.violations, []);
});

Deno.test("curp: one client's conflicting fast commands, only in the pools, replay in order after a leader crash", () => {
  const { cluster, leader } = steadyCluster(6);
  cluster.addClient("c0", 0);
  cluster.addClient("c1", 0);
  cluster.dropIf = (m) => m.type === "append" && m.from === leader.id;
  cluster.submit("c0", { kind: "put", key: "a", value: "1" });
  finish(cluster, "c0");
  cluster.submit("c0", { kind: "put", key: "a", value: "2" });
  finish(cluster, "c0");
  cluster.submit("c0", { kind: "cas", key: "a", expected: "2", value: "3" });
  finish(cluster, "c0");
  assert.deepEqual(cluster.completions.slice(-3).map((c) => c.path), ["fast", "fast", "fast"]);
  for (const id of cluster.ids) {
    if (id !== leader.id) assert.equal(cluster.replica(id).log.some((e) => e.command), false);
  }
  cluster.crash(leader.id, 1_000_000);
  cluster.dropIf = () => false;
  assert.ok(
    cluster.runUntil(() => cluster.leader()?.fastPathReady === true, 5000),
    "no new leader",
  );
  cluster.submit("c1", { kind: "get", key: "a" });
  finish(cluster, "c1");
  assert.deepEqual(cluster.history.at(-1)!.output, { value: "3" });
  const order = cluster.leader()!.log.filter((e) => e.command?.clientId === "c0")
    .map((e) => e.command!.seq);
  assert.deepEqual(order, [1, 2, 3]);
  cluster.run(500);
  cluster.finalChecks();
  assert.deepEqual(cluster.violations, []);
});

Deno.test("curp: a compare on the revision of a key its client's unsynced command wrote goes slow", () => {
  const { cluster, leader } = steadyCluster(7);
  const core = cluster.addClient("c0", 0);
  const speculated = new Map<number, boolean>();
  cluster.dropIf = (m) => {
    if (m.type === "proposeReply" && m.from === leader.id) {
      speculated.set(m.seq, m.speculative !== undefined);
    }
    return m.type === "append" && m.from === leader.id;
  };
  cluster.submit("c0", { kind: "put", key: "a", value: "1" });
  finish(cluster, "c0");
  const bytes = (s: string) => new TextEncoder().encode(s);
  // Its modRevision is not known before the commit: no fast answer over the put.
  core.submit({
    compare: [{ key: bytes("a"), target: "modRevision", result: "==", value: 0 }],
    success: [{ put: { key: bytes("b"), value: bytes("x") } }],
  });
  assert.ok(cluster.runUntil(() => speculated.has(2), 1000), "no reply from the leader");
  assert.equal(speculated.get(2), false);
  cluster.dropIf = () => false;
  finish(cluster, "c0");
  assert.equal(core.slowCount, 1);
  // A revision compare of another key, beside a value compare of the written one: fast.
  cluster.dropIf = (m) => {
    if (m.type === "proposeReply" && m.from === leader.id) {
      speculated.set(m.seq, m.speculative !== undefined);
    }
    return m.type === "append" && m.from === leader.id;
  };
  cluster.submit("c0", { kind: "put", key: "a", value: "2" });
  finish(cluster, "c0");
  core.submit({
    compare: [
      { key: bytes("a"), target: "value", result: "==", value: bytes("2") },
      { key: bytes("c"), target: "modRevision", result: "==", value: 0 },
    ],
    success: [{ put: { key: bytes("a"), value: bytes("3") } }],
  });
  finish(cluster, "c0");
  assert.equal(speculated.get(4), true);
  assert.equal(core.fastCount, 3);
  cluster.dropIf = () => false;
  cluster.run(500);
  assert.equal(leader.kv.dump().find((kv) => kv.key[0] === 0x61)?.value[0], 0x33);
  cluster.finalChecks();
  assert.deepEqual(cluster.violations, []);
});

Deno.test("curp: a leader neither resends nor restarts a snapshot transfer while its pieces sit unsent in its own queue", () => {
  // Small snapshots in 64-byte pieces: a follower that missed 80 entries needs several pieces.
  const cluster = new Cluster(7, 3, 10, 20, 64);
  cluster.maxDelay = 3;
  assert.ok(cluster.runUntil(() => cluster.leader()?.fastPathReady === true, 2000));
  const leader = cluster.leader()!;
  const lagging = cluster.ids.find((id) => id !== leader.id)!;
  cluster.crash(lagging, 1e9);
  cluster.addClient("c0", 0);
  for (let i = 0; i < 80; i++) {
    cluster.submit("c0", { kind: "put", key: `k${i}`, value: "v" });
    finish(cluster, "c0");
  }
  assert.ok(leader.snapshotIndex > 0, "the leader compacted past what the follower holds");
  // Every piece for the follower is lost on the way while the leader's process reports bytes
  // still queued for it (a follower resumed after SIGSTOP reads slowly).
  let pieces = 0;
  cluster.dropIf = (m) => {
    if (m.type !== "snapshot" || m.to !== lagging) return false;
    pieces++;
    return true;
  };
  cluster.unsentBytes = (_from, to) => (to === lagging ? 1 : 0);
  cluster.restart(lagging);
  cluster.run(3000);
  const whileQueued = pieces;
  assert.ok(whileQueued >= 1 && whileQueued <= 4, `${whileQueued} pieces sent behind a queue`);
  assert.equal(leader.snapshotsSent, 1, "the transfer was restarted while its pieces were queued");
  // Once the queue drains, a missing acknowledgement means loss: the pieces go again.
  cluster.unsentBytes = () => 0;
  cluster.run(3000);
  assert.ok(pieces > whileQueued, "nothing resent after the queue drained");
  cluster.dropIf = () => false;
  assert.ok(
    cluster.runUntil(() => cluster.replica(lagging).appliedIndex >= leader.commitIndex, 20_000),
    "the follower did not catch up",
  );
  cluster.finalChecks();
  assert.deepEqual(cluster.violations, []);
});

Deno.test("curp core: a leader counts its own entries toward a commit only once stableTo says they are durable", () => {
  // Raft's parallel persist: the leader's appends leave before its own fdatasync (server.ts), so
  // its copy of an entry counts toward the majority only once that fdatasync completed.
  const r = new Replica({ id: "a", replicas: ["a", "b", "c"], random: () => 0 });
  while (r.role === "follower") r.tick();
  r.step({ type: "preVoteReply", from: "b", to: "a", term: r.term + 1, granted: true });
  assert.equal(r.role, "candidate");
  r.step({ type: "voteReply", from: "b", to: "a", term: r.term, granted: true, pool: [] });
  assert.equal(r.role, "leader");
  const ready = r.ready();
  const noop = r.lastIndex;
  const appends = ready.messages.filter((m) => m.type === "append");
  assert.equal(appends.length, 2);
  assert.equal(r.stableIndex, 0, "the no-op is not durable yet");
  // One follower holds it: with the leader's copy not yet durable that is 1 of 3, no commit.
  const reply = (from: string, matchIndex: number) =>
    r.step({ type: "appendReply", from, to: "a", term: r.term, success: true, matchIndex });
  reply("b", noop);
  assert.equal(r.commitIndex, 0, "committed on one durable copy and an unsynced one");
  // A stale mark (another term at that index) says nothing.
  r.stableTo(noop, r.term - 1);
  assert.equal(r.commitIndex, 0);
  r.stableTo(noop, r.term);
  assert.equal(r.commitIndex, noop);
  // Two followers are a majority without the leader's copy.
  r.step({
    type: "propose",
    from: "client",
    to: "a",
    command: { clientId: "client", seq: 1, firstUnacked: 1, txn: {} },
  });
  r.ready();
  const entry = r.lastIndex;
  reply("b", entry);
  assert.equal(r.commitIndex, noop);
  reply("c", entry);
  assert.equal(r.commitIndex, entry);
  assert.equal(r.stableIndex, noop);
});
