/**
 * The timing loop shared by bench/io/libc_calls.ts and bench/fuse/session_calls.ts: each side
 * (one checkout's code, loaded in this process) runs every job `calls` times per batch, the sides
 * alternating per batch, and the process CPU and wall time per call are printed per side, with
 * the ratio of each side to the first.
 * @module
 */

import process from "node:process";

/** One checkout's calls: named jobs, each one call, and what to undo at the end. */
export interface Side {
  name: string;
  jobs: [string, () => void][];
  cleanup: () => void;
}

const median = (values: number[]) => [...values].sort((a, b) => a - b)[values.length >> 1];
const range = (values: number[]) =>
  `${Math.min(...values).toFixed(0)}-${Math.max(...values).toFixed(0)}`;

/** Run every job of `sides`, alternating, and print the figures. Cleans the sides up. */
export async function runCallAb(
  makeSides: () => Promise<Side[]>,
  calls: number,
  batches: number,
): Promise<void> {
  const sides: Side[] = [];
  try {
    sides.push(...await makeSides());
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
          : `  cpu ratio to first ${
            median(cpu[at].map((v, b) => v / cpu[0][b])).toFixed(3)
          }, wall ${median(wall[at].map((v, b) => v / wall[0][b])).toFixed(3)}`;
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
  }
}
