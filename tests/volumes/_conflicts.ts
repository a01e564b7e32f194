/**
 * Measurement, not a test: two cluster nodes (local CURP cluster) each create 100 files of 1 KiB,
 * at the same time, first in directories outside volumes, then in one volume; prints the
 * metadata transactions, conflicts and CURP fast/slow commits both nodes counted (README,
 * "Volumes and quotas"). Run: deno run -A tests/volumes/_conflicts.ts (root, /dev/fuse).
 * @module
 */
import { LocalCluster } from "../../src/cluster/local_cluster.ts";
import { findEndpoint } from "../../src/http/endpoint_file.ts";
const TOKEN = "volumes-cluster-token-0123456789";
const cluster = await LocalCluster.start("h3-measure-", {
  nodes: 2,
  nodeEnv: { SKYFS_HTTP_TOKEN: TOKEN },
});
const metric = async (mp: string) => {
  const text = await (await fetch(`http://${findEndpoint(mp)}/metrics`)).text();
  const get = (re: RegExp) => Number(re.exec(text)?.[1] ?? NaN);
  return {
    txns: get(/^skyfs_meta_transactions_total(?:\{[^}]*\})? (\S+)/m),
    conflicts: get(/^skyfs_meta_conflicts_total(?:\{[^}]*\})? (\S+)/m),
    fast: get(/^skyfs_curp_commits_total\{[^}]*path="fast"[^}]*\} (\S+)/m),
    slow: get(/^skyfs_curp_commits_total\{[^}]*path="slow"[^}]*\} (\S+)/m),
  };
};
try {
  const [a, b] = cluster.nodes;
  const r = await fetch(`http://${findEndpoint(a.mountpoint)}/api/v1/volumes`, {
    method: "POST",
    headers: { authorization: `Bearer ${TOKEN}` },
    body: JSON.stringify({ name: "m", capacityBytes: 2 ** 34 }),
  });
  console.log("create", r.status);
  await new Promise((r) => setTimeout(r, 1000));
  for (const where of ["plain", "volumes/m"]) {
    for (const n of [a, b]) {
      await Deno.mkdir(`${n.mountpoint}/${where}/${n.id}`, { recursive: true });
    }
    const before = [await metric(a.mountpoint), await metric(b.mountpoint)];
    const t0 = performance.now();
    await Promise.all(
      [a, b].map((n) =>
        new Deno.Command("python3", {
          args: [
            "-c",
            "import sys\nfor i in range(100):\n  open(f'{sys.argv[1]}/f{i}','w').write('x'*1024)",
            `${n.mountpoint}/${where}/${n.id}`,
          ],
        }).output()
      ),
    );
    const ms = performance.now() - t0;
    const after = [await metric(a.mountpoint), await metric(b.mountpoint)];
    const d = (k: "txns" | "conflicts" | "fast" | "slow") =>
      after[0][k] - before[0][k] + after[1][k] - before[1][k];
    console.log(
      `${where}: 2 nodes x 100 create+1KiB+close: ${ms.toFixed(0)} ms, txns ${
        d("txns")
      }, conflicts ${d("conflicts")}, curp fast ${d("fast")} slow ${d("slow")}`,
    );
  }
} finally {
  await cluster.stop();
}
