/**
 * The cost of one synchronous call of one checkout's src/io/libc.ts (src/io/README.md,
 * "Synchronous system calls and errno"): openC + close of an existing file, pread of 4 KiB and of
 * 0 bytes from the page cache, fstat, statC of an existing path and statC of a missing one with
 * `quiet` ENOENT (the failure path). Prints, per call, the median of BATCHES batches of CALLS
 * calls each, in ns per call of wall time and of process CPU time, with the load average.
 *
 * Usage: deno run -A bench/io/libc_calls.ts CHECKOUT [CALLS=100000] [BATCHES=7] [DIR=/var/tmp]
 * Run it for the old and the new checkout in turn, alternating, and compare the medians.
 * @module
 */
import process from "node:process";

const [tree, callsArg = "100000", batchesArg = "7", parent = "/var/tmp"] = Deno.args;
const calls = Number(callsArg);
const batches = Number(batchesArg);
if (!tree || tree === "--help" || tree === "-h") {
  console.log("usage: libc_calls.ts CHECKOUT [CALLS=100000] [BATCHES=7] [DIR=/var/tmp]");
  Deno.exit(tree ? 0 : 2);
}
if (!Number.isInteger(calls) || calls < 1 || !Number.isInteger(batches) || batches < 1) {
  console.error(`libc_calls: CALLS and BATCHES must be whole numbers above 0`);
  Deno.exit(2);
}
const root = await Deno.realPath(tree).catch(() => {
  console.error(`libc_calls: no checkout at ${tree}: give the path of a skyfs worktree`);
  Deno.exit(2);
});
const libc = await import(`${root}/src/io/libc.ts`);
const ENOENT = 2;
const dir = await Deno.makeTempDir({ dir: parent, prefix: "libc-calls-" });
const encode = (path: string) => new TextEncoder().encode(`${path}\0`);
try {
  const file = `${dir}/f`;
  await Deno.writeFile(file, new Uint8Array(1 << 20).fill(1));
  const cFile = encode(file);
  const cMissing = encode(`${dir}/missing`);
  const fd = libc.open(file, libc.O_RDONLY);
  const page = new Uint8Array(4096);
  const none = new Uint8Array(0);
  const jobs: [string, () => void][] = [
    ["openC+close", () => libc.close(libc.openC(cFile, libc.O_RDONLY))],
    ["pread 4 KiB", () => libc.pread(fd, page, 8192)],
    ["pread 0 B", () => libc.pread(fd, none, 0)],
    ["fstat", () => libc.fstat(fd)],
    ["statC", () => libc.statC(cFile)],
    ["statC ENOENT", () => libc.statC(cMissing, ENOENT)],
  ];
  const median = (values: number[]) => values.sort((a, b) => a - b)[values.length >> 1];
  for (const [name, call] of jobs) {
    for (let i = 0; i < 20000; i++) call(); // warm-up: the JIT and the FFI fast path
    const wall: number[] = [];
    const cpu: number[] = [];
    for (let b = 0; b < batches; b++) {
      const c0 = process.cpuUsage();
      const t0 = performance.now();
      for (let i = 0; i < calls; i++) call();
      const t1 = performance.now();
      const c1 = process.cpuUsage();
      wall.push(((t1 - t0) * 1e6) / calls);
      cpu.push(((c1.user + c1.system - c0.user - c0.system) * 1e3) / calls);
    }
    console.log(
      `${name.padEnd(13)} wall ${median(wall).toFixed(0).padStart(5)} ns  cpu ${
        median(cpu).toFixed(0).padStart(5)
      } ns  (wall ${Math.min(...wall).toFixed(0)}-${Math.max(...wall).toFixed(0)})`,
    );
  }
  libc.close(fd);
  console.log(
    `load ${(await Deno.readTextFile("/proc/loadavg")).split(" ").slice(0, 3).join(" ")}`,
  );
} finally {
  await Deno.remove(dir, { recursive: true });
}
