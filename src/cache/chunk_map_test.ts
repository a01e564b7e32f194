import assert from "node:assert/strict";
import { crc32 } from "node:zlib";
import {
  CHUNK_SIZE,
  type ChunkMap,
  decodeChunkMap,
  encodeChunkMap,
  fromBase64,
  hasInline,
  toBase64,
  truncateChunkMap,
  withoutInline,
} from "./chunk_map.ts";

const text = (bytes: Uint8Array) => JSON.parse(new TextDecoder().decode(bytes));

Deno.test("chunk map: without inline chunks format 1, as written before (and read)", () => {
  const map: ChunkMap = new Map([
    [1, { version: "a-2", length: 10, crc: 7, objectLength: 10 }],
    [0, { version: "a-1", length: CHUNK_SIZE, crc: 5, objectLength: CHUNK_SIZE, zones: ["z1"] }],
  ]);
  const encoded = encodeChunkMap(map);
  assert.deepEqual(text(encoded), {
    v: 1,
    c: [[0, "a-1", CHUNK_SIZE, 5, CHUNK_SIZE, ["z1"]], [1, "a-2", 10, 7, 10]],
  });
  assert.deepEqual(decodeChunkMap(encoded), map);
  // Written by an older build (no objectLength): still read.
  const old = new TextEncoder().encode(JSON.stringify({ v: 1, c: [[0, "x", 3, 9]] }));
  assert.deepEqual(decodeChunkMap(old).get(0), {
    version: "x",
    length: 3,
    crc: 9,
    objectLength: undefined,
  });
});

Deno.test("chunk map: an inline chunk is format 2, its bytes round trip; truncate cuts them", () => {
  const data = new Uint8Array(65536).map((_, i) => (i * 7) & 0xff);
  const ref = { version: "n-1", length: data.length, crc: crc32(data), objectLength: data.length };
  const map: ChunkMap = new Map([[0, { ...ref, inline: data }]]);
  assert.ok(hasInline(map));
  const encoded = encodeChunkMap(map);
  assert.equal(text(encoded).v, 2);
  assert.ok(encoded.length < 96 << 10, `${encoded.length} bytes: fits the namespace cache`);
  const back = decodeChunkMap(encoded);
  assert.deepEqual(back.get(0)!.inline, data);
  assert.deepEqual(withoutInline(back), new Map([[0, ref]]));
  assert.ok(!hasInline(withoutInline(back)));
  const cut = truncateChunkMap(back, 100).get(0)!;
  assert.deepEqual(cut.inline, data.subarray(0, 100));
  assert.equal(cut.length, 100);
  assert.equal(cut.objectLength, 100);
  assert.equal(cut.crc, crc32(data.subarray(0, 100)));
  assert.equal(truncateChunkMap(back, 0).size, 0);
  // A longer size leaves it as it is.
  assert.deepEqual(truncateChunkMap(back, 1 << 20).get(0), back.get(0));
});

Deno.test("chunk map: inline bytes are standard padded base64, as older builds wrote and read", () => {
  // What older builds wrote: btoa of the bytes as a binary string.
  const old = (bytes: Uint8Array) =>
    btoa(Array.from(bytes, (b) => String.fromCharCode(b)).join(""));
  for (const size of [0, 1, 2, 3, 4, 1023, 1024, 1025, 65535, 65536]) {
    const data = new Uint8Array(size).map((_, i) => (i * 131 + size) & 0xff);
    assert.equal(toBase64(data), old(data), `${size} bytes`);
    assert.deepEqual(fromBase64(old(data)), data, `${size} bytes`);
    const ref = { version: "o-1", length: size, crc: crc32(data), objectLength: size };
    const written = new TextEncoder().encode(
      JSON.stringify({ v: 2, c: [[0, "o-1", size, ref.crc, size]], i: [[0, old(data)]] }),
    );
    assert.deepEqual(decodeChunkMap(written).get(0), { ...ref, inline: data });
    assert.deepEqual(text(encodeChunkMap(new Map([[0, { ...ref, inline: data }]]))).i, [[
      0,
      old(data),
    ]]);
  }
});

Deno.test("chunk map: an unknown format is one line naming it", () => {
  const bad = new TextEncoder().encode(JSON.stringify({ v: 3, c: [] }));
  assert.throws(() => decodeChunkMap(bad), /format 3; this build reads 1 and 2/);
});
