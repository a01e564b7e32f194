/**
 * A mount on a CURP cluster: 3 `skyfs meta serve` processes and `skyfs mount --meta curp://...`;
 * kill -9 of the leader while files are being created loses no file whose creation returned, and
 * the mount keeps working after the election. Needs root and /dev/fuse (skipped otherwise).
 * @module
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { startMount } from "../_harness.ts";
import { TestCluster } from "./_cluster.ts";

function canMount(): boolean {
  try {
    Deno.statSync("/dev/fuse");
    return Deno.uid() === 0;
  } catch {
    return false;
  }
}

Deno.test({
  name:
    "curp mount: kill -9 of the leader under load; no acknowledged file lost, mount keeps working",
  ignore: !canMount(),
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const cluster = await TestCluster.start("curp2-mount-");
    const mount = await startMount({
      extraArgs: ["--meta", `curp://${cluster.addressList.join(",")}`],
    });
    try {
      const acked = new Map<string, string>();
      let stop = false;
      const writer = async (w: number) => {
        await Deno.mkdir(join(mount.mountpoint, `d${w}`));
        for (let i = 0; !stop; i++) {
          const path = join(mount.mountpoint, `d${w}`, `f${i}`);
          await Deno.writeTextFile(path, `content ${w}/${i}`); // an error fails the test
          acked.set(path, `content ${w}/${i}`);
        }
      };
      const writers = Array.from({ length: 4 }, (_, w) => writer(w));
      while (acked.size < 40) await new Promise((r) => setTimeout(r, 20));
      const leader = await cluster.waitForLeader();
      await cluster.kill(leader);
      const atKill = acked.size;
      const newLeader = await cluster.waitForLeader();
      while (acked.size < atKill + 40) await new Promise((r) => setTimeout(r, 20));
      stop = true;
      await Promise.all(writers);
      for (const [path, content] of acked) assert.equal(await Deno.readTextFile(path), content);
      // The metadata went through the cluster: each create is at least one revision there.
      const status = await cluster.status(newLeader);
      assert.ok(status !== undefined && status.revision > acked.size, JSON.stringify(status));
      await Deno.rename(join(mount.mountpoint, "d0"), join(mount.mountpoint, "moved"));
      assert.ok((await Deno.stat(join(mount.mountpoint, "moved", "f0"))).isFile);
      // A remount reads the namespace back from the cluster.
      await mount.restart();
      for (const [path, content] of acked) {
        const moved = path.replace(`${mount.mountpoint}/d0/`, `${mount.mountpoint}/moved/`);
        assert.equal(await Deno.readTextFile(moved), content);
      }
    } catch (error) {
      throw new Error(`${(error as Error).message}\nmount stderr:\n${mount.stderr()}`);
    } finally {
      await mount.dispose();
      await cluster.stop();
    }
  },
});
