/**
 * The "zones" family of `deno task bench` (`--only zones`): runs bench/zones/main.ts (3 emulated
 * zones, CURP and etcd, per-operation cost in WAN round trips from the leader's zone and from
 * another, a cross-zone first read as a fraction of the link, and reads from each tier: same-zone
 * peer and backend vs a cold local read, remote peer and backend vs the link) as a child and
 * returns its figures as Measurements. Runs only when named: it starts two clusters of 3 zones
 * and one of 2.
 * @module
 */

import { fileURLToPath } from "node:url";
import type { Measurement, Mode } from "../model.ts";

const ENTRY = fileURLToPath(new URL("./main.ts", import.meta.url));

/** Arguments per mode: full is the README's table; quick and tiny only prove it runs. */
const MODE_ARGS: Record<Mode, string[]> = {
  full: ["--rtt-ms", "20", "--ops", "9", "--mib", "16"],
  quick: ["--rtt-ms", "20", "--ops", "3", "--mib", "4"],
  tiny: ["--rtt-ms", "10", "--ops", "1", "--mib", "1", "--meta", "curp"],
};

export async function runZonesFamily(
  mode: Mode,
  options: { jsonPath: string; timeoutMs: number },
): Promise<{ baseline: string; measurements: Measurement[] }> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", ENTRY, ...MODE_ARGS[mode], "--json", options.jsonPath],
    stdin: "null",
    stdout: "inherit",
    stderr: "piped",
  }).spawn();
  const timer = setTimeout(() => {
    try {
      child.kill("SIGKILL");
    } catch { /* exited */ }
  }, options.timeoutMs);
  const output = await child.output();
  clearTimeout(timer);
  if (output.code !== 0) {
    const last = new TextDecoder().decode(output.stderr).trim().split("\n").pop() ?? "";
    throw new Error(`bench/zones/main.ts exited with ${output.code}: ${last}`);
  }
  const value = JSON.parse(await Deno.readTextFile(options.jsonPath));
  if (typeof value.baseline !== "string" || !Array.isArray(value.measurements)) {
    throw new Error(`bench/zones/main.ts wrote no measurements to ${options.jsonPath}`);
  }
  for (const m of value.measurements as Measurement[]) {
    if (m.family !== "zones" || typeof m.job !== "string" || typeof m.target !== "string") {
      throw new Error(`bench/zones/main.ts wrote a bad measurement: ${JSON.stringify(m)}`);
    }
  }
  return value;
}
