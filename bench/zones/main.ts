/**
 * The "zones" benchmark (issue 15 points 4 and 7): a `LocalCluster` of 3 zones (one node each,
 * every cross-zone connection through a delay proxy, `--rtt-ms`), metadata on CURP (a replica per
 * zone) and then on etcd (a member per zone, Raft traffic through the proxies; each mount talks to
 * its own zone's member). For the node in the metadata leader's zone and for one in another zone,
 * per operation: elapsed time in round trips (elapsed / RTT, median of `--ops`) and the round trips
 * counted by the proxies (request bursts answered, `DelayProxyStats.exchanges`: the most on any
 * one link during the operation; for CURP the node's own links to the other zones' replicas, for
 * etcd every member-to-member link, which also carry heartbeats every 100 ms).
 *
 * Then read throughput by tier (issue 15 points 2, 3, 7), on a cluster of 2 zones (z1: a, c;
 * z2: b, d; the first `--meta` system; same links), `--mib` MiB of one-chunk files per tier, all
 * read in z2, each file by the node its tier needs:
 * - same-zone backend: files written on a and copied to z2's store by z1's replication queue
 *   (zone_replicas 2, waited for), the store's files' pages dropped (fadvise), each read by its
 *   owner on z2's ring (no peer of its zone to ask);
 * - same-zone peer: the same files read next by the other z2 node (the owner holds them);
 * - remote peer: files written on c restarted with zone_replicas 1 (z2's store lacks them), read
 *   by their z2 owners: z1's owner sends them over the link;
 * - remote backend: more such files, read once a and c have stopped (no peer holds them): z1's
 *   store over the link.
 * Each read is checked against `skyfs_read_bytes_total{tier}` of z2's nodes (every byte from that
 * tier, nothing else read in z2; the bench fails otherwise) and timed from the first read call
 * to the last byte (the open, with its metadata round trips, is not timed); the first byte's wait
 * (a first read(2) of 4 KiB, median per file) is printed too; the bytes are compared with what
 * was written. Files are read one at a time, so a remote read uses one connection (the proxies
 * limit each connection's direction to `--bandwidth-mbit`, not the link as a whole).
 * Remote tiers are reported as a fraction of that bandwidth; same-zone tiers as a fraction of a
 * cold local read (the same objects read straight from z2's store directory after fadvise
 * DONTNEED).
 *
 *   deno run -A bench/zones/main.ts [--rtt-ms 20] [--ops 5] [--mib 8] [--bandwidth-mbit 200]
 *     [--meta curp,etcd] [--json PATH]
 * @module
 */

import { parseArgs } from "node:util";
import { join } from "node:path";
import { LocalCluster, type LocalNode, type ZoneLink } from "../../src/cluster/local_cluster.ts";
import { listNodes, Ring } from "../../src/cluster/membership.ts";
import { CHUNK_SIZE, decodeChunkMap } from "../../src/cache/chunk_map.ts";
import { openMetaBackend } from "../../src/meta/backend.ts";
import { prefixEnd } from "../../src/meta/kv.ts";
import { keys } from "../../src/meta/namespace.ts";
import { parseMetricsText } from "../../src/http/metrics_text.ts";
import type { Measurement } from "../model.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    "rtt-ms": { type: "string", default: "20" },
    ops: { type: "string", default: "5" },
    mib: { type: "string", default: "8" },
    "bandwidth-mbit": { type: "string", default: "200" },
    meta: { type: "string", default: "curp,etcd" },
    json: { type: "string" },
  },
});
const RTT = Number(values["rtt-ms"]);
const OPS = Number(values.ops);
const MIB = Number(values.mib);
const MBIT = Number(values["bandwidth-mbit"]);
const SYSTEMS = values.meta!.split(",") as ("curp" | "etcd")[];
for (const [name, n] of [["--rtt-ms", RTT], ["--ops", OPS], ["--mib", MIB]] as const) {
  if (!Number.isInteger(n) || n < 1) {
    console.error(`bench/zones: ${name} must be a whole number >= 1`);
    Deno.exit(2);
  }
}
if (SYSTEMS.some((s) => s !== "curp" && s !== "etcd")) {
  console.error(`bench/zones: --meta takes curp, etcd or both, not "${values.meta}"`);
  Deno.exit(2);
}

const OPERATIONS = ["open", "create", "close+publish", "rename", "unlink"] as const;
type Op = typeof OPERATIONS[number];

interface Row {
  system: string;
  role: "leader zone" | "other zone";
  op: Op;
  rtts: number;
  exchanges: number;
  ms: number;
}

/** A python3 process doing one POSIX call per command (so a close is its own close(2): Deno's
 * FsFile.close returns before the kernel's FLUSH runs). Answers each line with the call's ms. */
const DRIVER = `
import os, sys, time
fds = {}
for line in sys.stdin:
    op, *args = line.split()
    t = time.perf_counter()
    if op == "open": fds[args[0]] = os.open(args[0], os.O_RDONLY)
    elif op == "create": fds[args[0]] = os.open(args[0], os.O_CREAT | os.O_WRONLY, 0o644)
    elif op == "close": os.close(fds.pop(args[0]))
    elif op == "rename": os.rename(args[0], args[1])
    elif op == "unlink": os.unlink(args[0])
    ms = (time.perf_counter() - t) * 1000
    if op == "create": os.write(fds[args[0]], b"x")
    if op == "open": os.close(fds.pop(args[0]))
    print(ms, flush=True)
`;

class Driver {
  readonly #child = new Deno.Command("python3", {
    args: ["-u", "-c", DRIVER],
    stdin: "piped",
    stdout: "piped",
  }).spawn();
  readonly #writer = this.#child.stdin.getWriter();
  readonly #lines = this.#child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  #buffer = "";

  async run(...command: string[]): Promise<number> {
    await this.#writer.write(new TextEncoder().encode(command.join(" ") + "\n"));
    while (!this.#buffer.includes("\n")) {
      const { value, done } = await this.#lines.read();
      if (done) throw new Error(`the python driver exited during ${command.join(" ")}`);
      this.#buffer += value;
    }
    const at = this.#buffer.indexOf("\n");
    const line = this.#buffer.slice(0, at);
    this.#buffer = this.#buffer.slice(at + 1);
    return Number(line);
  }

  async close(): Promise<void> {
    await this.#writer.close();
    await this.#child.status;
  }
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

async function measure(
  cluster: LocalCluster,
  system: string,
  node: LocalNode,
  helper: LocalNode,
  role: Row["role"],
): Promise<Row[]> {
  const counted: ZoneLink[] = cluster.links.filter((l) =>
    l.kind === "meta" && (system === "etcd" || l.from === node.zone)
  );
  const exchanges = async () => {
    const stats = await cluster.linkStats();
    return new Map(counted.map((l) => [l, stats.get(l)!.exchanges]));
  };
  const samples = new Map<Op, { ms: number; x: number }[]>(OPERATIONS.map((o) => [o, []]));
  const driver = new Driver();
  const timed = async (op: Op, ...command: string[]) => {
    const before = await exchanges();
    const ms = await driver.run(...command);
    const after = await exchanges();
    const x = Math.max(0, ...counted.map((l) => after.get(l)! - before.get(l)!));
    samples.get(op)!.push({ ms, x });
  };
  const dir = join(node.mountpoint, `bench-${role.replace(" ", "-")}`);
  await Deno.mkdir(dir);
  // Files written by another node, for the close-to-open check of `open`.
  const shared = join(helper.mountpoint, `bench-${role.replace(" ", "-")}`);
  for (let t = 0; t < 200; t++) {
    if (await Deno.stat(shared).then(() => true, () => false)) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  for (let i = 0; i < OPS; i++) await Deno.writeTextFile(join(shared, `o${i}`), "x");
  for (let i = 0; i < OPS; i++) {
    const path = join(dir, `o${i}`);
    for (let t = 0; t < 200; t++) {
      if (await Deno.stat(path).then(() => true, () => false)) break;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  for (let i = 0; i < OPS; i++) {
    await timed("open", "open", join(dir, `o${i}`));
    const path = join(dir, `f${i}`);
    await timed("create", "create", path);
    await timed("close+publish", "close", path);
    await timed("rename", "rename", path, `${path}.r`);
    await timed("unlink", "unlink", `${path}.r`);
  }
  await driver.close();
  return OPERATIONS.map((op) => {
    const s = samples.get(op)!;
    const ms = median(s.map((x) => x.ms));
    return { system, role, op, ms, rtts: ms / RTT, exchanges: median(s.map((x) => x.x)) };
  });
}

// ---- Read throughput by tier (issue 15 points 2, 3, 7) ----

/** A python3 process for the cold local reference and for cooling the zone store's files:
 * fdatasync + POSIX_FADV_DONTNEED drops one file's pages (no machine-wide drop_caches). */
const COOL = `
import os, sys, time
read = sys.argv[1] == "read"
total, t = 0, 0.0
for path in sys.argv[2:]:
    fd = os.open(path, os.O_RDONLY)
    os.fdatasync(fd)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    if read:
        t0 = time.perf_counter()
        while True:
            b = os.read(fd, 1 << 20)
            if not b: break
            total += len(b)
        t += time.perf_counter() - t0
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)
print(total, t)
`;

async function cool(mode: "read" | "drop", paths: string[]): Promise<{ bytes: number; s: number }> {
  const out = await new Deno.Command("python3", { args: ["-c", COOL, mode, ...paths] }).output();
  if (!out.success) {
    throw new Error(`bench/zones: python3 fadvise failed: ${new TextDecoder().decode(out.stderr)}`);
  }
  const [bytes, s] = new TextDecoder().decode(out.stdout).trim().split(" ").map(Number);
  return { bytes, s };
}

const TIERS = ["peer_zone", "backend_zone", "peer_remote", "backend_remote"] as const;
type Tier = typeof TIERS[number];
const TIER_NAMES: Record<Tier, string> = {
  peer_zone: "same-zone peer",
  backend_zone: "same-zone backend",
  peer_remote: "remote peer",
  backend_remote: "remote backend",
};

interface TierRow {
  tier: Tier | "local";
  bytes: number;
  seconds: number;
  mbps: number;
  /** Of the link (remote tiers) or of the cold local read (same-zone tiers); 1 for local. */
  ratio: number;
  /** Median time to a file's first 4 KiB, ms; 0 for local. */
  firstMs: number;
}

/** `skyfs_read_bytes_total` of these nodes, by tier (absent = 0). */
async function tierCounters(
  cluster: LocalCluster,
  nodes: LocalNode[],
): Promise<Map<string, Record<Tier, number>>> {
  const out = new Map<string, Record<Tier, number>>();
  await Promise.all(nodes.map(async (node) => {
    const text = await (await fetch(`${await cluster.httpUrl(node)}/metrics`)).text();
    const counts = Object.fromEntries(TIERS.map((t) => [t, 0])) as Record<Tier, number>;
    for (const s of parseMetricsText(text)) {
      if (s.name === "skyfs_read_bytes_total" && TIERS.includes(s.labels.tier as Tier)) {
        counts[s.labels.tier as Tier] = s.value;
      }
    }
    out.set(node.id, counts);
  }));
  return out;
}

/** What each bench file holds, to check the reads. */
const written = new Map<string, Uint8Array>();

/** One-chunk files (a chunk is 4 MiB) making up `mib` MiB, written on `writer`. */
async function writeFiles(writer: LocalNode, name: string, mib: number): Promise<string[]> {
  const names: string[] = [];
  for (let left = mib * 2 ** 20, i = 0; left > 0; i++) {
    const size = Math.min(left, CHUNK_SIZE);
    const data = random(size);
    await Deno.writeFile(join(writer.mountpoint, `${name}${i}`), data);
    written.set(`${name}${i}`, data);
    names.push(`${name}${i}`);
    left -= size;
  }
  return names;
}

function random(size: number): Uint8Array {
  const out = new Uint8Array(size);
  for (let i = 0; i < size; i += 65536) crypto.getRandomValues(out.subarray(i, i + 65536));
  return out;
}

/**
 * Reads each file once on the node `readerOf(file)` names, timing the reads alone, and checks
 * from the tier counters that every byte came from `tier` on the readers and that no other node
 * of the readers' zone read anything.
 */
async function readFromTier(
  cluster: LocalCluster,
  running: LocalNode[],
  files: string[],
  readerOf: (file: string) => LocalNode,
  tier: Tier,
): Promise<TierRow> {
  const before = await tierCounters(cluster, running);
  let seconds = 0;
  let bytes = 0;
  const firstMs: number[] = [];
  const expected = new Map<string, number>();
  for (const file of files) {
    const reader = readerOf(file);
    // Opened first: the open's close-to-open check (metadata, WAN round trips) is not timed.
    using handle = await Deno.open(join(reader.mountpoint, file));
    const size = (await handle.stat()).size;
    const buffer = new Uint8Array(size);
    const t0 = performance.now();
    for (let at = 0; at < size;) {
      // A first read of 4 KiB (one read(2) of the whole buffer would return with its last byte).
      const n = await handle.read(buffer.subarray(at, at === 0 ? 4096 : size));
      if (n === null) throw new Error(`bench/zones: ${file} ended at ${at} of ${size} bytes`);
      if (at === 0) firstMs.push(performance.now() - t0);
      at += n;
    }
    seconds += (performance.now() - t0) / 1000;
    const want = written.get(file)!;
    if (size !== want.length || buffer.some((x, i) => x !== want[i])) {
      throw new Error(`bench/zones: ${file} read on ${reader.id} differs from what was written`);
    }
    bytes += size;
    expected.set(reader.id, (expected.get(reader.id) ?? 0) + size);
  }
  const after = await tierCounters(cluster, running);
  const zone = readerOf(files[0]).zone;
  for (const node of running.filter((n) => n.zone === zone)) {
    for (const t of TIERS) {
      const delta = after.get(node.id)![t] - before.get(node.id)![t];
      const want = t === tier ? expected.get(node.id) ?? 0 : 0;
      if (delta !== want) {
        throw new Error(
          `bench/zones: ${TIER_NAMES[tier]} read: node ${node.id} (${node.zone}) read ${delta} ` +
            `bytes from tier ${t}, expected ${want}; the read did not come from ${tier}`,
        );
      }
    }
  }
  return { tier, bytes, seconds, mbps: bytes / seconds / 1e6, ratio: 0, firstMs: median(firstMs) };
}

async function measureTiers(meta: "curp" | "etcd"): Promise<TierRow[]> {
  // z1: a, c; z2: b, d. The reads are in z2.
  const cluster = await LocalCluster.start("skyfs-bench-zones-tiers-", {
    nodes: 4,
    zones: 2,
    rttMs: RTT,
    bandwidthMbit: MBIT,
    meta,
  });
  const kv = await openMetaBackend(cluster.meta, { dataDir: cluster.dir });
  try {
    const [a, b, c, d] = cluster.nodes;
    const ring = new Ring(
      cluster.nodes.map((n) => ({ id: n.id, zone: n.zone, address: "", startedMs: 0 })),
    );
    const inoOf = async (file: string) => (await Deno.stat(join(a.mountpoint, file))).ino!;
    const owners = new Map<string, LocalNode>();
    const z2Owner = async (file: string) => {
      const id = ring.ownerIn(`${await inoOf(file)}/0`, "z2")!.id;
      owners.set(file, cluster.nodes.find((n) => n.id === id)!);
    };
    const ownerOf = (file: string) => owners.get(file)!;
    const otherOf = (file: string) => owners.get(file) === b ? d : b;
    const queued = async () => {
      const prefix = new TextEncoder().encode("cl/repl/z1/");
      return (await kv.range({ key: prefix, rangeEnd: prefixEnd(prefix), keysOnly: true })).kvs
        .length;
    };

    // Written on a (z1), copied to z2's store by z1's replication queue (zone_replicas 2).
    const placed = await writeFiles(a, "placed", MIB);
    for (let t = 0; await queued() > 0; t++) {
      if (t > 600) throw new Error("bench/zones: z1's replication queue did not drain in 60 s");
      await new Promise((r) => setTimeout(r, 100));
    }
    const objects: string[] = [];
    for (const file of placed) {
      await z2Owner(file);
      const ino = await inoOf(file);
      const found = await kv.range({ key: keys.chunkMap(ino) });
      for (const [index, ref] of decodeChunkMap(found.kvs[0].value)) {
        objects.push(
          join(cluster.zoneBackend("z2"), "o", "c", ino.toString(16), `${index}`, ref.version),
        );
      }
    }
    // The reference: the same objects read straight from z2's store directory, cold.
    const local = await cool("read", objects);
    const localRow: TierRow = {
      tier: "local",
      bytes: local.bytes,
      seconds: local.s,
      mbps: local.bytes / local.s / 1e6,
      ratio: 1,
      firstMs: 0,
    };
    await cool("drop", objects);
    const running = [b, d];
    // Cold everywhere in z2: each file read by its owner on z2's ring (no peer to ask).
    const backendZone = await readFromTier(cluster, running, placed, ownerOf, "backend_zone");
    // The other z2 node next: the owner holds it.
    const peerZone = await readFromTier(cluster, running, placed, otherOf, "peer_zone");

    // c restarted with zone_replicas 1: its files stay in z1's store alone.
    await cluster.stopNode(c);
    c.env = { SKYFS_ZONE_REPLICAS: "1" };
    await cluster.startNode(c);
    const single = await writeFiles(c, "single", MIB);
    const alone = await writeFiles(c, "alone", MIB);
    for (const file of [...single, ...alone]) await z2Owner(file);
    // Read by their z2 owners: z2's store lacks them, z1's owner peer sends them.
    const peerRemote = await readFromTier(cluster, running, single, ownerOf, "peer_remote");
    // No node left in z1: z1's store, over the link.
    await cluster.stopNode(a);
    await cluster.stopNode(c);
    for (let t = 0; (await listNodes(kv)).some((n) => n.zone === "z1"); t++) {
      if (t > 300) throw new Error("bench/zones: z1's nodes still listed 30 s after they stopped");
      await new Promise((r) => setTimeout(r, 100));
    }
    const backendRemote = await readFromTier(cluster, [b, d], alone, ownerOf, "backend_remote");

    const link = MBIT / 8;
    for (const r of [backendZone, peerZone]) r.ratio = r.mbps / localRow.mbps;
    for (const r of [peerRemote, backendRemote]) r.ratio = r.mbps / link;
    return [peerZone, backendZone, peerRemote, backendRemote, localRow];
  } finally {
    await kv.close();
    await cluster.stop();
  }
}

const rows: Row[] = [];
const load = () => Deno.loadavg().map((x) => x.toFixed(1)).join(" ");
console.log(`bench/zones: RTT ${RTT} ms, ${OPS} ops each, load ${load()}`);
for (const system of SYSTEMS) {
  const cluster = await LocalCluster.start("skyfs-bench-zones-", {
    nodes: 3,
    zones: 3,
    rttMs: RTT,
    bandwidthMbit: MBIT,
    meta: system,
  });
  try {
    const leaderZone = system === "curp"
      ? (await cluster.metaLeader()).zone!
      : await cluster.etcdLeaderZone();
    const near = cluster.nodes.find((n) => n.zone === leaderZone)!;
    const [far, helper] = cluster.nodes.filter((n) => n !== near);
    rows.push(...await measure(cluster, system, near, helper, "leader zone"));
    rows.push(...await measure(cluster, system, far, helper, "other zone"));
  } finally {
    await cluster.stop();
  }
}

const tierRows = await measureTiers(SYSTEMS[0]);

console.log(`\n| metadata | node in | ${OPERATIONS.join(" | ")} |`);
console.log(`| --- | --- | ${OPERATIONS.map(() => "---:").join(" | ")} |`);
for (const system of SYSTEMS) {
  for (const role of ["leader zone", "other zone"] as const) {
    const cells = OPERATIONS.map((op) => {
      const r = rows.find((x) => x.system === system && x.role === role && x.op === op)!;
      // etcd's Raft streams carry each direction on its own connection: nothing to count.
      return `${r.rtts.toFixed(1)} (${system === "etcd" ? "-" : r.exchanges})`;
    });
    console.log(`| ${system} | ${role} | ${cells.join(" | ")} |`);
  }
}
console.log(
  `\nround trips: elapsed / ${RTT} ms RTT, median of ${OPS}; (n) = round trips counted by the ` +
    `proxies (most request bursts on one link; CURP only: etcd's Raft streams send each ` +
    `direction on its own connection).`,
);
console.log(
  `\n| read from (${
    SYSTEMS[0]
  }, ${MIB} MiB each) | MB/s | ratio | of | first byte |\n| --- | ---: | ---: | --- | ---: |`,
);
for (const r of tierRows) {
  const of = r.tier === "local"
    ? "(the reference)"
    : r.tier.endsWith("_remote")
    ? `the ${MBIT} Mbit/s link`
    : "a cold local read";
  const name = r.tier === "local" ? "cold local read (z2's store files)" : TIER_NAMES[r.tier];
  const first = r.tier === "local" ? "-" : `${r.firstMs.toFixed(0)} ms`;
  console.log(`| ${name} | ${r.mbps.toFixed(1)} | ${r.ratio.toFixed(2)} | ${of} | ${first} |`);
}
console.log(
  `tiers: each verified from skyfs_read_bytes_total{tier} (every byte from that tier, nothing ` +
    `else read in the reader's zone) and its bytes compared; one-chunk files, each read once, ` +
    `timed from the first read to the last byte (not the open); first byte: median per file, ` +
    `a first read(2) of 4 KiB.`,
);
console.log(`load at the end ${load()}`);

if (values.json) {
  const measurements: Measurement[] = rows.map((r) => ({
    family: "zones",
    job: `${r.op} from ${r.role}`,
    target: r.system,
    unit: "RTTs",
    value: Number(r.rtts.toFixed(2)),
    higherIsBetter: false,
    details: { ms: Number(r.ms.toFixed(1)), proxyRoundTrips: r.exchanges, rttMs: RTT },
  }));
  for (const r of tierRows) {
    if (r.tier === "local") continue;
    const remote = r.tier.endsWith("_remote");
    measurements.push({
      family: "zones",
      job: `read from ${TIER_NAMES[r.tier]}`,
      target: SYSTEMS[0],
      unit: remote ? "x link" : "x cold local read",
      value: Number(r.ratio.toFixed(3)),
      higherIsBetter: true,
      details: {
        mbps: Number(r.mbps.toFixed(1)),
        bytes: r.bytes,
        firstByteMs: Number(r.firstMs.toFixed(1)),
        ...(remote ? { linkMbit: MBIT } : { localMbps: Number(tierRows.at(-1)!.mbps.toFixed(1)) }),
      },
    });
  }
  await Deno.writeTextFile(
    values.json,
    JSON.stringify({ baseline: SYSTEMS.includes("etcd") ? "etcd" : "curp", measurements }),
  );
}
