/** Micro-benchmark of EmbeddedKV, the metadata store on the path of every FUSE metadata op:
 * `deno run -A bench/meta_kv.ts [--count N] [--memory]` prints ops/s and latency per op (each op
 * awaited before the next: a put's latency includes its log write). */

import { parseArgs } from "node:util";
import { openEmbeddedKV } from "../src/meta/embedded.ts";
import { prefixEnd } from "../src/meta/kv.ts";

const { values: args } = parseArgs({
  options: {
    count: { type: "string", default: "20000" },
    memory: { type: "boolean", default: false },
    help: { type: "boolean", default: false },
  },
});
if (args.help) {
  console.log(
    "usage: deno run -A bench/meta_kv.ts [--count N] [--memory]",
  );
  Deno.exit(0);
}
const count = Number(args.count);
if (!Number.isSafeInteger(count) || count < 1) {
  console.error(`Invalid --count "${args.count}": give a positive integer`);
  Deno.exit(2);
}

const dir = args.memory
  ? undefined
  : await Deno.makeTempDir({ dir: "/tmp", prefix: "meta-bench-" });
const kv = await openEmbeddedKV(dir === undefined ? ":memory:" : `${dir}/meta.db`);
const encoder = new TextEncoder();
// Keys and values shaped like the namespace's: short keys, ~100-byte inode records.
const keys = Array.from({ length: count }, (_, i) => encoder.encode(`i/${(i * 7919) % count}`));
const value = new Uint8Array(100).fill(1);

async function measure(name: string, n: number, op: (i: number) => Promise<unknown>) {
  const latencies = new Float64Array(n);
  const start = performance.now();
  for (let i = 0; i < n; i++) {
    const t = performance.now();
    await op(i);
    latencies[i] = performance.now() - t;
  }
  const ms = performance.now() - start;
  latencies.sort();
  const us = (q: number) => (latencies[Math.min(n - 1, Math.floor(q * n))] * 1000).toFixed(0);
  console.log(
    `${name.padEnd(40)} ${Math.round(n / (ms / 1000)).toString().padStart(7)} ops/s ` +
      `${((ms * 1000) / n).toFixed(1).padStart(7)} us mean, ` +
      `p50 ${us(0.5).padStart(4)} p99 ${us(0.99).padStart(5)} max ${us(1).padStart(6)} us`,
  );
}

console.log(
  `EmbeddedKV ${dir === undefined ? ":memory:" : "file"}, ${count} ops per line, ` +
    `Deno ${Deno.version.deno}`,
);
await measure("put, new key", count, (i) => kv.put({ key: keys[i], value }));
await measure("put, overwrite", count, (i) => kv.put({ key: keys[i], value }));
await measure("range, one key (get)", count, (i) => kv.range({ key: keys[i] }));
await measure("range, missing key", count, (i) => kv.range({ key: encoder.encode(`x/${i}`) }));
await measure("txn: 2 compares + 3 puts (like create)", count, (i) => {
  const entry = encoder.encode(`d/1/f${i}`);
  return kv.txn({
    compare: [
      { key: entry, target: "version", result: "==", value: 0 },
      { key: keys[0], target: "version", result: ">", value: 0 },
    ],
    success: [
      { put: { key: entry, value } },
      { put: { key: encoder.encode(`i/new${i}`), value } },
      { put: { key: keys[0], value } },
    ],
  });
});
await measure("txn: compare fails, read-only failure", count, (i) =>
  kv.txn({
    compare: [{ key: keys[i], target: "version", result: "==", value: 0 }],
    failure: [{ range: { key: keys[i] } }],
  }));
const dirPrefix = encoder.encode("dir/");
for (let i = 0; i < 100; i++) await kv.put({ key: encoder.encode(`dir/entry${i}`), value });
await measure(
  "range, prefix of 100 keys (readdir)",
  Math.max(1, count / 20),
  () => kv.range({ key: dirPrefix, rangeEnd: prefixEnd(dirPrefix) }),
);
const bigPrefix = encoder.encode("big/");
for (let i = 0; i < 1000; i++) await kv.put({ key: encoder.encode(`big/entry${i}`), value });
await measure(
  "range, prefix of 1000 keys (readdir)",
  Math.max(1, count / 100),
  () => kv.range({ key: bigPrefix, rangeEnd: prefixEnd(bigPrefix) }),
);
await measure(
  "put + sync() (fdatasync of the log)",
  Math.min(count, 500),
  (i) => kv.put({ key: keys[i], value }).then(() => kv.sync()),
);
let delivered = 0;
const watched = encoder.encode("i/");
const watcher = kv.watch({ key: watched, rangeEnd: prefixEnd(watched) }, { prevKv: true }, (e) => {
  delivered += e.length;
});
await measure("put, one prefix watcher with prevKv", count, (i) => kv.put({ key: keys[i], value }));
await new Promise((resolve) => setTimeout(resolve, 0));
watcher.cancel();
if (delivered !== count) throw new Error(`watcher saw ${delivered} events, expected ${count}`);
await kv.close();
if (dir !== undefined) await Deno.remove(dir, { recursive: true });
