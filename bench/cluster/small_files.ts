/**
 * Small files on a cluster mount (cluster.inline_bytes, src/cluster/README.md "Small files
 * inline"): two mounts on three CURP replicas (or one etcd). On A: create + 1 KiB + close of 300
 * files (bench/cluster/meta_loops.py, p50 and p90), then git add + commit of 200 small files
 * (bench/cluster/git_small_files.py); B reads the 300 files. Prints, per run, those figures and
 * A's backend PUTs during the 300 creates (skyfs_backend_requests_total{op="put"}) and, on CURP,
 * its commits by path (skyfs_curp_commits_total{path}: fast, or slow after a conflict).
 *
 *   deno run -A bench/cluster/small_files.ts [--root DIR]... [--rounds 3] [--meta curp|etcd]
 *     [--tmp DIR]
 *
 * Give two roots (a checkout before, then this one): each round runs them one after the other.
 * @module
 */

import { join } from "node:path";
import { parseArgs } from "node:util";

const USAGE = "usage: deno run -A bench/cluster/small_files.ts [--root DIR]... [--rounds N]" +
  " [--meta curp|etcd] [--tmp DIR]";
if (Deno.args.includes("--help") || Deno.args.includes("-h")) {
  console.log(USAGE);
  Deno.exit(0);
}
function parseOptions() {
  try {
    return parseArgs({
      args: Deno.args,
      options: {
        root: { type: "string", multiple: true },
        rounds: { type: "string", default: "3" },
        meta: { type: "string", default: "curp" },
        tmp: { type: "string", default: "/tmp" },
      },
    }).values;
  } catch (e) {
    console.error(`small_files: ${(e as Error).message}; ${USAGE}`);
    Deno.exit(2);
  }
}
const options = parseOptions();
const roots = options.root ?? [new URL("../../", import.meta.url).pathname];
const rounds = Number(options.rounds);
const meta = options.meta;
const parentDir = options.tmp;
if (!Number.isSafeInteger(rounds) || rounds < 1) {
  console.error(`small_files: --rounds must be a positive integer, got "${options.rounds}"`);
  Deno.exit(2);
}
if (meta !== "curp" && meta !== "etcd") {
  console.error(`small_files: --meta must be curp or etcd, got "${meta}"`);
  Deno.exit(2);
}
const here = new URL(".", import.meta.url).pathname;

async function run(cmd: string, ...rest: string[]): Promise<string> {
  const out = await new Deno.Command(cmd, { args: rest, stdout: "piped", stderr: "piped" })
    .output();
  const text = new TextDecoder().decode(out.stdout);
  if (out.code !== 0) {
    throw new Error(`${cmd} ${rest.join(" ")}: ${new TextDecoder().decode(out.stderr)}`);
  }
  return text;
}

/** A's backend PUTs and CURP commits by path (fast, slow) so far. */
async function counters(url: string): Promise<{ puts: number; fast: number; slow: number }> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const sample = (name: string, label: string) => {
    const line = text.split("\n").find((l) => l.startsWith(`${name}{`) && l.includes(label));
    return line ? Number(line.split(" ").at(-1)) : 0;
  };
  return {
    puts: sample("skyfs_backend_requests_total", 'op="put"'),
    fast: sample("skyfs_curp_commits_total", 'path="fast"'),
    slow: sample("skyfs_curp_commits_total", 'path="slow"'),
  };
}

async function measure(root: string): Promise<string> {
  const { LocalCluster } = await import(join(root, "src/cluster/local_cluster.ts"));
  const cluster = await LocalCluster.start("small-files-bench-", { nodes: 2, meta, parentDir });
  try {
    const [a, b] = cluster.nodes;
    const url = /http: listening on (http:\/\/\S+)/.exec(await cluster.logOf(a))![1];
    const before = await counters(url);
    const loop = await run(
      "python3",
      "-c",
      // Only the create + 1 KiB + close loop of meta_loops.py, and B's reads of those files.
      `import os, sys, time, statistics
d = os.path.join(sys.argv[1], "c"); os.mkdir(d); data = b"x" * 1024; ts = []
for i in range(300):
    t = time.perf_counter(); fd = os.open(os.path.join(d, str(i)), os.O_CREAT | os.O_WRONLY, 0o644)
    os.write(fd, data); os.close(fd); ts.append((time.perf_counter() - t) * 1000)
ts.sort(); print(f"create+1KiB+close p50 {statistics.median(ts):.2f} p90 {ts[270]:.2f} ms")`,
      a.mountpoint,
    );
    const after = await counters(url);
    const created = `PUTs ${after.puts - before.puts}` +
      (meta === "curp"
        ? `, CURP fast ${after.fast - before.fast} slow ${after.slow - before.slow}`
        : "");
    const readStart = performance.now();
    for (let i = 0; i < 300; i++) {
      const got = await Deno.readFile(join(b.mountpoint, "c", `${i}`));
      if (got.length !== 1024) throw new Error(`B read ${got.length} bytes of c/${i}`);
    }
    const readMs = (performance.now() - readStart) / 300;
    const git = await run("python3", join(here, "git_small_files.py"), a.mountpoint);
    return `${loop.trim()}; ${created}; B read ${readMs.toFixed(2)} ms/file; ${git.trim()}`;
  } finally {
    await cluster.stop();
  }
}

for (let round = 1; round <= rounds; round++) {
  for (const root of roots) {
    const load = (await Deno.readTextFile("/proc/loadavg")).split(" ").slice(0, 3).join(" ");
    console.log(`round ${round} ${meta} ${root} (load ${load}): ${await measure(root)}`);
  }
}
