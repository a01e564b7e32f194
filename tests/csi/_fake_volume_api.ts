/**
 * A stand-in for a skyfs mount's volume admin API (the contract between the volumes work and the
 * CSI driver, src/csi/README.md), for the CSI tests until a mount serves it: a real hono server on
 * a real port whose volumes are real directories `<root>/volumes/<name>` (root: a skyfs mount
 * point in the tests), so binds of them are real. Records live in this process; usage is counted
 * by walking the directory. It enforces no quota: that is the mount's work.
 * @module
 */

import { Hono } from "hono";
import { z } from "zod";
import { statfs } from "node:fs/promises";
import { join } from "node:path";

const NAME = /^[a-z0-9][a-z0-9._-]{0,127}$/;
const CreateBody = z.object({
  name: z.string().regex(NAME),
  capacityBytes: z.number().int().positive(),
  inodes: z.number().int().nonnegative().optional(),
  parameters: z.record(z.string()).optional(),
}).strict();
const ResizeBody = z.object({ capacityBytes: z.number().int().positive() }).strict();

interface VolumeRecord {
  name: string;
  capacityBytes: number;
  inodes: number;
  parameters: Record<string, string>;
  createdAt: string;
}

export interface FakeVolumeApi {
  url: string;
  /** Requests served, by "METHOD route". */
  requests: Map<string, number>;
  stop(): Promise<void>;
}

async function usage(dir: string): Promise<{ bytes: number; inodes: number }> {
  let bytes = 0;
  let inodes = 0;
  for await (const entry of Deno.readDir(dir)) {
    const path = join(dir, entry.name);
    const info = await Deno.lstat(path);
    inodes++;
    if (entry.isDirectory) {
      const inner = await usage(path);
      bytes += inner.bytes;
      inodes += inner.inodes;
    } else bytes += info.size;
  }
  return { bytes, inodes };
}

function firstIssue(error: z.ZodError): { error: string; field: string } {
  const issue = error.issues[0];
  const field = issue.code === "unrecognized_keys" ? issue.keys[0] : issue.path.join(".");
  return { error: `invalid field "${field}": ${issue.message}`, field };
}

/** Serves the volume API for directories under `root` on 127.0.0.1 (any free port). */
export function startFakeVolumeApi(root: string, token: string): FakeVolumeApi {
  const records = new Map<string, VolumeRecord>();
  const requests = new Map<string, number>();
  const dirOf = (name: string) => join(root, "volumes", name);
  const json = async (record: VolumeRecord) => {
    const used = await usage(dirOf(record.name));
    return {
      name: record.name,
      path: `/volumes/${record.name}`,
      capacityBytes: record.capacityBytes,
      inodes: record.inodes,
      usedBytes: used.bytes,
      usedInodes: used.inodes,
      parameters: record.parameters,
      createdAt: record.createdAt,
    };
  };
  const app = new Hono();
  app.use("*", async (c, next) => {
    const key = `${c.req.method} ${c.req.routePath ?? c.req.path}`;
    requests.set(key, (requests.get(key) ?? 0) + 1);
    const authorization = c.req.header("authorization");
    if (c.req.method !== "GET" && authorization === undefined) {
      c.header("WWW-Authenticate", "Bearer");
      return c.json({ error: "this action needs the bearer token" }, 401);
    }
    if (c.req.method !== "GET" && authorization !== `Bearer ${token}`) {
      return c.json({ error: "wrong bearer token" }, 403);
    }
    await next();
  });
  app.post("/api/v1/volumes", async (c) => {
    const parsed = CreateBody.safeParse(await c.req.json().catch(() => undefined));
    if (!parsed.success) return c.json(firstIssue(parsed.error), 400);
    const body = parsed.data;
    const existing = records.get(body.name);
    if (existing) {
      if (existing.capacityBytes !== body.capacityBytes) {
        return c.json({ error: `volume "${body.name}" exists with another capacity` }, 409);
      }
      return c.json(await json(existing), 200);
    }
    await Deno.mkdir(dirOf(body.name), { recursive: true });
    const record: VolumeRecord = {
      name: body.name,
      capacityBytes: body.capacityBytes,
      inodes: body.inodes ?? 0,
      parameters: body.parameters ?? {},
      createdAt: new Date().toISOString(),
    };
    records.set(body.name, record);
    return c.json(await json(record), 201);
  });
  app.get("/api/v1/volumes", async (c) => {
    const limitText = c.req.query("limit");
    const limit = limitText === undefined ? 1000 : Number(limitText);
    if (!Number.isInteger(limit) || limit < 1 || limit > 1000) {
      return c.json({ error: "limit must be a whole number from 1 to 1000", field: "limit" }, 400);
    }
    const start = c.req.query("start");
    let after = "";
    if (start !== undefined) {
      try {
        after = atob(start);
      } catch {
        return c.json({ error: `bad start token "${start}"`, field: "start" }, 400);
      }
      if (!after.startsWith("after:")) {
        return c.json({ error: `bad start token "${start}"`, field: "start" }, 400);
      }
      after = after.slice("after:".length);
    }
    const names = [...records.keys()].sort().filter((name) => name > after);
    const page = names.slice(0, limit);
    const volumes = await Promise.all(page.map((name) => json(records.get(name)!)));
    return c.json(
      names.length > limit
        ? { volumes, next: btoa(`after:${page[page.length - 1]}`) }
        : { volumes },
    );
  });
  app.get("/api/v1/volumes/:name", async (c) => {
    const record = records.get(c.req.param("name"));
    if (!record) return c.json({ error: `no volume "${c.req.param("name")}"` }, 404);
    return c.json(await json(record));
  });
  app.delete("/api/v1/volumes/:name", async (c) => {
    const name = c.req.param("name");
    if (!records.has(name)) return c.json({ error: `no volume "${name}"` }, 404);
    await Deno.remove(dirOf(name), { recursive: true }).catch(() => {});
    records.delete(name);
    return c.body(null, 204);
  });
  app.post("/api/v1/volumes/:name/resize", async (c) => {
    const name = c.req.param("name");
    const parsed = ResizeBody.safeParse(await c.req.json().catch(() => undefined));
    if (!parsed.success) return c.json(firstIssue(parsed.error), 400);
    const record = records.get(name);
    if (!record) return c.json({ error: `no volume "${name}"` }, 404);
    if ((await usage(dirOf(name))).bytes > parsed.data.capacityBytes) {
      return c.json({ error: `volume "${name}" uses more than that` }, 409);
    }
    record.capacityBytes = parsed.data.capacityBytes;
    return c.json(await json(record));
  });
  app.get("/api/v1/capacity", async (c) => {
    const fs = await statfs(root);
    return c.json({ availableBytes: fs.bavail * fs.bsize, totalBytes: fs.blocks * fs.bsize });
  });

  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, app.fetch);
  return {
    url: `http://127.0.0.1:${server.addr.port}`,
    requests,
    stop: () => server.shutdown(),
  };
}
