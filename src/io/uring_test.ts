/**
 * Tests of what only the io_uring engine has: batching into one submit, back-pressure at the queue
 * depth, linked SQEs at the FFI boundary, shutdown with operations in flight, and the choice of
 * engine in openIoEngine (including a real EPERM from a seccomp filter).
 */

import assert from "node:assert/strict";
import { Errno, FsError } from "../fs_error.ts";
import {
  defineEngineSuite,
  errno,
  O_CREAT,
  O_RDONLY,
  O_RDWR,
  run,
  withTempDir,
} from "./engine_suite.ts";
import * as libc from "./libc.ts";
import { alignedBuffer, openIoEngine } from "./mod.ts";
import { openUringEngine, type UringEngine } from "./uring.ts";
import {
  addressOf,
  CQE_BYTES,
  defaultLibraryPath,
  HEAD_ASYNC,
  loadUringLibrary,
  Op,
  OP_BYTES,
  OpWord,
  pointerOf,
  RING_SETUPS,
  SETUP_TASKRUN_FLAG,
} from "./uring_native.ts";
import { denyIoUringPath, ensureUringBuilt } from "./uring_test_util.ts";

await ensureUringBuilt();

// The shared suite on the fallback ring setup an older kernel gets (the default one runs in
// engine_suite_test.ts): no DEFER_TASKRUN, no COOP_TASKRUN, and spins that only sleep in a timed
// io_uring_enter, without the poll.
defineEngineSuite(
  "io_uring (plain ring, no poll)",
  () => Promise.resolve(openUringEngine({ queueDepth: 16, ringSetup: "plain", pollUs: 0 })),
);

async function withEngine(
  depth: number,
  body: (io: UringEngine, dir: string) => Promise<void>,
  options: { shutdownCancelAfterMs?: number } = {},
): Promise<void> {
  await withTempDir("uring-test-", async (dir) => {
    const io = openUringEngine({ queueDepth: depth, ...options });
    try {
      await body(io, dir);
    } finally {
      await io.shutdown();
    }
  });
}

Deno.test("io_uring: operations issued in one turn go to the kernel in one submit", async () => {
  await withEngine(64, async (io, dir) => {
    const fd = await io.open(`${dir}/f`, O_RDWR | O_CREAT, 0o644);
    await io.write(fd, new Uint8Array(64 * 4096).fill(3), 0);
    const before = io.stats();
    const reads = Array.from({ length: 48 }, (_, i) => io.read(fd, new Uint8Array(4096), i * 4096));
    assert.equal(io.inFlight, 48);
    assert.deepEqual(await Promise.all(reads), new Array(48).fill(4096));
    const after = io.stats();
    assert.equal(after.submitCalls - before.submitCalls, 1);
    assert.equal(after.completions - before.completions, 48);
    await io.close(fd);
  });
});

Deno.test("io_uring: callers beyond the queue depth wait for a slot", async () => {
  await withEngine(4, async (io, dir) => {
    const fd = await io.open(`${dir}/f`, O_RDWR | O_CREAT, 0o644);
    await io.write(fd, new Uint8Array(16 * 4096).fill(5), 0);
    const reads = Array.from({ length: 200 }, (_, i) => {
      const into = new Uint8Array(4096);
      return io.read(fd, into, (i % 16) * 4096).then((n) => n === 4096 && into[4095] === 5);
    });
    assert.equal(io.inFlight, 4);
    assert.equal(io.queued, 196);
    assert.ok((await Promise.all(reads)).every(Boolean));
    assert.equal(io.inFlight, 0);
    assert.equal(io.queued, 0);
    const stats = io.stats();
    // Under load, far fewer crossings than completed I/Os.
    assert.ok(
      stats.submitCalls + stats.waitCalls < stats.completions,
      `crossings ${JSON.stringify(stats)}`,
    );
    await io.close(fd);
  });
});

Deno.test("io_uring: writeAndSync is one submission of a linked pair", async () => {
  await withEngine(8, async (io, dir) => {
    const fd = await io.open(`${dir}/f`, O_RDWR | O_CREAT, 0o644);
    const before = io.stats();
    assert.equal(await io.writeAndSync(fd, new Uint8Array(8192).fill(1), 0), 8192);
    const after = io.stats();
    assert.equal(after.submitCalls - before.submitCalls, 1);
    assert.equal(after.completions - before.completions, 2);
    // A failed write cancels its sync in the kernel: no separate sync is sent afterwards.
    const ro = await io.open(`${dir}/f`, O_RDONLY);
    const beforeFail = io.stats();
    await assert.rejects(io.writeAndSync(ro, new Uint8Array(10), 0), errno("EBADF"));
    const afterFail = io.stats();
    assert.equal(afterFail.submitCalls - beforeFail.submitCalls, 1);
    assert.equal(afterFail.completions - beforeFail.completions, 2);
    await io.close(ro);
    await io.close(fd);
  });
});

Deno.test("libskyfs_uring: linked SQEs run in order and a failure cancels the rest", async () => {
  await withTempDir("uring-test-", async (dir) => {
    // The engine only opens and closes the file; the linked batch goes through a raw ring.
    const engine = openUringEngine({ queueDepth: 4 });
    const fd = await engine.open(`${dir}/linked`, O_RDWR | O_CREAT, 0o644);
    const library = loadUringLibrary(defaultLibraryPath());
    const native = library.symbols;
    const ring = native.skyfs_uring_open(8, new Uint8Array(4))!;
    try {
      const ops = new ArrayBuffer(4 * OP_BYTES);
      const words = new Uint32Array(ops);
      const put = (
        i: number,
        op: number,
        fdOrBad: number,
        buf: Uint8Array | null,
        link: boolean,
      ) => {
        const w = i * (OP_BYTES / 4);
        const address = buf ? addressOf(buf) : 0;
        words[w + OpWord.HEAD] = op | (link ? 0x100 : 0);
        words[w + OpWord.FD] = fdOrBad >>> 0;
        words[w + OpWord.ADDR] = address >>> 0;
        words[w + OpWord.ADDR + 1] = Math.floor(address / 2 ** 32);
        words[w + OpWord.LENGTH] = buf?.byteLength ?? 0;
        words[w + OpWord.USER_DATA] = 100 + i;
      };
      // write -> read of the same bytes: the read must see what the write put there.
      const written = new Uint8Array(new ArrayBuffer(4096)).fill(0x5a);
      const readBack = new Uint8Array(new ArrayBuffer(4096));
      put(0, Op.WRITE, fd, written, true);
      put(1, Op.READ, fd, readBack, false);
      // write on a bad fd -> fsync: the fsync must be cancelled, not run.
      put(2, Op.WRITE, 987654, written, true);
      put(3, Op.FSYNC, fd, null, false);
      assert.equal(native.skyfs_uring_submit(ring, pointerOf(ops), 4), 4);
      const cqes = new ArrayBuffer(8 * CQE_BYTES);
      const cqeWords = new Int32Array(cqes);
      const results = new Map<number, number>();
      while (results.size < 4) {
        const n = native.skyfs_uring_reap(ring, pointerOf(cqes), 8);
        for (let i = 0; i < n; i++) results.set(cqeWords[i * 4], cqeWords[i * 4 + 2]);
        if (n === 0) await new Promise((resolve) => setTimeout(resolve, 1));
      }
      assert.deepEqual([...results.entries()].sort(), [
        [100, 4096],
        [101, 4096],
        [102, -Errno.EBADF],
        [103, -Errno.ECANCELED],
      ]);
      assert.deepEqual(readBack, written);
    } finally {
      native.skyfs_uring_close(ring);
      library.close();
      await engine.close(fd);
      await engine.shutdown();
    }
  });
});

/**
 * Runs `body` with a FIFO opened read-write (a read on it stays in the kernel until cancelled)
 * and a second engine that opens and closes it, so the engine under test can be shut down while
 * the fd stays valid.
 */
async function withFifo(body: (fd: number, dir: string) => Promise<void>): Promise<void> {
  await withTempDir("uring-test-", async (dir) => {
    await run("mkfifo", `${dir}/fifo`);
    const helper = openUringEngine({ queueDepth: 2 });
    const fd = await helper.open(`${dir}/fifo`, O_RDWR);
    try {
      await body(fd, dir);
    } finally {
      await helper.close(fd);
      await helper.shutdown();
    }
  });
}

Deno.test("io_uring: shutdown({ cancel: true }) cancels reads that would wait forever", async () => {
  await withFifo(async (fd) => {
    const io = openUringEngine({ queueDepth: 2 });
    const stuck = Array.from({ length: 5 }, () => io.read(fd, new Uint8Array(16), 0));
    assert.equal(io.inFlight, 2);
    assert.equal(io.queued, 3);
    await new Promise((resolve) => setTimeout(resolve, 20));
    const outcome = Promise.allSettled(stuck);
    await io.shutdown({ cancel: true });
    for (const result of await outcome) {
      assert.equal(result.status, "rejected");
      assert.ok(errno("ECANCELED")(result.reason));
    }
    assert.equal(io.inFlight, 0);
    assert.equal(io.queued, 0);
  });
});

Deno.test("io_uring: shutdown() cancels what is still in flight after the grace period", async () => {
  await withFifo(async (fd) => {
    const io = openUringEngine({ queueDepth: 4, shutdownCancelAfterMs: 30 });
    const outcome = io.read(fd, new Uint8Array(16), 0).then(() => "resolved", (error) => error);
    await io.shutdown();
    const error = await outcome;
    assert.ok(error instanceof FsError && error.errno === Errno.ECANCELED, String(error));
  });
});

Deno.test("io_uring: shutdown() lets accepted writes finish and they are on disk", async () => {
  await withTempDir("uring-test-", async (dir) => {
    const helper = openUringEngine({ queueDepth: 2 });
    const fd = await helper.open(`${dir}/w`, O_RDWR | O_CREAT, 0o644);
    const io = openUringEngine({ queueDepth: 8 });
    const writes = Array.from(
      { length: 64 },
      (_, i) => io.writeAndSync(fd, new Uint8Array(4096).fill(i), i * 4096),
    );
    assert.ok(io.queued > 0);
    const down = io.shutdown();
    await assert.rejects(io.read(fd, new Uint8Array(1), 0), errno("ECANCELED"));
    assert.deepEqual(await Promise.all(writes), new Array(64).fill(4096));
    await down;
    const data = await Deno.readFile(`${dir}/w`);
    assert.equal(data.length, 64 * 4096);
    for (let i = 0; i < 64; i++) assert.equal(data[i * 4096 + 100], i);
    await helper.close(fd);
    await helper.shutdown();
  });
});

Deno.test("openIoEngine: the engine option chooses the engine, with one log line", async () => {
  // mod.ts passes config io.engine (SKYFS_IO); the engine itself reads no environment.
  const lines: string[] = [];
  const log = (line: string) => lines.push(line);
  const portable = await openIoEngine({ engine: "portable", log });
  assert.equal(portable.kind, "portable");
  await portable.shutdown();
  assert.deepEqual(lines, ["skyfs io: engine portable (io.engine: portable)"]);

  const uring = await openIoEngine({ engine: "io_uring", log });
  assert.equal(uring.kind, "io_uring");
  await uring.shutdown();
  assert.equal(lines[1], "skyfs io: engine io_uring (io.engine: io_uring)");

  await assert.rejects(openIoEngine({ engine: "fast", log }), RangeError);
  const auto = await openIoEngine({ log });
  assert.equal(auto.kind, "io_uring");
  await auto.shutdown();
  assert.equal(lines[2], "skyfs io: engine io_uring (default: auto)");
});

Deno.test("openIoEngine: falls back when io_uring cannot open (simulated)", async () => {
  const lines: string[] = [];
  const log = (line: string) => lines.push(line);
  const refuse = () => {
    throw new FsError(Errno.EPERM, "io_uring is forbidden here (simulated)");
  };
  const io = await openIoEngine({ engine: "auto", log, openUring: refuse });
  assert.equal(io.kind, "portable");
  assert.equal(lines.length, 1);
  assert.match(lines[0], /engine portable \(io_uring unavailable: EPERM: .*simulated/);
  await assert.rejects(
    openIoEngine({ engine: "io_uring", log, openUring: refuse }),
    errno("EPERM"),
  );
  // A library that is not built is no reason to fall back (since ABI 8): the portable engine's
  // system calls come from it too (src/io/libc.ts). Either engine fails, in one line with the fix.
  for (const engine of ["auto", "portable"]) {
    await assert.rejects(
      openIoEngine({ engine, log, uring: { libraryPath: "/nope.so" } }),
      (e: unknown) =>
        e instanceof Error && !(e instanceof FsError) && !e.message.includes("\n") &&
        /^cannot load \/nope\.so \(.*\): run `deno task build`$/.test(e.message),
    );
  }
  assert.equal(lines.length, 1);
});

Deno.test("openIoEngine: falls back on a real EPERM from a seccomp filter", async () => {
  const script = `
    import { openIoEngine } from ${JSON.stringify(new URL("./mod.ts", import.meta.url).href)};
    const io = await openIoEngine({ engine: Deno.args[0] });
    console.log(io.kind);
    await io.shutdown();`;
  const child = (engine: string) =>
    new Deno.Command(denyIoUringPath, {
      args: [Deno.execPath(), "eval", script, engine],
      env: { NO_COLOR: "1" },
      stdout: "piped",
      stderr: "piped",
    }).output();
  const auto = await child("auto");
  const stderr = new TextDecoder().decode(auto.stderr);
  assert.ok(auto.success, stderr);
  assert.equal(new TextDecoder().decode(auto.stdout).trim(), "portable");
  assert.match(
    stderr,
    /skyfs io: engine portable \(io_uring unavailable: EPERM: .*io_uring_disabled/,
  );
  const forced = await child("io_uring");
  assert.equal(forced.success, false);
  assert.match(new TextDecoder().decode(forced.stderr), /EPERM: io_uring is forbidden here/);
});

Deno.test("io_uring: buffers stay alive and unmoved until completion, through GC", async () => {
  // A child with --expose-gc: reads into small (on-heap) arrays wait on a FIFO while the heap is
  // churned and collected; the bytes written later must land in the arrays the caller holds.
  // Other reads get buffers nobody else references: only the engine keeps them alive.
  await withTempDir("uring-test-", async (dir) => {
    await run("mkfifo", `${dir}/fifo`);
    const script = `
      import { openUringEngine } from ${
      JSON.stringify(new URL("./uring.ts", import.meta.url).href)
    };
      const io = openUringEngine({ queueDepth: 64 });
      const fd = await io.open(${JSON.stringify(`${dir}/fifo`)}, 2);
      const held = [];
      for (let i = 0; i < 16; i++) {
        const small = new Uint8Array(16);
        held.push(io.read(fd, small, 0).then((n) => [n, small]));
        io.read(fd, new Uint8Array(16), 0).then((n) => n === 16 || Deno.exit(3));
      }
      let junk = [];
      for (let round = 0; round < 40; round++) {
        junk = Array.from({ length: 20000 }, (_, i) => ({ i, text: "x" + i }));
        globalThis.gc();
      }
      const bytes = new Uint8Array(32 * 16).map((_, i) => (i >> 4) + 1);
      await io.write(fd, bytes, 0);
      const results = await Promise.all(held);
      const good = results.filter(([n, b]) => n === 16 && b[0] > 0 && b.every((x) => x === b[0]));
      console.log(good.length, junk.length > 0);
      await io.close(fd);
      await io.shutdown();`;
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["eval", "--v8-flags=--expose-gc", script],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.ok(out.success, new TextDecoder().decode(out.stderr));
    assert.equal(new TextDecoder().decode(out.stdout).trim(), "16 true");
  });
});

Deno.test("alignedBuffer: page-aligned and zeroed", () => {
  const buffer = alignedBuffer(8192);
  assert.equal(buffer.byteLength, 8192);
  assert.equal(addressOf(buffer) % 4096, 0);
  assert.ok(buffer.every((byte) => byte === 0));
  assert.equal(addressOf(alignedBuffer(100, 512)) % 512, 0);
  assert.throws(() => alignedBuffer(10, 3000), RangeError);
});

Deno.test("io_uring: IOSQE_ASYNC only on writes to buffered regular files, learned per fd", async () => {
  await withEngine(32, async (io, dir) => {
    await run("mkfifo", `${dir}/fifo`);
    const before = io.stats();
    // Opened through the engine: decided from the open flags, no probe.
    const ownBuffered = await io.open(`${dir}/own-buffered`, O_RDWR | O_CREAT, 0o644);
    const ownDirect = await io.open(`${dir}/own-direct`, O_RDWR | O_CREAT | libc.O_DIRECT, 0o644);
    assert.equal(io.writesAsync(ownBuffered), true);
    assert.equal(io.writesAsync(ownDirect), false);
    assert.equal(io.stats().fdProbes, before.fdProbes);
    // Opened elsewhere: learned once with fcntl(F_GETFL) + fstat, then cached.
    const outBuffered = libc.open(`${dir}/out-buffered`, libc.O_RDWR | libc.O_CREAT);
    const outDirect = libc.open(`${dir}/out-direct`, libc.O_RDWR | libc.O_CREAT | libc.O_DIRECT);
    const fifo = libc.open(`${dir}/fifo`, libc.O_RDWR);
    try {
      assert.equal(io.writesAsync(outBuffered), true);
      assert.equal(io.writesAsync(outDirect), false);
      assert.equal(io.writesAsync(fifo), false);
      assert.equal(io.writesAsync(outBuffered), true);
      assert.equal(io.stats().fdProbes, before.fdProbes + 3);

      // The data is right on every path, and exactly the buffered writes carried the flag.
      const files = [
        [ownBuffered, "own-buffered"],
        [ownDirect, "own-direct"],
        [outBuffered, "out-buffered"],
        [outDirect, "out-direct"],
      ] as const;
      const writes = files.flatMap(([fd], f) =>
        Array.from({ length: 8 }, (_, i) => {
          const block = alignedBuffer(4096).fill(f * 16 + i + 1);
          return io.write(fd, block, i * 4096);
        })
      );
      assert.deepEqual(await Promise.all(writes), new Array(32).fill(4096));
      assert.equal(await io.write(fifo, new Uint8Array([7, 8, 9]), 0), 3);
      assert.equal(io.stats().asyncWrites - before.asyncWrites, 16);
      for (const [f, [, name]] of files.entries()) {
        const data = await Deno.readFile(`${dir}/${name}`);
        assert.equal(data.length, 8 * 4096);
        for (let i = 0; i < 8; i++) {
          assert.ok(data.subarray(i * 4096, (i + 1) * 4096).every((b) => b === f * 16 + i + 1));
        }
      }
      const back = new Uint8Array(3);
      assert.equal(await io.read(fifo, back, 0), 3);
      assert.deepEqual([...back], [7, 8, 9]);
    } finally {
      libc.close(outBuffered);
      libc.close(outDirect);
      libc.close(fifo);
    }

    // close() forgets the fd: its number, reused by an O_DIRECT open elsewhere, is learned anew.
    await io.close(ownBuffered);
    const reused = libc.open(`${dir}/reused-direct`, libc.O_RDWR | libc.O_CREAT | libc.O_DIRECT);
    try {
      assert.equal(reused, ownBuffered, "the kernel hands out the lowest free fd number");
      assert.equal(io.writesAsync(reused), false);
    } finally {
      libc.close(reused);
    }
    // An open through the engine overrides whatever was known about the number.
    const again = await io.open(`${dir}/again`, O_RDWR | O_CREAT, 0o644);
    assert.equal(again, ownBuffered);
    assert.equal(io.writesAsync(again), true);

    // Closed and reused behind the engine's back: the stale answer (a speed hint, never a
    // result) lasts at most 4096 writes, then the fd is learned again.
    await io.close(again);
    const hidden = libc.open(`${dir}/hidden`, libc.O_RDWR | libc.O_CREAT);
    assert.equal(io.writesAsync(hidden), true);
    libc.close(hidden);
    const direct = libc.open(`${dir}/hidden-direct`, libc.O_RDWR | libc.O_CREAT | libc.O_DIRECT);
    try {
      assert.equal(direct, hidden);
      assert.equal(io.writesAsync(direct), true, "stale until re-learned");
      const block = alignedBuffer(4096);
      for (let round = 0; round < 16; round++) {
        await Promise.all(Array.from({ length: 256 }, () => io.write(direct, block, 0)));
      }
      assert.equal(io.writesAsync(direct), false);
    } finally {
      libc.close(direct);
    }
    await io.close(ownDirect);
  });
});

for (const ringSetup of ["defer", "coop", "plain"] as const) {
  Deno.test(`io_uring (${ringSetup} ring): completions that come while waiting off-thread`, async () => {
    await withTempDir("uring-test-", async (dir) => {
      await run("mkfifo", `${dir}/fifo`);
      // spinUs 0: never wait in the submit, so every completion comes through the eventfd.
      const io = openUringEngine({ queueDepth: 64, spinUs: 0, ringSetup });
      try {
        assert.equal(io.ringSetup, ringSetup);
        const fd = await io.open(`${dir}/fifo`, O_RDWR);
        const file = await io.open(`${dir}/file`, O_RDWR | O_CREAT, 0o644);
        const before = io.stats();
        // A FIFO read completes when another fd writes, long after the submit.
        const into = new Uint8Array(4);
        const reading = io.read(fd, into, 0);
        await new Promise((resolve) => setTimeout(resolve, 30));
        const writer = await Deno.open(`${dir}/fifo`, { write: true });
        await writer.write(new Uint8Array([1, 2, 3, 4]));
        writer.close();
        assert.equal(await reading, 4);
        assert.deepEqual([...into], [1, 2, 3, 4]);
        // Buffered writes complete on an io-wq worker.
        const writes = Array.from(
          { length: 64 },
          (_, i) => io.write(file, new Uint8Array(4096).fill(i), i * 4096),
        );
        assert.deepEqual(await Promise.all(writes), new Array(64).fill(4096));
        assert.ok(io.stats().waitCalls > before.waitCalls);
        const data = await Deno.readFile(`${dir}/file`);
        for (let i = 0; i < 64; i++) assert.equal(data[i * 4096 + 4095], i);
        await io.close(fd);
        await io.close(file);
      } finally {
        await io.shutdown();
      }
    });
  });
}

Deno.test("io_uring (defer ring): completions reaped inside their submit do not wake the waiter", async () => {
  await withFifo(async (fifo, dir) => {
    const io = openUringEngine({ queueDepth: 16 });
    try {
      assert.equal(io.ringSetup, "defer");
      const fd = await io.open(`${dir}/file`, O_RDWR | O_CREAT, 0o644);
      await io.write(fd, new Uint8Array(4096).fill(7), 0);
      // A FIFO read stays in the kernel: the engine parks a `nonblocking` wait on the eventfd.
      // (-1 if a failure below ends it with the engine's shutdown.)
      const pending = io.read(fifo, new Uint8Array(4), 0).catch(() => -1);
      await new Promise((resolve) => setTimeout(resolve, 5));
      const before = io.stats();
      for (let i = 0; i < 30; i++) {
        // Page-cache reads complete inline in their submit; the pause lets a woken waiter
        // come back (each wake re-arms the wait: one more wait call).
        assert.equal(await io.read(fd, new Uint8Array(4096), 0), 4096);
        await new Promise((resolve) => setTimeout(resolve, 2));
      }
      const after = io.stats();
      assert.equal(after.completions - before.completions, 30);
      assert.ok(
        after.waitCalls - before.waitCalls <= 1,
        `${after.waitCalls - before.waitCalls} wake-ups for 30 reads reaped in their own submit`,
      );
      // The parked wait still works: a completion that arrives later wakes it.
      const writer = await Deno.open(`${dir}/fifo`, { write: true });
      await writer.write(new Uint8Array([1, 2, 3, 4]));
      writer.close();
      assert.equal(await pending, 4);
      await io.close(fd);
    } finally {
      await io.shutdown({ cancel: true });
    }
  });
});

Deno.test("libskyfs_uring: a quiet submit signals what it leaves unreaped", async () => {
  const library = loadUringLibrary(defaultLibraryPath());
  const native = library.symbols;
  // The engine's setup, and the same without TASKRUN_FLAG (the library then runs task work
  // that came while muted with one more enter).
  for (const setup of [RING_SETUPS.defer | SETUP_TASKRUN_FLAG, RING_SETUPS.defer]) {
    const ring = native.skyfs_uring_open_with(8, setup, new Uint8Array(4))!;
    assert.ok(ring !== null);
    const ops = new ArrayBuffer(OP_BYTES);
    const words = new Uint32Array(ops);
    const cqes = new ArrayBuffer(8 * CQE_BYTES);
    const signals = () => {
      native.skyfs_uring_prepare_wait(ring, pointerOf(cqes), 8);
      return Number(native.skyfs_uring_eventfd_total(ring));
    };
    const nop = (async: boolean) => {
      words.fill(0);
      words[OpWord.HEAD] = Op.NOP | (async ? HEAD_ASYNC : 0);
      words[OpWord.USER_DATA] = 1;
    };
    try {
      let total = signals();
      // Reaped by the call that submitted it: no signal.
      nop(false);
      assert.equal(
        native.skyfs_uring_submit_reap(ring, pointerOf(ops), 1, pointerOf(cqes), 8, 0),
        1,
      );
      assert.equal(signals(), total);
      // Completed but not copied (no room): signalled.
      nop(false);
      assert.equal(
        native.skyfs_uring_submit_reap(ring, pointerOf(ops), 1, pointerOf(cqes), 0, 0),
        0,
      );
      assert.equal(signals(), total + 1);
      total = signals();
      // Run on an io-wq worker, done after (or while) the call returns: always signalled, and a
      // parked wait wakes.
      for (let i = 0; i < 100; i++) {
        nop(true);
        const got = native.skyfs_uring_submit_reap(ring, pointerOf(ops), 1, pointerOf(cqes), 8, 0);
        if (got === 1) continue;
        // Wait and reap until the completion is in: a wake with nothing to reap is allowed, a
        // wait that never wakes is the bug.
        let reaped = 0;
        for (let tries = 0; reaped === 0; tries++) {
          const woke = await Promise.race([
            native.skyfs_uring_wait(ring).then(() => true),
            new Promise((resolve) => setTimeout(() => resolve(false), 2000)),
          ]);
          assert.ok(woke, `round ${i}: an io-wq completion left the waiter asleep`);
          reaped = native.skyfs_uring_prepare_wait(ring, pointerOf(cqes), 8);
          assert.ok(tries < 50, `round ${i}: 50 wake-ups and still no completion`);
        }
        assert.equal(reaped, 1);
      }
    } finally {
      native.skyfs_uring_close(ring);
    }
  }
  library.close();
});
