/** Validates the linearizability checker on hand-written histories and against brute force. */

import assert from "node:assert/strict";
import fc from "fast-check";
import { checkKvHistory, type KvInput, kvModel, type KvOutput } from "./kv_model.ts";
import type { Operation } from "./porcupine.ts";

type Op = Operation<KvInput, KvOutput>;

function op(input: KvInput, output: KvOutput | undefined, call: number, ret: number): Op {
  return { input, output, call, return: ret };
}

const put = (v: string): KvInput => ({ kind: "put", key: "k", value: v });
const get: KvInput = { kind: "get", key: "k" };

Deno.test("lincheck: sequential history that matches the model is linearizable", () => {
  assert.equal(
    checkKvHistory([op(put("1"), { value: null }, 0, 1), op(get, { value: "1" }, 2, 3)]),
    true,
  );
});

Deno.test("lincheck: a read after a completed write that misses it is not linearizable", () => {
  assert.equal(
    checkKvHistory([op(put("1"), { value: null }, 0, 1), op(get, { value: null }, 2, 3)]),
    false,
  );
});

Deno.test("lincheck: a read overlapping a write may see either value", () => {
  for (const seen of [null, "1"]) {
    assert.equal(
      checkKvHistory([op(put("1"), { value: null }, 0, 5), op(get, { value: seen }, 1, 2)]),
      true,
    );
  }
});

Deno.test("lincheck: new value then old value from later reads is not linearizable", () => {
  // The classic stale read: get1 returned the new value and finished before get2 began.
  assert.equal(
    checkKvHistory([
      op(put("1"), { value: null }, 0, 10),
      op(get, { value: "1" }, 1, 2),
      op(get, { value: null }, 3, 4),
    ]),
    false,
  );
});

Deno.test("lincheck: a pending write may or may not have happened", () => {
  const pending = op(put("1"), undefined, 0, Infinity);
  assert.equal(checkKvHistory([pending, op(get, { value: "1" }, 1, 2)]), true);
  assert.equal(checkKvHistory([pending, op(get, { value: null }, 1, 2)]), true);
  assert.equal(
    checkKvHistory([pending, op(get, { value: "1" }, 1, 2), op(get, { value: null }, 3, 4)]),
    false,
  );
});

Deno.test("lincheck: compare-and-set and delete outcomes are checked", () => {
  const cas = (expected: string | null, value: string): KvInput => ({
    kind: "cas",
    key: "k",
    expected,
    value,
  });
  // Two concurrent CAS from the same expected value cannot both succeed.
  assert.equal(
    checkKvHistory([
      op(cas(null, "a"), { succeeded: true }, 0, 5),
      op(cas(null, "b"), { succeeded: true }, 1, 6),
    ]),
    false,
  );
  assert.equal(
    checkKvHistory([
      op(cas(null, "a"), { succeeded: true }, 0, 5),
      op(cas(null, "b"), { succeeded: false }, 1, 6),
      op({ kind: "delete", key: "k" }, { deleted: 1 }, 7, 8),
      op(get, { value: null }, 9, 10),
    ]),
    true,
  );
});

Deno.test("lincheck: keys are independent partitions", () => {
  assert.equal(
    checkKvHistory([
      op({ kind: "put", key: "x", value: "1" }, { value: null }, 0, 1),
      op({ kind: "get", key: "y" }, { value: null }, 2, 3),
      op({ kind: "get", key: "x" }, { value: "1" }, 4, 5),
    ]),
    true,
  );
});

/** Reference: try every order consistent with real time (only for tiny histories). */
function bruteForce(history: Op[]): boolean {
  const n = history.length;
  const used = new Array<boolean>(n).fill(false);
  const search = (state: string | null, done: number): boolean => {
    if (done === n) return true;
    for (let i = 0; i < n; i++) {
      if (used[i]) continue;
      // i may go next only if no unused operation returned before i was called.
      let allowed = true;
      for (let j = 0; j < n; j++) {
        if (!used[j] && j !== i && history[j].return < history[i].call) allowed = false;
      }
      if (!allowed) continue;
      const { ok, next } = kvModel.step(state, history[i].input, history[i].output);
      if (!ok) continue;
      used[i] = true;
      if (search(next, done + 1)) return true;
      used[i] = false;
    }
    return false;
  };
  return search(null, 0);
}

Deno.test("lincheck: agrees with brute force on random small histories", () => {
  const input = fc.oneof(
    fc.constant<KvInput>(get),
    fc.constantFrom("1", "2").map((v): KvInput => put(v)),
    fc.constant<KvInput>({ kind: "delete", key: "k" }),
    fc.record({ e: fc.constantFrom(null, "1", "2"), v: fc.constantFrom("1", "2") }).map((
      x,
    ): KvInput => ({ kind: "cas", key: "k", expected: x.e, value: x.v })),
  );
  const output = fc.oneof(
    fc.constantFrom(null, "1", "2").map((v): KvOutput => ({ value: v })),
    fc.constantFrom(0, 1).map((d): KvOutput => ({ deleted: d })),
    fc.boolean().map((s): KvOutput => ({ succeeded: s })),
  );
  const history = fc.array(
    fc.record({ input, start: fc.nat(20), length: fc.integer({ min: 1, max: 8 }), guess: output }),
    { minLength: 1, maxLength: 6 },
  ).map((ops) =>
    ops.map((o, i): Op => {
      // Outputs of the right shape for the input, so both verdicts occur.
      const out = o.input.kind === "delete"
        ? ("deleted" in o.guess ? o.guess : { deleted: 0 })
        : o.input.kind === "cas"
        ? ("succeeded" in o.guess ? o.guess : { succeeded: false })
        : ("value" in o.guess ? o.guess : { value: null });
      // Calls at even times, returns at odd ones: no ties, whose meaning the two checkers could
      // read differently.
      const call = o.start * 40 + 2 * i;
      return op(o.input, out, call, call + o.length * 40 + 1);
    })
  );
  let linearizable = 0, not = 0;
  fc.assert(
    fc.property(history, (h) => {
      const expected = bruteForce(h);
      if (expected) linearizable++;
      else not++;
      assert.equal(checkKvHistory(h), expected);
    }),
    { numRuns: 400, seed: 7 },
  );
  // The generator must exercise both verdicts, or the comparison proves little.
  assert.ok(linearizable > 20 && not > 20, `${linearizable} linearizable, ${not} not`);
});
