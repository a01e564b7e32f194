/**
 * The "wan" family of `deno task bench`: runs bench/meta_wan/main.ts (CURP beside etcd 3.4 behind
 * WAN delay proxies, then on loopback) as a child and returns its figures as Measurements.
 * Runs only when named (`--only wan`): a full run takes a few minutes and needs /usr/bin/etcd for
 * the etcd column.
 * @module
 */

import type { Mode } from "../model.ts";
import { type ChildFamilyResult, runChildFamily } from "../child_family.ts";

const ENTRY = new URL("./main.ts", import.meta.url);

/** Arguments per mode: full as in the README's table; quick and tiny only prove it runs. */
const MODE_ARGS: Record<Mode, string[]> = {
  full: ["--ops", "40", "--seconds", "8"],
  quick: [
    "--ops",
    "12",
    "--seconds",
    "2",
    "--throughput-clients",
    "50",
    "--loopback-clients",
    "20",
  ],
  tiny: ["--ops", "4", "--seconds", "1", "--throughput-clients", "8", "--loopback-clients", "4"],
};

export type WanFamilyResult = ChildFamilyResult;

export function runWanFamily(
  mode: Mode,
  options: { jsonPath: string; timeoutMs: number },
): Promise<ChildFamilyResult> {
  return runChildFamily(ENTRY, "wan", MODE_ARGS[mode], options);
}
