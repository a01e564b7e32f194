/**
 * The admin API under /api/v1/admin. Every request body is validated with zod (400 with the field
 * named); actions that change anything need `Authorization: Bearer <token>` (401 without it, 403
 * with a wrong one, 403 with how to configure one when the process has none).
 * @module
 */

import type { Context, Hono } from "hono";
import { z } from "zod";
import { errnoName, FsError } from "../fs_error.ts";
import { LOG_LEVELS } from "../log.ts";
import type { HttpContext } from "./server.ts";

export const dropCacheBody = z.object({
  path: z.string().min(1).max(4096).refine((p) => !p.includes("\0"), "contains a NUL byte"),
}).strict();
export const logLevelBody = z.object({ level: z.enum(LOG_LEVELS) }).strict();
export const snapshotBody = z.object({}).strict();

/** A 400 answer naming the first field that failed and why. */
export function badRequest(c: Context, error: z.ZodError) {
  const issue = error.issues[0];
  let field = issue.path.join(".");
  if (issue.code === "unrecognized_keys") field = issue.keys.join(",");
  return c.json({ error: `invalid field "${field || "(body)"}": ${issue.message}`, field }, 400);
}

/** Parse and validate a JSON body; an empty body is `{}`. */
export async function body<T>(c: Context, schema: z.ZodType<T>): Promise<{ value: T } | Response> {
  const text = await c.req.text();
  let json: unknown = {};
  if (text.trim() !== "") {
    try {
      json = JSON.parse(text);
    } catch (error) {
      return c.json({
        error: `invalid field "(body)": not JSON: ${(error as Error).message}`,
        field: "(body)",
      }, 400);
    }
  }
  const parsed = schema.safeParse(json);
  return parsed.success ? { value: parsed.data } : badRequest(c, parsed.error);
}

function sameToken(a: string, b: string): boolean {
  const x = new TextEncoder().encode(a);
  const y = new TextEncoder().encode(b);
  let diff = x.length ^ y.length;
  for (let i = 0; i < x.length; i++) diff |= x[i] ^ (y[i % y.length] ?? 0);
  return diff === 0;
}

/** undefined when the request may change things, else the refusal to send. */
export function refuse(c: Context, ctx: HttpContext): Response | undefined {
  if (ctx.token === undefined) {
    return c.json({
      error: "changing actions are disabled: no token is configured; start the process with " +
        "--http-token-file FILE (a file holding the token, 16 characters or more) or set " +
        "SKYFS_HTTP_TOKEN, then send Authorization: Bearer <token>",
    }, 403);
  }
  const header = c.req.header("authorization");
  const match = header === undefined ? null : /^Bearer\s+(\S+)\s*$/i.exec(header);
  if (!match) {
    c.header("WWW-Authenticate", 'Bearer realm="skyfs"');
    return c.json({ error: "this action needs Authorization: Bearer <token>" }, 401);
  }
  if (!sameToken(match[1], ctx.token)) return c.json({ error: "wrong token" }, 403);
  return undefined;
}

function unsupported(c: Context, ctx: HttpContext, action: string) {
  return c.json({ error: `${action} is not available on a ${ctx.kind} process` }, 404);
}

function fsErrorStatus(error: FsError): 400 | 404 | 409 | 500 {
  switch (errnoName(error.errno)) {
    case "ENOENT":
    case "ENOTDIR":
      return 404;
    case "EINVAL":
    case "ENAMETOOLONG":
      return 400;
    case "EBUSY":
    case "EISDIR":
      return 409;
    default:
      return 500;
  }
}

export function adminRoutes(app: Hono, ctx: HttpContext): void {
  app.post("/api/v1/admin/drop-cache", async (c) => {
    const refused = refuse(c, ctx);
    if (refused) return refused;
    const parsed = await body(c, dropCacheBody);
    if (parsed instanceof Response) return parsed;
    if (!ctx.admin.dropCache) return unsupported(c, ctx, "drop-cache");
    try {
      const result = await ctx.admin.dropCache(parsed.value.path);
      ctx.logger.info(`http: dropped the local cache of ${JSON.stringify(parsed.value.path)}`);
      return c.json(result);
    } catch (error) {
      if (!(error instanceof FsError)) throw error;
      return c.json({ error: error.message, errno: errnoName(error.errno) }, fsErrorStatus(error));
    }
  });
  app.get("/api/v1/admin/log-level", (c) => c.json({ level: ctx.logger.level }));
  app.post("/api/v1/admin/log-level", async (c) => {
    const refused = refuse(c, ctx);
    if (refused) return refused;
    const parsed = await body(c, logLevelBody);
    if (parsed instanceof Response) return parsed;
    const previous = ctx.logger.level;
    ctx.logger.level = parsed.value.level;
    return c.json({ level: ctx.logger.level, previous });
  });
  app.get("/api/v1/admin/open-files", (c) => {
    if (!ctx.admin.openFiles) return unsupported(c, ctx, "open-files");
    return c.json(ctx.admin.openFiles());
  });
  app.post("/api/v1/admin/snapshot", async (c) => {
    const refused = refuse(c, ctx);
    if (refused) return refused;
    const parsed = await body(c, snapshotBody);
    if (parsed instanceof Response) return parsed;
    if (!ctx.admin.snapshot) return unsupported(c, ctx, "snapshot");
    return c.json(await ctx.admin.snapshot());
  });
}
