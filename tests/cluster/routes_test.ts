/**
 * The zone route keys (issue 15 point 5) refuse bad values with skyfs's own one-line message and
 * a non-zero exit, before anything is mounted or any store contacted: cluster.peer_routes,
 * cluster.backend_routes, cluster.zone_timeout_ms, peer.timeout_ms.
 * @module
 */

import assert from "node:assert/strict";
import { MOD_TS } from "../_harness.ts";

async function mount(args: string[], env: Record<string, string> = {}) {
  const dir = await Deno.makeTempDir({ prefix: "skyfs-routes-" });
  try {
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        MOD_TS,
        "mount",
        dir,
        "--backend",
        `${dir}/b`,
        "--meta",
        "curp://127.0.0.1:1",
      ]
        .concat(args),
      env,
      stdout: "piped",
      stderr: "piped",
    }).output();
    return { code: out.code, stderr: new TextDecoder().decode(out.stderr).trim() };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

function assertOneLine(result: { code: number; stderr: string }, pattern: RegExp): void {
  assert.notEqual(result.code, 0, "exit code 0 for a bad value");
  const lines = result.stderr.split("\n").filter((l) => l.trim());
  assert.equal(lines.length, 1, `expected one line, got:\n${result.stderr}`);
  assert.match(lines[0], pattern);
}

Deno.test("zone routes and timeouts: bad values get one line naming the key and the form", async () => {
  assertOneLine(
    await mount(["--peer-routes", "z2=nohost"]),
    /^skyfs: --peer-routes "z2=nohost": cluster\.peer_routes must be ZONE=HOST:PORT\[,ZONE=HOST:PORT\.\.\.\]$/,
  );
  assertOneLine(
    await mount(["--backend-routes", "Z2=http://x"]),
    /^skyfs: --backend-routes "Z2=http:\/\/x": cluster\.backend_routes must be ZONE=URL/,
  );
  assertOneLine(
    await mount([], { SKYFS_CLUSTER_ZONE_TIMEOUT_MS: "5" }),
    /^skyfs: SKYFS_CLUSTER_ZONE_TIMEOUT_MS="5": cluster\.zone_timeout_ms must be a whole number of milliseconds from 100/,
  );
  assertOneLine(
    await mount([], { SKYFS_PEER_TIMEOUT_MS: "x" }),
    /^skyfs: SKYFS_PEER_TIMEOUT_MS="x": peer\.timeout_ms must be/,
  );
});
