/** The CURP frame codec: frames split anywhere decode whole, large frames included, and an
 * oversized length is refused. */

import assert from "node:assert/strict";
import {
  CHECKED_VERSION,
  checkedPayloadWhole,
  decodePayload,
  decodeWirePayload,
  encodeCheckedFrame,
  encodeFrame,
  encodeFrameReusing,
  encodeFramesSharing,
  encodeJsonFrame,
  FrameReader,
  MAX_FRAME_BYTES,
  notePacked,
  packedBytesOf,
  skipPacked,
  startsAsSnapshot,
  WIRE_VERSION,
} from "./wire.ts";

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

Deno.test("curp wire: version 2 is MessagePack; byte strings, large integers and nesting survive", () => {
  const body = {
    type: "append",
    term: 2 ** 40,
    neg: -3,
    f: 0.25,
    entries: [{ index: 1, command: { key: new Uint8Array([0, 1, 255]), s: "é" } }],
    absent: undefined,
  };
  const frame = encodeFrame(body);
  assert.equal(frame[4], WIRE_VERSION);
  const out = decodeWirePayload(frame.subarray(4)) as Record<string, unknown>;
  // JSON left undefined fields out; so does version 2 ("field" in x means the same).
  assert.ok(!("absent" in out));
  const { absent: _, ...expected } = body;
  assert.deepEqual(out, expected);
  // A decoded byte string is a plain Uint8Array of its own, not a view of the frame.
  const key = (out.entries as Array<{ command: { key: Uint8Array } }>)[0].command.key;
  assert.equal(Object.getPrototypeOf(key), Uint8Array.prototype);
  assert.equal(key.byteLength, key.buffer.byteLength);
});

Deno.test("curp wire: a version 1 (JSON) frame is refused on the network, read from disk", () => {
  const body = { type: "propose", bytes: new Uint8Array([1, 2, 3]) };
  const old = encodeJsonFrame(body);
  assert.equal(old[4], 1);
  assert.throws(
    () => decodeWirePayload(old.subarray(4)),
    { name: "TypeError", message: "frame version 1, this build speaks 2" },
  );
  assert.deepEqual(decodePayload(old.subarray(4)), body);
  assert.deepEqual(decodePayload(encodeFrame(body).subarray(4)), body);
  assert.throws(
    () => decodePayload(new Uint8Array([7, 1])),
    { name: "TypeError", message: "frame version 7, this build reads 1, 2 and 3" },
  );
});

Deno.test("curp wire: a version 3 (checked) frame is read from disk, refused on the network, and a bit flipped fails its CRC", () => {
  const body = { entry: { index: 3, bytes: new Uint8Array([1, 2, 3]) } };
  const frame = encodeCheckedFrame(body);
  assert.equal(frame[4], CHECKED_VERSION);
  assert.equal(new DataView(frame.buffer).getUint32(0), frame.length - 4);
  assert.ok(checkedPayloadWhole(frame.subarray(4)));
  assert.deepEqual(decodePayload(frame.subarray(4)), body);
  assert.throws(
    () => decodeWirePayload(frame.subarray(4)),
    { name: "TypeError", message: "frame version 3, this build speaks 2" },
  );
  const flipped = frame.slice();
  flipped[frame.length - 1] ^= 1;
  assert.ok(!checkedPayloadWhole(flipped.subarray(4)));
  assert.throws(
    () => decodePayload(flipped.subarray(4)),
    { name: "TypeError", message: "frame fails its CRC-32" },
  );
});

Deno.test("curp wire: a payload that is not one whole MessagePack value is refused by name", () => {
  const good = encodeFrame({ type: "a", n: 1 }).subarray(4);
  for (
    const bad of [
      good.subarray(0, good.length - 1), // truncated
      new Uint8Array([...good, 0x01]), // trailing bytes
    ]
  ) {
    assert.throws(() => decodeWirePayload(bad), (error: Error) => {
      assert.equal(error.name, "TypeError");
      assert.match(
        error.message,
        /^frame is not one MessagePack value \(.*\): \d+ bytes starting /,
      );
      return true;
    });
  }
  assert.throws(() => decodeWirePayload(new Uint8Array(0)), { message: "empty frame" });
});

Deno.test("curp wire: frames sharing one encoded command are byte for byte encodeFrame's", () => {
  const command = {
    clientId: "c-1",
    seq: 7,
    firstUnacked: 7,
    txn: { success: [{ put: { key: new Uint8Array([1, 2]), value: new Uint8Array(300) } }] },
    admin: undefined,
  };
  const bodies = ["a", "b", "c"].map((to) => ({ type: "propose", from: "c-1", to, command }));
  const frames = encodeFramesSharing(bodies, "command");
  assert.equal(frames.length, 3);
  frames.forEach((frame, i) => {
    assert.deepEqual(frame, encodeFrame(bodies[i]));
    assert.deepEqual(decodeWirePayload(frame.subarray(4)), {
      ...bodies[i],
      command: { clientId: "c-1", seq: 7, firstUnacked: 7, txn: command.txn },
    });
  });
  // A body with another command object is encoded on its own.
  const other = { ...bodies[1], command: { ...command, seq: 8 } };
  const mixed = encodeFramesSharing([bodies[0], other], "command");
  assert.deepEqual(mixed[1], encodeFrame(other));
});

Deno.test("curp wire: a snapshot piece is recognised by its first key, and nothing else is", () => {
  const payload = (body: unknown) => {
    const frame = encodeFrame(body);
    return frame.subarray(4); // the length prefix off: version byte, then MessagePack
  };
  const piece = { type: "snapshot", from: "a", to: "b", term: 2, piece: 0, data: [] };
  assert.ok(startsAsSnapshot(payload(piece)));
  // A map of 16 or more entries has a 3-byte header (map16).
  const wide: Record<string, unknown> = { type: "snapshot" };
  for (let i = 0; i < 20; i++) wide[`k${i}`] = i;
  assert.ok(startsAsSnapshot(payload(wide)));
  assert.ok(!startsAsSnapshot(payload({ type: "snapshotReply", from: "b", to: "a" })));
  assert.ok(!startsAsSnapshot(payload({ type: "append", from: "a", to: "b" })));
  assert.ok(!startsAsSnapshot(payload({ from: "a", type: "snapshot" })));
  assert.ok(!startsAsSnapshot(payload("snapshot")));
  assert.ok(!startsAsSnapshot(new Uint8Array([WIRE_VERSION])));
});

/** Create-shaped commands, values of every kind the packer handles itself or hands to msgpackr. */
function sampleBodies(): Record<string, unknown>[] {
  const enc = new TextEncoder();
  const command = (i: number) => ({
    clientId: `client-${i}/s0`,
    seq: i * 977,
    firstUnacked: i,
    txn: {
      compare: [{ key: enc.encode(`e/${i}`), target: "version", result: "==", value: 0 }],
      success: [
        { put: { key: enc.encode(`e/${i}`), value: new Uint8Array(120 + i * 40).fill(i) } },
        { put: { key: enc.encode("i/x"), value: new Uint8Array(300), lease: 2 ** 40 + i } },
        { merge: { key: enc.encode("d"), add: [{ at: 4, width: 4, delta: -i }] } },
      ],
      revisionsUnused: i % 2 === 0 ? true : undefined,
    },
  });
  return [
    { entry: { index: 70_000, term: 3, command: command(1) } },
    { entry: { index: 12, term: 1, expire: [1, 2 ** 33, -5] } },
    { poolAdd: [{ term: 2, command: command(2) }, { term: 2, command: command(3) }] },
    { poolRemove: ["client-1/s0#977", "x".repeat(100), "é"] },
    { hard: { term: 4, votedFor: undefined } },
    {
      type: "append",
      from: "a",
      to: "b",
      term: 300,
      prevIndex: 65_535,
      prevTerm: 0.5,
      entries: Array.from({ length: 20 }, (_, i) => ({ index: i, term: 1, command: command(i) })),
      commit: 2 ** 32 + 1,
      readyIndex: -1,
      quiet: true,
      big: new Uint8Array(70_000),
      many: Object.fromEntries(Array.from({ length: 20 }, (_, i) => [`k${i}`, null])),
    },
  ];
}

Deno.test("curp wire: frames reusing received bytes are byte for byte encodeFrame's and msgpackr's", () => {
  for (const body of sampleBodies()) {
    assert.deepEqual(encodeFrameReusing(body), encodeFrame(body));
    const checked = encodeCheckedFrame(body);
    assert.equal(checked[4], CHECKED_VERSION);
    assert.ok(checkedPayloadWhole(checked.subarray(4)));
    // The same MessagePack bytes as the version 2 frame, behind the CRC.
    assert.deepEqual(checked.subarray(9), encodeFrame(body).subarray(5));
    assert.deepEqual(
      decodePayload(checked.subarray(4)),
      decodePayload(encodeFrame(body).subarray(4)),
    );
  }
});

Deno.test("curp wire: skipPacked finds the end of every MessagePack value", () => {
  for (const body of sampleBodies()) {
    const payload = encodeFrame(body).subarray(5);
    assert.equal(skipPacked(payload, 0), payload.length);
    assert.throws(() => skipPacked(payload.subarray(0, payload.length - 1), 0), RangeError);
  }
});

Deno.test("curp wire: a received command's bytes are reused in the log frames and appends that carry it", () => {
  const [entryBody, , poolBody, , , appendBody] = sampleBodies();
  const command = (entryBody.entry as { command: Record<string, unknown> }).command;
  const propose = encodeFrame({ type: "propose", from: "client-1/s0", to: "b", command });
  const payload = propose.subarray(4);
  const decoded = decodeWirePayload(payload, true) as { command: Record<string, unknown> };
  notePacked(payload, decoded);
  const bytes = packedBytesOf(decoded.command)!;
  assert.deepEqual(bytes, encodeFrame(command).subarray(5));
  assert.equal(bytes.buffer, payload.buffer, "a view into the frame, not a copy");
  const entry = { index: 9, term: 2, command: decoded.command };
  assert.deepEqual(
    encodeCheckedFrame({ entry }),
    encodeCheckedFrame({ entry: { ...entry, command } }),
  );
  // Copied, not encoded again: a change to the decoded object (which nothing makes) would not show.
  decoded.command.seq = 1;
  const stored = decodePayload(encodeCheckedFrame({ entry }).subarray(4)) as {
    entry: { command: { seq: number } };
  };
  assert.equal(stored.entry.command.seq, 977);
  // Each entry of a received append.
  const append = encodeFrame(appendBody).subarray(4);
  const got = decodeWirePayload(append, true) as { entries: { command: object }[] };
  notePacked(append, got);
  for (const [i, e] of got.entries.entries()) {
    const expected = (appendBody.entries as { command: object }[])[i].command;
    assert.deepEqual(packedBytesOf(e.command), encodeFrame(expected).subarray(5));
  }
  assert.deepEqual(
    encodeFrameReusing({ ...appendBody, entries: got.entries }),
    encodeFrame(appendBody),
  );
  const records = (poolBody.poolAdd as { term: number; command: object }[]).map((r, i) => ({
    ...r,
    command: i === 0 ? got.entries[2].command : r.command,
  }));
  assert.deepEqual(
    decodePayload(encodeCheckedFrame({ poolAdd: records }).subarray(4)),
    decodePayload(
      encodeCheckedFrame({
        poolAdd: [
          { term: 2, command: (appendBody.entries as { command: object }[])[2].command },
          (poolBody.poolAdd as object[])[1],
        ],
      }).subarray(4),
    ),
  );
});

Deno.test("curp wire: a propose naming its command twice keeps the bytes of the one decoded", () => {
  const first = encodeFrame({ seq: 1 }).subarray(5);
  const second = encodeFrame({ seq: 2 }).subarray(5);
  const key = encodeFrame("command").subarray(5);
  const type = encodeFrame("type").subarray(5);
  const propose = encodeFrame("propose").subarray(5);
  const parts = [new Uint8Array([WIRE_VERSION, 0x83]), type, propose, key, first, key, second];
  const payload = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    payload.set(p, at);
    at += p.length;
  }
  const body = decodeWirePayload(payload, true) as { command: { seq: number } };
  assert.equal(body.command.seq, 2); // the decoder keeps the last
  notePacked(payload, body);
  assert.deepEqual(packedBytesOf(body.command), second);
});
