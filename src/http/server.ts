/**
 * The HTTP endpoint of a skyfs process (the mount daemon, a `skyfs meta serve` replica): one hono
 * app built from an `HttpContext`, served by `Deno.serve`. Routes live in modules, each exporting
 * `xxxRoutes(app, ctx)`. Deno.serve parses HTTP in Rust (hyper) outside the JS thread, so a slow or
 * hostile client holds a socket, not the event loop that answers FUSE requests.
 * @module
 */

import { Hono } from "hono";
import type { Logger } from "../log.ts";
import type { Vfs } from "../vfs/types.ts";
import type { MetricsRegistry } from "./metrics.ts";
import { metricsRoutes } from "./metrics_routes.ts";
import { healthRoutes } from "./health.ts";
import { adminRoutes } from "./admin.ts";
import { volumeRoutes } from "./volumes.ts";
import { type ClusterMember, dashboardRoutes } from "./dashboard.ts";

/** Default addresses: the mount daemon's and a replica's (JuiceFS uses 9567). */
export const DEFAULT_MOUNT_HTTP = "127.0.0.1:9570";
export const DEFAULT_REPLICA_HTTP = "127.0.0.1:9590";

/** How long close() waits for requests in progress. */
const CLOSE_WAIT_MS = 2000;

/** One readiness condition: what was checked and, when it failed, why. */
export interface ReadyCheck {
  name: string;
  ok: boolean;
  reason?: string;
}

/** What the admin API may do in this process; an absent action answers 404 with the reason. */
export interface AdminActions {
  /** Drop the local cached data of the file at `path` (relative to the mountpoint). */
  dropCache?: (path: string) => Promise<Record<string, unknown>>;
  /** Open files and handles. */
  openFiles?: () => Record<string, unknown>;
  /** Take a metadata snapshot now (a replica). */
  snapshot?: () => Promise<Record<string, unknown>>;
}

/** What the HTTP server knows of its process. Built by the process (src/mount.ts, curp/cli.ts). */
export interface HttpContext {
  kind: "mount" | "replica";
  /** Node id ("local" for a single-node mount) or replica id. */
  node: string;
  /** The mount's path (mounts only). */
  mountpoint?: string;
  metrics: MetricsRegistry;
  logger: Logger;
  /** The mount's file system (mounts only). */
  vfs?: Vfs;
  /** JSON of what `skyfs status` (mount) or `skyfs meta status` (replica) prints. */
  status: () => Promise<unknown>;
  /** Readiness conditions, checked at each /readyz. */
  ready: () => Promise<ReadyCheck[]>;
  admin: AdminActions;
  /** Bearer token for actions that change anything; none configured = they are refused. */
  token?: string;
  /** Cluster mode: the live nodes and their HTTP addresses (the dashboard's node table). */
  clusterMembers?: () => Promise<ClusterMember[]>;
}

/** The app: every route module applied to one Hono instance. Tests call `app.request(...)`. */
export function createHttpApp(ctx: HttpContext): Hono {
  const app = new Hono();
  app.onError((error, c) => {
    ctx.logger.error(`http: ${c.req.method} ${c.req.path} failed: ${error.message}`);
    return c.json({ error: error.message }, 500);
  });
  app.notFound((c) => c.json({ error: `no route ${c.req.method} ${c.req.path}` }, 404));
  healthRoutes(app, ctx);
  metricsRoutes(app, ctx);
  adminRoutes(app, ctx);
  volumeRoutes(app, ctx);
  dashboardRoutes(app, ctx);
  return app;
}

/** A listening server. */
export interface HttpServer {
  /** host:port actually bound (port 0 resolved). */
  readonly address: string;
  readonly url: string;
  close(): Promise<void>;
}

/** Parse `--http`: HOST:PORT (IPv6 as [::1]:PORT; port 0 = any free port) or "off". */
export function parseListen(text: string): { hostname: string; port: number } | "off" {
  if (text === "off") return "off";
  const match = /^(?:\[([0-9a-fA-F:.]+)\]|([^:\[\]]+)):(\d{1,5})$/.exec(text);
  const port = match ? Number(match[3]) : NaN;
  if (!match || !(port >= 0 && port <= 65535)) {
    throw new RangeError(`--http "${text}" is not HOST:PORT (port 0-65535) or off`);
  }
  return { hostname: match[1] ?? match[2], port };
}

/** The token for changing actions: the first line of `file`, else none (mod.ts falls back to
 * config http.token, SKYFS_HTTP_TOKEN). */
export function readHttpToken(file: string | undefined): string | undefined {
  if (file !== undefined) {
    let text: string;
    try {
      text = Deno.readTextFileSync(file);
    } catch (error) {
      throw new RangeError(`--http-token-file "${file}": ${(error as Error).message}`);
    }
    const token = text.split("\n")[0].trim();
    if (token.length < 16) {
      throw new RangeError(`--http-token-file "${file}": the token must be at least 16 characters`);
    }
    return token;
  }
  return undefined;
}

/** Options of startHttpServer. */
export interface StartOptions {
  /** When the address is taken, listen on any free port of the same host instead (and say so):
   * for the default address, so that two mounts on one machine both get an endpoint. Default
   * false: the error is thrown. */
  fallbackToAnyPort?: boolean;
}

/** Throw a RangeError if `listen` cannot be bound now (checked before mounting). */
export function checkListen(listen: string): void {
  const where = parseListen(listen);
  if (where === "off" || where.port === 0) return;
  try {
    Deno.listen({ hostname: where.hostname, port: where.port }).close();
  } catch (error) {
    throw new RangeError(`Cannot listen on --http ${listen}: ${(error as Error).message}`);
  }
}

function serve(
  ctx: HttpContext,
  app: Hono,
  where: { hostname: string; port: number },
  signal: AbortSignal,
): Deno.HttpServer<Deno.NetAddr> {
  return Deno.serve({
    hostname: where.hostname,
    port: where.port,
    signal,
    onListen: () => {},
    onError: (error) => {
      ctx.logger.error(`http: ${(error as Error)?.message ?? error}`);
      return new Response("internal error", { status: 500 });
    },
  }, app.fetch);
}

/**
 * Start the endpoint of this process on `listen` (see parseListen); undefined when "off".
 * Logs "http: listening on http://HOST:PORT" at info level.
 */
export function startHttpServer(
  ctx: HttpContext,
  listen: string,
  options: StartOptions = {},
): HttpServer | undefined {
  const where = parseListen(listen);
  if (where === "off") return undefined;
  const app = createHttpApp(ctx);
  const controller = new AbortController();
  let server: Deno.HttpServer<Deno.NetAddr>;
  try {
    server = serve(ctx, app, where, controller.signal);
  } catch (error) {
    if (!(options.fallbackToAnyPort && error instanceof Deno.errors.AddrInUse)) {
      throw new RangeError(`Cannot listen on --http ${listen}: ${(error as Error).message}`);
    }
    ctx.logger.info(`http: ${listen} is in use; listening on another port`);
    server = serve(ctx, app, { hostname: where.hostname, port: 0 }, controller.signal);
  }
  const host = server.addr.hostname.includes(":")
    ? `[${server.addr.hostname}]`
    : server.addr.hostname;
  const address = `${host}:${server.addr.port}`;
  ctx.logger.info(`http: listening on http://${address}`);
  return {
    address,
    url: `http://${address}`,
    async close() {
      controller.abort();
      // Graceful: requests in progress finish. A client that never completes its request must
      // not hold up the unmount: after CLOSE_WAIT_MS the process goes on without waiting.
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([
        server.finished,
        new Promise<void>((resolve) => timer = setTimeout(resolve, CLOSE_WAIT_MS)),
      ]);
      clearTimeout(timer);
    },
  };
}
