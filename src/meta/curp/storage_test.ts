/** Replica storage: one log file for hard state, pool and entries; snapshots bound the log. */

import assert from "node:assert/strict";
import { join } from "node:path";
import { firstFrom, ReplicaStorage } from "./storage.ts";
import { KvMachine } from "./kv_machine.ts";
import type { Entry, Ready } from "./core.ts";
import { keyBytes } from "./command.ts";
import { encodeJson } from "./wire.ts";
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

/** `real` with some methods replaced (a Proxy: the engines keep private fields). */
function wrapEngine(real: IoEngine, overrides: Partial<IoEngine>): IoEngine {
  return new Proxy(real, {
    get(target, name) {
      if (name in overrides) return overrides[name as keyof IoEngine];
      const value = Reflect.get(target, name);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
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

  Deno.test(`curp storage (${kind}): a compaction is written in the background; appends do not wait for it`, async () => {
    const real = await engine();
    const dir = await Deno.makeTempDir({ prefix: "curp3-storage-" });
    // Hold back every write to the snapshot's temporary until released.
    let release = () => {};
    const held = new Promise<void>((r) => release = r);
    const snapshotFds = new Set<number>();
    const io = wrapEngine(real, {
      open: async (path: string, flags: number, mode?: number) => {
        const fd = await real.open(path, flags, mode);
        if (path.endsWith("snapshot.bin.tmp")) snapshotFds.add(fd);
        return fd;
      },
      write: async (fd: number, data: Uint8Array, offset: number) => {
        if (snapshotFds.has(fd)) await held;
        return real.write(fd, data, offset);
      },
    });
    try {
      const { storage } = await ReplicaStorage.open(dir, identity, io);
      const kv = new KvMachine();
      // Values big enough for a snapshot of several pieces.
      const big = new Uint8Array(300 * 1024).fill(7);
      const entries = Array.from({ length: 20 }, (_, i) => {
        const e = entry(i + 1);
        (e.command!.txn.success![0] as { put: { value: Uint8Array } }).put.value = big;
        return e;
      });
      await storage.persist(
        ready({ hardState: { term: 1, votedFor: "a" }, truncateFrom: 1, entries }),
      );
      for (const e of entries.slice(0, 15)) kv.apply(e.command!);
      const before = Deno.statSync(join(dir, "log.bin")).size;
      await storage.persist(ready({ compaction: { index: 15, term: 1, kv: kv.snapshot() } }));
      // The snapshot is stuck; appends still complete, and a reopen now sees the whole log.
      await storage.persist(ready({ truncateFrom: 21, entries: [entry(21)] }));
      const { storage: peek, state: early } = await ReplicaStorage.open(dir, identity, real);
      await peek.close();
      assert.equal(early.snapshot, undefined);
      assert.equal(early.log.length, 21);
      release();
      await storage.compacting;
      // The next persist folds the compaction into log.bin.
      await storage.persist(ready({ truncateFrom: 22, entries: [entry(22)] }));
      const after = Deno.statSync(join(dir, "log.bin")).size;
      assert.ok(after < before / 2, `log.bin ${before} -> ${after} bytes`);
      await storage.close();
      const { storage: again, state } = await ReplicaStorage.open(dir, identity, real);
      await again.close();
      assert.equal(state.snapshot?.index, 15);
      assert.deepEqual(state.log.map((e) => e.index), [16, 17, 18, 19, 20, 21, 22]);
      assert.deepEqual(KvMachine.fromSnapshot(state.snapshot!.kv).dump(), kv.dump());
      const pieces = Deno.readFileSync(join(dir, "snapshot.bin"));
      assert.ok(pieces.length > 4 * 1024 * 1024, `snapshot.bin is ${pieces.length} bytes`);
    } finally {
      await real.shutdown();
      await Deno.remove(dir, { recursive: true });
    }
  });

  Deno.test(`curp storage (${kind}): a snapshot.bin of an earlier build (one record) is read`, async () => {
    const io = await engine();
    const dir = await Deno.makeTempDir({ prefix: "curp3-storage-" });
    try {
      const { storage } = await ReplicaStorage.open(dir, identity, io);
      await storage.close();
      const kv = new KvMachine();
      for (let i = 1; i <= 5; i++) kv.apply(entry(i).command!);
      const json = new TextEncoder().encode(
        encodeJson({ snapshot: { index: 5, term: 1, kv: kv.snapshot() } }),
      );
      const record = new Uint8Array(5 + json.length);
      new DataView(record.buffer).setUint32(0, json.length + 1);
      record[4] = 1;
      record.set(json, 5);
      Deno.writeFileSync(join(dir, "snapshot.bin"), record);
      const { storage: again, state } = await ReplicaStorage.open(dir, identity, io);
      await again.close();
      assert.equal(state.snapshot?.index, 5);
      assert.deepEqual(KvMachine.fromSnapshot(state.snapshot!.kv).dump(), kv.dump());
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

  for (const logWrites of ["mapped", "engine"] as const) {
    Deno.test(`curp storage (${kind}, ${logWrites}): one Ready is one copy (mapped) or write at the log's end, and one fdatasync covers every earlier write`, async () => {
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
          calls.push(`write@${offset}+${data.length}`);
          return real.write(fd, data, offset);
        },
        fsync: (fd, options) => {
          calls.push("fsync");
          return real.fsync(fd, options);
        },
      };
      const dir = await Deno.makeTempDir({ prefix: "h1-storage-" });
      try {
        const { storage } = await ReplicaStorage.open(dir, identity, io, { logWrites });
        assert.equal(storage.logWrites, logWrites);
        calls.length = 0;
        await storage.persist(ready({ hardState: { term: 1, votedFor: "a" }, truncateFrom: 1 }));
        const afterFirst = storage.logBytes;
        await storage.persist(ready({ entries: [entry(1), entry(2)] }));
        await storage.persist(ready({})); // nothing to store: no I/O at all
        // Group commit: two Readies written, then one fdatasync for both (and for a third
        // caller that arrives while it runs, nothing was written since).
        await storage.write(ready({ entries: [entry(3)] }));
        await storage.write(ready({ entries: [entry(4)] }));
        const fsyncs = storage.fsyncs;
        await Promise.all([storage.durable(), storage.durable()]);
        assert.equal(storage.fsyncs, fsyncs + 1);
        assert.equal(storage.durableIndex, 4);
        const end = storage.logBytes;
        await storage.close();
        const size = Deno.statSync(join(dir, "log.bin")).size;
        assert.equal(size, end); // a mapped log's room ahead is cut at close
        if (logWrites === "mapped") {
          assert.deepEqual(calls, ["fsync", "fsync", "fsync"]);
        } else {
          assert.deepEqual(calls, [
            `write@0+${afterFirst}`,
            "fsync",
            `write@${afterFirst}+${calls[2].split("+")[1]}`,
            "fsync",
            calls[4],
            calls[5],
            "fsync",
          ]);
          assert.match(calls[4], /^write@\d+\+\d+$/);
          assert.match(calls[5], /^write@\d+\+\d+$/);
        }
        const { storage: again, state } = await ReplicaStorage.open(dir, identity, real);
        await again.close();
        assert.deepEqual(state.log.map((e) => e.index), [1, 2, 3, 4]);
      } finally {
        await real.shutdown();
        await Deno.remove(dir, { recursive: true });
      }
    });
  }
}

Deno.test("firstFrom finds the first entry at or after an index, as a scan from the front", () => {
  const runs = [[], [5], [3, 4, 5, 6], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], [2, 4, 8, 9]];
  for (const indices of runs) {
    const entries = indices.map((index) => ({ index }));
    for (let index = 0; index <= 13; index++) {
      assert.equal(
        firstFrom(entries, index),
        entries.findIndex((e) => e.index >= index),
        `${JSON.stringify(indices)} from ${index}`,
      );
    }
  }
});
