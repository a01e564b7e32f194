/**
 * Health and status: `/healthz` (the process and its event loop answer), `/readyz` (every
 * readiness condition of the process holds; 503 with the failing ones otherwise) and
 * `/api/v1/status` (JSON of what `skyfs status` / `skyfs meta status` prints).
 * @module
 */

import type { Hono } from "hono";
import type { HttpContext } from "./server.ts";

const started = Date.now();

export function healthRoutes(app: Hono, ctx: HttpContext): void {
  // Answered by the JS thread itself: if the event loop were stuck, this would not answer.
  app.get("/healthz", (c) =>
    c.json({
      ok: true,
      kind: ctx.kind,
      node: ctx.node,
      uptimeSeconds: (Date.now() - started) / 1000,
    }));
  app.get("/readyz", async (c) => {
    const checks = await ctx.ready();
    const failed = checks.filter((check) => !check.ok);
    if (failed.length === 0) return c.json({ ready: true, checks });
    return c.json({
      ready: false,
      reason: failed.map((check) => `${check.name}: ${check.reason ?? "not ready"}`).join("; "),
      checks,
    }, 503);
  });
  app.get("/api/v1/status", async (c) => c.json(await ctx.status()));
}
