import { openEmbeddedKV } from "../src/meta/embedded.ts";
import { keys } from "../src/meta/namespace.ts";
const N = Number(Deno.args[0] ?? 200000);
const dir = await Deno.makeTempDir({ dir: "/tmp/metalog-mem" });
const gc = (globalThis as unknown as { gc: () => void }).gc;
gc();
gc();
const before = ((m) => m.heapUsed + m.external)(Deno.memoryUsage());
const kv = await openEmbeddedKV(`${dir}/meta.db`, { historyRevisions: 1 });
const enc = new TextEncoder();
const t0 = performance.now();
for (let i = 0; i < N; i++) {
  const ino = 1000 + i;
  await kv.txn({
    success: [
      { put: { key: keys.inode(ino), value: new Uint8Array(96).fill(i & 255) } },
      {
        put: {
          key: keys.dentry(1, enc.encode(`file-${String(i).padStart(7, "0")}`)),
          value: new Uint8Array(9).fill(1),
        },
      },
    ],
  });
}
const t1 = performance.now();
await kv.compact(await kv.revision());
await new Promise((r) => setTimeout(r, 400)); // timer trims history
gc();
gc();
const after = ((m) => m.heapUsed + m.external)(Deno.memoryUsage());
await kv.compactLog();
console.log(
  `files ${N}: heap ${((after - before) / N).toFixed(0)} bytes/file, snapshot ${
    (kv.fileBytes.snapshot / N).toFixed(0)
  } bytes/file, create txn ${(N / ((t1 - t0) / 1000)).toFixed(0)}/s`,
);
await kv.close();
const t2 = performance.now();
const again = await openEmbeddedKV(`${dir}/meta.db`);
console.log(`restart (snapshot ${N} files): ${(performance.now() - t2).toFixed(0)} ms`);
await again.close();
await Deno.remove(dir, { recursive: true });
