/**
 * The down window of other zones' stores (cluster.zone_down_ms) in ClusterData's tier chain:
 * a zone whose store refused or did not answer is skipped by the next chunk reads, unless it is
 * the last place the chunk can come from. Real HTTP clients (HttpBackend) against a closed port
 * and a listener that never answers; requests counted at the client.
 * @module
 */

import assert from "node:assert/strict";
import { crc32 } from "node:zlib";
import { type BackendStore, chunkObjectKey, DirBackend } from "./backend.ts";
import { HttpBackend } from "./backend_http.ts";
import { ClusterData, type ZoneStores } from "./cluster_data.ts";
import type { ChunkRef } from "./chunk_map.ts";
import { errnoName, FsError } from "../fs_error.ts";

/** Counts get requests; `inner` can be swapped (a zone coming back). */
class CountingStore implements BackendStore {
  readonly kind = "counting";
  gets = 0;
  constructor(public inner: BackendStore) {}
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

const INO = 0x42;
const CHUNKS = 4;

function chunkBytes(index: number): Uint8Array {
  return new Uint8Array(4096).fill(index + 1);
}

function ref(index: number, zones: string[]): ChunkRef {
  const bytes = chunkBytes(index);
  return {
    version: `v${index}-n1`,
    length: bytes.length,
    crc: crc32(bytes),
    objectLength: bytes.length,
    zones,
  };
}

/** A port nothing listens on (bound, then closed). */
function closedPort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

/** A listener that accepts connections and never answers (a cut-off zone behind a proxy). */
function silentListener() {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns: Deno.Conn[] = [];
  (async () => {
    try {
      for await (const conn of listener) conns.push(conn);
    } catch { /* closed */ }
  })();
  return {
    port: (listener.addr as Deno.NetAddr).port,
    close() {
      listener.close();
      for (const conn of conns) {
        try {
          conn.close();
        } catch { /* already closed */ }
      }
    },
  };
}

async function setup(storeA: BackendStore, options: { bHas?: boolean } = {}) {
  const dir = await Deno.makeTempDir({ prefix: "skyfs-zone-down-" });
  const own = await DirBackend.open(`${dir}/c`);
  const b = new CountingStore(await DirBackend.open(`${dir}/b`));
  if (options.bHas ?? true) {
    for (let i = 0; i < CHUNKS; i++) {
      await b.put(chunkObjectKey(INO, i, ref(i, []).version), chunkBytes(i));
    }
  }
  const a = new CountingStore(storeA);
  const stores: Record<string, BackendStore> = { a, b, c: own };
  const zones: ZoneStores = {
    zone: "c",
    zones: () => Promise.resolve(["a", "b", "c"]),
    store: (zone) => Promise.resolve(stores[zone]),
  };
  const lines: string[] = [];
  let clock = 1_000_000;
  const data = new ClusterData(`${dir}/data`, {
    nodeId: "n1",
    backend: own,
    zones,
    zoneDownMs: 10_000,
    now: () => clock,
    log: (line) => lines.push(line),
  });
  return {
    data,
    a,
    b,
    lines,
    dir,
    advance: (ms: number) => clock += ms,
    async close() {
      await own.close();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

/** Read the 4-chunk file's chunks one after another, as a sequential reader's misses do. */
async function readFile(data: ClusterData, zones: string[]): Promise<(Uint8Array | string)[]> {
  const out: (Uint8Array | string)[] = [];
  for (let i = 0; i < CHUNKS; i++) {
    try {
      out.push(await data.fetchFromBackend(INO, i, ref(i, zones)));
    } catch (error) {
      assert.ok(error instanceof FsError, `chunk ${i}: ${error}`);
      out.push(errnoName(error.errno));
    }
  }
  return out;
}

Deno.test("zone down: a refusing zone's store is asked once for a 4-chunk file, then skipped", async () => {
  const t = await setup(new HttpBackend(`http://127.0.0.1:${closedPort()}`, 2000));
  try {
    const read = await readFile(t.data, ["a", "b"]);
    for (let i = 0; i < CHUNKS; i++) assert.deepEqual(read[i], chunkBytes(i), `chunk ${i}`);
    assert.equal(t.a.gets, 1, "requests to zone a");
    assert.equal(t.b.gets, CHUNKS, "requests to zone b");
    assert.equal(t.lines.length, 1, t.lines.join("\n"));
    assert.match(t.lines[0], /^skyfs: zone a's backend marked down for 10000 ms/);
    assert.ok(t.data.zonesDown.has("a"));
    assert.equal(t.data.stats.backendRemoteBytes, CHUNKS * 4096);
  } finally {
    await t.close();
  }
});

Deno.test("zone down: a zone's store that never answers costs one timeout, not one per chunk", async () => {
  const silent = silentListener();
  const t = await setup(new HttpBackend(`http://127.0.0.1:${silent.port}`, 300));
  try {
    const read = await readFile(t.data, ["a", "b"]);
    for (let i = 0; i < CHUNKS; i++) assert.deepEqual(read[i], chunkBytes(i), `chunk ${i}`);
    assert.equal(t.a.gets, 1, "requests to zone a");
    assert.match(t.lines[0], /marked down .*no answer within 300 ms/);
  } finally {
    silent.close();
    await t.close();
  }
});

Deno.test("zone down: the last place a chunk can come from is tried even while marked down", async () => {
  const t = await setup(new HttpBackend(`http://127.0.0.1:${closedPort()}`, 2000), {
    bHas: false,
  });
  try {
    // Placed in a alone: every chunk asks a (and fails with EIO naming it).
    assert.deepEqual(await readFile(t.data, ["a"]), ["EIO", "EIO", "EIO", "EIO"]);
    assert.equal(t.a.gets, CHUNKS);
    // Placed in a and b, b's copy not made yet: a is skipped first, then tried last.
    assert.deepEqual(await readFile(t.data, ["a", "b"]), ["EIO", "EIO", "EIO", "EIO"]);
    assert.equal(t.a.gets, 2 * CHUNKS);
    assert.equal(t.b.gets, CHUNKS);
    assert.equal(t.lines.length, 1, "one line while it stays down");
  } finally {
    await t.close();
  }
});

Deno.test("zone down: after the window the zone is asked again; an answer marks it back", async () => {
  const t = await setup(new HttpBackend(`http://127.0.0.1:${closedPort()}`, 2000));
  try {
    await readFile(t.data, ["a", "b"]);
    assert.equal(t.a.gets, 1);
    // Still inside the window: skipped.
    t.advance(9_000);
    await readFile(t.data, ["a", "b"]);
    assert.equal(t.a.gets, 1);
    // Past it, still refusing: one more request, the window restarts, no second "down" line.
    t.advance(2_000);
    await readFile(t.data, ["a", "b"]);
    assert.equal(t.a.gets, 2);
    assert.equal(t.lines.length, 1, t.lines.join("\n"));
    // Past it again, and a's store answers (it has the objects): read from a, marked back.
    t.advance(10_001);
    const back = await DirBackend.open(`${t.dir}/a`);
    for (let i = 0; i < CHUNKS; i++) {
      await back.put(chunkObjectKey(INO, i, ref(i, []).version), chunkBytes(i));
    }
    t.a.inner = back;
    const bGets = t.b.gets;
    const read = await readFile(t.data, ["a", "b"]);
    for (let i = 0; i < CHUNKS; i++) assert.deepEqual(read[i], chunkBytes(i));
    assert.equal(t.a.gets, 2 + CHUNKS);
    assert.equal(t.b.gets, bGets, "b not asked once a answers");
    assert.equal(t.lines.length, 2, t.lines.join("\n"));
    assert.match(t.lines[1], /^skyfs: zone a's backend is back \(answered after 21001 ms down\)/);
    assert.equal(t.data.zonesDown.size, 0);
    await back.close();
  } finally {
    await t.close();
  }
});
