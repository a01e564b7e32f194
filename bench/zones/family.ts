/**
 * The "zones" family of `deno task bench` (`--only zones`): runs bench/zones/main.ts (3 emulated
 * zones, CURP and etcd, per-operation cost in WAN round trips from the leader's zone and from
 * another, a cross-zone first read as a fraction of the link, and reads from each tier: same-zone
 * peer and backend vs a cold local read, remote peer and backend vs the link) as a child and
 * returns its figures as Measurements. Runs only when named: it starts two clusters of 3 zones
 * and one of 2.
 * @module
 */

import type { Mode } from "../model.ts";
import { type ChildFamilyResult, runChildFamily } from "../child_family.ts";

const ENTRY = new URL("./main.ts", import.meta.url);

/** Arguments per mode: full is the README's table; quick and tiny only prove it runs. */
const MODE_ARGS: Record<Mode, string[]> = {
  full: ["--rtt-ms", "20", "--ops", "9", "--mib", "16"],
  quick: ["--rtt-ms", "20", "--ops", "3", "--mib", "4"],
  tiny: ["--rtt-ms", "10", "--ops", "1", "--mib", "1", "--meta", "curp"],
};

export function runZonesFamily(
  mode: Mode,
  options: { jsonPath: string; timeoutMs: number },
): Promise<ChildFamilyResult> {
  return runChildFamily(ENTRY, "zones", MODE_ARGS[mode], options);
}
