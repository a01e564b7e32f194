/**
 * The cost of one synchronous call of src/io/libc.ts (src/io/README.md, "Synchronous system calls
 * and errno"), for one or more checkouts loaded into the same process: openC + close of an
 * existing file, pread of 4 KiB and of 0 bytes from the page cache, fstat, statC of an existing
 * path and statC of a missing one with `quiet` ENOENT (the failure path). Each batch of CALLS calls
 * runs every checkout in turn (the order rotating from batch to batch); prints, per call and
 * checkout, the median and range over BATCHES batches in ns per call of wall time and of process
 * CPU time, the median of the per-batch ratios to the first checkout, and the load average.
 *
 * Usage: deno run -A bench/io/libc_calls.ts [--calls 100000] [--batches 9] [--dir /var/tmp]
 *        CHECKOUT [CHECKOUT...]      (e.g. /work/base /work/hN: before, then after)
 * @module
 */
import process from "node:process";
import { parseArgs } from "node:util";

const { values, positionals } = parseArgs({
  args: Deno.args,
  allowPositionals: true,
  options: {
    calls: { type: "string", default: "100000" },
    batches: { type: "string", default: "9" },
    dir: { type: "string", default: "/var/tmp" },
    help: { type: "boolean", short: "h" },
  },
});
const usage = "usage: libc_calls.ts [--calls N] [--batches N] [--dir DIR] CHECKOUT [CHECKOUT...]";
if (values.help || positionals.length === 0) {
  console.log(usage);
  Deno.exit(values.help ? 0 : 2);
}
const calls = Number(values.calls);
const batches = Number(values.batches);
if (!Number.isInteger(calls) || calls < 1 || !Number.isInteger(batches) || batches < 1) {
  console.error(`libc_calls: --calls and --batches must be whole numbers above 0; ${usage}`);
  Deno.exit(2);
}

interface Side {
  name: string;
  jobs: [string, () => void][];
  cleanup: () => void;
}

const ENOENT = 2;
const dir = await Deno.makeTempDir({ dir: values.dir, prefix: "libc-calls-" });
const encode = (path: string) => new TextEncoder().encode(`${path}\0`);
const file = `${dir}/f`;
await Deno.writeFile(file, new Uint8Array(1 << 20).fill(1));

async function side(tree: string): Promise<Side> {
  const root = await Deno.realPath(tree).catch(() => {
    console.error(`libc_calls: no checkout at ${tree}: give the path of a skyfs worktree`);
    Deno.exit(2);
  });
  const libc = await import(`${root}/src/io/libc.ts`);
  const cFile = encode(file);
  const cMissing = encode(`${dir}/missing`);
  const fd = libc.open(file, libc.O_RDONLY);
  const page = new Uint8Array(4096);
  const none = new Uint8Array(0);
  return {
    name: tree,
    jobs: [
      ["openC+close", () => libc.close(libc.openC(cFile, libc.O_RDONLY))],
      ["pread 4 KiB", () => libc.pread(fd, page, 8192)],
      ["pread 0 B", () => libc.pread(fd, none, 0)],
      ["fstat", () => libc.fstat(fd)],
      ["statC", () => libc.statC(cFile)],
      ["statC ENOENT", () => libc.statC(cMissing, ENOENT)],
    ],
    cleanup: () => libc.close(fd),
  };
}

const median = (values: number[]) => [...values].sort((a, b) => a - b)[values.length >> 1];
const range = (values: number[]) =>
  `${Math.min(...values).toFixed(0)}-${Math.max(...values).toFixed(0)}`;

const sides: Side[] = [];
try {
  for (const tree of positionals) sides.push(await side(tree));
  const load = async () => (await Deno.readTextFile("/proc/loadavg")).split(" ").slice(0, 3);
  console.log(`load at start ${(await load()).join(" ")}; ${calls} calls x ${batches} batches`);
  for (let job = 0; job < sides[0].jobs.length; job++) {
    const wall = sides.map(() => [] as number[]);
    const cpu = sides.map(() => [] as number[]);
    for (const s of sides) for (let i = 0; i < 20000; i++) s.jobs[job][1](); // JIT, FFI fast path
    for (let b = 0; b < batches; b++) {
      for (let k = 0; k < sides.length; k++) {
        const at = (k + b) % sides.length;
        const call = sides[at].jobs[job][1];
        const c0 = process.cpuUsage();
        const t0 = performance.now();
        for (let i = 0; i < calls; i++) call();
        const t1 = performance.now();
        const c1 = process.cpuUsage();
        wall[at].push(((t1 - t0) * 1e6) / calls);
        cpu[at].push(((c1.user + c1.system - c0.user - c0.system) * 1e3) / calls);
      }
    }
    for (let at = 0; at < sides.length; at++) {
      const ratio = at === 0
        ? ""
        : `  cpu ratio to first ${median(cpu[at].map((v, b) => v / cpu[0][b])).toFixed(3)}, wall ${
          median(wall[at].map((v, b) => v / wall[0][b])).toFixed(3)
        }`;
      console.log(
        `${sides[0].jobs[job][0].padEnd(13)} ${sides[at].name.padEnd(12)} cpu ${
          median(cpu[at]).toFixed(0).padStart(5)
        } ns (${range(cpu[at])})  wall ${median(wall[at]).toFixed(0).padStart(5)} ns (${
          range(wall[at])
        })${ratio}`,
      );
    }
  }
  console.log(`load at end ${(await load()).join(" ")}`);
} finally {
  for (const s of sides) s.cleanup();
  await Deno.remove(dir, { recursive: true });
}
