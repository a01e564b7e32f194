/** `GET /metrics`: the process's metrics in the Prometheus text format (prom-client). @module */

import type { Hono } from "hono";
import type { HttpContext } from "./server.ts";

export function metricsRoutes(app: Hono, ctx: HttpContext): void {
  app.get("/metrics", async (c) => {
    const text = await ctx.metrics.metrics();
    return c.body(text, 200, { "content-type": ctx.metrics.contentType });
  });
}
