/**
 * One volume written by two cluster nodes at once (issue 16 point 1): each node writes into the
 * volume until EDQUOT; together they never pass the capacity, the usage kept in metadata equals
 * the sizes every node sees afterwards, and once the nodes' spare reservations went back the
 * volume fills to exactly its capacity. Needs root and /dev/fuse.
 * @module
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { LocalCluster } from "../../src/cluster/local_cluster.ts";
import { findEndpoint } from "../../src/http/endpoint_file.ts";
import { PYTHON, run, runSkyfs } from "../_harness.ts";
import { canRunCluster, sleep, until } from "../cluster/_cluster_util.ts";

const MiB = 1024 * 1024;
const TOKEN = "volumes-cluster-token-0123456789";

const WRITER = `
import os, sys
path, chunk = sys.argv[1], int(sys.argv[2])
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
written, err = 0, 0
data = b"z" * chunk
while True:
    try:
        written += os.write(fd, data)
    except OSError as e:
        err = e.errno
        break
os.close(fd)
print(written, err)
`;

async function writeUntilFull(path: string, chunk: number) {
  const out = (await run(PYTHON, ["-c", WRITER, path, String(chunk)])).stdout.trim();
  const [written, errno] = out.split(" ").map(Number);
  return { written, errno };
}

async function usage(
  mountpoint: string,
): Promise<{ usedBytes: number; usedInodes: number; capacityBytes: number }> {
  const response = await fetch(`http://${findEndpoint(mountpoint)}/api/v1/volumes/shared`);
  assert.equal(response.status, 200);
  return await response.json();
}

Deno.test({
  name: "volume in cluster mode: two nodes writing at once stay under quota, usage exact",
  ignore: !canRunCluster(),
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const cluster = await LocalCluster.start("volumes-cluster-", {
      nodes: 2,
      nodeEnv: {
        SKYFS_HTTP_TOKEN: TOKEN,
        // Small reservations, returned soon: the two nodes compete for the last megabytes.
        SKYFS_VOLUME_RESERVE_BYTES: String(MiB),
        SKYFS_VOLUME_RELEASE_MS: "200",
      },
    });
    try {
      const [a, b] = cluster.nodes;
      const created = await runSkyfs(
        ["volume", "create", a.mountpoint, "shared", "--capacity", "24M"],
        { env: { SKYFS_HTTP_TOKEN: TOKEN } },
      );
      assert.equal(created.code, 0, created.stderr);
      const dirA = join(a.mountpoint, "volumes", "shared");
      const dirB = join(b.mountpoint, "volumes", "shared");
      await until(async () => {
        try {
          return (await Deno.stat(dirB)).isDirectory;
        } catch {
          return false;
        }
      }, "node b sees the volume");

      const [onA, onB] = await Promise.all([
        writeUntilFull(join(dirA, "from-a"), 256 * 1024),
        writeUntilFull(join(dirB, "from-b"), 256 * 1024),
      ]);
      assert.equal(onA.errno, 122, `node a: EDQUOT expected, got ${onA.errno}`);
      assert.equal(onB.errno, 122, `node b: EDQUOT expected, got ${onB.errno}`);
      assert.ok(onA.written > 0 && onB.written > 0, `both wrote: ${onA.written}, ${onB.written}`);
      assert.ok(onA.written + onB.written <= 24 * MiB, "together under the capacity");

      // Every node sees both files at their written sizes (close-to-open), and the usage is
      // their sum, read from either node.
      for (const dir of [dirA, dirB]) {
        assert.equal((await Deno.stat(join(dir, "from-a"))).size, onA.written);
        assert.equal((await Deno.stat(join(dir, "from-b"))).size, onB.written);
      }
      for (const node of [a, b]) {
        assert.equal((await usage(node.mountpoint)).usedBytes, onA.written + onB.written);
      }

      // The spare reservations go back; then one node fills the volume to exactly its capacity.
      await sleep(600);
      const more = await writeUntilFull(join(dirB, "rest"), 64 * 1024);
      assert.equal(more.errno, 122);
      assert.equal(onA.written + onB.written + more.written, 24 * MiB);
      assert.equal((await usage(a.mountpoint)).usedBytes, 24 * MiB);
      const df = await run("df", ["-B1", "--output=size,avail", dirA]);
      assert.deepEqual(df.stdout.trim().split("\n")[1].trim().split(/\s+/).map(Number), [
        24 * MiB,
        0,
      ]);

      // Truncate on one node, unlink on the other: usage follows, seen from both.
      await run("truncate", ["-s", "1M", join(dirA, "from-a")]);
      await run("rm", [join(dirB, "rest")]);
      const expected = MiB + onB.written;
      for (const node of [a, b]) {
        await until(
          async () => (await usage(node.mountpoint)).usedBytes === expected,
          `usage ${expected} on ${node.id}`,
        );
      }

      // Unlinked on b while open (read-only) on a: its usage goes at b's unlink (b does not know
      // of a's handle) and comes back when a's watch sees the unlink and records its handle (an
      // orphan open anywhere counts, as on one node: src/vfs/README.md, Volumes); it goes again,
      // once, with a's last close and the reclaim freeing the inode.
      const inodesBefore = (await usage(b.mountpoint)).usedInodes;
      const holdOpen = async (path: string) => {
        const holder = new Deno.Command(PYTHON, {
          args: [
            "-c",
            "import os,sys\nfd=os.open(sys.argv[1], os.O_RDONLY)\nprint('open', flush=True)\n" +
            "sys.stdin.read()\nos.close(fd)",
            path,
          ],
          stdin: "piped",
          stdout: "piped",
        }).spawn();
        const out = holder.stdout.getReader();
        assert.match(new TextDecoder().decode((await out.read()).value), /open/);
        return async () => {
          await holder.stdin.close();
          out.releaseLock();
          await holder.output();
        };
      };
      const closeOnA = await holdOpen(join(dirA, "from-b"));
      await run("rm", [join(dirB, "from-b")]);
      await until(async () => {
        const now = await usage(b.mountpoint);
        return now.usedBytes === expected && now.usedInodes === inodesBefore;
      }, "open on a: counted again");
      await closeOnA();
      await until(
        async () => (await usage(b.mountpoint)).usedInodes === inodesBefore - 1,
        "freed after a's close",
      );
      await sleep(500); // a second decrement would come within this
      assert.equal((await usage(b.mountpoint)).usedBytes, MiB, "no second decrement");
      assert.equal((await usage(b.mountpoint)).usedInodes, inodesBefore - 1);

      // Unlinked on a while open on a: counted until that last close.
      const closeHere = await holdOpen(join(dirA, "from-a"));
      await run("rm", [join(dirA, "from-a")]);
      await sleep(500);
      assert.equal((await usage(b.mountpoint)).usedBytes, MiB, "still open on the unlinking node");
      assert.equal((await usage(b.mountpoint)).usedInodes, inodesBefore - 1);
      await closeHere();
      await until(
        async () => (await usage(b.mountpoint)).usedBytes === 0,
        "usage after the last close on a",
      );
      assert.equal((await usage(b.mountpoint)).usedInodes, inodesBefore - 2);

      // kill -9 of node a while its writer holds reserved capacity: once a's membership lease
      // expired, the next start of a node drops a's reservation, the usage is what the namespace
      // holds, and the volume again fills to exactly its capacity.
      const writer = new Deno.Command(PYTHON, {
        args: [
          "-c",
          "import os,sys,time\nfd=os.open(sys.argv[1], os.O_WRONLY|os.O_CREAT, 0o644)\n" +
          "for i in range(200):\n  os.write(fd, b'w'*65536)\n  time.sleep(0.02)\n",
          join(dirA, "dying"),
        ],
        stdout: "null",
        stderr: "null",
      }).spawn();
      await until(async () => {
        try {
          return (await Deno.stat(join(dirA, "dying"))).size >= 2 * MiB;
        } catch {
          return false;
        }
      }, "node a's writer under way");
      await cluster.kill(a);
      try {
        writer.kill("SIGKILL");
      } catch { /* gone with the mount */ }
      await writer.status;
      await sleep(7000); // a's lease (5 s) expires
      await cluster.stopNode(b);
      await cluster.startNode(b);
      const stored = await run(PYTHON, [
        "-c",
        "import os,sys\nprint(sum(os.lstat(os.path.join(sys.argv[1],f)).st_size " +
        "for f in os.listdir(sys.argv[1])))",
        dirB,
      ]);
      const before = Number(stored.stdout.trim());
      assert.equal((await usage(b.mountpoint)).usedBytes, before, "usage = the namespace");
      const last = await writeUntilFull(join(dirB, "last"), 64 * 1024);
      assert.equal(last.errno, 122);
      assert.equal(before + last.written, 24 * MiB, "no reservation of the dead node is left");
    } finally {
      await cluster.stop();
    }
  },
});

const HOLDER = `
import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND)
print("open", flush=True)
for line in sys.stdin:
    cmd = line.split()
    if cmd[0] == "w":
        total, step = int(cmd[1]), int(cmd[2])
        written, err = 0, 0
        while written < total:
            try:
                written += os.write(fd, b"q" * min(step, total - written))
                os.fsync(fd)
            except OSError as e:
                err = e.errno
                break
        print(written, err, os.fstat(fd).st_size, flush=True)
    elif cmd[0] == "c":
        os.close(fd)
        print("closed", flush=True)
        break
`;

/** A python process holding `path` open for appending, driven line by line: `w TOTAL STEP`
 * appends TOTAL bytes STEP at a time, each followed by fsync (stops at the first error), and
 * answers "written errno size"; `c` closes the file. */
async function holdForWrites(path: string) {
  const child = new Deno.Command(PYTHON, {
    args: ["-c", HOLDER, path],
    stdin: "piped",
    stdout: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let buffered = "";
  const line = async (): Promise<string> => {
    for (;;) {
      const at = buffered.indexOf("\n");
      if (at >= 0) {
        const out = buffered.slice(0, at);
        buffered = buffered.slice(at + 1);
        return out;
      }
      const { value, done } = await lines.read();
      if (done) throw new Error(`holder of ${path} ended: ${buffered}`);
      buffered += value;
    }
  };
  const send = (text: string) => writer.write(new TextEncoder().encode(`${text}\n`));
  assert.equal(await line(), "open");
  return {
    async write(total: number, step: number) {
      await send(`w ${total} ${step}`);
      const [written, errno, size] = (await line()).split(" ").map(Number);
      return { written, errno, size };
    },
    /** Ends the process if still running (a failed test). */
    kill() {
      try {
        child.kill("SIGKILL");
      } catch { /* ended */ }
    },
    async close() {
      await send("c");
      assert.equal(await line(), "closed");
      await writer.close();
      lines.releaseLock();
      await child.status;
    },
  };
}

Deno.test({
  name: "volume in cluster mode: an orphan open on another node counts its writes and its limit",
  ignore: !canRunCluster(),
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const cluster = await LocalCluster.start("volumes-orphan-", {
      nodes: 2,
      nodeEnv: {
        SKYFS_HTTP_TOKEN: TOKEN,
        SKYFS_VOLUME_RESERVE_BYTES: String(MiB),
        SKYFS_VOLUME_RELEASE_MS: "200",
      },
    });
    let holder: Awaited<ReturnType<typeof holdForWrites>> | undefined;
    try {
      const [a, b] = cluster.nodes;
      const created = await runSkyfs(
        ["volume", "create", a.mountpoint, "shared", "--capacity", "8M"],
        { env: { SKYFS_HTTP_TOKEN: TOKEN } },
      );
      assert.equal(created.code, 0, created.stderr);
      const dirA = join(a.mountpoint, "volumes", "shared");
      const dirB = join(b.mountpoint, "volumes", "shared");
      // A file that stays (1 MiB): a second decrement of the orphan would show below it (usage
      // never goes under 0).
      await Deno.writeFile(join(dirB, "keep"), new Uint8Array(MiB));
      const base = await usage(b.mountpoint);
      assert.equal(base.usedBytes, MiB);
      await Deno.writeFile(join(dirA, "held"), new Uint8Array(MiB));
      await until(async () => {
        try {
          return (await Deno.stat(join(dirB, "held"))).size === MiB;
        } catch {
          return false;
        }
      }, "node b sees the file");
      assert.equal((await usage(b.mountpoint)).usedInodes, base.usedInodes + 1);

      // Open on a, unlinked on b, then a writes 3 MiB more (fsync after each MiB): the volume
      // counts the orphan and the writes, as on one node.
      holder = await holdForWrites(join(dirA, "held"));
      await run("rm", [join(dirB, "held")]);
      const more = await holder.write(3 * MiB, MiB);
      assert.deepEqual(more, { written: 3 * MiB, errno: 0, size: 4 * MiB });
      await until(
        async () => (await usage(b.mountpoint)).usedBytes === 5 * MiB,
        "the orphan's writes counted",
        10_000,
      ).catch(async (error) => {
        throw new Error(`${error.message}: ${JSON.stringify(await usage(b.mountpoint))}`);
      });
      assert.equal((await usage(b.mountpoint)).usedInodes, base.usedInodes + 1);

      // Writes past the capacity get EDQUOT: the orphan fills what the volume has left, exactly.
      const past = await holder.write(16 * MiB, 256 * 1024);
      assert.equal(past.errno, 122, `EDQUOT expected: ${JSON.stringify(past)}`);
      assert.equal(past.size, 7 * MiB);
      assert.equal((await usage(b.mountpoint)).usedBytes, 8 * MiB);

      // a's close, and the orphan is freed: its usage goes, once.
      await holder.close();
      await until(
        async () => (await usage(b.mountpoint)).usedInodes === base.usedInodes,
        "the orphan freed",
        10_000,
      );
      await sleep(500);
      for (const node of [a, b]) {
        const after = await usage(node.mountpoint);
        assert.equal(after.usedBytes, MiB, `bytes on ${node.id}`);
        assert.equal(after.usedInodes, base.usedInodes, `inodes on ${node.id}`);
      }
    } finally {
      holder?.kill();
      await cluster.stop();
    }
  },
});
