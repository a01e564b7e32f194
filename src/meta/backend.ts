/**
 * Choose the metadata backend from a `--meta` URL: embedded (default), curp://host:port,... (a
 * `skyfs meta serve` cluster) or etcd://host:port,... (an etcd v3 or Xline cluster).
 * @module
 */

import { join } from "node:path";
import type { MetaKV } from "./kv.ts";
import type { IoEngine } from "../io/types.ts";
import { openEmbeddedKV } from "./embedded.ts";
import { openCurpKV } from "./curp/curp_kv.ts";

export interface MetaBackendOptions {
  /** The node's data directory; the embedded store lives at DIR/meta.db. */
  dataDir: string;
  /** Milliseconds a remote backend may take before an operation fails (EIO). Default 10000. */
  timeoutMs?: number;
  /** The process's I/O engine; the embedded store syncs its log through it. Default: the
   * embedded store opens its own. */
  io?: IoEngine;
  /** CURP client options beyond the timeout (config curp.fast_path, curp.batch_in_flight). */
  curp?: { fastPath?: boolean | "marked"; batchInFlight?: number };
  /** One line per CURP command on stderr (config log.debug containing "meta"). Default off. */
  traceMeta?: boolean;
  /** How the embedded store writes its log (EmbeddedKVOptions.logWrites). Default mapped. */
  metaLog?: "mapped" | "engine";
}

/** Parse "scheme://h:p,h:p" into its scheme and endpoints; throws a RangeError naming the fix. */
export function parseMetaSpec(spec: string | undefined): { scheme: string; endpoints: string[] } {
  if (spec === undefined || spec === "" || spec === "embedded" || spec === "embedded://") {
    return { scheme: "embedded", endpoints: [] };
  }
  const match = /^([a-z]+):\/\/(.*)$/.exec(spec);
  if (match === null || (match[1] !== "curp" && match[1] !== "etcd")) {
    throw new RangeError(
      `--meta "${spec}" is not embedded, curp://host:port,... or etcd://host:port,...`,
    );
  }
  const endpoints = match[2].split(",").map((s) => s.trim()).filter((s) => s !== "");
  for (const e of endpoints) {
    if (!/^[^:/]+:\d{1,5}$/.test(e)) {
      throw new RangeError(`--meta "${spec}": endpoint "${e}" is not host:port`);
    }
  }
  if (endpoints.length === 0) throw new RangeError(`--meta "${spec}" names no host:port`);
  return { scheme: match[1], endpoints };
}

export async function openMetaBackend(
  spec: string | undefined,
  options: MetaBackendOptions,
): Promise<MetaKV> {
  const { scheme, endpoints } = parseMetaSpec(spec);
  if (scheme === "curp") {
    // log.debug = "meta": one line per metadata command (path, ms, keys).
    const trace = options.traceMeta ? (line: string) => console.error(line) : undefined;
    return await openCurpKV(endpoints, {
      timeoutMs: options.timeoutMs,
      fastPath: options.curp?.fastPath,
      batchInFlight: options.curp?.batchInFlight,
      trace,
    });
  }
  if (scheme === "etcd") {
    // Loaded only when asked for: the gRPC client is a large npm dependency.
    const { openEtcdKV } = await import("./etcd.ts");
    return await openEtcdKV(endpoints, { timeoutMs: options.timeoutMs });
  }
  return await openEmbeddedKV(join(options.dataDir, "meta.db"), {
    io: options.io,
    logWrites: options.metaLog,
  });
}
