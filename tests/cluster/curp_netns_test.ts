/**
 * Three mounts, each in its own network namespace (veth pairs to a bridge the test creates and
 * removes), on three CURP replicas: peers and metadata cross real interfaces; a node cut off by
 * taking its link down (a partition, not a kill) costs the others only the peer timeout, leaves
 * the ring when its lease expires, and after the link is back rejoins and reads what was written
 * meanwhile. Needs root, /dev/fuse, `ip` and `nsenter`.
 * @module
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { LocalCluster, type LocalNode } from "../../src/cluster/local_cluster.ts";
import { Ring } from "../../src/cluster/membership.ts";
import { canRunCluster, random, same, skyfsStatus, until, writeSynced } from "./_cluster_util.ts";

function canRunNetns(): boolean {
  if (!canRunCluster()) return false;
  try {
    for (const tool of ["ip", "nsenter"]) {
      if (
        new Deno.Command(tool, { args: ["-V"], stdout: "null", stderr: "null" }).outputSync()
          .code !== 0
      ) {
        return false;
      }
    }
    return true;
  } catch {
    return false;
  }
}

Deno.test({
  name: "cluster on CURP, a network namespace per mount: peers over veths; a partitioned node " +
    "costs a peer timeout, leaves the ring and rejoins after the link is back",
  ignore: !canRunNetns(),
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const cluster = await LocalCluster.start("skyfs-curp-netns-", { netns: true });
    const [a, b, c] = cluster.nodes;
    const ring = new Ring(cluster.nodes.map((n) => ({ id: n.id, address: "", startedMs: 0 })));
    const liveNodes = async () =>
      Number((await skyfsStatus(cluster.meta)).text.match(/^(\d+) live node/m)?.[1] ?? -1);
    /** Files written (fsync'd) on `node` until `want` of their chunks belong to `owner`. */
    const filesOwnedBy = async (node: LocalNode, prefix: string, owner: string, want: number) => {
      const files = new Map<string, Uint8Array>();
      let owned = 0;
      for (let i = 0; owned < want; i++) {
        assert.ok(i < 20, `no ${want} chunks of 20 files owned by ${owner}`);
        const data = random(2 * 4 * 2 ** 20 + 1000); // three chunks
        const path = join(node.mountpoint, `${prefix}-${i}`);
        await writeSynced(path, data);
        files.set(`${prefix}-${i}`, data);
        const ino = (await Deno.stat(path)).ino!;
        for (let index = 0; index < 3; index++) {
          if (ring.owner(`${ino}/${index}`)?.id === owner) owned++;
        }
      }
      return files;
    };
    const readAll = async (node: LocalNode, files: Map<string, Uint8Array>) => {
      for (const [name, data] of files) {
        assert.ok(
          same(await Deno.readFile(join(node.mountpoint, name)), data),
          `${name} on ${node.id}`,
        );
      }
    };
    try {
      // Every node advertises its namespace's address: no loopback path exists between them.
      const status = await skyfsStatus(cluster.meta);
      assert.equal(status.code, 0, status.text);
      for (const node of cluster.nodes) {
        assert.match(
          status.text,
          new RegExp(
            `^${node.id} +${node.zone ?? "default"} +${node.net!.address.replaceAll(".", "\\.")}:`,
            "m",
          ),
        );
      }
      // C's misses go to the owners over the bridge (A's own chunks, B's fetched once).
      const first = await filesOwnedBy(a, "first", "b", 1);
      await readAll(c, first);
      await readAll(b, first);
      const peerFills = (t: string, id: string) =>
        Number(t.match(new RegExp(`^${id} .* (\\d+)$`, "m"))?.[1] ?? 0);
      await until(
        async () => peerFills((await skyfsStatus(cluster.meta)).text, "c") > 0,
        "peer fills on C in skyfs status",
      );

      // B is cut off. C's reads of chunks B owns wait for the peer timeout, then the backend.
      const during = await filesOwnedBy(a, "during", "b", 2);
      const logFrom = (await cluster.logOf(c)).length;
      await cluster.cutNetwork(b);
      await readAll(c, during);
      assert.match(
        (await cluster.logOf(c)).slice(logFrom),
        /^skyfs: peer b \(.*\) could not serve chunk .*; reading the backend$/m,
      );
      // B's lease expires: the others drop it from the ring, and keep writing.
      await until(async () => (await liveNodes()) === 2, "B leaves the ring", 30_000);
      const later = new Map([["later", random(500_000)]]);
      await writeSynced(join(c.mountpoint, "later"), later.get("later")!);
      await readAll(a, later);

      // The link is back: B joins again and reads everything written while it was away.
      await cluster.cutNetwork(b, false);
      await until(async () => (await liveNodes()) === 3, "B back in the ring", 30_000);
      await readAll(b, during);
      await readAll(b, later);
    } catch (error) {
      const logs = await Promise.all(
        [...cluster.nodes, ...cluster.replicas].map(async (d) =>
          `--- ${d.id}:\n${(await cluster.logOf(d)).slice(-3000)}`
        ),
      );
      throw new Error(`${(error as Error).message}\n${logs.join("\n")}`);
    } finally {
      await cluster.stop();
    }
  },
});
