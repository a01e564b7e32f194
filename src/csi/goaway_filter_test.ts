import assert from "node:assert/strict";
import { GoawayFilter } from "./goaway_filter.ts";

const PREFACE = new TextEncoder().encode("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");

function frame(type: number, streamId: number, payload: number[]): Uint8Array {
  const length = payload.length;
  return new Uint8Array([
    (length >> 16) & 0xff,
    (length >> 8) & 0xff,
    length & 0xff,
    type,
    0,
    (streamId >>> 24) & 0x7f,
    (streamId >>> 16) & 0xff,
    (streamId >>> 8) & 0xff,
    streamId & 0xff,
    ...payload,
  ]);
}

function join(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

const settings = frame(0x4, 0, [0, 3, 0, 0, 0, 100]);
const headers = frame(0x1, 1, [0x82, 0x86, 0x84]);
const data = frame(0x0, 1, Array.from({ length: 300 }, (_, i) => i & 0xff));
const goaway = frame(0x7, 0, [0, 0, 0, 1, 0, 0, 0, 0]);
const ping = frame(0x6, 0, [1, 2, 3, 4, 5, 6, 7, 8]);

Deno.test("GoawayFilter drops GOAWAY frames, whatever the chunking", () => {
  const input = join(PREFACE, settings, headers, goaway, data, ping, goaway);
  const expected = join(PREFACE, settings, headers, data, ping);
  for (const size of [1, 2, 7, 9, 10, 24, 25, 64, 1000]) {
    const filter = new GoawayFilter();
    const out: Uint8Array[] = [];
    for (let at = 0; at < input.length; at += size) {
      out.push(filter.push(input.slice(at, at + size)));
    }
    assert.deepEqual(join(...out), expected, `chunks of ${size}`);
    assert.equal(filter.dropped, 2);
  }
});

Deno.test("GoawayFilter holds a partial frame until it is whole", () => {
  const filter = new GoawayFilter();
  assert.deepEqual(filter.push(PREFACE), PREFACE);
  assert.equal(filter.push(headers.slice(0, 5)).length, 0);
  assert.deepEqual(filter.push(headers.slice(5)), headers);
});

Deno.test("GoawayFilter refuses a frame longer than HTTP/2 allows", () => {
  const filter = new GoawayFilter();
  filter.push(PREFACE);
  assert.throws(
    () => filter.push(new Uint8Array([0x20, 0, 0, 0, 0, 0, 0, 0, 1])),
    RangeError,
  );
});
