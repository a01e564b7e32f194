/** Peer protocol over real TCP: requests answered, malformed and oversized frames close only
 * their own connection (with a log line); ring ownership moves little when a node leaves. */

import assert from "node:assert/strict";
import { listenPeers, PIECE_BYTES, TcpTransport } from "./transport.ts";
import {
  decodeGetRange,
  encodeFrame,
  encodeGetRange,
  FrameReader,
  FrameType,
  HEADER_BYTES,
  MAGIC,
} from "./peer_wire.ts";
import { Ring } from "./membership.ts";

const request = { ino: 2 ** 40 + 5, index: 3, version: "a-1", length: 5, crc: 1, objectLength: 5 };

Deno.test("peer transport: chunk requests, errors, malformed and oversized frames", async () => {
  const logs: string[] = [];
  const server = listenPeers("127.0.0.1", 0, (r) => {
    if (r.index === 99) return Promise.reject(new Error("no such chunk"));
    return Promise.resolve(new TextEncoder().encode(`${r.ino}/${r.index}/${r.version}`));
  }, (line) => logs.push(line));
  const client = new TcpTransport({ timeoutMs: 5000 });
  try {
    const answers = await Promise.all(
      [1, 2, 3].map((index) => client.getChunk(server.address, { ...request, index })),
    );
    assert.deepEqual(answers.map((a) => new TextDecoder().decode(a)), [
      `${request.ino}/1/a-1`,
      `${request.ino}/2/a-1`,
      `${request.ino}/3/a-1`,
    ]);
    await assert.rejects(client.getChunk(server.address, { ...request, index: 99 }), /no such/);
    const [host, port] = server.address.split(":");
    for (const bad of ["garbage!garbage!garbage!", "oversized"]) {
      const conn = await Deno.connect({ hostname: host, port: Number(port) });
      let bytes: Uint8Array = new TextEncoder().encode(bad);
      if (bad === "oversized") {
        bytes = encodeFrame(FrameType.GET_CHUNK, 1, new Uint8Array(0));
        new DataView(bytes.buffer).setUint32(12, 64 << 20);
      }
      await conn.write(bytes);
      assert.equal(await conn.read(new Uint8Array(16)), null, "server closed the connection");
      conn.close();
    }
    assert.equal(logs.length, 2, logs.join("\n"));
    assert.match(logs[0], /bad magic/);
    assert.match(logs[1], /payload of 67108864 bytes/);
    // The good client's connection was not affected.
    assert.equal((await client.getChunk(server.address, request)).length > 0, true);
  } finally {
    client.close();
    server.close();
  }
});

Deno.test("frame reader: split frames reassemble, wrong version is rejected", () => {
  const frame = encodeFrame(FrameType.CHUNK, 7, new Uint8Array([1, 2, 3]));
  const reader = new FrameReader();
  assert.deepEqual(reader.push(frame.subarray(0, 10)), []);
  const [out] = reader.push(frame.subarray(10));
  assert.equal(out.requestId, 7);
  assert.deepEqual(out.payload, new Uint8Array([1, 2, 3]));
  const bad = frame.slice();
  bad[4] = 3;
  assert.equal(new DataView(bad.buffer).getUint32(0), MAGIC);
  assert.throws(() => new FrameReader().push(bad), /protocol version 3/);
  assert.equal(HEADER_BYTES, 16);
});

Deno.test("frames: GET_RANGE is version 2 and stays inside its chunk; v1 has no type 4", () => {
  const range = { ...request, length: 1000, offset: 100, rangeLength: 900 };
  const frame = encodeFrame(FrameType.GET_RANGE, 9, encodeGetRange(range));
  assert.equal(frame[4], 2);
  const [out] = new FrameReader().push(frame);
  assert.deepEqual(decodeGetRange(out.payload), range);
  assert.throws(
    () => decodeGetRange(encodeGetRange({ ...range, rangeLength: 901 })),
    /outside a chunk of 1000 bytes/,
  );
  const v1 = frame.slice();
  v1[4] = 1;
  assert.throws(() => new FrameReader().push(v1), /unknown frame type 4 \(version 1\)/);
  // Every other frame still goes out as version 1, which older nodes read.
  assert.equal(encodeFrame(FrameType.GET_CHUNK, 1, new Uint8Array(0))[4], 1);
});

Deno.test("ring: every node owns some chunks; removing one moves only its chunks", () => {
  const nodes = ["a", "b", "c"].map((id) => ({ id, address: id, startedMs: 0 }));
  const full = new Ring(nodes);
  const less = new Ring(nodes.filter((n) => n.id !== "c"));
  const owned = new Map<string, number>();
  let moved = 0;
  for (let i = 0; i < 3000; i++) {
    const before = full.owner(`${i}/0`)!.id;
    owned.set(before, (owned.get(before) ?? 0) + 1);
    if (before !== "c" && less.owner(`${i}/0`)!.id !== before) moved++;
  }
  for (const id of ["a", "b", "c"]) {
    assert.ok((owned.get(id) ?? 0) > 500, `${id}: ${owned.get(id)}`);
  }
  assert.equal(moved, 0);
});

Deno.test("peer transport: streamed chunks in order; a failing body or sink fails only its request", async () => {
  const logs: string[] = [];
  const chunk = new Uint8Array(PIECE_BYTES * 3 + 1234).map((_, i) => (i * 7) % 251);
  let done = 0;
  const server = listenPeers("127.0.0.1", 0, (r) =>
    Promise.resolve({
      length: chunk.length,
      read: (into: Uint8Array, offset: number) => {
        if (r.index === 66 && offset > 0) return Promise.reject(new Error("evicted"));
        into.set(chunk.subarray(offset, offset + into.length));
        return Promise.resolve();
      },
      done: () => void done++,
    }), (line) => logs.push(line));
  const client = new TcpTransport({ timeoutMs: 5000 });
  const receive = (index: number, failAt = -1) => {
    const out = new Uint8Array(chunk.length);
    let next = 0;
    return client.getChunkInto(server.address, { ...request, index }, (piece, offset) => {
      assert.equal(offset, next, "pieces arrive in order");
      if (offset >= failAt && failAt >= 0) throw new Error("disk full");
      out.set(piece, offset);
      next += piece.length;
    }).then(() => out);
  };
  try {
    // Several streams in flight on one connection, interleaved with a buffered request.
    const [x, y, z] = await Promise.all([receive(1), receive(2), receive(3)]);
    for (const got of [x, y, z]) assert.deepEqual(got, chunk);
    // A sink that fails: its request rejects, the frame is drained, the connection goes on.
    await assert.rejects(receive(4, PIECE_BYTES), /disk full/);
    assert.deepEqual(await receive(5), chunk);
    // A body that fails after the header: the server closes that connection with a log line.
    await assert.rejects(receive(66), /closed the connection|mid-frame|reset|broken/i);
    assert.match(logs.join("\n"), /changed while being sent/);
    assert.deepEqual(await receive(7), chunk, "a new connection serves the next request");
    assert.equal(done, 7, "every body was released");
  } finally {
    client.close();
    server.close();
  }
});
