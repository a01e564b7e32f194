/**
 * A ring client on the engine's ring (UringEngine.attachClient, used by FUSE over io_uring):
 * its operations and the engine's of one event-loop turn go to the kernel in one submit, its
 * completions reach it whichever reap finds them, its operations never count as in flight (no
 * spin, no wait, no shutdown delay for them), and its park() is served by the engine's one wait.
 * A POLL_ADD on a pipe stands in for a FUSE entry: it waits in the kernel until someone writes.
 */

import assert from "node:assert/strict";
import { sys } from "./libc.ts";
import { closeFd, pipe } from "./sockets.ts";
import { openUringEngine, type RingPort, type UringEngine } from "./uring.ts";
import { IORING_SETUP_SQE128, Op } from "./uring_native.ts";
import { withTempDir } from "./engine_suite.ts";
import { ensureUringBuilt } from "./uring_test_util.ts";

await ensureUringBuilt();

const POLLIN = 1;
const O_CREAT = 0o100;
const O_RDWR = 2;

interface Client {
  port: RingPort;
  completions: [number, number][];
}

function attach(io: UringEngine, slots = 4): Client {
  const completions: [number, number][] = [];
  const port = io.attachClient({ complete: (tag, res) => completions.push([tag, res]) }, slots);
  assert.ok(port, "attachClient refused");
  return { port, completions };
}

function pollIn(client: Client, fd: number, tag: number): void {
  client.port.stage(Op.POLL_ADD, fd, 0, 0, POLLIN, 0n, 0, tag);
}

function writeByte(fd: number): void {
  assert.equal(Number(sys().skyfs_sys_write(fd, new Uint8Array([7]), 1n)), 1);
}

/** Resolves with "stuck" if `promise` has not settled after `ms` (a hang detector, not a
 * timing assertion: the bound is far above anything the operation needs). */
function orStuck<T>(promise: Promise<T>, ms = 10_000): Promise<T | "stuck"> {
  let timer: ReturnType<typeof setTimeout>;
  return Promise.race([
    promise,
    new Promise<"stuck">((resolve) => timer = setTimeout(() => resolve("stuck"), ms)),
  ]).finally(() => clearTimeout(timer));
}

for (const ringSetup of ["defer", "coop"] as const) {
  Deno.test(`ring client (${ringSetup}): its op and a disk write of one turn are one submit`, async () => {
    await withTempDir("uring-client-", async (dir) => {
      const io = openUringEngine({ queueDepth: 8, clientSlots: 4, ringSetup });
      const { fds } = pipe(4096);
      try {
        assert.ok(io.stats().submitCalls === 0);
        const fd = await io.open(`${dir}/f`, O_CREAT | O_RDWR);
        const client = attach(io);
        const before = io.stats();
        pollIn(client, fds[0], 5);
        const written = await io.write(fd, new Uint8Array(4096).fill(1), 0);
        assert.equal(written, 4096);
        const after = io.stats();
        assert.equal(after.submitCalls - before.submitCalls, 1, JSON.stringify([before, after]));
        assert.equal(after.sharedSubmits - before.sharedSubmits, 1);
        assert.equal(after.clientSubmissions - before.clientSubmissions, 1);
        assert.equal(after.submissions - before.submissions, 1); // the write
        // The poll waits in the kernel: not in flight for the engine.
        assert.equal(io.inFlight, 0);
        assert.deepEqual(client.completions, []);
        // It completes when the pipe turns readable, and the client's park sees it.
        const parked = client.port.park();
        writeByte(fds[1]);
        assert.notEqual(await orStuck(parked), "stuck");
        client.port.pump();
        assert.equal(client.completions.length, 1);
        assert.equal(client.completions[0][0], 5);
        assert.ok(client.completions[0][1] & POLLIN, `poll result ${client.completions[0][1]}`);
        await io.close(fd);
      } finally {
        await io.shutdown();
        closeFd(fds[0]);
        closeFd(fds[1]);
      }
    });
  });

  Deno.test(`ring client (${ringSetup}): one wait serves a parked client and the engine's ops`, async () => {
    const io = openUringEngine({ queueDepth: 8, clientSlots: 4, ringSetup, spinUs: 0 });
    const mine = pipe(4096).fds;
    const theirs = pipe(4096).fds;
    try {
      const client = attach(io);
      // The engine's op waits in the kernel (a read of an empty pipe): its wait is running.
      const buffer = new Uint8Array(1);
      const read = io.read(theirs[0], buffer, 0);
      pollIn(client, mine[0], 9);
      await new Promise((resolve) => setTimeout(resolve, 20)); // both submitted
      const waitsBefore = io.stats().waitCalls;
      const parked = client.port.park();
      writeByte(mine[1]);
      assert.notEqual(await orStuck(parked), "stuck");
      assert.deepEqual(client.completions.map(([tag]) => tag), [9]);
      // The engine's read is still waiting, and is still served.
      writeByte(theirs[1]);
      assert.equal(await orStuck(read), 1);
      // The client's park did not start a second wait beside the engine's.
      assert.ok(io.stats().waitCalls - waitsBefore <= 2, JSON.stringify(io.stats()));
      // wake() ends a park with nothing to deliver.
      pollIn(client, mine[0], 10); // readable already: completes at once
      const again = client.port.park();
      assert.notEqual(await orStuck(again), "stuck");
      const idle = client.port.park();
      client.port.wake();
      assert.notEqual(await orStuck(idle), "stuck");
    } finally {
      await io.shutdown();
      for (const fd of [...mine, ...theirs]) closeFd(fd);
    }
  });
}

Deno.test("ring client: shutdown does not wait for the client's ops, which may wait for ever", async () => {
  const io = openUringEngine({ queueDepth: 4, clientSlots: 2, shutdownCancelAfterMs: 60_000 });
  const { fds } = pipe(4096);
  try {
    const client = attach(io, 2);
    pollIn(client, fds[0], 1);
    client.port.pump();
    assert.equal(io.inFlight, 0);
    assert.equal(await orStuck(io.shutdown()), undefined);
  } finally {
    await io.shutdown();
    closeFd(fds[0]);
    closeFd(fds[1]);
  }
});

Deno.test("ring client: refused without room, twice, or after shutdown", async () => {
  const plain = openUringEngine({ queueDepth: 4 });
  assert.equal(plain.attachClient({ complete: () => {} }, 1), undefined);
  await plain.shutdown();
  const io = openUringEngine({ queueDepth: 4, clientSlots: 3 });
  try {
    assert.equal(io.attachClient({ complete: () => {} }, 4), undefined); // too many
    const port = io.attachClient({ complete: () => {} }, 3);
    assert.ok(port);
    assert.ok(port.setupFlags() & IORING_SETUP_SQE128);
    assert.equal(port.ringSetup, "defer");
    assert.equal(io.attachClient({ complete: () => {} }, 1), undefined); // one client
  } finally {
    await io.shutdown();
  }
  assert.equal(io.attachClient({ complete: () => {} }, 1), undefined);
});
