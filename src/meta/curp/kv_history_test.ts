/** The KV machine's bounded watch history: the last MAX_HISTORY_REVISIONS write revisions, no
 * more, no fewer, before and after the dropped records are cut off the array (kv_machine.ts
 * `#historyStart`), in `historyFrom`, `compactRevision`, `snapshot` and a machine restored from it. */

import assert from "node:assert/strict";
import { KvMachine, MAX_HISTORY_REVISIONS } from "./kv_machine.ts";

const enc = new TextEncoder();

function put(m: KvMachine, seq: number): void {
  m.apply({
    clientId: "c",
    seq,
    firstUnacked: seq,
    txn: {
      success: [{ put: { key: enc.encode(`k${seq % 50}`), value: new Uint8Array([seq & 255]) } }],
    },
  });
}

function check(m: KvMachine, writes: number): void {
  const held = Math.min(writes, MAX_HISTORY_REVISIONS);
  // A fresh store is at revision 1; write n makes revision n + 1.
  const oldest = writes + 2 - held;
  assert.equal(m.revision, writes + 1);
  assert.equal(m.compactRevision, writes > MAX_HISTORY_REVISIONS ? oldest : 1, `after ${writes}`);
  const all = m.historyFrom(m.compactRevision);
  assert.equal(all.length, held, `history length after ${writes}`);
  assert.equal(all[0].revision, oldest);
  assert.equal(all.at(-1)!.revision, writes + 1);
  assert.deepEqual(m.historyFrom(writes + 1).map((r) => r.revision), [writes + 1]);
  if (held > 1) assert.equal(m.historyFrom(oldest + 1)[0].revision, oldest + 1);
  const snap = m.snapshot();
  assert.equal(snap.history.length, held, `snapshot history after ${writes}`);
  assert.equal(snap.history[0].revision, oldest);
  const restored = KvMachine.fromSnapshot(snap);
  assert.equal(restored.compactRevision, m.compactRevision);
  assert.deepEqual(
    restored.historyFrom(oldest).map((r) => r.revision),
    all.map((r) => r.revision),
  );
}

Deno.test("curp kv machine: the history holds the last MAX_HISTORY_REVISIONS writes across the cut", () => {
  const m = new KvMachine();
  const checkAt = new Set([
    1,
    MAX_HISTORY_REVISIONS,
    MAX_HISTORY_REVISIONS + 1,
    MAX_HISTORY_REVISIONS + 2,
    MAX_HISTORY_REVISIONS * 1.25 - 1,
    MAX_HISTORY_REVISIONS * 1.25,
    MAX_HISTORY_REVISIONS * 1.25 + 1,
    MAX_HISTORY_REVISIONS * 1.5 + 3,
  ]);
  for (let n = 1; n <= MAX_HISTORY_REVISIONS * 1.5 + 3; n++) {
    put(m, n);
    if (checkAt.has(n)) check(m, n);
  }
});

Deno.test("curp kv machine: compact in the middle of the held history", () => {
  const m = new KvMachine();
  const writes = MAX_HISTORY_REVISIONS + 700;
  for (let n = 1; n <= writes; n++) put(m, n);
  const to = m.revision - 100;
  const out = m.apply({
    clientId: "c",
    seq: writes + 1,
    firstUnacked: writes + 1,
    txn: {},
    admin: { compact: { revision: to } },
  });
  assert.ok(out.executed && out.result?.ok);
  assert.equal(m.compactRevision, to);
  assert.equal(m.historyFrom(to).length, 101);
  assert.equal(m.snapshot().history.length, 101);
  put(m, writes + 2);
  assert.equal(m.historyFrom(to).length, 102);
});
