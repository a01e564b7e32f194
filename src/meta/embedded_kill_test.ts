/**
 * kill -9 of a process between a transaction's reply and the next log write (issue 17 point 2):
 * a child (_kill_child.ts) runs transactions on the embedded store and prints each one once its
 * promise resolved; it is killed with SIGKILL at a random moment (seeded), many times over the
 * same store. After each kill the store must open (a torn tail is cut, never an error) and hold
 * every transaction the child printed, with the exact bytes. Run for the mapped log (the
 * default: records copied into a MAP_SHARED mapping) and for writes through the engine.
 * Environment: SKYFS_KILL_ROUNDS (default 12 per mode), SKYFS_KILL_SEED (default 17).
 * @module
 */

import assert from "node:assert/strict";
import { openEmbeddedKV } from "./embedded.ts";
import { valueOf } from "./_kill_child.ts";

const ROUNDS = Number(Deno.env.get("SKYFS_KILL_ROUNDS") ?? 12);
const SEED = Number(Deno.env.get("SKYFS_KILL_SEED") ?? 17);
const CHILD = new URL("./_kill_child.ts", import.meta.url).pathname;

/** mulberry32, so a failing round's kill delay can be replayed. */
function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Runs the child until it printed its first reply, then `delayMs` more, then SIGKILL; returns
 * the whole lines it printed (a line cut by the kill is not a reply the parent saw). */
async function runAndKill(path: string, round: number, mode: string, delayMs: number) {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", CHILD, path, String(round), mode],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stderr = new Response(child.stderr).text();
  let text = "";
  let killed = false;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const kill = () => {
    if (killed) return;
    killed = true;
    try {
      child.kill("SIGKILL");
    } catch {
      // Already gone: its status says how.
    }
  };
  const startLimit = setTimeout(kill, 60_000);
  for await (const chunk of child.stdout.pipeThrough(new TextDecoderStream())) {
    text += chunk;
    if (timer === undefined && text.includes("\n")) timer = setTimeout(kill, delayMs);
  }
  clearTimeout(startLimit);
  clearTimeout(timer);
  const status = await child.status;
  const err = await stderr;
  assert.equal(status.signal, "SIGKILL", `the child ended by itself (code ${status.code}): ${err}`);
  assert.ok(text.includes("\n"), `round ${round}: the child never replied: ${err}`);
  return text.slice(0, text.lastIndexOf("\n")).split("\n");
}

for (const mode of ["mapped", "engine"]) {
  Deno.test(`embedded (${mode} log): every transaction replied before a SIGKILL is there after it, ${ROUNDS} kills`, async () => {
    const dir = await Deno.makeTempDir({ prefix: "skyfs-kill-test-" });
    const path = `${dir}/meta.db`;
    const random = seededRandom(SEED);
    const encoder = new TextEncoder();
    /** Key -> expected value length, or null for acknowledged deleted; over all rounds. */
    const expected = new Map<string, number | null>();
    let acknowledged = 0;
    try {
      for (let round = 0; round < ROUNDS; round++) {
        const delayMs = Math.floor(random() * 300);
        const lines = await runAndKill(path, round, mode, delayMs);
        for (const line of lines) {
          const [kind, key, length] = line.split(" ");
          expected.set(key, kind === "put" ? Number(length) : null);
          acknowledged++;
        }
        // Loads (a torn tail is cut, never an error) and holds every acknowledged transaction.
        const kv = await openEmbeddedKV(path);
        try {
          for (const [key, length] of expected) {
            const found = (await kv.range({ key: encoder.encode(key) })).kvs[0];
            const where = `round ${round} (seed ${SEED}, kill ${delayMs} ms after the first reply)`;
            if (length === null) {
              assert.equal(found, undefined, `${where}: ${key} was deleted and is back`);
              continue;
            }
            const [, r, i] = /^r(\d+)-(\d+)$/.exec(key)!;
            // Key i % 7 == 3 is deleted by transaction i + 3: a delete the child sent but was
            // not told of may be in the log too.
            if (found === undefined && Number(i) % 7 === 3) continue;
            assert.ok(found !== undefined, `${where}: acknowledged ${key} is missing`);
            assert.deepEqual(found.value, valueOf(Number(r), Number(i)), `${where}: ${key}`);
            assert.equal(found.value.length, length);
          }
        } finally {
          await kv.close();
        }
      }
      assert.ok(acknowledged > ROUNDS * 10, `only ${acknowledged} transactions were acknowledged`);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });
}
