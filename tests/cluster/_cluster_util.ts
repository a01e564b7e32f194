/**
 * Helpers of the cluster suites: random data, a writer that counts a file as acknowledged only
 * once its fsync returned, and `skyfs status` output.
 * @module
 */

import { join } from "node:path";

/**
 * The metadata store of the suites that run on either (cluster_test, consistency_test,
 * errors_test, locks_test): SKYFS_TEST_META = curp | etcd, unset = curp. scripts/test.sh runs them
 * on CURP in its tests-cluster step and on one etcd member in tests-etcd.
 */
export function clusterStore(): "curp" | "etcd" {
  const value = Deno.env.get("SKYFS_TEST_META") || "curp";
  if (value !== "curp" && value !== "etcd") {
    throw new RangeError(`SKYFS_TEST_META="${value}" is not curp or etcd`);
  }
  return value;
}

export function canRunCluster(needEtcd = false): boolean {
  try {
    Deno.statSync("/dev/fuse");
    if (needEtcd) Deno.statSync("/usr/bin/etcd");
    return Deno.uid() === 0;
  } catch {
    return false;
  }
}

export function random(n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i += 65536) crypto.getRandomValues(out.subarray(i, i + 65536));
  return out;
}

export function same(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Poll `check` every 50 ms until it is true; throws naming `what` after `timeoutMs`. */
export async function until(
  check: () => boolean | Promise<boolean>,
  what: string,
  timeoutMs = 30_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`${what}: not true after ${timeoutMs} ms`);
    await sleep(50);
  }
}

/** create + write + fsync + close; resolves only when fsync returned success. The fsync, not
 * the close, is the acknowledgment: Deno drops close(2)'s result. */
export async function writeSynced(path: string, data: Uint8Array): Promise<void> {
  const file = await Deno.open(path, { write: true, create: true, truncate: true });
  try {
    let done = 0;
    while (done < data.length) done += await file.write(data.subarray(done));
    await file.sync();
  } finally {
    file.close();
  }
}

/** `skyfs status --meta URL` (with `env` added to this process's): its stdout and stderr, and
 * its exit code. */
export async function skyfsStatus(
  meta: string,
  env: Record<string, string> = {},
): Promise<{ code: number; text: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", join(import.meta.dirname!, "../../mod.ts"), "status", "--meta", meta],
    env,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decode = (b: Uint8Array) => new TextDecoder().decode(b);
  return { code: out.code, text: decode(out.stdout) + decode(out.stderr) };
}
