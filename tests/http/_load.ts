/**
 * A file-system load for the endpoint tests: a shell loop on the mount, outside the test's own
 * event loop, so the daemon serves real requests while the test reads its figures.
 * @module
 */

/** A shell loop creating, reading and stat-ing small files on `dir` until killed. */
export function startLoad(dir: string): Deno.ChildProcess {
  return new Deno.Command("bash", {
    args: [
      "-c",
      `i=0; while :; do i=$((i+1)); f="$1/load-$((i % 50))"; ` +
      `head -c 65536 /dev/zero > "$f"; cat "$f" > /dev/null; stat "$f" > /dev/null; ` +
      `ls "$1" > /dev/null; done`,
      "load",
      dir,
    ],
    stdout: "null",
    stderr: "null",
  }).spawn();
}

export async function stopLoad(load: Deno.ChildProcess): Promise<void> {
  try {
    load.kill("SIGKILL");
  } catch { /* already gone */ }
  await load.status;
}
