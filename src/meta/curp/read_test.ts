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
