/** Test helper: (re)builds lib/uring when its outputs are missing or older than its sources. */

const libDir = new URL("../../lib/uring/", import.meta.url).pathname;
const buildDir = `${libDir}build/`;
export const denyIoUringPath = `${buildDir}deny_io_uring`;
const outputs = [`${buildDir}libskyfs_uring.so`, denyIoUringPath];
const sources = ["skyfs_uring.c", "skyfs_uring.h", "deny_io_uring.c", "build.sh"].map((name) =>
  `${libDir}${name}`
);

async function mtime(path: string): Promise<number> {
  try {
    return (await Deno.stat(path)).mtime?.getTime() ?? 0;
  } catch {
    return -1;
  }
}

/**
 * Runs lib/uring/build.sh unless libskyfs_uring.so and deny_io_uring exist and are newer than
 * every source, as scripts/setup.sh would: a stale library (another ABI version) is rebuilt
 * instead of failing every test.
 */
export async function ensureUringBuilt(): Promise<void> {
  const built = await Promise.all(outputs.map(mtime));
  const changed = await Promise.all(sources.map(mtime));
  if (built.every((t) => t >= 0) && Math.min(...built) >= Math.max(...changed)) return;
  const out = await new Deno.Command("bash", { args: [`${libDir}build.sh`] }).output();
  if (!out.success) {
    throw new Error(`lib/uring/build.sh failed: ${new TextDecoder().decode(out.stderr)}`);
  }
}
