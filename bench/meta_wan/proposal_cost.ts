/**
 * What one CURP proposal costs on loopback: latency and CPU per proposal in each replica process
 * and in the client, counted from /proc (utime + stime of every thread, io-wq workers included
 * through the process's schedstat), so the figure hardly moves with the other load on the machine.
 * Each operation is shaped like a file create: one transaction with a compare and three puts of
 * namespace-sized values.
 *
 * Run: deno run -A bench/meta_wan/proposal_cost.ts [--ops 2000] [--clients 1] [--shared]
 *        [--io auto|io_uring|portable] [--store curp|etcd] [--log-writes mapped|engine]
 *        [--snapshot-every N] [--threads] [--warmup N] [--batch-in-flight N] [--watch] [--slow]
 * `--shared`: the clients are concurrent operations of one `CurpKV` (as in a mount: one connection
 * per replica, many sessions), not one `CurpKV` each. `--io`: the replicas' I/O engine (src/io;
 * `io_uring-wait`: io_uring that waits for a completion in the kernel up to 3 ms, no poll thread).
 * `--store etcd`: the same loop on three etcd members (/usr/bin/etcd) on loopback, the client
 * talking to the leader. `--snapshot-every`: the replicas' `curp.snapshot_every` (default the
 * core's, 10,000 entries); the run's snapshots are counted in its CPU. `--batch-in-flight N`:
 * `CurpKVOptions.batchInFlight` (group commit; 0 = every txn its own proposal; default CurpKV's).
 * `--watch`: the first client also watches the created keys; prints how long after each txn
 * completed its watch event arrived (served by the leader: src/meta/curp/server.ts). `--slow`:
 * the transactions want their revisions (no `revisionsUnused`), so each waits for its commit.
 * The summary line also gives, per replica, frames sent and socket writes made per txn (status
 * `messagesOut`, `peerWrites` + `clientWrites`; replicas of earlier builds print "-").
 * @module
 */

import { parseArgs } from "node:util";
import { fileURLToPath } from "node:url";
import { openCurpKV } from "../../src/meta/curp/curp_kv.ts";
import { openEtcdKV } from "../../src/meta/etcd.ts";
import { type MetaKV, prefixEnd } from "../../src/meta/kv.ts";
import { fetchStatus } from "../../src/meta/curp/server.ts";

const { values: args } = parseArgs({
  options: {
    ops: { type: "string", default: "2000" },
    clients: { type: "string", default: "1" },
    "v8-flags": { type: "string", default: "" },
    hold: { type: "boolean", default: false },
    // Also print each replica's context switches and CPU per thread class per txn.
    threads: { type: "boolean", default: false },
    // Transactions run before the measured ones (8 at a time on one client above 100): 21000 puts the
    // replicas past the 20,000 revisions of watch history a long-running cluster holds.
    warmup: { type: "string", default: "100" },
    io: { type: "string", default: "auto" },
    store: { type: "string", default: "curp" },
    shared: { type: "boolean", default: false },
    // false: replicas answer proposals only after the fdatasync (curp.witness_ack_after_write).
    "ack-after-write": { type: "string", default: "true" },
    // How replicas write log.bin (curp.log_writes): mapped or engine.
    "log-writes": { type: "string", default: "mapped" },
    // The replicas' curp.snapshot_every; empty: the core's default.
    "snapshot-every": { type: "string", default: "" },
    // CurpKV's group commit (CurpKVOptions.batchInFlight); empty: its default.
    "batch-in-flight": { type: "string", default: "" },
    // A watch on the created keys' prefix through the first client: how long after a txn
    // completes its watch event arrives (p50/p90).
    watch: { type: "boolean", default: false },
    // Transactions that read their revisions (no revisionsUnused): each waits for its commit.
    slow: { type: "boolean", default: false },
    help: { type: "boolean", default: false },
  },
});
if (args.help) {
  console.log(
    "usage: deno run -A bench/meta_wan/proposal_cost.ts [--ops N] [--clients C] [--shared] [--v8-flags F] [--hold] [--threads] [--warmup N] " +
      "[--io auto|io_uring|portable|io_uring-wait] [--store curp|etcd] [--ack-after-write true|false] " +
      "[--log-writes mapped|engine] [--snapshot-every N] [--batch-in-flight N] [--watch] [--slow]",
  );
  Deno.exit(0);
}
const ops = Number(args.ops);
const warmup = Number(args.warmup);
if (!Number.isSafeInteger(warmup) || warmup < 0) {
  console.error(
    `proposal_cost: --warmup "${args.warmup}" is not a count of transactions (0 or more)`,
  );
  Deno.exit(2);
}
const clients = Number(args.clients);
if (!Number.isSafeInteger(ops) || ops < 1 || !Number.isSafeInteger(clients) || clients < 1) {
  console.error("proposal_cost: --ops and --clients take positive integers");
  Deno.exit(2);
}
const logWrites = args["log-writes"];
if (logWrites !== "mapped" && logWrites !== "engine") {
  console.error(`proposal_cost: --log-writes "${logWrites}" is not mapped or engine`);
  Deno.exit(2);
}
const batchInFlight = args["batch-in-flight"] === "" ? undefined : Number(args["batch-in-flight"]);
if (batchInFlight !== undefined && (!Number.isSafeInteger(batchInFlight) || batchInFlight < 0)) {
  console.error(
    `proposal_cost: --batch-in-flight "${args["batch-in-flight"]}" is not a count (0 or more)`,
  );
  Deno.exit(2);
}
const snapshotEvery = args["snapshot-every"] === "" ? undefined : Number(args["snapshot-every"]);
if (snapshotEvery !== undefined && (!Number.isSafeInteger(snapshotEvery) || snapshotEvery < 1)) {
  console.error(
    `proposal_cost: --snapshot-every "${args["snapshot-every"]}" is not a positive integer`,
  );
  Deno.exit(2);
}
const store = args.store;
if (store !== "curp" && store !== "etcd") {
  console.error(`proposal_cost: --store "${store}" is not curp or etcd`);
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

/** Per thread class of a process (main JS thread "deno", "V8 DefaultWorke" for V8's GC and
 * compiler workers, "tokio-runtime-w" for Deno's blocking pool, "iou-wrk-*" io-wq workers): CPU
 * seconds and context switches (voluntary + involuntary) so far. */
function threadClasses(pid: number): Map<string, { cpu: number; switches: number }> {
  const out = new Map<string, { cpu: number; switches: number }>();
  for (const t of Deno.readDirSync(`/proc/${pid}/task`)) {
    try {
      const base = `/proc/${pid}/task/${t.name}`;
      const name = Deno.readTextFileSync(`${base}/comm`).trim().replace(/-\d+$/, "");
      const cpu = Number(Deno.readTextFileSync(`${base}/schedstat`).split(" ")[0]) / 1e9;
      const status = Deno.readTextFileSync(`${base}/status`);
      const switches = [...status.matchAll(/ctxt_switches:\s+(\d+)/g)]
        .reduce((s, m) => s + Number(m[1]), 0);
      const c = out.get(name) ?? { cpu: 0, switches: 0 };
      c.cpu += cpu;
      c.switches += switches;
      out.set(name, c);
    } catch {
      // the thread ended
    }
  }
  return out;
}

const dir = await Deno.makeTempDir({ prefix: "skyfs-proposal-cost-" });
const ids = ["m1", "m2", "m3"];
const addresses = ids.map(() => `127.0.0.1:${freePort()}`);
const peers = ids.map((id, i) => `${id}=${addresses[i]}`).join(",");
const etcdPeers = ids.map(() => freePort());
const children = ids.map((id, i) =>
  store === "etcd"
    ? new Deno.Command("/usr/bin/etcd", {
      args: [
        ...["--name", id, "--data-dir", `${dir}/${id}`],
        ...["--listen-peer-urls", `http://127.0.0.1:${etcdPeers[i]}`],
        ...["--initial-advertise-peer-urls", `http://127.0.0.1:${etcdPeers[i]}`],
        ...["--listen-client-urls", `http://${addresses[i]}`],
        ...["--advertise-client-urls", `http://${addresses[i]}`],
        "--initial-cluster",
        ids.map((m, j) => `${m}=http://127.0.0.1:${etcdPeers[j]}`).join(","),
        ...["--initial-cluster-state", "new"],
      ],
      stdout: "null",
      stderr: "null",
    }).spawn()
    : new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        ...(args["v8-flags"] === "" ? [] : [`--v8-flags=${args["v8-flags"]}`]),
        `${HERE}replica_main.ts`,
        JSON.stringify({
          id,
          peers,
          dataDir: `${dir}/${id}`,
          io: args.io,
          witnessAckAfterWrite: args["ack-after-write"] !== "false",
          logWrites,
          ...(snapshotEvery === undefined ? {} : { snapshotEvery }),
        }),
      ],
      stdout: "inherit",
      stderr: "inherit",
    }).spawn()
);

/** Which member leads, or undefined while none does. */
async function leaderIndex(): Promise<number | undefined> {
  if (store === "curp") {
    const states = await Promise.all(addresses.map((a) => fetchStatus(a).catch(() => undefined)));
    const i = states.findIndex((s) => s?.role === "leader");
    return i < 0 ? undefined : i;
  }
  const out = await new Deno.Command("/usr/bin/etcdctl", {
    args: ["--endpoints", addresses.join(","), "endpoint", "status", "-w", "json"],
    env: { ETCDCTL_API: "3" },
    stdout: "piped",
    stderr: "null",
  }).output();
  try {
    const list = JSON.parse(new TextDecoder().decode(out.stdout)) as {
      Endpoint: string;
      Status: { header: { member_id: number }; leader: number };
    }[];
    const found = list.find((e) => e.Status.header.member_id === e.Status.leader);
    return found === undefined ? undefined : addresses.indexOf(found.Endpoint);
  } catch {
    return undefined;
  }
}

try {
  const deadline = Date.now() + 20_000;
  let leader: number | undefined;
  for (;;) {
    leader = await leaderIndex();
    if (leader !== undefined) break;
    if (Date.now() > deadline) throw new Error(`proposal_cost: no ${store} leader within 20 s`);
    await new Promise((r) => setTimeout(r, 100));
  }
  const open = (): Promise<MetaKV> =>
    store === "etcd"
      ? openEtcdKV([addresses[leader!]], { timeoutMs: 30_000 })
      : openCurpKV(addresses, { log: () => {}, batchInFlight });
  const kvs: MetaKV[] = args.shared
    ? Array(clients).fill(await open())
    : await Promise.all(Array.from({ length: clients }, open));
  const enc = new TextEncoder();
  const value = new Uint8Array(120).fill(7);
  // --watch: when each measured txn completed and when its key's watch event arrived.
  const completed = new Map<string, number>();
  const arrived = new Map<string, number>();
  const dec = new TextDecoder();
  const run = async (c: number, n: number, latencies: number[], tag = "") => {
    const kv = kvs[c];
    for (let i = 0; i < n; i++) {
      const text = `e/1/${tag}c${c}-f${i}-${Math.random()}`;
      const name = enc.encode(text);
      const t0 = performance.now();
      await kv.txn({
        compare: [{ key: name, target: "version", result: "==", value: 0 }],
        success: [
          { put: { key: name, value } },
          { put: { key: enc.encode(`i/c${c}-${i}-${Math.random()}`), value } },
          { put: { key: enc.encode(`o/c${c}-${i}-${Math.random()}`), value } },
        ],
        revisionsUnused: !args.slow,
      });
      const t1 = performance.now();
      latencies.push(t1 - t0);
      if (tag === "") completed.set(text, t1);
    }
  };
  const warmers = Math.min(warmup > 100 ? 8 : 1, warmup);
  await Promise.all(
    Array.from({ length: warmers }, (_, c) => {
      const n = Math.floor(warmup / warmers) + (c < warmup % warmers ? 1 : 0);
      return run(0, n, [], `w${c}-`);
    }),
  );
  const watcher = args.watch
    ? kvs[0].watch(
      { key: enc.encode("e/"), rangeEnd: prefixEnd(enc.encode("e/")) },
      {},
      (events) => {
        const now = performance.now();
        for (const e of events) arrived.set(dec.decode(e.kv.key), now);
      },
    )
    : undefined;
  if (args.hold) {
    console.log(`replica pids: ${children.map((ch) => ch.pid).join(" ")}`);
    await new Promise((r) => setTimeout(r, 3000));
  }
  const classesBefore = children.map((ch) => threadClasses(ch.pid));
  const before = children.map((ch) => cpuSeconds(ch.pid));
  const selfBefore = cpuSeconds(Deno.pid);
  const status = () =>
    store === "curp"
      ? Promise.all(addresses.map((a) => fetchStatus(a)))
      : Promise.resolve(undefined);
  const statusBefore = await status();
  const latencies: number[] = [];
  const t0 = performance.now();
  const per = Math.ceil(ops / clients);
  await Promise.all(kvs.map((_, c) => run(c, per, latencies)));
  const seconds = (performance.now() - t0) / 1000;
  const after = children.map((ch) => cpuSeconds(ch.pid));
  const classesAfter = children.map((ch) => threadClasses(ch.pid));
  const selfAfter = cpuSeconds(Deno.pid);
  const statusAfter = await status();
  latencies.sort((a, b) => a - b);
  const n = latencies.length;
  const q = (p: number) => latencies[Math.min(n - 1, Math.floor(p * n))].toFixed(2);
  const counts = statusBefore === undefined || statusAfter === undefined ? "" : (() => {
    const fsyncs = statusAfter.reduce((s, x, i) => s + x.fsyncs - statusBefore[i].fsyncs, 0);
    const proposals = statusAfter.reduce(
      (s, x, i) => s + x.proposals - statusBefore[i].proposals,
      0,
    );
    // Frames sent per socket write, per replica (status of this build; earlier ones lack it).
    const perWrite = statusAfter.map((x, i) => {
      const b = statusBefore[i];
      const frames = Object.entries(x.messagesOut ?? {})
        .filter(([type]) => type !== "watchEventsOut")
        .reduce((s, [type, count]) => s + count - (b.messagesOut?.[type] ?? 0), 0);
      const writes = (x.peerWrites ?? 0) + (x.clientWrites ?? 0) - (b.peerWrites ?? 0) -
        (b.clientWrites ?? 0);
      return writes === 0 ? "-" : `${(frames / n).toFixed(2)}/${(writes / n).toFixed(2)}`;
    });
    return `; proposals led ${proposals} (${(proposals / n).toFixed(2)}/txn), fsyncs ${
      (fsyncs / n).toFixed(2)
    }/txn (all replicas); frames/writes per txn ${perWrite.join(", ")}`;
  })();
  console.log(
    `${store}: ${n} txns, ${clients} client(s)${args.shared ? " sharing one client" : ""}: ${
      (n / seconds).toFixed(0)
    }/s, p50 ${q(0.5)} ms, p90 ${q(0.9)} ms, p99 ${q(0.99)} ms${counts}; load ${
      Deno.loadavg()[0].toFixed(1)
    }`,
  );
  console.log(
    `CPU ms per txn: ${store === "curp" ? "replicas" : "etcd members"} ${
      ids.map((id, i) =>
        `${id}${i === leader ? "(leader)" : ""} ${((after[i] - before[i]) * 1000 / n).toFixed(2)}`
      ).join(", ")
    }; client ${((selfAfter - selfBefore) * 1000 / n).toFixed(2)}`,
  );
  if (watcher !== undefined) {
    await new Promise((r) => setTimeout(r, 500)); // the last events
    watcher.cancel();
    const delays: number[] = [];
    for (const [key, at] of completed) {
      const seen = arrived.get(key);
      if (seen !== undefined) delays.push(seen - at);
    }
    delays.sort((a, b) => a - b);
    const d = (p: number) => delays[Math.min(delays.length - 1, Math.floor(p * delays.length))];
    console.log(
      `watch: ${delays.length} of ${completed.size} events; arrived after the txn completed: ` +
        `p50 ${d(0.5)?.toFixed(2)} ms, p90 ${d(0.9)?.toFixed(2)} ms`,
    );
  }
  if (args.threads) {
    // Threads that ended during the run (io-wq workers come and go) are missing from both sides.
    for (let i = 0; i < ids.length; i++) {
      const parts: string[] = [];
      let switches = 0;
      for (const [name, a] of classesAfter[i]) {
        const b = classesBefore[i].get(name) ?? { cpu: 0, switches: 0 };
        switches += a.switches - b.switches;
        parts.push(`${name} ${((a.cpu - b.cpu) * 1000 / n).toFixed(3)} ms`);
      }
      console.log(
        `  ${ids[i]}${i === leader ? "(leader)" : ""}: context switches ${
          (switches / n).toFixed(2)
        }/txn; CPU per txn ${parts.join(", ")}`,
      );
    }
  }
  await Promise.all([...new Set(kvs)].map((kv) => kv.close()));
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
