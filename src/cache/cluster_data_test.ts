/**
 * Cluster data path without FUSE: two or three Vfs "nodes" share one metadata store and one
 * directory backend, each with its own data dir, as separate daemons would.
 */

import assert from "node:assert/strict";
import { crc32 } from "node:zlib";
import { openEmbeddedKV } from "../meta/embedded.ts";
import type { MetaKV } from "../meta/kv.ts";
import { createPortableEngine } from "../io/portable.ts";
import type { IoEngine } from "../io/types.ts";
import { openUringEngine } from "../io/uring.ts";
import { openPeers, UringTransport } from "../cluster/uring_transport.ts";
import { createVfs, type VfsWithRecovery } from "../vfs/vfs.ts";
import type { Ctx } from "../vfs/types.ts";
import { type BackendStore, DirBackend } from "./backend.ts";
import { type ChunkSource, ClusterData, type ClusterDataOptions } from "./cluster_data.ts";
import { listenPeers, TcpTransport } from "../cluster/transport.ts";
import { peerThenBackend } from "../cluster/peer_source.ts";
import { CHUNK_SIZE, decodeChunkMap } from "./chunk_map.ts";
import { collectGarbage } from "./gc.ts";
import { decodeInode, keys } from "../meta/namespace.ts";
import { prefixEnd } from "../meta/kv.ts";
import { errnoName, FsError } from "../fs_error.ts";
import * as libc from "../io/libc.ts";
import {
  ackKey,
  openGuardKey,
  openRecordKey,
  openRecordsPrefix,
  reclaimBarrier,
} from "./open_records.ts";
import { seededRandom } from "../../tests/_harness.ts";

const ctx: Ctx = { uid: 0, gid: 0, pid: 1 };
const O_RDWR = 2;
const name = (s: string) => new TextEncoder().encode(s);

/** Counts backend reads, to check that concurrent misses fetch once. */
class CountingBackend implements BackendStore {
  readonly kind = "counting";
  gets = 0;
  puts = 0;
  constructor(readonly inner: BackendStore) {}
  put(key: string, data: Uint8Array) {
    this.puts++;
    return this.inner.put(key, data);
  }
  get(key: string) {
    this.gets++;
    return this.inner.get(key);
  }
  delete(key: string) {
    return this.inner.delete(key);
  }
  list(prefix: string) {
    return this.inner.list(prefix);
  }
  close() {
    return Promise.resolve();
  }
}

interface Node {
  vfs: VfsWithRecovery;
  data: ClusterData;
  dir: string;
  watcher: { cancel(): void };
}

function startsWith(key: Uint8Array, prefix: Uint8Array): boolean {
  return key.length >= prefix.length && prefix.every((b, i) => key[i] === b);
}

async function setup(engine?: IoEngine) {
  const dir = await Deno.makeTempDir({ prefix: "cluster-data-" });
  const kv = await openEmbeddedKV(`${dir}/meta.db`);
  // Each node's destroy closes its kv; the shared one is closed once at the end.
  // recordReads: the snapshots an unlink takes of an inode's open guard and records; reads and
  // writes: every transaction, by whether it writes anything (a compare-only one is a read).
  // readGate: while set, every read waits for it (a read held in flight).
  const calls: { recordReads: number; reads: number; writes: number; readGate?: Promise<void> } = {
    recordReads: 0,
    reads: 0,
    writes: 0,
  };
  const shared: MetaKV = new Proxy(kv, {
    get: (target, p) => {
      if (p === "close") return () => Promise.resolve();
      if (p === "txn") {
        return (...args: Parameters<MetaKV["txn"]>) => {
          const guard = name("cl/openguard/");
          const ranges = (args[0].success ?? []).filter((op) => "range" in op);
          if (ranges.some((op) => startsWith(op.range.key, guard))) calls.recordReads++;
          const ops = [...(args[0].success ?? []), ...(args[0].failure ?? [])];
          if (ops.every((op) => "range" in op)) {
            calls.reads++;
            if (calls.readGate) return calls.readGate.then(() => target.txn(...args));
          } else calls.writes++;
          return target.txn(...args);
        };
      }
      const value = Reflect.get(target, p);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  const backend = new CountingBackend(await DirBackend.open(`${dir}/backend`));
  const io = engine ?? createPortableEngine();
  const nodes: Node[] = [];
  const start = async (
    id: string,
    capacityBytes?: number,
    more: Partial<ClusterDataOptions> = {},
    attrWritebackMs?: number,
    localFileOps?: "inline" | "engine",
  ): Promise<Node> => {
    const nodeDir = `${dir}/${id}`;
    await Deno.mkdir(nodeDir, { recursive: true });
    const data = new ClusterData(nodeDir, { nodeId: id, backend, capacityBytes, ...more });
    const vfs = await createVfs({
      kv: shared,
      io,
      dataDir: nodeDir,
      cluster: data,
      attrWritebackMs,
      localFileOps,
    });
    // As ClusterNode: keys other nodes change leave this node's namespace cache.
    // From a revision it then acknowledges (the reclaim barrier, src/cache/open_records.ts).
    const fs = name("fs/");
    const { revision } = await kv.range({ key: fs });
    const watcher = kv.watch(
      { key: fs, rangeEnd: prefixEnd(fs) },
      { startRevision: revision + 1 },
      (events) => {
        for (const event of events) {
          data.forgetMetadata(
            event.kv.key,
            event.type === "put" ? event.kv.value : undefined,
            event.kv.modRevision,
          );
        }
      },
    );
    await data.watchStarted(revision);
    const node = { vfs, data, dir: nodeDir, watcher };
    nodes.push(node);
    return node;
  };
  const stop = async (node: Node) => {
    node.watcher.cancel();
    await node.vfs.destroy();
    await node.data.close();
    nodes.splice(nodes.indexOf(node), 1);
  };
  const cleanup = async () => {
    for (const node of [...nodes]) await stop(node);
    await kv.close();
    await Deno.remove(dir, { recursive: true });
  };
  return { start, stop, cleanup, backend, dir, kv: shared, calls };
}

async function writeFile(vfs: VfsWithRecovery, file: string, bytes: Uint8Array, at = 0) {
  let ino: number;
  let fh: number;
  try {
    ino = (await vfs.lookup(ctx, 1, name(file))).ino;
    fh = (await vfs.open(ctx, ino, O_RDWR)).fh;
  } catch {
    const created = await vfs.create(ctx, 1, name(file), 0o644, 0, O_RDWR);
    ino = created.attr.ino;
    fh = created.fh;
  }
  for (let off = 0; off < bytes.length; off += 1 << 20) {
    await vfs.write(ctx, ino, fh, at + off, bytes.subarray(off, off + (1 << 20)));
  }
  await vfs.flush(ctx, ino, fh, 0n);
  await vfs.release(ino, fh, 0);
  return ino;
}

async function readFile(vfs: VfsWithRecovery, file: string): Promise<Uint8Array> {
  const attr = await vfs.lookup(ctx, 1, name(file));
  const { fh } = await vfs.open(ctx, attr.ino, 0);
  const size = (await vfs.getattr(ctx, attr.ino)).size;
  const out = new Uint8Array(size);
  const reads = [];
  for (let off = 0; off < size; off += 1 << 20) {
    reads.push(vfs.read(ctx, attr.ino, fh, off, out.subarray(off, off + (1 << 20))));
  }
  await Promise.all(reads);
  await vfs.release(attr.ino, fh, 0);
  return out;
}

const random = (n: number) => {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i += 65536) crypto.getRandomValues(out.subarray(i, i + 65536));
  return out;
};

const options = { sanitizeResources: false, sanitizeOps: false };

Deno.test({
  name: "cluster data: written on A, read on B; a rewrite on A is seen at B's next open",
  ...options,
  fn: async () => {
    const c = await setup();
    try {
      const a = await c.start("a");
      const b = await c.start("b");
      const content = random(2 * CHUNK_SIZE + 12345);
      await writeFile(a.vfs, "f", content);
      assert.equal((await c.backend.list("c/")).length, 3);
      assert.deepEqual(await readFile(b.vfs, "f"), content);
      const gets = c.backend.gets;
      assert.equal(gets, 3, "concurrent reads of one chunk fetch it once");
      // A rewrites 100 bytes in chunk 1 only: B refetches that chunk and keeps 0 and 2.
      const patch = random(100);
      await writeFile(a.vfs, "f", patch, CHUNK_SIZE + 10);
      content.set(patch, CHUNK_SIZE + 10);
      assert.deepEqual(await readFile(b.vfs, "f"), content);
      assert.equal(c.backend.gets, gets + 1);
      // C, fresh, also reads it all.
      const n3 = await c.start("c");
      assert.deepEqual(await readFile(n3.vfs, "f"), content);
    } finally {
      await c.cleanup();
    }
  },
});

Deno.test({
  name: "cluster data: an open on B asks the FUSE layer to drop the kernel's attributes " +
    "(A may have changed the size since B's kernel took it), unless the inode is as B's last " +
    "open read it; the open of a create does not",
  ...options,
  fn: async () => {
    const c = await setup();
    try {
      const a = await c.start("a");
      const b = await c.start("b");
      await writeFile(a.vfs, "f", random(5000));
      const ino = (await b.vfs.lookup(ctx, 1, name("f"))).ino;
      assert.equal((await b.vfs.getattr(ctx, ino)).size, 5000);
      let size = 7;
      for (const flags of [0, O_RDWR]) {
        await a.vfs.setattr(ctx, ino, { size: ++size });
        const opened = await b.vfs.open(ctx, ino, flags);
        assert.equal(opened.attributesStale, true, `flags ${flags}`);
        assert.equal((await b.vfs.getattr(ctx, ino)).size, size, "the open read A's size");
        await b.vfs.release(ino, opened.fh, 0);
        // Nothing changed the inode since B's last open, which had them dropped: nothing to do.
        const again = await b.vfs.open(ctx, ino, flags);
        assert.notEqual(again.attributesStale, true, `flags ${flags}, unchanged`);
        await b.vfs.release(ino, again.fh, 0);
      }
      const created = await b.vfs.create(ctx, 1, name("g"), 0o644, 0, O_RDWR);
      assert.notEqual(created.attributesStale, true, "a create's reply carries its attributes");
      await b.vfs.release(created.attr.ino, created.fh, 0);
    } finally {
      await c.cleanup();
    }
  },
});

Deno.test({
  name: "cluster data: an open of a file whose stored chunk map is the one B's last open read " +
    "decodes nothing and keeps the pages; a change on A is decoded and read",
  ...options,
  fn: async () => {
    const c = await setup();
    try {
      const a = await c.start("a");
      const b = await c.start("b");
      for (const [file, length] of [["small", 1000], ["big", CHUNK_SIZE + 10]] as const) {
        const first = random(length);
        const ino = await writeFile(a.vfs, file, first);
        assert.deepEqual(await readFile(b.vfs, file), first, `${file}: B reads A's bytes`);
        const decodes = b.data.openMapDecodes;
        for (let i = 0; i < 3; i++) {
          const again = await b.vfs.open(ctx, ino, 0);
          assert.equal(again.keepCache, true, `${file}: unchanged, the kernel keeps its pages`);
          const out = new Uint8Array(length);
          assert.equal(await b.vfs.read(ctx, ino, again.fh, 0, out), length);
          assert.deepEqual(out, first, `${file}: open ${i} reads the same bytes`);
          await b.vfs.release(ino, again.fh, 0);
        }
        assert.equal(b.data.openMapDecodes, decodes, `${file}: the same stored map, no decode`);
        // A changes the file: B's next open reads a new map, decodes it, drops its pages.
        const second = random(length);
        await writeFile(a.vfs, file, second);
        const changed = await b.vfs.open(ctx, ino, 0);
        assert.equal(changed.keepCache, false, `${file}: changed on A`);
        const out = new Uint8Array(length);
        assert.equal(await b.vfs.read(ctx, ino, changed.fh, 0, out), length);
        assert.deepEqual(out, second, `${file}: B reads A's new bytes`);
        await b.vfs.release(ino, changed.fh, 0);
        assert.equal(b.data.openMapDecodes, decodes + 1, `${file}: one decode of the new map`);
        // B's own write changes the map its state holds (the publish): the kept decode of the
        // stored map it opened with stays as stored.
        await writeFile(b.vfs, file, first.subarray(0, 100));
        const expected = second.slice();
        expected.set(first.subarray(0, 100));
        assert.deepEqual(await readFile(b.vfs, file), expected, `${file}: B's write`);
        assert.deepEqual(await readFile(a.vfs, file), expected, `${file}: A reads B's write`);
      }
    } finally {
      await c.cleanup();
    }
  },
});

Deno.test({
  name: "cluster data: the kept chunk map decodes are bounded by what they cost, not only their " +
    "stored bytes (small maps were 1-2 KB each of memory against a few dozen bytes counted)",
  ...options,
  fn: async () => {
    const c = await setup();
    try {
      const a = await c.start("a");
      const b = await c.start("b");
      // Room for four maps' overhead: tens of small maps' stored bytes alone fit in it.
      b.data.openedMapsBudget = 4 * 2048 + 1024;
      const files: [number, Uint8Array][] = [];
      for (let i = 0; i < 12; i++) {
        const bytes = random(100 + i);
        files.push([await writeFile(a.vfs, `f${i}`, bytes), bytes]);
      }
      for (const [i, [, bytes]] of files.entries()) {
        assert.deepEqual(await readFile(b.vfs, `f${i}`), bytes);
      }
      const kept = b.data.openedMapsKept;
      assert.ok(kept >= 1 && kept <= 4, `${kept} decodes kept in a budget of four maps`);
      // The most recently opened is kept: its next open decodes nothing.
      const decodes = b.data.openMapDecodes;
      assert.deepEqual(await readFile(b.vfs, "f11"), files[11][1]);
      assert.equal(b.data.openMapDecodes, decodes);
    } finally {
      await c.cleanup();
    }
  },
});

Deno.test({
  name: "cluster data: truncate then extend on A reads as zeros past the cut on B",
  ...options,
  fn: async () => {
    const c = await setup();
    try {
      const a = await c.start("a");
      const b = await c.start("b");
      const content = random(CHUNK_SIZE + 5000);
      const ino = await writeFile(a.vfs, "t", content);
      assert.deepEqual(await readFile(b.vfs, "t"), content);
      await a.vfs.setattr(ctx, ino, { size: CHUNK_SIZE + 100 });
      await a.vfs.setattr(ctx, ino, { size: CHUNK_SIZE + 3000 });
      const expected = new Uint8Array(CHUNK_SIZE + 3000);
      expected.set(content.subarray(0, CHUNK_SIZE + 100));
      assert.deepEqual(await readFile(b.vfs, "t"), expected);
      const fresh = await c.start("d");
      assert.deepEqual(await readFile(fresh.vfs, "t"), expected);
    } finally {
      await c.cleanup();
    }
  },
});

Deno.test({
  name: "cluster data: cache survives restart, a corrupted cached chunk is detected and refetched",
  ...options,
  fn: async () => {
    const c = await setup();
    try {
      const a = await c.start("a");
      let b = await c.start("b");
      const content = random(CHUNK_SIZE + 777);
      const ino = await writeFile(a.vfs, "r", content);
      assert.deepEqual(await readFile(b.vfs, "r"), content);
      await c.stop(b);
      // Flip one byte of B's cached chunk 0 on disk.
      const path = `${b.dir}/data/${(ino % 256).toString(16).padStart(2, "0")}/${ino.toString(16)}`;
      const file = await Deno.open(path, { read: true, write: true });
      await file.seek(1000, Deno.SeekMode.Start);
      await file.write(new Uint8Array([content[1000] ^ 0xff]));
      file.close();
      const gets = c.backend.gets;
      b = await c.start("b");
      assert.deepEqual(await readFile(b.vfs, "r"), content);
      assert.equal(b.data.stats.checksumFailures, 1);
      assert.equal(b.data.stats.hits, 1, "chunk 1 came from the cache kept across the restart");
      assert.equal(c.backend.gets, gets + 1, "only the corrupted chunk was fetched again");
    } finally {
      await c.cleanup();
    }
  },
});

Deno.test({
  name: "cluster data: the capacity limit evicts chunks of closed files (LRU)",
  ...options,
  fn: async () => {
    const c = await setup();
    try {
      const a = await c.start("a");
      const b = await c.start("b", CHUNK_SIZE * 2);
      const one = random(CHUNK_SIZE * 2);
      const two = random(CHUNK_SIZE);
      await writeFile(a.vfs, "one", one);
      await writeFile(a.vfs, "two", two);
      assert.deepEqual(await readFile(b.vfs, "one"), one);
      assert.equal(b.data.index.bytes, CHUNK_SIZE * 2);
      assert.deepEqual(await readFile(b.vfs, "two"), two);
      assert.ok(b.data.index.bytes <= CHUNK_SIZE * 2, `${b.data.index.bytes}`);
      assert.equal(b.data.stats.evictions, 1);
      assert.deepEqual(await readFile(b.vfs, "one"), one, "evicted chunk is fetched again");
    } finally {
      await c.cleanup();
    }
  },
});

Deno.test({
  name: "cluster data: a backend failure at close is EIO and publishes nothing",
  ...options,
  fn: async () => {
    const c = await setup();
    try {
      const a = await c.start("a");
      const b = await c.start("b");
      // Larger than cluster.inline_bytes (4096): these go to the backend.
      const first = random(5000);
      await writeFile(a.vfs, "x", first);
      const put = c.backend.put;
      c.backend.put = () => Promise.reject(new Error("backend unreachable"));
      await assert.rejects(writeFile(a.vfs, "x", random(6000)), /EIO|backend/);
      c.backend.put = put;
      assert.deepEqual(await readFile(b.vfs, "x"), first);
    } finally {
      await c.cleanup();
    }
  },
});

Deno.test({
  name:
    "cluster data: an unlinked file's map and objects go once every node acknowledged the unlink; gc deletes replaced versions, keeps young ones",
  ...options,
  fn: async () => {
    const c = await setup();
    try {
      const a = await c.start("a");
      const b = await c.start("b");
      const content = random(CHUNK_SIZE + 10);
      await writeFile(a.vfs, "keep", content);
      await writeFile(a.vfs, "keep", random(10), 5); // replaces chunk 0 only
      // Larger than cluster.inline_bytes (4096), so it has an object.
      const gone = await writeFile(a.vfs, "gone", random(5000));
      assert.equal((await c.backend.list("c/")).length, 4);
      // Open nowhere: the unlink leaves an orphan, and A's reclaim deletes inode and chunk map
      // once A and B acknowledged it, and then the object.
      await a.vfs.unlink(ctx, 1, name("gone"));
      await until(async () => !(await exists(c.kv, keys.inode(gone))), "reclaimed");
      assert.equal((await c.kv.range({ key: keys.chunkMap(gone) })).kvs.length, 0);
      for (let i = 0; i < 100 && (await c.backend.list("c/")).length > 3; i++) {
        await new Promise((r) => setTimeout(r, 20));
      }
      assert.equal((await c.backend.list("c/")).length, 3);
      // Within the grace period nothing goes (an upload may not have committed yet).
      const young = await collectGarbage(c.kv, c.backend, { graceMs: 60_000 });
      assert.equal(young.objectsDeleted, 0);
      const report = await collectGarbage(c.kv, c.backend, { graceMs: 0 });
      assert.equal(report.objectsDeleted, 1, "the replaced version of chunk 0");
      assert.equal(report.objectsKept, 2);
      const expected = content.slice();
      expected.set((await readFile(a.vfs, "keep")).subarray(5, 15), 5);
      assert.deepEqual(await readFile(b.vfs, "keep"), expected);
    } finally {
      await c.cleanup();
    }
  },
});

Deno.test({
  name:
    "cluster data: chunks streamed from a peer land in B's cache; a bad copy, a peer failing mid-chunk or gone falls back to the backend",
  ...options,
  fn: async () => {
    const c = await setup();
    const transport = new TcpTransport({ timeoutMs: 5000 });
    let fault: "none" | "corrupt" | "break" = "none";
    let b: Node | undefined;
    const servers: { close(): void }[] = [];
    try {
      const a = await c.start("a");
      // Written on A: its cache holds the chunks (checked), so A streams them from its file.
      const content = random(2 * CHUNK_SIZE + 777);
      await writeFile(a.vfs, "f", content);
      const server = listenPeers("127.0.0.1", 0, async (r) => {
        const served = await a.data.serveChunk(r.ino, r.index, r);
        if (fault === "none" || served instanceof Uint8Array) return served;
        return {
          length: served.length,
          read: async (into: Uint8Array, offset: number) => {
            // A peer whose disk flipped a byte after it was checked, or whose chunk went away
            // while it was being sent (after the first piece when there are several).
            if (fault === "break" && offset + into.length === served.length) {
              throw new Error("evicted while being sent");
            }
            await served.read(into, offset);
            if (fault === "corrupt" && offset === 0) into[5] ^= 0xff;
          },
          done: () => served.done(),
        };
      }, () => {});
      servers.push(server);
      // The fetch code a mount node uses, with A as the owner of every chunk.
      const source = (node: Node): ChunkSource =>
        peerThenBackend(node.data, transport, {
          owner: () => ({ id: "a", address: server.address }),
        });
      b = await c.start("b");
      b.data.source = source(b);
      const gets = c.backend.gets;
      assert.deepEqual(await readFile(b.vfs, "f"), content);
      assert.equal(c.backend.gets, gets, "every chunk came from the peer");
      assert.equal(b.data.stats.misses, 3);
      assert.equal(b.data.stats.peerFills, 3);
      assert.equal(b.data.index.bytes, content.length);
      // Read again: hits from B's own cache, nothing fetched.
      assert.deepEqual(await readFile(b.vfs, "f"), content);
      assert.equal(b.data.stats.misses, 3);

      fault = "corrupt";
      const fresh = await c.start("b2");
      fresh.data.source = source(fresh);
      assert.deepEqual(await readFile(fresh.vfs, "f"), content);
      assert.equal(fresh.data.stats.checksumFailures, 3, "each bad chunk was noticed");
      assert.equal(c.backend.gets, gets + 3, "and read from the backend instead");

      // The peer fails mid-chunk (pieces already written into B's file): the backend's copy is
      // written from offset 0 over them and checked; nothing of the broken transfer remains.
      fault = "break";
      const broken = await c.start("b3");
      broken.data.source = source(broken);
      assert.deepEqual(await readFile(broken.vfs, "f"), content);
      assert.equal(broken.data.stats.peerFills, 0);
      assert.equal(c.backend.gets, gets + 6, "each chunk came from the backend");
      assert.deepEqual(await readFile(broken.vfs, "f"), content, "and is cached as such");
      assert.equal(c.backend.gets, gets + 6);

      // The peer is gone: straight to the backend.
      server.close();
      fault = "none";
      const alone = await c.start("b4");
      alone.data.source = source(alone);
      assert.deepEqual(await readFile(alone.vfs, "f"), content);
      assert.equal(c.backend.gets, gets + 9);
    } finally {
      for (const s of servers) s.close();
      transport.close();
      await c.cleanup();
    }
  },
});

// --- consistency across nodes: unlink while open elsewhere, rename over, hard links, seek, fsync

const SEEK_DATA = 3;
const SEEK_HOLE = 4;

async function openByName(vfs: VfsWithRecovery, file: string, flags = O_RDWR) {
  const ino = (await vfs.lookup(ctx, 1, name(file))).ino;
  return { ino, fh: (await vfs.open(ctx, ino, flags)).fh };
}

async function readAll(vfs: VfsWithRecovery, ino: number, fh: number, size: number) {
  const out = new Uint8Array(size);
  for (let off = 0; off < size; off += 1 << 20) {
    await vfs.read(ctx, ino, fh, off, out.subarray(off, off + (1 << 20)));
  }
  return out;
}

async function exists(kv: MetaKV, key: Uint8Array): Promise<boolean> {
  return (await kv.range({ key })).kvs.length > 0;
}

async function openRecords(kv: MetaKV, ino: number): Promise<number> {
  const prefix = openRecordsPrefix(ino);
  return (await kv.range({ key: prefix, rangeEnd: prefixEnd(prefix) })).kvs.length;
}

async function until(check: () => Promise<boolean>, what: string): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 20));
  }
  assert.fail(`still not true after 4 s: ${what}`);
}

async function errnoOf(run: () => Promise<unknown>): Promise<string> {
  try {
    await run();
    return "ok";
  } catch (error) {
    return error instanceof FsError ? errnoName(error.errno) : String(error);
  }
}

Deno.test({
  name:
    "cluster consistency: unlinked on A while open on B, B reads and writes it until its last close; then inode, map and objects go",
  ...options,
  fn: async () => {
    const c = await setup();
    try {
      const a = await c.start("a");
      const b = await c.start("b");
      const content = random(2 * CHUNK_SIZE + 999);
      const ino = await writeFile(a.vfs, "f", content);
      // B opens it and has read nothing yet: every chunk must still come from somewhere. The
      // open writes nothing; B's watch puts its record once it sees the unlink.
      const { fh } = await openByName(b.vfs, "f");
      assert.equal(await openRecords(c.kv, ino), 0, "no record at open");
      await a.vfs.unlink(ctx, 1, name("f"));
      assert.equal(await errnoOf(() => a.vfs.lookup(ctx, 1, name("f"))), "ENOENT");
      assert.ok(await exists(c.kv, keys.inode(ino)), "kept as an orphan");
      assert.ok(await exists(c.kv, keys.orphan(ino)));
      await until(() => exists(c.kv, openRecordKey(ino, "b")), "B's record, put by its watch");
      await until(async () => await reclaimBarrier(c.kv, ino) === "passed", "both acknowledged");
      assert.ok(await exists(c.kv, keys.inode(ino)), "kept for B's record");
      assert.deepEqual(await readAll(b.vfs, ino, fh, content.length), content);
      // B's cache of the inode is dropped by its watch, as its kernel's attributes would be.
      await until(async () => (await b.vfs.getattr(ctx, ino)).nlink === 0, "nlink 0 on B");
      // B writes the unlinked file (a new chunk version) and reads it back after a publish.
      const patch = random(5000);
      await b.vfs.write(ctx, ino, fh, CHUNK_SIZE - 100, patch);
      await b.vfs.fsync(ino, fh, false);
      content.set(patch, CHUNK_SIZE - 100);
      assert.deepEqual(await readAll(b.vfs, ino, fh, content.length), content);
      assert.equal((await c.backend.list("c/")).length, 5, "3 chunks + 2 rewritten");
      await b.vfs.flush(ctx, ino, fh, 0n);
      await b.vfs.release(ino, fh, 0);
      // B's last close frees it everywhere (the barrier passed): metadata at once, objects right
      // after.
      assert.equal(await exists(c.kv, keys.inode(ino)), false);
      assert.equal(await exists(c.kv, keys.orphan(ino)), false);
      assert.equal(await exists(c.kv, keys.chunkMap(ino)), false);
      await until(async () => await openRecords(c.kv, ino) === 0, "B's record gone");
      await until(async () => (await c.backend.list("c/")).length === 2, "current objects gone");
      const report = await collectGarbage(c.kv, c.backend, { graceMs: 0 });
      assert.equal(report.orphansPurged, 0);
    } finally {
      await c.cleanup();
    }
  },
});

Deno.test({
  name:
    "cluster consistency: an open on B of a file B holds open and A unlinked has the kernel's attributes dropped (nlink 0), though B's previous open left them as they were",
  ...options,
  fn: async () => {
    const c = await setup();
    try {
      const a = await c.start("a");
      const b = await c.start("b");
      const ino = await writeFile(a.vfs, "f", random(5000));
      const held = await b.vfs.open(ctx, (await b.vfs.lookup(ctx, 1, name("f"))).ino, O_RDWR);
      assert.equal(held.attributesStale, true, "B's first open");
      const again = await b.vfs.open(ctx, ino, O_RDWR);
      assert.notEqual(again.attributesStale, true, "unchanged since B's last open");
      await b.vfs.release(ino, again.fh, 0);
      await a.vfs.unlink(ctx, 1, name("f"));
      // B's watch saw the unlink and put its record (the reclaim's hold; src/cluster/README.md).
      await until(() => exists(c.kv, openRecordKey(ino, "b")), "B's record, put by its watch");
      // Another open of the orphan (a reopen through /proc/PID/fd): the record differs from the
      // one B's last open read, so the kernel's nlink 1 is dropped.
      const orphan = await b.vfs.open(ctx, ino, O_RDWR);
      assert.equal(orphan.attributesStale, true, "the orphan's open");
      assert.equal((await b.vfs.getattr(ctx, ino)).nlink, 0);
      await b.vfs.release(ino, orphan.fh, 0);
      await b.vfs.release(ino, held.fh, 0);
      await until(async () => !(await exists(c.kv, keys.inode(ino))), "freed at B's last close");
      assert.equal(await openRecords(c.kv, ino), 0);
    } finally {
      await c.cleanup();
    }
  },
});

Deno.test({
  name:
    "cluster consistency: an unlink reads nothing before its commit and leaves an orphan, freed once every node acknowledged it; a node that does not acknowledge holds it until its lease goes",
  ...options,
  fn: async () => {
    const c = await setup();
    try {
      const a = await c.start("a");
      const b = await c.start("b");
      const content = random(5000);
      const ino = await writeFile(a.vfs, "u", content);
      const before = c.calls.recordReads;
      const reads = c.calls.reads;
      await a.vfs.unlink(ctx, 1, name("u"));
      assert.equal(c.calls.recordReads - before, 0, "no read of records or guard");
      assert.equal(c.calls.reads - reads, 0, "no read at all");
      assert.ok(await exists(c.kv, keys.orphan(ino)), "an orphan first");
      await until(async () => !(await exists(c.kv, keys.inode(ino))), "freed by A's reclaim");
      assert.equal(await exists(c.kv, keys.chunkMap(ino)), false);
      await until(async () => (await c.backend.list("c/")).length === 0, "its object gone");
      // A release racing with the unlink (the watch event first) must not put the guard back.
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(await exists(c.kv, openGuardKey(ino)), false, "no stray guard");
      assert.equal(await openRecords(c.kv, ino), 0);
      // B's watch stops (a node stuck): the orphan waits for B's acknowledgement, also in gc.
      const ino2 = await writeFile(a.vfs, "v", content);
      b.watcher.cancel();
      await a.vfs.unlink(ctx, 1, name("v"));
      await until(
        async () =>
          Number(new TextDecoder().decode((await c.kv.range({ key: ackKey("a") })).kvs[0].value)) >=
            (await c.kv.range({ key: keys.orphan(ino2) })).kvs[0].modRevision,
        "A acknowledged",
      );
      await new Promise((r) => setTimeout(r, 300));
      assert.ok(await exists(c.kv, keys.inode(ino2)), "kept: B has not acknowledged");
      assert.equal((await collectGarbage(c.kv, c.backend, { graceMs: 0 })).orphansPurged, 0);
      // B dies: its acknowledgement goes with its lease, and A's reclaim frees the orphan.
      await c.kv.leaseRevoke(b.data.records.leaseId!);
      await until(async () => !(await exists(c.kv, keys.inode(ino2))), "freed after B left");
    } finally {
      await c.cleanup();
    }
  },
});

Deno.test({
  name:
    "cluster consistency: an unlink or rename over that leaves the file another name reads nothing after its commit (git's temporary object name)",
  ...options,
  fn: async () => {
    const c = await setup();
    try {
      const a = await c.start("a");
      const b = await c.start("b");
      const content = random(2000);
      // git: the object written under a temporary name, linked to its own, the temporary unlinked.
      const ino = await writeFile(a.vfs, "tmp_obj", content);
      await a.vfs.link(ctx, ino, 1, name("object"));
      let reads = c.calls.reads;
      let writes = c.calls.writes;
      await a.vfs.unlink(ctx, 1, name("tmp_obj"));
      assert.equal(c.calls.writes - writes, 1, "the unlink's own commit");
      assert.equal(c.calls.reads - reads, 0, "no purge look after it: the inode keeps a name");
      assert.deepEqual(await readFile(b.vfs, "object"), content);
      // The same for a rename over one of two names of a file.
      await a.vfs.link(ctx, ino, 1, name("second"));
      await writeFile(a.vfs, "new", random(100));
      reads = c.calls.reads;
      writes = c.calls.writes;
      await a.vfs.rename(ctx, 1, name("new"), 1, name("second"), 0);
      assert.equal(c.calls.writes - writes, 1, "the rename's own commit");
      assert.equal(c.calls.reads - reads, 0, "no purge look: the old file keeps a name");
      assert.deepEqual(await readFile(b.vfs, "object"), content);
      // The last name's unlink still frees it, on any node.
      await b.vfs.unlink(ctx, 1, name("object"));
      await until(async () => !(await exists(c.kv, keys.inode(ino))), "freed with its last name");
    } finally {
      await c.cleanup();
    }
  },
});

Deno.test({
  name:
    "cluster consistency: a close racing an open of the same file reads nothing: the open's read in flight answers it (git commit)",
  ...options,
  fn: async () => {
    const c = await setup();
    try {
      const a = await c.start("a");
      const b = await c.start("b");
      const content = random(700);
      const ino = await writeFile(a.vfs, "f", content);
      const first = await openByName(a.vfs, "f", 0);
      await a.vfs.read(ctx, ino, first.fh, 0, new Uint8Array(700));
      const reads = c.calls.reads;
      let open!: () => void;
      c.calls.readGate = new Promise((resolve) => open = resolve);
      // The second open's read of inode and chunk map is held in flight while the first handle
      // closes (the kernel's RELEASE comes after the close returned, often after the next OPEN).
      const second = a.vfs.open(ctx, ino, 0);
      const closing = a.vfs.release(ino, first.fh, 0);
      await new Promise((resolve) => setTimeout(resolve, 100));
      c.calls.readGate = undefined;
      open();
      const { fh } = await second;
      await closing;
      assert.equal(c.calls.reads - reads, 1, "the open's one read, nothing for the close");
      const out = new Uint8Array(700);
      await a.vfs.read(ctx, ino, fh, 0, out);
      assert.deepEqual(out, content);
      await a.vfs.release(ino, fh, 0);
      // A file unlinked while open is still freed by its last close.
      const held = await openByName(a.vfs, "f", 0);
      await b.vfs.unlink(ctx, 1, name("f"));
      await a.vfs.release(ino, held.fh, 0);
      await until(async () => !(await exists(c.kv, keys.inode(ino))), "freed at its last close");
    } finally {
      await c.cleanup();
    }
  },
});

Deno.test({
  name:
    "cluster data: a close after reads only leaves the atime to the write-back timer, which stores many inodes' atimes in one transaction; fsync stores it at once",
  ...options,
  fn: async () => {
    const c = await setup();
    try {
      const a = await c.start("a", undefined, {}, 300);
      const b = await c.start("b");
      const files = ["r0", "r1", "r2", "r3"];
      const inos: number[] = [];
      for (const file of files) inos.push(await writeFile(a.vfs, file, random(500)));
      const storedAtime = async (ino: number) => {
        const value = (await c.kv.range({ key: keys.inode(ino) })).kvs[0].value;
        return decodeInode(ino, value).atime;
      };
      const before = await Promise.all(inos.map(storedAtime));
      // Written after its atime (relatime): each file's first read moves atime.
      const writes = c.calls.writes;
      for (const file of files) {
        const { ino, fh } = await openByName(a.vfs, file, 0);
        await a.vfs.read(ctx, ino, fh, 0, new Uint8Array(500));
        await a.vfs.flush(ctx, ino, fh, 0n);
        await a.vfs.release(ino, fh, 0);
      }
      assert.equal(c.calls.writes - writes, 0, "no transaction at the reads' closes");
      const seen = (await a.vfs.getattr(ctx, inos[0])).atime;
      assert.ok(seen.sec * 1e9 + seen.nsec > before[0].sec * 1e9 + before[0].nsec, "atime moved");
      await until(async () => {
        const now = await Promise.all(inos.map(storedAtime));
        return now.every((t, i) => t.sec !== before[i].sec || t.nsec !== before[i].nsec);
      }, "the timer stored every atime");
      assert.equal(c.calls.writes - writes, 1, "one transaction for the four atimes");
      assert.deepEqual(await storedAtime(inos[0]), seen);
      // fsync stores a pending atime at once.
      const fresh = await writeFile(a.vfs, "f", random(300));
      const { fh } = await openByName(a.vfs, "f", 0);
      await a.vfs.read(ctx, fresh, fh, 0, new Uint8Array(300));
      await a.vfs.fsync(fresh, fh, false);
      assert.deepEqual(await storedAtime(fresh), (await a.vfs.getattr(ctx, fresh)).atime);
      await a.vfs.release(fresh, fh, 0);
      // Another node sees the stored atime.
      assert.deepEqual((await b.vfs.getattr(ctx, inos[1])).atime, await storedAtime(inos[1]));
    } finally {
      await c.cleanup();
    }
  },
});

Deno.test({
  name:
    "cluster consistency: rename over a file open on B keeps B's old content; B's close frees it",
  ...options,
  fn: async () => {
    const c = await setup();
    try {
      const a = await c.start("a");
      const b = await c.start("b");
      const old = random(CHUNK_SIZE + 10);
      const next = random(20_000);
      const oldIno = await writeFile(a.vfs, "g", old);
      await writeFile(a.vfs, "h", next);
      const { fh } = await openByName(b.vfs, "g", 0);
      await a.vfs.rename(ctx, 1, name("h"), 1, name("g"), 0);
      assert.deepEqual(await readAll(b.vfs, oldIno, fh, old.length), old);
      assert.deepEqual(await readFile(b.vfs, "g"), next, "the name now opens the new file");
      assert.equal(await errnoOf(() => b.vfs.lookup(ctx, 1, name("h"))), "ENOENT");
      await b.vfs.release(oldIno, fh, 0);
      await until(async () => !(await exists(c.kv, keys.inode(oldIno))), "freed after B's close");
      assert.deepEqual(await readFile(a.vfs, "g"), next);
    } finally {
      await c.cleanup();
    }
  },
});

Deno.test({
  name:
    "cluster consistency: a first open and close on B write nothing to the store; an unlink on A then frees the file without B's help",
  ...options,
  fn: async () => {
    const c = await setup();
    try {
      const a = await c.start("a");
      const b = await c.start("b");
      const content = random(5000);
      const ino = await writeFile(a.vfs, "l", content);
      // Let A's write-back and the watches settle: only B's own writes may move the revision.
      await new Promise((r) => setTimeout(r, 300));
      const writes = c.calls.writes;
      const revision = await c.kv.revision();
      assert.deepEqual(await readFile(b.vfs, "l"), content, "first open on B");
      assert.deepEqual(await readFile(b.vfs, "l"), content, "a reopen");
      assert.equal(await c.kv.revision(), revision, "no store write at B's first open and close");
      assert.equal(c.calls.writes - writes, 0, "no write transaction at all");
      assert.equal(await openRecords(c.kv, ino), 0);
      await a.vfs.unlink(ctx, 1, name("l"));
      await until(async () => !(await exists(c.kv, keys.inode(ino))), "freed");
      assert.equal(await openRecords(c.kv, ino), 0, "B, with nothing open, put no record");
      assert.equal(await exists(c.kv, keys.orphan(ino)), false);
    } finally {
      await c.cleanup();
    }
  },
});

Deno.test({
  name:
    "cluster consistency: the holder's records go with its lease (a crash); gc then frees the orphan",
  ...options,
  fn: async () => {
    const c = await setup();
    try {
      const a = await c.start("a");
      const b = await c.start("b");
      // Larger than cluster.inline_bytes: the file has an object for gc to free.
      const ino = await writeFile(a.vfs, "f", random(5000));
      await openByName(b.vfs, "f", 0);
      await a.vfs.unlink(ctx, 1, name("f"));
      await until(async () => await reclaimBarrier(c.kv, ino) === "passed", "both acknowledged");
      // A's reclaim looked (40 ms after the unlink) and left it to B's record.
      await new Promise((r) => setTimeout(r, 200));
      const kept = await collectGarbage(c.kv, c.backend, { graceMs: 0 });
      assert.equal(kept.orphansPurged, 0, "B still has it open");
      assert.ok(await exists(c.kv, keys.inode(ino)));
      // What the store does when B dies and its lease runs out.
      await c.kv.leaseRevoke(b.data.records.leaseId!);
      assert.equal(await openRecords(c.kv, ino), 0);
      const report = await collectGarbage(c.kv, c.backend, { graceMs: 0 });
      assert.equal(report.orphansPurged, 1);
      assert.equal(await exists(c.kv, keys.inode(ino)), false);
      assert.equal(await exists(c.kv, keys.orphan(ino)), false);
      assert.equal(report.mapsDeleted, 0, "the orphan's chunk map went with it");
      assert.equal(await exists(c.kv, keys.chunkMap(ino)), false);
      assert.equal((await c.backend.list("c/")).length, 0);
    } finally {
      await c.cleanup();
    }
  },
});

Deno.test({
  name:
    "cluster consistency: B's records lost with its lease (store unreachable too long) are put back on a new one",
  ...options,
  fn: async () => {
    const c = await setup();
    try {
      const a = await c.start("a");
      const b = await c.start("b", undefined, { openLeaseSeconds: 1 });
      const content = random(3000);
      const ino = await writeFile(a.vfs, "f", content);
      const { fh } = await openByName(b.vfs, "f", 0);
      const lost = b.data.records.leaseId!;
      await c.kv.leaseRevoke(lost); // what expiry does while B cannot reach the store
      assert.equal(await exists(c.kv, ackKey("b")), false);
      // B's next renewal (every TTL/3) finds its lease gone and puts its records and its
      // acknowledgement on a new one: B is in the reclaim barrier again (without it, A would
      // free the file B has open).
      await until(async () => await exists(c.kv, ackKey("b")), "acknowledgement back");
      assert.notEqual(b.data.records.leaseId, lost);
      await a.vfs.unlink(ctx, 1, name("f"));
      await until(async () => await exists(c.kv, openRecordKey(ino, "b")), "B's record");
      await until(async () => await reclaimBarrier(c.kv, ino) === "passed", "both acknowledged");
      assert.ok(await exists(c.kv, keys.orphan(ino)), "kept for B");
      const got = new Uint8Array(content.length);
      await b.vfs.read(ctx, ino, fh, 0, got);
      assert.deepEqual(got, content);
      await b.vfs.release(ino, fh, 0);
      await until(async () => !(await exists(c.kv, keys.inode(ino))), "freed at B's close");
    } finally {
      await c.cleanup();
    }
  },
});

Deno.test({
  name:
    "cluster consistency: opens on B racing unlinks on A (seeded): an open that succeeds keeps the data until B's close, past A's reclaim",
  ...options,
  fn: async () => {
    // SKYFS_RACE_SEED replays a run; the seed is in the assertion messages.
    const seed = Number(Deno.env.get("SKYFS_RACE_SEED") ?? Date.now() % 1_000_000);
    const rand = seededRandom(seed);
    const c = await setup();
    try {
      const a = await c.start("a");
      const b = await c.start("b");
      const outcomes = new Map<string, number>();
      for (let round = 0; round < 40; round++) {
        const what = `seed ${seed} round ${round}`;
        // Above cluster.inline_bytes: the data is a backend object the reclaim would delete.
        const content = random(5000 + round);
        const ino = await writeFile(a.vfs, `r${round}`, content);
        const attr = await b.vfs.lookup(ctx, 1, name(`r${round}`));
        // Let the unlink start first, or the open, or neither, at different depths; every other
        // round the open may come as late as A's reclaim (70 ms and more after the unlink).
        const delay = (ms: number) => new Promise((r) => setTimeout(r, ms));
        const openAfter = Math.floor(rand() * (round % 2 === 0 ? 4 : 150));
        const [opened] = await Promise.allSettled([
          delay(openAfter).then(() => b.vfs.open(ctx, attr.ino, 0)),
          delay(Math.floor(rand() * 4)).then(() => a.vfs.unlink(ctx, 1, name(`r${round}`))),
        ]);
        let outcome: string;
        if (opened.status === "fulfilled") {
          outcome = "opened";
          // Every node acknowledged the unlink, so A's reclaim has had its chance to free it:
          // B's record (put by its watch or by the open itself) must have kept it.
          await until(async () => await reclaimBarrier(c.kv, ino) === "passed", what);
          await delay(Math.floor(rand() * 30));
          assert.ok(await exists(c.kv, keys.inode(ino)), `${what}: kept for B's open`);
          assert.ok(await exists(c.kv, openRecordKey(ino, "b")), `${what}: B's record`);
          const got = new Uint8Array(content.length);
          await b.vfs.read(ctx, ino, opened.value.fh, 0, got);
          assert.deepEqual(got, content, what);
          await b.vfs.release(ino, opened.value.fh, 0);
        } else {
          outcome = errnoName((opened.reason as FsError).errno);
          assert.equal(outcome, "ENOENT", `${what}: ${opened.reason}`);
        }
        outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1);
        await until(async () => !(await exists(c.kv, keys.inode(ino))), `${what}: freed`);
        await until(async () => await openRecords(c.kv, ino) === 0, `${what}: records`);
        await until(async () => (await c.backend.list("c/")).length === 0, `${what}: objects`);
      }
      console.log(`seed ${seed}: ${JSON.stringify([...outcomes])}`);
      assert.ok((outcomes.get("opened") ?? 0) > 0, JSON.stringify([...outcomes]));
    } finally {
      await c.cleanup();
    }
  },
});

Deno.test({
  name:
    "cluster consistency: hard link on A, original unlinked on B, content through the link on C; nlink and ctime",
  ...options,
  fn: async () => {
    const c = await setup();
    try {
      const a = await c.start("a");
      const b = await c.start("b");
      const n3 = await c.start("c");
      const content = random(CHUNK_SIZE + 4321);
      const ino = await writeFile(a.vfs, "orig", content);
      const linked = await a.vfs.link(ctx, ino, 1, name("link"));
      assert.equal(linked.nlink, 2);
      assert.equal((await b.vfs.lookup(ctx, 1, name("orig"))).nlink, 2);
      const before = (await n3.vfs.lookup(ctx, 1, name("link"))).ctime;
      await b.vfs.unlink(ctx, 1, name("orig"));
      assert.equal(await errnoOf(() => n3.vfs.lookup(ctx, 1, name("orig"))), "ENOENT");
      const attr = await n3.vfs.lookup(ctx, 1, name("link"));
      assert.equal(attr.ino, ino);
      assert.equal(attr.nlink, 1);
      const after = attr.ctime;
      assert.ok(
        after.sec > before.sec || (after.sec === before.sec && after.nsec > before.nsec),
        "unlink stamps the inode's ctime",
      );
      assert.deepEqual(await readFile(n3.vfs, "link"), content);
      assert.ok(await exists(c.kv, keys.inode(ino)));
    } finally {
      await c.cleanup();
    }
  },
});

Deno.test({
  name:
    "cluster consistency: a directory removed while open here lists . and .. until its release frees it",
  ...options,
  fn: async () => {
    const c = await setup();
    try {
      const a = await c.start("a");
      const dir = await a.vfs.mkdir(ctx, 1, name("d"), 0o755, 0);
      const fh = await a.vfs.opendir(ctx, dir.ino, 0);
      await a.vfs.rmdir(ctx, 1, name("d"));
      assert.ok(await exists(c.kv, keys.orphan(dir.ino)), "kept for the open handle");
      const listed = await a.vfs.readdir(ctx, dir.ino, fh, 0, 10, false);
      assert.deepEqual(listed.map((e) => new TextDecoder().decode(e.name)), [".", ".."]);
      await a.vfs.releasedir(dir.ino, fh);
      await until(async () => !(await exists(c.kv, keys.inode(dir.ino))), "freed at release");
      assert.equal(await exists(c.kv, keys.orphan(dir.ino)), false);
    } finally {
      await c.cleanup();
    }
  },
});

Deno.test({
  name:
    "cluster consistency: SEEK_DATA/SEEK_HOLE on B come from the chunk map (nothing local yet) and B's dirty chunks",
  ...options,
  fn: async () => {
    const c = await setup();
    try {
      const a = await c.start("a");
      const b = await c.start("b");
      // Chunk 0 and chunk 2 written, chunk 1 never: a hole of one chunk.
      const created = await a.vfs.create(ctx, 1, name("s"), 0o644, 0, O_RDWR);
      const ino = created.attr.ino;
      await a.vfs.write(ctx, ino, created.fh, 0, random(1 << 20));
      await a.vfs.write(ctx, ino, created.fh, 2 * CHUNK_SIZE + 100, random(5000));
      await a.vfs.flush(ctx, ino, created.fh, 0n);
      await a.vfs.release(ino, created.fh, 0);
      const size = 2 * CHUNK_SIZE + 5100;
      const { fh } = await openByName(b.vfs, "s");
      const seek = (offset: number, whence: number) => b.vfs.lseek(ctx, ino, fh, offset, whence);
      assert.equal(await seek(0, SEEK_DATA), 0);
      assert.equal(await seek(0, SEEK_HOLE), CHUNK_SIZE, "chunk 0 is data as uploaded");
      assert.equal(await seek(CHUNK_SIZE, SEEK_DATA), 2 * CHUNK_SIZE);
      assert.equal(await seek(CHUNK_SIZE + 5, SEEK_HOLE), CHUNK_SIZE + 5);
      assert.equal(await seek(2 * CHUNK_SIZE, SEEK_HOLE), size);
      assert.equal(await errnoOf(() => seek(size, SEEK_DATA)), "ENXIO");
      assert.equal(b.data.index.bytes, 0, "answered without fetching anything");
      // B writes into the hole: that chunk is dirty, the local file answers inside it.
      await b.vfs.write(ctx, ino, fh, CHUNK_SIZE + 3 * 4096 + 10, random(10));
      const data = await seek(CHUNK_SIZE, SEEK_DATA);
      assert.equal(data, CHUNK_SIZE + 3 * 4096, "the written block, not the chunk start");
      const hole = await seek(data, SEEK_HOLE);
      assert.ok(hole > data && hole < 2 * CHUNK_SIZE, `${hole}`);
      await b.vfs.release(ino, fh, 0);
    } finally {
      await c.cleanup();
    }
  },
});

Deno.test({
  name:
    "cluster consistency: fsync returns after the upload and the map transaction; B reads it with A never closing",
  ...options,
  fn: async () => {
    const c = await setup();
    try {
      const a = await c.start("a");
      const b = await c.start("b");
      const created = await a.vfs.create(ctx, 1, name("y"), 0o644, 0, O_RDWR);
      const ino = created.attr.ino;
      const content = random(CHUNK_SIZE + 200);
      for (let off = 0; off < content.length; off += 1 << 20) {
        await a.vfs.write(ctx, ino, created.fh, off, content.subarray(off, off + (1 << 20)));
      }
      assert.equal((await c.backend.list("c/")).length, 0, "nothing uploaded before fsync");
      await a.vfs.fsync(ino, created.fh, false);
      // At the moment fsync returned: both objects stored and named by the map in the store.
      const objects = (await c.backend.list("c/")).map((o) => o.key).sort();
      assert.equal(objects.length, 2);
      const stored = (await c.kv.range({ key: keys.chunkMap(ino) })).kvs[0];
      const map = JSON.parse(new TextDecoder().decode(stored.value)).c as [number, string][];
      assert.deepEqual(
        map.map(([index, version]) => `c/${ino.toString(16)}/${index}/${version}`).sort(),
        objects,
      );
      // A never closes (as if killed now): B reads what fsync made durable.
      assert.deepEqual(await readFile(b.vfs, "y"), content);
    } finally {
      await c.cleanup();
    }
  },
});

Deno.test({
  name: "cluster data over io_uring sockets: a peer's chunk is read into the reader's buffer, " +
    "not stored; a read from another open stores it (admission); portable engine: fills",
  ...options,
  fn: async () => {
    const io = openUringEngine({ queueDepth: 64 });
    const c = await setup(io);
    const closers: (() => void)[] = [];
    try {
      const a = await c.start("a");
      const content = random(2 * CHUNK_SIZE + 777);
      await writeFile(a.vfs, "f", content);
      const peers = openPeers(io, "127.0.0.1", 0, (r) => a.data.serveChunk(r.ino, r.index, r));
      closers.push(peers.server.close, () => peers.transport.close());
      assert.ok(peers.transport instanceof UringTransport);
      const b = await c.start("b");
      b.data.source = peerThenBackend(b.data, peers.transport, {
        owner: () => ({ id: "a", address: peers.server.address }),
      });
      const gets = c.backend.gets;
      // Sequential 1 MiB reads, as FUSE would send them one after another.
      const readSeq = async (vfs: VfsWithRecovery, size = 128 << 10) => {
        const ino = (await vfs.lookup(ctx, 1, name("f"))).ino;
        const { fh } = await vfs.open(ctx, ino, 0);
        const out = new Uint8Array(content.length);
        for (let off = 0; off < out.length;) {
          const n = await vfs.read(ctx, ino, fh, off, out.subarray(off, off + size));
          assert.ok(n > 0, `read at ${off}`);
          off += n;
        }
        await vfs.release(ino, fh, 0);
        return out;
      };
      assert.deepEqual(await readSeq(b.vfs), content);
      assert.equal(c.backend.gets, gets, "every byte came from the peer");
      assert.ok(
        b.data.stats.peerReads >= content.length / (128 << 10),
        `${b.data.stats.peerReads}`,
      );
      assert.equal(b.data.stats.peerFills, 3, "three chunks came from the peer");
      assert.equal(b.data.index.bytes, 0, "and none was stored on B");
      assert.equal(b.data.stats.misses, 0);
      // Random 1 MiB reads, then reads crossing into the next chunk: also right.
      assert.deepEqual(await readFile(b.vfs, "f"), content, "a second open: admitted");
      assert.equal(b.data.index.bytes, content.length, "read by another open: stored on B");
      assert.equal(c.backend.gets, gets);
      const reads = b.data.stats.peerReads;
      assert.deepEqual(await readSeq(b.vfs, 1 << 20), content);
      assert.equal(b.data.stats.peerReads, reads, "local hits now");

      // The peer answers with an error (it lost the chunk): the read falls back to the backend.
      const broken = openPeers(
        io,
        "127.0.0.1",
        0,
        () => Promise.reject(new Error("gone")),
        () => {},
      );
      closers.push(broken.server.close, () => broken.transport.close());
      const b2 = await c.start("b2");
      b2.data.source = peerThenBackend(b2.data, broken.transport, {
        owner: () => ({ id: "a", address: broken.server.address }),
      });
      assert.deepEqual(await readSeq(b2.vfs), content);
      assert.equal(b2.data.stats.peerReads, 0);
      assert.equal(c.backend.gets, gets + 3, "each chunk from the backend");

      // The portable engine has no socket ops: openPeers gives the Deno TCP pair (fills).
      const portable = openPeers(createPortableEngine(), "127.0.0.1", 0, () => Promise.reject());
      closers.push(portable.server.close, () => portable.transport.close());
      assert.equal(portable.transport.kind, "tcp");
      assert.equal(portable.transport.readRange, undefined);
    } finally {
      for (const close of closers) close();
      await c.cleanup();
      await io.shutdown();
    }
  },
});

/**
 * A one-shot hold on an operation: the first call through `enter` after the hold was made waits
 * (`arrived` then) until `open()`; calls entering while it waits resolve `other`.
 */
class Hold {
  #held = false;
  #opened = false;
  readonly #arrived = Promise.withResolvers<void>();
  readonly #open = Promise.withResolvers<void>();
  readonly #other = Promise.withResolvers<void>();
  readonly arrived = this.#arrived.promise;
  readonly other = this.#other.promise;

  async enter(): Promise<void> {
    if (this.#opened) return;
    if (this.#held) return this.#other.resolve();
    this.#held = true;
    this.#arrived.resolve();
    await this.#open.promise;
  }

  open(): void {
    this.#opened = true;
    this.#open.resolve();
  }
}

/** `promise`, or a failure naming `what` after 5 s (a ref'd timer: the vfs's write-back timer is
 * unref'd, and alone would let the test's event loop end while waiting for it). */
async function within<T>(promise: Promise<T>, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not within 5 s`)), 5000);
  });
  try {
    return await Promise.race([promise, late]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * The engine, with a hold on its next read (`holdNextRead`: only that fd's later reads count as
 * `other`), and a record of every read of an fd after it was closed (before it was reused).
 */
function isOpen(fd: number): boolean {
  try {
    Deno.readLinkSync(`/proc/self/fd/${fd}`);
    return true;
  } catch {
    return false;
  }
}

function watchedEngine(io: IoEngine) {
  const closedFds = new Set<number>();
  const closes: number[] = [];
  const readsOfClosedFds: string[] = [];
  let hold: { hold: Hold; fd?: number } | undefined;
  const read = async (fd: number, into: Uint8Array, offset: number) => {
    const held = hold;
    if (held && (held.fd === undefined || held.fd === fd)) {
      held.fd = fd;
      await held.hold.enter();
    }
    if (closedFds.has(fd)) {
      // An inline open (LocalStore, `local_file_ops = inline`) is not seen here: a number open
      // again was reused by one. A read of a closed fd finds no such number.
      if (isOpen(fd)) closedFds.delete(fd);
      else readsOfClosedFds.push(`fd ${fd}, ${into.length} bytes at ${offset}`);
    }
    return await io.read(fd, into, offset);
  };
  const opens: { path: string; flags: number }[] = [];
  const open = async (path: string, flags: number, mode?: number) => {
    opens.push({ path, flags });
    const fd = await io.open(path, flags, mode);
    closedFds.delete(fd);
    return fd;
  };
  const close = (fd: number) => {
    closedFds.add(fd);
    closes.push(fd);
    return io.close(fd);
  };
  // An inline close (LocalStore, `local_file_ops = inline`) tells the engine to forget the fd
  // just before its close(2): seen here as that close.
  const forgetFd = (fd: number) => {
    closedFds.add(fd);
    closes.push(fd);
    io.forgetFd?.(fd);
  };
  const engine: IoEngine = new Proxy(io, {
    get: (target, p) => {
      if (p === "read") return read;
      if (p === "open") return open;
      if (p === "close") return close;
      if (p === "forgetFd") return forgetFd;
      const value = Reflect.get(target, p);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  return {
    engine,
    opens,
    closes,
    readsOfClosedFds,
    holdNextRead: () => {
      hold = { hold: new Hold() };
      return hold.hold;
    },
    heldFd: () => hold?.fd,
  };
}

for (const fileOps of ["engine", "inline"] as const) {
  Deno.test({
    name:
      `cluster data: a close during the attribute write-back waits for it; no read of a closed fd, the close's bytes win (${fileOps} local file ops)`,
    ...options,
    fn: async () => {
      const watched = watchedEngine(createPortableEngine());
      const c = await setup(watched.engine);
      const errors: string[] = [];
      const consoleError = console.error;
      console.error = (...args: unknown[]) => errors.push(args.join(" "));
      try {
        const a = await c.start("a", undefined, {}, 30, fileOps);
        const b = await c.start("b", undefined, {}, undefined, fileOps);
        /**
         * Let what `hold` holds (the write-back's) go once the close finished, if the close runs
         * beside it (`hold.other`: it reads or uploads the file too, as before issue 13's fix), or
         * after 300 ms of nothing, if the close waits for it.
         */
        const letGo = async (hold: Hold, closing: Promise<unknown>) => {
          const beside = await Promise.race([
            hold.other.then(() => true),
            new Promise<boolean>((resolve) => setTimeout(() => resolve(false), 300)),
          ]);
          if (beside) await closing.catch(() => {});
          hold.open();
        };

        // 1. The write-back is reading the file when its last handle closes (issue 13: "attribute
        // write-back: FsError: EBADF: io_uring read fd 35, 4194304 bytes at 58720256").
        const one = random(1 << 20);
        const f1 = await a.vfs.create(ctx, 1, name("f1"), 0o644, 0, O_RDWR);
        await a.vfs.write(ctx, f1.attr.ino, f1.fh, 0, one);
        const reading = watched.holdNextRead(); // the write-back's, 30 ms after the write
        const closesBefore = watched.closes.length;
        await within(reading.arrived, "the write-back's read");
        const closing1 = a.vfs.flush(ctx, f1.attr.ino, f1.fh, 0n)
          .then(() => a.vfs.release(f1.attr.ino, f1.fh, 0));
        await letGo(reading, closing1);
        await closing1;
        await new Promise((resolve) => setTimeout(resolve, 20)); // a failed write-back logs
        assert.deepEqual(watched.readsOfClosedFds, []);
        assert.deepEqual(errors, []);
        assert.ok(
          watched.closes.slice(closesBefore).includes(watched.heldFd()!),
          "the local file closed in the end",
        );
        // crc32, not deepEqual: the diff of two 1 MiB arrays that differ takes gigabytes.
        assert.equal(crc32(await readFile(b.vfs, "f1")), crc32(one));

        // 2. The write-back has read the old bytes and is uploading them when the file is written
        // again and closed: the close's upload and commit must come after the write-back's, or the
        // write-back's map, committed last, names the old bytes (a lost write for every node).
        const old = random(1 << 20);
        const fresh = random(1 << 20);
        const f2 = await a.vfs.create(ctx, 1, name("f2"), 0o644, 0, O_RDWR);
        const uploading = new Hold(); // the next put: the write-back's, 30 ms after the write
        let heldVersion: string | undefined;
        const put = c.backend.put.bind(c.backend);
        c.backend.put = async (key, data) => {
          heldVersion ??= key.split("/").at(-1);
          await uploading.enter();
          return await put(key, data);
        };
        const heldCommitted = Promise.withResolvers<void>();
        const published = a.data.published.bind(a.data);
        a.data.published = (ino, pending) => {
          if (pending.some((p) => p.ref.version === heldVersion)) heldCommitted.resolve();
          published(ino, pending);
        };
        await a.vfs.write(ctx, f2.attr.ino, f2.fh, 0, old);
        await within(uploading.arrived, "the write-back's upload of the old bytes");
        await a.vfs.write(ctx, f2.attr.ino, f2.fh, 0, fresh);
        const closing2 = a.vfs.flush(ctx, f2.attr.ino, f2.fh, 0n)
          .then(() => a.vfs.release(f2.attr.ino, f2.fh, 0));
        await letGo(uploading, closing2);
        await closing2;
        // The write-back's commit, before or after the close's.
        await within(heldCommitted.promise, "the write-back's commit");
        const got = crc32(await readFile(b.vfs, "f2"));
        assert.notEqual(got, crc32(old), "B reads the old bytes: the write-back committed last");
        assert.equal(got, crc32(fresh));
        assert.deepEqual(errors, []);
      } finally {
        console.error = consoleError;
        await c.cleanup();
      }
    },
  });

  Deno.test({
    name:
      `cluster data: an upload holds the local file open through the close of its last handle (${fileOps} local file ops)`,
    ...options,
    fn: async () => {
      const watched = watchedEngine(createPortableEngine());
      const c = await setup(watched.engine);
      try {
        const a = await c.start("a", undefined, {}, 60_000, fileOps);
        const content = random(1 << 20);
        const f = await a.vfs.create(ctx, 1, name("f"), 0o644, 0, O_RDWR);
        await a.vfs.write(ctx, f.attr.ino, f.fh, 0, content);
        // An upload outside the vfs's publish (which a close waits for) is reading the file...
        const reading = watched.holdNextRead();
        const uploading = a.data.upload(f.attr.ino);
        await within(reading.arrived, "the upload's read");
        const fd = watched.heldFd()!;
        const closesBefore = watched.closes.length;
        // ...when its last handle closes (publishing through a read of its own, not held).
        await a.vfs.flush(ctx, f.attr.ino, f.fh, 0n);
        await a.vfs.release(f.attr.ino, f.fh, 0);
        assert.ok(
          !watched.closes.slice(closesBefore).includes(fd),
          "the upload still holds the local file",
        );
        reading.open();
        const pending = await uploading;
        assert.equal(pending?.length, 1);
        assert.equal(pending![0].ref.crc, crc32(content));
        assert.deepEqual(watched.readsOfClosedFds, []);
        assert.ok(
          watched.closes.slice(closesBefore).includes(fd),
          "closed when the upload let go of it",
        );
      } finally {
        await c.cleanup();
      }
    },
  });
}

Deno.test({
  name:
    "cluster data: a create opens its local file inline (no engine O_CREAT open), as on one node; engine when asked",
  ...options,
  fn: async () => {
    const watched = watchedEngine(createPortableEngine());
    const c = await setup(watched.engine);
    try {
      const a = await c.start("a");
      const b = await c.start("b", undefined, {}, undefined, "engine");
      for (const node of [a, b]) {
        const before = watched.opens.length;
        const f = await node.vfs.create(ctx, 1, name(`new-${node.data.nodeId}`), 0o644, 0, O_RDWR);
        await node.vfs.write(ctx, f.attr.ino, f.fh, 0, random(1024));
        await node.vfs.flush(ctx, f.attr.ino, f.fh, 0n);
        await node.vfs.release(f.attr.ino, f.fh, 0);
        const local = watched.opens.slice(before).filter((o) =>
          o.path.endsWith(`/${f.attr.ino.toString(16)}`) && (o.flags & libc.O_CREAT) !== 0
        );
        // Before session 13 a cluster node always took the engine: one O_CREAT open here.
        assert.equal(
          local.length,
          node === a ? 0 : 1,
          `${node.data.nodeId}: ${JSON.stringify(local)}`,
        );
      }
      assert.deepEqual(watched.readsOfClosedFds, []);
    } finally {
      await c.cleanup();
    }
  },
});

Deno.test({
  name:
    "cluster data: small files inline: no backend object, read on B, grown past the limit, truncated, shrunk back, renamed, unlinked",
  ...options,
  fn: async () => {
    const c = await setup();
    try {
      const a = await c.start("a");
      const b = await c.start("b");
      const mapOf = async (ino: number) => (await c.kv.range({ key: keys.chunkMap(ino) })).kvs[0];
      const format = async (ino: number) =>
        JSON.parse(new TextDecoder().decode((await mapOf(ino)).value)).v;
      // 100 small files: no PUT, format 2 maps, B reads them from the maps (tier inline).
      const files = new Map<string, Uint8Array>();
      for (let i = 0; i < 100; i++) files.set(`s${i}`, random(1 + i * 40));
      for (const [file, bytes] of files) await writeFile(a.vfs, file, bytes);
      assert.equal(c.backend.puts, 0, "small files make no backend object");
      assert.equal(a.data.stats.inlineWrites, 100);
      for (const [file, bytes] of files) assert.deepEqual(await readFile(b.vfs, file), bytes);
      assert.equal(c.backend.gets, 0);
      assert.equal(b.data.stats.inlineBytes, [...files.values()].reduce((n, f) => n + f.length, 0));
      // Exactly the limit stays inline; one byte more is a chunk object (format 1).
      const atLimit = random(4096);
      const ino = await writeFile(a.vfs, "g", atLimit);
      assert.equal(await format(ino), 2);
      assert.equal(c.backend.puts, 0);
      const grown = random(4097);
      await writeFile(a.vfs, "g", grown);
      assert.equal(await format(ino), 1);
      assert.equal(c.backend.puts, 1);
      assert.deepEqual(await readFile(b.vfs, "g"), grown);
      // Rewritten small again: inline again (the object is left to gc).
      const small = random(300);
      await a.vfs.setattr(ctx, ino, { size: 0 });
      await writeFile(a.vfs, "g", small);
      assert.equal(await format(ino), 2);
      assert.deepEqual(await readFile(b.vfs, "g"), small);
      // A write past the limit that leaves the inline chunk alone (chunk 1 only): chunk 0 is
      // uploaded from the map's bytes and the map is format 1.
      const tail = random(10);
      await writeFile(a.vfs, "g", tail, CHUNK_SIZE + 5);
      assert.equal(await format(ino), 1);
      assert.equal(a.data.stats.inlineConversions, 1);
      const expected = new Uint8Array(CHUNK_SIZE + 15);
      expected.set(small);
      expected.set(tail, CHUNK_SIZE + 5);
      assert.deepEqual(await readFile(b.vfs, "g"), expected);
      // Truncate of an inline file (on B), overwrite in the middle (on A), read on the other.
      const t = await writeFile(a.vfs, "t", random(2000));
      const before = await readFile(b.vfs, "t");
      await b.vfs.setattr(ctx, t, { size: 700 });
      assert.equal(await format(t), 2);
      assert.deepEqual(await readFile(a.vfs, "t"), before.subarray(0, 700));
      const patch = random(50);
      await writeFile(a.vfs, "t", patch, 100);
      const patched = before.slice(0, 700);
      patched.set(patch, 100);
      assert.deepEqual(await readFile(b.vfs, "t"), patched);
      // Grown by truncate (a hole): zeros after the inline bytes.
      await a.vfs.setattr(ctx, t, { size: 1000 });
      const holed = new Uint8Array(1000);
      holed.set(patched);
      assert.deepEqual(await readFile(b.vfs, "t"), holed);
      // Rename and hard link keep the map (it is the inode's).
      await a.vfs.rename(ctx, 1, name("t"), 1, name("t2"), 0);
      await a.vfs.link(ctx, t, 1, name("t3"));
      assert.deepEqual(await readFile(b.vfs, "t2"), holed);
      assert.deepEqual(await readFile(b.vfs, "t3"), holed);
      await b.vfs.unlink(ctx, 1, name("t2"));
      assert.deepEqual(await readFile(a.vfs, "t3"), holed);
      const putsBefore = c.backend.puts;
      await b.vfs.unlink(ctx, 1, name("t3"));
      // A's lingering open record makes it an orphan that A's watch frees at once.
      for (let i = 0; i < 100 && await mapOf(t); i++) await new Promise((r) => setTimeout(r, 20));
      assert.equal(await mapOf(t), undefined, "the map goes with the inode");
      assert.equal(c.backend.puts, putsBefore);
    } finally {
      await c.cleanup();
    }
  },
});

Deno.test({
  name:
    "cluster data: cluster.inline_bytes 0 keeps every file in the backend; out of range is refused",
  ...options,
  fn: async () => {
    const c = await setup();
    try {
      const a = await c.start("a", undefined, { inlineBytes: 0 });
      await writeFile(a.vfs, "x", random(10));
      assert.equal(c.backend.puts, 1);
      // The largest limit: a 64 KiB file in its map (~88 KiB of base64), read on another node.
      const big = await c.start("big", undefined, { inlineBytes: 65536 });
      const b = await c.start("b");
      const content = random(65536);
      await writeFile(big.vfs, "y", content);
      assert.equal(c.backend.puts, 1);
      assert.deepEqual(await readFile(b.vfs, "y"), content);
      assert.equal(b.data.stats.inlineBytes, 65536);
      assert.throws(
        () =>
          new ClusterData(`${c.dir}/bad`, {
            nodeId: "bad",
            backend: c.backend,
            inlineBytes: 65537,
          }),
        /cluster.inline_bytes = 65537 is out of range: use 0 \(off\) to 65536/,
      );
    } finally {
      await c.cleanup();
    }
  },
});

Deno.test({
  name:
    "cluster listings: B's listing shows A's changes once the watch reports them and its own at once; readdirplus leaves out what B's kernel holds",
  ...options,
  fn: async () => {
    const c = await setup();
    const text = (bytes: Uint8Array) => new TextDecoder().decode(bytes);
    try {
      const a = await c.start("a");
      const b = await c.start("b");
      const d = await a.vfs.mkdir(ctx, 1, name("d"), 0o755, 0);
      const f = await a.vfs.create(ctx, d.ino, name("f"), 0o644, 0, O_RDWR);
      await a.vfs.release(f.attr.ino, f.fh, 0);
      const list = async (plus = false) => {
        const dh = await b.vfs.opendir(ctx, d.ino, 0);
        try {
          return await b.vfs.readdir(ctx, d.ino, dh, 0, 100, plus);
        } finally {
          await b.vfs.releasedir(d.ino, dh);
        }
      };
      const names = async () => (await list()).slice(2).map((e) => text(e.name));
      assert.deepEqual(await names(), ["f"]);
      assert.deepEqual(await names(), ["f"]); // the kept listing
      // A's create and unlink: B's listing follows as soon as the watch reported them.
      const g = await a.vfs.create(ctx, d.ino, name("g"), 0o644, 0, O_RDWR);
      await a.vfs.release(g.attr.ino, g.fh, 0);
      await until(async () => (await names()).join() === "f,g", "B lists A's new g");
      await a.vfs.unlink(ctx, d.ino, name("f"));
      await until(async () => (await names()).join() === "g", "B's listing drops A's f");
      // B's own create shows in its next listing without waiting for anything.
      const h = await b.vfs.create(ctx, d.ino, name("h"), 0o644, 0, O_RDWR);
      await b.vfs.release(h.attr.ino, h.fh, 0);
      assert.deepEqual(await names(), ["g", "h"]);

      // readdirplus: "h" came from B's own create (the kernel holds it), "g" B's kernel has not
      // seen: only "g" carries attributes (and a lookup the kernel will forget).
      const plus = (await list(true)).slice(2);
      assert.deepEqual(plus.map((e) => [text(e.name), e.attr !== undefined]), [
        ["g", true],
        ["h", false],
      ]);
      b.vfs.forget(h.attr.ino, 1);
      b.vfs.forget(g.attr.ino, 1);
      assert.deepEqual((await list(true)).slice(2).map((e) => e.attr?.ino), [
        g.attr.ino,
        h.attr.ino,
      ]);
    } finally {
      await c.cleanup();
    }
  },
});

/** What the kernel does with a passthrough handle: write the local file itself, unseen. */
function kernelWrite(fd: number, data: Uint8Array, at: number): void {
  for (let off = 0; off < data.length; off += 1 << 20) {
    const piece = data.subarray(off, off + (1 << 20));
    assert.equal(libc.pwrite(fd, piece, at + off), piece.length);
  }
}

Deno.test({
  name: "cluster data: passthrough writes of a created or truncated file are published from the " +
    "local file at flush, fsync and release; a read-write open meanwhile is refused",
  ...options,
  fn: async () => {
    const c = await setup();
    try {
      const a = await c.start("a", undefined, { passthroughWrites: true });
      const b = await c.start("b", undefined, { passthroughWrites: true });
      // A read-write create gets no backing fd (it could map the file), a write-only one does.
      const rw = await a.vfs.create(ctx, 1, name("rw"), 0o644, 0, O_RDWR);
      assert.equal(rw.backingFd, undefined);
      await a.vfs.release(rw.attr.ino, rw.fh, 0);
      const created = await a.vfs.create(ctx, 1, name("p"), 0o644, 0, libc.O_WRONLY);
      const ino = created.attr.ino;
      const fd = created.backingFd;
      assert.ok(fd !== undefined, "a write-only create is offered passthrough");
      a.vfs.passthroughOpened!(ino, created.fh);
      const content = random(2 * CHUNK_SIZE + 777);
      kernelWrite(fd, content, 0);
      // The size comes from the local file while the writer is open.
      assert.equal((await a.vfs.getattr(ctx, ino)).size, content.length);
      // Another handle of it meanwhile: readable only (a read-write one could map it).
      const reader = await a.vfs.open(ctx, ino, 0);
      assert.equal(reader.backingFd, undefined, "only the inode's first handle is offered");
      a.vfs.passthroughOpened!(ino, reader.fh);
      await a.vfs.release(ino, reader.fh, 0);
      const both = await a.vfs.open(ctx, ino, O_RDWR);
      assert.throws(() => a.vfs.passthroughOpened!(ino, both.fh), /ETXTBSY/);
      await a.vfs.release(ino, both.fh, 0);
      // fsync publishes what the kernel wrote: B reads it.
      await a.vfs.fsync(ino, created.fh, false);
      assert.deepEqual(await readFile(b.vfs, "p"), content);
      const puts = c.backend.puts;
      // Nothing written since: a flush uploads nothing.
      await a.vfs.flush(ctx, ino, created.fh, 0n);
      assert.equal(c.backend.puts, puts);
      // A peer asking A for published chunk 0 gets the published bytes, not a write A made
      // since (unseen until its next publish), and A's local file keeps that write.
      const map = decodeChunkMap((await c.kv.range({ key: keys.chunkMap(ino) })).kvs[0].value);
      const unpublished = random(10);
      kernelWrite(fd, unpublished, 0);
      const served = await a.data.serveChunk(ino, 0, map.get(0)!);
      assert.ok(served instanceof Uint8Array);
      assert.deepEqual(served, content.subarray(0, CHUNK_SIZE));
      const local = new Uint8Array(10);
      assert.equal(libc.pread(fd, local, 0), 10);
      assert.deepEqual(local, unpublished);
      content.set(unpublished, 0);
      // An overwrite inside chunk 1 and growth: the next flush uploads the whole file again.
      const patch = random(1000);
      kernelWrite(fd, patch, CHUNK_SIZE + 5);
      content.set(patch, CHUNK_SIZE + 5);
      const tail = random(3000);
      kernelWrite(fd, tail, content.length);
      const grown = new Uint8Array(content.length + tail.length);
      grown.set(content);
      grown.set(tail, content.length);
      await a.vfs.flush(ctx, ino, created.fh, 0n);
      assert.equal(c.backend.puts, puts + 3);
      assert.deepEqual(await readFile(b.vfs, "p"), grown);
      // The last close publishes a write made after the flush.
      kernelWrite(fd, patch, 10);
      grown.set(patch, 10);
      await a.vfs.release(ino, created.fh, 0);
      assert.deepEqual(await readFile(b.vfs, "p"), grown);
      assert.deepEqual(await readFile(a.vfs, "p"), grown);
      // Written on B since: A's next open reads B's bytes (A's local copy is a cache again).
      await writeFile(b.vfs, "p", patch, CHUNK_SIZE * 2);
      grown.set(patch, CHUNK_SIZE * 2);
      assert.deepEqual(await readFile(a.vfs, "p"), grown);
      // O_TRUNC on an existing file: offered; the file is what was written after the cut.
      const again = await a.vfs.open(ctx, ino, libc.O_WRONLY | libc.O_TRUNC);
      assert.ok(again.backingFd !== undefined);
      a.vfs.passthroughOpened!(ino, again.fh);
      const small = random(100);
      kernelWrite(again.backingFd, small, 0);
      await a.vfs.flush(ctx, ino, again.fh, 0n);
      await a.vfs.release(ino, again.fh, 0);
      // 100 bytes: inline in the chunk map (cluster.inline_bytes), read on a fresh node too.
      assert.deepEqual(await readFile(b.vfs, "p"), small);
      assert.deepEqual(await readFile((await c.start("c")).vfs, "p"), small);
      // A sparse file: chunks never written stay holes (no object of zeros).
      const sparse = await a.vfs.open(ctx, ino, libc.O_WRONLY | libc.O_TRUNC);
      a.vfs.passthroughOpened!(ino, sparse.fh);
      kernelWrite(sparse.backingFd!, small, 0);
      kernelWrite(sparse.backingFd!, small, 2 * CHUNK_SIZE + 100);
      await a.vfs.release(ino, sparse.fh, 0);
      const sparseMap = decodeChunkMap(
        (await c.kv.range({ key: keys.chunkMap(ino) })).kvs[0].value,
      );
      assert.deepEqual([...sparseMap.keys()].sort(), [0, 2]);
      const expected = new Uint8Array(2 * CHUNK_SIZE + 200);
      expected.set(small);
      expected.set(small, 2 * CHUNK_SIZE + 100);
      assert.deepEqual(await readFile(b.vfs, "p"), expected);
      // Write-only without O_TRUNC: no offer (the local file may lack chunks).
      const plain = await a.vfs.open(ctx, ino, libc.O_WRONLY);
      assert.equal(plain.backingFd, undefined);
      await a.vfs.release(ino, plain.fh, 0);
    } finally {
      await c.cleanup();
    }
  },
});

Deno.test({
  name: "cluster data: cluster.passthrough_writes = false offers no passthrough",
  ...options,
  fn: async () => {
    const c = await setup();
    try {
      const a = await c.start("a", undefined, { passthroughWrites: false });
      const created = await a.vfs.create(ctx, 1, name("p"), 0o644, 0, libc.O_WRONLY);
      assert.equal(created.backingFd, undefined);
      await a.vfs.release(created.attr.ino, created.fh, 0);
    } finally {
      await c.cleanup();
    }
  },
});

Deno.test({
  name: "cluster data: an owner filling a chunk from the backend for a peer sends the fill's " +
    "buffer and keeps the chunk (stored with O_DIRECT); later requests stream the stored bytes",
  ...options,
  fn: async () => {
    const c = await setup();
    try {
      const a = await c.start("a");
      const content = random(2 * CHUNK_SIZE + 777);
      await writeFile(a.vfs, "f", content);
      const ino = (await a.vfs.lookup(ctx, 1, name("f"))).ino;
      const map = decodeChunkMap((await c.kv.range({ key: keys.chunkMap(ino) })).kvs[0].value);
      // A node that holds nothing of the file is the owner asked.
      const o = await c.start("o");
      const bodyBytes = async (
        served: Uint8Array | {
          length: number;
          read: (into: Uint8Array, offset: number) => Promise<void>;
          done(): void;
        },
      ) => {
        if (served instanceof Uint8Array) return served.slice();
        const out = new Uint8Array(served.length);
        await served.read(out, 0);
        served.done();
        return out;
      };
      for (const index of [0, 1, 2]) {
        const ref = map.get(index)!;
        const expected = content.subarray(index * CHUNK_SIZE, index * CHUNK_SIZE + ref.length);
        // Two peers at once: one fill from the backend, shared.
        const [first, second] = await Promise.all([
          o.data.serveChunk(ino, index, ref),
          o.data.serveChunk(ino, index, ref),
        ]);
        assert.ok(
          first instanceof Uint8Array,
          `chunk ${index}: the filling request sends its buffer`,
        );
        assert.deepEqual(await bodyBytes(first), expected);
        assert.deepEqual(await bodyBytes(second), expected);
        // Kept: the next request streams it from the local file.
        const later = await o.data.serveChunk(ino, index, ref);
        assert.ok(!(later instanceof Uint8Array), `chunk ${index}: stored, then streamed`);
        assert.deepEqual(await bodyBytes(later), expected);
      }
      assert.equal(c.backend.gets, 3, "each chunk read from the backend once");
      assert.deepEqual(await readFile(o.vfs, "f"), content);
    } finally {
      await c.cleanup();
    }
  },
});

Deno.test({
  name:
    "cluster reclaim: an unlink's reclaim (acknowledgements, purge) leaves the directory's other names cached on both nodes (lookups on A read nothing, B rereads only the directory inode)",
  ...options,
  fn: async () => {
    const c = await setup();
    try {
      const a = await c.start("a");
      const b = await c.start("b");
      const d = await a.vfs.mkdir(ctx, 1, name("d"), 0o755, 0);
      const inos: number[] = [];
      for (let i = 0; i < 8; i++) {
        const created = await a.vfs.create(ctx, d.ino, name(`f${i}`), 0o644, 0, O_RDWR);
        await a.vfs.release(created.attr.ino, created.fh, 0);
        inos.push(created.attr.ino);
      }
      const lookUpAll = async (node: Node) => {
        await node.vfs.lookup(ctx, 1, name("d"));
        for (let i = 1; i < 8; i++) await node.vfs.lookup(ctx, d.ino, name(`f${i}`));
      };
      await lookUpAll(a);
      await lookUpAll(b);
      await a.vfs.unlink(ctx, d.ino, name("f0"));
      // Both nodes acknowledge, A's reclaim round frees the orphan.
      await until(async () => !(await exists(c.kv, keys.inode(inos[0]))), "f0 reclaimed");
      await until(async () => !(await exists(c.kv, keys.orphan(inos[0]))), "orphan mark gone");
      const reads = c.calls.reads;
      await lookUpAll(a);
      assert.equal(c.calls.reads - reads, 0, "A's lookups after the reclaim read the store");
      // A made the directory: it knows every name, so a missing one costs no read either.
      assert.equal(await errnoOf(() => a.vfs.lookup(ctx, d.ino, name("f0"))), "ENOENT");
      assert.equal(await errnoOf(() => a.vfs.lookup(ctx, d.ino, name("nope"))), "ENOENT");
      assert.equal(c.calls.reads - reads, 0, "A's lookups of missing names read the store");
      // On B the unlink changed the directory's inode (its times) and the one name: B reads the
      // directory's inode again once, and nothing for the other names.
      await b.vfs.lookup(ctx, 1, name("d"));
      assert.equal(c.calls.reads - reads, 1, "B reads the changed directory inode once");
      await lookUpAll(b);
      assert.equal(c.calls.reads - reads, 1, "B's lookups of the other names read the store");
    } finally {
      await c.cleanup();
    }
  },
});
