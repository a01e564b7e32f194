/**
 * Tests of what only the io_uring engine has: batching into one submit, back-pressure at the queue
 * depth, linked SQEs at the FFI boundary, shutdown with operations in flight, and the choice of
 * engine in openIoEngine (including a real EPERM from a seccomp filter).
 */

import assert from "node:assert/strict";
import { Errno, FsError } from "../fs_error.ts";
import { errno, O_CREAT, O_RDONLY, O_RDWR, run, withTempDir } from "./engine_suite.ts";
import { alignedBuffer, openIoEngine } from "./mod.ts";
import { openUringEngine, type UringEngine } from "./uring.ts";
import {
  addressOf,
  CQE_BYTES,
  defaultLibraryPath,
  loadUringLibrary,
  Op,
  OP_BYTES,
  OpWord,
  pointerOf,
} from "./uring_native.ts";
import { denyIoUringPath, ensureUringBuilt } from "./uring_test_util.ts";

await ensureUringBuilt();

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

Deno.test("openIoEngine: SKYFS_IO and options choose the engine, with one log line", async () => {
  const lines: string[] = [];
  const log = (line: string) => lines.push(line);
  const saved = Deno.env.get("SKYFS_IO");
  try {
    Deno.env.set("SKYFS_IO", "portable");
    const portable = await openIoEngine({ log });
    assert.equal(portable.kind, "portable");
    await portable.shutdown();
    assert.deepEqual(lines, ["skyfs io: engine portable (SKYFS_IO: portable)"]);

    Deno.env.set("SKYFS_IO", "io_uring");
    const uring = await openIoEngine({ log });
    assert.equal(uring.kind, "io_uring");
    await uring.shutdown();
    assert.equal(lines[1], "skyfs io: engine io_uring (SKYFS_IO: io_uring)");

    Deno.env.set("SKYFS_IO", "fast");
    await assert.rejects(openIoEngine({ log }), RangeError);
    Deno.env.delete("SKYFS_IO");
    const auto = await openIoEngine({ log });
    assert.equal(auto.kind, "io_uring");
    await auto.shutdown();
    assert.equal(lines.length, 3);
  } finally {
    if (saved === undefined) Deno.env.delete("SKYFS_IO");
    else Deno.env.set("SKYFS_IO", saved);
  }
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
  // A library that is not built is another reason to fall back, with the fix in the line.
  const missing = await openIoEngine({ engine: "auto", log, uring: { libraryPath: "/nope.so" } });
  assert.equal(missing.kind, "portable");
  assert.match(lines[1], /ENOENT: cannot load "\/nope\.so".*deno task build/);
});

Deno.test("openIoEngine: falls back on a real EPERM from a seccomp filter", async () => {
  const script = `
    import { openIoEngine } from ${JSON.stringify(new URL("./mod.ts", import.meta.url).href)};
    const io = await openIoEngine();
    console.log(io.kind);
    await io.shutdown();`;
  const child = (env: Record<string, string>) =>
    new Deno.Command(denyIoUringPath, {
      args: [Deno.execPath(), "eval", script],
      env: { ...env, NO_COLOR: "1" },
      stdout: "piped",
      stderr: "piped",
    }).output();
  const auto = await child({ SKYFS_IO: "auto" });
  const stderr = new TextDecoder().decode(auto.stderr);
  assert.ok(auto.success, stderr);
  assert.equal(new TextDecoder().decode(auto.stdout).trim(), "portable");
  assert.match(
    stderr,
    /skyfs io: engine portable \(io_uring unavailable: EPERM: .*io_uring_disabled/,
  );
  const forced = await child({ SKYFS_IO: "io_uring" });
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
