/**
 * Child process of embedded_kill_test.ts: opens the embedded store at ARGV[0] (log written as
 * ARGV[2], "mapped" or "engine") and runs transactions forever, several per event-loop turn,
 * printing one line per transaction only after its promise resolved (the store's reply):
 * "put <key> <bytes>" or "del <key>". The parent kills it with SIGKILL at a random moment, then
 * checks that every printed transaction is in the store. A small compaction threshold makes log
 * switches happen during the run, and values up to 40 KiB make the mapped log grow often.
 */

import { openEmbeddedKV } from "./embedded.ts";

/** The value of key number `i`: its length and bytes follow from `i`, so the parent can check. */
export function valueOf(round: number, i: number): Uint8Array {
  const length = i % 10 === 9 ? 40_000 + i : 1 + (i * 131) % 2000;
  return new Uint8Array(length).fill((round * 31 + i) % 251);
}

if (import.meta.main) {
  const [path, roundText, logWrites] = Deno.args;
  if (logWrites !== "mapped" && logWrites !== "engine") {
    throw new Error(`_kill_child.ts: log mode "${logWrites}" is not mapped or engine`);
  }
  const round = Number(roundText);
  const kv = await openEmbeddedKV(path, {
    logWrites,
    logCompactBytes: 256 * 1024,
    timerIntervalMs: 5,
  });
  const encoder = new TextEncoder();
  const out = Deno.stdout.writable.getWriter();

  let next = 0;
  for (;;) {
    const batch: Promise<string>[] = [];
    for (let n = 1 + next % 4; n > 0; n--) {
      const i = next++;
      const key = `r${round}-${i}`;
      if (i % 7 === 6) {
        // Delete an earlier key of this round (acknowledged or not).
        const gone = `r${round}-${i - 3}`;
        batch.push(kv.deleteRange({ key: encoder.encode(gone) }).then(() => `del ${gone}`));
      } else {
        const value = valueOf(round, i);
        batch.push(
          kv.put({ key: encoder.encode(key), value }).then(() => `put ${key} ${value.length}`),
        );
      }
    }
    // Each line as its own transaction's reply arrives.
    await Promise.all(batch.map((p) => p.then((line) => out.write(encoder.encode(line + "\n")))));
  }
}
