/**
 * What one CURP proposal costs on loopback: latency and CPU per proposal in each replica process
 * and in the client, counted from /proc (utime + stime of every thread, io-wq workers included
 * through the process's schedstat), so the figure hardly moves with the other load on the machine.
 * Each operation is shaped like a file create: one transaction with a compare and three puts of
 * namespace-sized values.
 *
 * Run: deno run -A bench/meta_wan/proposal_cost.ts [--ops 2000] [--clients 1] [--tick-ms 50]
 * @module
 */

import { parseArgs } from "node:util";
import { fileURLToPath } from "node:url";
import { openCurpKV } from "../../src/meta/curp/curp_kv.ts";
import { fetchStatus } from "../../src/meta/curp/server.ts";

const { values: args } = parseArgs({
  options: {
    ops: { type: "string", default: "2000" },
    clients: { type: "string", default: "1" },
    "v8-flags": { type: "string", default: "" },
    hold: { type: "boolean", default: false },
    // false: replicas answer proposals only after the fdatasync (curp.witness_ack_after_write).
    "ack-after-write": { type: "string", default: "true" },
    help: { type: "boolean", default: false },
  },
});
if (args.help) {
  console.log(
    "usage: deno run -A bench/meta_wan/proposal_cost.ts [--ops N] [--clients C] [--v8-flags F] [--hold] [--ack-after-write true|false]",
  );
  Deno.exit(0);
}
const ops = Number(args.ops);
const clients = Number(args.clients);
if (!Number.isSafeInteger(ops) || ops < 1 || !Number.isSafeInteger(clients) || clients < 1) {
  console.error("proposal_cost: --ops and --clients take positive integers");
  Deno.exit(2);
}

const HERE = fileURLToPath(new URL("./", import.meta.url));

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/** CPU seconds of a process so far: every thread's run time from /proc/PID/task/* /schedstat. */
function cpuSeconds(pid: number): number {
  let ns = 0;
  for (const t of Deno.readDirSync(`/proc/${pid}/task`)) {
    try {
      ns += Number(Deno.readTextFileSync(`/proc/${pid}/task/${t.name}/schedstat`).split(" ")[0]);
    } catch {
      // the thread ended
    }
  }
  return ns / 1e9;
}

const dir = await Deno.makeTempDir({ prefix: "skyfs-proposal-cost-" });
const ids = ["m1", "m2", "m3"];
const addresses = ids.map(() => `127.0.0.1:${freePort()}`);
const peers = ids.map((id, i) => `${id}=${addresses[i]}`).join(",");
const children = ids.map((id) =>
  new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      ...(args["v8-flags"] === "" ? [] : [`--v8-flags=${args["v8-flags"]}`]),
      `${HERE}replica_main.ts`,
      JSON.stringify({
        id,
        peers,
        dataDir: `${dir}/${id}`,
        witnessAckAfterWrite: args["ack-after-write"] !== "false",
      }),
    ],
    stdout: "inherit",
    stderr: "inherit",
  }).spawn()
);
try {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const states = await Promise.all(addresses.map((a) => fetchStatus(a).catch(() => undefined)));
    if (states.some((s) => s?.role === "leader")) break;
    if (Date.now() > deadline) throw new Error("proposal_cost: no CURP leader within 20 s");
    await new Promise((r) => setTimeout(r, 100));
  }
  const kvs = await Promise.all(
    Array.from({ length: clients }, () => openCurpKV(addresses, { log: () => {} })),
  );
  const enc = new TextEncoder();
  const value = new Uint8Array(120).fill(7);
  const run = async (c: number, n: number, latencies: number[]) => {
    const kv = kvs[c];
    for (let i = 0; i < n; i++) {
      const name = enc.encode(`e/1/c${c}-f${i}-${Math.random()}`);
      const t0 = performance.now();
      await kv.txn({
        compare: [{ key: name, target: "version", result: "==", value: 0 }],
        success: [
          { put: { key: name, value } },
          { put: { key: enc.encode(`i/c${c}-${i}-${Math.random()}`), value } },
          { put: { key: enc.encode(`o/c${c}-${i}-${Math.random()}`), value } },
        ],
        revisionsUnused: true,
      });
      latencies.push(performance.now() - t0);
    }
  };
  await run(0, Math.min(100, ops), []); // warm-up
  if (args.hold) {
    console.log(`replica pids: ${children.map((ch) => ch.pid).join(" ")}`);
    await new Promise((r) => setTimeout(r, 3000));
  }
  const before = children.map((ch) => cpuSeconds(ch.pid));
  const selfBefore = cpuSeconds(Deno.pid);
  const statusBefore = await Promise.all(addresses.map((a) => fetchStatus(a)));
  const latencies: number[] = [];
  const t0 = performance.now();
  const per = Math.ceil(ops / clients);
  await Promise.all(kvs.map((_, c) => run(c, per, latencies)));
  const seconds = (performance.now() - t0) / 1000;
  const after = children.map((ch) => cpuSeconds(ch.pid));
  const selfAfter = cpuSeconds(Deno.pid);
  const statusAfter = await Promise.all(addresses.map((a) => fetchStatus(a)));
  latencies.sort((a, b) => a - b);
  const n = latencies.length;
  const q = (p: number) => latencies[Math.min(n - 1, Math.floor(p * n))].toFixed(2);
  const fsyncs = statusAfter.reduce((s, x, i) => s + x.fsyncs - statusBefore[i].fsyncs, 0);
  const proposals = statusAfter.reduce(
    (s, x, i) => s + x.proposals - statusBefore[i].proposals,
    0,
  );
  console.log(
    `${n} txns, ${clients} client(s): ${(n / seconds).toFixed(0)}/s, p50 ${q(0.5)} ms, ` +
      `p90 ${q(0.9)} ms, p99 ${q(0.99)} ms; proposals led ${proposals}, fsyncs ${
        (fsyncs / n).toFixed(2)
      }/txn (all replicas); load ${Deno.loadavg()[0].toFixed(1)}`,
  );
  console.log(
    `CPU ms per txn: replicas ${
      ids.map((id, i) =>
        `${id}${statusAfter[i].role === "leader" ? "(leader)" : ""} ${
          ((after[i] - before[i]) * 1000 / n).toFixed(2)
        }`
      ).join(", ")
    }; client ${((selfAfter - selfBefore) * 1000 / n).toFixed(2)}`,
  );
  await Promise.all(kvs.map((kv) => kv.close()));
} finally {
  for (const ch of children) {
    try {
      ch.kill("SIGTERM");
    } catch {
      // gone
    }
  }
  await Promise.all(children.map((ch) => ch.status));
  await Deno.remove(dir, { recursive: true });
}
