/**
 * `deno task cluster`: start a local cluster (three CURP metadata replicas, a directory backend,
 * three mounts; `--zones N` for nodes round-robin in zones z1..zN, each zone its own backend
 * directory; `--etcd` for one etcd member instead of the replicas, `--netns` for a network
 * namespace per mount; `--zones N --rtt-ms R [--bandwidth-mbit B]` for emulated distant zones:
 * every connection crossing zones, metadata, peer cache and another zone's backend, goes through a
 * delay proxy adding R ms per round trip) for a person to try, until Ctrl-C. `deno task cluster --smoke`: write on
 * each node, read on every other, exit 1 on any difference (0 when all match).
 * @module
 */

import { parseArgs } from "node:util";
import { join } from "node:path";
import { LocalCluster } from "./local_cluster.ts";
import { ConfigError, flagsOf, resolveConfig } from "../config/mod.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    smoke: { type: "boolean" },
    ...flagsOf("cluster"),
    config: { type: "string" },
    help: { type: "boolean" },
  },
});
if (values.help) {
  console.log(
    "Usage: deno task cluster [--smoke] [--nodes N] [--zones N] [--etcd | --netns] " +
      "[--rtt-ms R [--bandwidth-mbit B]] [--config FILE]\n" +
      "(--zones N: nodes round-robin in zones z1..zN, each zone its own backend directory;\n" +
      "--rtt-ms R: with --zones, R ms added to every round trip crossing zones (metadata, peers,\n" +
      "  backends), B Mbit/s per direction with --bandwidth-mbit;\n" +
      "--config FILE: [local_cluster] nodes, zones, rtt_ms, etcd, netns; `skyfs config cluster` shows them)",
  );
  Deno.exit(0);
}
let config;
try {
  config = resolveConfig("cluster", { flags: values });
} catch (error) {
  if (!(error instanceof ConfigError)) throw error;
  console.error(`skyfs: ${error.message}`);
  Deno.exit(2);
}
if (Deno.uid() !== 0) {
  console.error("deno task cluster mounts FUSE file systems: run it as root");
  Deno.exit(1);
}
const count = config.get("local_cluster.nodes")!;
const zones = config.get("local_cluster.zones")!;
const rttMs = config.get("local_cluster.rtt_ms")!;
if (
  rttMs > 0 && (zones < 2 || config.get("local_cluster.netns"))
) {
  console.error("skyfs: --rtt-ms needs --zones 2 or more (and not --netns)");
  Deno.exit(2);
}
const cluster = await LocalCluster.start("skyfs-cluster-", {
  nodes: count,
  zones: zones > 1 ? zones : undefined,
  meta: config.get("local_cluster.etcd") ? "etcd" : "curp",
  netns: config.get("local_cluster.netns"),
  rttMs: rttMs > 0 ? rttMs : undefined,
  bandwidthMbit: config.get("local_cluster.bandwidth_mbit") || undefined,
});

if (values.smoke) {
  let differences = 0;
  try {
    for (const writer of cluster.nodes) {
      const data = crypto.getRandomValues(new Uint8Array(65536));
      const big = new Uint8Array(6 << 20);
      for (let i = 0; i < big.length; i += 65536) {
        crypto.getRandomValues(big.subarray(i, i + 65536));
      }
      await Deno.writeFile(join(writer.mountpoint, `smoke-${writer.id}`), data);
      await Deno.writeFile(join(writer.mountpoint, `smoke-big-${writer.id}`), big);
      // Every node reads it, in every zone (another zone's store when the reader's lacks it).
      for (const reader of cluster.nodes) {
        for (
          const [name, want] of [[`smoke-${writer.id}`, data], [
            `smoke-big-${writer.id}`,
            big,
          ]] as const
        ) {
          const got = await Deno.readFile(join(reader.mountpoint, name)).catch((e) => e as Error);
          const ok = got instanceof Uint8Array && got.length === want.length &&
            got.every((x, i) => x === want[i]);
          if (!ok) differences++;
          console.log(
            `${ok ? "ok  " : "DIFF"} ${name}: written on ${writer.id}, read on ${reader.id}`,
          );
        }
      }
    }
  } finally {
    await cluster.stop();
  }
  console.log(differences === 0 ? "smoke: all reads match" : `smoke: ${differences} difference(s)`);
  Deno.exit(differences === 0 ? 0 : 1);
}

console.log(`skyfs cluster of ${count} nodes under ${cluster.dir}`);
if (zones > 1) {
  console.log(`  metadata: ${cluster.meta}`);
  console.log(
    rttMs > 0
      ? `  RTT between zones: ${rttMs} ms${
        cluster.bandwidthMbit ? `, ${cluster.bandwidthMbit} Mbit/s` : ""
      } (metadata, peer cache and backend connections through ${cluster.links.length} delay proxies)`
      : "  RTT between zones: none added (--rtt-ms R to emulate distant zones)",
  );
  for (let z = 1; z <= zones; z++) {
    const zone = `z${z}`;
    const nodes = cluster.nodes.filter((n) => n.zone === zone).map((n) => n.id).join(", ");
    const replicas = cluster.replicas.filter((r) => r.zone === zone).map((r) =>
      `${r.id} ${r.address}`
    ).join(", ");
    const served = cluster.zoneServers.get(zone);
    console.log(
      `  zone ${zone}: backend ${cluster.zoneBackend(zone)}${
        served ? ` (other zones: http://${served.address} through their proxies)` : ""
      }`,
    );
    console.log(`    nodes: ${nodes || "none"}   replicas: ${replicas || "none"}`);
    if (rttMs > 0) console.log(`    its mounts' --meta: ${cluster.metaFrom(zone)}`);
  }
} else {
  console.log(`  metadata: ${cluster.meta}   backend: ${cluster.backend}`);
}
for (const node of cluster.nodes) {
  const http = await cluster.httpUrl(node, 5000).catch(() => "no HTTP endpoint");
  const zone = node.zone ? ` (zone ${node.zone})` : "";
  console.log(`  node ${node.id}${zone}: ${node.mountpoint}   dashboard and /metrics: ${http}`);
}
console.log(`  status: deno run -A mod.ts status --meta ${cluster.meta}`);
if (cluster.replicas.length > 0) {
  const addresses = cluster.replicas.map((r) => r.address).join(",");
  console.log(`  replicas: deno run -A mod.ts meta status ${addresses}`);
}
console.log("Ctrl-C stops every node and removes the directory.");
const stop = async () => {
  await cluster.stop();
  Deno.exit(0);
};
Deno.addSignalListener("SIGINT", stop);
Deno.addSignalListener("SIGTERM", stop);
await new Promise(() => {});
