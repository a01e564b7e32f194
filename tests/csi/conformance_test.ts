/**
 * What csi-sanity checks, for the capabilities `skyfs csi` advertises, as gRPC calls on the
 * driver's unix socket: a real skyfs mount, a real driver process, real bind mounts at real target
 * paths (checked in /proc/self/mountinfo), every error status the spec names with the field or
 * volume in its message, idempotency of every changing call, pagination, stats and expansion.
 * @module
 */

import { statfs } from "node:fs/promises";
import { join } from "node:path";
import { run } from "../_harness.ts";
import {
  assert,
  BLOCK_CAPABILITY,
  CsiClient,
  type Driver,
  grpc,
  MOUNT_CAPABILITY,
  mountsAt,
  READER_CAPABILITY,
  settle,
  type Skyfs,
  startDriver,
  startSkyfs,
  unmountUnder,
  workDir,
} from "./_csi.ts";

const { INVALID_ARGUMENT, NOT_FOUND, ALREADY_EXISTS, OUT_OF_RANGE, ABORTED } = grpc.status;
const MiB = 1024 * 1024;

async function eventually(check: () => Promise<boolean>, what: string): Promise<void> {
  const deadline = Date.now() + 15_000;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`${what}: not so after 15 s`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** errno name of writing a file at `path`, from a separate process ("ok" when it worked). */
async function writeErrno(path: string): Promise<string> {
  const { stdout } = await run("/usr/bin/python3", [
    "-c",
    "import errno,sys\ntry:\n  open(sys.argv[1],'w').write('x')\n  print('ok')\n" +
    "except OSError as e:\n  print(errno.errorcode[e.errno])",
    path,
  ]);
  return stdout.trim();
}

Deno.test({
  name: "csi: conformance over the unix socket (identity, controller, node)",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    const skyfs: Skyfs = await startSkyfs();
    const dir = await workDir();
    let driver: Driver | undefined;
    let client: CsiClient | undefined;
    try {
      driver = await startDriver({
        socket: join(dir, "csi.sock"),
        mountpoint: skyfs.mountpoint,
        apiUrl: skyfs.apiUrl,
        nodeId: "node-1",
        zone: "zone-a",
      });
      const csi = client = new CsiClient(driver.socket);

      await t.step("identity: plugin info, capabilities, probe", async () => {
        const info = await csi.call("Identity", "GetPluginInfo");
        assert.equal(info.name, "skyfs.csi.datenlord.io");
        assert.match(info.vendor_version, /^\d+\.\d+\.\d+/);
        const caps = await csi.call("Identity", "GetPluginCapabilities");
        const names = caps.capabilities.map((c: Record<string, { type: string }>) =>
          c.service?.type ?? `expansion:${c.volume_expansion?.type}`
        );
        assert.deepEqual(names.sort(), [
          "CONTROLLER_SERVICE",
          "VOLUME_ACCESSIBILITY_CONSTRAINTS",
          "expansion:ONLINE",
        ]);
        const probe = await csi.call("Identity", "Probe");
        assert.equal(probe.ready?.value, true);
      });

      await t.step("controller: capabilities", async () => {
        const caps = await csi.call("Controller", "ControllerGetCapabilities");
        assert.deepEqual(caps.capabilities.map((c: { rpc: { type: string } }) => c.rpc.type), [
          "CREATE_DELETE_VOLUME",
          "LIST_VOLUMES",
          "GET_CAPACITY",
          "EXPAND_VOLUME",
          "SINGLE_NODE_MULTI_WRITER",
        ]);
      });

      await t.step("CreateVolume: every bad request and its status", async () => {
        const caps = [MOUNT_CAPABILITY];
        await csi.fails(
          "Controller",
          "CreateVolume",
          { volume_capabilities: caps },
          INVALID_ARGUMENT,
          /^name is required$/,
        );
        await csi.fails(
          "Controller",
          "CreateVolume",
          { name: "v" },
          INVALID_ARGUMENT,
          /^volume_capabilities is required$/,
        );
        await csi.fails(
          "Controller",
          "CreateVolume",
          { name: "v", volume_capabilities: [BLOCK_CAPABILITY] },
          INVALID_ARGUMENT,
          /volume_capabilities\[0\]\.block: skyfs volumes are file systems/,
        );
        await csi.fails(
          "Controller",
          "CreateVolume",
          { name: "v", volume_capabilities: [{ mount: {} }] },
          INVALID_ARGUMENT,
          /volume_capabilities\[0\]\.access_mode\.mode is required/,
        );
        await csi.fails(
          "Controller",
          "CreateVolume",
          { name: "v", volume_capabilities: [{ access_mode: { mode: "SINGLE_NODE_WRITER" } }] },
          INVALID_ARGUMENT,
          /one of mount or block access_type is required/,
        );
        await csi.fails(
          "Controller",
          "CreateVolume",
          { name: "v", volume_capabilities: caps, parameters: { replicas: "3" } },
          INVALID_ARGUMENT,
          /parameters: unknown key "replicas"/,
        );
        await csi.fails(
          "Controller",
          "CreateVolume",
          { name: "v", volume_capabilities: caps, parameters: { inodes: "many" } },
          INVALID_ARGUMENT,
          /parameters\["inodes"\]: inodes must be a whole number/,
        );
        await csi.fails(
          "Controller",
          "CreateVolume",
          {
            name: "v",
            volume_capabilities: caps,
            capacity_range: { required_bytes: 2 * MiB, limit_bytes: MiB },
          },
          OUT_OF_RANGE,
          /required_bytes 2097152 exceeds capacity_range\.limit_bytes 1048576/,
        );
        await csi.fails(
          "Controller",
          "CreateVolume",
          { name: "v", volume_capabilities: caps, capacity_range: { required_bytes: -1 } },
          INVALID_ARGUMENT,
          /required_bytes -1 is negative/,
        );
        await csi.fails(
          "Controller",
          "CreateVolume",
          {
            name: "v",
            volume_capabilities: caps,
            volume_content_source: { snapshot: { snapshot_id: "s" } },
          },
          INVALID_ARGUMENT,
          /volume_content_source/,
        );
        // Nothing was created by the failed calls.
        const list = await csi.call("Controller", "ListVolumes", {});
        assert.equal(list.entries.length, 0);
      });

      await t.step(
        "CreateVolume: capacity honoured, idempotent by name, ALREADY_EXISTS",
        async () => {
          const request = {
            name: "pvc-aaa",
            volume_capabilities: [MOUNT_CAPABILITY],
            capacity_range: { required_bytes: 10 * MiB },
            parameters: { inodes: "1000", "csi.storage.k8s.io/pvc/name": "data" },
          };
          const first = await csi.call("Controller", "CreateVolume", request);
          assert.equal(first.volume.volume_id, "pvc-aaa");
          assert.equal(first.volume.capacity_bytes, 10 * MiB);
          const volume = await (await fetch(`${skyfs.url}/api/v1/volumes/pvc-aaa`)).json();
          assert.equal(volume.inodes, 1000);
          assert.equal(volume.parameters["csi.storage.k8s.io/pvc/name"], "data");
          assert.ok((await Deno.stat(join(skyfs.mountpoint, "volumes", "pvc-aaa"))).isDirectory);
          const again = await csi.call("Controller", "CreateVolume", request);
          assert.deepEqual(again.volume, first.volume);
          // A range the existing volume satisfies is the same volume.
          const within = await csi.call("Controller", "CreateVolume", {
            ...request,
            capacity_range: { required_bytes: MiB, limit_bytes: 20 * MiB },
          });
          assert.equal(within.volume.capacity_bytes, 10 * MiB);
          await csi.fails(
            "Controller",
            "CreateVolume",
            { ...request, capacity_range: { required_bytes: 20 * MiB } },
            ALREADY_EXISTS,
            /volume "pvc-aaa" .*exists with 10485760 bytes, outside capacity_range \(required_bytes 20971520/,
          );
          await csi.fails(
            "Controller",
            "CreateVolume",
            { ...request, capacity_range: { limit_bytes: MiB } },
            ALREADY_EXISTS,
            /pvc-aaa/,
          );
          // No range: the default (1 GiB); a limit below it: the limit.
          const fallback = await csi.call("Controller", "CreateVolume", {
            name: "pvc-default",
            volume_capabilities: [MOUNT_CAPABILITY],
          });
          assert.equal(fallback.volume.capacity_bytes, 1024 * MiB);
          const limited = await csi.call("Controller", "CreateVolume", {
            name: "pvc-limit",
            volume_capabilities: [MOUNT_CAPABILITY],
            capacity_range: { limit_bytes: 3 * MiB },
          });
          assert.equal(limited.volume.capacity_bytes, 3 * MiB);
          // A CO name skyfs cannot use as is maps to one volume, the same every time.
          const odd = await csi.call("Controller", "CreateVolume", {
            name: "Sanity Volume/1",
            volume_capabilities: [MOUNT_CAPABILITY],
          });
          assert.match(odd.volume.volume_id, /^sanity-volume-1-[0-9a-f]{8}$/);
          const oddAgain = await csi.call("Controller", "CreateVolume", {
            name: "Sanity Volume/1",
            volume_capabilities: [MOUNT_CAPABILITY],
          });
          assert.equal(oddAgain.volume.volume_id, odd.volume.volume_id);
        },
      );

      await t.step("ValidateVolumeCapabilities", async () => {
        await csi.fails(
          "Controller",
          "ValidateVolumeCapabilities",
          { volume_capabilities: [MOUNT_CAPABILITY] },
          INVALID_ARGUMENT,
          /^volume_id is required$/,
        );
        await csi.fails(
          "Controller",
          "ValidateVolumeCapabilities",
          { volume_id: "pvc-aaa" },
          INVALID_ARGUMENT,
          /^volume_capabilities is required$/,
        );
        await csi.fails(
          "Controller",
          "ValidateVolumeCapabilities",
          { volume_id: "pvc-none", volume_capabilities: [MOUNT_CAPABILITY] },
          NOT_FOUND,
          /volume "pvc-none" does not exist/,
        );
        const ok = await csi.call("Controller", "ValidateVolumeCapabilities", {
          volume_id: "pvc-aaa",
          volume_capabilities: [MOUNT_CAPABILITY, READER_CAPABILITY],
        });
        assert.equal(ok.confirmed.volume_capabilities.length, 2);
        const block = await csi.call("Controller", "ValidateVolumeCapabilities", {
          volume_id: "pvc-aaa",
          volume_capabilities: [BLOCK_CAPABILITY],
        });
        assert.equal(block.confirmed, null);
        assert.match(block.message, /block/);
      });

      await t.step("ListVolumes: pagination, bad max_entries, bad token", async () => {
        for (const name of ["pvc-l1", "pvc-l2", "pvc-l3"]) {
          await csi.call("Controller", "CreateVolume", {
            name,
            volume_capabilities: [MOUNT_CAPABILITY],
            capacity_range: { required_bytes: MiB },
          });
        }
        const all = await csi.call("Controller", "ListVolumes", {});
        const expected = all.entries.map((e: { volume: { volume_id: string } }) =>
          e.volume.volume_id
        );
        assert.equal(expected.length, 7);
        assert.equal(all.next_token, "");
        const seen: string[] = [];
        let token = "";
        let pages = 0;
        do {
          const page = await csi.call("Controller", "ListVolumes", {
            max_entries: 2,
            starting_token: token,
          });
          assert.ok(page.entries.length <= 2);
          seen.push(
            ...page.entries.map((e: { volume: { volume_id: string } }) => e.volume.volume_id),
          );
          token = page.next_token;
          pages++;
        } while (token !== "" && pages < 10);
        assert.equal(pages, 4);
        assert.deepEqual(seen, expected);
        await csi.fails(
          "Controller",
          "ListVolumes",
          { max_entries: -1 },
          INVALID_ARGUMENT,
          /max_entries -1 is negative/,
        );
        await csi.fails(
          "Controller",
          "ListVolumes",
          { starting_token: "invalid-token" },
          ABORTED,
          /starting_token "invalid-token"/,
        );
      });

      await t.step("GetCapacity", async () => {
        const capacity = await csi.call("Controller", "GetCapacity", {
          volume_capabilities: [MOUNT_CAPABILITY],
        });
        const fs = await statfs(skyfs.mountpoint);
        assert.ok(capacity.available_capacity > 0);
        assert.ok(capacity.available_capacity <= fs.blocks * fs.bsize);
        const block = await csi.call("Controller", "GetCapacity", {
          volume_capabilities: [BLOCK_CAPABILITY],
        });
        assert.equal(block.available_capacity, 0);
        await csi.fails(
          "Controller",
          "GetCapacity",
          { parameters: { size: "1" } },
          INVALID_ARGUMENT,
          /unknown key "size"/,
        );
      });

      await t.step("ControllerExpandVolume", async () => {
        await csi.fails(
          "Controller",
          "ControllerExpandVolume",
          { capacity_range: { required_bytes: MiB } },
          INVALID_ARGUMENT,
          /^volume_id is required$/,
        );
        await csi.fails(
          "Controller",
          "ControllerExpandVolume",
          { volume_id: "pvc-l1" },
          INVALID_ARGUMENT,
          /^capacity_range is required$/,
        );
        await csi.fails(
          "Controller",
          "ControllerExpandVolume",
          { volume_id: "pvc-none", capacity_range: { required_bytes: MiB } },
          NOT_FOUND,
          /volume "pvc-none" does not exist/,
        );
        const grown = await csi.call("Controller", "ControllerExpandVolume", {
          volume_id: "pvc-l1",
          capacity_range: { required_bytes: 5 * MiB },
        });
        assert.equal(grown.capacity_bytes, 5 * MiB);
        assert.equal(grown.node_expansion_required, false);
        const again = await csi.call("Controller", "ControllerExpandVolume", {
          volume_id: "pvc-l1",
          capacity_range: { required_bytes: 5 * MiB },
        });
        assert.equal(again.capacity_bytes, 5 * MiB);
        const volume = await (await fetch(`${skyfs.url}/api/v1/volumes/pvc-l1`)).json();
        assert.equal(volume.capacityBytes, 5 * MiB);
        await csi.fails(
          "Controller",
          "ControllerExpandVolume",
          { volume_id: "pvc-l1", capacity_range: { required_bytes: MiB, limit_bytes: 2 * MiB } },
          OUT_OF_RANGE,
          /volume "pvc-l1" has 5242880 bytes, above capacity_range\.limit_bytes 2097152/,
        );
      });

      await t.step("node: capabilities and info", async () => {
        const caps = await csi.call("Node", "NodeGetCapabilities");
        assert.deepEqual(caps.capabilities.map((c: { rpc: { type: string } }) => c.rpc.type), [
          "STAGE_UNSTAGE_VOLUME",
          "GET_VOLUME_STATS",
          "EXPAND_VOLUME",
          "SINGLE_NODE_MULTI_WRITER",
        ]);
        const info = await csi.call("Node", "NodeGetInfo");
        assert.equal(info.node_id, "node-1");
        assert.deepEqual(info.accessible_topology.segments, {
          "topology.skyfs.datenlord.io/zone": "zone-a",
        });
      });

      const staging = join(dir, "staging", "pvc-aaa");
      const target = join(dir, "pods", "p1", "volume");
      const readOnlyTarget = join(dir, "pods", "p2", "volume");

      await t.step("NodeStageVolume / NodeUnstageVolume errors, stage, idempotency", async () => {
        await csi.fails(
          "Node",
          "NodeStageVolume",
          { staging_target_path: staging, volume_capability: MOUNT_CAPABILITY },
          INVALID_ARGUMENT,
          /^volume_id is required$/,
        );
        await csi.fails(
          "Node",
          "NodeStageVolume",
          { volume_id: "pvc-aaa", volume_capability: MOUNT_CAPABILITY },
          INVALID_ARGUMENT,
          /^staging_target_path is required$/,
        );
        await csi.fails(
          "Node",
          "NodeStageVolume",
          { volume_id: "pvc-aaa", staging_target_path: staging },
          INVALID_ARGUMENT,
          /^volume_capability is required$/,
        );
        await csi.fails(
          "Node",
          "NodeStageVolume",
          {
            volume_id: "pvc-none",
            staging_target_path: staging,
            volume_capability: MOUNT_CAPABILITY,
          },
          NOT_FOUND,
          /volume "pvc-none" does not exist/,
        );
        await csi.fails(
          "Node",
          "NodeUnstageVolume",
          { staging_target_path: staging },
          INVALID_ARGUMENT,
          /^volume_id is required$/,
        );
        await csi.fails(
          "Node",
          "NodeUnstageVolume",
          { volume_id: "pvc-aaa" },
          INVALID_ARGUMENT,
          /^staging_target_path is required$/,
        );
        const request = {
          volume_id: "pvc-aaa",
          staging_target_path: staging,
          volume_capability: MOUNT_CAPABILITY,
        };
        await csi.call("Node", "NodeStageVolume", request);
        await csi.call("Node", "NodeStageVolume", request);
        const mounts = mountsAt(staging);
        assert.equal(mounts.length, 1, JSON.stringify(mounts));
        assert.equal(mounts[0].root, "/volumes/pvc-aaa");
        assert.equal(mounts[0].fstype, "fuse.skyfs");
        await csi.fails(
          "Node",
          "NodeStageVolume",
          { ...request, volume_id: "pvc-l1" },
          ALREADY_EXISTS,
          /staging_target_path ".*" already has a mount .*not volume "pvc-l1"/,
        );
      });

      await t.step(
        "NodePublishVolume: errors, bind at a new target, read-only, idempotency",
        async () => {
          const request = {
            volume_id: "pvc-aaa",
            staging_target_path: staging,
            target_path: target,
            volume_capability: MOUNT_CAPABILITY,
          };
          await csi.fails(
            "Node",
            "NodePublishVolume",
            { ...request, volume_id: "" },
            INVALID_ARGUMENT,
            /^volume_id is required$/,
          );
          await csi.fails(
            "Node",
            "NodePublishVolume",
            { ...request, target_path: "" },
            INVALID_ARGUMENT,
            /^target_path is required$/,
          );
          await csi.fails(
            "Node",
            "NodePublishVolume",
            { ...request, target_path: "pods/rel" },
            INVALID_ARGUMENT,
            /target_path "pods\/rel" is not an absolute path/,
          );
          await csi.fails(
            "Node",
            "NodePublishVolume",
            { ...request, staging_target_path: "" },
            INVALID_ARGUMENT,
            /^staging_target_path is required$/,
          );
          await csi.fails(
            "Node",
            "NodePublishVolume",
            { ...request, volume_capability: null },
            INVALID_ARGUMENT,
            /^volume_capability is required$/,
          );
          await csi.fails(
            "Node",
            "NodePublishVolume",
            { ...request, volume_capability: BLOCK_CAPABILITY },
            INVALID_ARGUMENT,
            /volume_capability\.block/,
          );
          await csi.fails(
            "Node",
            "NodePublishVolume",
            { ...request, volume_id: "pvc-none" },
            NOT_FOUND,
            /volume "pvc-none" does not exist/,
          );
          await csi.call("Node", "NodePublishVolume", request);
          await csi.call("Node", "NodePublishVolume", request);
          const mounts = mountsAt(target);
          assert.equal(mounts.length, 1, JSON.stringify(mounts));
          assert.deepEqual(mounts[0], {
            root: "/volumes/pvc-aaa",
            readOnly: false,
            fstype: "fuse.skyfs",
          });
          assert.equal(await writeErrno(join(target, "hello.txt")), "ok");
          assert.equal(
            await Deno.readTextFile(join(skyfs.mountpoint, "volumes", "pvc-aaa", "hello.txt")),
            "x",
          );
          // Read-only: by the readonly flag, and by a reader-only access mode.
          await csi.call("Node", "NodePublishVolume", {
            ...request,
            target_path: readOnlyTarget,
            readonly: true,
          });
          await csi.call("Node", "NodePublishVolume", {
            ...request,
            target_path: readOnlyTarget,
            readonly: true,
          });
          assert.deepEqual(mountsAt(readOnlyTarget), [{
            root: "/volumes/pvc-aaa",
            readOnly: true,
            fstype: "fuse.skyfs",
          }]);
          assert.equal(await writeErrno(join(readOnlyTarget, "nope.txt")), "EROFS");
          assert.equal(await Deno.readTextFile(join(readOnlyTarget, "hello.txt")), "x");
          const readerTarget = join(dir, "pods", "p3", "volume");
          await csi.call("Node", "NodePublishVolume", {
            ...request,
            target_path: readerTarget,
            volume_capability: READER_CAPABILITY,
          });
          assert.equal(await writeErrno(join(readerTarget, "nope.txt")), "EROFS");
          await csi.call("Node", "NodeUnpublishVolume", {
            volume_id: "pvc-aaa",
            target_path: readerTarget,
          });
          // The same target asked for with another access, or another volume: ALREADY_EXISTS.
          await csi.fails(
            "Node",
            "NodePublishVolume",
            { ...request, target_path: readOnlyTarget },
            ALREADY_EXISTS,
            /target_path ".*p2\/volume" already has a mount .*ro\)/,
          );
          await csi.fails(
            "Node",
            "NodePublishVolume",
            { ...request, volume_id: "pvc-l1" },
            ALREADY_EXISTS,
            /not volume "pvc-l1"/,
          );
          // Still one mount each: the failed calls stacked nothing.
          assert.equal(mountsAt(target).length, 1);
          assert.equal(mountsAt(readOnlyTarget).length, 1);
        },
      );

      await t.step("concurrent calls for one volume: one bind, one volume", async () => {
        const concurrentTarget = join(dir, "pods", "p4", "volume");
        const request = {
          volume_id: "pvc-aaa",
          staging_target_path: staging,
          target_path: concurrentTarget,
          volume_capability: MOUNT_CAPABILITY,
        };
        await Promise.all(
          [1, 2, 3, 4, 5].map(() => csi.call("Node", "NodePublishVolume", request)),
        );
        assert.equal(mountsAt(concurrentTarget).length, 1);
        await Promise.all(
          [1, 2, 3].map(() =>
            csi.call("Node", "NodeUnpublishVolume", {
              volume_id: "pvc-aaa",
              target_path: concurrentTarget,
            })
          ),
        );
        assert.deepEqual(mountsAt(concurrentTarget), []);
        const created = await Promise.all(
          [1, 2, 3, 4, 5].map(() =>
            csi.call("Controller", "CreateVolume", {
              name: "pvc-race",
              volume_capabilities: [MOUNT_CAPABILITY],
              capacity_range: { required_bytes: MiB },
            })
          ),
        );
        assert.deepEqual(new Set(created.map((r) => r.volume.volume_id)), new Set(["pvc-race"]));
        await csi.call("Controller", "DeleteVolume", { volume_id: "pvc-race" });
      });

      await t.step("NodeGetVolumeStats: errors, bytes and inodes as statfs sees them", async () => {
        await csi.fails(
          "Node",
          "NodeGetVolumeStats",
          { volume_path: target },
          INVALID_ARGUMENT,
          /^volume_id is required$/,
        );
        await csi.fails(
          "Node",
          "NodeGetVolumeStats",
          { volume_id: "pvc-aaa" },
          INVALID_ARGUMENT,
          /^volume_path is required$/,
        );
        await csi.fails(
          "Node",
          "NodeGetVolumeStats",
          { volume_id: "pvc-aaa", volume_path: join(dir, "nowhere") },
          NOT_FOUND,
          /volume_path ".*nowhere" does not exist/,
        );
        await csi.fails(
          "Node",
          "NodeGetVolumeStats",
          { volume_id: "pvc-none", volume_path: target },
          NOT_FOUND,
          /volume "pvc-none" does not exist/,
        );
        await csi.fails(
          "Node",
          "NodeGetVolumeStats",
          { volume_id: "pvc-l1", volume_path: target },
          NOT_FOUND,
          /volume "pvc-l1" is not published or staged at volume_path/,
        );
        const stats = await csi.call("Node", "NodeGetVolumeStats", {
          volume_id: "pvc-aaa",
          volume_path: target,
        });
        const [bytes, inodes] = stats.usage;
        assert.equal(bytes.unit, "BYTES");
        assert.equal(inodes.unit, "INODES");
        const fs = await statfs(join(skyfs.mountpoint, "volumes", "pvc-aaa"));
        assert.equal(bytes.total, fs.blocks * fs.bsize);
        assert.equal(inodes.total, fs.files);
        assert.ok(bytes.total > 0 && bytes.used >= 0 && bytes.available >= 0);
        assert.ok(bytes.used + bytes.available <= bytes.total);
        assert.ok(inodes.used >= 1, `inodes used ${inodes.used}`);
      });

      await t.step("NodeExpandVolume", async () => {
        await csi.fails(
          "Node",
          "NodeExpandVolume",
          { volume_path: target },
          INVALID_ARGUMENT,
          /^volume_id is required$/,
        );
        await csi.fails(
          "Node",
          "NodeExpandVolume",
          { volume_id: "pvc-aaa" },
          INVALID_ARGUMENT,
          /^volume_path is required$/,
        );
        await csi.fails(
          "Node",
          "NodeExpandVolume",
          { volume_id: "pvc-none", volume_path: target },
          NOT_FOUND,
          /volume "pvc-none" does not exist/,
        );
        await csi.fails(
          "Node",
          "NodeExpandVolume",
          {
            volume_id: "pvc-aaa",
            volume_path: target,
            capacity_range: { required_bytes: 64 * MiB },
          },
          OUT_OF_RANGE,
          /ControllerExpandVolume first/,
        );
        await csi.call("Controller", "ControllerExpandVolume", {
          volume_id: "pvc-aaa",
          capacity_range: { required_bytes: 64 * MiB },
        });
        const expanded = await csi.call("Node", "NodeExpandVolume", {
          volume_id: "pvc-aaa",
          volume_path: target,
          capacity_range: { required_bytes: 64 * MiB },
        });
        assert.equal(expanded.capacity_bytes, 64 * MiB);
      });

      await t.step(
        "NodeUnpublishVolume / NodeUnstageVolume: unmount, remove target, idempotent",
        async () => {
          await csi.fails(
            "Node",
            "NodeUnpublishVolume",
            { target_path: target },
            INVALID_ARGUMENT,
            /^volume_id is required$/,
          );
          await csi.fails(
            "Node",
            "NodeUnpublishVolume",
            { volume_id: "pvc-aaa" },
            INVALID_ARGUMENT,
            /^target_path is required$/,
          );
          for (const path of [target, readOnlyTarget]) {
            await csi.call("Node", "NodeUnpublishVolume", {
              volume_id: "pvc-aaa",
              target_path: path,
            });
            assert.deepEqual(mountsAt(path), []);
            await assert.rejects(Deno.stat(path), Deno.errors.NotFound);
            await csi.call("Node", "NodeUnpublishVolume", {
              volume_id: "pvc-aaa",
              target_path: path,
            });
          }
          await csi.call("Node", "NodeUnstageVolume", {
            volume_id: "pvc-aaa",
            staging_target_path: staging,
          });
          assert.deepEqual(mountsAt(staging), []);
          await csi.call("Node", "NodeUnstageVolume", {
            volume_id: "pvc-aaa",
            staging_target_path: staging,
          });
          // The data stayed in the volume.
          assert.equal(
            await Deno.readTextFile(join(skyfs.mountpoint, "volumes", "pvc-aaa", "hello.txt")),
            "x",
          );
        },
      );

      await t.step(
        "a driver with the wrong admin token: PERMISSION_DENIED, nothing created",
        async () => {
          const wrong = await startDriver({
            socket: join(dir, "wrong-token.sock"),
            mode: "controller",
            mountpoint: skyfs.mountpoint,
            apiUrl: skyfs.apiUrl,
            token: "not-the-token-0123456789",
          });
          const other = new CsiClient(wrong.socket);
          try {
            await other.fails(
              "Controller",
              "CreateVolume",
              { name: "pvc-denied", volume_capabilities: [MOUNT_CAPABILITY] },
              grpc.status.PERMISSION_DENIED,
              /POST \/api\/v1\/volumes answered 403/,
            );
            assert.equal((await fetch(`${skyfs.url}/api/v1/volumes/pvc-denied`)).status, 404);
          } finally {
            other.close();
            await wrong.stop();
          }
        },
      );

      await t.step("DeleteVolume: errors, removes the tree, idempotent", async () => {
        await csi.fails(
          "Controller",
          "DeleteVolume",
          {},
          INVALID_ARGUMENT,
          /^volume_id is required$/,
        );
        await csi.call("Controller", "DeleteVolume", { volume_id: "pvc-aaa" });
        // Through the kernel the directory may stay visible for its entry cache time when the
        // daemon deleted it itself (fuse.cache_seconds), so wait for it to go.
        await eventually(
          async () =>
            !(await Deno.stat(join(skyfs.mountpoint, "volumes", "pvc-aaa")).then(
              () => true,
              () => false,
            )),
          "the deleted volume's directory gone from the mount",
        );
        assert.equal((await fetch(`${skyfs.url}/api/v1/volumes/pvc-aaa`)).status, 404);
        await csi.call("Controller", "DeleteVolume", { volume_id: "pvc-aaa" });
        await csi.call("Controller", "DeleteVolume", { volume_id: "never-existed" });
        await csi.call("Controller", "DeleteVolume", { volume_id: "Not A Skyfs Name" });
        const list = await csi.call("Controller", "ListVolumes", {});
        assert.equal(list.entries.length, 6);
        for (const entry of list.entries) {
          await csi.call("Controller", "DeleteVolume", { volume_id: entry.volume.volume_id });
        }
        assert.equal((await csi.call("Controller", "ListVolumes", {})).entries.length, 0);
      });
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
