/** Tests of durability and recovery: restart keeps everything, crashes need no repair. */

import assert from "node:assert/strict";
import { n, root, text, withVfs } from "./_testing.ts";
import { FsError } from "../fs_error.ts";
import { O_RDWR, O_WRONLY, pwrite } from "../io/libc.ts";
import { openEmbeddedKV } from "../meta/embedded.ts";
import { createPortableEngine } from "../io/portable.ts";
import { createVfs } from "./vfs.ts";
import { Namespace } from "../meta/namespace.ts";

Deno.test("restart keeps names, inode numbers, attributes, data, symlinks, xattrs", async () => {
  await withVfs(async (f) => {
    const d = await f.vfs.mkdir(root, 1, n("d"), 0o750, 0);
    const c = await f.vfs.create(root, d.ino, n("f"), 0o640, 0, O_RDWR);
    await f.vfs.write(root, c.attr.ino, c.fh, 3 * 2 ** 30, n("tail"));
    await f.vfs.setattr(root, c.attr.ino, { uid: 5, gid: 6 });
    await f.vfs.release(c.attr.ino, c.fh, 0);
    const s = await f.vfs.symlink(root, 1, n("s"), n("d/f"));
    await f.vfs.link(root, c.attr.ino, 1, n("hard"));
    await f.vfs.setxattr(root, d.ino, "user.k", n("v"), 0);
    const before = await f.vfs.getattr(root, c.attr.ino);
    const vfs = await f.restart();
    assert.equal((await vfs.lookup(root, 1, n("d"))).ino, d.ino);
    const after = await vfs.lookup(root, d.ino, n("f"));
    assert.deepEqual({ ...after, blocks: 0 }, { ...before, blocks: 0 });
    assert.equal(after.nlink, 2);
    assert.equal(after.size, 3 * 2 ** 30 + 4);
    assert.equal(text(await vfs.readlink(root, s.ino)), "d/f");
    assert.equal(text(await vfs.getxattr(root, d.ino, "user.k")), "v");
    const o = await vfs.open(root, after.ino, O_RDWR);
    const into = new Uint8Array(4);
    await vfs.read(root, after.ino, o.fh, 3 * 2 ** 30, into);
    assert.equal(text(into), "tail");
    await vfs.release(after.ino, o.fh, 0);
    // New inode numbers continue above the old ones.
    const fresh = await vfs.mknod(root, 1, n("new"), 0o100644, 0, 0);
    assert.ok(fresh.ino > Math.max(d.ino, c.attr.ino, s.ino));
    assert.deepEqual(vfs.recovery, {
      orphansPurged: 0,
      danglingFilesRemoved: 0,
      reservationsDropped: 0,
      pendingListed: 0,
      pendingStored: 0,
    });
  });
});

Deno.test("a clean shutdown stores what passthrough wrote to a file whose RELEASE never came", async () => {
  // The kernel ends the requests still queued when the daemon unmounts (fuse_abort_conn): a
  // RELEASE right after close(2) (asynchronous, and a passthrough open sends no FLUSH) may never
  // arrive, and the Vfs is destroyed with the handle open and the size only in the local file.
  await withVfs(async (f) => {
    const c = await f.vfs.create(root, 1, n("f"), 0o644, 0, O_RDWR);
    assert.ok(c.backingFd !== undefined);
    pwrite(c.backingFd!, n("written through the backing fd"), 0); // as the kernel writes
    const vfs = await f.restart(); // destroy (the unmount) without release
    const attr = await vfs.lookup(root, 1, n("f"));
    assert.equal(attr.size, 30);
    const o = await vfs.open(root, attr.ino, O_RDWR);
    const into = new Uint8Array(30);
    await vfs.read(root, attr.ino, o.fh, 0, into);
    assert.equal(text(into), "written through the backing fd");
    await vfs.release(attr.ino, o.fh, 0);
  });
});

Deno.test("startup purges orphans and removes local files of deleted inodes", async () => {
  await withVfs(async (f) => {
    const c = await f.vfs.create(root, 1, n("f"), 0o644, 0, O_RDWR);
    await f.vfs.write(root, c.attr.ino, c.fh, 0, n("data"));
    await f.vfs.unlink(root, 1, n("f")); // still open and looked up: an orphan
    const local = `${f.dir}/data/${(c.attr.ino % 256).toString(16).padStart(2, "0")}/${
      c.attr.ino.toString(16)
    }`;
    assert.ok((await Deno.stat(local)).isFile);
    const stray = `${f.dir}/data/7f/7777777f`;
    await Deno.writeTextFile(stray, "left by a crash");
    const vfs = await f.restart();
    assert.deepEqual(vfs.recovery, {
      orphansPurged: 1,
      danglingFilesRemoved: 1,
      reservationsDropped: 0,
      pendingListed: 0,
      pendingStored: 0,
    });
    await assert.rejects(vfs.getattr(root, c.attr.ino), (e) => e instanceof FsError);
    await assert.rejects(Deno.stat(local), Deno.errors.NotFound);
    await assert.rejects(Deno.stat(stray), Deno.errors.NotFound);
  });
});

Deno.test("data beyond the stored size (lost by a crash) never shows through later", async () => {
  await withVfs(async (f) => {
    const c = await f.vfs.create(root, 1, n("f"), 0o644, 0, O_RDWR);
    await f.vfs.write(root, c.attr.ino, c.fh, 0, n("abc"));
    await f.vfs.release(c.attr.ino, c.fh, 0);
    // A crash after more data reached the local file but before its size was stored:
    const local = `${f.dir}/data/${(c.attr.ino % 256).toString(16).padStart(2, "0")}/${
      c.attr.ino.toString(16)
    }`;
    await Deno.writeTextFile(local, "abcSTALE");
    const vfs = await f.restart();
    assert.equal((await vfs.getattr(root, c.attr.ino)).size, 3);
    const o = await vfs.open(root, c.attr.ino, O_RDWR);
    await vfs.write(root, c.attr.ino, o.fh, 10, n("z"));
    const into = new Uint8Array(11);
    assert.equal(await vfs.read(root, c.attr.ino, o.fh, 0, into), 11);
    assert.deepEqual([...into.subarray(3, 10)], [0, 0, 0, 0, 0, 0, 0]);
    await vfs.release(c.attr.ino, o.fh, 0);
    // No kept local fds: a crashed process holds none, and a kept one would see the write above
    // (as an fd held open does) and store its size at the clean shutdown this test makes.
  }, { keepClosedFiles: 0 });
});

Deno.test("kill -9 after close(2) and before RELEASE: sizes come from the local files", async () => {
  const dir = await Deno.makeTempDir({ prefix: "vfs-unreleased-" });
  const child = new URL("./_unreleased_child.ts", import.meta.url).pathname;
  try {
    const proc = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", child, dir],
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    const reader = proc.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let said = "";
    while (!said.includes("ready\n")) {
      const { value, done } = await reader.read();
      if (done) break;
      said += value;
    }
    proc.kill("SIGKILL");
    await proc.status;
    await reader.cancel().catch(() => {});
    assert.equal(said, "ready\n");
    const kv = await openEmbeddedKV(`${dir}/meta.db`);
    const vfs = await createVfs({ kv, io: createPortableEngine(), dataDir: dir });
    try {
      // outside, inside and the reopened again; dated was stored with nothing pending.
      assert.equal(vfs.recovery.pendingStored, 3);
      assert.deepEqual(await (await Namespace.open(kv)).listPending(), []);
      const body = (s: string, times = 1) => `${s}:`.repeat(300 * times);
      for (
        const [file, want] of [
          ["outside", body("outside")],
          ["inside", body("inside")],
          ["again", body("again", 2)],
          ["dated", body("dated")],
        ]
      ) {
        const attr = await vfs.lookup(root, 1, n(file));
        assert.equal(attr.size, want.length, `${file}: size`);
        const o = await vfs.open(root, attr.ino, 0);
        const into = new Uint8Array(want.length);
        assert.equal(await vfs.read(root, attr.ino, o.fh, 0, into), want.length);
        assert.equal(text(into), want, `${file}: content`);
        await vfs.release(attr.ino, o.fh, 0);
        if (file === "dated") assert.deepEqual(attr.mtime, { sec: 1_000_000, nsec: 5 });
      }
    } finally {
      await vfs.destroy();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the pending write-back list: on it while written, off with the write-back", async () => {
  await withVfs(async (f) => {
    const pending = async () => await (await Namespace.open(f.kv)).listPending();
    const c = await f.vfs.create(root, 1, n("f"), 0o644, 0, O_RDWR);
    assert.deepEqual(await pending(), [c.attr.ino], "from its create");
    await f.vfs.write(root, c.attr.ino, c.fh, 0, n("abc"));
    await f.vfs.release(c.attr.ino, c.fh, 0);
    // Left to the write-back timer (here the clean stop's merged write-back).
    const t = await f.vfs.create(root, 1, n("touched"), 0o644, 0, O_WRONLY);
    await f.vfs.release(t.attr.ino, t.fh, 0);
    let vfs = await f.restart();
    assert.equal(vfs.recovery.pendingListed, 0);
    assert.deepEqual(await pending(), []);
    assert.equal((await vfs.getattr(root, c.attr.ino)).size, 3);
    const r = await vfs.open(root, c.attr.ino, 0);
    assert.deepEqual(await pending(), [], "a reader puts nothing on it");
    const w = await vfs.open(root, c.attr.ino, O_WRONLY);
    assert.deepEqual(await pending(), [c.attr.ino], "a writer does");
    await vfs.release(c.attr.ino, w.fh, 0);
    await vfs.release(c.attr.ino, r.fh, 0);
    vfs = await f.restart();
    assert.equal(vfs.recovery.pendingListed, 0);
  });
});

Deno.test("kill -9 of a writer at random moments loses nothing fsync'd, needs no repair", async () => {
  const dir = await Deno.makeTempDir({ prefix: "vfs-crash-" });
  const child = new URL("./_crash_child.ts", import.meta.url).pathname;
  const recorded = new Map<string, number>();
  try {
    for (let round = 0; round < 4; round++) {
      const proc = new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", child, dir, String(round)],
        stdout: "piped",
        stderr: "inherit",
      }).spawn();
      const reader = proc.stdout.pipeThrough(new TextDecoderStream()).getReader();
      let buffered = "";
      const want = 5 + round * 7;
      let lines = 0;
      while (lines < want) {
        const { value, done } = await reader.read();
        if (done) break;
        buffered += value;
        let nl: number;
        while ((nl = buffered.indexOf("\n")) >= 0) {
          const [, name, size] = buffered.slice(0, nl).split(" ");
          buffered = buffered.slice(nl + 1);
          recorded.set(name, Number(size));
          lines++;
        }
      }
      // Let it run on into the middle of something: a write, an fsync, an unlink, a commit.
      await new Promise((r) => setTimeout(r, Math.random() * 30));
      proc.kill("SIGKILL");
      await proc.status;
      await reader.cancel().catch(() => {});
      assert.ok(lines >= want, `round ${round}: child printed only ${lines} lines`);
      await verify(dir, recorded);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** Every recorded file that was not unlinked by the child is there with its fsync'd content. */
async function verify(dir: string, recorded: Map<string, number>): Promise<void> {
  const kv = await openEmbeddedKV(`${dir}/meta.db`);
  const vfs = await createVfs({ kv, io: createPortableEngine(), dataDir: dir });
  try {
    // Recovery ran inside createVfs: no orphan is left for anyone to repair.
    assert.deepEqual(await (await Namespace.open(kv)).listOrphans(), []);
    for (const [name, size] of recorded) {
      const i = Number(name.split("-")[1]);
      let attr;
      try {
        attr = await vfs.lookup(root, 1, n(name));
      } catch (error) {
        // The child unlinks every fifth file after recording it.
        if (i % 5 === 4 && error instanceof FsError && error.errno === 2) continue;
        throw error;
      }
      assert.ok(attr.size >= size, `${name}: size ${attr.size} < fsync'd ${size}`);
      const o = await vfs.open(root, attr.ino, 0);
      const into = new Uint8Array(size);
      assert.equal(await vfs.read(root, attr.ino, o.fh, 0, into), size);
      assert.equal(text(into), `${name}:`.repeat(size / (name.length + 1)), `${name} content`);
      await vfs.release(attr.ino, o.fh, 0);
      vfs.forget(attr.ino, 1);
    }
  } finally {
    await vfs.destroy();
  }
}
