/** The dashboard's routes through `app.request` (the page and every asset served by skyfs, the
 * JSON points), and its cluster view against another "node" listening on a real port. */

import assert from "node:assert/strict";
import { Hono } from "hono";
import { addDashboard } from "./dashboard.ts";
import { sampleMetrics } from "./_sample_metrics.ts";

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

Deno.test("dashboard: the page and its assets come from skyfs, no other origin", async () => {
  const app = new Hono();
  const stop = addDashboard(app, { metricsText: () => Promise.resolve(sampleMetrics(1)) });
  try {
    const page = await app.request("/");
    assert.equal(page.status, 200);
    const html = await page.text();
    // Every script and style the page loads is a path on this server.
    const assets = [...html.matchAll(/<(?:script src|link rel="stylesheet" href)="([^"]+)"/g)]
      .map((m) => m[1]);
    assert.equal(assets.length, 4, html);
    for (const asset of assets) {
      assert.ok(asset.startsWith("/dashboard/"), `${asset} is not served by skyfs`);
      const response = await app.request(asset);
      assert.equal(response.status, 200, asset);
      const body = await response.text();
      // skyfs's own page, script and style name no other origin (uPlot's only URL is a comment).
      if (!asset.includes("uPlot")) assert.doesNotMatch(body, /https?:\/\//, asset);
    }
    assert.doesNotMatch(html, /https?:\/\//);
    assert.equal((await app.request("/dashboard/uPlot.LICENSE.txt")).status, 200);
    const uplot = await (await app.request("/dashboard/uPlot.iife.min.js")).text();
    assert.match(uplot, /uPlot/);
  } finally {
    stop();
  }
});

Deno.test("dashboard: points of per-second figures, and bad input named", async () => {
  let k = 1;
  const app = new Hono();
  const stop = addDashboard(app, {
    metricsText: () => Promise.resolve(sampleMetrics(k++)),
  }, { intervalMs: 50 });
  try {
    assert.deepEqual((await (await app.request("/api/v1/dashboard")).json()).points, []);
    await sleep(400);
    const body = await (await app.request("/api/v1/dashboard")).json();
    assert.equal(body.node, "a");
    assert.equal(body.mountpoint, "/mnt/a");
    assert.equal(body.cluster, false);
    assert.ok(body.points.length >= 2, JSON.stringify(body));
    assert.ok(body.points[0].fuse.all.perSecond > 0);
    const last = body.points.at(-1).timeMs;
    const later = await (await app.request(`/api/v1/dashboard?after=${last}`)).json();
    assert.ok(later.points.every((p: { timeMs: number }) => p.timeMs > last));
    const bad = await app.request("/api/v1/dashboard?after=yesterday");
    assert.equal(bad.status, 400);
    assert.match((await bad.json()).error, /^after: /);
    const single = await (await app.request("/api/v1/cluster")).json();
    assert.deepEqual(single, { cluster: false, nodes: [] });
  } finally {
    stop();
  }
});

Deno.test("dashboard: the cluster table scrapes every live node's /metrics", async () => {
  let remote = 1;
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    (request) =>
      new URL(request.url).pathname === "/metrics"
        ? new Response(sampleMetrics(remote++).replaceAll('node="a"', 'node="b"'))
        : new Response("no", { status: 404 }),
  );
  let local = 1;
  const app = new Hono();
  const stop = addDashboard(app, {
    metricsText: () => Promise.resolve(sampleMetrics(local++)),
    nodeId: "a",
    members: () =>
      Promise.resolve([
        { id: "b", http: `127.0.0.1:${server.addr.port}` },
        { id: "a", http: "127.0.0.1:1" },
        { id: "c" },
      ]),
  }, { intervalMs: 50 });
  try {
    await app.request("/api/v1/cluster");
    await sleep(400);
    const body = await (await app.request("/api/v1/cluster")).json();
    assert.equal(body.cluster, true);
    assert.deepEqual(body.nodes.map((n: { id: string }) => n.id), ["a", "b", "c"]);
    const [a, b, c] = body.nodes;
    assert.equal(a.self, true);
    assert.ok(a.figures.fuse.all.perSecond > 0);
    assert.equal(b.self, false);
    assert.equal(b.figures.node, "b");
    assert.ok(b.figures.fuse.all.perSecond > 0);
    assert.match(c.error, /no HTTP endpoint/);
  } finally {
    stop();
    await server.shutdown();
  }
});
