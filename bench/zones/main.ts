/**
 * The "zones" benchmark (issue 15 points 4 and 7): a `LocalCluster` of 3 zones (one node each,
 * every cross-zone connection through a delay proxy, `--rtt-ms`), metadata on CURP (a replica per
 * zone) and then on etcd (a member per zone, Raft traffic through the proxies; each mount talks to
 * its own zone's member). For the node in the metadata leader's zone and for one in another zone,
 * per operation: elapsed time in round trips (elapsed / RTT, median of `--ops`) and the round trips
 * counted by the proxies (request bursts answered, `DelayProxyStats.exchanges`: the most on any
 * one link during the operation; for CURP the node's own links to the other zones' replicas, for
 * etcd every member-to-member link, which also carry heartbeats every 100 ms). Then the first
 * read on another zone's node of a file written in one zone, as a fraction of the link's
 * bandwidth (`--bandwidth-mbit`). Reads by tier (same-zone peer, same-zone backend, remote peer,
 * remote backend) need chunk replication across zones (issue 15 points 2-3).
 *
 *   deno run -A bench/zones/main.ts [--rtt-ms 20] [--ops 5] [--mib 8] [--bandwidth-mbit 200]
 *     [--meta curp,etcd] [--json PATH]
 * @module
 */

import { parseArgs } from "node:util";
import { join } from "node:path";
import { LocalCluster, type LocalNode, type ZoneLink } from "../../src/cluster/local_cluster.ts";
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

const rows: Row[] = [];
const reads: { path: string; mbps: number; ratio: number; bytes: number }[] = [];
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
    if (system === SYSTEMS[0]) {
      // A file written in one zone, read first on a node of another zone: the owner's peer
      // route or the writer's zone's backend, through one emulated link.
      const data = crypto.getRandomValues(new Uint8Array(65536));
      const big = new Uint8Array(MIB * 2 ** 20);
      for (let i = 0; i < big.length; i += data.length) big.set(data, i);
      await Deno.writeFile(join(near.mountpoint, "big"), big);
      const before = await cluster.linkStats();
      const t0 = performance.now();
      const got = await Deno.readFile(join(far.mountpoint, "big"));
      const seconds = (performance.now() - t0) / 1000;
      if (got.length !== big.length) throw new Error(`read ${got.length} of ${big.length} bytes`);
      const after = await cluster.linkStats();
      const crossed = cluster.links.filter((l) => l.from === far.zone && l.kind !== "meta")
        .reduce((n, l) => n + after.get(l)!.bytesDown - before.get(l)!.bytesDown, 0);
      const mbps = big.length / seconds / 1e6;
      reads.push({ path: "cross-zone first read", mbps, ratio: mbps / (MBIT / 8), bytes: crossed });
    }
  } finally {
    await cluster.stop();
  }
}

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
for (const r of reads) {
  console.log(
    `${r.path}: ${r.mbps.toFixed(1)} MB/s = ${r.ratio.toFixed(2)} x the ${MBIT} Mbit/s link ` +
      `(${r.bytes} bytes crossed)`,
  );
}
console.log(
  "same-zone peer, same-zone backend, remote peer, remote backend: needs zone replication " +
    "(issue 15 points 2-3)",
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
  for (const r of reads) {
    measurements.push({
      family: "zones",
      job: r.path,
      target: SYSTEMS[0],
      unit: "x link",
      value: Number(r.ratio.toFixed(3)),
      higherIsBetter: true,
      details: { mbps: Number(r.mbps.toFixed(1)), linkMbit: MBIT, bytesCrossed: r.bytes },
    });
  }
  await Deno.writeTextFile(
    values.json,
    JSON.stringify({ baseline: SYSTEMS.includes("etcd") ? "etcd" : "curp", measurements }),
  );
}
