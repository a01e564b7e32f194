/**
 * Latency of open+close through a cluster mount (what the per-node open records cost): two mounts
 * on three CURP replicas (or one etcd); node A writes the files, node B opens and closes them.
 * Prints medians in microseconds, and the store's committed writes (CURP: log entries the leader
 * appended; etcd: proposals committed) per first open and per unlink, less the idle rate (lease
 * renewals) measured for a second before each pass. An unlink's count includes its background
 * work (the reclaim: acknowledgements and the purge), counted until it settled (1 s).
 *
 *   deno run -A bench/cluster/open_close.ts [--root DIR]... [--rounds 5] [--files 100]
 *     [--meta curp|etcd] [--linger MS,MS...]
 *
 * `--root` runs another checkout's skyfs (e.g. /work/main for a before/after comparison in one
 * run: give both roots, rounds alternate between them).
 * @module
 */

import { join } from "node:path";
import { parsePrometheusText } from "../store_counters.ts";

const args = Deno.args;
const option = (name: string, fallback: string) => {
  const at = args.indexOf(name);
  return at >= 0 ? args[at + 1] : fallback;
};
const roots = args.flatMap((arg, i) => args[i - 1] === "--root" ? [arg] : []);
if (roots.length === 0) roots.push(new URL("../../", import.meta.url).pathname);
// --linger 0,500: the last root also runs with SKYFS_OPEN_LINGER_MS set to each value.
const lingers = option("--linger", "").split(",").filter((v) => v !== "");
const configs = roots.flatMap((root, i) => [
  { root, env: {} as Record<string, string>, name: root },
  ...(i < roots.length - 1 ? [] : lingers).map((ms) => ({
    root,
    env: { SKYFS_OPEN_LINGER_MS: ms },
    name: `${root} linger ${ms} ms`,
  })),
]);
const rounds = Number(option("--rounds", "5"));
const files = Number(option("--files", "100"));
const meta = option("--meta", "curp");

interface Result {
  /** Same file opened and closed again and again. */
  reopen: number[];
  /** Each file's first open on B, then close. */
  first: number[];
  /** Open, read 4 KiB, close, each file (cold on B's kernel, warm on B's cache). */
  openRead: number[];
  /** unlink on B of each file A wrote. */
  unlink: number[];
  /** Store writes per first open (with its close), per unlink. */
  firstWrites: number;
  unlinkWrites: number;
}

// deno-lint-ignore no-explicit-any
type Cluster = any;

/** The store's count of committed writes so far. */
async function proposals(cluster: Cluster): Promise<number> {
  if (cluster.meta.startsWith("etcd://")) {
    const client = cluster.meta.slice("etcd://".length);
    const text = await (await fetch(`http://${client}/metrics`)).text();
    return parsePrometheusText(text).get("etcd_server_proposals_committed_total")!;
  }
  return (await cluster.replicaStatus(await cluster.metaLeader())).proposals;
}

/** Writes committed per item during `run` (after `settleMs`), less the idle rate. */
async function writesPer(
  cluster: Cluster,
  items: number,
  run: () => void,
  settleMs = 0,
): Promise<number> {
  const idleFrom = await proposals(cluster);
  const idleStart = performance.now();
  await new Promise((r) => setTimeout(r, 1000));
  const idleRate = ((await proposals(cluster)) - idleFrom) / (performance.now() - idleStart);
  const before = await proposals(cluster);
  const start = performance.now();
  run();
  if (settleMs > 0) await new Promise((r) => setTimeout(r, settleMs));
  const writes = (await proposals(cluster)) - before - idleRate * (performance.now() - start);
  return writes / items;
}

async function measure(root: string, nodeEnv: Record<string, string>): Promise<Result> {
  const { LocalCluster } = await import(join(root, "src/cluster/local_cluster.ts"));
  const cluster = await LocalCluster.start("unlink-bench-", { nodes: 2, meta, nodeEnv });
  try {
    const [a, b] = cluster.nodes;
    const data = new Uint8Array(4096).fill(7);
    for (let i = 0; i < files; i++) await Deno.writeFile(join(a.mountpoint, `f${i}`), data);
    const time = (run: () => void) => {
      const start = performance.now();
      run();
      return (performance.now() - start) * 1000;
    };
    const result: Result = {
      reopen: [],
      first: [],
      openRead: [],
      unlink: [],
      firstWrites: 0,
      unlinkWrites: 0,
    };
    // Warm B's kernel entries (lookups) so the open itself is what is measured.
    for (let i = 0; i < files; i++) Deno.statSync(join(b.mountpoint, `f${i}`));
    result.firstWrites = await writesPer(cluster, files, () => {
      for (let i = 0; i < files; i++) {
        result.first.push(time(() => Deno.openSync(join(b.mountpoint, `f${i}`)).close()));
      }
    });
    const path = join(b.mountpoint, "f0");
    for (let i = 0; i < files; i++) result.reopen.push(time(() => Deno.openSync(path).close()));
    const buf = new Uint8Array(4096);
    for (let i = 0; i < files; i++) {
      result.openRead.push(time(() => {
        const file = Deno.openSync(join(b.mountpoint, `f${i}`));
        file.readSync(buf);
        file.close();
      }));
    }
    result.unlinkWrites = await writesPer(cluster, files, () => {
      for (let i = 0; i < files; i++) {
        result.unlink.push(time(() => Deno.removeSync(join(b.mountpoint, `f${i}`))));
      }
    }, 1000);
    return result;
  } finally {
    await cluster.stop();
  }
}

const median = (xs: number[]) => {
  const s = [...xs].sort((x, y) => x - y);
  return s[Math.floor(s.length / 2)];
};

const all = new Map<string, Result[]>();
for (let round = 0; round < rounds; round++) {
  for (const config of configs) {
    const result = await measure(config.root, config.env);
    all.set(config.name, [...(all.get(config.name) ?? []), result]);
    console.error(
      `round ${round + 1} ${config.name}: first ${median(result.first).toFixed(0)} us, reopen ${
        median(result.reopen).toFixed(0)
      } us, open+read ${median(result.openRead).toFixed(0)} us, unlink ${
        median(result.unlink).toFixed(0)
      } us; store writes per first open ${result.firstWrites.toFixed(2)}, per unlink ${
        result.unlinkWrites.toFixed(2)
      }`,
    );
  }
}
console.log(`load average: ${Deno.loadavg().map((x) => x.toFixed(2)).join(" ")}`);
for (const [root, results] of all) {
  const of = (pick: (r: Result) => number[]) => median(results.map((r) => median(pick(r))));
  console.log(
    `${root}: median of ${results.length} rounds x ${files} files, us: first open+close ${
      of((r) => r.first).toFixed(0)
    }, reopen+close ${of((r) => r.reopen).toFixed(0)}, open+read 4 KiB+close ${
      of((r) => r.openRead).toFixed(0)
    }, unlink ${of((r) => r.unlink).toFixed(0)}; store writes per first open ${
      median(results.map((r) => r.firstWrites)).toFixed(2)
    }, per unlink ${median(results.map((r) => r.unlinkWrites)).toFixed(2)}`,
  );
}
