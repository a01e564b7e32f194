// The app without a socket (app.request): routing, zod validation, the token rules and the
// metrics formatting, on a context with stub actions.
import assert from "node:assert/strict";
import { Logger } from "../log.ts";
import { FsError } from "../fs_error.ts";
import { MetricsRegistry } from "./metrics.ts";
import { createHttpApp, type HttpContext, parseListen } from "./server.ts";

const TOKEN = "0123456789abcdef-token";

function context(overrides: Partial<HttpContext> = {}): HttpContext & { dropped: string[] } {
  const dropped: string[] = [];
  const metrics = new MetricsRegistry({ node: "n1", mountpoint: "/mnt/x" });
  let count = 0;
  metrics.counter("skyfs_test_requests_total", "A test counter.", () => ++count);
  metrics.histogram("skyfs_test_duration_seconds", "A test histogram.", [0.1, 1], () => [
    { labels: { op: "read" }, cumulative: [1, 3, 4], sum: 2.5 },
  ]);
  return {
    kind: "mount",
    node: "n1",
    mountpoint: "/mnt/x",
    metrics,
    logger: new Logger(() => {}),
    status: () => Promise.resolve({ kind: "mount" }),
    ready: () => Promise.resolve([{ name: "mounted", ok: true }]),
    admin: {
      dropCache: (path) => {
        if (path === "missing") return Promise.reject(new FsError("ENOENT", "no missing"));
        dropped.push(path);
        return Promise.resolve({ path, chunks: 1 });
      },
      openFiles: () => ({ files: [], handles: [] }),
    },
    token: TOKEN,
    ...overrides,
    dropped,
  };
}

const auth = { authorization: `Bearer ${TOKEN}`, "content-type": "application/json" };

Deno.test("parseListen takes HOST:PORT, [v6]:PORT and off, and names bad input", () => {
  assert.deepEqual(parseListen("127.0.0.1:0"), { hostname: "127.0.0.1", port: 0 });
  assert.deepEqual(parseListen("[::1]:9570"), { hostname: "::1", port: 9570 });
  assert.equal(parseListen("off"), "off");
  for (const bad of ["9570", "host:99999", "a:b", ""]) {
    assert.throws(() => parseListen(bad), /--http ".*" is not HOST:PORT \(port 0-65535\) or off/);
  }
});

Deno.test("/metrics is the Prometheus text format with the constant labels", async () => {
  const app = createHttpApp(context());
  const response = await app.request("/metrics");
  assert.equal(response.status, 200);
  assert.match(response.headers.get("content-type")!, /^text\/plain; version=0\.0\.4/);
  const text = await response.text();
  assert.match(text, /^# TYPE skyfs_test_requests_total counter$/m);
  assert.match(text, /^skyfs_test_requests_total\{node="n1",mountpoint="\/mnt\/x"\} 1$/m);
  assert.match(text, /^# TYPE skyfs_test_duration_seconds histogram$/m);
  assert.match(text, /^skyfs_test_duration_seconds_bucket\{op="read",le="1",node="n1",/m);
  assert.match(text, /^skyfs_test_duration_seconds_bucket\{op="read",le="\+Inf".*\} 4$/m);
  assert.match(text, /^skyfs_test_duration_seconds_count\{op="read".*\} 4$/m);
  assert.match(text, /^skyfs_test_duration_seconds_sum\{op="read".*\} 2\.5$/m);
  // Collected at scrape time: the second scrape reads the counter again.
  assert.match(
    await (await app.request("/metrics")).text(),
    /^skyfs_test_requests_total\{.*\} 2$/m,
  );
});

Deno.test("/readyz answers 503 with the failing checks' reasons", async () => {
  const app = createHttpApp(context({
    ready: () =>
      Promise.resolve([
        { name: "mounted", ok: true },
        { name: "metadata", ok: false, reason: "no answer within 2000 ms" },
      ]),
  }));
  const response = await app.request("/readyz");
  assert.equal(response.status, 503);
  const body = await response.json();
  assert.equal(body.ready, false);
  assert.equal(body.reason, "metadata: no answer within 2000 ms");
});

Deno.test("admin: bad bodies are 400 naming the field", async () => {
  const ctx = context();
  const app = createHttpApp(ctx);
  const cases: [string, string, string][] = [
    ["/api/v1/admin/drop-cache", "{}", "path"],
    ["/api/v1/admin/drop-cache", '{"path": 7}', "path"],
    ["/api/v1/admin/drop-cache", '{"path": ""}', "path"],
    ["/api/v1/admin/drop-cache", '{"path": "a", "extra": 1}', "extra"],
    ["/api/v1/admin/drop-cache", "not json", "(body)"],
    ["/api/v1/admin/log-level", '{"level": "loud"}', "level"],
    ["/api/v1/admin/snapshot", '{"now": true}', "now"],
  ];
  for (const [path, body, field] of cases) {
    const response = await app.request(path, { method: "POST", headers: auth, body });
    assert.equal(response.status, 400, `${path} ${body}`);
    const json = await response.json();
    assert.equal(json.field, field, `${path} ${body}: ${JSON.stringify(json)}`);
    assert.ok(json.error.startsWith(`invalid field "${field}"`), json.error);
  }
  assert.deepEqual(ctx.dropped, []);
});

Deno.test("admin: changing actions need the bearer token", async () => {
  const ctx = context();
  const app = createHttpApp(ctx);
  const body = '{"path": "a/b"}';
  const none = await app.request("/api/v1/admin/drop-cache", { method: "POST", body });
  assert.equal(none.status, 401);
  assert.equal(none.headers.get("www-authenticate"), 'Bearer realm="skyfs"');
  assert.match((await none.json()).error, /needs Authorization: Bearer <token>/);
  const wrong = await app.request("/api/v1/admin/drop-cache", {
    method: "POST",
    headers: { authorization: "Bearer not-the-token" },
    body,
  });
  assert.equal(wrong.status, 403);
  assert.equal((await wrong.json()).error, "wrong token");
  assert.deepEqual(ctx.dropped, []);
  const good = await app.request("/api/v1/admin/drop-cache", {
    method: "POST",
    headers: auth,
    body,
  });
  assert.equal(good.status, 200);
  assert.deepEqual(await good.json(), { path: "a/b", chunks: 1 });
  assert.deepEqual(ctx.dropped, ["a/b"]);
  const missing = await app.request("/api/v1/admin/drop-cache", {
    method: "POST",
    headers: auth,
    body: '{"path": "missing"}',
  });
  assert.equal(missing.status, 404);
  assert.equal((await missing.json()).errno, "ENOENT");
});

Deno.test("admin: without a configured token changing actions say how to configure one", async () => {
  const ctx = context({ token: undefined });
  const app = createHttpApp(ctx);
  const response = await app.request("/api/v1/admin/log-level", {
    method: "POST",
    headers: { authorization: "Bearer anything" },
    body: '{"level": "debug"}',
  });
  assert.equal(response.status, 403);
  assert.match((await response.json()).error, /no token is configured.*--http-token-file FILE/);
  assert.equal(ctx.logger.level, "info");
  // Reading is not changing: open-files and the log level answer without a token.
  assert.equal((await app.request("/api/v1/admin/open-files")).status, 200);
  assert.deepEqual(await (await app.request("/api/v1/admin/log-level")).json(), { level: "info" });
});

Deno.test("admin: log level changes; an action the process lacks is 404 with the reason", async () => {
  const ctx = context();
  const app = createHttpApp(ctx);
  const response = await app.request("/api/v1/admin/log-level", {
    method: "POST",
    headers: auth,
    body: '{"level": "debug"}',
  });
  assert.deepEqual(await response.json(), { level: "debug", previous: "info" });
  assert.equal(ctx.logger.level, "debug");
  const snapshot = await app.request("/api/v1/admin/snapshot", { method: "POST", headers: auth });
  assert.equal(snapshot.status, 404);
  assert.equal((await snapshot.json()).error, "snapshot is not available on a mount process");
});
