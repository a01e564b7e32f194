/**
 * The MetaKV conformance suite, unchanged, against a real 3-replica CURP cluster (three
 * `skyfs meta serve` processes on loopback) that this file starts and stops: every case runs,
 * none is skipped.
 * @module
 */

import { runMetaKVConformance } from "../../src/meta/conformance.ts";
import { openCurpKV } from "../../src/meta/curp/curp_kv.ts";
import { TestCluster } from "./_cluster.ts";

let cluster: Promise<TestCluster> | undefined;
function theCluster(): Promise<TestCluster> {
  cluster ??= TestCluster.start("curp2-conformance-");
  return cluster;
}

runMetaKVConformance("curp", async () => openCurpKV((await theCluster()).addressList), {
  sanitizeResources: false,
  sanitizeOps: false,
});

Deno.test({
  name: "curp: stop the conformance cluster",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    if (cluster !== undefined) await (await cluster).stop();
  },
});
