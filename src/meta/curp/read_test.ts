/** Reads outside the log: the client's majority rule, the leader's gates, and the fallback. */

import assert from "node:assert/strict";
import { ClientCore } from "./client_core.ts";
import type { Message } from "./core.ts";
import type { CommandResult } from "./command.ts";
import { Cluster } from "./sim.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const key = encoder.encode("a");

function rangeResult(value: string): CommandResult {
  return {
    ok: true,
    txn: {
      succeeded: true,
      revision: 5,
      responses: [{
        range: {
          kvs: [{
            key,
            value: encoder.encode(value),
            createRevision: 2,
            modRevision: 5,
            version: 1,
            lease: 0,
          }],
          more: false,
          count: 1,
          revision: 5,
        },
      }],
    },
  };
}

function readReply(
  from: string,
  term: number,
  leaderId: string,
  extra: Partial<Extract<Message, { type: "readReply" }>> = {},
): Message {
  return { type: "readReply", from, to: "c", readId: 1, term, leaderId, ...extra };
}

Deno.test("curp read: a deposed leader's answer does not complete without a majority in its term", () => {
  const core = new ClientCore({ id: "c", replicas: ["r0", "r1", "r2"] });
  core.submitRead({ success: [{ range: { key } }] });
  assert.equal(core.ready().messages.filter((m) => m.type === "read").length, 3);
  // r0 still believes it leads term 1; r1 and r2 have moved to term 2 with r1 leading.
  core.step(readReply("r0", 1, "r0", { result: rangeResult("stale") }));
  core.step(readReply("r2", 2, "r1"));
  assert.equal(core.ready().completions.length, 0, "completed on a deposed leader's word");
  assert.equal(core.busy, true);
  core.step(readReply("r1", 2, "r1", { result: rangeResult("fresh") }));
  const [done] = core.ready().completions;
  assert.equal(done.path, "read");
  const kvs = (done.result as Extract<CommandResult, { ok: true }>).txn.responses[0];
  assert.ok("range" in kvs);
  assert.equal(decoder.decode(kvs.range.kvs[0].value), "fresh");
});

Deno.test("curp read: a refusing leader turns the read into a command", () => {
  const core = new ClientCore({ id: "c", replicas: ["r0", "r1", "r2"] });
  core.submitRead({ success: [{ range: { key } }] });
  core.ready();
  core.step(readReply("r0", 1, "r0", { refused: true }));
  const { messages, completions } = core.ready();
  assert.equal(completions.length, 0);
  assert.deepEqual(messages.map((m) => m.type), ["propose", "propose", "propose"]);
  assert.equal(core.busy, true);
});

Deno.test("curp read: replies to an older read id are ignored", () => {
  const core = new ClientCore({ id: "c", replicas: ["r0", "r1", "r2"] });
  core.submitRead({ success: [{ range: { key } }] });
  core.ready();
  core.step({ ...readReply("r0", 1, "r0", { result: rangeResult("x") }), readId: 7 } as Message);
  core.step({ ...readReply("r1", 1, "r0"), readId: 7 } as Message);
  assert.equal(core.ready().completions.length, 0);
});

function steadyCluster(seed: number): Cluster {
  const cluster = new Cluster(seed, 3);
  cluster.maxDelay = 3;
  assert.ok(cluster.runUntil(() => cluster.leader()?.fastPathReady === true, 2000), "no leader");
  return cluster;
}

function finish(cluster: Cluster, clientId: string): void {
  const client = cluster.clients.get(clientId)!;
  assert.ok(cluster.runUntil(() => !client.core.busy, 5000), `${clientId} did not finish`);
}

Deno.test("curp read: a read of a key with an uncommitted fast-path write waits for its commit and sees it", () => {
  const cluster = steadyCluster(11);
  const leader = cluster.leader()!;
  cluster.addClient("w", 0);
  cluster.addClient("r", 0);
  // Hold replication: the put completes on the fast path and stays uncommitted.
  cluster.dropIf = (m) => m.type === "append" && m.from === leader.id;
  cluster.submit("w", { kind: "put", key: "a", value: "new" });
  finish(cluster, "w");
  assert.equal(cluster.completions.at(-1)!.path, "fast");
  const lastIndex = leader.lastIndex;
  cluster.submit("r", { kind: "get", key: "a" });
  cluster.run(40);
  // The leader holds the read (an uncommitted entry writes its key): answering from the applied
  // state, which lacks the put, would lose an acknowledged write.
  assert.equal(cluster.clients.get("r")!.core.busy, true);
  cluster.dropIf = () => false;
  finish(cluster, "r");
  assert.deepEqual(cluster.history.at(-1)!.output, { value: "new" });
  // Answered outside the log once the put committed: no entry of its own.
  assert.equal(cluster.clients.get("r")!.core.readCount, 1);
  assert.equal(leader.lastIndex, lastIndex);
  cluster.run(500);
  cluster.finalChecks();
  assert.deepEqual(cluster.violations, []);
});

Deno.test("curp read: a read with nothing uncommitted completes outside the log, appending nothing", () => {
  const cluster = steadyCluster(12);
  cluster.addClient("w", 0);
  cluster.addClient("r", 0);
  cluster.submit("w", { kind: "put", key: "a", value: "v" });
  finish(cluster, "w");
  cluster.run(200); // let the put commit everywhere
  const leader = cluster.leader()!;
  const lastIndex = leader.lastIndex;
  cluster.submit("r", { kind: "get", key: "a" });
  finish(cluster, "r");
  assert.deepEqual(cluster.history.at(-1)!.output, { value: "v" });
  assert.equal(cluster.clients.get("r")!.core.readCount, 1);
  assert.equal(leader.lastIndex, lastIndex, "the read appended a log entry");
  for (const id of cluster.ids) assert.equal(cluster.replica(id).pool.size, 0);
});

Deno.test("curp read: a new leader answers no read before its term's first entry commits", () => {
  const cluster = steadyCluster(13);
  const old = cluster.leader()!;
  cluster.addClient("r", 0);
  // Elect a new leader while its no-op cannot commit: followers drop its appends.
  cluster.crash(old.id, 1_000_000);
  cluster.dropIf = (m) => m.type === "append";
  assert.ok(cluster.runUntil(() => cluster.leader() !== undefined, 5000), "no new leader");
  const leader = cluster.leader()!;
  assert.equal(leader.fastPathReady, false);
  const replies: Message[] = [];
  leader.step({
    type: "read",
    from: "r",
    to: leader.id,
    readId: 1,
    txn: { success: [{ range: { key } }] },
  });
  replies.push(...leader.takeImmediate());
  assert.equal(replies.length, 0, "answered (or refused) before its no-op committed");
  // Held; the no-op never commits here, so after an election timeout the read is refused (the
  // client then sends it through the log).
  for (let i = 0; i < 25 && replies.length === 0; i++) {
    leader.tick();
    replies.push(...leader.takeImmediate());
  }
  assert.equal(replies.length, 1);
  const reply = replies[0] as Extract<Message, { type: "readReply" }>;
  assert.equal(reply.refused, true);
  assert.equal(reply.result, undefined);
});

Deno.test("curp read: with the leader known, it goes to the leader and one follower and completes on their answers", () => {
  const core = new ClientCore({ id: "c", replicas: ["r0", "r1", "r2"] });
  core.submitRead({ success: [{ range: { key } }] }, { leader: "r1" });
  const sent = core.ready().messages;
  assert.equal(sent.length, 2);
  assert.equal(sent[0].to, "r1");
  assert.notEqual(sent[1].to, "r1");
  assert.ok(sent.every((m) => m.type === "read"));
  core.step(readReply("r1", 3, "r1", { result: rangeResult("v") }));
  assert.equal(core.ready().completions.length, 0, "completed on the leader alone");
  core.step(readReply(sent[1].to, 3, "r1"));
  const { messages, completions } = core.ready();
  assert.equal(completions.length, 1);
  assert.equal(completions[0].path, "read");
  assert.deepEqual(messages, [], "asked the third replica although two answers sufficed");
  core.tick();
  assert.deepEqual(core.ready().messages, []);
  assert.equal(core.readWidenCount, 0);
});

Deno.test("curp read: successive targeted reads rotate the follower, and skip unreachable ones", () => {
  const core = new ClientCore({ id: "c", replicas: ["r0", "r1", "r2"] });
  const followers: string[] = [];
  for (let i = 0; i < 4; i++) {
    core.submitRead({ success: [{ range: { key } }] }, { leader: "r0" });
    const sent = core.ready().messages;
    followers.push(sent[1].to);
    core.step(readReply("r0", 1, "r0", { result: rangeResult("v"), readId: i + 1 }));
    core.step(readReply(sent[1].to, 1, "r0", { readId: i + 1 }));
    assert.equal(core.ready().completions.length, 1);
  }
  assert.deepEqual(followers, ["r1", "r2", "r1", "r2"]);
  // Only r2 reachable: r2 every time.
  for (let i = 0; i < 2; i++) {
    core.submitRead({ success: [{ range: { key } }] }, { leader: "r0", followers: ["r2"] });
    const sent = core.ready().messages;
    assert.deepEqual(sent.map((m) => m.to), ["r0", "r2"]);
    core.step(readReply("r0", 1, "r0", { result: rangeResult("v"), readId: 5 + i }));
    core.step(readReply("r2", 1, "r0", { readId: 5 + i }));
    assert.equal(core.ready().completions.length, 1);
  }
});

Deno.test("curp read: a targeted read not answered by the next tick goes to the third replica", () => {
  const core = new ClientCore({ id: "c", replicas: ["r0", "r1", "r2"] });
  core.submitRead({ success: [{ range: { key } }] }, { leader: "r0" });
  const first = core.ready().messages.map((m) => m.to);
  assert.deepEqual(first, ["r0", "r1"]);
  // The leader answers; the follower asked is slow (or gone).
  core.step(readReply("r0", 2, "r0", { result: rangeResult("v") }));
  assert.deepEqual(core.ready().messages, []);
  // The first tick may come right after the send: only a whole tick without an answer counts.
  core.tick();
  assert.deepEqual(core.ready().messages, []);
  core.tick();
  const widened = core.ready().messages;
  assert.deepEqual(widened.map((m) => [m.type, m.to]), [["read", "r2"]]);
  assert.equal(core.readWidenCount, 1);
  core.step(readReply("r2", 2, "r0"));
  assert.equal(core.ready().completions[0].path, "read");
  // r1 was late: the next reads go to r2 until r1 answers again (here: late, to the old read).
  for (let readId = 2; readId <= 3; readId++) {
    core.submitRead({ success: [{ range: { key } }] }, { leader: "r0" });
    assert.deepEqual(core.ready().messages.map((m) => m.to), ["r0", "r2"]);
    core.step(readReply("r0", 2, "r0", { result: rangeResult("v"), readId }));
    core.step(readReply("r2", 2, "r0", { readId }));
    assert.equal(core.ready().completions.length, 1);
  }
  core.step(readReply("r1", 2, "r0", { readId: 1 }));
  const seen = new Set<string>();
  for (let readId = 4; readId <= 5; readId++) {
    core.submitRead({ success: [{ range: { key } }] }, { leader: "r0" });
    seen.add(core.ready().messages[1].to);
    core.step(readReply("r0", 2, "r0", { result: rangeResult("v"), readId }));
    core.step(readReply("r1", 2, "r0", { readId }));
    core.step(readReply("r2", 2, "r0", { readId }));
    core.ready();
  }
  assert.deepEqual([...seen].sort(), ["r1", "r2"]);
});

Deno.test("curp read: a targeted read whose replies name another leader asks the rest at once and never completes on the deposed one", () => {
  const core = new ClientCore({ id: "c", replicas: ["r0", "r1", "r2"] });
  // The client still believes r0 leads; r1 and r2 are in term 2 with r2 leading.
  core.submitRead({ success: [{ range: { key } }] }, { leader: "r0" });
  assert.deepEqual(core.ready().messages.map((m) => m.to), ["r0", "r1"]);
  core.step(readReply("r0", 1, "r0", { result: rangeResult("stale") }));
  core.step(readReply("r1", 2, "r2"));
  const { messages, completions } = core.ready();
  assert.equal(completions.length, 0, "completed on a deposed leader's word");
  assert.deepEqual(messages.map((m) => m.to), ["r2"], "did not ask the named leader at once");
  core.step(readReply("r2", 2, "r2", { result: rangeResult("fresh") }));
  const [done] = core.ready().completions;
  const kvs = (done.result as Extract<CommandResult, { ok: true }>).txn.responses[0];
  assert.ok("range" in kvs);
  assert.equal(decoder.decode(kvs.range.kvs[0].value), "fresh");
});

Deno.test("curp read: without a known leader it goes to every replica", () => {
  const core = new ClientCore({ id: "c", replicas: ["r0", "r1", "r2"] });
  core.submitRead({ success: [{ range: { key } }] });
  assert.deepEqual(core.ready().messages.map((m) => m.to), ["r0", "r1", "r2"]);
  core.step(readReply("r0", 1, "r0", { result: rangeResult("v"), readId: 1 }));
  core.step(readReply("r2", 1, "r0"));
  assert.equal(core.ready().completions.length, 1);
  // Five replicas: the leader and two followers (a majority of three).
  const five = new ClientCore({ id: "c", replicas: ["r0", "r1", "r2", "r3", "r4"] });
  five.submitRead({ success: [{ range: { key } }] }, { leader: "r3" });
  assert.deepEqual(five.ready().messages.map((m) => m.to), ["r3", "r0", "r1"]);
});
