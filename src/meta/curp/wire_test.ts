/** The CURP frame codec: frames split anywhere decode whole, large frames included, and an
 * oversized length is refused. */

import assert from "node:assert/strict";
import { decodePayload, encodeFrame, FrameReader, MAX_FRAME_BYTES } from "./wire.ts";

Deno.test("curp wire: frames split at every size decode in order", () => {
  const bodies = [{ type: "a", n: 1 }, { type: "b", bytes: new Uint8Array([0, 255, 7]) }, {
    type: "c",
    s: "x".repeat(1000),
  }];
  const stream = new Uint8Array(bodies.reduce((n, b) => n + encodeFrame(b).length, 0));
  let at = 0;
  for (const b of bodies) {
    const f = encodeFrame(b);
    stream.set(f, at);
    at += f.length;
  }
  for (const piece of [1, 2, 3, 5, 7, 64, 1000, stream.length]) {
    const reader = new FrameReader();
    const out: unknown[] = [];
    for (let i = 0; i < stream.length; i += piece) {
      for (const p of reader.push(stream.subarray(i, i + piece))) out.push(decodePayload(p));
    }
    assert.deepEqual(out, bodies, `pieces of ${piece}`);
  }
});

Deno.test("curp wire: a 30 MB frame (a big snapshot) goes through in 64 KiB reads", () => {
  const body = { type: "snapshot", data: new Uint8Array(30 << 20).fill(9) };
  const frame = encodeFrame(body);
  const reader = new FrameReader();
  const buffer = new Uint8Array(64 * 1024); // reused between reads, as the read loop does
  const out: Uint8Array[] = [];
  for (let i = 0; i < frame.length; i += buffer.length) {
    const n = Math.min(buffer.length, frame.length - i);
    buffer.set(frame.subarray(i, i + n));
    out.push(...reader.push(buffer.subarray(0, n)));
  }
  assert.equal(out.length, 1);
  const decoded = decodePayload(out[0]) as { data: Uint8Array };
  assert.equal(decoded.data.length, 30 << 20);
  assert.ok(decoded.data.every((x) => x === 9));
});

Deno.test("curp wire: an oversized length is refused before its bytes arrive", () => {
  const header = new Uint8Array(4);
  new DataView(header.buffer).setUint32(0, MAX_FRAME_BYTES + 1);
  assert.throws(() => new FrameReader().push(header), /exceeds/);
});
