/**
 * Cluster data path without FUSE: two or three Vfs "nodes" share one metadata store and one
 * directory backend, each with its own data dir, as separate daemons would.
 */

import assert from "node:assert/strict";
import { openEmbeddedKV } from "../meta/embedded.ts";
import type { MetaKV } from "../meta/kv.ts";
import { createPortableEngine } from "../io/portable.ts";
import { createVfs, type VfsWithRecovery } from "../vfs/vfs.ts";
import type { Ctx } from "../vfs/types.ts";
import { type BackendStore, DirBackend } from "./backend.ts";
import { type ChunkSource, ClusterData } from "./cluster_data.ts";
import { listenPeers, TcpTransport } from "../cluster/transport.ts";
import { CHUNK_SIZE } from "./chunk_map.ts";
import { collectGarbage } from "./gc.ts";
import { keys } from "../meta/namespace.ts";

const ctx: Ctx = { uid: 0, gid: 0, pid: 1 };
const O_RDWR = 2;
const name = (s: string) => new TextEncoder().encode(s);

/** Counts backend reads, to check that concurrent misses fetch once. */
class CountingBackend implements BackendStore {
  readonly kind = "counting";
  gets = 0;
  constructor(readonly inner: BackendStore) {}
  put(key: string, data: Uint8Array) {
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
}

async function setup() {
  const dir = await Deno.makeTempDir({ prefix: "cluster-data-" });
  const kv = await openEmbeddedKV(`${dir}/meta.db`);
  // Each node's destroy closes its kv; the shared one is closed once at the end.
  const shared: MetaKV = new Proxy(kv, {
    get: (target, p) => {
      if (p === "close") return () => Promise.resolve();
      const value = Reflect.get(target, p);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  const backend = new CountingBackend(await DirBackend.open(`${dir}/backend`));
  const io = createPortableEngine();
  const nodes: Node[] = [];
  const start = async (id: string, capacityBytes?: number): Promise<Node> => {
    const nodeDir = `${dir}/${id}`;
    await Deno.mkdir(nodeDir, { recursive: true });
    const data = new ClusterData(nodeDir, { nodeId: id, backend, capacityBytes });
    const vfs = await createVfs({ kv: shared, io, dataDir: nodeDir, cluster: data });
    const node = { vfs, data, dir: nodeDir };
    nodes.push(node);
    return node;
  };
  const stop = async (node: Node) => {
    await node.vfs.destroy();
    node.data.close();
    nodes.splice(nodes.indexOf(node), 1);
  };
  const cleanup = async () => {
    for (const node of [...nodes]) await stop(node);
    await kv.close();
    await Deno.remove(dir, { recursive: true });
  };
  return { start, stop, cleanup, backend, dir, kv: shared };
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
      await writeFile(a.vfs, "x", new Uint8Array([1, 2, 3]));
      const put = c.backend.put;
      c.backend.put = () => Promise.reject(new Error("backend unreachable"));
      await assert.rejects(writeFile(a.vfs, "x", new Uint8Array([9, 9, 9, 9])), /EIO|backend/);
      c.backend.put = put;
      assert.deepEqual(await readFile(b.vfs, "x"), new Uint8Array([1, 2, 3]));
    } finally {
      await c.cleanup();
    }
  },
});

Deno.test({
  name: "cluster data: gc deletes replaced versions and deleted files' objects, keeps young ones",
  ...options,
  fn: async () => {
    const c = await setup();
    try {
      const a = await c.start("a");
      const b = await c.start("b");
      const content = random(CHUNK_SIZE + 10);
      await writeFile(a.vfs, "keep", content);
      await writeFile(a.vfs, "keep", random(10), 5); // replaces chunk 0 only
      const gone = await writeFile(a.vfs, "gone", random(100));
      await a.vfs.unlink(ctx, 1, name("gone"));
      // The kernel's last forget frees the unlinked inode (its lookups: create + lookup).
      a.vfs.forget(gone, 2);
      for (let i = 0; i < 100; i++) {
        const found = await c.kv.range({ key: keys.inode(gone) });
        if (found.kvs.length === 0) break;
        await new Promise((r) => setTimeout(r, 20));
      }
      assert.equal((await c.backend.list("c/")).length, 4);
      // Within the grace period nothing goes (an upload may not have committed yet).
      const young = await collectGarbage(c.kv, c.backend, { graceMs: 60_000 });
      assert.equal(young.objectsDeleted, 0);
      assert.equal(young.mapsDeleted, 1, "the deleted file's chunk map goes at once");
      const report = await collectGarbage(c.kv, c.backend, { graceMs: 0 });
      assert.deepEqual(report, { objectsDeleted: 2, mapsDeleted: 0, objectsKept: 2 });
      const expected = content.slice();
      expected.set((await readFile(a.vfs, "keep")).subarray(5, 15), 5);
      assert.deepEqual(await readFile(b.vfs, "keep"), expected);
    } finally {
      await c.cleanup();
    }
  },
});

Deno.test({
  name: "cluster data: chunks streamed from a peer land in B's cache; a bad copy falls back",
  ...options,
  fn: async () => {
    const c = await setup();
    const transport = new TcpTransport({ timeoutMs: 5000 });
    let corrupt = false;
    let b: Node | undefined;
    const servers: { close(): void }[] = [];
    try {
      const a = await c.start("a");
      // Written on A: its cache holds the chunks (checked), so A streams them from its file.
      const content = random(2 * CHUNK_SIZE + 777);
      await writeFile(a.vfs, "f", content);
      const server = listenPeers("127.0.0.1", 0, async (r) => {
        const served = await a.data.serveChunk(r.ino, r.index, r);
        if (!corrupt || served instanceof Uint8Array) return served;
        // A peer whose disk flipped a byte after it was checked.
        return {
          length: served.length,
          read: async (into: Uint8Array, offset: number) => {
            await served.read(into, offset);
            if (offset === 0) into[5] ^= 0xff;
          },
          done: () => served.done(),
        };
      }, () => {});
      servers.push(server);
      const source = (node: Node): ChunkSource => ({
        fetch: () => Promise.reject(new Error("the streamed form is used")),
        fetchInto: async (ino, index, ref, sink) => {
          const request = { ino, index, ...ref, objectLength: ref.objectLength ?? 0 };
          try {
            await transport.getChunkInto(server.address, request, sink);
          } catch {
            await sink(await node.data.fetchFromBackend(ino, index, ref), 0);
          }
        },
      });
      b = await c.start("b");
      b.data.source = source(b);
      const gets = c.backend.gets;
      assert.deepEqual(await readFile(b.vfs, "f"), content);
      assert.equal(c.backend.gets, gets, "every chunk came from the peer");
      assert.equal(b.data.stats.misses, 3);
      assert.equal(b.data.index.bytes, content.length);
      // Read again: hits from B's own cache, nothing fetched.
      assert.deepEqual(await readFile(b.vfs, "f"), content);
      assert.equal(b.data.stats.misses, 3);

      corrupt = true;
      const fresh = await c.start("b2");
      fresh.data.source = source(fresh);
      assert.deepEqual(await readFile(fresh.vfs, "f"), content);
      assert.equal(fresh.data.stats.checksumFailures, 3, "each bad chunk was noticed");
      assert.equal(c.backend.gets, gets + 3, "and read from the backend instead");
    } finally {
      for (const s of servers) s.close();
      transport.close();
      await c.cleanup();
    }
  },
});
