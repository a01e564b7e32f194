/**
 * Where the time of 4 KiB random buffered writes at queue depth 32 goes (issue 4's hardest goal):
 * the io_uring engine as shipped (IOSQE_ASYNC on buffered writes, DEFER_TASKRUN ring, polled
 * spins), without IOSQE_ASYNC, without the poll, with the older ring setups, with O_DIRECT, a
 * synchronous pwrite on the JS thread (the portable engine) and Deno.FsFile, in interleaved rounds
 * of 1 s on one existing file.
 *
 * Usage: deno run -A bench/io/write_paths.ts FILE [ROUNDS] [PATH,...]
 *   FILE: at least 256 MiB (e.g. made by fio); ROUNDS default 5; PATH: keys of `paths` below
 *   (default all; fsfile, the baseline, always runs)
 * @module
 */
import { alignedBuffer } from "../../src/io/mod.ts";
import { openUringEngine, type UringEngineOptions } from "../../src/io/uring.ts";
import { createPortableEngine } from "../../src/io/portable.ts";
import type { IoEngine } from "../../src/io/types.ts";
const [path, roundsArg, only] = Deno.args;
if (path === undefined) {
  throw new RangeError("Usage: deno run -A bench/io/write_paths.ts FILE [ROUNDS] [PATH,...]");
}
if (Deno.statSync(path).size < 256 * 1024 * 1024) {
  throw new RangeError(
    `"${path}" is smaller than 256 MiB: write it first (fio --rw=write --size=256M)`,
  );
}
const size = 256 * 1024 * 1024, QD = 32, MS = 1000;
const O_RDWR = 2, O_DIRECT = 0o40000;
async function workers(once: (id: number, b: Uint8Array, off: number) => Promise<number>) {
  const t0 = performance.now(), end = t0 + MS;
  let ops = 0;
  await Promise.all(Array.from({ length: QD }, async (_, id) => {
    const b = alignedBuffer(4096).fill(id + 1);
    for (let i = 0;; i++) {
      if ((i & 7) === 0 && performance.now() >= end) return;
      const off = Math.floor(Math.random() * (size / 4096)) * 4096;
      const n = await once(id, b, off);
      if (n !== 4096) throw new Error("short");
      ops++;
    }
  }));
  return ops / ((performance.now() - t0) / 1000);
}
async function viaEngine(io: IoEngine, flags: number) {
  const fd = await io.open(path, flags);
  try {
    return await workers((_, b, o) => io.write(fd, b, o));
  } finally {
    await io.close(fd);
    await io.shutdown();
  }
}
const uring = (options: UringEngineOptions, flags = O_RDWR) => () =>
  viaEngine(openUringEngine({ queueDepth: QD, ...options }), flags);
async function fsFile() {
  const files = await Promise.all(
    Array.from({ length: QD }, () => Deno.open(path, { read: true, write: true })),
  );
  try {
    return await workers(async (id, b, o) => {
      await files[id].seek(o, Deno.SeekMode.Start);
      return await files[id].write(b);
    });
  } finally {
    for (const f of files) f.close();
  }
}
const paths: Record<string, () => Promise<number>> = {
  /** As shipped: IOSQE_ASYNC on buffered writes, SINGLE_ISSUER | DEFER_TASKRUN ring. */
  shipped: uring({}),
  "no-async": uring({ asyncBufferedWrites: false }),
  "no-poll": uring({ pollUs: 0 }),
  "async-coop": uring({ ringSetup: "coop" }),
  "async-plain": uring({ ringSetup: "plain" }),
  /** The engine before IOSQE_ASYNC, DEFER_TASKRUN and the poll. */
  "no-async-plain": uring({ asyncBufferedWrites: false, ringSetup: "plain", pollUs: 0 }),
  "o-direct": uring({}, O_RDWR | O_DIRECT),
  /** Synchronous pwrite on the JS thread: not io_uring, for reference only. */
  portable: () => viaEngine(createPortableEngine(), O_RDWR),
  fsfile: fsFile,
};
const chosen = only ? only.split(",") : Object.keys(paths);
for (const name of chosen) {
  if (!(name in paths)) throw new RangeError(`unknown path "${name}": ${Object.keys(paths)}`);
}
if (!chosen.includes("fsfile")) chosen.push("fsfile");
const rounds = Number(roundsArg ?? 5);
const res: Record<string, number[]> = {};
for (let r = 0; r < rounds; r++) {
  for (const k of chosen) (res[k] ??= []).push(await paths[k]());
}
const med = (a: number[]) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];
const base = med(res.fsfile);
const load = Deno.readTextFileSync("/proc/loadavg").split(" ").slice(0, 3).join(" ");
console.log(`${rounds} rounds x ${MS} ms, QD ${QD}, load average ${load}`);
for (const [k, v] of Object.entries(res)) {
  console.log(
    `${k.padEnd(15)} median ${(med(v) / 1000).toFixed(1).padStart(6)}k IOPS  (${
      v.map((x) => (x / 1000).toFixed(0)).join(" ")
    })  / FsFile ${(med(v) / base).toFixed(2)}x`,
  );
}
