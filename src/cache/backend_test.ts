/** One suite over every BackendStore: the directory backend, and S3 against s3rver run as a
 * separate process. */

import assert from "node:assert/strict";
import { type BackendStore, chunkObjectKey, DirBackend, parseChunkObjectKey } from "./backend.ts";
import { S3Backend } from "./backend_s3.ts";
import { openIoEngine } from "../io/mod.ts";
import { recycleBuffer, takeBuffer } from "./buffer_pool.ts";
import { CHUNK_SIZE } from "./chunk_map.ts";

function suite(
  name: string,
  open: () => Promise<{ store: BackendStore; stop: () => Promise<void> }>,
) {
  Deno.test({
    name: `backend ${name}: put/get/list/delete, missing keys, binary data`,
    sanitizeResources: false,
    sanitizeOps: false,
    fn: async () => {
      const { store, stop } = await open();
      try {
        assert.equal(await store.get("c/1/0/none"), undefined);
        const data = crypto.getRandomValues(new Uint8Array(65536));
        await store.put(chunkObjectKey(0x2a, 0, "v1"), data);
        await store.put(chunkObjectKey(0x2a, 1, "v1"), new Uint8Array([1]));
        await store.put(chunkObjectKey(0x2b, 0, "v1"), new Uint8Array(0));
        assert.deepEqual(await store.get("c/2a/0/v1"), data);
        assert.deepEqual(await store.get("c/2b/0/v1"), new Uint8Array(0));
        const listed = await store.list("c/2a/");
        assert.deepEqual(listed.map((o) => o.key), ["c/2a/0/v1", "c/2a/1/v1"]);
        assert.ok(listed.every((o) => o.modifiedMs > Date.now() - 600_000));
        assert.equal((await store.list("c/")).length, 3);
        await store.delete("c/2a/0/v1");
        await store.delete("c/2a/0/v1"); // absent: no error
        assert.equal(await store.get("c/2a/0/v1"), undefined);
        assert.deepEqual((await store.list("c/2a/")).map((o) => o.key), ["c/2a/1/v1"]);
      } finally {
        await store.close();
        await stop();
      }
    },
  });
}

Deno.test("chunk object keys round-trip and reject foreign keys", () => {
  assert.deepEqual(parseChunkObjectKey(chunkObjectKey(255, 7, "n1-5")), {
    ino: 255,
    index: 7,
    version: "n1-5",
  });
  assert.equal(parseChunkObjectKey("tmp/x"), undefined);
});

suite("dir", async () => {
  const dir = await Deno.makeTempDir({ prefix: "cluster-backend-" });
  const store = await DirBackend.open(dir);
  await assert.rejects(store.get("../etc/passwd"), RangeError);
  return { store, stop: () => Deno.remove(dir, { recursive: true }) };
});

suite("dir through the process's io_uring engine", async () => {
  const dir = await Deno.makeTempDir({ prefix: "cluster-backend-" });
  const io = await openIoEngine({ engine: "io_uring" });
  const store = await DirBackend.open(dir, io);
  // A directory where the object's directory should be: the put fails with the errno, and
  // leaves nothing behind under that key.
  await Deno.mkdir(`${dir}/o/c/9/0/v1`, { recursive: true });
  await assert.rejects(store.put("c/9/0/v1", new Uint8Array(8)), /EISDIR|ENOTDIR|EEXIST/);
  return {
    store,
    stop: async () => {
      await io.shutdown();
      await Deno.remove(dir, { recursive: true });
    },
  };
});

/** Start s3rver as its own process; resolves with its port and a stop function. */
export async function startS3rver(
  bucket: string,
): Promise<{ endpoint: string; stop: () => Promise<void> }> {
  const dir = await Deno.makeTempDir({ prefix: "cluster-s3-" });
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL("./_s3rver_main.ts", import.meta.url).pathname, dir, bucket],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  while (!/port \d+/.test(text)) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`s3rver exited before listening: ${text}`);
    text += value;
  }
  reader.releaseLock();
  const port = Number(/port (\d+)/.exec(text)![1]);
  return {
    endpoint: `http://127.0.0.1:${port}`,
    stop: async () => {
      child.kill("SIGKILL");
      await child.status;
      await child.stdout.cancel().catch(() => {});
      await Deno.remove(dir, { recursive: true });
    },
  };
}

suite("s3 (s3rver process)", async () => {
  const server = await startS3rver("skyfs");
  const store = new S3Backend({
    bucket: "skyfs",
    endpoint: server.endpoint,
    accessKeyId: "S3RVER",
    secretAccessKey: "S3RVER",
    prefix: "t/",
  });
  return { store, stop: server.stop };
});

Deno.test("dir backend: chunks from the buffer pool go through O_DIRECT, any length", async () => {
  const dir = await Deno.makeTempDir({ prefix: "cluster-backend-" });
  for (const io of [undefined, await openIoEngine({ engine: "io_uring" })]) {
    const store = await DirBackend.open(dir, io);
    for (const length of [CHUNK_SIZE, CHUNK_SIZE - 1, 70_000, 65_536 + 4096 + 5, 100]) {
      const data = takeBuffer(length);
      crypto.getRandomValues(data.subarray(0, Math.min(length, 65_536)));
      data.fill(7, Math.min(length, 65_536));
      const key = `c/1/${length}/v`;
      await store.put(key, data);
      const want = data.slice();
      recycleBuffer(data); // the put is done with it
      assert.deepEqual(await store.get(key), want, `${length} bytes`);
      assert.equal((await Deno.stat(`${dir}/o/${key}`)).size, length);
    }
    await io?.shutdown();
  }
  await Deno.remove(dir, { recursive: true });
});
