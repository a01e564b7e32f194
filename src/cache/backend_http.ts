/**
 * A directory backend served over HTTP, and its client: how the local emulated clouds
 * (`LocalCluster` with `rttMs`, `deno task cluster --zones N --rtt-ms R`) make another zone's
 * store a network service, so reads and writes of it cross that zone's delay proxy (and stop when
 * the link is cut) like every other cross-zone connection. A real deployment across clouds uses
 * S3 (backend_s3.ts); this is for the emulation and has no authentication.
 *
 * Protocol: `PUT /o/KEY` (body = object), `GET /o/KEY` (200 + bytes, 404 absent),
 * `DELETE /o/KEY`, `GET /list?prefix=P` (JSON `[{key, modifiedMs}]`). Every client request is
 * aborted after `timeoutMs` (config cluster.zone_timeout_ms), so an unreachable zone's store fails
 * in bounded time instead of hanging.
 * @module
 */

import { type BackendStore, DirBackend } from "./backend.ts";

export class HttpBackend implements BackendStore {
  readonly kind = "http";
  readonly #base: string;
  readonly #timeoutMs: number;

  /** `http://host:port` of a `serveDirBackend` server. */
  constructor(base: string, timeoutMs = 10_000) {
    this.#base = base.replace(/\/+$/, "");
    this.#timeoutMs = timeoutMs;
  }

  async #request(method: string, path: string, body?: Uint8Array): Promise<Response> {
    try {
      return await fetch(`${this.#base}${path}`, {
        method,
        body: body as BodyInit | undefined,
        signal: AbortSignal.timeout(this.#timeoutMs),
      });
    } catch (error) {
      const why = (error as Error).name === "TimeoutError"
        ? `no answer within ${this.#timeoutMs} ms`
        : (error as Error).message;
      throw new Error(`backend ${this.#base}: ${method} ${path}: ${why}`);
    }
  }

  async #check(response: Response, what: string): Promise<void> {
    if (response.ok) return;
    const text = await response.text().catch(() => "");
    throw new Error(`backend ${this.#base}: ${what}: HTTP ${response.status} ${text.trim()}`);
  }

  async put(key: string, data: Uint8Array): Promise<void> {
    const response = await this.#request("PUT", `/o/${key}`, data);
    await this.#check(response, `put ${key}`);
    await response.body?.cancel();
  }

  async get(key: string): Promise<Uint8Array | undefined> {
    const response = await this.#request("GET", `/o/${key}`);
    if (response.status === 404) {
      await response.body?.cancel();
      return undefined;
    }
    await this.#check(response, `get ${key}`);
    try {
      return await response.bytes();
    } catch (error) {
      throw new Error(`backend ${this.#base}: get ${key}: ${(error as Error).message}`);
    }
  }

  async delete(key: string): Promise<void> {
    const response = await this.#request("DELETE", `/o/${key}`);
    await this.#check(response, `delete ${key}`);
    await response.body?.cancel();
  }

  async list(prefix: string): Promise<{ key: string; modifiedMs: number }[]> {
    const response = await this.#request("GET", `/list?prefix=${encodeURIComponent(prefix)}`);
    await this.#check(response, `list ${prefix}`);
    return await response.json();
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}

/** Serve a directory backend over HTTP (the protocol above). Returns its address and a stop. */
export async function serveDirBackend(
  dir: string,
  options: { hostname?: string; port?: number } = {},
): Promise<{ address: string; stop: () => Promise<void> }> {
  const store = await DirBackend.open(dir);
  const abort = new AbortController();
  const server = Deno.serve({
    hostname: options.hostname ?? "127.0.0.1",
    port: options.port ?? 0,
    signal: abort.signal,
    onListen: () => {},
  }, async (request) => {
    const url = new URL(request.url);
    try {
      if (url.pathname === "/list" && request.method === "GET") {
        return Response.json(await store.list(url.searchParams.get("prefix") ?? ""));
      }
      if (!url.pathname.startsWith("/o/")) return new Response("no such path", { status: 404 });
      const key = decodeURIComponent(url.pathname.slice(3));
      if (key.split("/").some((part) => part === ".." || part === "")) {
        return new Response(`bad key ${key}`, { status: 400 });
      }
      switch (request.method) {
        case "GET": {
          const bytes = await store.get(key);
          return bytes === undefined
            ? new Response("absent", { status: 404 })
            : new Response(bytes as BodyInit);
        }
        case "PUT":
          await store.put(key, new Uint8Array(await request.arrayBuffer()));
          return new Response(null, { status: 204 });
        case "DELETE":
          await store.delete(key);
          return new Response(null, { status: 204 });
      }
      return new Response("method not allowed", { status: 405 });
    } catch (error) {
      return new Response((error as Error).message, { status: 500 });
    }
  });
  const addr = server.addr as Deno.NetAddr;
  return {
    address: `${addr.hostname}:${addr.port}`,
    stop: async () => {
      // An abort, not a graceful shutdown: a request through a cut link never finishes.
      abort.abort();
      await Promise.race([server.finished, new Promise((r) => setTimeout(r, 2000))]);
      await store.close();
    },
  };
}
