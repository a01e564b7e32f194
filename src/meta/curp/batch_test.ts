/** Batch commands (client-side group commit) in the state machine: each transaction runs as if
 * proposed alone, one after the other. */

import assert from "node:assert/strict";
import type { TxnRequest, WatchEvent } from "../kv.ts";
import { BATCH_TXN, type Command, type CommandResult, conflicts, keyBytes } from "./command.ts";
import { KvMachine } from "./kv_machine.ts";

const k = keyBytes;

function value20(text: string): Uint8Array {
  const v = new Uint8Array(20);
  v.set(k(text));
  return v;
}

/** Transactions covering what a batch must keep apart: a put, a compare that fails in the middle
 * (its failure branch runs), one that holds only because of an earlier txn of the same batch, a
 * put on a lease that does not exist (refused alone), merges, a delete, a no-op delete. */
function mixedTxns(): TxnRequest[] {
  return [
    { success: [{ put: { key: k("a"), value: value20("a1") } }] },
    {
      compare: [{ key: k("missing"), target: "version", result: "==", value: 5 }],
      success: [{ put: { key: k("never"), value: k("x") } }],
      failure: [{ range: { key: k("a") } }],
    },
    {
      compare: [{ key: k("a"), target: "version", result: "==", value: 1 }],
      success: [{ put: { key: k("b"), value: k("b1"), prevKv: true } }],
    },
    { success: [{ put: { key: k("c"), value: k("c1"), lease: 777 } }] },
    { success: [{ merge: { key: k("a"), add: [{ at: 0, width: 1, delta: 2 }] } }] },
    {
      compare: [{
        key: k("a"),
        target: "value",
        result: "==",
        value: value20("a1"),
        ignore: [{ at: 0, width: 1 }],
      }],
      success: [{ merge: { key: k("a"), max: [{ at: 8, sec: 3, nsec: 4 }] } }],
    },
    { success: [{ deleteRange: { key: k("nothing-here") } }] },
    { success: [{ deleteRange: { key: k("b"), prevKv: true } }] },
    { success: [{ range: { key: k("a") } }] },
  ];
}

function command(clientId: string, seq: number, txn: TxnRequest, batch?: TxnRequest[]): Command {
  return batch === undefined
    ? { clientId, seq, firstUnacked: seq, txn }
    : { clientId, seq, firstUnacked: seq, txn: BATCH_TXN, batch };
}

function watchAll(m: KvMachine): { revision: number; events: WatchEvent[] }[] {
  return m.historyFrom(m.compactRevision);
}

Deno.test("batch: each txn gets the result, revision and watch record it gets when proposed alone", () => {
  const alone = new KvMachine();
  const batched = new KvMachine();
  const txns = mixedTxns();
  // Some history first, the same on both.
  for (const m of [alone, batched]) {
    m.apply(command("setup", 1, { success: [{ put: { key: k("z"), value: k("z") } }] }));
  }
  const expected = txns.map((txn, i) => alone.apply(command("x", i + 1, txn)).result!);
  const outcome = batched.apply(command("x", 1, {}, txns));
  assert.equal(outcome.executed, true);
  const result = outcome.result!;
  assert.ok(result.ok);
  assert.deepEqual(result.batch, expected);
  assert.equal(result.txn.revision, alone.revision);
  assert.equal(batched.revision, alone.revision);
  assert.deepEqual(batched.dump(), alone.dump());
  assert.deepEqual(watchAll(batched), watchAll(alone));
  // What the cases are for: the compare in the middle failed, the next one held thanks to the
  // first txn, the lease put alone was refused, every write has its own revision.
  const r = result.batch!;
  assert.ok(r[1].ok && !r[1].txn.succeeded);
  assert.ok(r[2].ok && r[2].txn.succeeded);
  assert.ok(!r[3].ok && /Lease 777 not found/.test(r[3].error));
  const revisionOf = (i: number) => (r[i] as { txn: { revision: number } }).txn.revision;
  const writes = [0, 2, 4, 5, 7].map(revisionOf);
  for (let i = 1; i < writes.length; i++) assert.equal(writes[i], writes[i - 1] + 1);
  // A retry of the batch is the same command: not run again, the same results.
  const again = batched.apply(command("x", 1, {}, txns));
  assert.equal(again.executed, false);
  assert.deepEqual(again.result, result);
});

Deno.test("batch: the speculative result is the committed one without revisions", () => {
  const m = new KvMachine();
  m.apply(command("setup", 1, { success: [{ put: { key: k("a"), value: value20("a0") } }] }));
  const batch = command("x", 1, {}, mixedTxns());
  const speculative = m.speculate(batch);
  const committed = m.apply(batch).result!;
  const strip = (r: CommandResult) =>
    JSON.stringify(r, (key, v) => key === "revision" || key.endsWith("Revision") ? 0 : v);
  assert.ok(speculative.ok && speculative.batch !== undefined);
  assert.equal(speculative.batch.length, mixedTxns().length);
  assert.equal(strip(speculative), strip(committed));
  // An earlier own batch, uncommitted, is run first when a later command depends on it.
  const m2 = new KvMachine();
  const earlier = command("y", 1, {}, [
    { success: [{ put: { key: k("p"), value: k("1") } }] },
    { success: [{ put: { key: k("q"), value: k("1") } }] },
  ]);
  const later = command("y", 2, {
    compare: [{ key: k("q"), target: "value", result: "==", value: k("1") }],
    success: [{ range: { key: k("p") } }],
  });
  const s = m2.speculate(later, [earlier]);
  assert.ok(s.ok && s.txn.succeeded);
});

Deno.test("batch: the footprint is the union of its txns", () => {
  const batch = command("x", 1, {}, [
    { success: [{ put: { key: k("a"), value: k("1") } }] },
    { success: [{ put: { key: k("b"), value: k("1") } }] },
  ]);
  const onB = command("y", 1, { success: [{ range: { key: k("b") } }] });
  const onC = command("y", 2, { success: [{ put: { key: k("c"), value: k("1") } }] });
  assert.equal(conflicts(batch, onB), true);
  assert.equal(conflicts(batch, onC), false);
});

Deno.test("batch: a replica of an earlier build refuses a batch instead of writing nothing", () => {
  // What such a replica runs: the command's `txn`, BATCH_TXN, with the batch field unknown to it.
  const m = new KvMachine();
  const r = m.apply({ clientId: "x", seq: 1, firstUnacked: 1, txn: BATCH_TXN }).result!;
  assert.ok(!r.ok && /Key must not be empty/.test(r.error));
});
