// The endpoint of `skyfs meta serve` replicas and of a cluster node: CURP metrics (promtool-clean,
// one leader), readiness, the snapshot action on the leader, and on the node the backend and cache
// metrics and drop-cache (the dropped file's bytes come back from the backend). The token comes
// from SKYFS_HTTP_TOKEN, inherited by every process of the cluster.
import assert from "node:assert/strict";
import { join } from "node:path";
import { LocalCluster } from "../../src/cluster/local_cluster.ts";
import { TEST_TMP } from "../_harness.ts";
import {
  declaredMetrics,
  fetchJson,
  listeningUrl,
  MOUNT_METRICS,
  promtoolCheck,
  REPLICA_METRICS,
  sampleValue,
} from "./_http.ts";

const TOKEN = "cluster-token-0123456789abcdef";
const auth = { authorization: `Bearer ${TOKEN}` };

Deno.test("replicas and a cluster node: CURP metrics, snapshot, backend metrics, drop-cache", async () => {
  Deno.env.set("SKYFS_HTTP_TOKEN", TOKEN);
  let cluster: LocalCluster;
  try {
    cluster = await LocalCluster.start("tests-http-", { nodes: 1, parentDir: TEST_TMP });
  } finally {
    Deno.env.delete("SKYFS_HTTP_TOKEN");
  }
  try {
    const replicaUrls = await Promise.all(
      cluster.replicas.map((r) => {
        let log = "";
        const refresh = async () => log = await cluster.logOf(r);
        return (async () => {
          for (;;) {
            await refresh();
            try {
              return await listeningUrl(() => log, 100);
            } catch { /* not yet */ }
          }
        })();
      }),
    );
    let leaders = 0;
    let leaderUrl = "";
    for (const [i, url] of replicaUrls.entries()) {
      const text = await (await fetch(`${url}/metrics`)).text();
      await promtoolCheck(text);
      const declared = declaredMetrics(text);
      assert.deepEqual(REPLICA_METRICS.filter((name) => !declared.has(name)), []);
      assert.ok(text.includes(`node="${cluster.replicas[i].id}"`));
      assert.ok(sampleValue(text, "skyfs_curp_term")! >= 1);
      const isLeader = sampleValue(text, "skyfs_curp_is_leader");
      leaders += isLeader!;
      if (isLeader === 1) leaderUrl = url;
      const status = await fetchJson(`${url}/api/v1/status`);
      assert.equal(status.body.kind, "replica");
      assert.equal(status.body.id, cluster.replicas[i].id);
      assert.equal((await fetchJson(`${url}/readyz`)).status, 200);
    }
    assert.equal(leaders, 1, "exactly one replica reports skyfs_curp_is_leader 1");

    const node = cluster.nodes[0];
    let nodeLog = "";
    const nodeUrl = await (async () => {
      for (;;) {
        nodeLog = await cluster.logOf(node);
        try {
          return await listeningUrl(() => nodeLog, 100);
        } catch { /* not yet */ }
      }
    })();
    // The node's record in metadata names its endpoint, HOST:PORT (for other nodes' dashboards).
    const nodeAddress = nodeUrl.replace(/^http:\/\//, "");
    let published: string | undefined;
    for (let i = 0; i < 100 && published !== nodeAddress; i++) {
      const status = await fetchJson(`${nodeUrl}/api/v1/status`);
      const nodes = (status.body.cluster as { nodes: { id: string; http?: string }[] }).nodes;
      published = nodes.find((n) => n.id === node.id)?.http;
      if (published !== nodeAddress) await new Promise((resolve) => setTimeout(resolve, 100));
    }
    assert.equal(published, nodeAddress);
    const content = new Uint8Array(9 * 1024 * 1024).map((_, i) => (i * 31 + 7) & 255);
    await Deno.writeFile(join(node.mountpoint, "big"), content);

    // The snapshot action on the leader: token rules, validation, then the snapshot itself.
    const unauthorized = await fetchJson(`${leaderUrl}/api/v1/admin/snapshot`, { method: "POST" });
    assert.equal(unauthorized.status, 401);
    const bad = await fetchJson(`${leaderUrl}/api/v1/admin/snapshot`, {
      method: "POST",
      headers: auth,
      body: '{"index": 3}',
    });
    assert.equal(bad.status, 400);
    assert.equal(bad.body.field, "index");
    const snapshot = await fetchJson(`${leaderUrl}/api/v1/admin/snapshot`, {
      method: "POST",
      headers: auth,
    });
    assert.equal(snapshot.status, 200, JSON.stringify(snapshot.body));
    assert.equal(snapshot.body.taken, true);
    assert.ok((snapshot.body.snapshotIndex as number) > 0);
    const after = await fetchJson(`${leaderUrl}/api/v1/status`);
    assert.ok((after.body.snapshotIndex as number) >= (snapshot.body.snapshotIndex as number));

    // The node: readiness checks the backend too; every contract metric; cache and backend moved.
    const ready = await fetchJson(`${nodeUrl}/readyz`);
    assert.equal(ready.status, 200, JSON.stringify(ready.body));
    assert.deepEqual(
      (ready.body.checks as { name: string }[]).map((c) => c.name),
      ["mounted", "metadata", "backend"],
    );
    const before = await (await fetch(`${nodeUrl}/metrics`)).text();
    await promtoolCheck(before);
    const declared = declaredMetrics(before);
    assert.deepEqual(MOUNT_METRICS.filter((name) => !declared.has(name)), []);
    assert.ok(sampleValue(before, "skyfs_backend_requests_total", { op: "put" })! >= 3);
    const commits = sampleValue(before, "skyfs_curp_commits_total", { path: "fast" })! +
      sampleValue(before, "skyfs_curp_commits_total", { path: "slow" })!;
    assert.ok(commits > 0, `CURP commits: ${commits}`);
    assert.ok(sampleValue(before, "skyfs_meta_transactions_total")! > 0);
    const usedBefore = sampleValue(before, "skyfs_cache_used_bytes")!;
    assert.ok(usedBefore >= content.length, `cache used ${usedBefore}`);

    const dropped = await fetchJson(`${nodeUrl}/api/v1/admin/drop-cache`, {
      method: "POST",
      headers: auth,
      body: '{"path": "big"}',
    });
    assert.equal(dropped.status, 200, JSON.stringify(dropped.body));
    assert.equal(dropped.body.chunks, 3);
    assert.equal(dropped.body.bytes, content.length);
    const middle = await (await fetch(`${nodeUrl}/metrics`)).text();
    assert.equal(sampleValue(middle, "skyfs_cache_used_bytes"), usedBefore - content.length);
    const gets = sampleValue(middle, "skyfs_backend_requests_total", { op: "get" })!;
    // The bytes come back from the backend, whole.
    assert.deepEqual(await Deno.readFile(join(node.mountpoint, "big")), content);
    const last = await (await fetch(`${nodeUrl}/metrics`)).text();
    assert.ok(sampleValue(last, "skyfs_backend_requests_total", { op: "get" })! >= gets + 3);
    assert.ok(sampleValue(last, "skyfs_cache_read_bytes_total", { tier: "backend" })! > 0);
  } catch (error) {
    const logs = await Promise.all(
      [...cluster.replicas, ...cluster.nodes].map(async (d) =>
        `--- ${d.id}\n${await cluster.logOf(d)}`
      ),
    );
    throw new Error(`${(error as Error).stack}\n${logs.join("\n")}`);
  } finally {
    await cluster.stop();
  }
});
