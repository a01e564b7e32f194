/**
 * File-system metadata rates of a mount on a 3-replica CURP cluster on loopback, with the
 * namespace's commands on the fast path (default) and with it off (SKYFS_CURP_FAST_PATH=0), in
 * the same run, alternating: creates by concurrent writers, then stats on a freshly restarted
 * mount (cold caches, so every stat reaches the metadata store).
 *
 * Run (root, /dev/fuse): deno run -A bench/meta_wan/mount_rates.ts [--files 400] [--rounds 2]
 * @module
 */

import { parseArgs } from "node:util";
import { join } from "node:path";
import { startMount } from "../../tests/_harness.ts";
import { fetchStatus } from "../../src/meta/curp/server.ts";
import { TestCluster } from "../../tests/meta/_cluster.ts";

const args = parseArgs({
  options: { files: { type: "string", default: "400" }, rounds: { type: "string", default: "2" } },
});
const files = Number(args.values.files);
const rounds = Number(args.values.rounds);
const WRITERS = 4;

async function leaderReplies(cluster: TestCluster): Promise<{ fast: number; slow: number }> {
  let fast = 0;
  let slow = 0;
  for (const a of cluster.addressList) {
    const s = await fetchStatus(a).catch(() => undefined);
    if (s === undefined) continue;
    fast += s.fastReplies;
    slow += s.slowReplies;
  }
  return { fast, slow };
}

async function one(
  fastPath: boolean,
): Promise<{ create: number; stat: number; fastShare: number }> {
  const cluster = await TestCluster.start("curp3-rates-");
  if (fastPath) Deno.env.delete("SKYFS_CURP_FAST_PATH");
  else Deno.env.set("SKYFS_CURP_FAST_PATH", "0");
  const mount = await startMount({
    extraArgs: ["--meta", `curp://${cluster.addressList.join(",")}`],
  });
  try {
    const per = Math.ceil(files / WRITERS);
    for (let w = 0; w < WRITERS; w++) await Deno.mkdir(join(mount.mountpoint, `d${w}`));
    const before = await leaderReplies(cluster);
    let t0 = performance.now();
    await Promise.all(Array.from({ length: WRITERS }, async (_, w) => {
      for (let i = 0; i < per; i++) {
        (await Deno.open(join(mount.mountpoint, `d${w}`, `f${i}`), { create: true, write: true }))
          .close();
      }
    }));
    const create = (per * WRITERS) / ((performance.now() - t0) / 1000);
    const after = await leaderReplies(cluster);
    await mount.restart();
    t0 = performance.now();
    await Promise.all(Array.from({ length: WRITERS }, async (_, w) => {
      for (let i = 0; i < per; i++) await Deno.stat(join(mount.mountpoint, `d${w}`, `f${i}`));
    }));
    const stat = (per * WRITERS) / ((performance.now() - t0) / 1000);
    const fastShare = (after.fast - before.fast) /
      Math.max(1, after.fast - before.fast + after.slow - before.slow);
    return { create, stat, fastShare };
  } finally {
    await mount.dispose();
    await cluster.stop();
    Deno.env.delete("SKYFS_CURP_FAST_PATH");
  }
}

const results: Record<string, { create: number[]; stat: number[]; share: number[] }> = {
  fast: { create: [], stat: [], share: [] },
  slow: { create: [], stat: [], share: [] },
};
for (let r = 0; r < rounds; r++) {
  for (const mode of r % 2 === 0 ? ["fast", "slow"] : ["slow", "fast"]) {
    const x = await one(mode === "fast");
    results[mode].create.push(x.create);
    results[mode].stat.push(x.stat);
    results[mode].share.push(x.fastShare);
    console.log(
      `round ${r + 1} ${mode}: ${x.create.toFixed(0)} creates/s, ${
        x.stat.toFixed(0)
      } cold stats/s, ` +
        `leader answered ${(x.fastShare * 100).toFixed(0)}% of proposals speculatively`,
    );
  }
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
console.log(
  `median over ${rounds} rounds, ${files} files, ${WRITERS} writers: fast ${
    median(results.fast.create).toFixed(0)
  } creates/s vs slow ${median(results.slow.create).toFixed(0)} (${
    (median(results.fast.create) / median(results.slow.create)).toFixed(2)
  }x); cold stats fast ${median(results.fast.stat).toFixed(0)}/s vs slow ${
    median(results.slow.stat).toFixed(0)
  } (${(median(results.fast.stat) / median(results.slow.stat)).toFixed(2)}x)`,
);
