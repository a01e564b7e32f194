/**
 * What the steps of a cluster write cost per GiB on the writing node, through the io_uring engine
 * a mount uses: "local write", 1 MiB buffered writes into a new local file (each FUSE WRITE; the
 * later write-back to disk is the kernel flusher's, not counted); "local write O_DIRECT", the same
 * from an aligned buffer with O_DIRECT; "read back", an upload's read of each 4 MiB chunk from the
 * page-cached local file + its CRC; "staged", the 1 MiB writes copied into a pooled 4 MiB buffer
 * + the CRC instead. CPU seconds of this process (io-wq workers included) from /proc/self/stat,
 * alternating.
 *
 *   deno run -A bench/cluster/write_costs.ts [--mib 1024] [--rounds 5]
 * @module
 */
import { parseArgs } from "node:util";
import { crc32 } from "node:zlib";
import { openUringEngine } from "../../src/io/uring.ts";
import { recycleBuffer, takeBuffer } from "../../src/cache/buffer_pool.ts";
import { CHUNK_SIZE } from "../../src/cache/chunk_map.ts";
import { O_CREAT, O_DIRECT, O_TRUNC, O_WRONLY } from "../../src/io/libc.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    mib: { type: "string", default: "1024" },
    rounds: { type: "string", default: "5" },
    help: { type: "boolean", default: false },
  },
});
if (values.help) {
  console.log("deno run -A bench/cluster/write_costs.ts [--mib 1024] [--rounds 5]");
  Deno.exit(0);
}
const mib = Number(values.mib);
const rounds = Number(values.rounds);
if (!Number.isInteger(mib) || mib < 4 || mib % 4 !== 0) {
  console.error(`--mib ${values.mib}: use a whole multiple of 4`);
  Deno.exit(2);
}
if (!Number.isInteger(rounds) || rounds < 1) {
  console.error(`--rounds ${values.rounds}: use a whole number from 1`);
  Deno.exit(2);
}

const TICKS = 100; // USER_HZ
function cpuSeconds(): number {
  const stat = Deno.readTextFileSync("/proc/self/stat");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / TICKS; // utime, stime
}

const dir = await Deno.makeTempDir({ prefix: "write-costs-" });
const path = `${dir}/local`;
const write = new Uint8Array(1 << 20); // one FUSE WRITE's payload
crypto.getRandomValues(write.subarray(0, 65536));
for (let i = 65536; i < write.length; i += 65536) write.copyWithin(i, 0, 65536);
{
  const file = await Deno.open(path, { write: true, create: true });
  for (let i = 0; i < mib; i++) await file.write(write);
  file.close();
}
const io = openUringEngine();
const fd = await io.open(path, 0); // O_RDONLY
const chunks = mib / 4;

async function readBack(): Promise<void> {
  for (let index = 0; index < chunks; index++) {
    const data = takeBuffer(CHUNK_SIZE);
    let done = 0;
    while (done < data.length) {
      const n = await io.read(fd, data.subarray(done), index * CHUNK_SIZE + done);
      if (n === 0) break;
      done += n;
    }
    crc32(data);
    recycleBuffer(data);
  }
}

function staged(): void {
  for (let index = 0; index < chunks; index++) {
    const data = takeBuffer(CHUNK_SIZE);
    for (let at = 0; at < CHUNK_SIZE; at += write.length) data.set(write, at);
    crc32(data);
    recycleBuffer(data);
  }
}

let written = 0;
async function localWrite(direct: boolean): Promise<void> {
  const out = await io.open(
    `${dir}/written-${++written}`,
    O_WRONLY | O_CREAT | O_TRUNC | (direct ? O_DIRECT : 0),
    0o644,
  );
  const from = takeBuffer(1 << 20); // aligned (O_DIRECT needs it)
  from.set(write);
  try {
    for (let i = 0; i < mib; i++) await io.write(out, from, i * (1 << 20));
  } finally {
    recycleBuffer(from);
    await io.close(out);
  }
}

const results: Record<string, number[]> = {
  "local write": [],
  "local write O_DIRECT": [],
  "read back": [],
  staged: [],
};
try {
  await readBack(); // page cache warm, pool filled
  for (let round = 0; round < rounds; round++) {
    const names = Object.keys(results);
    for (const name of round % 2 ? names.reverse() : names) {
      const before = cpuSeconds();
      if (name === "staged") staged();
      else if (name === "read back") await readBack();
      else await localWrite(name !== "local write");
      results[name].push((cpuSeconds() - before) / (mib / 1024));
      // Outside the measured window: a written file's pages go with it.
      await Deno.remove(`${dir}/written-${written}`).catch(() => {});
    }
  }
} finally {
  await io.close(fd);
  await Deno.remove(dir, { recursive: true });
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
console.log(`${mib} MiB, ${rounds} rounds, load ${Deno.loadavg().join(" ")}`);
for (const [name, xs] of Object.entries(results)) {
  console.log(
    `${name}: CPU s per GiB median ${median(xs).toFixed(3)} (${
      xs.map((x) => x.toFixed(3)).join(", ")
    })`,
  );
}
Deno.exit(0);
