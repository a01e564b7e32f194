/**
 * `skyfs csi` on bad input: a one-line error and exit 1 for each bad flag or missing setting, a
 * socket path held by a live driver or by another file; and a driver whose dependencies are down
 * keeps serving: Probe says not ready, the calls needing them fail UNAVAILABLE naming what is down.
 * @module
 */

import { join } from "node:path";
import { runSkyfs } from "../_harness.ts";
import { assert, CsiClient, grpc, MOUNT_CAPABILITY, startDriver, workDir } from "./_csi.ts";

async function fails(args: string[], message: string): Promise<void> {
  const result = await runSkyfs(["csi", ...args], { timeoutMs: 60_000 });
  assert.equal(
    result.code,
    1,
    `skyfs csi ${args.join(" ")}: exit ${result.code}\n${result.stderr}`,
  );
  assert.equal(result.stderr, `skyfs: ${message}\n`);
}

Deno.test({
  name: "csi: bad flags and settings give one line and exit 1",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const dir = await workDir();
    try {
      await fails(
        ["--mode", "sideways"],
        `--mode "sideways": csi.mode must be node, controller or both`,
      );
      await fails(
        ["--endpoint", "tcp://x:1"],
        `--endpoint "tcp://x:1": csi.endpoint must be unix:///path/to/csi.sock`,
      );
      await fails(["--mode", "node"], "csi --mode node needs --mount DIR (the node's skyfs mount)");
      await fails(
        ["--mode", "controller"],
        "csi --mode controller needs --api http://HOST:PORT (a mount's HTTP endpoint) or --mount DIR",
      );
      await fails(["--api", "ftp://x"], `--api "ftp://x": csi.api must be http://HOST:PORT`);
      await fails(
        ["--mode", "node", "--mount", "http://127.0.0.1:1"],
        "csi --mode node needs --mount DIR (the node's skyfs mount)",
      );
      await fails(
        ["--mode", "controller", "--mount", "http://127.0.0.1:1", "--api", "http://127.0.0.1:2"],
        "csi: give the endpoint URL once, as --api or as --mount, not both",
      );
      await fails(
        ["--mount", "/tmp", "stray"],
        `skyfs csi takes no arguments, not "stray"; see --help`,
      );
      const file = join(dir, "file");
      await Deno.writeTextFile(file, "");
      await fails(
        ["--endpoint", `unix://${file}`, "--mode", "controller", "--api", "http://127.0.0.1:1"],
        `Cannot serve CSI on "${file}": it exists and is not a socket; remove it`,
      );
      // A live driver's socket is not taken over.
      const socket = join(dir, "csi.sock");
      const driver = await startDriver({
        socket,
        mode: "controller",
        apiUrl: "http://127.0.0.1:1",
      });
      try {
        await fails(
          ["--endpoint", `unix://${socket}`, "--mode", "controller", "--api", "http://127.0.0.1:1"],
          `Cannot serve CSI on "${socket}": another process serves it; stop that one first`,
        );
      } finally {
        await driver.stop();
      }
      await assert.rejects(Deno.lstat(socket), Deno.errors.NotFound, "the socket outlived SIGTERM");
      await assert.rejects(Deno.lstat(join(dir, ".csi.sock.grpc")), Deno.errors.NotFound);
    } finally {
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});

Deno.test({
  name: "csi: with no skyfs mount and no volume API, Probe is not ready and calls are UNAVAILABLE",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const dir = await workDir();
    const notMounted = join(dir, "not-a-mount");
    await Deno.mkdir(notMounted);
    // Nothing listens on port 1 of loopback.
    const driver = await startDriver({
      socket: join(dir, "csi.sock"),
      mountpoint: notMounted,
      apiUrl: "http://127.0.0.1:1",
    });
    const client = new CsiClient(driver.socket);
    try {
      const probe = await client.call("Identity", "Probe");
      assert.equal(probe.ready.value, false);
      await client.fails(
        "Node",
        "NodeStageVolume",
        {
          volume_id: "pvc-x",
          staging_target_path: join(dir, "staging"),
          volume_capability: MOUNT_CAPABILITY,
        },
        grpc.status.UNAVAILABLE,
        /"\/.*not-a-mount" is not mounted \(start `skyfs mount` there\)/,
      );
      await client.fails(
        "Controller",
        "CreateVolume",
        { name: "pvc-x", volume_capabilities: [MOUNT_CAPABILITY] },
        grpc.status.UNAVAILABLE,
        /the volume API at http:\/\/127\.0\.0\.1:1 did not answer GET \/api\/v1\/volumes\/pvc-x/,
      );
      // The driver is still serving.
      assert.equal((await client.call("Identity", "GetPluginInfo")).name, "skyfs.csi.datenlord.io");
    } finally {
      client.close();
      await driver.stop();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});

Deno.test({
  name: "csi: 600 client connections closed gracefully (GOAWAY), some after concurrent calls, " +
    "leave the driver serving",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    // Without src/csi/goaway_filter.ts, Deno's node:http2 aborts the driver within a few hundred
    // such connections (kubelet opens one per operation).
    const dir = await workDir();
    // --mount with the endpoint URL, which controller mode takes as --api.
    const driver = await startDriver({
      socket: join(dir, "csi.sock"),
      mode: "controller",
      mountpoint: "http://127.0.0.1:1",
    });
    try {
      for (let i = 0; i < 500; i++) {
        const client = new CsiClient(driver.socket);
        await client.call("Identity", "GetPluginInfo");
        await client.call("Identity", "Probe");
        client.close();
      }
      for (let i = 0; i < 100; i++) {
        const client = new CsiClient(driver.socket);
        await Promise.all(
          Array.from({ length: 10 }, () => client.call("Identity", "GetPluginInfo")),
        );
        client.close();
      }
      const client = new CsiClient(driver.socket);
      assert.equal((await client.call("Identity", "GetPluginInfo")).name, "skyfs.csi.datenlord.io");
      await client.fails(
        "Controller",
        "DeleteVolume",
        { volume_id: "pvc-x" },
        grpc.status.UNAVAILABLE,
        /^the volume API at http:\/\/127\.0\.0\.1:1 did not answer DELETE/,
      );
      client.close();
    } finally {
      await driver.stop();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});
