/**
 * The HttpContext of a mount daemon: its metrics, readiness (mounted, metadata and backend
 * reachable), status and admin actions, built from the parts src/mount.ts already holds.
 * @module
 */

import { Errno, FsError } from "../fs_error.ts";
import { clusterStatusReport } from "../cluster/status.ts";
import { listNodes } from "../cluster/membership.ts";
import type { Logger } from "../log.ts";
import type { Vfs } from "../vfs/types.ts";
import { MetricsRegistry } from "./metrics.ts";
import { type MountMetricSources, registerMountMetrics } from "./mount_metrics.ts";
import type { HttpContext, ReadyCheck } from "./server.ts";

export interface MountParts extends MountMetricSources {
  mountpoint: string;
  dataDir: string;
  meta: string;
  logger: Logger;
  token?: string;
  /** False once the daemon is unmounting. */
  mounted: () => boolean;
}

const PROBE_TIMEOUT_MS = 2000;

/** `promise`'s outcome as a readiness check, failing after PROBE_TIMEOUT_MS. */
async function probe(name: string, promise: () => Promise<unknown>): Promise<ReadyCheck> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    await Promise.race([
      promise(),
      new Promise((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`no answer within ${PROBE_TIMEOUT_MS} ms`)),
          PROBE_TIMEOUT_MS,
        );
      }),
    ]);
    return { name, ok: true };
  } catch (error) {
    return { name, ok: false, reason: (error as Error)?.message ?? String(error) };
  } finally {
    clearTimeout(timer);
  }
}

const PROBE_KEY = new TextEncoder().encode("\0skyfs-readyz");
const ROOT = { uid: 0, gid: 0, pid: 0 };

/** Resolve `path` (relative to the mountpoint, or absolute under it) to an inode. */
async function resolvePath(vfs: Vfs, mountpoint: string, path: string): Promise<number> {
  let relative = path;
  if (path.startsWith("/")) {
    if (path !== mountpoint && !path.startsWith(`${mountpoint}/`)) {
      throw new FsError(Errno.EINVAL, `"${path}" is not under the mountpoint ${mountpoint}`);
    }
    relative = path.slice(mountpoint.length);
  }
  let ino = 1;
  const encoder = new TextEncoder();
  for (const name of relative.split("/")) {
    if (name === "" || name === ".") continue;
    if (name === "..") throw new FsError(Errno.EINVAL, `"${path}" contains ..`);
    const attr = await vfs.lookup(ROOT, ino, encoder.encode(name));
    vfs.forget(attr.ino, 1); // the lookup added a kernel reference nobody holds
    ino = attr.ino;
  }
  return ino;
}

export function mountHttpContext(parts: MountParts): HttpContext {
  const node = parts.cluster?.data.nodeId ?? "local";
  const metrics = new MetricsRegistry({ node, mountpoint: parts.mountpoint });
  registerMountMetrics(metrics, parts);
  return {
    kind: "mount",
    node,
    mountpoint: parts.mountpoint,
    metrics,
    logger: parts.logger,
    vfs: parts.vfs,
    token: parts.token,
    clusterMembers: parts.cluster
      ? async () =>
        (await listNodes(parts.kv)).map(({ id, zone, http }) => ({
          id,
          zone: zone ?? "default",
          http,
        }))
      : undefined,
    status: async () => ({
      kind: "mount",
      node,
      mountpoint: parts.mountpoint,
      dataDir: parts.dataDir,
      meta: parts.meta,
      io: parts.io.kind,
      passthrough: parts.fuse.negotiated?.passthrough ?? false,
      fuseMinor: parts.fuse.negotiated?.minor,
      openHandles: parts.vfs.openHandles().length,
      shim: { ...parts.shim.stats },
      cluster: parts.cluster ? await clusterStatusReport(parts.kv) : undefined,
    }),
    ready: async () => {
      const checks: ReadyCheck[] = [
        parts.mounted() && parts.fuse.negotiated !== undefined
          ? { name: "mounted", ok: true }
          : { name: "mounted", ok: false, reason: "the kernel has not sent INIT, or unmounting" },
        await probe("metadata", () => parts.kv.range({ key: PROBE_KEY, limit: 1 })),
      ];
      if (parts.cluster) {
        const backend = parts.cluster.backend;
        checks.push(await probe("backend", () => backend.get("skyfs-readyz-probe")));
      }
      return checks;
    },
    admin: {
      dropCache: async (path) => {
        const ino = await resolvePath(parts.vfs, parts.mountpoint, path);
        if (!parts.cluster) {
          throw new FsError(
            Errno.EINVAL,
            "a single-node mount has no cache to drop: its local files are the data",
          );
        }
        return { path, ino, ...(await parts.cluster.data.dropCached(ino)) };
      },
      openFiles: () => {
        const handles = parts.vfs.openHandles();
        const files = new Map<number, number>();
        for (const h of handles) files.set(h.ino, (files.get(h.ino) ?? 0) + 1);
        return {
          files: [...files].map(([ino, count]) => ({ ino, handles: count })),
          handles,
        };
      },
    },
  };
}
