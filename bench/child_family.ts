/**
 * A bench family measured by a child process (bench/meta_wan/main.ts, bench/zones/main.ts): runs
 * `deno run -A ENTRY ARGS --json PATH` with a time limit, and reads back the measurements it wrote,
 * checked to be of `family`.
 * @module
 */

import { fileURLToPath } from "node:url";
import type { Measurement } from "./model.ts";

export interface ChildFamilyResult {
  baseline: string;
  measurements: Measurement[];
}

/** Runs `entry` (a URL of a main.ts) as a child and returns its figures; throws naming it. */
export async function runChildFamily(
  entry: URL,
  family: string,
  args: string[],
  options: { jsonPath: string; timeoutMs: number },
): Promise<ChildFamilyResult> {
  const path = fileURLToPath(entry);
  const name = `bench/${path.split("/bench/").pop()}`;
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", path, ...args, "--json", options.jsonPath],
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
    throw new Error(`${name} exited with ${output.code}: ${last}`);
  }
  const value = JSON.parse(await Deno.readTextFile(options.jsonPath)) as ChildFamilyResult;
  if (typeof value.baseline !== "string" || !Array.isArray(value.measurements)) {
    throw new Error(`${name} wrote no measurements to ${options.jsonPath}`);
  }
  for (const m of value.measurements) {
    if (m.family !== family || typeof m.job !== "string" || typeof m.target !== "string") {
      throw new Error(`${name} wrote a bad measurement: ${JSON.stringify(m)}`);
    }
  }
  return value;
}
