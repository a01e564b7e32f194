/** Test helper: builds lib/uring when its outputs are missing, as scripts/setup.sh would. */

const buildDir = new URL("../../lib/uring/build/", import.meta.url).pathname;
export const denyIoUringPath = `${buildDir}deny_io_uring`;

/** Runs lib/uring/build.sh unless libskyfs_uring.so and deny_io_uring exist. */
export async function ensureUringBuilt(): Promise<void> {
  const have = await Promise.all(
    [`${buildDir}libskyfs_uring.so`, denyIoUringPath].map((path) =>
      Deno.stat(path).then(() => true, () => false)
    ),
  );
  if (have.every(Boolean)) return;
  const script = new URL("../../lib/uring/build.sh", import.meta.url).pathname;
  const out = await new Deno.Command("bash", { args: [script] }).output();
  if (!out.success) {
    throw new Error(`lib/uring/build.sh failed: ${new TextDecoder().decode(out.stderr)}`);
  }
}
