/**
 * A client of a mount's volume admin API (`/api/v1/volumes`, `/api/v1/capacity`; the contract in
 * src/csi/README.md): what the CSI controller and node services know of volumes. Every answer is
 * checked with zod, so a server that drifts from the contract fails here with the field named.
 * @module
 */

import { z } from "zod";

export const VolumeSchema = z.object({
  name: z.string(),
  path: z.string(),
  capacityBytes: z.number().int().nonnegative(),
  inodes: z.number().int().nonnegative(),
  usedBytes: z.number().int().nonnegative(),
  usedInodes: z.number().int().nonnegative(),
  parameters: z.record(z.string()),
  createdAt: z.string(),
});
export type Volume = z.infer<typeof VolumeSchema>;

const ListSchema = z.object({ volumes: z.array(VolumeSchema), next: z.string().optional() });
const CapacitySchema = z.object({
  availableBytes: z.number().nonnegative(),
  totalBytes: z.number().nonnegative(),
});

/** An answer of the API other than the ones a call expects: its status and `error` text. */
export class VolumeApiError extends Error {
  constructor(readonly status: number, message: string) {
    super(message);
    this.name = "VolumeApiError";
  }
}

/** What creating a volume asks for. */
export interface CreateVolumeBody {
  name: string;
  capacityBytes: number;
  inodes?: number;
  parameters?: Record<string, string>;
}

/** Options of {@linkcode VolumeApi}. */
export interface VolumeApiOptions {
  /** Bearer token for the changing calls (default: none; the server then refuses them). */
  token?: string;
  /** Milliseconds a call may take (default 10000). */
  timeoutMs?: number;
}

/** The volume admin API of one skyfs mount, at `baseUrl` (`http://HOST:PORT`), or at the URL a
 * function finds at each call (a mount's published endpoint, which a remount may change). */
export class VolumeApi {
  readonly #baseUrl: string | (() => string);
  readonly #token?: string;
  readonly #timeoutMs: number;

  constructor(baseUrl: string | (() => string), options: VolumeApiOptions = {}) {
    this.#baseUrl = baseUrl;
    this.#token = options.token;
    this.#timeoutMs = options.timeoutMs ?? 10_000;
  }

  /** The base URL now; a VolumeApiError with status 0 when it cannot be found. */
  get baseUrl(): string {
    if (typeof this.#baseUrl === "string") return this.#baseUrl.replace(/\/+$/, "");
    try {
      return this.#baseUrl().replace(/\/+$/, "");
    } catch (error) {
      throw new VolumeApiError(0, (error as Error).message);
    }
  }

  async #call(
    method: string,
    path: string,
    body?: unknown,
  ): Promise<{ status: number; json: unknown }> {
    const headers: Record<string, string> = {};
    if (body !== undefined) headers["content-type"] = "application/json";
    if (method !== "GET" && this.#token !== undefined) {
      headers.authorization = `Bearer ${this.#token}`;
    }
    const baseUrl = this.baseUrl;
    let response: Response;
    try {
      response = await fetch(`${baseUrl}${path}`, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(this.#timeoutMs),
      });
    } catch (error) {
      throw new VolumeApiError(
        0,
        `the volume API at ${baseUrl} did not answer ${method} ${path}: ` +
          (error as Error).message,
      );
    }
    const text = await response.text();
    let json: unknown = undefined;
    if (text !== "") {
      try {
        json = JSON.parse(text);
      } catch {
        json = { error: text.slice(0, 200) };
      }
    }
    return { status: response.status, json };
  }

  #fail(method: string, path: string, status: number, json: unknown): never {
    const error = (json as { error?: unknown } | undefined)?.error;
    throw new VolumeApiError(
      status,
      `${method} ${path} answered ${status}` + (typeof error === "string" ? `: ${error}` : ""),
    );
  }

  #parse<T>(schema: z.ZodType<T>, what: string, json: unknown): T {
    const parsed = schema.safeParse(json);
    if (parsed.success) return parsed.data;
    const issue = parsed.error.issues[0];
    throw new VolumeApiError(
      502,
      `the volume API at ${this.baseUrl} sent a ${what} that breaks the contract: field ` +
        `"${issue.path.join(".")}": ${issue.message}`,
    );
  }

  /** The volume, or undefined when there is none of that name. */
  async get(name: string): Promise<Volume | undefined> {
    const path = `/api/v1/volumes/${encodeURIComponent(name)}`;
    const { status, json } = await this.#call("GET", path);
    if (status === 404) return undefined;
    if (status !== 200) this.#fail("GET", path, status, json);
    return this.#parse(VolumeSchema, "volume", json);
  }

  /** Creates the volume, or returns the one of that name with the same capacity ("exists");
   * "conflict" when one of that name has another capacity. */
  async create(
    body: CreateVolumeBody,
  ): Promise<{ outcome: "created" | "exists"; volume: Volume } | { outcome: "conflict" }> {
    const path = "/api/v1/volumes";
    const { status, json } = await this.#call("POST", path, body);
    if (status === 409) return { outcome: "conflict" };
    if (status !== 201 && status !== 200) this.#fail("POST", path, status, json);
    const volume = this.#parse(VolumeSchema, "volume", json);
    return { outcome: status === 201 ? "created" : "exists", volume };
  }

  /** Deletes the volume: "deleted", "absent", or "busy" (a 409: the mount refuses, e.g. files
   * of it are open; the error text says why). */
  async delete(name: string): Promise<"deleted" | "absent" | { busy: string }> {
    const path = `/api/v1/volumes/${encodeURIComponent(name)}`;
    const { status, json } = await this.#call("DELETE", path);
    if (status === 404) return "absent";
    if (status === 409) {
      const error = (json as { error?: unknown } | undefined)?.error;
      return { busy: typeof error === "string" ? error : "the mount refused (409)" };
    }
    if (status !== 204 && status !== 200) this.#fail("DELETE", path, status, json);
    return "deleted";
  }

  /** Sets the capacity; undefined when there is no such volume; "below-usage" on a 409. */
  async resize(name: string, capacityBytes: number): Promise<Volume | undefined | "below-usage"> {
    const path = `/api/v1/volumes/${encodeURIComponent(name)}/resize`;
    const { status, json } = await this.#call("POST", path, { capacityBytes });
    if (status === 404) return undefined;
    if (status === 409) return "below-usage";
    if (status !== 200) this.#fail("POST", path, status, json);
    return this.#parse(VolumeSchema, "volume", json);
  }

  /** One page of volumes by name; `badToken` when the server refused `start` (a 400). */
  async list(
    options: { limit?: number; start?: string } = {},
  ): Promise<{ volumes: Volume[]; next?: string } | "bad-token"> {
    const query = new URLSearchParams();
    if (options.limit !== undefined) query.set("limit", String(options.limit));
    if (options.start !== undefined) query.set("start", options.start);
    const path = `/api/v1/volumes${query.size > 0 ? `?${query}` : ""}`;
    const { status, json } = await this.#call("GET", path);
    if (status === 400 && options.start !== undefined) return "bad-token";
    if (status !== 200) this.#fail("GET", path, status, json);
    return this.#parse(ListSchema, "volume list", json);
  }

  /** What the backing store has. */
  async capacity(): Promise<{ availableBytes: number; totalBytes: number }> {
    const path = "/api/v1/capacity";
    const { status, json } = await this.#call("GET", path);
    if (status !== 200) this.#fail("GET", path, status, json);
    return this.#parse(CapacitySchema, "capacity", json);
  }
}
