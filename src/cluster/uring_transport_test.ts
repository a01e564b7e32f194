/**
 * The io_uring peer transport over real loopback TCP: ranges read into the caller's buffer
 * (sequential with a plan ahead, jumps, ERROR replies), both directions of interoperation with
 * the Deno TCP transport, malformed and oversized frames (the connection closes, one log line),
 * a peer that never answers (timeout, then skipped), a peer killed -9 mid-stream, and reads of
 * several files at once on one transport (each stream checks its own reply headers).
 */

import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { openUringEngine, type UringEngine } from "../io/uring.ts";
import { ensureUringBuilt } from "../io/uring_test_util.ts";
import { type ChunkBody, listenPeers, TcpTransport } from "./transport.ts";
import { listenPeersUring, UringTransport } from "./uring_transport.ts";
import { encodeFrame, FrameType, type GetRange } from "./peer_wire.ts";

await ensureUringBuilt();

const CHUNK = 1 << 20;
const random = (n: number) => {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i += 65536) crypto.getRandomValues(out.subarray(i, i + 65536));
  return out;
};
const range = (index: number, offset: number, rangeLength: number): GetRange => ({
  ino: 7,
  index,
  version: "v-1",
  length: CHUNK,
  crc: 0,
  objectLength: CHUNK,
  offset,
  rangeLength,
});

/** A file of `chunks` chunks, served as a cache would: from the file (fd) or from memory. */
async function fixture(io: UringEngine, chunks: number) {
  const dir = await Deno.makeTempDir({ prefix: "peerzc-transport-" });
  const content = random(chunks * CHUNK);
  await Deno.writeFile(`${dir}/f`, content);
  const fd = await io.open(`${dir}/f`, 0);
  const body = (index: number): ChunkBody => ({
    length: CHUNK,
    fd,
    start: index * CHUNK,
    unchanged: () => true,
    read: async (into, offset) => {
      await io.read(fd, into, index * CHUNK + offset);
    },
    done: () => {},
  });
  const cleanup = async () => {
    await io.close(fd);
    await Deno.remove(dir, { recursive: true });
  };
  return { content, body, cleanup };
}

Deno.test("uring transport: ranges straight into the buffer, sequential plans, jumps, errors, interop", async () => {
  const io = openUringEngine({ queueDepth: 64 });
  const f = await fixture(io, 4);
  const logs: string[] = [];
  const server = listenPeersUring(io, "127.0.0.1", 0, (r) => {
    if (r.index === 3) return Promise.reject(new Error("no such chunk"));
    return Promise.resolve(f.body(r.index));
  }, (line) => logs.push(line));
  const deno = listenPeers("127.0.0.1", 0, (r) => {
    // The portable server answers from memory for chunk 0, from the "file" otherwise.
    if (r.index === 0) return Promise.resolve(f.content.slice(0, CHUNK));
    return Promise.resolve(f.body(r.index));
  }, (line) => logs.push(line));
  const client = new UringTransport(io, { timeoutMs: 5000 });
  const tcp = new TcpTransport({ timeoutMs: 5000 });
  try {
    for (const address of [server.address, deno.address]) {
      // A sequential reader: 128 KiB reads over chunks 0-2, the owner asked for whole ranges.
      const out = new Uint8Array(3 * CHUNK);
      const piece = 128 << 10;
      for (let at = 0; at < out.length; at += piece) {
        const index = Math.floor(at / CHUNK);
        const within = at - index * CHUNK;
        const plan = [range(index, within, CHUNK - within)];
        for (let i = index + 1; i < 3; i++) plan.push(range(i, 0, CHUNK));
        await client.readRange(
          address,
          "s1",
          range(index, within, piece),
          out.subarray(at, at + piece),
          plan,
        );
      }
      assert.deepEqual(out, f.content.subarray(0, 3 * CHUNK), address);
      // A reader that jumps while megabytes it asked for are on the way (partly read): they
      // are dropped, whole frames, and the next bytes are the right ones.
      for (const [index, offset] of [[0, 0], [1, 4096], [0, 500_000], [2, 0]]) {
        const plan = [range(index, offset, CHUNK - offset)];
        for (let i = index + 1; i < 3; i++) plan.push(range(i, 0, CHUNK));
        const into = new Uint8Array(100_000);
        await client.readRange(address, "s1", range(index, offset, into.length), into, plan);
        const start = index * CHUNK + offset;
        assert.deepEqual(
          into,
          f.content.subarray(start, start + into.length),
          `${index}/${offset}`,
        );
        await new Promise((resolve) => setTimeout(resolve, 20)); // let the rest arrive
      }
      // Jumps (backwards, into the middle, odd sizes) on the same stream: what was requested
      // ahead is dropped, the bytes are right.
      for (const [index, offset, length] of [[0, 5, 1000], [2, 777_777, 100_000], [1, 0, CHUNK]]) {
        const into = new Uint8Array(length);
        await client.readRange(address, "s1", range(index, offset, length), into);
        const start = index * CHUNK + offset;
        assert.deepEqual(into, f.content.subarray(start, start + length));
      }
    }
    // An ERROR reply rejects the read with the peer's message; the next read works.
    await assert.rejects(
      client.readRange(server.address, "s2", range(3, 0, 4096), new Uint8Array(4096)),
      /no such chunk/,
    );
    const again = new Uint8Array(4096);
    await client.readRange(server.address, "s2", range(1, 0, 4096), again);
    assert.deepEqual(again, f.content.subarray(CHUNK, CHUNK + 4096));
    // The Deno TCP client against the io_uring server: whole chunks, streamed or not.
    const whole = await tcp.getChunk(server.address, range(2, 0, CHUNK));
    assert.deepEqual(whole, f.content.subarray(2 * CHUNK, 3 * CHUNK));
    const pieces = new Uint8Array(CHUNK);
    await client.getChunkInto(server.address, range(1, 0, CHUNK), (p, at) => pieces.set(p, at));
    assert.deepEqual(pieces, f.content.subarray(CHUNK, 2 * CHUNK));
    // A plan must begin with the range it reads.
    await assert.rejects(
      client.readRange(server.address, "s1", range(0, 0, 10), new Uint8Array(10), [
        range(1, 0, 10),
      ]),
      RangeError,
    );
    assert.deepEqual(logs, []);

    // Malformed and oversized frames close only their own connection, with one line each.
    const [host, port] = server.address.split(":");
    for (const bad of ["garbage!garbage!garbage!", "oversized", "version 3"]) {
      const conn = await Deno.connect({ hostname: host, port: Number(port) });
      let bytes: Uint8Array = new TextEncoder().encode(bad);
      if (bad !== "garbage!garbage!garbage!") {
        bytes = encodeFrame(FrameType.GET_CHUNK, 1, new Uint8Array(0));
        if (bad === "oversized") new DataView(bytes.buffer).setUint32(12, 64 << 20);
        else bytes[4] = 3;
      }
      await conn.write(bytes);
      assert.equal(await conn.read(new Uint8Array(16)), null, "server closed the connection");
      conn.close();
    }
    assert.equal(logs.length, 3, logs.join("\n"));
    assert.match(logs[0], /malformed frame \(bad magic/);
    assert.match(logs[1], /payload of 67108864 bytes/);
    assert.match(logs[2], /protocol version 3/);
    const still = new Uint8Array(100);
    await client.readRange(server.address, "s1", range(0, 0, 100), still);
    assert.deepEqual(still, f.content.subarray(0, 100));
  } finally {
    client.close();
    tcp.close();
    server.close();
    deno.close();
    await f.cleanup();
    await io.shutdown();
  }
});

Deno.test("uring transport: a peer that never answers times out once, a refused one fails at once; both are then skipped", async () => {
  const io = openUringEngine({ queueDepth: 16 });
  // Accepts and reads, never writes.
  const mute = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const held: Deno.Conn[] = [];
  (async () => {
    for await (const conn of mute) held.push(conn);
  })().catch(() => {});
  const address = `127.0.0.1:${(mute.addr as Deno.NetAddr).port}`;
  const client = new UringTransport(io, { timeoutMs: 300, downMs: 60_000 });
  try {
    const started = performance.now();
    await assert.rejects(
      client.readRange(address, "s", range(0, 0, 10), new Uint8Array(10)),
      /did not answer in 300 ms/,
    );
    assert.ok(performance.now() - started < 5000);
    await assert.rejects(
      client.readRange(address, "s", range(0, 0, 10), new Uint8Array(10)),
      /failed less than 60000 ms ago; not asked/,
    );
    await assert.rejects(
      client.getChunkInto(address, range(0, 0, CHUNK), () => {}),
      /not asked/,
    );
    // A port nobody listens on: refused once, then skipped as well.
    const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const closed = `127.0.0.1:${(probe.addr as Deno.NetAddr).port}`;
    probe.close();
    await assert.rejects(
      client.readRange(closed, "s", range(0, 0, 10), new Uint8Array(10)),
      /connecting to peer .* failed \(ECONNREFUSED/,
    );
    await assert.rejects(client.getChunk(closed, range(0, 0, CHUNK)), /not asked/);
  } finally {
    client.close();
    mute.close();
    for (const conn of held) conn.close();
    await io.shutdown();
  }
});

Deno.test("uring transport: a peer killed -9 mid-stream: reads give the right bytes or fail, none hangs", async () => {
  const io = openUringEngine({ queueDepth: 16 });
  const dir = await Deno.makeTempDir({ prefix: "peerzc-kill-" });
  const chunks = 64;
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      fileURLToPath(new URL("./_uring_peer_main.ts", import.meta.url)),
      `${dir}/f`,
      `${chunks * CHUNK}`,
    ],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const client = new UringTransport(io, { timeoutMs: 5000 });
  try {
    const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let text = "";
    while (!text.includes("\n")) text += (await reader.read()).value ?? "";
    reader.releaseLock();
    const address = text.trim();
    const content = await Deno.readFile(`${dir}/f`);
    const plan = (index: number) =>
      Array.from({ length: chunks - index }, (_, i) => range(index + i, 0, CHUNK));
    let good = 0;
    let failed: Error | undefined;
    for (let index = 0; index < chunks && !failed; index++) {
      const into = new Uint8Array(CHUNK);
      if (index === 2) {
        child.kill("SIGKILL");
        await child.status;
      }
      try {
        await client.readRange(address, "s", range(index, 0, CHUNK), into, plan(index));
        assert.deepEqual(into, content.subarray(index * CHUNK, (index + 1) * CHUNK), `${index}`);
        good++;
      } catch (error) {
        failed = error as Error;
      }
    }
    assert.ok(good >= 2, `${good} chunks before the kill`);
    assert.ok(failed, "a read after the kill failed");
    assert.match(failed.message, /closed the connection|did not answer|ECONNRESET/);
  } finally {
    client.close();
    try {
      child.kill("SIGKILL");
    } catch { /* exited */ }
    await child.status;
    await io.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});

/** Equal bytes; not assert.deepEqual, whose diff of megabytes that differ takes gigabytes. */
function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * The engine, except that each recvPair's result is held until `round` of them have completed
 * (or a second passed): every reply header of a round is then in place before any reader looks
 * at its own, which is when readers sharing a header buffer see another stream's header.
 */
function heldRecvPairs(io: UringEngine, round: number): UringEngine {
  const waiting: (() => void)[] = [];
  let timer: ReturnType<typeof setTimeout> | undefined;
  const releaseAll = () => {
    clearTimeout(timer);
    timer = undefined;
    for (const resume of waiting.splice(0)) resume();
  };
  const recvPair = async (fd: number, first: Uint8Array, second: Uint8Array) => {
    const result = await io.recvPair(fd, first, second);
    const held = new Promise<void>((resolve) => waiting.push(resolve));
    if (waiting.length >= round) releaseAll();
    else timer ??= setTimeout(releaseAll, 1000);
    await held;
    return result;
  };
  return new Proxy(io, {
    get: (target, p) => {
      if (p === "recvPair") return recvPair;
      const value = Reflect.get(target, p);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}

Deno.test("uring transport: concurrent range reads of several files on one transport keep their frames apart", async () => {
  const io = openUringEngine({ queueDepth: 64 });
  const files = 6;
  const chunks = 3;
  const fixtures = await Promise.all(Array.from({ length: files }, () => fixture(io, chunks)));
  const logs: string[] = [];
  // The ino names the file; each fixture serves its own bytes.
  const server = listenPeersUring(
    io,
    "127.0.0.1",
    0,
    (r) => Promise.resolve(fixtures[r.ino].body(r.index)),
    (line) => logs.push(line),
  );
  const errors: string[] = [];
  const consoleError = console.error;
  console.error = (...args: unknown[]) => errors.push(args.join(" "));
  const fileRange = (file: number, index: number, offset: number, length: number) => ({
    ...range(index, offset, length),
    ino: file,
  });
  const held = new UringTransport(heldRecvPairs(io, files), { timeoutMs: 5000, downMs: 60_000 });
  const client = new UringTransport(io, { timeoutMs: 5000, downMs: 60_000 });
  try {
    // One whole frame per read, a length of its own per file, all files at once: with every
    // reply header of a round in before any is checked, a shared header buffer shows each
    // reader another file's header ("malformed frame (reply 1, expected 2)" in issue 13), the
    // peer is marked down and the reads go to the backend.
    const length = (file: number) => (64 << 10) + file * 4096;
    for (let step = 0; step < 4; step++) {
      const outs = fixtures.map((_, file) => new Uint8Array(length(file)));
      const results = await Promise.allSettled(outs.map((into, file) =>
        held.readRange(
          server.address,
          `file-${file}`,
          fileRange(file, step % chunks, step * 100_000, into.length),
          into,
        )
      ));
      const failed = results.flatMap((r) => r.status === "rejected" ? [String(r.reason)] : []);
      assert.deepEqual(failed, [], `step ${step}`);
      for (const [file, into] of outs.entries()) {
        const start = (step % chunks) * CHUNK + step * 100_000;
        const expected = fixtures[file].content.subarray(start, start + into.length);
        assert.ok(sameBytes(into, expected), `step ${step}, file ${file}`);
      }
    }
    // As the repro: every file read at once, 64 KiB reads, sequential, plans ahead.
    const piece = 64 << 10;
    await Promise.all(fixtures.map(async (f, file) => {
      const out = new Uint8Array(chunks * CHUNK);
      for (let at = 0; at < out.length; at += piece) {
        const index = Math.floor(at / CHUNK);
        const within = at - index * CHUNK;
        const plan = [fileRange(file, index, within, CHUNK - within)];
        for (let i = index + 1; i < chunks; i++) plan.push(fileRange(file, i, 0, CHUNK));
        await client.readRange(
          server.address,
          `file-${file}`,
          fileRange(file, index, within, piece),
          out.subarray(at, at + piece),
          plan,
        );
      }
      assert.ok(sameBytes(out, f.content), `file ${file}`);
    }));
    assert.deepEqual(errors, []);
    assert.deepEqual(logs, []);
  } finally {
    console.error = consoleError;
    held.close();
    client.close();
    server.close();
    for (const f of fixtures) await f.cleanup();
    await io.shutdown();
  }
});

Deno.test("uring transport: ranges prefetched on a stream are the next reads' bytes; a prefetch to a dead peer is dropped quietly", async () => {
  const io = openUringEngine({ queueDepth: 64 });
  const f = await fixture(io, 4);
  let served = 0;
  const server = listenPeersUring(io, "127.0.0.1", 0, (r) => {
    served++;
    return Promise.resolve(f.body(r.index));
  }, () => {});
  const client = new UringTransport(io, { timeoutMs: 5000 });
  try {
    // The reader is elsewhere (another owner's chunks 0 and 2); this owner's 1 and 3 are asked
    // for at once, then read in order in 256 KiB reads without a new request.
    client.prefetch(server.address, "s", [range(1, 0, CHUNK), range(3, 0, CHUNK)]);
    const deadline = Date.now() + 5000;
    while (served < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    assert.equal(served, 2, "both prefetched ranges were requested before any read");
    for (const index of [1, 3]) {
      for (let at = 0; at < CHUNK; at += 256 << 10) {
        const into = new Uint8Array(256 << 10);
        await client.readRange(server.address, "s", range(index, at, into.length), into, [
          range(index, at, CHUNK - at),
        ]);
        const start = index * CHUNK + at;
        assert.ok(sameBytes(into, f.content.subarray(start, start + into.length)));
      }
    }
    assert.equal(served, 2, "the reads took the prefetched replies");
    // Nobody listening: the prefetch fails on its own stream, without a rejection anywhere.
    const dead = `127.0.0.1:${
      (() => {
        const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
        const port = (l.addr as Deno.NetAddr).port;
        l.close();
        return port;
      })()
    }`;
    client.prefetch(dead, "s", [range(0, 0, CHUNK)]);
    await new Promise((r) => setTimeout(r, 100));
  } finally {
    client.close();
    await server.close();
    await f.cleanup();
    await io.shutdown();
  }
});

Deno.test("uring transport: the server starts serving the next request while the reply before it is still to send, and lets go of it when the connection ends", async () => {
  const io = openUringEngine({ queueDepth: 64 });
  const f = await fixture(io, 4);
  const started: number[] = [];
  let done = 0;
  let nextStarted: () => void = () => {};
  const second = new Promise<void>((resolve) => nextStarted = resolve);
  const server = listenPeersUring(io, "127.0.0.1", 0, async (r) => {
    started.push(r.index);
    if (started.length === 2) nextStarted();
    // The first reply waits (an owner filling it from the backend) until the second request's
    // serve has begun: with requests served one after the other it never does (1 s cap).
    if (started.length === 1) {
      await Promise.race([second, new Promise((resolve) => setTimeout(resolve, 1000))]);
    }
    const body = f.body(r.index);
    return { ...body, done: () => done++ };
  }, () => {});
  const client = new UringTransport(io, { timeoutMs: 5000 });
  try {
    client.prefetch(server.address, "s", [range(0, 0, CHUNK), range(1, 0, CHUNK)]);
    const into = new Uint8Array(CHUNK);
    let overlapped = false;
    second.then(() => overlapped = done === 0);
    await client.readRange(server.address, "s", range(0, 0, CHUNK), into, [range(0, 0, CHUNK)]);
    assert.ok(sameBytes(into, f.content.subarray(0, CHUNK)));
    assert.ok(overlapped, "the second request's serve began before the first reply was sent");
    // The second reply is not read: the connection ends with it served and not sent.
    client.close();
    const deadline = Date.now() + 5000;
    while (done < started.length && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 10));
    }
    assert.equal(done, started.length, "every served reply was let go");
  } finally {
    client.close();
    await server.close();
    await f.cleanup();
    await io.shutdown();
  }
});
