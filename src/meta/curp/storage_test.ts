/** Replica storage: one log file for hard state, pool and entries; snapshots bound the log. */

import assert from "node:assert/strict";
import { join } from "node:path";
import { ReplicaStorage } from "./storage.ts";
import { KvMachine } from "./kv_machine.ts";
import type { Entry, Ready } from "./core.ts";
import { keyBytes } from "./command.ts";
import { type IoEngine, openIoEngine } from "../../io/mod.ts";

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

for (const kind of ["io_uring", "portable"] as const) {
  const engine = () => openIoEngine({ engine: kind, log: () => {} });
  Deno.test(`curp storage (${kind}): hard state, pool, entries and truncation survive a reopen`, async () => {
    const io = await engine();
    const dir = await Deno.makeTempDir({ prefix: "curp3-storage-" });
    try {
      const { storage } = await ReplicaStorage.open(dir, identity, io);
      await storage.persist(
        ready({
          hardState: { term: 2, votedFor: "a" },
          truncateFrom: 1,
          entries: [entry(1), entry(2), entry(3)],
        }),
      );
      await storage.persist(
        ready({
          truncateFrom: 3,
          entries: [entry(3, 2)],
          pool: [{ term: 2, command: entry(9).command! }],
        }),
      );
      await storage.close();
      const { storage: again, state } = await ReplicaStorage.open(dir, identity, io);
      assert.equal(state.term, 2);
      assert.equal(state.votedFor, "a");
      assert.deepEqual(state.log.map((e) => [e.index, e.term]), [[1, 1], [2, 1], [3, 2]]);
      assert.equal(state.pool.length, 1);
      // Pool changes are stored as additions and removals; a removal survives a reopen.
      await again.persist(ready({ pool: [{ term: 2, command: entry(10).command! }] }));
      await again.persist(ready({ pool: [] }));
      const { storage: reopened, state: emptied } = await ReplicaStorage.open(dir, identity, io);
      await reopened.close();
      assert.equal(emptied.pool.length, 0);
      await again.close();
      // A torn frame at the end (a crash mid-append) is cut off, the rest kept.
      const path = join(dir, "log.bin");
      const bytes = Deno.readFileSync(path);
      Deno.writeFileSync(path, bytes.subarray(0, bytes.length - 3));
      const { storage: third, state: torn } = await ReplicaStorage.open(dir, identity, io);
      await third.close();
      assert.ok(torn.pool.length === 0 || torn.pool.length === 1);
    } finally {
      await io.shutdown();
      await Deno.remove(dir, { recursive: true });
    }
  });

  Deno.test(`curp storage (${kind}): a snapshot replaces the log before it; the file shrinks`, async () => {
    const io = await engine();
    const dir = await Deno.makeTempDir({ prefix: "curp3-storage-" });
    try {
      const { storage } = await ReplicaStorage.open(dir, identity, io);
      const kv = new KvMachine();
      const entries = Array.from({ length: 200 }, (_, i) => entry(i + 1));
      await storage.persist(
        ready({ hardState: { term: 1, votedFor: "a" }, truncateFrom: 1, entries }),
      );
      for (const e of entries.slice(0, 190)) kv.apply(e.command!);
      const before = Deno.statSync(join(dir, "log.bin")).size;
      await storage.persist(ready({
        snapshot: { index: 190, term: 1, kv: kv.snapshot(), log: entries.slice(190) },
      }));
      const after = Deno.statSync(join(dir, "log.bin")).size;
      assert.ok(after < before / 10, `log.bin ${before} -> ${after} bytes`);
      await storage.persist(ready({ truncateFrom: 201, entries: [entry(201)] }));
      await storage.close();
      const { storage: again, state } = await ReplicaStorage.open(dir, identity, io);
      await again.close();
      assert.equal(state.snapshot?.index, 190);
      assert.deepEqual(
        state.log.map((e) => e.index),
        Array.from({ length: 11 }, (_, i) => 191 + i),
      );
      assert.equal(state.term, 1);
      const restored = KvMachine.fromSnapshot(state.snapshot!.kv);
      assert.equal(restored.revision, kv.revision);
      assert.deepEqual(restored.dump(), kv.dump());
    } finally {
      await io.shutdown();
      await Deno.remove(dir, { recursive: true });
    }
  });

  Deno.test(`curp storage (${kind}): a crash between snapshot and log rewrite skips what the snapshot covers`, async () => {
    const io = await engine();
    const dir = await Deno.makeTempDir({ prefix: "curp3-storage-" });
    try {
      const { storage } = await ReplicaStorage.open(dir, identity, io);
      const entries = Array.from({ length: 30 }, (_, i) => entry(i + 1));
      await storage.persist(
        ready({ hardState: { term: 1, votedFor: "a" }, truncateFrom: 1, entries }),
      );
      const kv = new KvMachine();
      for (const e of entries.slice(0, 20)) kv.apply(e.command!);
      const oldLog = Deno.readFileSync(join(dir, "log.bin"));
      await storage.persist(
        ready({ snapshot: { index: 20, term: 1, kv: kv.snapshot(), log: entries.slice(20) } }),
      );
      await storage.close();
      Deno.writeFileSync(join(dir, "log.bin"), oldLog); // as if the rewrite never happened
      const { storage: again, state } = await ReplicaStorage.open(dir, identity, io);
      await again.close();
      assert.deepEqual(state.log.map((e) => e.index), Array.from({ length: 10 }, (_, i) => 21 + i));
    } finally {
      await io.shutdown();
      await Deno.remove(dir, { recursive: true });
    }
  });

  Deno.test(`curp storage (${kind}): a torn tail is cut off, and appends after it read back`, async () => {
    const io = await engine();
    const dir = await Deno.makeTempDir({ prefix: "uring2-storage-" });
    try {
      const { storage } = await ReplicaStorage.open(dir, identity, io);
      await storage.persist(ready({ hardState: { term: 1, votedFor: "a" }, truncateFrom: 1 }));
      await storage.persist(ready({ entries: [entry(1), entry(2)] }));
      await storage.persist(ready({ entries: [entry(3)] }));
      await storage.close();
      const path = join(dir, "log.bin");
      const whole = Deno.readFileSync(path);
      // A crash in the middle of the last append: its frame is only partly on disk.
      Deno.writeFileSync(path, whole.subarray(0, whole.length - 7));
      const { storage: again, state } = await ReplicaStorage.open(dir, identity, io);
      assert.deepEqual(state.log.map((e) => e.index), [1, 2]);
      // A shorter append than the torn frame: what it leaves behind must not read as a frame.
      await again.persist(ready({ truncateFrom: 3, entries: [entry(3, 2)] }));
      await again.close();
      const { storage: third, state: after } = await ReplicaStorage.open(dir, identity, io);
      await third.close();
      assert.deepEqual(after.log.map((e) => [e.index, e.term]), [[1, 1], [2, 1], [3, 2]]);
      assert.equal(after.term, 1);
    } finally {
      await io.shutdown();
      await Deno.remove(dir, { recursive: true });
    }
  });

  Deno.test(`curp storage (${kind}): one persist is one linked write+fdatasync at the log's end`, async () => {
    const real = await engine();
    const calls: string[] = [];
    const io: IoEngine = {
      kind: real.kind,
      open: (path, flags, mode) => real.open(path, flags, mode),
      close: (fd) => real.close(fd),
      read: (fd, into, offset) => real.read(fd, into, offset),
      readv: (fd, into, offset) => real.readv(fd, into, offset),
      writev: (fd, data, offset) => real.writev(fd, data, offset),
      fallocate: (fd, mode, offset, length) => real.fallocate(fd, mode, offset, length),
      statx: (path) => real.statx(path),
      unlink: (path) => real.unlink(path),
      rename: (from, to) => real.rename(from, to),
      shutdown: () => real.shutdown(),
      writeAndSync: (fd, data, offset) => {
        calls.push(`writeAndSync@${offset}+${data.length}`);
        return real.writeAndSync(fd, data, offset);
      },
      write: (fd, data, offset) => {
        calls.push("write");
        return real.write(fd, data, offset);
      },
      fsync: (fd, options) => {
        calls.push("fsync");
        return real.fsync(fd, options);
      },
    };
    const dir = await Deno.makeTempDir({ prefix: "uring2-storage-" });
    try {
      const { storage } = await ReplicaStorage.open(dir, identity, io);
      calls.length = 0;
      await storage.persist(ready({ hardState: { term: 1, votedFor: "a" }, truncateFrom: 1 }));
      await storage.persist(ready({ entries: [entry(1), entry(2)] }));
      await storage.persist(ready({})); // nothing to store: no I/O at all
      await storage.close();
      const size = Deno.statSync(join(dir, "log.bin")).size;
      assert.equal(calls.length, 2, calls.join(" "));
      const [first, second] = calls.map((c) => /^writeAndSync@(\d+)\+(\d+)$/.exec(c)!);
      assert.equal(Number(first[1]), 0);
      assert.equal(Number(second[1]), Number(first[2]));
      assert.equal(Number(second[1]) + Number(second[2]), size);
    } finally {
      await real.shutdown();
      await Deno.remove(dir, { recursive: true });
    }
  });
}
