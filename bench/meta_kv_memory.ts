/** Memory, snapshot size and restart time of EmbeddedKV per file, with keys and values shaped like
 * the namespace's (an inode record of 96 bytes and a directory entry per file, one txn each):
 * `deno run -A --v8-flags=--expose-gc bench/meta_kv_memory.ts [FILES]` (default 200,000). */

import { openEmbeddedKV } from "../src/meta/embedded.ts";
import { keys } from "../src/meta/namespace.ts";

const files = Number(Deno.args[0] ?? 200_000);
if (!Number.isSafeInteger(files) || files < 1) {
  console.error(`Invalid file count "${Deno.args[0]}": give a positive integer`);
  Deno.exit(2);
}
const gc = (globalThis as unknown as { gc?: () => void }).gc;
if (gc === undefined) {
  console.error("Run with --v8-flags=--expose-gc: the figures need a full GC before and after");
  Deno.exit(2);
}
const used = () => {
  gc();
  gc();
  const m = Deno.memoryUsage();
  return m.heapUsed + m.external;
};

const dir = await Deno.makeTempDir({ dir: "/tmp", prefix: "meta-memory-" });
const encoder = new TextEncoder();
try {
  const before = used();
  // History of one revision: the figure is the state, not the watch history (bounded apart).
  const kv = await openEmbeddedKV(`${dir}/meta.db`, { historyRevisions: 1 });
  const start = performance.now();
  for (let i = 0; i < files; i++) {
    const ino = 1000 + i;
    const name = encoder.encode(`file-${String(i).padStart(7, "0")}`);
    await kv.txn({
      success: [
        { put: { key: keys.inode(ino), value: new Uint8Array(96).fill(i & 255) } },
        { put: { key: keys.dentry(1, name), value: new Uint8Array(9).fill(1) } },
      ],
    });
  }
  const seconds = (performance.now() - start) / 1000;
  await kv.compact(await kv.revision());
  await new Promise((resolve) => setTimeout(resolve, 400)); // the timer trims history
  const after = used();
  await kv.compactLog();
  const snapshot = kv.fileBytes.snapshot;
  await kv.close();
  const restartStart = performance.now();
  await (await openEmbeddedKV(`${dir}/meta.db`)).close();
  const restartMs = performance.now() - restartStart;
  console.log(
    `${files} files: ${((after - before) / files).toFixed(0)} bytes of memory per file, ` +
      `snapshot ${(snapshot / files).toFixed(0)} bytes per file, ` +
      `${(files / seconds).toFixed(0)} create txns/s (one at a time), ` +
      `restart from the snapshot ${restartMs.toFixed(0)} ms`,
  );
} finally {
  await Deno.remove(dir, { recursive: true });
}
