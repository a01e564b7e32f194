/**
 * The merge operation (MetaKV `merge`, compares with `ignore`): its semantics in the state
 * machine, its conflict rule, and seeded simulator runs with merges in the client mix.
 * @module
 */

import assert from "node:assert/strict";
import type { MergeRequest, TxnRequest, WatchEvent } from "../kv.ts";
import { type Command, conflicts } from "./command.ts";
import { KvMachine } from "./kv_machine.ts";
import { simulate } from "./sim.ts";

const enc = new TextEncoder();
const key = enc.encode("k");

/** 20 bytes: a u8 at 0, a u32 at 4, a timespec at 8 (sec 10, nsec 500). */
function record(): Uint8Array {
  const v = new Uint8Array(20);
  const view = new DataView(v.buffer);
  v[0] = 250;
  view.setUint32(4, 7, true);
  view.setBigInt64(8, 10n, true);
  view.setUint32(16, 500, true);
  return v;
}

let seq = 0;
function cmd(txn: TxnRequest, clientId = "c"): Command {
  return { clientId, seq: ++seq, firstUnacked: 0, txn };
}

function merge(m: Omit<MergeRequest, "key">, k = key): TxnRequest {
  return { success: [{ merge: { key: k, ...m } }] };
}

function fields(v: Uint8Array) {
  const view = new DataView(v.buffer, v.byteOffset, v.byteLength);
  return {
    u8: v[0],
    u32: view.getUint32(4, true),
    sec: Number(view.getBigInt64(8, true)),
    nsec: view.getUint32(16, true),
  };
}

Deno.test("merge: max and modular add, the same in either order, as a put event", () => {
  const a = merge({ max: [{ at: 8, sec: 10, nsec: 900 }], add: [{ at: 0, width: 1, delta: 9 }] });
  const b = merge({ max: [{ at: 8, sec: 9, nsec: 999 }], add: [{ at: 4, width: 4, delta: -8 }] });
  const results: Uint8Array[] = [];
  for (const order of [[a, b], [b, a]]) {
    const m = new KvMachine();
    m.apply(cmd({ success: [{ put: { key, value: record() } }] }));
    for (const txn of order) assert.equal(m.apply(cmd(txn)).result?.ok, true);
    results.push(m.dump()[0].value);
    assert.equal(m.dump()[0].version, 3);
    assert.equal(m.revision, 4);
  }
  assert.deepEqual(results[0], results[1]);
  // 250 + 9 wraps to 3; 7 - 8 wraps to 2^32 - 1; the later time wins.
  assert.deepEqual(fields(results[0]), { u8: 3, u32: 2 ** 32 - 1, sec: 10, nsec: 900 });
  // Watches see a merge as a put with the merged value.
  const m = new KvMachine();
  m.apply(cmd({ success: [{ put: { key, value: record() } }] }));
  m.apply(cmd(a));
  const events: WatchEvent[] = m.historyFrom(0).at(-1)!.events;
  assert.equal(events[0].type, "put");
  assert.equal(fields(events[0].kv.value).u8, 3);
  assert.equal(fields(events[0].prevKv!.value).u8, 250);
});

Deno.test("merge: of a missing key writes nothing; a field beyond the value refuses", () => {
  const m = new KvMachine();
  const r = m.apply(cmd(merge({ add: [{ at: 0, width: 1, delta: 1 }] }))).result!;
  assert.equal(r.ok, true);
  assert.equal(m.revision, 1);
  assert.deepEqual(m.dump(), []);
  m.apply(cmd({ success: [{ put: { key, value: new Uint8Array(4) } }] }));
  const beyond = m.apply(cmd(merge({ max: [{ at: 0, sec: 1, nsec: 0 }] }))).result!;
  assert.equal(beyond.ok, false);
  assert.match((beyond as { error: string }).error, /beyond the value's 4 bytes/);
  const width = m.apply(cmd(merge({ add: [{ at: 0, width: 5, delta: 1 }] }))).result!;
  assert.match((width as { error: string }).error, /width of 1-4 bytes/);
  const twice = m.apply(
    cmd({ success: [{ merge: { key, add: [] } }, { put: { key, value: new Uint8Array(4) } }] }),
  ).result!;
  assert.match((twice as { error: string }).error, /Duplicate key/);
});

Deno.test("merge: a value compare with ignore looks only at the other bytes", () => {
  const m = new KvMachine();
  m.apply(cmd({ success: [{ put: { key, value: record() } }] }));
  m.apply(cmd(merge({ add: [{ at: 0, width: 1, delta: 1 }] })));
  const stale = record(); // byte 0 is 250, the store's is 251
  const ignoring = (ignore: { at: number; width: number }[], value = stale): TxnRequest => ({
    compare: [{ key, target: "value", result: "==", value, ignore }],
  });
  assert.equal(m.read(ignoring([{ at: 0, width: 1 }])).ok && true, true);
  const holds = (txn: TxnRequest) => {
    const r = m.read(txn);
    return r.ok && r.txn.succeeded;
  };
  assert.equal(holds(ignoring([{ at: 0, width: 1 }])), true);
  assert.equal(holds(ignoring([{ at: 4, width: 4 }])), false);
  assert.equal(holds(ignoring([{ at: 0, width: 1 }], stale.subarray(0, 19))), false);
  const other = record();
  other[12] = 1;
  assert.equal(holds(ignoring([{ at: 0, width: 1 }], other)), false);
});

Deno.test("merge: conflict rule (merges commute with merges and with compares that ignore them)", () => {
  const m0 = cmd(merge({ add: [{ at: 0, width: 1, delta: 1 }] }), "a");
  const m1 = cmd(merge({ max: [{ at: 8, sec: 1, nsec: 0 }] }), "b");
  const masked = (ignore: { at: number; width: number }[]) =>
    cmd({
      compare: [{ key, target: "value", result: "==", value: record(), ignore }],
      success: [{ put: { key: enc.encode("other"), value: record() } }],
    }, "c");
  const put = cmd({ success: [{ put: { key, value: record() } }] }, "d");
  const get = cmd({ success: [{ range: { key } }] }, "e");
  const whole = cmd({
    compare: [{ key, target: "value", result: "==", value: record() }],
    success: [{ put: { key: enc.encode("x"), value: record() } }],
  }, "f");
  const elsewhere = cmd(merge({ add: [{ at: 0, width: 1, delta: 1 }] }, enc.encode("j")), "g");
  assert.equal(conflicts(m0, m1), false);
  assert.equal(conflicts(m0, masked([{ at: 0, width: 1 }])), false);
  assert.equal(conflicts(m1, masked([{ at: 0, width: 1 }, { at: 8, width: 12 }])), false);
  assert.equal(conflicts(m1, masked([{ at: 0, width: 1 }, { at: 8, width: 8 }])), true);
  assert.equal(conflicts(m1, masked([{ at: 0, width: 1 }])), true);
  assert.equal(conflicts(masked([{ at: 0, width: 1 }]), m1), true);
  assert.equal(conflicts(m0, put), true);
  assert.equal(conflicts(put, masked([{ at: 0, width: 20 }])), true);
  assert.equal(conflicts(m0, get), true);
  assert.equal(conflicts(m0, whole), true);
  assert.equal(conflicts(m0, elsewhere), false);
});

const SEEDS = 150;

Deno.test(`merge: ${SEEDS} simulator seeds with merges in the mix keep every invariant`, () => {
  const failures: string[] = [];
  let fast = 0, slow = 0;
  for (let seed = 1; seed <= SEEDS; seed++) {
    const r = simulate(seed, { merges: true });
    fast += r.fast;
    slow += r.slow;
    if (r.violations.length > 0) failures.push(`seed ${seed}: ${r.violations.join("; ")}`);
    if (r.linearizable !== true) failures.push(`seed ${seed}: linearizable ${r.linearizable}`);
  }
  assert.deepEqual(failures, []);
  assert.ok(fast > 0 && slow > 0, `fast ${fast}, slow ${slow}`);
});

Deno.test("merge: without faults, a run with merges completes most commands fast", () => {
  const r = simulate(5, { faults: false, replicas: 3, merges: true, opsPerClient: 40 });
  assert.deepEqual(r.violations, []);
  assert.equal(r.linearizable, true);
  assert.ok(r.fast >= 20, `fast ${r.fast}, slow ${r.slow}`);
});

Deno.test(`early answers: ${SEEDS} simulator seeds (kill -9 crashes keep written Readies) pass`, () => {
  // curp.witness_ack_after_write: proposal replies leave once a Ready is written. A crash that
  // keeps what was written (a process kill: the page cache survives) loses nothing acknowledged.
  // (With crashes that drop unsynced writes, a machine's power loss, 10 of 300 seeds lose an
  // acknowledged fast-path command and nothing else: README, "Witness records acknowledged from
  // the page cache".)
  const failures: string[] = [];
  for (let seed = 1; seed <= SEEDS; seed++) {
    const r = simulate(seed, { merges: seed % 2 === 0, earlyAck: true });
    if (r.violations.length > 0) failures.push(`seed ${seed}: ${r.violations.join("; ")}`);
    if (r.linearizable !== true) failures.push(`seed ${seed}: linearizable ${r.linearizable}`);
  }
  assert.deepEqual(failures, []);
});
