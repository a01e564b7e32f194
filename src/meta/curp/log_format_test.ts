/** The on-disk log across format changes: log.bin written by builds with version 1 (JSON) and
 * version 2 (MessagePack) frames still loads, new appends go after them as version 3 (MessagePack
 * with a CRC-32), and a log holding all three reopens whole. A frame of a version no build wrote
 * is refused, naming the file; a version 3 frame failing its CRC is a torn tail, cut off. */

import assert from "node:assert/strict";
import { join } from "node:path";
import { ReplicaStorage } from "./storage.ts";
import type { Entry, Ready } from "./core.ts";
import { keyBytes } from "./command.ts";
import { CHECKED_VERSION, encodeJsonFrame, encodeUnboundedFrame } from "./wire.ts";
import { openIoEngine } from "../../io/mod.ts";
import { KvMachine } from "./kv_machine.ts";
import { SnapshotPieces } from "./snapshot_pieces.ts";

const identity = { cluster: "a=127.0.0.1:1", id: "a" };

function entry(index: number, term = 1): Entry {
  return {
    index,
    term,
    command: {
      clientId: "c",
      seq: index,
      firstUnacked: index,
      txn: {
        success: [{ put: { key: keyBytes(`k${index}`), value: new Uint8Array([index, 0]) } }],
      },
    },
  };
}

function ready(extra: Partial<Ready>): Ready {
  return { entries: [], messages: [], applied: [], ...extra };
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

Deno.test("curp log format: a log.bin of version 1 (JSON) and 2 frames loads, version 3 appends follow", async () => {
  const io = await openIoEngine({ log: () => {} });
  const dir = await Deno.makeTempDir({ prefix: "curp-logfmt-" });
  try {
    // cluster.json as any build writes it, then a log.bin as the JSON build wrote it.
    await (await ReplicaStorage.open(dir, identity, io)).storage.close();
    const command = entry(7).command!;
    Deno.writeFileSync(
      join(dir, "log.bin"),
      concat([
        encodeJsonFrame({ hard: { term: 3, votedFor: "a" } }),
        encodeJsonFrame({ entry: entry(1) }),
        encodeUnboundedFrame({ entry: entry(2) }), // version 2, as the next builds wrote
        encodeJsonFrame({ poolAdd: [{ term: 3, command }] }),
      ]),
    );
    {
      const { storage, state } = await ReplicaStorage.open(dir, identity, io);
      assert.equal(state.term, 3);
      assert.equal(state.votedFor, "a");
      assert.deepEqual(state.log, [entry(1), entry(2)]);
      assert.deepEqual(state.pool, [{ term: 3, command }]);
      await storage.persist(ready({ entries: [entry(3)], hardState: { term: 4, votedFor: "a" } }));
      await storage.close();
    }
    const bytes = Deno.readFileSync(join(dir, "log.bin"));
    const versions: number[] = [];
    for (let at = 0; at + 4 < bytes.length;) {
      versions.push(bytes[at + 4]);
      at += 4 + new DataView(bytes.buffer, at).getUint32(0);
    }
    assert.deepEqual(versions.slice(0, 4), [1, 1, 2, 1]);
    assert.ok(versions.length > 4 && versions.slice(4).every((v) => v === CHECKED_VERSION));
    const { storage, state } = await ReplicaStorage.open(dir, identity, io);
    assert.equal(state.term, 4);
    assert.deepEqual(state.log, [entry(1), entry(2), entry(3)]);
    await storage.close();

    // A frame of a version no build wrote: refused with the file named, not read as a torn tail.
    Deno.writeFileSync(join(dir, "log.bin"), new Uint8Array([0, 0, 0, 2, 9, 0]), { append: true });
    await assert.rejects(
      ReplicaStorage.open(dir, identity, io),
      (error: Error) => {
        assert.match(error.message, /log\.bin/);
        assert.match(error.message, /frame version 9, this build reads 1, 2 and 3/);
        return true;
      },
    );
  } finally {
    await io.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});

for (const logWrites of ["mapped", "engine"] as const) {
  Deno.test(`curp log format (${logWrites}): a version 3 frame torn or zeroed is cut off at open`, async () => {
    const io = await openIoEngine({ log: () => {} });
    const dir = await Deno.makeTempDir({ prefix: "curp-logfmt-" });
    const path = join(dir, "log.bin");
    const open = () => ReplicaStorage.open(dir, identity, io, { logWrites });
    try {
      {
        const { storage } = await open();
        assert.equal(storage.logWrites, logWrites);
        await storage.persist(ready({ hardState: { term: 1, votedFor: "a" } }));
        for (let i = 1; i <= 3; i++) await storage.persist(ready({ entries: [entry(i)] }));
        await storage.close();
      }
      const whole = Deno.readFileSync(path);
      // The last frame: entry 3's.
      let last = 0;
      for (let at = 0; at < whole.length; at += 4 + new DataView(whole.buffer, at).getUint32(0)) {
        last = at;
      }
      // A bit flipped in its body (a page that reached the disk half): its CRC fails.
      const flipped = whole.slice();
      flipped[whole.length - 2] ^= 0x40;
      Deno.writeFileSync(path, flipped);
      {
        const { storage, state } = await open();
        assert.deepEqual(state.log.map((e) => e.index), [1, 2]);
        // Appends go where the torn frame was, and reopen whole.
        await storage.persist(ready({ entries: [entry(3, 2)] }));
        await storage.close();
        const { storage: again, state: after } = await open();
        await again.close();
        assert.deepEqual(after.log, [entry(1), entry(2), entry(3, 2)]);
      }
      // Its body zeroed, and zeros after it (a mapped log's room ahead): cut too.
      const zeroed = new Uint8Array(whole.length + 8192);
      zeroed.set(whole);
      zeroed.fill(0, last + 9, whole.length);
      Deno.writeFileSync(path, zeroed);
      {
        const { storage, state } = await open();
        await storage.close();
        assert.deepEqual(state.log.map((e) => e.index), [1, 2]);
      }
      // Only zeros after the last whole frame: the log is whole, nothing is rewritten.
      const padded = new Uint8Array(whole.length + 8192);
      padded.set(whole);
      Deno.writeFileSync(path, padded);
      const inode = Deno.statSync(path).ino;
      {
        const { storage, state } = await open();
        assert.equal(Deno.statSync(path).ino, inode);
        await storage.close();
        assert.deepEqual(state.log.map((e) => e.index), [1, 2, 3]);
      }
    } finally {
      await io.shutdown();
      await Deno.remove(dir, { recursive: true });
    }
  });
}

Deno.test("curp log format: a snapshot.bin of version 1 (JSON) pieces loads", async () => {
  const io = await openIoEngine({ log: () => {} });
  const dir = await Deno.makeTempDir({ prefix: "curp-logfmt-" });
  try {
    await (await ReplicaStorage.open(dir, identity, io)).storage.close();
    const kv = new KvMachine();
    for (let i = 1; i <= 300; i++) kv.apply(entry(i).command!);
    const pieces = new SnapshotPieces(kv.snapshot(), 2000); // several pieces
    const records: Uint8Array[] = [];
    for (let piece = 0;; piece++) {
      const { data, last } = pieces.piece(piece);
      records.push(encodeJsonFrame({ snapshotPiece: { index: 300, term: 1, piece, last, data } }));
      if (last) break;
    }
    assert.ok(records.length > 2, `${records.length} pieces`);
    Deno.writeFileSync(join(dir, "snapshot.bin"), concat(records));
    const { storage, state } = await ReplicaStorage.open(dir, identity, io);
    await storage.close();
    assert.equal(state.snapshot?.index, 300);
    assert.deepEqual(KvMachine.fromSnapshot(state.snapshot!.kv).dump(), kv.dump());
  } finally {
    await io.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});
