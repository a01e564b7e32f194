/**
 * FUSE request rates, skyfs beside bindfs and ext4 in one run: uncached stat per second (entry and
 * attribute timeouts 0, so every stat is a round trip to the daemon) and 4 KiB O_DIRECT random
 * reads per second at queue depth 1 (psync) and 16 (io_uring), via fio.
 *
 *   deno run -A bench/fuse/main.ts [--seconds 4] [--rounds 3]
 *
 * Prints a markdown table with each figure as a ratio to bindfs; needs root, fio, bindfs, gcc.
 * @module
 */

import { parseArgs } from "node:util";
import { join } from "node:path";

const { values } = parseArgs({
  options: { seconds: { type: "string", default: "4" }, rounds: { type: "string", default: "3" } },
});
const seconds = Number(values.seconds);
const rounds = Number(values.rounds);
const root = await Deno.makeTempDir({ prefix: "skyfs-fuse-bench-" });
const here = new URL(".", import.meta.url).pathname;
const repo = join(here, "../..");

async function run(cmd: string, args: string[]): Promise<string> {
  const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  if (!out.success) throw new Error(`${cmd} ${args.join(" ")} failed: ${text}`);
  return text;
}

async function waitMounted(path: string): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (Deno.readTextFileSync("/proc/self/mountinfo").includes(` ${path} `)) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${path} did not mount`);
}

interface Target {
  name: string;
  dir: string;
  start(): Promise<void>;
  stop(): Promise<void>;
}

const statLoop = join(root, "stat_loop");
await run("gcc", ["-O2", "-o", statLoop, join(here, "stat_loop.c")]);

/** skyfs with passthrough "on" (data I/O bypasses the daemon) or "off" (every read is a
 * round trip to the daemon, which is what this benchmark measures for the request path). */
function skyfs(passthrough: "on" | "off"): Target {
  const name = passthrough === "on" ? "skyfs" : "skyfs-daemon";
  const dir = join(root, name);
  let child: Deno.ChildProcess | undefined;
  return {
    name,
    dir,
    async start() {
      Deno.mkdirSync(dir, { recursive: true });
      child = new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "-A",
          join(repo, "mod.ts"),
          "mount",
          dir,
          "--data",
          join(root, `${name}-data`),
          "--cache-seconds",
          "0",
          "--passthrough",
          passthrough,
        ],
        stderr: "null",
      }).spawn();
      await waitMounted(dir);
    },
    async stop() {
      child?.kill("SIGTERM");
      await child?.status;
    },
  };
}

function bindfs(): Target {
  const dir = join(root, "bindfs");
  const backing = join(root, "bindfs-backing");
  return {
    name: "bindfs",
    dir,
    async start() {
      Deno.mkdirSync(dir, { recursive: true });
      Deno.mkdirSync(backing, { recursive: true });
      await run("bindfs", [
        "-o",
        "attr_timeout=0,entry_timeout=0,negative_timeout=0",
        backing,
        dir,
      ]);
      await waitMounted(dir);
    },
    async stop() {
      await run("umount", [dir]);
    },
  };
}

function ext4(): Target {
  const dir = join(root, "ext4");
  return {
    name: "ext4",
    dir,
    start: () => Promise.resolve(Deno.mkdirSync(dir, { recursive: true })),
    stop: () => Promise.resolve(),
  };
}

async function fioIops(file: string, engine: string, depth: number): Promise<number> {
  const out = await run("fio", [
    "--name=r",
    `--filename=${file}`,
    "--rw=randread",
    "--bs=4k",
    "--direct=1",
    `--ioengine=${engine}`,
    `--iodepth=${depth}`,
    `--runtime=${seconds}`,
    "--time_based",
    "--size=64M",
    "--output-format=json",
  ]);
  return JSON.parse(out.slice(out.indexOf("{"))).jobs[0].read.iops;
}

const targets = [ext4(), bindfs(), skyfs("off"), skyfs("on")];
const results = new Map<string, Record<string, number[]>>();
for (let round = 0; round < rounds; round++) {
  for (const target of targets) { // alternate targets so machine drift hits all alike
    await target.start();
    try {
      const file = join(target.dir, "f");
      await run("sh", ["-c", `head -c 64M /dev/zero > ${file} && sync`]);
      const stat = Number((await run(statLoop, [file, "30000"])).split(" ")[0]);
      const qd1 = await fioIops(file, "psync", 1);
      const qd16 = await fioIops(file, "io_uring", 16);
      const r = results.get(target.name) ?? { stat: [], qd1: [], qd16: [] };
      r.stat.push(stat), r.qd1.push(qd1), r.qd16.push(qd16);
      results.set(target.name, r);
      console.error(
        `round ${round + 1} ${target.name}: stat ${stat.toFixed(0)}/s, 4k QD1 ${
          qd1.toFixed(0)
        }, QD16 ${qd16.toFixed(0)} IOPS`,
      );
    } finally {
      await target.stop();
    }
  }
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const base = results.get("bindfs")!;
console.log(`| target | uncached stat/s | 4 KiB O_DIRECT read QD1 IOPS | QD16 IOPS |`);
console.log(`|---|---|---|---|`);
for (const [name, r] of results) {
  const cell = (k: string) =>
    `${median(r[k]).toFixed(0)} (${(median(r[k]) / median(base[k])).toFixed(2)}x)`;
  console.log(`| ${name} | ${cell("stat")} | ${cell("qd1")} | ${cell("qd16")} |`);
}
console.log(
  `\nmedian of ${rounds} rounds, ${seconds} s each; ratios to bindfs; ${
    new Date().toISOString().slice(0, 10)
  }`,
);
await Deno.remove(root, { recursive: true });
