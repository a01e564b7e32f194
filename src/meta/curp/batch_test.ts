/** Batch commands (client-side group commit) in the state machine: each transaction runs as if
 * proposed alone, one after the other. */

import assert from "node:assert/strict";
import type { RequestOp, TxnRequest, WatchEvent } from "../kv.ts";
import {
  BATCH_TXN,
  type Command,
  type CommandResult,
  ConflictIndex,
  conflicts,
  footprintOf,
  type Interval,
  keyBytes,
  type Masked,
  overlaps,
} from "./command.ts";
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

/** The conflict rule as it was written before the hash sets: every pair of intervals. */
function conflictsPairwise(a: Command, b: Command): boolean {
  const fa = footprintOf(a);
  const fb = footprintOf(b);
  const any = (x: Interval[], y: Interval[]) => x.some((i) => y.some((j) => overlaps(i, j)));
  const keysOf = (m: Masked[]) => m.map((x) => x.key);
  const seen = (m: Masked, r: Masked) =>
    overlaps(m.key, r.key) &&
    m.ranges.some((x) => !r.ranges.some((y) => y.at <= x.at && x.at + x.width <= y.at + y.width));
  const anySeen = (ms: Masked[], rs: Masked[]) => ms.some((m) => rs.some((r) => seen(m, r)));
  return any(fa.writes, fb.writes) || any(fa.writes, fb.reads) || any(fa.reads, fb.writes) ||
    any(fa.writes, keysOf(fb.merges)) || any(keysOf(fa.merges), fb.writes) ||
    any(fa.writes, keysOf(fb.maskedReads)) || any(keysOf(fa.maskedReads), fb.writes) ||
    any(keysOf(fa.merges), fb.reads) || any(fa.reads, keysOf(fb.merges)) ||
    anySeen(fa.merges, fb.maskedReads) || anySeen(fb.merges, fa.maskedReads) ||
    fa.leaseWrites.some((l) => fb.leaseWrites.includes(l)) ||
    fa.leaseWrites.some((l) => fb.leaseReads.includes(l)) ||
    fa.leaseReads.some((l) => fb.leaseWrites.includes(l));
}

/** Random commands over a few keys (some prefixes of others), ranges, merges, masked compares,
 * batches; with `leases`, puts on leases and lease and compaction commands too. */
function randomCommands(seed: number, leases = false): (i: number) => Command {
  const random = (n: number) => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return (seed >>> 8) % n;
  };
  const keys = ["a", "ab", "abc", "b", "b\0", "c", "d/1", "d/2", "d0"];
  const key = () => k(keys[random(keys.length)]);
  const range = () => {
    const p = random(4);
    if (p === 0) return { key: key() }; // one key
    if (p === 1) return { key: key(), rangeEnd: new Uint8Array([0]) }; // to the end
    return { key: key(), rangeEnd: key() }; // [key, end), perhaps empty
  };
  const op = (): RequestOp => {
    const p = random(4);
    if (p === 0) return { range: range() };
    if (p === 1) {
      const lease = leases && random(8) === 0 ? { lease: 1 + random(3) } : {};
      return { put: { key: key(), value: k("v"), ...lease } };
    }
    if (p === 2) return { deleteRange: range() };
    const add = [{ at: random(3) * 4, width: 4, delta: 1 }];
    return { merge: { key: key(), add } };
  };
  const txn = (): TxnRequest => ({
    compare: Array.from(
      { length: random(3) },
      () =>
        random(2) === 0
          ? { key: key(), target: "version" as const, result: "==" as const, value: 0 }
          : {
            key: key(),
            target: "value" as const,
            result: "==" as const,
            value: k("v"),
            ignore: [{ at: random(3) * 4, width: 4 }],
          },
    ),
    success: Array.from({ length: 1 + random(3) }, op),
  });
  return (i: number): Command => {
    if (leases && random(20) === 0) {
      const admin = random(2) === 0
        ? { leaseKeepAlive: { id: 1 + random(3) } }
        : { compact: { revision: 5 } };
      return { clientId: `c${i}`, seq: 1, firstUnacked: 1, txn: {}, admin };
    }
    return random(3) === 0
      ? command(`c${i}`, 1, {}, Array.from({ length: 2 + random(4) }, txn))
      : command(`c${i}`, 1, txn());
  };
}

Deno.test("batch: the hashed conflict check agrees with the pairwise one on random commands", () => {
  const cmd = randomCommands(12345);
  let both = 0;
  for (let i = 0; i < 3000; i++) {
    const a = cmd(2 * i), b = cmd(2 * i + 1);
    const expected = conflictsPairwise(a, b);
    assert.equal(conflicts(a, b), expected, `pair ${i}`);
    assert.equal(conflicts(b, a), expected, `pair ${i} swapped`);
    if (expected) both++;
  }
  assert.ok(both > 300 && both < 2700, `${both} of 3000 pairs conflict`);
});

Deno.test("batch: a conflict index finds every indexed command a command conflicts with", () => {
  // Point-only commands over many keys, so that most of an index's commands share no key with a
  // probe and are not visited; then the generator's mix (ranges, merges, leases, compaction).
  const pointOnly = (i: number): Command =>
    command(`p${i}`, 1, {
      compare: [{ key: k(`f${i % 97}`), target: "version", result: "==", value: 0 }],
      success: [
        { put: { key: k(`f${i % 97}`), value: k("v") } },
        { put: { key: k(`dir${i % 5}`), value: k("v") } },
      ],
    });
  for (
    const [name, make] of [["points", pointOnly], ["mixed", randomCommands(777, true)]] as const
  ) {
    const index = new ConflictIndex<number>();
    const held = new Map<number, Command>();
    let visits = 0, checks = 0, found = 0;
    for (let i = 0; i < 2000; i++) {
      const probe = make(i);
      const expected = [...held.values()].some((other) => conflicts(other, probe));
      const seen = new Set<number>();
      const got = index.some(probe, (id, other) => {
        assert.equal(held.get(id), other);
        visits++;
        seen.add(id);
        return conflicts(other, probe);
      });
      assert.equal(got, expected, `${name}: probe ${i}`);
      if (got) found++;
      else {
        // Visited none that conflicts, and skipped none that does.
        for (const [id, other] of held) if (!seen.has(id)) assert.ok(!conflicts(other, probe));
      }
      checks += held.size;
      index.add(i, probe);
      held.set(i, probe);
      // Keep 40-ish: drop a few, the oldest or a random one.
      while (held.size > 40) {
        const id = i % 3 === 0 ? held.keys().next().value! : [...held.keys()][i % held.size];
        assert.equal(index.delete(id), true);
        held.delete(id);
      }
      assert.equal(index.size, held.size);
    }
    assert.ok(found > 100, `${name}: ${found} probes conflict`);
    if (name === "points") assert.ok(visits < checks / 4, `${visits} visits for ${checks} records`);
  }
});
