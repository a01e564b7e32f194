/**
 * `deno task sim`: run the CURP simulator over many seeds, or replay one seed exactly.
 *
 *   deno run -A src/meta/curp/sim_main.ts --seeds 500 [--from 1]
 *   deno run -A src/meta/curp/sim_main.ts --seed 1234 [--verbose]
 *   --merges: clients also send merges (MetaKV `merge`, some behind compares that ignore them)
 *   --early-ack: proposal replies leave once written, crashes are kill -9 (written data survives)
 *   --own-conflicts: each client mostly reuses its previous key (consecutive conflicting commands
 *     of one client), gets through the log, leader crashes ten times as often
 *   --batches: a third of the writes go as batch commands of 2-4 operations (CurpKV's group commit)
 *   --count-unsynced: a wrong variant that must fail: a leader counts its own entries toward a
 *     commit before they are durable (its appends leave before its disk write)
 * Exit code 1 when any seed broke an invariant; the failing seeds are printed for replay.
 * @module
 */

import { parseArgs } from "node:util";
import { simulate } from "./sim.ts";

const USAGE = "usage: deno task sim --seeds N [--from K] | --seed S [--verbose]" +
  " [--merges] [--early-ack] [--own-conflicts] [--batches] [--count-unsynced]";

function parseOptions() {
  try {
    return parseArgs({
      args: Deno.args,
      options: {
        seeds: { type: "string" },
        seed: { type: "string" },
        from: { type: "string", default: "1" },
        verbose: { type: "boolean", default: false },
        merges: { type: "boolean", default: false },
        "early-ack": { type: "boolean", default: false },
        "own-conflicts": { type: "boolean", default: false },
        batches: { type: "boolean", default: false },
        "count-unsynced": { type: "boolean", default: false },
      },
    });
  } catch (e) {
    // parseArgs's own message names the option; one line, the usage, exit 2 (no stack trace).
    console.error(`sim: ${(e as Error).message}; ${USAGE}`);
    Deno.exit(2);
  }
}

if (Deno.args.includes("--help") || Deno.args.includes("-h")) {
  console.log(USAGE);
  Deno.exit(0);
}
const { values } = parseOptions();

function parseCount(name: string, text: string): number {
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n < 0) {
    console.error(`--${name} must be a non-negative integer, got "${text}"`);
    Deno.exit(2);
  }
  return n;
}

const seeds: number[] = [];
if (values.seed !== undefined) seeds.push(parseCount("seed", values.seed));
else {
  const from = parseCount("from", values.from!);
  const count = parseCount("seeds", values.seeds ?? "100");
  for (let i = 0; i < count; i++) seeds.push(from + i);
}

const started = performance.now();
const failed: number[] = [];
let fast = 0,
  slow = 0,
  reads = 0,
  ops = 0,
  elections = 0,
  crashes = 0,
  undecided = 0,
  maxCommitWait = 0;
let snapshotsTaken = 0, snapshotsSent = 0, snapshotPieces = 0;
for (const seed of seeds) {
  const r = simulate(seed, {
    merges: values.merges,
    earlyAck: values["early-ack"],
    ownConflicts: values["own-conflicts"],
    batches: values.batches,
    countUnsynced: values["count-unsynced"],
  });
  fast += r.fast;
  slow += r.slow;
  reads += r.reads;
  ops += r.completed;
  elections += r.elections;
  crashes += r.crashes;
  snapshotsTaken += r.snapshotsTaken;
  snapshotsSent += r.snapshotsSent;
  snapshotPieces += r.snapshotPieces;
  maxCommitWait = Math.max(maxCommitWait, r.commitWait);
  if (r.linearizable === undefined) undecided++;
  if (values.verbose || seeds.length === 1) {
    console.log(JSON.stringify({ ...r, violations: undefined }));
  }
  if (r.violations.length > 0) {
    failed.push(seed);
    console.log(`seed ${seed} (${r.replicas} replicas) FAILED:`);
    for (const v of r.violations) console.log(`  ${v}`);
  }
}
const seconds = ((performance.now() - started) / 1000).toFixed(1);
console.log(
  `${seeds.length} seeds, ${failed.length} failed, ${ops} operations (${fast} fast path, ${slow} slow path, ${reads} reads outside the log), ` +
    `${elections} leader terms, ${crashes} crashes, ${snapshotsTaken} snapshots written, ` +
    `${snapshotsSent} sent to lagging replicas (${snapshotPieces} pieces), ${undecided} histories undecided, ` +
    `longest wait for acknowledged commands to commit ${maxCommitWait} units, ${seconds} s`,
);
if (failed.length > 0) {
  console.log(
    `replay with: deno task sim --seed ${failed[0]}   (failed: ${failed.slice(0, 20).join(" ")})`,
  );
  Deno.exit(1);
}
