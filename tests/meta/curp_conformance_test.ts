/**
 * The MetaKV conformance suite, unchanged, against a real 3-replica CURP cluster (three
 * `skyfs meta serve` processes on loopback) that this file starts and stops.
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

const LEASES = "leases are not replicated by the CURP backend yet (README: not done)";
const WATCH = "watch is not served by the CURP backend yet (README: not done)";
const COMPACT = "history compaction is not implemented by the CURP backend yet";

runMetaKVConformance("curp", async () => openCurpKV((await theCluster()).addressList), {
  sanitizeResources: false,
  sanitizeOps: false,
  skip: {
    "compare: lease target sees the attached lease": LEASES,
    "lease: revoke deletes every attached key in one revision": LEASES,
    "lease: keepAlive returns the TTL; a missing lease rejects": LEASES,
    "lease: a put without lease detaches the key": LEASES,
    "lease: expiry deletes the attached keys": LEASES,
    "watch: live events, one batch per revision, prevKv when asked": WATCH,
    "watch: a delete event carries the key, an empty value and the deleting revision": WATCH,
    "watch: only keys in the range are delivered": WATCH,
    "watch: from a past revision delivers history, then live events": WATCH,
    "watch: history and live writes interleaved arrive in order, once each": WATCH,
    "watch: a future startRevision skips earlier events": WATCH,
    "watch: delivery happens after the write returns, never during it": WATCH,
    "watch: cancel stops delivery": WATCH,
    "compact: history before the compacted revision is gone": COMPACT,
  },
});

Deno.test({
  name: "curp: stop the conformance cluster",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    if (cluster !== undefined) await (await cluster).stop();
  },
});
