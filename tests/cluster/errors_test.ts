/**
 * Clear errors in a cluster of 3 mounts on 3 CURP replicas (or one etcd member with
 * SKYFS_TEST_META=etcd): with the backend unreachable, fsync fails with EIO and one log line names
 * the backend, and succeeds once it is back; on CURP, with the metadata quorum lost, fsync fails
 * with EIO after the client's timeout and one log line names the metadata store, and succeeds once
 * a quorum is back (etcd's member lost: etcd_failover_test.ts); with a peer killed, reads of the
 * chunks it owned fall back to the backend and succeed. The daemons keep running throughout.
 * Needs root and /dev/fuse (and etcd-server on etcd).
 * @module
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { isMounted, LocalCluster, type LocalNode } from "../../src/cluster/local_cluster.ts";
import { Ring } from "../../src/cluster/membership.ts";
import { canRunCluster, clusterStore, random, same, until, writeSynced } from "./_cluster_util.ts";

const STORE = clusterStore();

/** The client's wait for the metadata store before EIO, shortened from 10 s for this test. */
const META_TIMEOUT_MS = 2000;

const EIO = /os error 5\b|Input\/output error/;

async function writeAll(file: Deno.FsFile, data: Uint8Array): Promise<void> {
  let done = 0;
  while (done < data.length) done += await file.write(data.subarray(done));
}

/** The node's log since `from` (a length of an earlier log) once it has a line matching
 * `pattern` (stderr reaches the file through a pipe, a moment later). */
async function logLine(
  cluster: LocalCluster,
  node: LocalNode,
  from: number,
  pattern: RegExp,
): Promise<string> {
  let log = "";
  await until(
    async () => {
      log = (await cluster.logOf(node)).slice(from);
      return pattern.test(log);
    },
    `a line matching ${pattern} in ${node.id}'s log`,
    5000,
  ).catch((error) => {
    throw new Error(`${(error as Error).message}; the log since:\n${log}`);
  });
  return log;
}

function assertNoStack(log: string) {
  assert.doesNotMatch(log, /internal error|^\s+at /m, `a stack trace in the log:\n${log}`);
}

Deno.test({
  name:
    `cluster on ${STORE}: backend unreachable${
      STORE === "curp" ? " and meta quorum lost" : ""
    } -> fsync EIO with one log line, serving again after; a killed peer's chunks read from the ` +
    "backend",
  ignore: !canRunCluster(STORE === "etcd"),
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async (t) => {
    const cluster = await LocalCluster.start("skyfs-errors-", {
      meta: STORE,
      nodeEnv: { SKYFS_CURP_TIMEOUT_MS: String(META_TIMEOUT_MS) },
    });
    const [a, b, c] = cluster.nodes;
    const withLogs = async (error: unknown) => {
      const logs = await Promise.all(
        [...cluster.nodes, ...cluster.replicas].map(async (d) =>
          `--- ${d.id}:\n${(await cluster.logOf(d)).slice(-3000)}`
        ),
      );
      return new Error(`${(error as Error).message}\n${logs.join("\n")}`);
    };
    // A failed step fails the test with every daemon's log tail.
    const step = async (name: string, fn: () => Promise<void>) => {
      const ok = await t.step(name, async () => {
        try {
          await fn();
        } catch (error) {
          throw await withLogs(error);
        }
      });
      if (!ok) throw new Error(`step "${name}" failed`);
    };
    const ring = new Ring(cluster.nodes.map((n) => ({ id: n.id, address: "", startedMs: 0 })));
    /** A file written (and fsync'd) on `node` whose first chunk `owner` owns on the ring. */
    const fileOwnedBy = async (node: LocalNode, owner: string) => {
      for (let i = 0; i < 30; i++) {
        const name = `owned-${owner}-${i}`;
        const data = random(20_000);
        await writeSynced(join(node.mountpoint, name), data);
        const ino = (await Deno.stat(join(node.mountpoint, name))).ino!;
        if (ring.owner(`${ino}/0`)?.id === owner) return { name, data };
      }
      throw new Error(`no file of 30 has its chunk on ${owner}: is st_ino the skyfs inode?`);
    };

    try {
      await step("backend unreachable: fsync EIO, one log line; works again after", async () => {
        const path = join(a.mountpoint, "backend-down");
        const away = `${cluster.backend}.away`;
        let down = false;
        const restore = async () => {
          if (!down) return;
          await Deno.remove(cluster.backend);
          await Deno.rename(away, cluster.backend);
          down = false;
        };
        // A file whose only chunk belongs to C on the ring: B reading it asks C, then the
        // backend, and neither can answer while the backend is down.
        const cold = await fileOwnedBy(a, "c");
        const file = await Deno.open(path, { write: true, create: true });
        try {
          const first = random(100_000);
          await writeAll(file, first);
          await file.sync();
          // The backend directory becomes a regular file: every store fails (root ignores
          // permission bits, so a chmod would not do).
          await Deno.rename(cluster.backend, away);
          await Deno.writeTextFile(cluster.backend, "the backend is unreachable\n");
          down = true;
          const logFrom = (await cluster.logOf(a)).length;
          const logFromB = (await cluster.logOf(b)).length;
          const second = random(200_000);
          await file.seek(0, Deno.SeekMode.Start);
          await writeAll(file, second);
          await assert.rejects(file.sync(), EIO);
          const log = await logLine(
            cluster,
            a,
            logFrom,
            /^skyfs: FSYNC failed with EIO: cannot store chunk \S+ in the dir backend: .+$/m,
          );
          assertNoStack(log);
          // The daemon still serves: metadata operations, and data in its cache.
          assert.ok(isMounted(a.mountpoint));
          await Deno.mkdir(join(a.mountpoint, "during-outage"));
          assert.ok(same(await Deno.readFile(join(a.mountpoint, cold.name)), cold.data));
          // A chunk no cache holds: EIO on B, one line naming the backend.
          await assert.rejects(Deno.readFile(join(b.mountpoint, cold.name)), EIO);
          assertNoStack(
            await logLine(
              cluster,
              b,
              logFromB,
              /^skyfs: READ failed with EIO: cannot read chunk \S+ from the dir backend: .+$/m,
            ),
          );
          // The backend returns: the same handle's fsync now succeeds and B sees the data.
          await restore();
          await file.sync();
          assert.ok(same(await Deno.readFile(join(b.mountpoint, "backend-down")), second));
          assert.ok(same(await Deno.readFile(join(b.mountpoint, cold.name)), cold.data));
        } finally {
          file.close();
          await restore();
        }
      });

      const quorumLost = async () => {
        const path = join(a.mountpoint, "quorum-lost");
        const file = await Deno.open(path, { write: true, create: true });
        try {
          // Leader and one follower die: one replica of three is no quorum. Sync calls from here:
          // Deno's async file ops run on a dup of the fd and close it, and each such close(2) is
          // a FLUSH, a publish of its own that would wait for the timeout too.
          const leader = await cluster.metaLeader();
          const follower = cluster.replicas.find((r) => r !== leader)!;
          const logFrom = (await cluster.logOf(a)).length;
          await cluster.killReplica(leader);
          await cluster.killReplica(follower);
          const data = random(150_000);
          for (let done = 0; done < data.length;) done += file.writeSync(data.subarray(done));
          assert.throws(() => file.syncSync(), EIO);
          const log = await logLine(
            cluster,
            a,
            logFrom,
            /^skyfs: FSYNC failed with EIO: metadata store unreachable: CURP cluster \S+ did not answer within 2000 ms .+$/m,
          );
          assertNoStack(log);
          assert.ok(isMounted(a.mountpoint));
          // A quorum returns: the same handle's fsync now succeeds and C sees the data.
          await cluster.startReplica(leader);
          await cluster.startReplica(follower);
          await cluster.metaLeader();
          file.syncSync();
          assert.ok(same(await Deno.readFile(join(c.mountpoint, "quorum-lost")), data));
        } finally {
          file.close();
        }
        // New files work on every node.
        for (const node of cluster.nodes) {
          const data = random(10_000);
          await writeSynced(join(node.mountpoint, `after-quorum-${node.id}`), data);
          assert.ok(same(await Deno.readFile(join(b.mountpoint, `after-quorum-${node.id}`)), data));
        }
      };
      // CURP's quorum; etcd's one member lost and back: etcd_failover_test.ts.
      if (STORE === "curp") {
        await step("meta quorum lost: fsync EIO, one log line; works again after", quorumLost);
      }

      await t.step(
        "a killed peer: its chunks read from the backend, the read succeeds",
        async () => {
          // Files written on A until at least two of their chunks belong to B on the ring (C has
          // read none of them, so C's misses go to the owner first).
          const files = new Map<string, Uint8Array>();
          let ownedByB = 0;
          for (let i = 0; ownedByB < 2; i++) {
            assert.ok(i < 20, "no chunk of 20 files owned by b: is st_ino the skyfs inode?");
            const data = random(2 * 4 * 2 ** 20 + 1000); // three chunks
            const path = join(a.mountpoint, `peer-${i}`);
            await writeSynced(path, data);
            files.set(`peer-${i}`, data);
            const ino = (await Deno.stat(path)).ino!;
            for (let index = 0; index < 3; index++) {
              if (ring.owner(`${ino}/${index}`)?.id === "b") ownedByB++;
            }
          }
          const logFrom = (await cluster.logOf(c)).length;
          await cluster.kill(b);
          for (const [name, data] of files) {
            assert.ok(same(await Deno.readFile(join(c.mountpoint, name)), data), `C reads ${name}`);
          }
          const log = await logLine(cluster, c, logFrom, /^skyfs: peer b \(/m);
          const fallbacks =
            log.match(/^skyfs: peer b \(.*\) could not serve chunk .*; reading the backend$/gm) ??
              [];
          assert.ok(
            fallbacks.length >= ownedByB,
            `${ownedByB} chunks owned by b; C's log:\n${log}`,
          );
          assertNoStack(log);
          // B comes back (same cache) and serves again.
          await cluster.startNode(b);
          await until(async () => {
            const got = await Deno.readFile(join(b.mountpoint, "peer-0")).catch(() => undefined);
            return got !== undefined && same(got, files.get("peer-0")!);
          }, "B reads peer-0 after its restart");
        },
      );
    } finally {
      await cluster.stop();
    }
  },
});
