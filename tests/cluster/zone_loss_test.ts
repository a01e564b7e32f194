/**
 * A cloud lost (issue 15 point 6), on the emulated clouds of `LocalCluster` (3 zones, one node and
 * one CURP replica each, every cross-zone connection through a delay proxy; 10 ms RTT):
 *
 * (a) every link of the leader's zone A is cut (its proxies drop everything, as iptables DROP
 *     would) while all three mounts write and fsync: B and C keep writing and serving metadata and
 *     every file whose chunks reached them; A's operations fail (EIO) instead of hanging, each
 *     after the configured bound, with one log line; after the heal A writes again, reads what B
 *     and C wrote meanwhile, and nothing acknowledged anywhere is lost.
 * (b) with cluster.zone_sync = 2 (chunk replication, issue 15 point 2), a file fsync'd in A reads
 *     in B while A is cut off. Runs once that key exists.
 * (c) a zone's backend unreachable: a read falls through to another zone's copy, and the dead
 *     zone costs one timeout, not one per chunk.
 *
 * Nothing here asserts a duration: "instead of hanging" is that each of A's operations finishes
 * (the writer keeps making attempts), and the bound is the one A's log line names. Needs root and
 * /dev/fuse.
 * @module
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import {
  LocalCluster,
  type LocalNode,
  type LocalReplica,
} from "../../src/cluster/local_cluster.ts";
import { KEYS } from "../../src/config/keys.ts";
import { TEST_TMP } from "../_harness.ts";
import { canRunCluster, random, same, until, writeSynced } from "./_cluster_util.ts";

const CURP_TIMEOUT_MS = 3000;
const ZONE_TIMEOUT_MS = 2000;
const ENV = {
  SKYFS_CURP_TIMEOUT_MS: String(CURP_TIMEOUT_MS),
  SKYFS_CLUSTER_ZONE_TIMEOUT_MS: String(ZONE_TIMEOUT_MS),
  SKYFS_PEER_TIMEOUT_MS: "2000",
};

/** A leader among the replicas outside `zone` (the cut zone's replica may still call itself one). */
async function leaderOutside(cluster: LocalCluster, zone: string): Promise<LocalReplica> {
  let found: LocalReplica | undefined;
  await until(async () => {
    for (const r of cluster.replicas.filter((r) => r.zone !== zone)) {
      if ((await cluster.replicaStatus(r))?.role === "leader") found = r;
    }
    return found !== undefined;
  }, `a CURP leader outside ${zone}`);
  return found!;
}

async function readOr(path: string): Promise<Uint8Array | Error> {
  return await Deno.readFile(path).catch((e) => e as Error);
}

Deno.test({
  name: "zone loss: the leader's zone cut off under fsyncing writers in 3 zones; B and C serve, " +
    "A fails fast, heals, nothing acknowledged lost; a dead zone backend falls through",
  ignore: !canRunCluster(),
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const cluster = await LocalCluster.start("skyfs-zone-loss-", {
      nodes: 3,
      zones: 3,
      rttMs: 10,
      nodeEnv: ENV,
      parentDir: TEST_TMP,
    });
    let stop = false;
    const t0 = performance.now();
    const progress = (what: string) =>
      console.log(`zone loss: ${((performance.now() - t0) / 1000).toFixed(1)} s: ${what}`);
    try {
      const leader = await cluster.metaLeader();
      const zoneA = leader.zone!;
      const a = cluster.nodes.find((n) => n.zone === zoneA)!;
      const others = cluster.nodes.filter((n) => n !== a);
      const acked = new Map<string, { data: Uint8Array; by: LocalNode; phase: string }>();
      const attempts = new Map(cluster.nodes.map((n) => [n.id, 0]));
      const failures = new Map<string, string[]>(cluster.nodes.map((n) => [n.id, []]));
      let phase = "before";
      const count = (node: LocalNode, p: string) =>
        [...acked.values()].filter((f) => f.by === node && f.phase === p).length;
      const writers = cluster.nodes.map(async (node) => {
        for (let i = 0; !stop; i++) {
          // B and C pause after 6 files written while A is cut (every file is read back twice
          // below, some through A's peer timeout): the cut lasts as long as A's writer needs.
          if (phase === "cut" && node !== a && count(node, "cut") >= 6) {
            await new Promise((r) => setTimeout(r, 100));
            continue;
          }
          const name = `f-${node.id}-${i}`;
          const data = random(i % 3 === 2 ? 4 * 2 ** 20 + 99 : 30_000 + i);
          const during = phase;
          try {
            await writeSynced(join(node.mountpoint, name), data);
            acked.set(name, { data, by: node, phase: during });
          } catch (error) {
            failures.get(node.id)!.push(`${during} ${name}: ${(error as Error).message}`);
            await new Promise((r) => setTimeout(r, 200));
          } finally {
            attempts.set(node.id, attempts.get(node.id)! + 1);
          }
        }
      });
      await until(
        () => cluster.nodes.every((n) => count(n, "before") >= 3),
        "each zone acknowledged 3 files",
      );
      progress("3 files per zone");

      // (a) Zone A (the leader's) loses every link.
      phase = "electing";
      await cluster.cutZone(zoneA);
      const next = await leaderOutside(cluster, zoneA);
      phase = "cut";
      progress(`cut ${zoneA}; new leader ${next.id}`);
      const aTries = attempts.get(a.id)!;
      await until(
        () => others.every((n) => count(n, "cut") >= 4),
        "B and C acknowledged 4 files each while A is cut off",
        90_000,
      );
      // A's writer kept finishing its attempts (none hung), and they failed.
      await until(
        () => attempts.get(a.id)! >= aTries + 2,
        "A's writer finished 2 attempts while cut off (a hang otherwise)",
        60_000,
      );
      assert.equal(count(a, "cut"), 0, "A acknowledged a file while cut off");
      const aFailures = failures.get(a.id)!.filter((f) => f.startsWith("cut"));
      assert.ok(aFailures.length > 0, "A's writes did not fail while cut off");
      for (const f of aFailures) {
        assert.match(f, /Input\/output error|os error 5|timed out|os error 110/, f);
      }
      // One line per failure in A's log naming the bound, no stack.
      await until(
        async () => /skyfs: \w+ failed with EIO: .*within 3000 ms/.test(await cluster.logOf(a)),
        "A's log names the metadata timeout",
      );
      assert.doesNotMatch(await cluster.logOf(a), /^\s+at /m, "a stack trace in A's log");
      // The writers stop (each finishes the operation it is in) before the reads are checked.
      stop = true;
      await Promise.all(writers);
      progress("writers stopped");

      // B and C serve metadata and every file whose chunks reached them: theirs, before and
      // during the cut. A's earlier files: their content, or an error, never other bytes.
      let aReadable = 0;
      const aTried = new Set<string>();
      for (const reader of others) {
        // Names reach the other nodes through their metadata watch: soon, not at once.
        const listed = async () =>
          new Set((await Array.fromAsync(Deno.readDir(reader.mountpoint))).map((e) => e.name));
        await until(
          async () => {
            const names = await listed();
            return [...acked.keys()].every((name) => names.has(name));
          },
          `every acknowledged name in ${reader.id}'s listing`,
        );
        for (const [name, file] of acked) {
          if (file.by === a) {
            // Its chunks are in A's backend only (no replication here) and A's peer is cut:
            // the read ends, with the bytes or an error (one file per reader: each costs the
            // peer and zone timeouts).
            if (aTried.has(reader.id)) continue;
            aTried.add(reader.id);
            const got = await readOr(join(reader.mountpoint, name));
            if (got instanceof Uint8Array) {
              assert.ok(same(got, file.data), `${name} on ${reader.id}: other bytes`);
              aReadable++;
            }
            continue;
          }
          const got = await readOr(join(reader.mountpoint, name));
          assert.ok(got instanceof Uint8Array, `${name} on ${reader.id}: ${got}`);
          assert.ok(same(got, file.data), `${name} on ${reader.id}: other bytes`);
        }
      }
      // B's and C's writes fail only while the cluster elects a leader outside A (an operation in
      // flight at the cut may wait longer than the CURP timeout): none after.
      for (const n of others) {
        const late = failures.get(n.id)!.filter((f) => f.startsWith("cut"));
        assert.deepEqual(late, [], `${n.id}'s writes failed after the election`);
      }
      const electionFailures = others.flatMap((n) => failures.get(n.id)!);

      progress("B and C read everything");

      // Heal: A writes again and catches up.
      await cluster.cutZone(zoneA, false);
      for (let i = 0; i < 2; i++) {
        const name = `healed-${a.id}-${i}`;
        const data = random(40_000 + i);
        await until(
          () => writeSynced(join(a.mountpoint, name), data).then(() => true, () => false),
          `A's write of ${name} after the heal`,
          90_000,
        );
        acked.set(name, { data, by: a, phase: "healed" });
      }
      progress("A wrote after the heal");
      // Every acknowledged file on every node. A read that needs A may still fail for a while
      // after the heal (A's peers' down window in transport.ts; A's store, the last place such a
      // chunk can come from, is asked even inside its down window), so each is retried.
      for (const node of cluster.nodes) {
        for (const [name, file] of acked) {
          let got: Uint8Array | undefined;
          await until(async () => {
            const read = await readOr(join(node.mountpoint, name));
            if (read instanceof Uint8Array) got = read;
            return got !== undefined;
          }, `after the heal, ${name} on ${node.id} readable`);
          assert.ok(same(got!, file.data), `after the heal, ${name} on ${node.id}: other bytes`);
        }
      }
      progress("every node read everything");
      console.log(
        `zone loss: leader ${leader.id} in ${zoneA}, new leader ${next.id}; acknowledged ` +
          `${acked.size} (${count(a, "before")} by A before, ${
            others.map((n) => count(n, "cut")).join("+")
          } by B+C while cut, ${count(a, "healed")} by A after); A's failed attempts while cut ` +
          `${aFailures.length}; A's earlier files readable in B/C while cut: ${aReadable}; ` +
          `B/C writes failed during the election: ${electionFailures.length}`,
      );

      // (c) Zone A's backend unreachable: a file written in A, whose objects are also in B's
      // zone, reads on C from B's copy. (Copied here by hand: the replication of issue 15 point
      // 2 makes such copies itself.)
      const data = random(2 * 4 * 2 ** 20 + 5);
      await writeSynced(join(a.mountpoint, "copied"), data);
      const zoneB = others[0].zone!;
      const c = others[1];
      progress("(c)");
      let copied = 0;
      for await (const entry of walk(cluster.zoneBackend(zoneA))) {
        const to = join(cluster.zoneBackend(zoneB), entry.slice(cluster.zoneBackend(zoneA).length));
        await Deno.mkdir(join(to, ".."), { recursive: true });
        await Deno.copyFile(entry, to);
        copied++;
      }
      assert.ok(copied >= 3, `only ${copied} objects in ${zoneA}'s backend`);
      await cluster.cutBackend(zoneA);
      // No peer can answer: A's and B's daemons stop, so C reads the backends.
      await cluster.stopNode(a);
      await cluster.stopNode(others[0]);
      const got = await readOr(join(c.mountpoint, "copied"));
      assert.ok(got instanceof Uint8Array, `C's read with ${zoneA}'s backend cut: ${got}`);
      assert.ok(same(got, data), "C read other bytes");
      // Where the bytes came from: B's store (the test's copy), or wherever replication put one;
      // not A's (cut). Printed, not asserted: which store a read tries first is the read policy's.
      const stats = await cluster.linkStats();
      const fromB = cluster.links.filter((l) =>
        l.from === c.zone && l.kind === "backend" && l.toZone === zoneB
      ).reduce((n, l) => n + stats.get(l)!.bytesDown, 0);
      progress(
        `(c): C read ${data.length} bytes, ${fromB} of them through its link to ${zoneB}'s store`,
      );
    } catch (error) {
      console.error(error);
      for (const n of cluster.nodes) console.error(`--- ${n.id}\n${await cluster.logOf(n)}`);
      throw error;
    } finally {
      // The writers stop before the mounts do (else they write into the bare directories).
      stop = true;
      await cluster.stop();
    }
  },
});

Deno.test({
  name: "zone loss (b): with cluster.zone_sync = 2, a file fsync'd in A reads in B while A is cut",
  // Chunk replication across zones (issue 15 point 2) brings this key; until then the case
  // cannot run.
  ignore: !canRunCluster() || !("cluster.zone_sync" in KEYS),
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const cluster = await LocalCluster.start("skyfs-zone-sync-", {
      nodes: 3,
      zones: 3,
      rttMs: 10,
      nodeEnv: { ...ENV, SKYFS_ZONE_SYNC: "2" },
      parentDir: TEST_TMP,
    });
    try {
      const [a, b] = cluster.nodes;
      const data = random(4 * 2 ** 20 + 1234);
      await writeSynced(join(a.mountpoint, "synced"), data);
      await cluster.cutZone(a.zone!);
      // The data is what this case is about: if A's zone held the CURP leader, B's open waits for
      // the election, which on these loaded cores can outlast the 3 s CURP timeout set above
      // (CI saw EIO once); the leader's loss itself is the first case's.
      await leaderOutside(cluster, a.zone!);
      const got = await readOr(join(b.mountpoint, "synced"));
      assert.ok(got instanceof Uint8Array, `B's read while A is cut: ${got}`);
      assert.ok(same(got, data), "B read other bytes");
    } finally {
      await cluster.stop();
    }
  },
});

/** Every file under `dir` (paths). */
async function* walk(dir: string): AsyncGenerator<string> {
  for await (const entry of Deno.readDir(dir)) {
    const path = join(dir, entry.name);
    if (entry.isDirectory) yield* walk(path);
    else if (entry.isFile) yield path;
  }
}
