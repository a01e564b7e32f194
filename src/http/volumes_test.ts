// The volume routes without a socket (app.request) on a real Vfs (embedded store, temp dir):
// the contract's status codes, validation naming the field, the token, pagination.
import assert from "node:assert/strict";
import { Logger } from "../log.ts";
import { openFixture } from "../vfs/_testing.ts";
import { MetricsRegistry } from "./metrics.ts";
import { createHttpApp, type HttpContext } from "./server.ts";

const TOKEN = "0123456789abcdef-token";

Deno.test("volume routes: contract status codes, zod fields, token, pagination", async () => {
  const fixture = await openFixture();
  try {
    const ctx: HttpContext = {
      kind: "mount",
      node: "n1",
      metrics: new MetricsRegistry({ node: "n1" }),
      logger: new Logger(() => {}),
      vfs: fixture.vfs,
      status: () => Promise.resolve({}),
      ready: () => Promise.resolve([]),
      admin: {},
      token: TOKEN,
    };
    const app = createHttpApp(ctx);
    const call = async (method: string, path: string, body?: unknown, token = TOKEN) => {
      const response = await app.request(path, {
        method,
        headers: token ? { authorization: `Bearer ${token}` } : {},
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      const text = await response.text();
      return { status: response.status, json: text ? JSON.parse(text) : undefined };
    };
    assert.equal(
      (await call("POST", "/api/v1/volumes", { name: "a", capacityBytes: 1 }, "")).status,
      401,
    );
    const created = await call("POST", "/api/v1/volumes", { name: "a", capacityBytes: 4096 });
    assert.equal(created.status, 201);
    assert.deepEqual(Object.keys(created.json).sort(), [
      "capacityBytes",
      "createdAt",
      "inodes",
      "name",
      "parameters",
      "path",
      "usedBytes",
      "usedInodes",
    ]);
    assert.equal(
      (await call("POST", "/api/v1/volumes", { name: "a", capacityBytes: 4096 })).status,
      200,
    );
    assert.equal(
      (await call("POST", "/api/v1/volumes", { name: "a", capacityBytes: 1 })).status,
      409,
    );
    const extra = await call("POST", "/api/v1/volumes", { name: "b", capacityBytes: 1, size: 2 });
    assert.deepEqual([extra.status, extra.json.field], [400, "size"]);
    const noCapacity = await call("POST", "/api/v1/volumes", { name: "b" });
    assert.deepEqual([noCapacity.status, noCapacity.json.field], [400, "capacityBytes"]);
    const badName = await call("GET", "/api/v1/volumes/UPPER");
    assert.deepEqual([badName.status, badName.json.field], [400, "name"]);
    for (const name of ["b", "c", "d"]) {
      assert.equal(
        (await call("POST", "/api/v1/volumes", { name, capacityBytes: 4096 })).status,
        201,
      );
    }
    const names: string[] = [];
    let start = "";
    for (let pages = 0; pages < 5; pages++) {
      const page = await call("GET", `/api/v1/volumes?limit=3${start ? `&start=${start}` : ""}`);
      assert.equal(page.status, 200);
      names.push(...page.json.volumes.map((v: { name: string }) => v.name));
      if (!page.json.next) break;
      start = page.json.next;
    }
    assert.deepEqual(names, ["a", "b", "c", "d"]);
    const resized = await call("POST", "/api/v1/volumes/a/resize", { capacityBytes: 8192 });
    assert.deepEqual([resized.status, resized.json.capacityBytes], [200, 8192]);
    assert.equal((await call("DELETE", "/api/v1/volumes/a")).status, 204);
    assert.equal((await call("GET", "/api/v1/volumes/a")).status, 404);
    assert.equal((await call("GET", "/api/v1/capacity")).status, 200);
    // A replica has no volumes.
    const replica = createHttpApp({ ...ctx, kind: "replica", vfs: undefined });
    assert.equal((await replica.request("/api/v1/volumes")).status, 404);
  } finally {
    await fixture.cleanup();
  }
});
