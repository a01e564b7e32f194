/** Tests of the spin policy: what it learns from hits, misses and wake-up latencies. */

import assert from "node:assert/strict";
import { SpinPolicy } from "./uring_spin.ts";

Deno.test("spin: a hit keeps the spin; base 0 never spins", () => {
  const spin = new SpinPolicy({ baseUs: 50, maxUs: 300 });
  assert.equal(spin.next(), 50_000);
  spin.spun(0, true);
  assert.equal(spin.next(), 50_000);
  const off = new SpinPolicy({ baseUs: 0, maxUs: 0 });
  off.woke(1);
  assert.equal(off.next(), 0);
});

Deno.test("spin: a miss answered soon after grows the spin to 1.25x the latency", () => {
  const spin = new SpinPolicy({ baseUs: 50, maxUs: 300 });
  spin.spun(10, false);
  spin.woke(10.12); // 120 us after the submit
  assert.equal(spin.next(), 150_000);
  spin.spun(20, false);
  spin.woke(20.5); // 500 us: beyond the cap -> back off 2 submits, then restart from base
  assert.deepEqual([spin.next(), spin.next(), spin.next()], [0, 0, 50_000]);
});

Deno.test("spin: growth is capped and misses before a verdict back off further", () => {
  const spin = new SpinPolicy({ baseUs: 50, maxUs: 300 });
  spin.spun(0, false);
  spin.woke(0.29);
  assert.equal(spin.next(), 300_000);
  spin.spun(1, false);
  spin.spun(2, false); // second miss while the first still waits: back off
  assert.deepEqual([spin.next(), spin.next(), spin.next()], [0, 0, 50_000]);
  spin.spun(3, false);
  spin.spun(4, false);
  const skipped = Array.from({ length: 5 }, () => spin.next());
  assert.deepEqual(skipped, [0, 0, 0, 0, 50_000]);
  assert.throws(() => new SpinPolicy({ baseUs: 10, maxUs: 5 }), RangeError);
});
