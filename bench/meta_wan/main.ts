/**
 * WAN benchmark for the CURP backend: replicas behind userspace TCP delay proxies (tc netem is not
 * available here), Xline's published topology: client-leader RTT 150 ms, node-node RTT 100 ms.
 * Reports p50/p99 latency of non-conflicting puts (distinct keys) on the fast path and with
 * fast path off (wait for the commit), and of conflicting puts (one key), with closed-loop clients.
 *
 * Run: deno run -A bench/meta_wan/main.ts [--replicas 3] [--ops 40] [--clients 4]
 * @module
 */

import { parseArgs } from "node:util";
import { ReplicaServer } from "../../src/meta/curp/server.ts";
import { openCurpKV } from "../../src/meta/curp/curp_kv.ts";

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/** Forward listenPort -> targetPort, delaying each chunk by oneWayMs in each direction (order
 * kept: a chunk is written no earlier than the one before it). */
function delayProxy(listenPort: number, targetPort: number, oneWayMs: number): () => void {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: listenPort });
  const conns: Deno.Conn[] = [];
  const pipe = async (from: Deno.Conn, to: Deno.Conn) => {
    const buf = new Uint8Array(256 * 1024);
    let last = Promise.resolve();
    try {
      while (true) {
        const n = await from.read(buf);
        if (n === null) break;
        const chunk = buf.slice(0, n);
        const due = performance.now() + oneWayMs;
        const previous = last;
        last = (async () => {
          await previous;
          const wait = due - performance.now();
          if (wait > 0) await new Promise((r) => setTimeout(r, wait));
          let at = 0;
          while (at < chunk.length) at += await to.write(chunk.subarray(at));
        })().catch(() => {});
      }
    } catch { /* closed */ }
    await last;
    try {
      to.close();
    } catch { /* closed */ }
  };
  void (async () => {
    try {
      for await (const c of listener) {
        const t = await Deno.connect({ hostname: "127.0.0.1", port: targetPort });
        (c as Deno.TcpConn).setNoDelay(true);
        t.setNoDelay(true);
        conns.push(c, t);
        void pipe(c, t);
        void pipe(t, c);
      }
    } catch { /* closed */ }
  })();
  return () => {
    listener.close();
    for (const c of conns) {
      try {
        c.close();
      } catch { /* closed */ }
    }
  };
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
  },
});
const size = Number(values.replicas);
const ops = Number(values.ops);
const clients = Number(values.clients);
const NODE_ONE_WAY_MS = 50; // node-node RTT 100 ms: replicas send on their own links, one hop
const CLIENT_ONE_WAY_MS = 75; // client-replica RTT 150 ms: request and reply both cross it

const ids = Array.from({ length: size }, (_, i) => String.fromCharCode(97 + i));
const real = new Map(ids.map((id) => [id, freePort()]));
const peerProxy = new Map(ids.map((id) => [id, freePort()]));
const clientProxy = new Map(ids.map((id) => [id, freePort()]));
const stops: Array<() => void> = [];
for (const id of ids) {
  stops.push(delayProxy(peerProxy.get(id)!, real.get(id)!, NODE_ONE_WAY_MS));
  stops.push(delayProxy(clientProxy.get(id)!, real.get(id)!, CLIENT_ONE_WAY_MS));
}
const peers = ids.map((id) => `${id}=127.0.0.1:${peerProxy.get(id)}`).join(",");
const dataRoot = await Deno.makeTempDir({ prefix: "curp2-wan-" });
// Ticks of 100 ms: elections after 1-2 s, well above the 100 ms node RTT.
const servers = ids.map((id) =>
  ReplicaServer.start({
    id,
    peers,
    dataDir: `${dataRoot}/${id}`,
    tickMs: 100,
    listen: `127.0.0.1:${real.get(id)}`,
    log: () => {},
  })
);
while (!servers.some((s) => s.replica.role === "leader" && s.replica.fastPathReady)) {
  await new Promise((r) => setTimeout(r, 100));
}

const encoder = new TextEncoder();
async function measure(name: string, fastPath: boolean, conflicting: boolean) {
  // The client learns members from a status call; it must then reach them through client proxies.
  const kv = await openCurpKV([`127.0.0.1:${clientProxy.get(ids[0])}`], {
    fastPath,
    tickMs: 100,
    routes: Object.fromEntries(ids.map((id) => [id, `127.0.0.1:${clientProxy.get(id)}`])),
  });
  const latencies: number[] = [];
  const t0 = performance.now();
  await Promise.all(Array.from({ length: clients }, async (_, c) => {
    for (let i = 0; i < ops / clients; i++) {
      const key = conflicting ? "hot" : `${name}/${c}/${i}`;
      const start = performance.now();
      await kv.put({ key: encoder.encode(key), value: encoder.encode("v") });
      latencies.push(performance.now() - start);
    }
  }));
  const seconds = (performance.now() - t0) / 1000;
  latencies.sort((a, b) => a - b);
  console.log(
    `${name.padEnd(34)} p50 ${percentile(latencies, 0.5).toFixed(0).padStart(4)} ms  p99 ${
      percentile(latencies, 0.99).toFixed(0).padStart(4)
    } ms  ${
      (latencies.length / seconds).toFixed(1)
    } ops/s  (fast ${kv.fastCount}, slow ${kv.slowCount})`,
  );
  await kv.close();
}

console.log(
  `CURP, ${size} replicas, client-replica RTT ${2 * CLIENT_ONE_WAY_MS} ms, node-node RTT ${
    2 * NODE_ONE_WAY_MS
  } ms, ${clients} closed-loop clients, ${ops} puts each case`,
);
await measure("non-conflicting, fast path", true, false);
await measure("non-conflicting, fast path off", false, false);
await measure("conflicting (one key), fast path", true, true);
for (const s of servers) s.close();
for (const stop of stops) stop();
await Deno.remove(dataRoot, { recursive: true });
Deno.exit(0);
