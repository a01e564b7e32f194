/**
 * WAN benchmark for the CURP backend beside etcd 3.4 in the same run: replicas and etcd members
 * behind userspace TCP delay proxies (tc netem is not available here), Xline's published topology:
 * client-replica RTT 150 ms, node-node RTT 100 ms. Reports p50/p99 latency of non-conflicting puts
 * (distinct keys) on the fast path, with the fast path off, and of conflicting puts (one key);
 * throughput with 200 closed-loop clients (Xline published 1,238 ops/s, etcd 742); and loopback
 * throughput with 100 clients, CURP beside etcd. Replicas and etcd members are separate processes.
 *
 * Run: deno run -A bench/meta_wan/main.ts [--replicas 3] [--ops 40] [--clients 4]
 *        [--throughput-clients 200] [--seconds 8] [--loopback-clients 100] [--no-etcd] [--json F]
 * @module
 */

import { parseArgs } from "node:util";
import { fetchStatus } from "../../src/meta/curp/server.ts";
import { openCurpKV } from "../../src/meta/curp/curp_kv.ts";
import type { MetaKV } from "../../src/meta/kv.ts";
import { DelayProxy } from "../../src/cluster/delay_proxy.ts";

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/** Forward listenPort -> targetPort through a DelayProxy (src/cluster/delay_proxy.ts). */
function delayProxy(listenPort: number, targetPort: number, oneWayMs: number): () => void {
  const proxy = new DelayProxy({ port: listenPort, target: { port: targetPort }, oneWayMs });
  proxy.start();
  return () => void proxy.stop();
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))];
}

const { values } = parseArgs({
  args: Deno.args,
  options: {
    replicas: { type: "string", default: "3" },
    ops: { type: "string", default: "40" },
    clients: { type: "string", default: "4" },
    "throughput-clients": { type: "string", default: "200" },
    "loopback-clients": { type: "string", default: "100" },
    seconds: { type: "string", default: "8" },
    "no-etcd": { type: "boolean", default: false },
    json: { type: "string" },
  },
});
const size = Number(values.replicas);
const ops = Number(values.ops);
const clients = Number(values.clients);
const throughputClients = Number(values["throughput-clients"]);
const loopbackClients = Number(values["loopback-clients"]);
const seconds = Number(values.seconds);
const withEtcd = !values["no-etcd"] && exists("/usr/bin/etcd");
const NODE_ONE_WAY_MS = 50; // node-node RTT 100 ms: replicas send on their own links, one hop
const CLIENT_ONE_WAY_MS = 75; // client-replica RTT 150 ms: request and reply both cross it
const HERE = new URL(".", import.meta.url).pathname;

function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

interface Cluster {
  /** Where the client connects (through the client proxies on WAN). */
  clientEndpoints: Map<string, string>;
  leader(): Promise<string>;
  stop(): Promise<void>;
}

interface Topology {
  ids: string[];
  /** Where each member listens for peers, and for clients (etcd) / everything (CURP). */
  realPeer: Map<string, number>;
  realClient: Map<string, number>;
  /** What members advertise to each other, and the client's endpoints. */
  peerAddress: Map<string, number>;
  clientAddress: Map<string, number>;
  stops: Array<() => void>;
}

/** Ports and, on WAN, the delay proxies in front of them. CURP serves peers and clients on one
 * port, so its real peer and client ports are the same. */
function topology(count: number, wan: boolean, onePort: boolean): Topology {
  const ids = Array.from({ length: count }, (_, i) => String.fromCharCode(97 + i));
  const realPeer = new Map(ids.map((id) => [id, freePort()]));
  const realClient = onePort ? realPeer : new Map(ids.map((id) => [id, freePort()]));
  const peerAddress = wan ? new Map(ids.map((id) => [id, freePort()])) : realPeer;
  const clientAddress = wan ? new Map(ids.map((id) => [id, freePort()])) : realClient;
  const stops: Array<() => void> = [];
  if (wan) {
    for (const id of ids) {
      stops.push(delayProxy(peerAddress.get(id)!, realPeer.get(id)!, NODE_ONE_WAY_MS));
      stops.push(delayProxy(clientAddress.get(id)!, realClient.get(id)!, CLIENT_ONE_WAY_MS));
    }
  }
  return { ids, realPeer, realClient, peerAddress, clientAddress, stops };
}

async function waitFor<T>(what: string, f: () => Promise<T | undefined>, ms = 30_000): Promise<T> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    const v = await f().catch(() => undefined);
    if (v !== undefined) return v;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`Timed out after ${ms} ms waiting for ${what}`);
}

async function startCurp(count: number, wan: boolean, dir: string): Promise<Cluster> {
  const t = topology(count, wan, true);
  const peers = t.ids.map((id) => `${id}=127.0.0.1:${t.peerAddress.get(id)}`).join(",");
  const children = t.ids.map((id) =>
    new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        `${HERE}replica_main.ts`,
        JSON.stringify({
          id,
          peers,
          dataDir: `${dir}/curp-${wan ? "wan" : "loopback"}-${id}`,
          // Ticks of 100 ms on WAN: elections after 1-2 s, well above the 100 ms node RTT.
          tickMs: wan ? 100 : 50,
          listen: `127.0.0.1:${t.realPeer.get(id)}`,
        }),
      ],
      stdout: "null",
      stderr: "inherit",
    }).spawn()
  );
  const leader = () =>
    waitFor("a CURP leader ready for the fast path", async () => {
      for (const id of t.ids) {
        const s = await fetchStatus(`127.0.0.1:${t.realPeer.get(id)}`, 1000);
        if (s.role === "leader" && s.commitIndex > 0) return id;
      }
      return undefined;
    });
  await leader();
  return {
    clientEndpoints: new Map(t.ids.map((id) => [id, `127.0.0.1:${t.clientAddress.get(id)}`])),
    leader,
    stop: async () => {
      for (const c of children) {
        c.kill("SIGTERM");
        await c.status;
      }
      for (const s of t.stops) s();
    },
  };
}

async function startEtcd(count: number, wan: boolean, dir: string): Promise<Cluster> {
  const t = topology(count, wan, false);
  const initial = t.ids.map((id) => `${id}=http://127.0.0.1:${t.peerAddress.get(id)}`).join(",");
  const children = t.ids.map((id) =>
    new Deno.Command("/usr/bin/etcd", {
      args: [
        ...["--name", id, "--data-dir", `${dir}/etcd-${wan ? "wan" : "loopback"}-${id}`],
        ...["--listen-peer-urls", `http://127.0.0.1:${t.realPeer.get(id)}`],
        ...["--initial-advertise-peer-urls", `http://127.0.0.1:${t.peerAddress.get(id)}`],
        ...["--listen-client-urls", `http://127.0.0.1:${t.realClient.get(id)}`],
        ...["--advertise-client-urls", `http://127.0.0.1:${t.clientAddress.get(id)}`],
        ...["--initial-cluster", initial, "--initial-cluster-state", "new"],
        // etcd's tuning guide: heartbeat about the RTT, election timeout 10x it.
        ...(wan ? ["--heartbeat-interval", "100", "--election-timeout", "1000"] : []),
      ],
      stdout: "null",
      stderr: "null",
    }).spawn()
  );
  const leader = () =>
    waitFor("an etcd leader", async () => {
      const out = await new Deno.Command("/usr/bin/etcdctl", {
        args: [
          "--endpoints",
          t.ids.map((id) => `127.0.0.1:${t.realClient.get(id)}`).join(","),
          "endpoint",
          "status",
          "-w",
          "json",
        ],
        env: { ETCDCTL_API: "3" },
        stdout: "piped",
        stderr: "null",
      }).output();
      const list = JSON.parse(new TextDecoder().decode(out.stdout)) as {
        Endpoint: string;
        Status: { header: { member_id: number }; leader: number };
      }[];
      const found = list.find((e) => e.Status.header.member_id === e.Status.leader);
      if (found === undefined) return undefined;
      const port = Number(found.Endpoint.split(":").at(-1));
      return t.ids.find((id) => t.realClient.get(id) === port);
    });
  await leader();
  return {
    clientEndpoints: new Map(t.ids.map((id) => [id, `127.0.0.1:${t.clientAddress.get(id)}`])),
    leader,
    stop: async () => {
      for (const c of children) {
        c.kill("SIGTERM");
        await c.status;
      }
      for (const s of t.stops) s();
    },
  };
}

const encoder = new TextEncoder();

/** A MetaKV client: CURP's sends to every replica; etcd's to the leader only (no forwarding
 * hop, the fairest setting for etcd). */
async function openClient(
  kind: "curp" | "etcd",
  cluster: Cluster,
  fastPath: boolean,
  sessions: number,
): Promise<MetaKV> {
  if (kind === "etcd") {
    const { openEtcdKV } = await import("../../src/meta/etcd.ts");
    const leader = await cluster.leader();
    return await openEtcdKV([cluster.clientEndpoints.get(leader)!], { timeoutMs: 30_000 });
  }
  const endpoints = [...cluster.clientEndpoints.values()];
  return await openCurpKV(endpoints, {
    fastPath,
    tickMs: 100,
    maxSessions: sessions,
    timeoutMs: 30_000,
    routes: Object.fromEntries([...cluster.clientEndpoints]),
    log: () => {},
  });
}

interface Figures {
  p50: number;
  p99: number;
  opsPerSecond: number;
  fast?: number;
  slow?: number;
}

/** Closed loop: each client puts, waits, puts again, `perClient` times or until `untilMs`. */
async function load(
  kv: MetaKV,
  prefix: string,
  clientCount: number,
  stop: { perClient?: number; untilMs?: number },
  conflicting = false,
): Promise<Figures> {
  const latencies: number[] = [];
  const t0 = performance.now();
  await Promise.all(Array.from({ length: clientCount }, async (_, c) => {
    for (let i = 0;; i++) {
      if (stop.perClient !== undefined && i >= stop.perClient) break;
      if (stop.untilMs !== undefined && performance.now() - t0 >= stop.untilMs) break;
      const key = conflicting ? `${prefix}/hot` : `${prefix}/${c}/${i}`;
      const start = performance.now();
      await kv.put({ key: encoder.encode(key), value: encoder.encode("v") });
      latencies.push(performance.now() - start);
    }
  }));
  const elapsed = (performance.now() - t0) / 1000;
  latencies.sort((a, b) => a - b);
  const counts = kv as unknown as { fastCount?: number; slowCount?: number };
  return {
    p50: percentile(latencies, 0.5),
    p99: percentile(latencies, 0.99),
    opsPerSecond: latencies.length / elapsed,
    fast: counts.fastCount,
    slow: counts.slowCount,
  };
}

const rows: { system: string; network: string; workload: string; figures: Figures }[] = [];
function report(system: string, network: string, workload: string, figures: Figures): void {
  rows.push({ system, network, workload, figures });
  const paths = figures.fast !== undefined ? ` (fast ${figures.fast}, slow ${figures.slow})` : "";
  console.log(
    `${system.padEnd(5)} ${network.padEnd(8)} ${workload.padEnd(44)} p50 ${
      figures.p50.toFixed(0).padStart(4)
    } ms  p99 ${figures.p99.toFixed(0).padStart(4)} ms  ${
      figures.opsPerSecond.toFixed(0).padStart(5)
    } ops/s${paths}`,
  );
}

async function withKv<T>(kv: MetaKV, f: (kv: MetaKV) => Promise<T>): Promise<T> {
  try {
    return await f(kv);
  } finally {
    await kv.close();
  }
}

const dataRoot = await Deno.makeTempDir({ prefix: "curp3-wan-" });
console.log(
  `client-replica RTT ${2 * CLIENT_ONE_WAY_MS} ms, node-node RTT ${2 * NODE_ONE_WAY_MS} ms, ` +
    `${clients} closed-loop clients x ${Math.ceil(ops / clients)} puts for latency, ` +
    `${throughputClients} clients for ${seconds} s for throughput; loopback ${loopbackClients} clients`,
);
const perClient = Math.ceil(ops / clients);
const untilMs = seconds * 1000;
try {
  const curp = await startCurp(size, true, dataRoot);
  try {
    const n = `${size} replicas`;
    await withKv(await openClient("curp", curp, true, 16), async (kv) => {
      report(
        "curp",
        "wan",
        `${n}, non-conflicting, fast path`,
        await load(kv, "f", clients, { perClient }),
      );
    });
    await withKv(await openClient("curp", curp, false, 16), async (kv) => {
      report(
        "curp",
        "wan",
        `${n}, non-conflicting, fast path off`,
        await load(kv, "s", clients, { perClient }),
      );
    });
    await withKv(await openClient("curp", curp, true, 16), async (kv) => {
      report(
        "curp",
        "wan",
        `${n}, conflicting (one key), fast path`,
        await load(kv, "c", clients, { perClient }, true),
      );
    });
    await withKv(await openClient("curp", curp, true, throughputClients), async (kv) => {
      report(
        "curp",
        "wan",
        `${n}, ${throughputClients} clients, non-conflicting`,
        await load(kv, "t", throughputClients, { untilMs }),
      );
    });
  } finally {
    await curp.stop();
  }
  if (withEtcd && size === 3) {
    const etcd = await startEtcd(3, true, dataRoot);
    try {
      await withKv(await openClient("etcd", etcd, false, 0), async (kv) => {
        report(
          "etcd",
          "wan",
          "3 members, non-conflicting",
          await load(kv, "f", clients, { perClient }),
        );
        report(
          "etcd",
          "wan",
          "3 members, conflicting (one key)",
          await load(kv, "c", clients, { perClient }, true),
        );
        report(
          "etcd",
          "wan",
          `3 members, ${throughputClients} clients, non-conflicting`,
          await load(kv, "t", throughputClients, { untilMs }),
        );
      });
    } finally {
      await etcd.stop();
    }
  }
  if (loopbackClients > 0) {
    const curp = await startCurp(3, false, dataRoot);
    try {
      await withKv(await openClient("curp", curp, true, loopbackClients), async (kv) => {
        report(
          "curp",
          "loopback",
          `3 replicas, ${loopbackClients} clients, fast path`,
          await load(kv, "l", loopbackClients, { untilMs }),
        );
      });
      await withKv(await openClient("curp", curp, false, loopbackClients), async (kv) => {
        report(
          "curp",
          "loopback",
          `3 replicas, ${loopbackClients} clients, fast path off`,
          await load(kv, "m", loopbackClients, { untilMs }),
        );
      });
    } finally {
      await curp.stop();
    }
    if (withEtcd) {
      const etcd = await startEtcd(3, false, dataRoot);
      try {
        await withKv(await openClient("etcd", etcd, false, 0), async (kv) => {
          report(
            "etcd",
            "loopback",
            `3 members, ${loopbackClients} clients`,
            await load(kv, "l", loopbackClients, { untilMs }),
          );
        });
      } finally {
        await etcd.stop();
      }
    }
  }
} finally {
  await Deno.remove(dataRoot, { recursive: true }).catch(() => {});
}
const find = (system: string, network: string, start: string) =>
  rows.find((r) => r.system === system && r.network === network && r.workload.includes(start));
const curpFast = find("curp", "wan", "non-conflicting, fast path");
const etcdWrite = find("etcd", "wan", "non-conflicting");
if (curpFast && etcdWrite) {
  console.log(
    `CURP fast-path p50 / etcd p50 (non-conflicting, WAN): ${
      (curpFast.figures.p50 / etcdWrite.figures.p50).toFixed(2)
    }x (goal <= 0.65x)`,
  );
}
const curpTp = find("curp", "wan", "clients, non-conflicting");
if (curpTp) {
  console.log(
    `CURP ${throughputClients}-client throughput: ${
      curpTp.figures.opsPerSecond.toFixed(0)
    } ops/s ` +
      `(Xline published 1,238 ops/s, etcd 742, on their machines)`,
  );
}
if (values.json) {
  // The shape of bench/model.ts Measurement (as bench/io's JSON), so bench/main.ts can fold the
  // figures in as a "wan" family: one p50 job and one throughput job per row, etcd the baseline.
  const measurements = rows.flatMap((r) => {
    const slug = r.workload.replace(/[^a-z0-9]+/gi, "-").replace(/-$/, "").toLowerCase();
    const job = `wan-${r.network === "wan" ? "" : `${r.network}-`}${slug}`;
    const details = { p99Ms: r.figures.p99, fast: r.figures.fast ?? 0, slow: r.figures.slow ?? 0 };
    return [
      {
        family: "wan",
        job: `${job}-p50`,
        target: r.system,
        unit: "ms",
        value: r.figures.p50,
        higherIsBetter: false,
        details,
      },
      {
        family: "wan",
        job: `${job}-rate`,
        target: r.system,
        unit: "ops/s",
        value: r.figures.opsPerSecond,
        higherIsBetter: true,
        details,
      },
    ];
  });
  await Deno.writeTextFile(
    values.json,
    JSON.stringify({ baseline: "etcd", when: new Date().toISOString(), measurements }, null, 2),
  );
}
Deno.exit(0);
