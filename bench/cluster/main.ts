/**
 * Cluster read paths in the deployed shape, beside loopback TCP measured in the same run and the
 * same shape. A file written on node A is read on node B through B's vfs (as FUSE would issue
 * the reads, without the FUSE round trip, which is the same for every path; see bench/fuse),
 * sequentially (1 MiB reads) and randomly (1 MiB reads in a random order, each once; 4 KiB
 * reads), served from (a) B's local cache, (b) A as the peer, (c) the backend (directory).
 * Node A runs in its own process (peer_main.ts: A's cache directory served by the code a mount
 * node runs), node B in this one, so each has its own JS thread, as two daemons do. Loopback
 * TCP is that child sending to this process over Deno TCP with the peer path's write and read
 * sizes. (b0) is the peer protocol alone: the chunks (b) fetched, fetched again with nothing
 * stored. ext4 page-cache reads of B's local file are the reference for (a), alternating with
 * it. Both processes use the io engine a mount opens (io_uring here).
 * Usage: deno run -A bench/cluster/main.ts [--mib N] [--rounds R] [--json PATH] [--peer-only]
 * (--peer-only: loopback TCP and (b) only, for profiles; SKYFS_BENCH_PEER_FLAGS="--cpu-prof"
 * passes deno flags to node A's process.)
 * @module
 */

import { parseArgs } from "node:util";
import { fileURLToPath } from "node:url";
import { openEmbeddedKV } from "../../src/meta/embedded.ts";
import type { MetaKV } from "../../src/meta/kv.ts";
import { openIoEngine } from "../../src/io/mod.ts";
import * as libc from "../../src/io/libc.ts";
import { createVfs, type VfsWithRecovery } from "../../src/vfs/vfs.ts";
import { DirBackend } from "../../src/cache/backend.ts";
import { ClusterData } from "../../src/cache/cluster_data.ts";
import type { ChunkRef } from "../../src/cache/chunk_map.ts";
import type { GetChunk } from "../../src/cluster/peer_wire.ts";
import { PIECE_BYTES } from "../../src/cluster/transport.ts";
import { peerTransport } from "../../src/cluster/uring_transport.ts";
import { peerThenBackend } from "../../src/cluster/peer_source.ts";
import { cpuNs } from "./cpu.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    mib: { type: "string" },
    rounds: { type: "string" },
    json: { type: "string" },
    "peer-only": { type: "boolean" },
  },
});
const MIB = Number(values.mib ?? 128);
const ROUNDS = Number(values.rounds ?? 3);
const SIZE = MIB << 20;
const RANDOM_4K_READS = Math.min(20000, SIZE / 4096);
const ctx = { uid: 0, gid: 0, pid: 1 };
const name = new TextEncoder().encode("big");
const loadAverage = () => Number(Deno.readTextFileSync("/proc/loadavg").split(" ")[0]);
const loadStart = loadAverage();

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
const io = await openIoEngine({ log: (line) => console.error(line) });
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

type Pattern = "seq" | "rand-1m" | "rand-4k";

/** MiB/s (reads/s for rand-4k) of reading the file on `vfs` in `pattern`. */
async function readAll(vfs: VfsWithRecovery, pattern: Pattern): Promise<number> {
  const ino = (await vfs.lookup(ctx, 1, name)).ino;
  const { fh } = await vfs.open(ctx, ino, 0);
  let bytes = 0;
  let started: number;
  if (pattern === "rand-4k") {
    const buf = new Uint8Array(4096);
    const offsets = Array.from(
      { length: RANDOM_4K_READS },
      () => Math.floor(Math.random() * (SIZE / 4096)) * 4096,
    );
    started = performance.now();
    for (const offset of offsets) bytes += await vfs.read(ctx, ino, fh, offset, buf);
  } else {
    const buf = new Uint8Array(1 << 20);
    const offsets = Array.from({ length: SIZE / buf.length }, (_, i) => i * buf.length);
    if (pattern === "rand-1m") shuffle(offsets);
    started = performance.now();
    for (const offset of offsets) bytes += await vfs.read(ctx, ino, fh, offset, buf);
  }
  const seconds = (performance.now() - started) / 1000;
  await vfs.release(ino, fh, 0);
  if (pattern === "rand-4k") return RANDOM_4K_READS / seconds;
  if (bytes !== SIZE) throw new Error(`read ${bytes} of ${SIZE} bytes`);
  return bytes / seconds / 2 ** 20;
}

function shuffle<T>(xs: T[]): void {
  for (let i = xs.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [xs[i], xs[j]] = [xs[j], xs[i]];
  }
}

/** The child sends SIZE bytes to this process over a new connection; read as the peer client
 * reads (pieces of PIECE_BYTES). With `fill`, each piece is also written into a new file at its
 * offset through the io engine, as a cache fill does: the floor of any peer path that keeps
 * what it receives, without protocol, CRC or read-back. */
async function loopbackTcp(address: string, fill?: string, fromFile = false): Promise<number> {
  const fd = fill === undefined ? -1 : await io.open(fill, libc.O_RDWR | libc.O_CREAT);
  const at = address.lastIndexOf(":");
  const conn = await Deno.connect({
    hostname: address.slice(0, at),
    port: Number(address.slice(at + 1)),
  });
  conn.setNoDelay(true);
  const request = new Uint8Array(8);
  new DataView(request.buffer).setUint32(
    0,
    Math.floor(SIZE / 2 ** 32) | (fromFile ? 0x8000_0000 : 0),
  );
  new DataView(request.buffer).setUint32(4, SIZE >>> 0);
  const buf = new Uint8Array(PIECE_BYTES);
  const started = performance.now();
  await conn.write(request);
  let total = 0;
  while (total < SIZE) {
    const n = await conn.read(buf);
    if (n === null) break;
    if (fd >= 0) await io.write(fd, buf.subarray(0, n), total);
    total += n;
  }
  const seconds = (performance.now() - started) / 1000;
  conn.close();
  if (fd >= 0) {
    await io.close(fd);
    await Deno.remove(fill!);
  }
  if (total !== SIZE) throw new Error(`loopback TCP: ${total} of ${SIZE} bytes`);
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

// Node A writes the file here (publishing it to the shared metadata and the backend, and keeping
// its chunks in its cache), then its directory is handed to its own process.
const aDir = `${dir}/a`;
{
  await Deno.mkdir(aDir);
  const data = new ClusterData(aDir, { nodeId: "a", backend });
  const vfs = await createVfs({ kv: shared, io, dataDir: aDir, cluster: data });
  const created = await vfs.create(ctx, 1, name, 0o644, 0, 2);
  const block = new Uint8Array(1 << 20);
  for (let off = 0; off < SIZE; off += block.length) {
    crypto.getRandomValues(block.subarray(0, 65536));
    await vfs.write(ctx, created.attr.ino, created.fh, off, block);
  }
  await vfs.release(created.attr.ino, created.fh, 0);
  await vfs.destroy();
  await data.close();
}
const child = new Deno.Command(Deno.execPath(), {
  args: [
    "run",
    "-A",
    // e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof-a" to profile node A as well
    ...(Deno.env.get("SKYFS_BENCH_PEER_FLAGS")?.split(" ").filter(Boolean) ?? []),
    fileURLToPath(new URL("./peer_main.ts", import.meta.url)),
    "--dir",
    aDir,
    "--backend",
    `${dir}/backend`,
    "--node-id",
    "a",
  ],
  stdin: "piped",
  stdout: "piped",
  stderr: "inherit",
}).spawn();
const childWriter = child.stdin.getWriter();
const addresses = await (async () => {
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  while (!text.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`peer_main.ts exited before it was ready: ${text}`);
    text += value;
  }
  reader.releaseLock();
  return JSON.parse(text.slice(0, text.indexOf("\n"))) as { peer: string; tcp: string };
})();
// The client a mount node opens with this engine (io_uring: ranges read into the reader's buffer).
const transport = peerTransport(io);
const requests: GetChunk[] = [];

/** readDirect's calls in (b), replayed by transportOnly. */
const ranges: {
  ino: number;
  index: number;
  ref: ChunkRef;
  offset: number;
  length: number;
  ahead: { index: number; ref: ChunkRef; offset: number; length: number }[];
}[] = [];

/** The ranges (b) read from A, read again by the transport alone into one reused buffer (the
 * same requests ahead), nothing else: the protocol and A's serving without B's vfs. */
async function transportRanges(): Promise<number> {
  const todo = ranges.splice(0);
  const into = new Uint8Array(1 << 20);
  const started = performance.now();
  let bytes = 0;
  const source = peerThenBackend(requestsNode!.data, transport, {
    owner: () => ({ id: "a", address: addresses.peer }),
  });
  for (const r of todo) {
    const ok = await source.readRange!(
      r.ino,
      r.index,
      r.ref,
      r.offset,
      into.subarray(0, r.length),
      r.ahead,
    );
    if (!ok) throw new Error(`(b0): range ${r.ino}/${r.index} failed`);
    bytes += r.length;
  }
  source.endStream?.(todo[0]?.ino ?? 0);
  return bytes / ((performance.now() - started) / 1000) / 2 ** 20;
}
let requestsNode: Awaited<ReturnType<typeof node>> | undefined;

/** The chunks (b) fetched, fetched again straight from A, 8 in flight, nothing stored: the
 * protocol and A's serving without B's cache fill and read-back (pieces dropped on arrival). */
async function transportOnly(): Promise<number> {
  if (ranges.length > 0) return await transportRanges();
  const todo = requests.splice(0);
  const started = performance.now();
  let bytes = 0;
  const next = async () => {
    for (let request = todo.shift(); request; request = todo.shift()) {
      const n = await transport.getChunkInto(addresses.peer, request, () => {});
      bytes += n; // not `bytes += await`: that reads bytes before the wait and loses updates
    }
  };
  await Promise.all(Array.from({ length: 8 }, next));
  return bytes / ((performance.now() - started) / 1000) / 2 ** 20;
}

/** B with A as the owner of every chunk, through the fetch code a mount node uses. */
async function peerNode() {
  const b = await node();
  const source = peerThenBackend(b.data, transport, {
    owner: () => ({ id: "a", address: addresses.peer }),
  });
  b.data.source = {
    fetch: source.fetch,
    fetchInto: (ino, index, ref, sink) => {
      requests.push({ ino, index, ...ref, objectLength: ref.objectLength ?? 0 });
      return source.fetchInto!(ino, index, ref, sink);
    },
    readRange: source.readRange && ((ino, index, ref, offset, into, ahead) => {
      ranges.push({ ino, index, ref, offset, length: into.length, ahead });
      return source.readRange!(ino, index, ref, offset, into, ahead);
    }),
    endStream: source.endStream,
  };
  return b;
}

/** CPU ms per GiB moved, of B (this process) and A (the child), for each row measured so. */
const cpu: Record<string, { b: number[]; a: number[] }> = {};
async function withCpu(key: string, run: () => Promise<number>): Promise<number> {
  const [b0, a0] = [cpuNs("self"), cpuNs(child.pid)];
  const value = await run();
  const [b1, a1] = [cpuNs("self"), cpuNs(child.pid)];
  const perGiB = (ns: number) => ns / 1e6 / (SIZE / 2 ** 30);
  cpu[key] ??= { b: [], a: [] };
  cpu[key].b.push(perGiB(b1 - b0));
  cpu[key].a.push(perGiB(a1 - a0));
  return value;
}

const median = (xs: number[]) => [...xs].sort((p, q) => p - q)[Math.floor(xs.length / 2)];
const ROWS = {
  tcp: "loopback TCP (2 processes)",
  tcpFill: "(ref) loopback TCP + fill of a new file",
  tcpFile: "(ref) loopback TCP from A's cache file",
  aSeq: "(a) B local cache, seq 1 MiB",
  bSeq: "(b) A as peer, seq 1 MiB",
  b0: "(b0) peer transport alone",
  cSeq: "(c) backend (dir), seq 1 MiB",
  aRand: "(a) B local cache, random 1 MiB",
  bRand: "(b) A as peer, random 1 MiB",
  cRand: "(c) backend (dir), random 1 MiB",
  ext4: "ext4 page cache, seq 1 MiB",
  a4k: "(a) B local cache, random 4 KiB (reads/s)",
} as const;
const results = Object.fromEntries(Object.keys(ROWS).map((k) => [k, [] as number[]])) as Record<
  keyof typeof ROWS,
  number[]
>;
const drop = async (n: Awaited<ReturnType<typeof node>>) => {
  await n.vfs.destroy();
  await n.data.close();
  await Deno.remove(n.dir, { recursive: true });
};
for (let round = 0; round < ROUNDS; round++) {
  const tcp: number[] = [];
  for (let pass = 0; pass < 3; pass++) {
    tcp.push(await withCpu("tcp", () => loopbackTcp(addresses.tcp)));
  }
  results.tcp.push(median(tcp));
  results.tcpFill.push(await withCpu("tcpFill", () => loopbackTcp(addresses.tcp, `${dir}/fill`)));
  results.tcpFile.push(
    await withCpu("tcpFile", () => loopbackTcp(addresses.tcp, undefined, true)),
  );
  const bSeq = await peerNode();
  requestsNode = bSeq;
  results.bSeq.push(await withCpu("bSeq", () => readAll(bSeq.vfs, "seq")));
  if (round === 0) {
    const s = bSeq.data.stats;
    console.error(
      `(b) on B: ${s.peerReads} reads answered by A, ${s.peerFills} chunks, ${s.bytes} bytes stored`,
    );
  }
  results.b0.push(await withCpu("b0", () => transportOnly()));
  await drop(bSeq);
  if (values["peer-only"]) continue; // for profiling the peer path
  const bRand = await peerNode();
  results.bRand.push(await withCpu("bRand", () => readAll(bRand.vfs, "rand-1m")));
  requests.length = 0;
  ranges.length = 0;
  await drop(bRand);
  const cRand = await node();
  results.cRand.push(await withCpu("cRand", () => readAll(cRand.vfs, "rand-1m")));
  await drop(cRand);
  const c = await node();
  results.cSeq.push(await withCpu("cSeq", () => readAll(c.vfs, "seq")));
  // (a) and its ext4 reference alternate, 3 passes each, so both see the same machine load
  // (single passes minutes apart differed 2x on this shared machine).
  const ino = (await c.vfs.lookup(ctx, 1, name)).ino;
  const localPath = `${c.dir}/data/${(ino % 256).toString(16).padStart(2, "0")}/${
    ino.toString(16)
  }`;
  const local: number[] = [];
  const ext4: number[] = [];
  for (let pass = 0; pass < 3; pass++) {
    local.push(await readAll(c.vfs, "seq"));
    ext4.push(ext4PageCache(localPath));
  }
  results.aSeq.push(median(local));
  results.ext4.push(median(ext4));
  results.aRand.push(await readAll(c.vfs, "rand-1m"));
  results.a4k.push(await readAll(c.vfs, "rand-4k"));
  await drop(c);
}
const loadEnd = loadAverage();

const m = Object.fromEntries(Object.entries(results).map(([k, xs]) => [k, median(xs)])) as Record<
  keyof typeof ROWS,
  number
>;
console.log(
  `cluster read paths, ${MIB} MiB file, median of ${ROUNDS} rounds (MiB/s unless noted), ` +
    `load average ${loadStart.toFixed(1)} -> ${loadEnd.toFixed(1)}`,
);
for (const [key, label] of Object.entries(ROWS) as [keyof typeof ROWS, string][]) {
  if (results[key].length === 0) continue;
  let ratio = "";
  if (/^[bc]|tcpFill|tcpFile/.test(key)) ratio = `  ${(m[key] / m.tcp).toFixed(2)}x TCP`;
  if (key === "aSeq") ratio = `  ${(m.aSeq / m.ext4).toFixed(2)}x ext4 page cache`;
  const all = results[key].map((x) => x.toFixed(0)).join(" ");
  const c = cpu[key]
    ? `cpu ms/GiB B ${median(cpu[key].b).toFixed(0).padStart(4)} A ${
      median(cpu[key].a).toFixed(0).padStart(4)
    }`
    : "";
  console.log(
    `${label.padEnd(42)} ${m[key].toFixed(0).padStart(8)}${ratio.padEnd(26)} ${
      c.padEnd(26)
    } [${all}]`,
  );
}

if (values.json) {
  // For `deno task bench` (bench/cluster/family.ts): family "cluster", loopback TCP the baseline.
  const row = (job: string, target: string, value: number, unit = "MiB/s") => ({
    family: "cluster",
    job,
    target,
    unit,
    value,
    higherIsBetter: true,
    details: { mib: MIB, rounds: ROUNDS, loadStart, loadEnd },
  });
  const measurements = [
    row("cluster-seq-read-1m", "loopback-tcp", m.tcp),
    row("cluster-seq-read-1m", "local-cache", m.aSeq),
    row("cluster-seq-read-1m", "peer", m.bSeq),
    row("cluster-seq-read-1m", "peer-transport", m.b0),
    row("cluster-seq-read-1m", "tcp-plus-fill", m.tcpFill),
    row("cluster-seq-read-1m", "tcp-from-cache-file", m.tcpFile),
    row("cluster-seq-read-1m", "backend", m.cSeq),
    row("cluster-seq-read-1m", "ext4-page-cache", m.ext4),
    row("cluster-rand-read-1m", "loopback-tcp", m.tcp),
    row("cluster-rand-read-1m", "local-cache", m.aRand),
    row("cluster-rand-read-1m", "peer", m.bRand),
    row("cluster-rand-read-1m", "backend", m.cRand),
    row("cluster-rand-read-4k", "local-cache", m.a4k, "IOPS"),
  ];
  await Deno.writeTextFile(
    values.json,
    JSON.stringify({ baseline: "loopback-tcp", measurements }, null, 1),
  );
}

await childWriter.close();
await child.status;
transport.close();
await kv.close();
await backend.close();
await io.shutdown();
await Deno.remove(dir, { recursive: true });
