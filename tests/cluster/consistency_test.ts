/**
 * POSIX consistency across three `skyfs mount` daemons (three CURP replicas, or one etcd member
 * with SKYFS_TEST_META=etcd; directory backend): a file
 * unlinked on one node while open on another stays readable and writable there until closed,
 * then is freed; rename across directories, hard links, nlink and ctime as on one node; SEEK_DATA
 * and SEEK_HOLE from the chunk map; fsync durable before it returns (kill -9 right after). Needs
 * root, /dev/fuse and python3 (for lseek SEEK_DATA, which Deno lacks).
 * @module
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { LocalCluster } from "../../src/cluster/local_cluster.ts";
import { openMetaBackend } from "../../src/meta/backend.ts";
import { keys } from "../../src/meta/namespace.ts";
import { prefixEnd } from "../../src/meta/kv.ts";
import { openRecordKey, reclaimBarrier } from "../../src/cache/open_records.ts";
import { canRunCluster, clusterStore, random, same, sleep } from "./_cluster_util.ts";

const STORE = clusterStore();

const CHUNK = 4 << 20;

/** Poll until `check` holds (kernel entries and attributes live 1 s in cluster mode). */
async function until(check: () => Promise<boolean> | boolean, what: string, ms = 5000) {
  const deadline = Date.now() + ms;
  while (!(await Promise.resolve().then(check).catch(() => false))) {
    if (Date.now() > deadline) assert.fail(`not within ${ms} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function statOrNull(path: string): Deno.FileInfo | null {
  try {
    return Deno.statSync(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return null;
    throw error;
  }
}

async function readAt(file: Deno.FsFile, offset: number, length: number): Promise<Uint8Array> {
  const out = new Uint8Array(length);
  await file.seek(offset, Deno.SeekMode.Start);
  for (let done = 0; done < length;) {
    const n = await file.read(out.subarray(done));
    if (n === null) break;
    done += n;
  }
  return out;
}

/** st_ctime in nanoseconds (Deno's FileInfo.ctime has whole seconds only). */
async function ctimeNs(path: string): Promise<bigint> {
  const out = await new Deno.Command("python3", {
    args: ["-c", "import os, sys; print(os.stat(sys.argv[1]).st_ctime_ns)", path],
    stdout: "piped",
  }).output();
  return BigInt(new TextDecoder().decode(out.stdout).trim());
}

Deno.test({
  name: `cluster consistency on ${STORE}: unlink while open elsewhere, rename, hard links, seek, ` +
    "fsync + kill -9",
  ignore: !canRunCluster(STORE === "etcd"),
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async (t) => {
    const cluster = await LocalCluster.start("unlink-consistency-", { meta: STORE });
    const kv = await openMetaBackend(cluster.meta, { dataDir: cluster.dir });
    try {
      const [a, b, c] = cluster.nodes;
      const at = (node: { mountpoint: string }, ...path: string[]) =>
        join(node.mountpoint, ...path);

      await t.step(
        "unlinked on A while open on B: B reads and writes it, its close frees it",
        async () => {
          const content = random(2 * CHUNK + 777);
          await Deno.writeFile(at(a, "u"), content);
          const ino = Deno.statSync(at(a, "u")).ino!;
          // B opens without reading: every chunk must still be fetchable after the unlink.
          const file = await Deno.open(at(b, "u"), { read: true, write: true });
          await Deno.remove(at(a, "u"));
          assert.equal(statOrNull(at(a, "u")), null);
          await until(() => statOrNull(at(c, "u")) === null, "C no longer sees the name");
          assert.ok(same(await readAt(file, 0, content.length), content), "B reads it all");
          const patch = random(3000);
          await file.seek(CHUNK - 1000, Deno.SeekMode.Start);
          await file.write(patch);
          await file.syncData();
          content.set(patch, CHUNK - 1000);
          assert.ok(same(await readAt(file, 0, content.length), content), "B's write reads back");
          await until(async () => (await file.stat()).nlink === 0, "nlink 0 through B's fd");
          assert.equal((await kv.range({ key: keys.inode(ino) })).kvs.length, 1, "orphan kept");
          file.close();
          // B's release (sent after close returns) frees inode, chunk map and open records.
          await until(
            async () => (await kv.range({ key: keys.inode(ino) })).kvs.length === 0,
            "inode freed after B's close",
          );
          assert.equal((await kv.range({ key: keys.chunkMap(ino) })).kvs.length, 0);
          const records = new TextEncoder().encode(
            `cl/open/${ino.toString(16).padStart(16, "0")}/`,
          );
          await until(
            async () =>
              (await kv.range({ key: records, rangeEnd: prefixEnd(records) })).count === 0,
            "no open record left (A's, lingering after its write, goes when it sees the delete)",
          );
        },
      );

      await t.step(
        "rename across directories on A: old name ENOENT on B, new name has it",
        async () => {
          await Deno.mkdir(at(a, "d1"));
          await Deno.mkdir(at(a, "d2"));
          const content = random(CHUNK + 10);
          await Deno.writeFile(at(a, "d1", "x"), content);
          assert.ok(same(await Deno.readFile(at(b, "d1", "x")), content)); // B caches the entry
          await Deno.rename(at(a, "d1", "x"), at(a, "d2", "y"));
          await until(() => statOrNull(at(b, "d1", "x")) === null, "old name gone on B");
          assert.ok(same(await Deno.readFile(at(b, "d2", "y")), content));
          assert.deepEqual([...Deno.readDirSync(at(b, "d1"))], []);
        },
      );

      await t.step(
        "hard link on A, original unlinked on B, content through the link on C",
        async () => {
          const content = random(CHUNK + 4321);
          await Deno.writeFile(at(a, "orig"), content);
          Deno.linkSync(at(a, "orig"), at(a, "hl"));
          const linked = Deno.statSync(at(a, "hl"));
          assert.equal(linked.nlink, 2);
          const linkedCtime = await ctimeNs(at(a, "hl"));
          await until(() => Deno.statSync(at(b, "orig")).nlink === 2, "B sees nlink 2");
          await Deno.remove(at(b, "orig"));
          await until(() => statOrNull(at(c, "orig")) === null, "C no longer sees orig");
          await until(() => Deno.statSync(at(c, "hl")).nlink === 1, "nlink 1 on C");
          const after = Deno.statSync(at(c, "hl"));
          assert.equal(after.ino, linked.ino);
          const now = await ctimeNs(at(c, "hl"));
          assert.ok(now > linkedCtime, `the unlink stamped ctime: ${now} after ${linkedCtime}`);
          assert.ok(same(await Deno.readFile(at(c, "hl")), content));
          assert.ok(same(await Deno.readFile(at(a, "hl")), content));
        },
      );

      await t.step("SEEK_DATA / SEEK_HOLE on B of a sparse file written on A", async () => {
        // Chunk 0 and 2 written, chunk 1 a hole; B has fetched nothing of it.
        const file = await Deno.open(at(a, "sparse"), { write: true, create: true });
        await file.write(random(4096));
        await file.seek(2 * CHUNK + 100, Deno.SeekMode.Start);
        await file.write(random(4096));
        file.close();
        const script = [
          "import os, sys",
          "fd = os.open(sys.argv[1], os.O_RDONLY)",
          "print(os.lseek(fd, 0, os.SEEK_DATA), os.lseek(fd, 0, os.SEEK_HOLE),",
          `      os.lseek(fd, ${CHUNK}, os.SEEK_DATA), os.lseek(fd, ${2 * CHUNK}, os.SEEK_HOLE))`,
        ].join("\n");
        const out = await new Deno.Command("python3", {
          args: ["-c", script, at(b, "sparse")],
          stdout: "piped",
          stderr: "piped",
        }).output();
        assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
        const [data0, hole0, data1, hole2] = new TextDecoder().decode(out.stdout).trim().split(" ")
          .map(Number);
        assert.equal(data0, 0);
        // Chunk 0 is data as far as its uploaded length: 4096 or, if uploaded with the file
        // already longer, the whole chunk (holes inside an uploaded chunk are not tracked).
        assert.ok(hole0 === 4096 || hole0 === CHUNK, `first hole at ${hole0}`);
        assert.equal(data1, 2 * CHUNK, "chunk 1 was never written: a hole up to chunk 2");
        assert.equal(hole2, 2 * CHUNK + 100 + 4096, "the implicit hole at the end");
      });

      await t.step(
        "kill -9 of C holding an unlinked file: the orphan is freed soon after",
        async () => {
          await Deno.writeFile(at(a, "held"), random(CHUNK + 1));
          const ino = Deno.statSync(at(a, "held")).ino!;
          const file = await Deno.open(at(c, "held"));
          await Deno.remove(at(a, "held"));
          assert.equal((await kv.range({ key: keys.orphan(ino) })).count, 1, "kept for C");
          // C's watch puts its record and acknowledges the unlink; A's reclaim then finds C's
          // record and leaves the orphan to C's close (or, C gone, to the departure sweep). Killed
          // before it acknowledged, C would leave the barrier with its lease instead and A's own
          // reclaim would free the orphan.
          await until(
            async () =>
              (await kv.range({ key: openRecordKey(ino, c.id) })).count === 1 &&
              await reclaimBarrier(kv, ino) === "passed",
            "C's record and every acknowledgement",
          );
          await sleep(1500); // A's reclaim looked (its pause is at most 1 s)
          assert.equal((await kv.range({ key: keys.inode(ino) })).count, 1, "kept for C's record");
          await cluster.kill(c);
          try {
            file.close();
          } catch { /* C's mount is gone */ }
          // C's open record goes with its lease (5 s); the gc owner then frees the orphan.
          await until(
            async () => (await kv.range({ key: keys.inode(ino) })).count === 0,
            "orphan freed after C's lease expired",
            20_000,
          );
          assert.equal((await kv.range({ key: keys.chunkMap(ino) })).count, 0);
          // The sweep logs after its transaction returns, which can be after the test's own read
          // already sees the inode gone (seen once at load 19): wait for the line.
          await until(
            async () =>
              /freed 1 orphans left open by c/.test(
                (await cluster.logOf(a)) + (await cluster.logOf(b)),
              ),
            "freed by the departure sweep (its log line)",
          );
          await cluster.startNode(c);
        },
      );

      await t.step("fsync on A, kill -9 of A right after: B reads the data", async () => {
        const content = random(CHUNK + 5555);
        const file = await Deno.open(at(a, "durable"), { write: true, create: true });
        // Sync calls: Deno's async write runs on a dup of the fd and closes it, a FLUSH that
        // publishes the file by itself (this step then passed with fsync publishing nothing).
        for (let done = 0; done < content.length;) done += file.writeSync(content.subarray(done));
        file.syncSync(); // no close: only fsync made it durable
        await cluster.kill(a);
        try {
          file.close();
        } catch { /* A's mount is gone */ }
        await until(() => statOrNull(at(b, "durable"))?.size === content.length, "size on B");
        assert.ok(same(await Deno.readFile(at(b, "durable")), content));
        assert.ok(same(await Deno.readFile(at(c, "durable")), content));
      });
    } finally {
      await kv.close();
      await cluster.stop();
    }
  },
});
