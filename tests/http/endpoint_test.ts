// The mount daemon's HTTP endpoint through a real port: health, readiness, status, every metric
// of the contract (checked by promtool while the mount is under load), the admin API with and
// without its token, and the --http flag's forms.
import assert from "node:assert/strict";
import { join } from "node:path";
import { makeTempDir, runSkyfs, startMount } from "../_harness.ts";
import {
  declaredMetrics,
  fetchJson,
  MOUNT_METRICS,
  promtoolCheck,
  sampleValue,
  startHttpMount,
} from "./_http.ts";

const TOKEN = "test-token-0123456789abcdef";

async function tokenFile(): Promise<string> {
  const dir = await makeTempDir("http-token");
  const file = join(dir, "token");
  await Deno.writeTextFile(file, `${TOKEN}\n`);
  return file;
}

/** Writes and reads small files on `dir` until `stop.done`; resolves to the files written. */
async function load(dir: string, stop: { done: boolean }): Promise<number> {
  let n = 0;
  while (!stop.done) {
    const path = join(dir, `f${n % 50}`);
    await Deno.writeTextFile(path, `content ${n}`);
    assert.equal(await Deno.readTextFile(path), `content ${n}`);
    n++;
  }
  return n;
}

Deno.test("a mount serves health, status and every contract metric (promtool-clean) under load", async () => {
  // Without passthrough every read and write reaches the daemon (and its byte counters).
  const { mount, url } = await startHttpMount({ extraArgs: ["--passthrough", "off"] });
  const stop = { done: false };
  try {
    const loading = load(mount.mountpoint, stop);
    await new Promise((resolve) => setTimeout(resolve, 1500));
    const health = await fetchJson(`${url}/healthz`);
    assert.equal(health.status, 200);
    assert.equal(health.body.ok, true);
    assert.equal(health.body.kind, "mount");
    const ready = await fetchJson(`${url}/readyz`);
    assert.equal(ready.status, 200, JSON.stringify(ready.body));
    assert.deepEqual(
      (ready.body.checks as { name: string }[]).map((c) => c.name),
      ["mounted", "metadata"],
    );
    const status = await fetchJson(`${url}/api/v1/status`);
    assert.equal(status.body.mountpoint, mount.mountpoint);
    assert.equal(status.body.meta, "embedded");
    const text = await (await fetch(`${url}/metrics`)).text();
    stop.done = true;
    const files = await loading;
    await promtoolCheck(text);
    const declared = declaredMetrics(text);
    const missing = MOUNT_METRICS.filter((name) => !declared.has(name));
    assert.deepEqual(missing, [], `metrics missing from a mount's /metrics`);
    const labels = { node: "local", mountpoint: mount.mountpoint };
    const writes = sampleValue(text, "skyfs_fuse_requests_total", { ...labels, op: "write" });
    assert.ok(writes !== undefined && writes > 0, `write requests: ${writes}`);
    assert.ok(files > 0);
    const count = sampleValue(text, "skyfs_fuse_request_duration_seconds_count", { op: "write" });
    assert.equal(count, writes, "the histogram counts every answered request");
    assert.ok(sampleValue(text, "skyfs_fuse_write_bytes_total")! > 0);
    assert.ok(sampleValue(text, "skyfs_fuse_read_bytes_total")! > 0);
    assert.ok(sampleValue(text, "skyfs_meta_transactions_total")! > 0);
    assert.ok(sampleValue(text, "process_resident_memory_bytes")! > 0);
    assert.ok(sampleValue(text, "skyfs_heap_used_bytes")! > 0);
  } finally {
    stop.done = true;
    await mount.dispose();
  }
});

Deno.test("admin API on a mount: open files, log level, drop-cache, token rules", async () => {
  const { mount, url } = await startHttpMount({
    extraArgs: ["--http-token-file", await tokenFile()],
  });
  const auth = { authorization: `Bearer ${TOKEN}` };
  try {
    await Deno.writeTextFile(join(mount.mountpoint, "held"), "x");
    const held = await Deno.open(join(mount.mountpoint, "held"));
    try {
      const open = await fetchJson(`${url}/api/v1/admin/open-files`);
      assert.equal(open.status, 200);
      const files = open.body.files as { ino: number; handles: number }[];
      const ino = Deno.statSync(join(mount.mountpoint, "held")).ino;
      assert.ok(files.some((f) => f.ino === ino && f.handles >= 1), JSON.stringify(open.body));
    } finally {
      held.close();
    }

    const noToken = await fetchJson(`${url}/api/v1/admin/log-level`, {
      method: "POST",
      body: '{"level": "debug"}',
    });
    assert.equal(noToken.status, 401);
    assert.equal(noToken.body.error, "this action needs Authorization: Bearer <token>");
    const wrong = await fetchJson(`${url}/api/v1/admin/log-level`, {
      method: "POST",
      headers: { authorization: "Bearer wrong-token-0123456789" },
      body: '{"level": "debug"}',
    });
    assert.equal(wrong.status, 403);
    const bad = await fetchJson(`${url}/api/v1/admin/log-level`, {
      method: "POST",
      headers: auth,
      body: '{"level": "verbose"}',
    });
    assert.equal(bad.status, 400);
    assert.equal(bad.body.field, "level");
    assert.match(bad.body.error as string, /^invalid field "level": /);
    assert.deepEqual((await fetchJson(`${url}/api/v1/admin/log-level`)).body, { level: "info" });
    const changed = await fetchJson(`${url}/api/v1/admin/log-level`, {
      method: "POST",
      headers: auth,
      body: '{"level": "error"}',
    });
    assert.deepEqual(changed.body, { level: "error", previous: "info" });
    assert.deepEqual((await fetchJson(`${url}/api/v1/admin/log-level`)).body, { level: "error" });

    const badPath = await fetchJson(`${url}/api/v1/admin/drop-cache`, {
      method: "POST",
      headers: auth,
      body: '{"file": "held"}',
    });
    assert.equal(badPath.status, 400);
    assert.match(badPath.body.error as string, /^invalid field "(path|file)"/);
    const missing = await fetchJson(`${url}/api/v1/admin/drop-cache`, {
      method: "POST",
      headers: auth,
      body: '{"path": "no/such/file"}',
    });
    assert.equal(missing.status, 404);
    assert.equal(missing.body.errno, "ENOENT");
    const single = await fetchJson(`${url}/api/v1/admin/drop-cache`, {
      method: "POST",
      headers: auth,
      body: '{"path": "held"}',
    });
    assert.equal(single.status, 400);
    assert.match(single.body.error as string, /a single-node mount has no cache to drop/);
    const snapshot = await fetchJson(`${url}/api/v1/admin/snapshot`, {
      method: "POST",
      headers: auth,
    });
    assert.equal(snapshot.status, 404);
    assert.equal(snapshot.body.error, "snapshot is not available on a mount process");
  } finally {
    await mount.dispose();
  }
});

Deno.test("without a token a mount refuses changing actions and says how to configure one", async () => {
  const { mount, url } = await startHttpMount();
  try {
    const refused = await fetchJson(`${url}/api/v1/admin/drop-cache`, {
      method: "POST",
      headers: { authorization: `Bearer ${TOKEN}` },
      body: '{"path": "x"}',
    });
    assert.equal(refused.status, 403);
    assert.match(refused.body.error as string, /no token is configured.*--http-token-file FILE/);
  } finally {
    await mount.dispose();
  }
});

Deno.test("--http off serves no endpoint; a bad --http is one line and exit 1", async () => {
  const mount = await startMount({ extraArgs: ["--http", "off"] });
  try {
    await Deno.writeTextFile(join(mount.mountpoint, "f"), "x");
    assert.doesNotMatch(mount.stderr(), /http: listening/);
  } finally {
    await mount.dispose();
  }
  const dir = await makeTempDir("http-bad");
  try {
    const bad = await runSkyfs(["mount", dir, "--data", join(dir, "..", "x"), "--http", "9570"]);
    assert.equal(bad.code, 1);
    assert.equal(bad.stderr.trim(), 'skyfs: --http "9570" is not HOST:PORT (port 0-65535) or off');
    const short = join(dir, "..", "short-token");
    await Deno.writeTextFile(short, "abc\n");
    const weak = await runSkyfs([
      "mount",
      dir,
      "--data",
      join(dir, "..", "x"),
      "--http-token-file",
      short,
    ]);
    assert.equal(weak.code, 1);
    assert.match(weak.stderr, /the token must be at least 16 characters/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
