/**
 * Quotas through real bind mounts (issue 16 point 3): a process writing into a published path hits
 * EDQUOT at the volume's capacity and at its inode limit (the StorageClass `inodes` parameter),
 * `df` in the published path shows the volume's size, NodeGetVolumeStats agrees, and an expansion
 * shows at once in the bind without republishing. It needs the mount's own volume API (quotas are
 * the mount's work; the contract's fake enforces none), so it is ignored, saying so, in a tree
 * without src/http/volumes.ts.
 * @module
 */

import { join } from "node:path";
import { LocalCluster } from "../../src/cluster/local_cluster.ts";
import { run, TEST_TMP } from "../_harness.ts";
import {
  assert,
  CsiClient,
  type Driver,
  MOUNT_CAPABILITY,
  publishedEndpoint,
  settle,
  startDriver,
  startSkyfs,
  TOKEN,
  unmountUnder,
  volumeApiKind,
  workDir,
} from "./_csi.ts";

const MiB = 1024 * 1024;

/** `df -B1` of a path: size, used, available bytes. */
async function df(path: string): Promise<{ size: number; used: number; avail: number }> {
  const { stdout } = await run("df", ["-B1", "--output=size,used,avail", path]);
  const [size, used, avail] = stdout.trim().split("\n")[1].trim().split(/\s+/).map(Number);
  return { size, used, avail };
}

/** Writes 64 KiB blocks to `path` until an error; returns the bytes written and the errno. */
async function fill(path: string): Promise<{ written: number; errno: string }> {
  const { stdout } = await run("/usr/bin/python3", [
    "-c",
    "import errno,os,sys\nfd=os.open(sys.argv[1],os.O_WRONLY|os.O_CREAT,0o644)\nn=0\n" +
    "try:\n  while n < 64*1024*1024:\n    n+=os.write(fd,b'x'*65536)\n  print(n,'none')\n" +
    "except OSError as e:\n  print(n,errno.errorcode[e.errno])\nfinally:\n  os.close(fd)",
    path,
  ]);
  const [written, errno] = stdout.trim().split(" ");
  return { written: Number(written), errno };
}

/** Creates empty files in `dir` until an error; returns how many and the errno. */
async function createFiles(dir: string): Promise<{ created: number; errno: string }> {
  const { stdout } = await run("/usr/bin/python3", [
    "-c",
    "import errno,os,sys\nn=0\ntry:\n  while n < 10000:\n" +
    "    open(os.path.join(sys.argv[1],'f%d'%n),'w').close(); n+=1\n  print(n,'none')\n" +
    "except OSError as e:\n  print(n,errno.errorcode[e.errno])",
    dir,
  ]);
  const [created, errno] = stdout.trim().split(" ");
  return { created: Number(created), errno };
}

Deno.test({
  name: "csi quotas: EDQUOT at capacity and inode limit in a published path, df shows the volume" +
    (volumeApiKind() === "mount" ? "" : " (ignored: needs the mount's volume API)"),
  ignore: volumeApiKind() !== "mount",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const skyfs = await startSkyfs();
    const dir = await workDir();
    let driver: Driver | undefined;
    let client: CsiClient | undefined;
    try {
      driver = await startDriver({
        socket: join(dir, "csi.sock"),
        mountpoint: skyfs.mountpoint,
        apiUrl: skyfs.apiUrl,
      });
      const csi = client = new CsiClient(driver.socket);
      const target = join(dir, "pods", "p1", "volume");
      const publishOf = (volumeId: string, path: string) => ({
        volume_id: volumeId,
        staging_target_path: join(dir, "staging", volumeId),
        target_path: path,
        volume_capability: MOUNT_CAPABILITY,
      });
      await csi.call("Controller", "CreateVolume", {
        name: "pvc-bytes",
        volume_capabilities: [MOUNT_CAPABILITY],
        capacity_range: { required_bytes: MiB, limit_bytes: MiB },
      });
      await csi.call("Node", "NodeStageVolume", publishOf("pvc-bytes", target));
      await csi.call("Node", "NodePublishVolume", publishOf("pvc-bytes", target));

      const before = await df(target);
      assert.equal(before.size, MiB, `df of the published path: ${JSON.stringify(before)}`);
      const filled = await fill(join(target, "big"));
      assert.equal(filled.errno, "EDQUOT", JSON.stringify(filled));
      assert.ok(filled.written <= MiB && filled.written >= MiB - 65536, JSON.stringify(filled));
      assert.equal((await Deno.stat(join(target, "big"))).size, filled.written);
      const stats = await csi.call("Node", "NodeGetVolumeStats", {
        volume_id: "pvc-bytes",
        volume_path: target,
      });
      assert.equal(stats.usage[0].total, MiB);
      assert.ok(stats.usage[0].used >= filled.written - 4096, JSON.stringify(stats.usage[0]));

      // Expansion: the bind shows the new size at once, and the writer goes on.
      await csi.call("Controller", "ControllerExpandVolume", {
        volume_id: "pvc-bytes",
        capacity_range: { required_bytes: 4 * MiB },
      });
      assert.equal((await df(target)).size, 4 * MiB);
      const more = await fill(join(target, "more"));
      assert.equal(more.errno, "EDQUOT");
      assert.ok(more.written >= 2 * MiB, JSON.stringify(more));

      // The inode limit of the StorageClass parameter.
      const filesTarget = join(dir, "pods", "p2", "volume");
      await csi.call("Controller", "CreateVolume", {
        name: "pvc-inodes",
        volume_capabilities: [MOUNT_CAPABILITY],
        capacity_range: { required_bytes: MiB },
        parameters: { inodes: "20" },
      });
      await csi.call("Node", "NodeStageVolume", publishOf("pvc-inodes", filesTarget));
      await csi.call("Node", "NodePublishVolume", publishOf("pvc-inodes", filesTarget));
      const files = await createFiles(filesTarget);
      assert.equal(files.errno, "EDQUOT", JSON.stringify(files));
      assert.ok(files.created >= 18 && files.created <= 20, JSON.stringify(files));
      const inodeStats = await csi.call("Node", "NodeGetVolumeStats", {
        volume_id: "pvc-inodes",
        volume_path: filesTarget,
      });
      assert.equal(inodeStats.usage[1].total, 20);
      assert.equal(inodeStats.usage[1].available, 0);

      for (const [id, path] of [["pvc-bytes", target], ["pvc-inodes", filesTarget]]) {
        await csi.call("Node", "NodeUnpublishVolume", { volume_id: id, target_path: path });
        await csi.call("Node", "NodeUnstageVolume", publishOf(id, path));
        await csi.call("Controller", "DeleteVolume", { volume_id: id });
      }
    } finally {
      await settle(
        () => client?.close(),
        () => driver?.stop(),
        () => unmountUnder(dir),
        () => skyfs.dispose(),
        () => Deno.remove(dir, { recursive: true }),
      );
    }
  },
});

Deno.test({
  name: "csi quotas on a cluster: writers on two nodes share one volume's capacity" +
    (volumeApiKind() === "mount" ? "" : " (ignored: needs the mount's volume API)"),
  ignore: volumeApiKind() !== "mount",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const cluster = await LocalCluster.start("csi-quota-", {
      nodes: 2,
      parentDir: TEST_TMP,
      nodeEnv: { SKYFS_HTTP_TOKEN: TOKEN },
    });
    const [a, b] = cluster.nodes;
    const dir = await workDir();
    const drivers: Driver[] = [];
    const clients: CsiClient[] = [];
    try {
      for (const node of [a, b]) {
        await publishedEndpoint(node.mountpoint);
        drivers.push(
          await startDriver({
            socket: join(dir, `${node.id}.sock`),
            mountpoint: node.mountpoint,
            nodeId: `node-${node.id}`,
          }),
        );
      }
      const [onA, onB] = drivers.map((driver) => new CsiClient(driver.socket));
      clients.push(onA, onB);
      await onA.call("Controller", "CreateVolume", {
        name: "pvc-shared-quota",
        volume_capabilities: [MOUNT_CAPABILITY],
        capacity_range: { required_bytes: 2 * MiB },
      });
      const targets = new Map<CsiClient, string>();
      for (const [client, name] of [[onA, "a"], [onB, "b"]] as const) {
        const target = join(dir, "pods", name, "volume");
        const request = {
          volume_id: "pvc-shared-quota",
          staging_target_path: join(dir, "staging", name),
          target_path: target,
          volume_capability: { mount: {}, access_mode: { mode: "MULTI_NODE_MULTI_WRITER" } },
        };
        await client.call("Node", "NodeStageVolume", request);
        await client.call("Node", "NodePublishVolume", request);
        targets.set(client, target);
        assert.equal((await df(target)).size, 2 * MiB, `df on node ${name}`);
      }
      // Both nodes write at once; together they get the capacity, no more.
      const [fromA, fromB] = await Promise.all([
        fill(join(targets.get(onA)!, "from-a")),
        fill(join(targets.get(onB)!, "from-b")),
      ]);
      assert.equal(fromA.errno, "EDQUOT", JSON.stringify(fromA));
      assert.equal(fromB.errno, "EDQUOT", JSON.stringify(fromB));
      const total = fromA.written + fromB.written;
      assert.ok(
        total <= 2 * MiB && total >= 2 * MiB - 2 * 65536,
        `a ${fromA.written} + b ${fromB.written}`,
      );
      const stats = await onB.call("Node", "NodeGetVolumeStats", {
        volume_id: "pvc-shared-quota",
        volume_path: targets.get(onB)!,
      });
      assert.equal(stats.usage[0].total, 2 * MiB);
      assert.ok(stats.usage[0].available < 2 * 65536, JSON.stringify(stats.usage[0]));
      for (const [client, target] of targets) {
        await client.call("Node", "NodeUnpublishVolume", {
          volume_id: "pvc-shared-quota",
          target_path: target,
        });
      }
    } finally {
      await settle(
        ...clients.map((client) => () => client.close()),
        ...drivers.map((driver) => () => driver.stop()),
        () => unmountUnder(dir),
        () => cluster.stop(),
        () => Deno.remove(dir, { recursive: true }),
      );
    }
  },
});
