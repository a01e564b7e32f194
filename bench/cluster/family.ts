/**
 * The "cluster" family of `deno task bench`: runs bench/cluster/main.ts (node B reading a file
 * written on node A from its local cache, from A as a peer in its own process, and from the
 * backend, beside loopback TCP) as a child and returns its figures as Measurements.
 * @module
 */

import { fileURLToPath } from "node:url";
import type { Measurement, Mode } from "../model.ts";
import { outputWithin } from "../children.ts";

const ENTRY = fileURLToPath(new URL("./main.ts", import.meta.url));

/** Full as in src/cluster/README.md's table; tiny only proves it runs. */
const MODE_ARGS: Record<Mode, string[]> = {
  full: ["--mib", "128", "--rounds", "5"],
  quick: ["--mib", "64", "--rounds", "3"],
  tiny: ["--mib", "8", "--rounds", "1"],
};

export interface ClusterFamilyResult {
  baseline: string;
  measurements: Measurement[];
}

export async function runClusterFamily(
  mode: Mode,
  options: { jsonPath: string; timeoutMs: number },
): Promise<ClusterFamilyResult> {
  const { output, timedOut } = await outputWithin(Deno.execPath(), {
    args: ["run", "-A", ENTRY, ...MODE_ARGS[mode], "--json", options.jsonPath],
    stdin: "null",
    stdout: "inherit",
    stderr: "piped",
    timeoutMs: options.timeoutMs,
  });
  if (output.code !== 0) {
    const last = new TextDecoder().decode(output.stderr).trim().split("\n").pop() ?? "";
    const why = timedOut ? `timed out after ${options.timeoutMs} ms` : `exited with ${output.code}`;
    throw new Error(`bench/cluster/main.ts ${why}: ${last}`);
  }
  const value = JSON.parse(await Deno.readTextFile(options.jsonPath)) as ClusterFamilyResult;
  if (typeof value.baseline !== "string" || !Array.isArray(value.measurements)) {
    throw new Error(`bench/cluster/main.ts wrote no measurements to ${options.jsonPath}`);
  }
  for (const m of value.measurements) {
    if (m.family !== "cluster" || typeof m.job !== "string" || typeof m.value !== "number") {
      throw new Error(`bench/cluster/main.ts wrote a bad measurement: ${JSON.stringify(m)}`);
    }
  }
  return value;
}
