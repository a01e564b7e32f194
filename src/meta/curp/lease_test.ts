/** Leases in the pure core: the leader's clock expires them through the log, keepAlive renews. */

import assert from "node:assert/strict";
import { Replica } from "./core.ts";
import type { AdminOp } from "./command.ts";
import type { TxnRequest } from "../kv.ts";
import { keyBytes } from "./command.ts";

/** Take every Ready, each made durable at once (core.ts `stableTo`: a leader commits its own
 * entries only then). */
function settle(r: Replica): void {
  while (r.hasReady()) {
    r.ready();
    r.stableTo(r.lastIndex, r.termAt(r.lastIndex));
  }
}

function soloLeader(): Replica {
  // One replica is its own majority: it elects itself after the election timeout.
  const r = new Replica({ id: "a", replicas: ["a"], random: () => 0, tickMs: 100 });
  for (let i = 0; i < 20 && r.role !== "leader"; i++) r.tick();
  assert.equal(r.role, "leader");
  settle(r);
  return r;
}

let seq = 0;
function propose(r: Replica, txn: TxnRequest, admin?: AdminOp): void {
  seq++;
  r.step({
    type: "propose",
    from: "c",
    to: "a",
    command: { clientId: "c", seq, firstUnacked: seq, txn, ...(admin ? { admin } : {}) },
  });
  settle(r);
}

function ticks(r: Replica, n: number): void {
  for (let i = 0; i < n; i++) {
    r.tick();
    settle(r);
  }
}

Deno.test("curp lease: the leader expires a lease through the log, keepAlive postpones it", () => {
  const r = soloLeader();
  propose(r, {}, { leaseGrant: { id: 7, ttlSeconds: 1 } }); // 10 ticks of 100 ms
  propose(r, { success: [{ put: { key: keyBytes("k1"), value: keyBytes("v"), lease: 7 } }] });
  propose(r, { success: [{ put: { key: keyBytes("k2"), value: keyBytes("v"), lease: 7 } }] });
  assert.equal(r.kv.dump().length, 2);
  ticks(r, 6);
  propose(r, {}, { leaseKeepAlive: { id: 7 } });
  ticks(r, 8); // 14 ticks after the grant, 8 after the keepAlive
  assert.equal(r.kv.dump().length, 2, "expired although kept alive");
  const before = r.kv.revision;
  ticks(r, 3);
  assert.equal(r.kv.dump().length, 0, "not expired 11 ticks after the keepAlive");
  assert.equal(r.kv.hasLease(7), false);
  assert.equal(r.kv.revision, before + 1, "both keys deleted in one revision");
  const last = r.kv.historyFrom(before + 1);
  assert.equal(last.length, 1);
  assert.deepEqual(last[0].events.map((e) => e.type), ["delete", "delete"]);
  assert.ok(r.log.some((e) => e.expire?.includes(7)), "expiry is a log entry");
  propose(r, {}, { leaseKeepAlive: { id: 7 } });
  assert.equal(r.kv.resultOf({ clientId: "c", seq } as never)?.ok, false);
});

Deno.test("curp lease: a new leader gives every lease a full TTL again", () => {
  const r = soloLeader();
  propose(r, {}, { leaseGrant: { id: 9, ttlSeconds: 1 } });
  ticks(r, 8);
  // Restart from the same log: the lease's clock restarts at election.
  const restarted = new Replica(
    { id: "a", replicas: ["a"], random: () => 0, tickMs: 100 },
    { term: r.term, votedFor: "a", log: r.log, pool: [] },
  );
  for (let i = 0; i < 20 && restarted.role !== "leader"; i++) restarted.tick();
  ticks(restarted, 1);
  assert.equal(restarted.kv.hasLease(9), true, "the restarted leader applied the grant");
  ticks(restarted, 5);
  assert.equal(restarted.kv.hasLease(9), true, "expired early after the leader change");
  ticks(restarted, 10);
  assert.equal(restarted.kv.hasLease(9), false);
});
