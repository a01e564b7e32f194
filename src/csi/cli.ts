/**
 * `skyfs csi`: resolves the driver's settings (the [csi] config keys), finds the volume API, serves
 * until SIGTERM or SIGINT. The node's skyfs mount is not this process's: it keeps serving (and the
 * volumes bound from it stay usable) when the driver stops or is killed.
 * @module
 */

import { hostname } from "node:os";
import { resolve } from "node:path";
import { findEndpoint } from "../http/endpoint_file.ts";
import type { CsiContext, CsiMode } from "./context.ts";
import { startCsiServer } from "./server.ts";
import { VolumeApi } from "./volume_api.ts";
import denoJson from "../../deno.json" with { type: "json" };

export const CSI_USAGE =
  `Usage: skyfs csi --endpoint unix:///path/csi.sock --mode node|controller|both
                 [--node-id ID] [--zone Z] [--mount MOUNTPOINT] [--api http://HOST:PORT]

Serve the Container Storage Interface (v1.9) for skyfs volumes on a unix socket until SIGINT or
SIGTERM (src/csi/README.md; README.md, "Kubernetes").
  --endpoint URL     unix:///path/csi.sock (default unix:///run/skyfs/csi.sock)
  --mode MODE        node, controller or both (default both)
  --node-id ID       the node's id for NodeGetInfo (default: the host name)
  --zone Z           the node's zone, NodeGetInfo's topology segment (default: cluster.zone)
  --mount DIR        the node's skyfs mount point (node mode: volumes are bound from it);
                     controller mode also takes the mount's endpoint URL here
  --api URL          the volume admin API (default: the endpoint the mount on --mount published)
  --http-token-file F  the admin API's bearer token (else SKYFS_HTTP_TOKEN)
  --config FILE      TOML configuration file ([csi], [http]; \`skyfs config csi\`)`;

/** What `skyfs csi` needs, resolved from flags, environment and file. */
export interface CsiOptions {
  endpoint: string;
  mode: CsiMode;
  nodeId?: string;
  zone?: string;
  mountPoint?: string;
  apiUrl?: string;
  token?: string;
  defaultCapacityBytes: number;
}

/** Checks the options and builds the services' context; throws an Error whose message names the
 * problem and the fix. */
export function csiContext(options: CsiOptions): CsiContext {
  // --mount http://HOST:PORT names the mount by its endpoint: the API, and no mount point.
  if (options.mountPoint !== undefined && /^https?:\/\//.test(options.mountPoint)) {
    if (options.apiUrl !== undefined) {
      throw new Error("csi: give the endpoint URL once, as --api or as --mount, not both");
    }
    options = { ...options, apiUrl: options.mountPoint, mountPoint: undefined };
  }
  const node = options.mode !== "controller";
  if (node && options.mountPoint === undefined) {
    throw new Error(`csi --mode ${options.mode} needs --mount DIR (the node's skyfs mount)`);
  }
  if (options.apiUrl === undefined && options.mountPoint === undefined) {
    throw new Error(
      "csi --mode controller needs --api http://HOST:PORT (a mount's HTTP endpoint) or " +
        "--mount DIR",
    );
  }
  if (options.apiUrl !== undefined && !/^https?:\/\/[^/\s]+\/?$/.test(options.apiUrl)) {
    throw new Error(`--api "${options.apiUrl}" is not http://HOST:PORT`);
  }
  const mountPoint = options.mountPoint === undefined ? undefined : resolve(options.mountPoint);
  const api = new VolumeApi(
    options.apiUrl ?? (() => `http://${findEndpoint(mountPoint!)}`),
    { token: options.token },
  );
  return {
    mode: options.mode,
    api,
    mountPoint,
    nodeId: options.nodeId ?? hostname(),
    zone: options.zone,
    defaultCapacityBytes: options.defaultCapacityBytes,
    version: denoJson.version,
  };
}

/** Serves until SIGTERM or SIGINT. */
export async function runCsi(options: CsiOptions): Promise<void> {
  const ctx = csiContext(options);
  const server = await startCsiServer(ctx, options.endpoint);
  console.error(
    `csi: serving ${ctx.mode} on unix://${server.socketPath}` +
      (ctx.mountPoint ? ` (mount ${ctx.mountPoint})` : ""),
  );
  await new Promise<void>((done) => {
    const stop = () => {
      Deno.removeSignalListener("SIGTERM", stop);
      Deno.removeSignalListener("SIGINT", stop);
      done();
    };
    Deno.addSignalListener("SIGTERM", stop);
    Deno.addSignalListener("SIGINT", stop);
  });
  await server.close();
  console.error("csi: stopped");
}
