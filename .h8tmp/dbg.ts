import { join } from "node:path";
import { LocalCluster } from "/work/h8/src/cluster/local_cluster.ts";
import { random, writeSynced } from "/work/h8/tests/cluster/_cluster_util.ts";
const cluster = await LocalCluster.start("skyfs-h8dbg-", {
  nodes: 3,
  zones: 3,
  rttMs: 10,
  nodeEnv: { SKYFS_CURP_TIMEOUT_MS: "3000", SKYFS_CLUSTER_ZONE_TIMEOUT_MS: "2000" },
});
try {
  await Promise.all(cluster.nodes.map(async (n) => {
    const ts: (number | string)[] = [];
    for (let i = 0; i < 6; i++) {
      const t = performance.now();
      try {
        await writeSynced(join(n.mountpoint, `f${i}`), random(i % 3 === 2 ? 4 * 2 ** 20 : 30000));
        ts.push(Math.round(performance.now() - t));
      } catch (e) {
        ts.push((e as Error).message.slice(0, 40));
      }
    }
    console.log(n.id, ts);
  }));
} finally {
  const st = await cluster.linkStats();
  for (const l of cluster.links) console.log(l.kind, l.from, l.to, JSON.stringify(st.get(l)));
  await cluster.stop();
}
