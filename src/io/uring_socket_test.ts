/**
 * The io_uring engine's socket ops (ABI 5): accept, connect, send, recv (short reads, MSG_WAITALL,
 * a linked header+payload pair), and spliceToSocket from a file (end of file, a peer gone
 * mid-splice), over real loopback TCP sockets made by src/io/sockets.ts.
 */

import assert from "node:assert/strict";
import { Errno, FsError } from "../fs_error.ts";
import { openUringEngine, type UringEngine } from "./uring.ts";
import { closeFd, pipe, shutdownSocket, sockaddrIn, tcpListen, tcpSocket } from "./sockets.ts";
import { ensureUringBuilt } from "./uring_test_util.ts";

await ensureUringBuilt();

const MSG_WAITALL = 0x100;

/** Random bytes (getRandomValues gives at most 64 KiB at a time). */
function random(length: number): Uint8Array {
  const out = new Uint8Array(length);
  for (let at = 0; at < length; at += 65536) crypto.getRandomValues(out.subarray(at, at + 65536));
  return out;
}

/** A connected pair [client, server] of loopback sockets, the listener closed. */
async function connected(io: UringEngine): Promise<[number, number]> {
  const [listenFd, port] = tcpListen("127.0.0.1", 0);
  const client = tcpSocket();
  const accepted = io.accept(listenFd);
  await io.connect(client, sockaddrIn("127.0.0.1", port));
  const server = await accepted;
  closeFd(listenFd);
  return [client, server];
}

async function withEngine(test: (io: UringEngine) => Promise<void>): Promise<void> {
  const io = openUringEngine({ queueDepth: 16 });
  try {
    assert.ok(io.socketOps, "this kernel's io_uring has the socket ops");
    await test(io);
  } finally {
    await io.shutdown();
  }
}

Deno.test("uring sockets: send, recv short and MSG_WAITALL, a linked header+payload pair", () =>
  withEngine(async (io) => {
    const [a, b] = await connected(io);
    try {
      const bytes = random(1 << 16);
      assert.equal(await io.send(a, bytes.subarray(0, 100)), 100);
      // A plain recv returns what is there: short.
      const into = new Uint8Array(1 << 16);
      assert.equal(await io.recv(b, into), 100);
      assert.deepEqual(into.subarray(0, 100), bytes.subarray(0, 100));
      // MSG_WAITALL waits for the rest even when it arrives in two sends, later.
      const waiting = io.recv(b, into, MSG_WAITALL);
      await io.send(a, bytes.subarray(0, 30_000));
      await new Promise((resolve) => setTimeout(resolve, 20));
      await io.send(a, bytes.subarray(30_000));
      assert.equal(await waiting, bytes.length);
      assert.deepEqual(into, bytes);
      // Header then payload, linked: one submission.
      const header = new Uint8Array(16);
      const payload = new Uint8Array(1000);
      const pair = io.recvPair(b, header, payload);
      await io.send(a, bytes.subarray(0, 1016));
      assert.deepEqual(await pair, [16, 1000]);
      assert.deepEqual(payload, bytes.subarray(16, 1016));
      // The peer closes after half a header: the payload's recv is cancelled.
      const cut = io.recvPair(b, header, payload);
      await io.send(a, bytes.subarray(0, 8));
      shutdownSocket(a);
      assert.deepEqual(await cut, [8, -1]);
    } finally {
      await io.close(a);
      await io.close(b);
    }
  }));

Deno.test("uring sockets: spliceToSocket sends a file without copying it, EIO at its end", () =>
  withEngine(async (io) => {
    const dir = await Deno.makeTempDir({ prefix: "peerzc-splice-" });
    const [a, b] = await connected(io);
    const via = pipe(1 << 16); // a small pipe: many splice pairs per call
    try {
      const data = random(300_000);
      await Deno.writeFile(`${dir}/f`, data);
      const fd = await io.open(`${dir}/f`, 0);
      const into = new Uint8Array(200_001);
      const received = io.recv(b, into, MSG_WAITALL);
      await io.spliceToSocket(fd, 99_999, 200_001, via.fds, via.capacity, a);
      assert.equal(await received, 200_001);
      assert.deepEqual(into, data.subarray(99_999, 300_000));
      // Past the end of the file: what there is goes out, then EIO names the shortfall.
      const rest = new Uint8Array(1000);
      const tail = io.recv(b, rest, MSG_WAITALL);
      await assert.rejects(
        io.spliceToSocket(fd, 299_000, 5000, via.fds, via.capacity, a),
        (e) => e instanceof FsError && e.errno === Errno.EIO && /4000 early/.test(e.message),
      );
      assert.equal(await tail, 1000);
      assert.deepEqual(rest, data.subarray(299_000));
      await io.close(fd);
    } finally {
      closeFd(via.fds[0]);
      closeFd(via.fds[1]);
      await io.close(a);
      await io.close(b);
      await Deno.remove(dir, { recursive: true });
    }
  }));

Deno.test("uring sockets: a peer that goes away mid-splice fails the splice (EPIPE/ECONNRESET)", () =>
  withEngine(async (io) => {
    const dir = await Deno.makeTempDir({ prefix: "peerzc-splice-" });
    const [a, b] = await connected(io);
    const via = pipe(1 << 20);
    try {
      await Deno.writeFile(`${dir}/f`, new Uint8Array(64 << 20));
      const fd = await io.open(`${dir}/f`, 0);
      // 64 MiB does not fit in the socket buffers: the splice waits for the reader, who leaves.
      const sending = io.spliceToSocket(fd, 0, 64 << 20, via.fds, via.capacity, a);
      const first = new Uint8Array(1 << 20);
      assert.equal(await io.recv(b, first, MSG_WAITALL), first.length);
      shutdownSocket(b);
      await io.close(b);
      await assert.rejects(
        sending,
        (e) => e instanceof FsError && (e.errno === Errno.EPIPE || e.errno === Errno.ECONNRESET),
      );
      await io.close(fd);
    } finally {
      closeFd(via.fds[0]);
      closeFd(via.fds[1]);
      await io.close(a);
      await Deno.remove(dir, { recursive: true });
    }
  }));

Deno.test("uring sockets: connect to a closed port is ECONNREFUSED; shutdown wakes an accept", () =>
  withEngine(async (io) => {
    const [listenFd, port] = tcpListen("127.0.0.1", 0);
    const accepting = io.accept(listenFd);
    shutdownSocket(listenFd);
    await assert.rejects(accepting, FsError);
    closeFd(listenFd);
    const fd = tcpSocket();
    await assert.rejects(
      io.connect(fd, sockaddrIn("127.0.0.1", port)),
      (e) => e instanceof FsError && e.errno === Errno.ECONNREFUSED,
    );
    await io.close(fd);
  }));
