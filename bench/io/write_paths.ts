/**
 * Where the time of 4 KiB random buffered writes at queue depth 32 goes (issue 4's unmet goal):
 * the io_uring engine buffered and with O_DIRECT, a synchronous pwrite on the JS thread (the
 * portable engine) and Deno.FsFile, 5 interleaved rounds of 1 s on one existing file.
 *
 * Usage: deno run -A bench/io/write_paths.ts FILE   (FILE: at least 256 MiB, e.g. made by fio)
 * @module
 */
import { alignedBuffer } from "../../src/io/mod.ts";
import { openUringEngine } from "../../src/io/uring.ts";
import { createPortableEngine } from "../../src/io/portable.ts";
import type { IoEngine } from "../../src/io/types.ts";
const path = Deno.args[0];
if (path === undefined) throw new RangeError("Usage: deno run -A bench/io/write_paths.ts FILE");
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
  "uring buffered": () => viaEngine(openUringEngine({ queueDepth: 32 }), O_RDWR),
  "uring O_DIRECT": () => viaEngine(openUringEngine({ queueDepth: 32 }), O_RDWR | O_DIRECT),
  "portable buffered (sync pwrite)": () => viaEngine(createPortableEngine(), O_RDWR),
  "Deno.FsFile buffered": fsFile,
};
const res: Record<string, number[]> = {};
for (let r = 0; r < 5; r++) {
  for (const [k, f] of Object.entries(paths)) (res[k] ??= []).push(await f());
}
const med = (a: number[]) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];
const base = med(res["Deno.FsFile buffered"]);
for (const [k, v] of Object.entries(res)) {
  console.log(
    `${k.padEnd(34)} median ${(med(v) / 1000).toFixed(1)}k IOPS  (${
      v.map((x) => (x / 1000).toFixed(0)).join(" ")
    })  / FsFile ${(med(v) / base).toFixed(2)}x`,
  );
}
