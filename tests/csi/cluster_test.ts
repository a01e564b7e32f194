/**
 * The driver on a skyfs cluster: two mount daemons (nodes a and b of a local CURP cluster with a
 * shared backend directory), a controller+node driver on a and a node driver on b. A volume created
 * through a's controller is published on b (and read-only on a); what a pod on b writes is read on
 * a, and each node's stats and unpublish work on its own binds.
 * @module
 */

import { join } from "node:path";
import { LocalCluster } from "../../src/cluster/local_cluster.ts";
import { TEST_TMP } from "../_harness.ts";
import { startFakeVolumeApi } from "./_fake_volume_api.ts";
import {
  assert,
  CsiClient,
  type Driver,
  grpc,
  MOUNT_CAPABILITY,
  mountsAt,
  publishedEndpoint,
  settle,
  startDriver,
  TOKEN,
  unmountUnder,
  volumeApiKind,
  workDir,
} from "./_csi.ts";

async function eventually(check: () => Promise<boolean>, what: string): Promise<void> {
  const deadline = Date.now() + 15_000;
  while (!(await check().catch(() => false))) {
    if (Date.now() > deadline) throw new Error(`${what}: not so after 15 s`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

Deno.test({
  name: "csi: a volume created on node a is published and written on node b of a cluster",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const cluster = await LocalCluster.start("csi-cluster-", {
      nodes: 2,
      parentDir: TEST_TMP,
      nodeEnv: { SKYFS_HTTP_TOKEN: TOKEN },
    });
    const [a, b] = cluster.nodes;
    const dir = await workDir();
    const fake = volumeApiKind() === "fake" ? startFakeVolumeApi(a.mountpoint, TOKEN) : undefined;
    const drivers: Driver[] = [];
    const clients: CsiClient[] = [];
    try {
      // With the mount's own API each driver finds its node's endpoint (the records are in the
      // shared metadata); with the fake both use the one fake over node a's mount.
      if (!fake) { for (const node of [a, b]) await publishedEndpoint(node.mountpoint); }
      drivers.push(
        await startDriver({
          socket: join(dir, "a.sock"),
          mountpoint: a.mountpoint,
          apiUrl: fake?.url,
          nodeId: "node-a",
        }),
      );
      drivers.push(
        await startDriver({
          socket: join(dir, "b.sock"),
          mode: "node",
          mountpoint: b.mountpoint,
          apiUrl: fake?.url,
          nodeId: "node-b",
        }),
      );
      const [onA, onB] = drivers.map((driver) => new CsiClient(driver.socket));
      clients.push(onA, onB);
      assert.equal((await onB.call("Identity", "Probe")).ready.value, true);
      // Node mode serves no Controller service.
      await onB.fails(
        "Controller",
        "CreateVolume",
        { name: "x", volume_capabilities: [MOUNT_CAPABILITY] },
        grpc.status.UNIMPLEMENTED,
        /Controller|CreateVolume|not implemented|unimplemented/i,
      );
      await onA.call("Controller", "CreateVolume", {
        name: "pvc-shared",
        volume_capabilities: [MOUNT_CAPABILITY],
        capacity_range: { required_bytes: 8 << 20 },
      });
      await eventually(
        async () => (await Deno.stat(join(b.mountpoint, "volumes", "pvc-shared"))).isDirectory,
        "the volume's directory on node b",
      );
      const publish = (target: string, readonly: boolean) => ({
        volume_id: "pvc-shared",
        staging_target_path: join(dir, `staging-${readonly ? "a" : "b"}`),
        target_path: target,
        volume_capability: {
          mount: {},
          access_mode: { mode: "MULTI_NODE_MULTI_WRITER" },
        },
        readonly,
      });
      const targetB = join(dir, "pods", "on-b", "volume");
      const targetA = join(dir, "pods", "on-a", "volume");
      await onB.call("Node", "NodeStageVolume", publish(targetB, false));
      await onB.call("Node", "NodePublishVolume", publish(targetB, false));
      await onA.call("Node", "NodeStageVolume", publish(targetA, true));
      await onA.call("Node", "NodePublishVolume", publish(targetA, true));
      assert.deepEqual(mountsAt(targetB).map((m) => [m.root, m.readOnly]), [
        ["/volumes/pvc-shared", false],
      ]);
      assert.deepEqual(mountsAt(targetA).map((m) => [m.root, m.readOnly]), [
        ["/volumes/pvc-shared", true],
      ]);
      await Deno.writeTextFile(join(targetB, "from-b.txt"), "written on node b");
      await eventually(
        async () => (await Deno.readTextFile(join(targetA, "from-b.txt"))) === "written on node b",
        "node b's file read through node a's read-only bind",
      );
      const stats = await onB.call("Node", "NodeGetVolumeStats", {
        volume_id: "pvc-shared",
        volume_path: targetB,
      });
      assert.ok(stats.usage[0].total > 0);
      // Each node's driver unpublishes its own bind; b's cannot see a's target as this volume's.
      for (const [client, target, staging] of [[onB, targetB, "b"], [onA, targetA, "a"]] as const) {
        await client.call("Node", "NodeUnpublishVolume", {
          volume_id: "pvc-shared",
          target_path: target,
        });
        assert.deepEqual(mountsAt(target), []);
        await client.call("Node", "NodeUnstageVolume", {
          volume_id: "pvc-shared",
          staging_target_path: join(dir, `staging-${staging}`),
        });
      }
      await onA.call("Controller", "DeleteVolume", { volume_id: "pvc-shared" });
    } finally {
      await settle(
        ...clients.map((client) => () => client.close()),
        ...drivers.map((driver) => () => driver.stop()),
        () => unmountUnder(dir),
        () => fake?.stop(),
        () => cluster.stop(),
        () => Deno.remove(dir, { recursive: true }),
      );
    }
  },
});
