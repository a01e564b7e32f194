/** Tests of the log payload writer: frames taken from a shared ByteArena. */

import assert from "node:assert/strict";
import { ByteArena, ByteReader, ByteWriter } from "./log_codec.ts";
import { FRAME_HEADER_BYTES, scanFrames } from "./log_file.ts";

function write(w: ByteWriter, n: number, payload: Uint8Array): Uint8Array {
  w.u8(n);
  w.f64(n * 1.5);
  w.bytes(payload);
  w.u32(n);
  w.setF64At(1, n * 2.5);
  return w.frame();
}

Deno.test("ByteArena: frames written one after another keep their bytes, as in buffers of their own", () => {
  const arena = new ByteArena(4096);
  const frames: Uint8Array[] = [];
  const expected: Uint8Array[] = [];
  for (let n = 0; n < 200; n++) {
    // Some outgrow the room they asked for (and move out of the arena), some fill it up.
    const payload = new Uint8Array((n * 37) % 1500).fill(n & 0xff);
    frames.push(write(new ByteWriter(n % 3 === 0 ? 64 : 1024, arena), n, payload));
    expected.push(write(new ByteWriter(), n, payload));
  }
  for (let n = 0; n < 200; n++) {
    assert.deepEqual(frames[n], expected[n], `frame ${n}`);
    // Each frame scans as one whole frame, and its payload reads back.
    const payloads: Uint8Array[] = [];
    assert.equal(scanFrames(frames[n].slice(), (p) => void payloads.push(p)), frames[n].length);
    const r = new ByteReader(payloads[0]);
    assert.equal(r.u8(), n & 0xff);
    assert.equal(r.f64(), n * 2.5);
    assert.equal(r.bytes().length, (n * 37) % 1500);
    assert.equal(r.u32(), n);
  }
  // Frames in the same arena buffer do not overlap.
  const inArena = frames.filter((f) => f.buffer.byteLength === 4096);
  assert.ok(inArena.length > 10);
  for (let i = 1; i < inArena.length; i++) {
    const [a, b] = [inArena[i - 1], inArena[i]];
    if (a.buffer !== b.buffer) continue;
    assert.ok(a.byteOffset + a.length <= b.byteOffset);
  }
  assert.ok(frames.every((f) => f.length >= FRAME_HEADER_BYTES));
});
