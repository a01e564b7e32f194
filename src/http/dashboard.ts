/**
 * The live dashboard at `/`: a page, its script and style, and uPlot (imported as text from the
 * `uplot` npm package, so every byte is served by skyfs and nothing is fetched from a CDN), plus
 * two JSON endpoints the page polls:
 *
 * - `/api/v1/dashboard?after=MS`: this process's figures, one point per second (figures.ts),
 *   computed by a sampler that scrapes this process's own `/metrics` text. The sampler runs only
 *   while someone watches: the first request starts it, and it stops a minute after the last.
 * - `/api/v1/cluster`: every live node of the cluster (membership records, each with the HTTP
 *   address its node advertised) with its latest figures, from that node's `/metrics`.
 * @module
 */

import type { Hono } from "hono";
import uplotScript from "uplot/dist/uPlot.iife.min.js" with { type: "text" };
import uplotStyle from "uplot/dist/uPlot.min.css" with { type: "text" };
import uplotLicense from "uplot/LICENSE" with { type: "text" };
import pageHtml from "./dashboard/index.html" with { type: "text" };
import pageScript from "./dashboard/dashboard.js" with { type: "text" };
import pageStyle from "./dashboard/dashboard.css" with { type: "text" };
import { type Figures, rates, type Snapshot, snapshotOf } from "./figures.ts";
import type { HttpContext } from "./server.ts";

/** A live node as the membership records list it. */
export interface ClusterMember {
  id: string;
  /** Its zone (config cluster.zone). */
  zone?: string;
  /** host:port of its HTTP endpoint; absent when it runs with `--http off`. */
  http?: string;
}

/** What the dashboard reads. */
export interface DashboardSources {
  /** This process's `/metrics` text. */
  metricsText: () => Promise<string>;
  /** This node's id (cluster mode), to mark it in the table and scrape it locally. */
  nodeId?: string;
  /** Cluster mode: the live nodes. Absent on a single node or a metadata replica. */
  members?: () => Promise<ClusterMember[]>;
}

export interface SamplerOptions {
  /** Milliseconds between scrapes (default 1000). */
  intervalMs?: number;
  /** Points kept (default 600: ten minutes at one a second). */
  keep?: number;
  /** Stop after this many milliseconds without a reader (default 60000). */
  idleMs?: number;
}

/** Scrapes a metrics source every interval while it is read, keeping the last points. */
export class Sampler {
  readonly intervalMs: number;
  readonly #read: () => Promise<string>;
  readonly #keep: number;
  readonly #idleMs: number;
  readonly #points: Figures[] = [];
  #last: Snapshot | undefined;
  #timer: ReturnType<typeof setInterval> | undefined;
  #readAtMs = 0;
  #busy = false;
  /** The last scrape's failure, cleared by a good one. */
  error: string | undefined;

  constructor(read: () => Promise<string>, options: SamplerOptions = {}) {
    this.#read = read;
    this.intervalMs = options.intervalMs ?? 1000;
    this.#keep = options.keep ?? 600;
    this.#idleMs = options.idleMs ?? 60_000;
  }

  /** Points after `afterMs` (all kept points by default); starts the sampler if stopped. */
  points(afterMs = 0): Figures[] {
    this.#readAtMs = Date.now();
    if (this.#timer === undefined) {
      this.#timer = setInterval(() => this.#tick(), this.intervalMs);
      Deno.unrefTimer(this.#timer);
      this.#tick();
    }
    const start = this.#points.findIndex((point) => point.timeMs > afterMs);
    return start < 0 ? [] : this.#points.slice(start);
  }

  get latest(): Figures | undefined {
    return this.#points.at(-1);
  }

  async #tick(): Promise<void> {
    if (Date.now() - this.#readAtMs > this.#idleMs) return this.stop();
    if (this.#busy) return; // a slow scrape: skip a beat rather than queue them
    this.#busy = true;
    try {
      const snapshot = snapshotOf(await this.#read(), Date.now());
      if (this.#last) {
        this.#points.push(rates(this.#last, snapshot));
        if (this.#points.length > this.#keep) this.#points.shift();
      }
      this.#last = snapshot;
      this.error = undefined;
    } catch (error) {
      this.error = (error as Error).message;
    } finally {
      this.#busy = false;
    }
  }

  stop(): void {
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
    this.#last = undefined; // a gap: the next point must not span the idle time
  }
}

/** One row of the cluster table. */
export interface ClusterRow {
  id: string;
  zone?: string;
  http?: string;
  self: boolean;
  figures?: Figures;
  error?: string;
}

/** Fetch a node's `/metrics` (at most `timeoutMs`). */
async function fetchMetrics(address: string, timeoutMs: number): Promise<string> {
  const response = await fetch(`http://${address}/metrics`, {
    signal: AbortSignal.timeout(timeoutMs),
  });
  const text = await response.text();
  if (!response.ok) throw new Error(`/metrics answered ${response.status}`);
  return text;
}

/** The live nodes and their figures: one sampler per node, alive while the table is read. */
export class ClusterView {
  readonly #sources: DashboardSources;
  readonly #self: Sampler;
  readonly #samplers = new Map<string, { address: string; sampler: Sampler }>();
  readonly #options: SamplerOptions;
  #members: ClusterMember[] = [];
  #membersAtMs = 0;
  #membersError: string | undefined;

  constructor(sources: DashboardSources, self: Sampler, options: SamplerOptions = {}) {
    this.#sources = sources;
    this.#self = self;
    this.#options = options;
  }

  async rows(): Promise<{ rows: ClusterRow[]; error?: string }> {
    if (!this.#sources.members) return { rows: [] };
    // The member list is a metadata read: at most one every 5 s, whatever the number of viewers.
    if (Date.now() - this.#membersAtMs > 5000) {
      this.#membersAtMs = Date.now();
      try {
        this.#members = await this.#sources.members();
        this.#membersError = undefined;
      } catch (error) {
        this.#membersError = `cannot list the cluster's nodes: ${(error as Error).message}`;
      }
    }
    const rows: ClusterRow[] = [];
    const live = new Set<string>();
    for (const member of [...this.#members].sort((a, b) => a.id < b.id ? -1 : 1)) {
      live.add(member.id);
      if (member.id === this.#sources.nodeId) {
        this.#self.points(Date.now());
        rows.push({ ...member, self: true, figures: this.#self.latest, error: this.#self.error });
        continue;
      }
      if (!member.http) {
        rows.push({ ...member, self: false, error: "no HTTP endpoint (--http off)" });
        continue;
      }
      let entry = this.#samplers.get(member.id);
      if (!entry || entry.address !== member.http) {
        entry?.sampler.stop();
        const address = member.http;
        entry = {
          address,
          sampler: new Sampler(() => fetchMetrics(address, 1500), { keep: 2, ...this.#options }),
        };
        this.#samplers.set(member.id, entry);
      }
      entry.sampler.points(Date.now());
      rows.push({
        ...member,
        self: false,
        figures: entry.sampler.latest,
        error: entry.sampler.error,
      });
    }
    for (const [id, entry] of this.#samplers) {
      if (!live.has(id)) {
        entry.sampler.stop();
        this.#samplers.delete(id);
      }
    }
    return { rows, error: this.#membersError };
  }

  stop(): void {
    for (const entry of this.#samplers.values()) entry.sampler.stop();
  }
}

const ASSETS: Record<string, [string, string]> = {
  "/dashboard/app.js": ["text/javascript; charset=utf-8", pageScript],
  "/dashboard/app.css": ["text/css; charset=utf-8", pageStyle],
  "/dashboard/uPlot.iife.min.js": ["text/javascript; charset=utf-8", uplotScript],
  "/dashboard/uPlot.min.css": ["text/css; charset=utf-8", uplotStyle],
  "/dashboard/uPlot.LICENSE.txt": ["text/plain; charset=utf-8", uplotLicense],
};

/** The dashboard of an HTTP endpoint (server.ts): this process's registry, and in cluster mode
 * the live nodes from the membership records. Samplers stop by themselves when nobody reads. */
export function dashboardRoutes(app: Hono, ctx: HttpContext): void {
  addDashboard(app, {
    metricsText: () => ctx.metrics.registry.metrics(),
    nodeId: ctx.node,
    members: ctx.clusterMembers,
  });
}

/** Register the page, its assets and the two JSON endpoints on `app`; returns a stop function
 * for the samplers. */
export function addDashboard(
  app: Hono,
  sources: DashboardSources,
  options: SamplerOptions = {},
): () => void {
  const sampler = new Sampler(sources.metricsText, options);
  const cluster = new ClusterView(sources, sampler, options);
  app.get("/", (c) => c.html(pageHtml));
  for (const [path, [type, body]] of Object.entries(ASSETS)) {
    app.get(path, (c) => c.body(body, 200, { "content-type": type, "cache-control": "no-cache" }));
  }
  app.get("/api/v1/dashboard", (c) => {
    const after = Number(c.req.query("after") ?? 0);
    if (!Number.isFinite(after) || after < 0) {
      return c.json({ error: "after: must be a time in milliseconds since 1970" }, 400);
    }
    const points = sampler.points(after);
    const latest = sampler.latest;
    return c.json({
      node: latest?.node ?? sources.nodeId,
      mountpoint: latest?.mountpoint,
      intervalMs: sampler.intervalMs,
      cluster: sources.members !== undefined,
      error: sampler.error,
      points,
    });
  });
  app.get("/api/v1/cluster", async (c) => {
    const { rows, error } = await cluster.rows();
    return c.json({ cluster: sources.members !== undefined, error, nodes: rows });
  });
  return () => {
    sampler.stop();
    cluster.stop();
  };
}
