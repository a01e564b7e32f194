/**
 * What every CSI service of one driver process shares: its mode, the node's skyfs mount, the
 * volume API client, and the readiness checks Probe and the node calls make.
 * @module
 */

import { statfs } from "node:fs/promises";
import { mountOn } from "./bind.ts";
import { CsiError, status } from "./status.ts";
import type { VolumeApi } from "./volume_api.ts";

export type CsiMode = "node" | "controller" | "both";

export interface CsiContext {
  mode: CsiMode;
  /** The volume admin API of a skyfs mount. */
  api: VolumeApi;
  /** The node's skyfs mount point (node mode). */
  mountPoint?: string;
  /** The node id NodeGetInfo reports (node mode). */
  nodeId?: string;
  /** The zone NodeGetInfo puts in its topology segment. */
  zone?: string;
  /** Capacity of a volume created without a capacity range. */
  defaultCapacityBytes: number;
  /** The driver's version (GetPluginInfo's vendor_version). */
  version: string;
}

export const servesNode = (ctx: CsiContext) => ctx.mode !== "controller";
export const servesController = (ctx: CsiContext) => ctx.mode !== "node";

const pendingStatfs = new Map<string, Promise<string | undefined>>();

/** Why the node's skyfs mount cannot serve now, or undefined when it can: it must be a
 * fuse.skyfs mount whose daemon answers statfs within `timeoutMs` (a killed daemon's mount stays
 * listed but answers ENOTCONN). */
export async function mountProblem(
  mountPoint: string,
  timeoutMs = 2_000,
): Promise<string | undefined> {
  const entry = mountOn(mountPoint);
  if (entry === undefined) return `"${mountPoint}" is not mounted (start \`skyfs mount\` there)`;
  if (entry.fstype !== "fuse.skyfs") {
    return `"${mountPoint}" is a ${entry.fstype} mount, not skyfs`;
  }
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<string>((resolve) => {
    timer = setTimeout(
      () => resolve(`the skyfs daemon of "${mountPoint}" did not answer statfs`),
      timeoutMs,
    );
  });
  // A hung daemon leaves statfs waiting in a worker thread; one waiting call per mount point at
  // most, so repeated Probes cannot use up the pool the driver's own file calls need.
  let answer = pendingStatfs.get(mountPoint);
  if (answer === undefined) {
    answer = statfs(mountPoint).then(
      () => undefined,
      (error: Error) => `the skyfs mount "${mountPoint}" fails statfs: ${error.message}`,
    ).finally(() => pendingStatfs.delete(mountPoint));
    pendingStatfs.set(mountPoint, answer);
  }
  try {
    return await Promise.race([answer, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** The node's mount point, or UNAVAILABLE saying why it cannot serve. */
export async function requireMount(ctx: CsiContext): Promise<string> {
  if (ctx.mountPoint === undefined) {
    throw new CsiError(status.FAILED_PRECONDITION, "this driver has no --mount (node mode)");
  }
  const problem = await mountProblem(ctx.mountPoint);
  if (problem !== undefined) throw new CsiError(status.UNAVAILABLE, problem);
  return ctx.mountPoint;
}
