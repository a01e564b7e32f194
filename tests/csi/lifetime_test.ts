/**
 * Mount lifetime (issue 16 point 5): the node's skyfs mount and the binds made from it belong to
 * the kernel and the mount daemon, not to `skyfs csi`. Kill -9 of the driver while a process keeps
 * a file open in a published path leaves that file working; a restarted driver on the same socket
 * finds its binds (publish again is a no-op) and unpublishes them.
 * @module
 */

import { join } from "node:path";
import {
  assert,
  CsiClient,
  type Driver,
  grpc,
  MOUNT_CAPABILITY,
  mountsAt,
  settle,
  startDriver,
  startSkyfs,
  unmountUnder,
  workDir,
} from "./_csi.ts";

/** A python process that opens `path`, writes a line, and waits for "go" to write another and
 * print the whole file. */
function holder(path: string) {
  const child = new Deno.Command("/usr/bin/python3", {
    args: [
      "-u",
      "-c",
      "import sys\nf = open(sys.argv[1], 'w+')\nf.write('before kill\\n'); f.flush()\n" +
      "print('opened', flush=True)\nsys.stdin.readline()\nf.write('after kill\\n'); f.flush()\n" +
      "f.seek(0); print(f.read(), end='', flush=True); f.close()",
      path,
    ],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const output = child.output();
  return {
    child,
    async waitOpened(): Promise<void> {
      const deadline = Date.now() + 30_000;
      while (!(await Deno.readTextFile(path).catch(() => "")).includes("before kill")) {
        if (Date.now() > deadline) throw new Error(`the holder never wrote to ${path}`);
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    },
    async finish(): Promise<{ code: number; stdout: string; stderr: string }> {
      const writer = child.stdin.getWriter();
      await writer.write(new TextEncoder().encode("go\n"));
      await writer.close();
      const out = await output;
      const decoder = new TextDecoder();
      return {
        code: out.code,
        stdout: decoder.decode(out.stdout),
        stderr: decoder.decode(out.stderr),
      };
    },
  };
}

Deno.test({
  name: "csi: kill -9 of the driver keeps published volumes working; a new driver unpublishes",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const skyfs = await startSkyfs();
    const dir = await workDir();
    const socket = join(dir, "csi.sock");
    const options = {
      socket,
      mountpoint: skyfs.mountpoint,
      apiUrl: skyfs.apiUrl,
      nodeId: "node-1",
    };
    let driver: Driver | undefined;
    let client: CsiClient | undefined;
    try {
      driver = await startDriver(options);
      client = new CsiClient(socket);
      await client.call("Controller", "CreateVolume", {
        name: "pvc-live",
        volume_capabilities: [MOUNT_CAPABILITY],
        capacity_range: { required_bytes: 1 << 20 },
      });
      const staging = join(dir, "staging");
      const target = join(dir, "pods", "p1", "volume");
      const publish = {
        volume_id: "pvc-live",
        staging_target_path: staging,
        target_path: target,
        volume_capability: MOUNT_CAPABILITY,
      };
      await client.call("Node", "NodeStageVolume", publish);
      await client.call("Node", "NodePublishVolume", publish);

      const file = join(target, "open.txt");
      const process = holder(file);
      await process.waitOpened();
      client.close();
      client = undefined;
      await driver.kill9();
      driver = undefined;

      // The bind and the mount are still there, and the open file still works.
      assert.deepEqual(mountsAt(target).map((m) => m.root), ["/volumes/pvc-live"]);
      const result = await process.finish();
      assert.equal(result.code, 0, result.stderr);
      assert.equal(result.stdout, "opened\nbefore kill\nafter kill\n");
      assert.equal(
        await Deno.readTextFile(join(skyfs.mountpoint, "volumes", "pvc-live", "open.txt")),
        "before kill\nafter kill\n",
      );
      // A new process opens files in the published path with no driver running.
      await Deno.writeTextFile(join(target, "new.txt"), "no driver");
      // The killed driver's socket files are left behind; the new driver replaces them.
      assert.ok((await Deno.lstat(socket)).isSocket);
      assert.ok((await Deno.lstat(join(dir, ".csi.sock.grpc"))).isSocket);

      driver = await startDriver(options);
      client = new CsiClient(socket);
      await client.call("Node", "NodePublishVolume", publish);
      assert.equal(mountsAt(target).length, 1, "publish after restart stacked a second bind");
      await client.call("Node", "NodeUnpublishVolume", {
        volume_id: "pvc-live",
        target_path: target,
      });
      assert.deepEqual(mountsAt(target), []);
      await client.call("Node", "NodeUnstageVolume", {
        volume_id: "pvc-live",
        staging_target_path: staging,
      });
      assert.deepEqual(mountsAt(staging), []);
      assert.equal(
        await Deno.readTextFile(join(skyfs.mountpoint, "volumes", "pvc-live", "new.txt")),
        "no driver",
      );
      await client.call("Controller", "DeleteVolume", { volume_id: "pvc-live" });
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
  name: "csi: a killed mount daemon makes Probe not ready and publish UNAVAILABLE until remounted",
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
      client = new CsiClient(driver.socket);
      await client.call("Controller", "CreateVolume", {
        name: "pvc-dead",
        volume_capabilities: [MOUNT_CAPABILITY],
      });
      const publish = {
        volume_id: "pvc-dead",
        staging_target_path: join(dir, "staging"),
        target_path: join(dir, "pods", "p1", "volume"),
        volume_capability: MOUNT_CAPABILITY,
      };
      // The daemon dies; its mount stays listed in mountinfo and answers ENOTCONN.
      Deno.kill(skyfs.mount.pid()!, "SIGKILL");
      const deadline = Date.now() + 30_000;
      while (await Deno.stat(`/proc/${skyfs.mount.pid()}/status`).then(() => true, () => false)) {
        if (Date.now() > deadline) throw new Error("the killed mount daemon did not exit");
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      assert.equal((await client.call("Identity", "Probe")).ready.value, false);
      await client.fails(
        "Node",
        "NodeStageVolume",
        publish,
        grpc.status.UNAVAILABLE,
        /the skyfs mount ".*" fails statfs: .*(not connected|ENOTCONN)/i,
      );
      // Remounted on the same data: ready again, and the volume publishes.
      await skyfs.mount.restart({ crash: true });
      assert.equal((await client.call("Identity", "Probe")).ready.value, true);
      await client.call("Node", "NodeStageVolume", publish);
      await client.call("Node", "NodePublishVolume", publish);
      assert.equal(mountsAt(publish.target_path).length, 1);
      await client.call("Node", "NodeUnpublishVolume", publish);
      await client.call("Node", "NodeUnstageVolume", publish);
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
