/** Replica storage: one log file for hard state, pool and entries; snapshots bound the log. */

import assert from "node:assert/strict";
import { join } from "node:path";
import { ReplicaStorage } from "./storage.ts";
import { KvMachine } from "./kv_machine.ts";
import type { Entry, Ready } from "./core.ts";
import { keyBytes } from "./command.ts";

const identity = { cluster: "a=127.0.0.1:1", id: "a" };

function ready(extra: Partial<Ready>): Ready {
  return { entries: [], messages: [], applied: [], ...extra };
}

function entry(index: number, term = 1): Entry {
  return {
    index,
    term,
    command: {
      clientId: "c",
      seq: index,
      firstUnacked: index,
      txn: { success: [{ put: { key: keyBytes(`k${index}`), value: keyBytes("v") } }] },
    },
  };
}

Deno.test("curp storage: hard state, pool, entries and truncation survive a reopen", async () => {
  const dir = await Deno.makeTempDir({ prefix: "curp3-storage-" });
  try {
    const { storage } = ReplicaStorage.open(dir, identity);
    storage.persist(
      ready({
        hardState: { term: 2, votedFor: "a" },
        truncateFrom: 1,
        entries: [entry(1), entry(2), entry(3)],
      }),
    );
    storage.persist(
      ready({
        truncateFrom: 3,
        entries: [entry(3, 2)],
        pool: [{ term: 2, command: entry(9).command! }],
      }),
    );
    storage.close();
    const { storage: again, state } = ReplicaStorage.open(dir, identity);
    assert.equal(state.term, 2);
    assert.equal(state.votedFor, "a");
    assert.deepEqual(state.log.map((e) => [e.index, e.term]), [[1, 1], [2, 1], [3, 2]]);
    assert.equal(state.pool.length, 1);
    // Pool changes are stored as additions and removals; a removal survives a reopen.
    again.persist(ready({ pool: [{ term: 2, command: entry(10).command! }] }));
    again.persist(ready({ pool: [] }));
    const { storage: reopened, state: emptied } = ReplicaStorage.open(dir, identity);
    reopened.close();
    assert.equal(emptied.pool.length, 0);
    again.close();
    // A torn frame at the end (a crash mid-append) is cut off, the rest kept.
    const path = join(dir, "log.bin");
    const bytes = Deno.readFileSync(path);
    Deno.writeFileSync(path, bytes.subarray(0, bytes.length - 3));
    const { storage: third, state: torn } = ReplicaStorage.open(dir, identity);
    third.close();
    assert.ok(torn.pool.length === 0 || torn.pool.length === 1);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("curp storage: a snapshot replaces the log before it; the file shrinks", async () => {
  const dir = await Deno.makeTempDir({ prefix: "curp3-storage-" });
  try {
    const { storage } = ReplicaStorage.open(dir, identity);
    const kv = new KvMachine();
    const entries = Array.from({ length: 200 }, (_, i) => entry(i + 1));
    storage.persist(ready({ hardState: { term: 1, votedFor: "a" }, truncateFrom: 1, entries }));
    for (const e of entries.slice(0, 190)) kv.apply(e.command!);
    const before = Deno.statSync(join(dir, "log.bin")).size;
    storage.persist(ready({
      snapshot: { index: 190, term: 1, kv: kv.snapshot(), log: entries.slice(190) },
    }));
    const after = Deno.statSync(join(dir, "log.bin")).size;
    assert.ok(after < before / 10, `log.bin ${before} -> ${after} bytes`);
    storage.persist(ready({ truncateFrom: 201, entries: [entry(201)] }));
    storage.close();
    const { storage: again, state } = ReplicaStorage.open(dir, identity);
    again.close();
    assert.equal(state.snapshot?.index, 190);
    assert.deepEqual(state.log.map((e) => e.index), Array.from({ length: 11 }, (_, i) => 191 + i));
    assert.equal(state.term, 1);
    const restored = KvMachine.fromSnapshot(state.snapshot!.kv);
    assert.equal(restored.revision, kv.revision);
    assert.deepEqual(restored.dump(), kv.dump());
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("curp storage: a crash between snapshot and log rewrite skips what the snapshot covers", async () => {
  const dir = await Deno.makeTempDir({ prefix: "curp3-storage-" });
  try {
    const { storage } = ReplicaStorage.open(dir, identity);
    const entries = Array.from({ length: 30 }, (_, i) => entry(i + 1));
    storage.persist(ready({ hardState: { term: 1, votedFor: "a" }, truncateFrom: 1, entries }));
    const kv = new KvMachine();
    for (const e of entries.slice(0, 20)) kv.apply(e.command!);
    const oldLog = Deno.readFileSync(join(dir, "log.bin"));
    storage.persist(
      ready({ snapshot: { index: 20, term: 1, kv: kv.snapshot(), log: entries.slice(20) } }),
    );
    storage.close();
    Deno.writeFileSync(join(dir, "log.bin"), oldLog); // as if the rewrite never happened
    const { storage: again, state } = ReplicaStorage.open(dir, identity);
    again.close();
    assert.deepEqual(state.log.map((e) => e.index), Array.from({ length: 10 }, (_, i) => 21 + i));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
