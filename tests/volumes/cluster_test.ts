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

      // Unlinked on b while open on a: only the unlinking node's own handles keep an orphan
      // counted (src/vfs/README.md, Volumes), so its usage goes at b's unlink, and only once: a's
      // last close and the reclaim freeing the inode take nothing more off.
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
      assert.equal((await usage(b.mountpoint)).usedBytes, MiB, "open on a only: not counted");
      assert.equal((await usage(b.mountpoint)).usedInodes, inodesBefore - 1);
      await closeOnA();
      await sleep(500); // a's close and the reclaim (70 ms on) free the inode
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
