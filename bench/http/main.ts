/**
 * What the HTTP endpoint costs, measured in parts rather than as a difference of two noisy rates:
 * (1) the work metrics add to each FUSE request (two monotonicSeconds() calls and one
 * FuseCounters.record), in this process; (2) the daemon CPU time one scrape of /metrics takes,
 * from /proc/PID/stat of a real mount around many scrapes. At one scrape per second, (2) divided
 * by one second is the share of the daemon's JS thread the endpoint takes.
 *
 *   deno run -A bench/http/main.ts [--scrapes N]   (root: mounts under /tmp)
 * @module
 */

import { parseArgs } from "node:util";
import { join } from "node:path";
import { FuseCounters } from "../../src/fuse/counters.ts";
import { monotonicSeconds } from "../../src/io/libc.ts";

const MOD_TS = new URL("../../mod.ts", import.meta.url).pathname;
const { values } = parseArgs({ options: { scrapes: { type: "string" } } });
const scrapes = Number(values.scrapes ?? 300);

/** Nanoseconds per call of `body`, the best of 5 rounds of `n` calls. */
function nsPerCall(n: number, body: (i: number) => void): number {
  let best = Infinity;
  for (let round = 0; round < 5; round++) {
    const started = performance.now();
    for (let i = 0; i < n; i++) body(i);
    best = Math.min(best, (performance.now() - started) * 1e6 / n);
  }
  return best;
}

const counters = new FuseCounters();
let sink = 0;
const recordNs = nsPerCall(2_000_000, (i) => {
  const started = monotonicSeconds();
  sink += i;
  counters.record(i & 31, monotonicSeconds() - started, false);
});
const emptyNs = nsPerCall(2_000_000, (i) => {
  sink += i;
});
const perRequestNs = recordNs - emptyNs;

/** utime + stime of `pid` in seconds (clock ticks of 10 ms). */
function cpuSeconds(pid: number): number {
  const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

const base = await Deno.makeTempDir({ prefix: "skyfs-bench-http-" });
const mountpoint = join(base, "mnt");
await Deno.mkdir(mountpoint);
const child = new Deno.Command(Deno.execPath(), {
  args: ["run", "-A", MOD_TS, "mount", mountpoint, "--data", join(base, "data"), "--http"]
    .concat(["127.0.0.1:0", "--passthrough", "off"]),
  stdout: "null",
  stderr: "piped",
}).spawn();
let log = "";
const drained = (async () => {
  for await (const chunk of child.stderr) log += new TextDecoder().decode(chunk);
})();
try {
  let url: string | undefined;
  for (let i = 0; i < 600 && !url; i++) {
    url = /http: listening on (http:\/\/\S+)/.exec(log)?.[1];
    if (!url || !/skyfs: mounted/.test(log)) {
      url = undefined;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
  if (!url) throw new Error(`the mount did not start:\n${log}`);
  // Every kind of request once, so the histograms have their series.
  for (let i = 0; i < 20; i++) {
    const path = join(mountpoint, `f${i}`);
    await Deno.writeTextFile(path, "x".repeat(1000));
    await Deno.readTextFile(path);
    await Deno.rename(path, `${path}.b`);
    await Deno.stat(`${path}.b`);
  }
  await Deno.mkdir(join(mountpoint, "d"));
  [...Deno.readDirSync(mountpoint)];
  const first = await (await fetch(`${url}/metrics`)).text();
  const before = cpuSeconds(child.pid);
  const started = performance.now();
  for (let i = 0; i < scrapes; i++) await (await fetch(`${url}/metrics`)).text();
  const wallMs = (performance.now() - started) / scrapes;
  const cpuMs = (cpuSeconds(child.pid) - before) * 1000 / scrapes;
  const series = first.split("\n").filter((l) => l !== "" && !l.startsWith("#")).length;
  console.log(
    `per FUSE request: ${perRequestNs.toFixed(1)} ns of metrics work ` +
      `(${(perRequestNs / 13_000 * 100).toFixed(2)}% of a 13 us FUSE round trip)`,
  );
  console.log(
    `per scrape: ${cpuMs.toFixed(2)} ms of daemon CPU, ${wallMs.toFixed(2)} ms wall, ` +
      `${(first.length / 1024).toFixed(0)} KiB, ${series} series; at one scrape per second ` +
      `${(cpuMs / 10).toFixed(2)}% of the daemon's time`,
  );
  if (sink === 0.5) console.log(sink); // keep the loops from being optimized away
} finally {
  child.kill("SIGTERM");
  await child.status;
  await drained;
  await Deno.remove(base, { recursive: true }).catch(() => {});
}
