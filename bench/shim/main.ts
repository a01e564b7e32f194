/**
 * Shim benchmark: fio 4 KiB random read/write and 1 MiB sequential read/write (psync, one job,
 * buffered) on ext4, on skyfs through plain FUSE, FUSE passthrough, and FUSE passthrough plus
 * libskyfs_preload.so, in one run; prints a table with ratios. Root only.
 *
 * Usage: deno run -A bench/shim/main.ts [--size-mb N] [--seconds N]
 * @module
 */

import { parseArgs } from "node:util";
import { runProgram, startShimMount } from "../../tests/shim/_shim.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: { "size-mb": { type: "string" }, seconds: { type: "string" } },
});
const sizeMb = Number(values["size-mb"] ?? 256);
const seconds = Number(values.seconds ?? 5);

const jobs = [
  { name: "4k randread", rw: "randread", bs: "4k", unit: "kIOPS" },
  { name: "4k randwrite", rw: "randwrite", bs: "4k", unit: "kIOPS" },
  { name: "1M read", rw: "read", bs: "1M", unit: "MiB/s" },
  { name: "1M write", rw: "write", bs: "1M", unit: "MiB/s" },
] as const;

const mount = await startShimMount();
const plain = await startShimMount({ passthrough: false });
const ext4 = await Deno.makeTempDir({ prefix: "shim-bench-ext4-" });
const targets = [
  { name: "ext4", dir: ext4, shim: false },
  { name: "FUSE", dir: `${plain.mountpoint}/fuse`, shim: false },
  { name: "FUSE passthrough", dir: `${mount.mountpoint}/fuse`, shim: false },
  { name: "FUSE passthrough+shim", dir: `${mount.mountpoint}/shim`, shim: true },
];
for (const target of targets.slice(1)) await Deno.mkdir(target.dir);

const results = new Map<string, number>();
try {
  for (const target of targets) {
    // Lay the file out (so its data is local and cached) before measuring; then let it settle.
    const layout = await runProgram(
      mount,
      `fio --thread --name=layout --filename=bench.dat --size=${sizeMb}M --bs=1M --rw=write ` +
        `--ioengine=psync --output-format=terse >/dev/null && sync && cat bench.dat >/dev/null`,
      { cwd: target.dir, shim: false },
    );
    if (layout.code !== 0) throw new Error(`fio layout on ${target.name}: ${layout.stderr}`);
  }
  for (const job of jobs) {
    for (const target of targets) {
      const run = await runProgram(
        mount,
        `fio --thread --name=j --filename=bench.dat --size=${sizeMb}M --bs=${job.bs} ` +
          `--rw=${job.rw} --ioengine=psync --time_based --runtime=${seconds} --ramp_time=1 ` +
          `--randrepeat=1 --invalidate=0 --output-format=json`,
        { cwd: target.dir, shim: target.shim },
      );
      if (run.code !== 0) throw new Error(`fio ${job.name} on ${target.name}: ${run.stderr}`);
      if (target.shim && run.counters.reads + run.counters.writes === 0) {
        throw new Error(`the shim served nothing for ${job.name}: ${JSON.stringify(run.counters)}`);
      }
      const result = JSON.parse(run.stdout.slice(run.stdout.indexOf("{"))).jobs[0];
      const side = job.rw.includes("read") ? result.read : result.write;
      const value = job.unit === "kIOPS" ? side.iops / 1000 : side.bw_bytes / 2 ** 20;
      results.set(`${target.name}/${job.name}`, value);
      console.error(`${target.name} ${job.name}: ${value.toFixed(1)} ${job.unit}`);
    }
  }
} finally {
  await mount.stop();
  await plain.stop();
  await Deno.remove(ext4, { recursive: true });
}

const fmt = (v: number) => v >= 100 ? v.toFixed(0) : v.toFixed(1);
const ratio = (a: number, b: number) => `${(a / b).toFixed(2)}x`;
const lines = [
  `fio psync, 1 job, buffered, data local and in the page cache, ${sizeMb} MiB file, ${seconds} s per job`,
  "",
  "| job | unit | ext4 | FUSE | FUSE passthrough | FUSE passthrough + shim | shim / ext4 | " +
  "shim / FUSE | shim / passthrough |",
  "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
];
for (const job of jobs) {
  const [e, f, p, s] = targets.map((t) => results.get(`${t.name}/${job.name}`)!);
  lines.push(
    `| ${job.name} | ${job.unit} | ${fmt(e)} | ${fmt(f)} | ${fmt(p)} | ${fmt(s)} | ` +
      `${ratio(s, e)} | ${ratio(s, f)} | ${ratio(s, p)} |`,
  );
}
console.log(lines.join("\n"));
