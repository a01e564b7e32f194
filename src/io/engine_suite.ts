/**
 * The behaviour every IoEngine must show, as one suite of Deno tests run against each engine
 * (engine_suite_test.ts): results, short reads, errno on failure, and real kernel errors (ENOSPC
 * on a small tmpfs, EIO from an ext4 image after a forced shutdown) where the test runs as root.
 * @module
 */

import assert from "node:assert/strict";
import { Errno, FsError } from "../fs_error.ts";
import type { IoEngine } from "./types.ts";

export const O_RDONLY = 0o0;
export const O_WRONLY = 0o1;
export const O_RDWR = 0o2;
export const O_CREAT = 0o100;
export const O_EXCL = 0o200;
export const O_TRUNC = 0o1000;
const FALLOC_FL_KEEP_SIZE = 0x01;
const FALLOC_FL_PUNCH_HOLE = 0x02;
/** EXT4_IOC_SHUTDOWN = _IOR('X', 125, __u32); flag 2 = EXT4_GOING_FLAGS_NOLOGFLUSH. */
const EXT4_IOC_SHUTDOWN = 0x8004587d;

export const isRoot = Deno.uid() === 0;

/** Whether `error` is an FsError with the errno `name`; for assert.rejects. */
export function errno(name: keyof typeof Errno): (error: unknown) => boolean {
  return (error: unknown) => {
    if (error instanceof FsError && error.errno === Errno[name]) return true;
    throw new assert.AssertionError({ message: `expected ${name}, got ${String(error)}` });
  };
}

export async function withTempDir<T>(
  prefix: string,
  run: (dir: string) => Promise<T>,
): Promise<T> {
  const dir = await Deno.makeTempDir({ prefix });
  try {
    return await run(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

export async function run(command: string, ...args: string[]): Promise<void> {
  const out = await new Deno.Command(command, { args, stdout: "piped", stderr: "piped" }).output();
  if (!out.success) {
    const stderr = new TextDecoder().decode(out.stderr).trim();
    throw new Error(`${command} ${args.join(" ")} failed (exit ${out.code}): ${stderr}`);
  }
}

/** Mounts a filesystem for one test (root only) and always unmounts it. */
async function withMount<T>(
  dir: string,
  mountArgs: string[],
  body: (mountpoint: string) => Promise<T>,
): Promise<T> {
  const mountpoint = `${dir}/mnt`;
  await Deno.mkdir(mountpoint);
  await run("mount", ...mountArgs, mountpoint);
  try {
    return await body(mountpoint);
  } finally {
    await run("umount", mountpoint);
  }
}

function pattern(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

/**
 * Registers the suite for one engine. `open` makes a fresh engine per test; each test shuts it
 * down, so Deno's op and resource sanitizers check that the engine leaks nothing.
 */
export function defineEngineSuite(name: string, open: () => Promise<IoEngine>): void {
  const test = (title: string, body: (io: IoEngine, dir: string) => Promise<void>) =>
    Deno.test(`${name}: ${title}`, async () => {
      await withTempDir(`uring-suite-`, async (dir) => {
        const io = await open();
        try {
          await body(io, dir);
        } finally {
          await io.shutdown();
        }
      });
    });
  const rootTest = (title: string, body: (io: IoEngine, dir: string) => Promise<void>) =>
    isRoot ? test(title, body) : Deno.test({
      name: `${name}: ${title}`,
      ignore: true, // mounting a tmpfs or an ext4 image needs root
      fn() {},
    });

  test("write then read back, short read only at end of file", async (io, dir) => {
    const fd = await io.open(`${dir}/f`, O_RDWR | O_CREAT, 0o644);
    const data = pattern(3 * 65536 + 123, 1);
    assert.equal(await io.write(fd, data, 0), data.length);
    const back = new Uint8Array(data.length);
    assert.equal(await io.read(fd, back, 0), data.length);
    assert.deepEqual(back, data);
    const tail = new Uint8Array(4096);
    assert.equal(await io.read(fd, tail, data.length - 100), 100);
    assert.deepEqual(tail.subarray(0, 100), data.subarray(data.length - 100));
    assert.equal(await io.read(fd, tail, data.length), 0);
    assert.equal(await io.read(fd, tail, data.length + 1_000_000), 0);
    await io.close(fd);
  });

  test("offsets above 4 GiB", async (io, dir) => {
    const fd = await io.open(`${dir}/sparse`, O_RDWR | O_CREAT, 0o644);
    const far = 5 * 2 ** 30 + 17;
    const data = pattern(5000, 2);
    assert.equal(await io.write(fd, data, far), data.length);
    const back = new Uint8Array(5000);
    assert.equal(await io.read(fd, back, far), 5000);
    assert.deepEqual(back, data);
    assert.equal((await io.statx(`${dir}/sparse`)).size, far + 5000);
    await io.close(fd);
  });

  test("readv and writev, short readv at end of file", async (io, dir) => {
    const fd = await io.open(`${dir}/v`, O_RDWR | O_CREAT, 0o644);
    const parts = [pattern(10, 3), pattern(4096, 4), pattern(1, 5)];
    assert.equal(await io.writev(fd, parts, 7), 4107);
    const into = [new Uint8Array(7), new Uint8Array(4000), new Uint8Array(500)];
    assert.equal(await io.readv(fd, into, 0), 7 + 4000 + 107);
    assert.deepEqual(into[0], new Uint8Array(7));
    assert.deepEqual(into[1].subarray(0, 10), parts[0]);
    assert.deepEqual(into[2].subarray(0, 106), parts[1].subarray(4096 - 106));
    assert.equal(into[2][106], parts[2][0]);
    assert.equal(await io.readv(fd, [new Uint8Array(8)], 4114), 0);
    await io.close(fd);
  });

  test(
    "dependent operations in order: create, write+sync, stat, rename, unlink",
    async (io, dir) => {
      const fd = await io.open(`${dir}/a`, O_RDWR | O_CREAT | O_EXCL, 0o640);
      await assert.rejects(io.open(`${dir}/a`, O_RDWR | O_CREAT | O_EXCL, 0o640), errno("EEXIST"));
      // Many linked write+sync pairs in one turn: each resolves with its write's count.
      const writes = Array.from(
        { length: 40 },
        (_, i) => io.writeAndSync(fd, pattern(512, i), i * 512),
      );
      assert.deepEqual(await Promise.all(writes), new Array(40).fill(512));
      const back = new Uint8Array(512);
      for (const i of [0, 17, 39]) {
        assert.equal(await io.read(fd, back, i * 512), 512);
        assert.deepEqual(back, pattern(512, i));
      }
      const st = await io.statx(`${dir}/a`);
      assert.equal(st.size, 40 * 512);
      assert.equal(st.mode & 0o7777, 0o640 & ~Deno.umask());
      assert.equal(st.mode & 0o170000, 0o100000);
      assert.equal(st.ino, Deno.statSync(`${dir}/a`).ino);
      await io.rename(`${dir}/a`, `${dir}/b`);
      await assert.rejects(io.statx(`${dir}/a`), errno("ENOENT"));
      await io.fsync(fd);
      await io.fsync(fd, { datasync: true });
      await io.close(fd);
      await io.unlink(`${dir}/b`);
      await assert.rejects(io.unlink(`${dir}/b`), errno("ENOENT"));
      await assert.rejects(io.rename(`${dir}/b`, `${dir}/c`), errno("ENOENT"));
    },
  );

  test("fallocate grows the file or keeps its size", async (io, dir) => {
    const fd = await io.open(`${dir}/fa`, O_RDWR | O_CREAT, 0o644);
    await io.fallocate(fd, 0, 0, 1 << 20);
    let st = await io.statx(`${dir}/fa`);
    assert.equal(st.size, 1 << 20);
    assert.ok(st.blocks >= (1 << 20) / 512, `blocks ${st.blocks}`);
    await io.fallocate(fd, FALLOC_FL_KEEP_SIZE, 1 << 20, 1 << 20);
    st = await io.statx(`${dir}/fa`);
    assert.equal(st.size, 1 << 20);
    await assert.rejects(io.fallocate(fd, 0, 0, 0), errno("EINVAL"));
    await io.close(fd);
  });

  test(
    "fallocate ranges over 2 GiB are not cut (punch a 4 GiB hole in a sparse file)",
    async (io, dir) => {
      // A punch costs no disk: the byte at 3.5 GiB must go with the rest of the range (issue 18:
      // the ring used to cut every length to 2 GiB - 4 KiB, like a read's).
      const fd = await io.open(`${dir}/big`, O_RDWR | O_CREAT, 0o644);
      const far = 3.5 * 2 ** 30;
      await io.write(fd, new Uint8Array([7]), far);
      await io.fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 2 ** 32);
      const back = new Uint8Array(1);
      assert.equal(await io.read(fd, back, far), 1);
      assert.equal(back[0], 0);
      assert.equal((await io.statx(`${dir}/big`)).size, far + 1);
      await io.close(fd);
    },
  );

  test("EBADF on a closed fd and on the wrong access mode", async (io, dir) => {
    const fd = await io.open(`${dir}/e`, O_RDWR | O_CREAT, 0o644);
    await io.close(fd);
    const buf = new Uint8Array(16);
    await assert.rejects(io.read(fd, buf, 0), errno("EBADF"));
    await assert.rejects(io.write(fd, buf, 0), errno("EBADF"));
    // The portable engine's fsync runs on Deno's blocking pool; its C wrapper reads errno there
    // (src/io/libc.ts), so the code is the real one (it was EIO for every failure before).
    await assert.rejects(io.fsync(fd), errno("EBADF"));
    await assert.rejects(io.fsync(fd, { datasync: true }), errno("EBADF"));
    await assert.rejects(io.close(fd), errno("EBADF"));
    const ro = await io.open(`${dir}/e`, O_RDONLY);
    await assert.rejects(io.write(ro, buf, 0), errno("EBADF"));
    // The write of a linked pair fails, so the pair fails with the write's errno.
    await assert.rejects(io.writeAndSync(ro, buf, 0), errno("EBADF"));
    await io.close(ro);
    await assert.rejects(io.open(`${dir}/missing/x`, O_RDONLY), errno("ENOENT"));
  });

  test("many operations at once beyond any queue depth", async (io, dir) => {
    const fd = await io.open(`${dir}/m`, O_RDWR | O_CREAT, 0o644);
    const blocks = 64;
    await Promise.all(
      Array.from({ length: blocks }, (_, i) => io.write(fd, pattern(4096, i + 10), i * 4096)),
    );
    const reads = Array.from({ length: 2000 }, async (_, i) => {
      const block = (i * 7) % blocks;
      const into = new Uint8Array(4096);
      assert.equal(await io.read(fd, into, block * 4096), 4096);
      return into[0] === pattern(4096, block + 10)[0] &&
        into[4095] === pattern(4096, block + 10)[4095];
    });
    assert.ok((await Promise.all(reads)).every(Boolean));
    await io.close(fd);
  });

  rootTest("ENOSPC on a full 1 MiB tmpfs", async (io, dir) => {
    await withMount(dir, ["-t", "tmpfs", "-o", "size=1m", "tmpfs"], async (mnt) => {
      const fd = await io.open(`${mnt}/fill`, O_RDWR | O_CREAT, 0o644);
      const chunk = new Uint8Array(64 * 1024).fill(1);
      let offset = 0;
      let failure: unknown;
      for (let i = 0; i < 64 && failure === undefined; i++) {
        try {
          const n = await io.write(fd, chunk, offset);
          offset += n;
          if (n < chunk.length) failure = "short";
        } catch (error) {
          failure = error;
        }
      }
      assert.ok(offset <= 1 << 20 && offset > 0, `wrote ${offset} bytes into a 1 MiB tmpfs`);
      // Whether the first failing write came back short or failed outright, the next one fails.
      await assert.rejects(io.write(fd, chunk, offset), errno("ENOSPC"));
      await assert.rejects(io.writeAndSync(fd, chunk, offset), errno("ENOSPC"));
      await assert.rejects(io.fallocate(fd, 0, 0, 4 << 20), errno("ENOSPC"));
      await io.close(fd);
    });
  });

  rootTest("EIO from an ext4 image after a forced shutdown", async (io, dir) => {
    const image = `${dir}/ext4.img`;
    await run("truncate", "-s", "16M", image);
    await run("mkfs.ext4", "-q", "-F", image);
    await withMount(dir, ["-o", "loop", image], async (mnt) => {
      const fd = await io.open(`${mnt}/f`, O_RDWR | O_CREAT, 0o644);
      assert.equal(await io.writeAndSync(fd, pattern(8192, 9), 0), 8192);
      // The ioctl the kernel's own tests use (xfstests "godown"): every later I/O gets EIO.
      await run(
        "python3",
        "-c",
        "import fcntl, os, struct, sys\n" +
          "fd = os.open(sys.argv[1], os.O_RDONLY)\n" +
          `fcntl.ioctl(fd, ${EXT4_IOC_SHUTDOWN}, struct.pack('I', 2))`,
        `${mnt}/f`,
      );
      const buf = new Uint8Array(4096);
      await assert.rejects(io.read(fd, buf, 0), errno("EIO"));
      await assert.rejects(io.write(fd, buf, 0), errno("EIO"));
      await assert.rejects(io.writeAndSync(fd, buf, 0), errno("EIO"));
      await assert.rejects(io.fsync(fd), errno("EIO"));
      await assert.rejects(io.open(`${mnt}/g`, O_RDWR | O_CREAT, 0o644), errno("EIO"));
      await io.close(fd);
    });
  });

  test("operations after shutdown are refused", async (io, dir) => {
    const fd = await io.open(`${dir}/s`, O_RDWR | O_CREAT, 0o644);
    await io.close(fd);
    await io.shutdown();
    if (io.kind === "portable") return; // stateless: nothing to refuse
    await assert.rejects(io.read(fd, new Uint8Array(1), 0), errno("ECANCELED"));
    await assert.rejects(io.statx(`${dir}/s`), errno("ECANCELED"));
  });
}
