/**
 * The volume admin API of a mount (/api/v1/volumes, /api/v1/capacity): the contract the CSI
 * driver and `skyfs volume` build on. Bodies and queries are validated with zod (400 naming the
 * field); creating, resizing and deleting need the bearer token, as every changing action.
 * Volumes are reached through the mount's Vfs (src/vfs/volumes.ts), never around it.
 * @module
 */

import type { Context, Hono } from "hono";
import { z } from "zod";
import { errnoName, FsError } from "../fs_error.ts";
import type { Volume } from "../vfs/types.ts";
import { VOLUME_NAME_RULE } from "../vfs/volumes.ts";
import { badRequest, body, refuse } from "./admin.ts";
import type { HttpContext } from "./server.ts";

const name = z.string().regex(
  new RegExp(VOLUME_NAME_RULE),
  `must match ${VOLUME_NAME_RULE} (lower-case letters, digits, '.', '_', '-'; at most 128)`,
);
const bytes = z.number().int().positive().max(Number.MAX_SAFE_INTEGER);

export const createVolumeBody = z.object({
  name,
  capacityBytes: bytes,
  inodes: z.number().int().min(0).max(2 ** 32).optional(),
  parameters: z.record(z.string().max(253), z.string().max(4096)).optional(),
}).strict();
export const resizeVolumeBody = z.object({ capacityBytes: bytes }).strict();
export const listVolumesQuery = z.object({
  limit: z.coerce.number().int().min(1).max(1000).default(100),
  start: name.optional(),
}).strict();

/** The Volume JSON of the contract (what `Volume` holds besides stays inside). */
function volumeJson(volume: Volume) {
  return {
    name: volume.name,
    path: volume.path,
    capacityBytes: volume.capacityBytes,
    inodes: volume.inodes,
    usedBytes: volume.usedBytes,
    usedInodes: volume.usedInodes,
    parameters: volume.parameters,
    createdAt: volume.createdAt,
  };
}

function failure(c: Context, error: unknown) {
  if (!(error instanceof FsError)) throw error;
  const errno = errnoName(error.errno);
  const status = errno === "ENOENT" ? 404 : errno === "EBUSY" || errno === "EEXIST" ? 409 : 500;
  return c.json({ error: error.message, errno }, status);
}

export function volumeRoutes(app: Hono, ctx: HttpContext): void {
  const volumes = ctx.vfs?.volumes;
  const absent = (c: Context) =>
    c.json({ error: `volumes are not available on a ${ctx.kind} process` }, 404);
  /** The NAME of a path, or the 400 naming the rule. */
  const nameOf = (c: Context): string | Response => {
    const parsed = name.safeParse(c.req.param("name"));
    if (parsed.success) return parsed.data;
    return c.json({
      error: `invalid field "name": ${parsed.error.issues[0].message}`,
      field: "name",
    }, 400);
  };

  app.post("/api/v1/volumes", async (c) => {
    const refused = refuse(c, ctx);
    if (refused) return refused;
    const parsed = await body(c, createVolumeBody);
    if (parsed instanceof Response) return parsed;
    if (!volumes) return absent(c);
    try {
      const { volume, created } = await volumes.create(parsed.value);
      if (created) {
        ctx.logger.info(`http: created volume ${volume.name} of ${volume.capacityBytes} bytes`);
        return c.json(volumeJson(volume), 201);
      }
      if (volume.capacityBytes === parsed.value.capacityBytes) return c.json(volumeJson(volume));
      return c.json({
        error: `volume ${volume.name} exists with capacity ${volume.capacityBytes} bytes, ` +
          `not ${parsed.value.capacityBytes}`,
        field: "capacityBytes",
      }, 409);
    } catch (error) {
      return failure(c, error);
    }
  });

  app.get("/api/v1/volumes", async (c) => {
    const parsed = listVolumesQuery.safeParse(c.req.query());
    if (!parsed.success) return badRequest(c, parsed.error);
    if (!volumes) return absent(c);
    const { limit, start } = parsed.data;
    // One more than asked tells whether there is a next page.
    const page = await volumes.list(limit + 1, start);
    const shown = page.slice(0, limit);
    return c.json({
      volumes: shown.map(volumeJson),
      ...(page.length > limit ? { next: shown[shown.length - 1].name } : {}),
    });
  });

  app.get("/api/v1/volumes/:name", async (c) => {
    const volumeName = nameOf(c);
    if (volumeName instanceof Response) return volumeName;
    if (!volumes) return absent(c);
    const volume = await volumes.get(volumeName);
    if (!volume) return c.json({ error: `no volume ${volumeName}` }, 404);
    return c.json(volumeJson(volume));
  });

  app.delete("/api/v1/volumes/:name", async (c) => {
    const refused = refuse(c, ctx);
    if (refused) return refused;
    const volumeName = nameOf(c);
    if (volumeName instanceof Response) return volumeName;
    if (!volumes) return absent(c);
    try {
      if (!(await volumes.delete(volumeName))) {
        return c.json({ error: `no volume ${volumeName}` }, 404);
      }
    } catch (error) {
      return failure(c, error);
    }
    ctx.logger.info(`http: deleted volume ${volumeName}`);
    return c.body(null, 204);
  });

  app.post("/api/v1/volumes/:name/resize", async (c) => {
    const refused = refuse(c, ctx);
    if (refused) return refused;
    const volumeName = nameOf(c);
    if (volumeName instanceof Response) return volumeName;
    const parsed = await body(c, resizeVolumeBody);
    if (parsed instanceof Response) return parsed;
    if (!volumes) return absent(c);
    try {
      return c.json(volumeJson(await volumes.resize(volumeName, parsed.value.capacityBytes)));
    } catch (error) {
      return failure(c, error);
    }
  });

  app.get("/api/v1/capacity", (c) => {
    if (!volumes) return absent(c);
    return c.json(volumes.capacity());
  });
}
