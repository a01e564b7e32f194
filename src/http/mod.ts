/**
 * The HTTP endpoint of every long-running skyfs process (hono over Deno.serve): /metrics
 * (prom-client), /healthz, /readyz, /api/v1/status and the admin API. See README.md here.
 * @module
 */

export {
  type AdminActions,
  checkListen,
  createHttpApp,
  DEFAULT_MOUNT_HTTP,
  DEFAULT_REPLICA_HTTP,
  type HttpContext,
  type HttpServer,
  parseListen,
  readHttpToken,
  type ReadyCheck,
  startHttpServer,
} from "./server.ts";
export { type HistogramSeries, MetricsRegistry, processMetrics } from "./metrics.ts";
export { mountHttpContext } from "./mount_context.ts";
export { replicaHttpContext } from "./replica_context.ts";
