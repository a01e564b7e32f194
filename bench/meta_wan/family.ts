/**
 * The "wan" family of `deno task bench`: runs bench/meta_wan/main.ts (CURP beside etcd 3.4 behind
 * WAN delay proxies, then on loopback) as a child and returns its figures as Measurements.
 * Runs only when named (`--only wan`): a full run takes a few minutes and needs /usr/bin/etcd for
 * the etcd column.
 * @module
 */

import { fileURLToPath } from "node:url";
import type { Measurement, Mode } from "../model.ts";

const ENTRY = fileURLToPath(new URL("./main.ts", import.meta.url));

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

export interface WanFamilyResult {
  baseline: string;
  measurements: Measurement[];
}

export async function runWanFamily(
  mode: Mode,
  options: { jsonPath: string; timeoutMs: number },
): Promise<WanFamilyResult> {
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
    throw new Error(`bench/meta_wan/main.ts exited with ${output.code}: ${last}`);
  }
  const value = JSON.parse(await Deno.readTextFile(options.jsonPath)) as WanFamilyResult;
  if (typeof value.baseline !== "string" || !Array.isArray(value.measurements)) {
    throw new Error(`bench/meta_wan/main.ts wrote no measurements to ${options.jsonPath}`);
  }
  for (const m of value.measurements) {
    if (m.family !== "wan" || typeof m.job !== "string" || typeof m.target !== "string") {
      throw new Error(`bench/meta_wan/main.ts wrote a bad measurement: ${JSON.stringify(m)}`);
    }
  }
  return value;
}
