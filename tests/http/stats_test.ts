/**
 * `skyfs stats` against a real mount under load: by mount point (the address the daemon
 * published under /run/skyfs) and by HOST:PORT, three lines with non-zero FUSE operations, each
 * within 100 characters; and bad targets (nothing listening, not a mount, a mount with
 * `--http off`) give skyfs's own one-line error and a non-zero exit. Needs root and /dev/fuse.
 * @module
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { runSkyfs, startMount } from "../_harness.ts";
import { startHttpMount } from "./_http.ts";
import { freePort } from "../../src/cluster/local_cluster.ts";
import { startLoad, stopLoad } from "./_load.ts";

/** The stats lines (after the title and the two header lines), checked for shape. */
function statsLines(stdout: string, count: number): string[] {
  const lines = stdout.trimEnd().split("\n");
  assert.match(lines[0], /^skyfs stats: http:\/\/127\.0\.0\.1:\d+\/metrics \(node local, /);
  assert.match(lines[1], /^-+fuse-+ -+metadata/);
  assert.match(lines[2], /ops +ms +err +read +write\|/);
  assert.equal(lines.length, 3 + count, stdout);
  // The columns fit 100 characters (the title names a path of any length).
  for (const line of lines.slice(1)) {
    assert.ok(line.length <= 100, `${line.length} characters: ${line}`);
  }
  return lines.slice(3);
}

/** The first column (FUSE operations per second) as shown. */
const opsOf = (line: string) => line.trim().split(/\s+/)[0];

Deno.test("skyfs stats: a mount under load, by mount point and by address", async () => {
  const { mount, url } = await startHttpMount();
  const load = startLoad(mount.mountpoint);
  try {
    const byMount = await runSkyfs(["stats", mount.mountpoint, "--count", "3"], {
      timeoutMs: 60_000,
    });
    assert.equal(byMount.code, 0, byMount.stderr);
    const lines = statsLines(byMount.stdout, 3);
    assert.ok(
      lines.some((line) => !["0", "-"].includes(opsOf(line))),
      `no line shows FUSE operations:\n${byMount.stdout}`,
    );
    const address = new URL(url).host;
    const byAddress = await runSkyfs(["stats", address, "--count", "2", "--interval", "0.5"], {
      timeoutMs: 60_000,
    });
    assert.equal(byAddress.code, 0, byAddress.stderr);
    assert.ok(statsLines(byAddress.stdout, 2).some((line) => opsOf(line) !== "0"));
  } finally {
    await stopLoad(load);
    await mount.dispose();
  }
});

Deno.test("skyfs stats: bad targets give one line naming the problem and the fix", async () => {
  const port = freePort();
  const refused = await runSkyfs(["stats", `127.0.0.1:${port}`, "--count", "1"]);
  assert.equal(refused.code, 1);
  assert.equal(
    refused.stderr.trim(),
    `skyfs: cannot read http://127.0.0.1:${port}/metrics: connection refused; is the daemon ` +
      "running with its HTTP endpoint there (`skyfs mount ... --http HOST:PORT` prints it at start)?",
  );
  const dir = await Deno.makeTempDir({ prefix: "skyfs-stats-" });
  try {
    const notMount = await runSkyfs(["stats", dir]);
    assert.equal(notMount.code, 1);
    assert.equal(
      notMount.stderr.trim(),
      `skyfs: "${dir}" is not a mount point; pass a skyfs mount point or the daemon's HOST:PORT`,
    );
    const badCount = await runSkyfs(["stats", "127.0.0.1:1", "--count", "many"]);
    assert.equal(badCount.code, 1);
    assert.equal(
      badCount.stderr.trim(),
      'skyfs: --count "many": stats.count must be a whole number from 1 to 1000000000',
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  const off = await startMount({ extraArgs: ["--http", "off"] });
  try {
    const result = await runSkyfs(["stats", off.mountpoint, "--count", "1"]);
    assert.equal(result.code, 1);
    const lines = result.stderr.trim().split("\n");
    assert.equal(lines.length, 1, result.stderr);
    assert.match(
      lines[0],
      new RegExp(
        `^skyfs: the daemon of "${off.mountpoint}" published no HTTP endpoint \\(${
          join("/run/skyfs", "http-")
        }\\d+-\\d+\\.json is missing: started with --http off\\?\\); remount with --http ` +
          "HOST:PORT or pass that address$",
      ),
    );
  } finally {
    await off.dispose();
  }
});
