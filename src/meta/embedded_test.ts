/** Tests of EmbeddedKV: the shared conformance suite, then what only a local SQLite store has
 * (reopening, format refusal, locking, kill -9, WAL sync, injected-clock leases, compaction). */

import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { runMetaKVConformance } from "./conformance.ts";
import { EMBEDDED_FORMAT, EmbeddedKV, openEmbeddedKV } from "./embedded.ts";
import { CompactedError, prefixEnd, type WatchEvent } from "./kv.ts";
import { type IoEngine, openIoEngine } from "../io/mod.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const bytes = (s: string) => encoder.encode(s);
const text = (b: Uint8Array) => decoder.decode(b);

runMetaKVConformance("embedded :memory:", () => openEmbeddedKV(":memory:"));

runMetaKVConformance("embedded file", async () => {
  const dir = await Deno.makeTempDir({ dir: "/tmp", prefix: "meta-conformance-" });
  const kv = await openEmbeddedKV(`${dir}/meta.db`);
  const close = kv.close.bind(kv);
  kv.close = async () => {
    await close();
    await Deno.remove(dir, { recursive: true });
  };
  return kv;
});

/** Run `body` with a fresh temporary directory, removed afterwards. */
async function withDir(body: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ dir: "/tmp", prefix: "meta-test-" });
  try {
    await body(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

Deno.test("embedded: reopening keeps keys, revision, leases and compaction", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/meta.db`;
    const first = await openEmbeddedKV(path);
    const { id } = await first.leaseGrant(600);
    await first.put({ key: bytes("a"), value: bytes("1") });
    await first.put({ key: bytes("b"), value: bytes("2"), lease: id });
    await first.put({ key: bytes("a"), value: bytes("3") });
    await first.compact(await first.revision());
    const revision = await first.revision();
    await first.close();

    const second = await openEmbeddedKV(path);
    try {
      assert.equal(await second.revision(), revision);
      const a = (await second.range({ key: bytes("a") })).kvs[0];
      assert.equal(text(a.value), "3");
      assert.equal(a.version, 2);
      assert.equal((await second.range({ key: bytes("b") })).kvs[0].lease, id);
      assert.equal(await second.leaseKeepAlive(id), 600, "the lease survived the restart");
      assert.throws(
        () => second.watch({ key: bytes("a") }, { startRevision: revision - 1 }, () => {}),
        CompactedError,
      );
      const next = await second.leaseGrant(5);
      assert.notEqual(next.id, id, "lease ids are never reused");
      assert.equal(
        (await second.put({ key: bytes("c"), value: bytes("") })).revision,
        revision + 1,
      );
    } finally {
      await second.close();
    }
  });
});

Deno.test("embedded: a newer format is refused with a clear message", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/meta.db`;
    await (await openEmbeddedKV(path)).close();
    const db = new DatabaseSync(path);
    db.prepare("UPDATE meta SET value = ? WHERE name = 'format'").run(EMBEDDED_FORMAT + 1);
    db.close();
    await assert.rejects(
      openEmbeddedKV(path),
      new Error(
        `Metadata at "${path}" has format ${
          EMBEDDED_FORMAT + 1
        }, newer than this skyfs (${EMBEDDED_FORMAT}): upgrade skyfs`,
      ),
    );
  });
});

Deno.test("embedded: other SQLite databases, missing directories and a second opener are refused", async () => {
  await withDir(async (dir) => {
    const foreign = `${dir}/other.db`;
    const db = new DatabaseSync(foreign);
    db.exec("CREATE TABLE t (x)");
    db.close();
    await assert.rejects(openEmbeddedKV(foreign), /not skyfs metadata/);
    await assert.rejects(openEmbeddedKV(`${dir}/missing/meta.db`), /Cannot open metadata at/);
    const path = `${dir}/meta.db`;
    const holder = await openEmbeddedKV(path);
    try {
      await assert.rejects(openEmbeddedKV(path), /is in use by another process/);
    } finally {
      await holder.close();
    }
    await (await openEmbeddedKV(path)).close(); // free again once the holder closed
  });
});

Deno.test("embedded: a closed store rejects calls", async () => {
  const kv = await openEmbeddedKV(":memory:");
  await kv.close();
  await assert.rejects(kv.range({ key: bytes("a") }), /is closed/);
  await assert.rejects(kv.put({ key: bytes("a"), value: bytes("1") }), /is closed/);
  await assert.rejects(kv.sync(), /is closed/);
  await kv.close(); // twice is fine
});

Deno.test("embedded: kill -9 of a writing process loses no acknowledged write", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/meta.db`;
    // The child prints each index after its put resolved: those are the acknowledged writes.
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "eval",
        `import { openEmbeddedKV } from ${JSON.stringify(import.meta.resolve("./embedded.ts"))};
         const kv = await openEmbeddedKV(${JSON.stringify(path)});
         const out = Deno.stdout;
         for (let i = 0; ; i++) {
           await kv.txn({ success: [
             { put: { key: new TextEncoder().encode("k" + i), value: new TextEncoder().encode("v" + i) } },
             { put: { key: new TextEncoder().encode("last" + (i % 7)), value: new TextEncoder().encode("" + i) } },
           ] });
           out.writeSync(new TextEncoder().encode(i + "\\n"));
         }`,
      ],
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const acknowledged: number[] = [];
    let buffered = "";
    const reader = child.stdout.getReader();
    while (acknowledged.length < 500) {
      const { value, done } = await reader.read();
      if (done) break;
      buffered += decoder.decode(value);
      const lines = buffered.split("\n");
      buffered = lines.pop()!;
      for (const line of lines) acknowledged.push(Number(line));
    }
    child.kill("SIGKILL");
    // Drain what was printed before the kill landed: those writes were acknowledged too.
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffered += decoder.decode(value);
    }
    for (const line of buffered.split("\n")) if (line !== "") acknowledged.push(Number(line));
    const status = await child.status;
    const stderr = text(
      await new Response(child.stderr).arrayBuffer().then((b) => new Uint8Array(b)),
    );
    assert.equal(status.signal, "SIGKILL", `the child should have been killed; stderr: ${stderr}`);
    assert.ok(acknowledged.length >= 500, `child acknowledged only ${acknowledged.length}`);

    const kv = await openEmbeddedKV(path);
    try {
      const last = acknowledged[acknowledged.length - 1];
      for (const i of acknowledged) {
        const found = (await kv.range({ key: bytes(`k${i}`) })).kvs[0];
        assert.equal(found && text(found.value), `v${i}`, `acknowledged write ${i} was lost`);
      }
      // Revision 1 is the empty store; write i got revision i + 2.
      assert.ok(await kv.revision() >= last + 2);
      assert.ok(
        Number(text((await kv.range({ key: bytes(`last${last % 7}`) })).kvs[0].value)) >= last,
      );
    } finally {
      await kv.close();
    }
  });
});

/** The -wal header's checkpoint sequence number (bytes 12-15, big-endian): SQLite increments it
 * each time it restarts the log from its beginning. */
async function walGeneration(walPath: string): Promise<number> {
  const file = await Deno.open(walPath, { read: true });
  try {
    const header = new Uint8Array(32);
    assert.equal(await file.read(header), 32);
    return new DataView(header.buffer).getUint32(12);
  } finally {
    file.close();
  }
}

for (const checkpointIntervalMs of [0, 10]) {
  const by = checkpointIntervalMs === 0 ? "inline checkpoints" : "the checkpoint worker";
  Deno.test(`embedded: the -wal file sync() covers is reused, never replaced (${by})`, async () => {
    await withDir(async (dir) => {
      const path = `${dir}/meta.db`;
      const walPath = `${path}-wal`;
      const kv = await openEmbeddedKV(path, { checkpointIntervalMs });
      try {
        await kv.put({ key: bytes("first"), value: bytes("1") });
        const inode = (await Deno.stat(walPath)).ino;
        const generation = await walGeneration(walPath);
        const value = new Uint8Array(3000).fill(7);
        // Each put logs a few 4 KiB pages: keep writing until SQLite has checkpointed and
        // started the log again from its beginning.
        const deadline = Date.now() + 30_000;
        for (let i = 0; (await walGeneration(walPath)) === generation; i++) {
          if (Date.now() > deadline) throw new Error("the log was never restarted");
          await kv.put({ key: bytes(`key${i % 300}`), value });
          if (i % 100 === 0) {
            await kv.sync();
            await delay(1); // let the worker run
          }
        }
        await Promise.all([kv.sync(), kv.sync(), kv.sync()]);
        assert.equal((await Deno.stat(walPath)).ino, inode);
        assert.deepEqual((await kv.range({ key: bytes("first") })).kvs[0].value, bytes("1"));
      } finally {
        await kv.close();
      }
    });
  });
}

Deno.test("embedded: sync() fdatasyncs the -wal file through the engine it was given", async () => {
  const real = await openIoEngine({ log: () => {} });
  const opened = new Map<number, string>();
  const syncs: { path: string | undefined; datasync: boolean }[] = [];
  const io: IoEngine = new Proxy(real, {
    get(_target, name) {
      if (name === "open") {
        return async (path: string, flags: number, mode?: number) => {
          const fd = await real.open(path, flags, mode);
          opened.set(fd, path);
          return fd;
        };
      }
      if (name === "fsync") {
        return (fd: number, options?: { datasync?: boolean }) => {
          syncs.push({ path: opened.get(fd), datasync: options?.datasync === true });
          return real.fsync(fd, options);
        };
      }
      const value = Reflect.get(real, name);
      return typeof value === "function" ? value.bind(real) : value;
    },
  });
  try {
    await withDir(async (dir) => {
      const path = `${dir}/meta.db`;
      const kv = await openEmbeddedKV(path, { io, checkpointIntervalMs: 0 });
      try {
        assert.deepEqual(syncs, [{ path: dir, datasync: false }]); // the directory, once at open
        await kv.put({ key: bytes("k"), value: bytes("v") });
        await kv.sync();
        await Promise.all([kv.sync(), kv.sync()]);
        const wal = syncs.slice(1);
        assert.ok(wal.length >= 2 && wal.length <= 3, JSON.stringify(wal));
        for (const s of wal) assert.deepEqual(s, { path: `${path}-wal`, datasync: true });
      } finally {
        await kv.close();
      }
      // The store left the engine running (the caller owns it) and closed what it opened.
      const fd = await real.open(`${dir}/after`, 0o101, 0o600); // O_WRONLY | O_CREAT
      await real.close(fd);
    });
  } finally {
    await real.shutdown();
  }
});

Deno.test("embedded: leases expire on the injected clock, keys deleted in one revision", async () => {
  let now = 1_000_000;
  const kv = await openEmbeddedKV(":memory:", { clock: () => now });
  try {
    const { id } = await kv.leaseGrant(10);
    const other = await kv.leaseGrant(100);
    await kv.put({ key: bytes("a"), value: bytes("1"), lease: id });
    await kv.put({ key: bytes("b"), value: bytes("2"), lease: id });
    await kv.put({ key: bytes("c"), value: bytes("3"), lease: other.id });
    const before = await kv.revision();
    const batches: [WatchEvent[], number][] = [];
    const watcher = kv.watch({ key: bytes("a"), rangeEnd: prefixEnd(bytes("")) }, {}, (e, r) => {
      batches.push([e, r]);
    });
    now += 9_999;
    assert.equal((await kv.range({ key: bytes("a") })).count, 1, "not expired before its TTL");
    assert.equal(await kv.leaseKeepAlive(id), 10);
    now += 9_999;
    assert.equal((await kv.range({ key: bytes("a") })).count, 1, "keepAlive renewed the TTL");
    now += 2;
    const after = await kv.range({ key: bytes("a"), rangeEnd: bytes("z") });
    assert.deepEqual(after.kvs.map((k) => text(k.key)), ["c"]);
    assert.equal(after.revision, before + 1, "both keys went in one revision");
    await assert.rejects(kv.leaseKeepAlive(id), /not found/);
    await delay(0);
    assert.deepEqual(batches.map(([e, r]) => [e.map((x) => `${x.type} ${text(x.kv.key)}`), r]), [
      [["delete a", "delete b"], before + 1],
    ]);
    watcher.cancel();
  } finally {
    await kv.close();
  }
});

Deno.test("embedded: the background timer expires leases without any call", async () => {
  let now = 0;
  const kv = new EmbeddedKV(":memory:", { clock: () => now, timerIntervalMs: 5 });
  try {
    const { id } = await kv.leaseGrant(1);
    await kv.put({ key: bytes("a"), value: bytes("1"), lease: id });
    const start = await kv.revision();
    let deleted = false;
    const watcher = kv.watch({ key: bytes("a") }, {}, (events) => {
      deleted = events[0].type === "delete";
    });
    now = 1_000;
    const deadline = Date.now() + 10_000;
    while (!deleted) {
      if (Date.now() > deadline) throw new Error("the timer never expired the lease");
      await delay(5);
    }
    watcher.cancel();
    assert.equal(await kv.revision(), start + 1);
  } finally {
    await kv.close();
  }
});

Deno.test("embedded: a watcher catching up keeps its history through a compaction", async () => {
  const kv = await openEmbeddedKV(":memory:");
  try {
    const first = (await kv.put({ key: bytes("k"), value: bytes("0") })).revision;
    for (let i = 1; i < 3000; i++) await kv.put({ key: bytes("k"), value: bytes(String(i)) });
    const values: string[] = [];
    const watcher = kv.watch({ key: bytes("k") }, { startRevision: first }, (events) => {
      for (const e of events) values.push(text(e.kv.value));
    });
    await kv.compact(await kv.revision()); // before the first history window was even read
    const deadline = Date.now() + 10_000;
    while (values.length < 3000) {
      if (Date.now() > deadline) throw new Error(`only ${values.length} events arrived`);
      await delay(5);
    }
    watcher.cancel();
    assert.deepEqual(values, Array.from({ length: 3000 }, (_, i) => String(i)));
    assert.throws(() => kv.watch({ key: bytes("k") }, { startRevision: first }, () => {}), {
      name: "CompactedError",
    });
  } finally {
    await kv.close();
  }
});

Deno.test("embedded: history is compacted automatically past historyRevisions", async () => {
  const kv = new EmbeddedKV(":memory:", { historyRevisions: 50, timerIntervalMs: 5 });
  try {
    for (let i = 0; i < 1100; i++) await kv.put({ key: bytes("k"), value: bytes(String(i)) });
    const deadline = Date.now() + 10_000;
    for (;;) {
      try {
        kv.watch({ key: bytes("k") }, { startRevision: 2 }, () => {}).cancel();
      } catch (error) {
        assert.ok(error instanceof CompactedError);
        assert.equal(error.compactRevision, (await kv.revision()) - 50);
        break;
      }
      if (Date.now() > deadline) throw new Error("history was never compacted");
      await delay(5);
    }
  } finally {
    await kv.close();
  }
});
