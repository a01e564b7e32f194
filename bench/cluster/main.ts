/**
 * Cluster read paths, measured in one run beside loopback TCP: a file written on node A, read
 * sequentially on node B (1 MiB reads through the vfs, as FUSE would issue them) served from
 * (a) B's local cache, (b) A as the peer (real TCP peer server and client, chunks streamed into
 * B's cache as ClusterNode does), (c) the backend (directory). (b0) is the peer protocol alone:
 * the same chunks fetched from A with nothing stored, to separate transport cost from B's cache
 * fill. Also 4 KiB random reads from B's local cache, and ext4 page-cache reads of the same
 * local file as the reference for (a) (alternating with (a), 3 passes each; loopback TCP is the
 * median of 3 passes). Everything runs in this one process, on one JS thread, as ratios. The
 * FUSE round trip is not included (the same for every path; see bench/fuse).
 * Usage: deno run -A bench/cluster/main.ts [--mib N] [--rounds R]
 * @module
 */

import { parseArgs } from "node:util";
import { openEmbeddedKV } from "../../src/meta/embedded.ts";
import type { MetaKV } from "../../src/meta/kv.ts";
import { createPortableEngine } from "../../src/io/portable.ts";
import { createVfs, type VfsWithRecovery } from "../../src/vfs/vfs.ts";
import { DirBackend } from "../../src/cache/backend.ts";
import { checkChunk, ClusterData } from "../../src/cache/cluster_data.ts";
import type { GetChunk } from "../../src/cluster/peer_wire.ts";
import { listenPeers, TcpTransport } from "../../src/cluster/transport.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: { mib: { type: "string" }, rounds: { type: "string" } },
});
const MIB = Number(values.mib ?? 128);
const ROUNDS = Number(values.rounds ?? 3);
const SIZE = MIB << 20;
const ctx = { uid: 0, gid: 0, pid: 1 };
const name = new TextEncoder().encode("big");

const dir = await Deno.makeTempDir({ prefix: "cluster-bench-" });
const kv = await openEmbeddedKV(`${dir}/meta.db`);
const shared: MetaKV = new Proxy(kv, {
  get: (target, p) => {
    if (p === "close") return () => Promise.resolve();
    const value = Reflect.get(target, p);
    return typeof value === "function" ? value.bind(target) : value;
  },
});
const backend = await DirBackend.open(`${dir}/backend`);
const io = createPortableEngine();
let nodeCount = 0;
async function node(): Promise<{ vfs: VfsWithRecovery; data: ClusterData; dir: string }> {
  const nodeDir = `${dir}/n${nodeCount++}`;
  await Deno.mkdir(nodeDir);
  const data = new ClusterData(nodeDir, { nodeId: `n${nodeCount}`, backend });
  return {
    vfs: await createVfs({ kv: shared, io, dataDir: nodeDir, cluster: data }),
    data,
    dir: nodeDir,
  };
}

async function readAll(vfs: VfsWithRecovery, random = false): Promise<number> {
  const ino = (await vfs.lookup(ctx, 1, name)).ino;
  const { fh } = await vfs.open(ctx, ino, 0);
  const started = performance.now();
  let bytes = 0;
  if (random) {
    const buf = new Uint8Array(4096);
    for (let i = 0; i < 20000; i++) {
      bytes += await vfs.read(ctx, ino, fh, Math.floor(Math.random() * (SIZE / 4096)) * 4096, buf);
    }
  } else {
    const buf = new Uint8Array(1 << 20);
    for (let off = 0; off < SIZE; off += buf.length) {
      bytes += await vfs.read(ctx, ino, fh, off, buf);
    }
  }
  const seconds = (performance.now() - started) / 1000;
  await vfs.release(ino, fh, 0);
  if (!random && bytes !== SIZE) throw new Error(`read ${bytes} of ${SIZE} bytes`);
  return random ? 20000 / seconds : bytes / seconds / 2 ** 20;
}

async function loopbackTcp(): Promise<number> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  const sink = (async () => {
    const conn = await listener.accept();
    const buf = new Uint8Array(1 << 20);
    let total = 0;
    while (total < SIZE) {
      const n = await conn.read(buf);
      if (n === null) break;
      total += n;
    }
    conn.close();
    return total;
  })();
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const chunk = new Uint8Array(4 << 20);
  const started = performance.now();
  for (let sent = 0; sent < SIZE;) {
    sent += await conn.write(chunk.subarray(0, Math.min(chunk.length, SIZE - sent)));
  }
  await sink;
  const seconds = (performance.now() - started) / 1000;
  conn.close();
  listener.close();
  return SIZE / seconds / 2 ** 20;
}

function ext4PageCache(path: string): number {
  const file = Deno.openSync(path);
  const buf = new Uint8Array(1 << 20);
  const started = performance.now();
  let total = 0;
  for (;;) {
    const n = file.readSync(buf);
    if (n === null || n === 0) break;
    total += n;
  }
  file.close();
  return total / ((performance.now() - started) / 1000) / 2 ** 20;
}

const a = await node();
{
  const created = await a.vfs.create(ctx, 1, name, 0o644, 0, 2);
  const block = new Uint8Array(1 << 20);
  for (let off = 0; off < SIZE; off += block.length) {
    crypto.getRandomValues(block.subarray(0, 65536));
    await a.vfs.write(ctx, created.attr.ino, created.fh, off, block);
  }
  await a.vfs.release(created.attr.ino, created.fh, 0);
}
const peerServer = listenPeers(
  "127.0.0.1",
  0,
  (r) => a.data.serveChunk(r.ino, r.index, { version: r.version, length: r.length, crc: r.crc }),
);
const transport = new TcpTransport();
const requests: GetChunk[] = [];

/** The chunks (b) fetched, fetched again straight from A, 8 in flight, nothing stored: the
 * protocol and A's serving without B's cache fill and read-back (pieces dropped on arrival). */
async function transportOnly(): Promise<number> {
  const todo = requests.splice(0);
  const started = performance.now();
  let bytes = 0;
  const next = async () => {
    for (let request = todo.shift(); request; request = todo.shift()) {
      const n = await transport.getChunkInto(peerServer.address, request, () => {});
      bytes += n; // not `bytes += await`: that reads bytes before the wait and loses updates
    }
  };
  await Promise.all(Array.from({ length: 8 }, next));
  return bytes / ((performance.now() - started) / 1000) / 2 ** 20;
}

const median = (xs: number[]) => [...xs].sort((p, q) => p - q)[Math.floor(xs.length / 2)];
const results: Record<string, number[]> = {
  "loopback TCP": [],
  "(a) B local cache": [],
  "(b) A as peer": [],
  "(b0) peer transport alone (no cache fill)": [],
  "(c) backend (dir)": [],
  "ext4 page cache": [],
  "B local cache, 4 KiB random (reads/s)": [],
};
for (let round = 0; round < ROUNDS; round++) {
  const tcp: number[] = [];
  for (let pass = 0; pass < 3; pass++) tcp.push(await loopbackTcp());
  results["loopback TCP"].push(median(tcp));
  const peerNode = await node();
  peerNode.data.source = {
    fetch: async (ino, index, ref) => {
      const request = { ino, index, ...ref, objectLength: ref.objectLength ?? 0 };
      requests.push(request);
      const data = await transport.getChunk(peerServer.address, request);
      checkChunk(data, ref, `chunk ${ino}/${index} from the peer`); // as ClusterNode does
      return data;
    },
    // What ClusterNode uses: pieces written into B's local file as they arrive.
    fetchInto: async (ino, index, ref, sink) => {
      const request = { ino, index, ...ref, objectLength: ref.objectLength ?? 0 };
      requests.push(request);
      await transport.getChunkInto(peerServer.address, request, sink);
    },
  };
  results["(b) A as peer"].push(await readAll(peerNode.vfs));
  results["(b0) peer transport alone (no cache fill)"].push(await transportOnly());
  const backendNode = await node();
  results["(c) backend (dir)"].push(await readAll(backendNode.vfs));
  results["B local cache, 4 KiB random (reads/s)"].push(await readAll(backendNode.vfs, true));
  // (a) and its ext4 reference alternate, 3 passes each, so both see the same machine load
  // (single passes minutes apart differed 2x on this shared machine).
  const ino = (await backendNode.vfs.lookup(ctx, 1, name)).ino;
  const localPath = `${backendNode.dir}/data/${(ino % 256).toString(16).padStart(2, "0")}/${
    ino.toString(16)
  }`;
  const local: number[] = [];
  const ext4: number[] = [];
  for (let pass = 0; pass < 3; pass++) {
    local.push(await readAll(backendNode.vfs));
    ext4.push(ext4PageCache(localPath));
  }
  results["(a) B local cache"].push(median(local));
  results["ext4 page cache"].push(median(ext4));
  for (const n of [peerNode, backendNode]) {
    await n.vfs.destroy();
    n.data.close();
    await Deno.remove(n.dir, { recursive: true });
  }
}
const tcp = median(results["loopback TCP"]);
const ext4 = median(results["ext4 page cache"]);
console.log(`cluster read paths, ${MIB} MiB file, median of ${ROUNDS} rounds (MiB/s unless noted)`);
for (const [label, xs] of Object.entries(results)) {
  const m = median(xs);
  let ratio = "";
  if (label.startsWith("(b") || label.startsWith("(c)")) {
    ratio = `  ${(m / tcp).toFixed(2)}x loopback TCP`;
  }
  if (label.startsWith("(a)")) ratio = `  ${(m / ext4).toFixed(2)}x ext4 page cache`;
  console.log(`${label.padEnd(40)} ${m.toFixed(0).padStart(8)}${ratio}`);
}
transport.close();
peerServer.close();
await a.vfs.destroy();
a.data.close();
await kv.close();
await Deno.remove(dir, { recursive: true });
