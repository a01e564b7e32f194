/**
 * Concurrent writers on one cluster mount (src/meta/curp/README.md "Own earlier commands", point
 * 6): four python threads each do 150 create + 1 KiB + close in one directory of a one-node
 * `LocalCluster` (3 CURP replicas); prints p50, p90, files/s and the mount's CURP commits by path
 * (skyfs_curp_commits_total: fast, or slow).
 *
 *   deno run -A bench/cluster/concurrent_creates.ts [ROOT]... [--rounds 3]
 *
 * Give two roots (a checkout before, then this one): each round runs them one after the other.
 * @module
 */
import { join } from "node:path";

const args = [...Deno.args];
if (args.includes("--help")) {
  console.log("usage: deno run -A bench/cluster/concurrent_creates.ts [ROOT]... [--rounds N]");
  Deno.exit(0);
}
const at = args.indexOf("--rounds");
const rounds = at >= 0 ? Number(args.splice(at, 2)[1]) : 3;
if (!(rounds >= 1)) {
  console.error("concurrent_creates: --rounds needs a number >= 1");
  Deno.exit(2);
}
const roots = args.length > 0 ? args : [new URL("../../", import.meta.url).pathname];
async function counters(url: string) {
  const text = await (await fetch(`${url}/metrics`)).text();
  const sample = (label: string) => {
    const line = text.split("\n").find((l) =>
      l.startsWith(`skyfs_curp_commits_total{`) && l.includes(label)
    );
    return line ? Number(line.split(" ").at(-1)) : 0;
  };
  return { fast: sample('path="fast"'), slow: sample('path="slow"') };
}
async function measure(root: string): Promise<string> {
  const { LocalCluster } = await import(join(root, "src/cluster/local_cluster.ts"));
  const cluster = await LocalCluster.start("concurrent-creates-", {
    nodes: 1,
    meta: "curp",
    parentDir: "/tmp",
  });
  try {
    const [a] = cluster.nodes;
    let m: RegExpExecArray | null = null;
    for (let i = 0; i < 100 && m === null; i++) {
      m = /http: listening on (http:\/\/\S+)/.exec(await cluster.logOf(a));
      if (m === null) await new Promise((r) => setTimeout(r, 100));
    }
    const url = m![1];
    const before = await counters(url);
    const out = await new Deno.Command("python3", {
      args: [
        "-c",
        `import os, sys, time, statistics, threading
d = os.path.join(sys.argv[1], "c"); os.mkdir(d); data = b"x" * 1024; ts = []
def w(j):
    for i in range(150):
        t = time.perf_counter(); fd = os.open(os.path.join(d, f"{j}-{i}"), os.O_CREAT | os.O_WRONLY, 0o644)
        os.write(fd, data); os.close(fd); ts.append((time.perf_counter() - t) * 1000)
th = [threading.Thread(target=w, args=(j,)) for j in range(4)]
t0 = time.perf_counter()
[t.start() for t in th]; [t.join() for t in th]
el = time.perf_counter() - t0
ts.sort(); print(f"4 writers x 150 create+1KiB+close p50 {statistics.median(ts):.2f} p90 {ts[int(len(ts)*0.9)]:.2f} ms, {len(ts)/el:.0f}/s")`,
        a.mountpoint,
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    if (out.code !== 0) throw new Error(new TextDecoder().decode(out.stderr));
    const after = await counters(url);
    const fast = after.fast - before.fast, slow = after.slow - before.slow;
    return `${new TextDecoder().decode(out.stdout).trim()}; CURP fast ${fast} slow ${slow} (${
      (100 * slow / (fast + slow)).toFixed(1)
    } % slow)`;
  } finally {
    await cluster.stop();
  }
}
for (let round = 1; round <= rounds; round++) {
  for (const root of roots) {
    const load = (await Deno.readTextFile("/proc/loadavg")).split(" ").slice(0, 3).join(" ");
    console.log(`round ${round} ${root} (load ${load}): ${await measure(root)}`);
  }
}
