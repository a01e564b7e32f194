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

interface Daemon {
  pid: number;
  mountpoint: string;
  url?: string;
  stop(): Promise<void>;
}

/** A mount with `args` added, started and waited for (its endpoint URL when it has one). */
async function startDaemon(base: string, name: string, args: string[]): Promise<Daemon> {
  const mountpoint = join(base, `${name}-mnt`);
  await Deno.mkdir(mountpoint);
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", MOD_TS, "mount", mountpoint, "--data", join(base, `${name}-data`)]
      .concat(args),
    stdout: "null",
    stderr: "piped",
  }).spawn();
  let log = "";
  const drained = (async () => {
    for await (const chunk of child.stderr) log += new TextDecoder().decode(chunk);
  })();
  const stop = async () => {
    child.kill("SIGTERM");
    await child.status;
    await drained;
  };
  for (let i = 0; i < 600 && !/skyfs: mounted/.test(log); i++) {
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  if (!/skyfs: mounted/.test(log)) {
    await stop();
    throw new Error(`the mount did not start:\n${log}`);
  }
  const url = /http: listening on (http:\/\/\S+)/.exec(log)?.[1];
  return { pid: child.pid, mountpoint, url, stop };
}

/** Daemon CPU seconds over `seconds` of idleness. */
async function idleCpu(daemon: Daemon, seconds: number): Promise<number> {
  const before = cpuSeconds(daemon.pid);
  await new Promise((resolve) => setTimeout(resolve, seconds * 1000));
  return cpuSeconds(daemon.pid) - before;
}

const base = await Deno.makeTempDir({ prefix: "skyfs-bench-http-" });
const daemons: Daemon[] = [];
try {
  const on = await startDaemon(base, "on", ["--http", "127.0.0.1:0", "--passthrough", "off"]);
  daemons.push(on);
  const off = await startDaemon(base, "off", ["--http", "off", "--passthrough", "off"]);
  daemons.push(off);
  const url = on.url!;
  const mountpoint = on.mountpoint;
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
  const before = cpuSeconds(on.pid);
  const started = performance.now();
  for (let i = 0; i < scrapes; i++) await (await fetch(`${url}/metrics`)).text();
  const wallMs = (performance.now() - started) / scrapes;
  const cpuMs = (cpuSeconds(on.pid) - before) * 1000 / scrapes;
  const series = first.split("\n").filter((l) => l !== "" && !l.startsWith("#")).length;
  // Idle, side by side: what the endpoint's standing parts (event-loop monitors) cost.
  const [idleOn, idleOff] = await Promise.all([idleCpu(on, 10), idleCpu(off, 10)]);
  console.log(
    `per FUSE request: ${perRequestNs.toFixed(1)} ns of metrics work ` +
      `(${(perRequestNs / 13_000 * 100).toFixed(2)}% of a 13 us FUSE round trip)`,
  );
  console.log(
    `per scrape: ${cpuMs.toFixed(2)} ms of daemon CPU, ${wallMs.toFixed(2)} ms wall, ` +
      `${(first.length / 1024).toFixed(0)} KiB, ${series} series; at one scrape per second ` +
      `${(cpuMs / 10).toFixed(2)}% of the daemon's time`,
  );
  console.log(
    `idle for 10 s: ${(idleOn * 1000).toFixed(0)} ms of CPU with the endpoint on (not scraped), ` +
      `${(idleOff * 1000).toFixed(0)} ms with --http off (clock ticks of 10 ms)`,
  );
  if (sink === 0.5) console.log(sink); // keep the loops from being optimized away
} finally {
  for (const daemon of daemons) await daemon.stop();
  await Deno.remove(base, { recursive: true }).catch(() => {});
}
