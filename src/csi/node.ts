/**
 * The CSI Node service (spec.md "Node Service RPC"). The node has one skyfs mount (started by the
 * administrator or the DaemonSet, and outliving this process); a volume is the directory
 * `MOUNTPOINT<volume.path>` in it. NodeStage binds it at the staging path and NodePublish at the
 * target path (read-only when asked: a bind, then a read-only remount). Every call is idempotent
 * by looking at /proc/self/mountinfo, so a restarted driver finds the binds an earlier one made.
 * @module
 */

import { statfs } from "node:fs/promises";
import { bindMount, type MountEntry, mountOn, unmountAll } from "./bind.ts";
import { type CsiContext, requireMount } from "./context.ts";
import {
  capabilityProblem,
  readOnlyMode,
  requireVolumeId,
  type VolumeCapability,
  ZONE_TOPOLOGY_KEY,
} from "./rules.ts";
import type { Handlers } from "./server.ts";
import { CsiError, invalid, missing, notFound, status } from "./status.ts";
import type { Volume } from "./volume_api.ts";

const CAPABILITIES = [
  "STAGE_UNSTAGE_VOLUME",
  "GET_VOLUME_STATS",
  "EXPAND_VOLUME",
  "SINGLE_NODE_MULTI_WRITER",
];

function requirePath(path: string | null | undefined, field: string): string {
  if (!path) throw missing(field);
  if (!path.startsWith("/")) throw invalid(`${field} "${path}" is not an absolute path`);
  return path.replace(/\/+$/, "") || "/";
}

function requireCapability(capability: VolumeCapability | null | undefined): VolumeCapability {
  const problem = capabilityProblem(capability, "volume_capability");
  if (problem !== undefined) throw invalid(problem);
  return capability!;
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    throw error;
  }
}

export function nodeHandlers(ctx: CsiContext): Handlers {
  /** The volume and its directory in the mount; NOT_FOUND when either is missing. */
  async function volumeSource(id: string): Promise<{ volume: Volume; source: string }> {
    const mountPoint = await requireMount(ctx);
    const volume = await ctx.api.get(id);
    if (volume === undefined) throw notFound(`volume "${id}" does not exist`);
    const source = `${mountPoint}${volume.path}`;
    const info = await Deno.stat(source).catch(() => undefined);
    if (!info?.isDirectory) {
      throw notFound(`volume "${id}" has no directory "${source}" in the skyfs mount`);
    }
    return { volume, source };
  }

  /** True when `entry` is a bind of `volume`'s directory from the node's skyfs mount. */
  function isBindOf(entry: MountEntry, volume: Volume): boolean {
    const skyfs = mountOn(ctx.mountPoint!);
    return skyfs !== undefined && entry.major === skyfs.major && entry.minor === skyfs.minor &&
      entry.root === volume.path;
  }

  /** Binds the volume at `target` unless that bind is there already; ALREADY_EXISTS when
   * something else (another volume, the other access) is mounted there. */
  async function ensureBind(
    id: string,
    target: string,
    field: string,
    readOnly: boolean,
  ): Promise<void> {
    const { volume, source } = await volumeSource(id);
    await Deno.mkdir(target, { recursive: true });
    const current = mountOn(target);
    if (current !== undefined) {
      if (isBindOf(current, volume) && current.readOnly === readOnly) return;
      throw new CsiError(
        status.ALREADY_EXISTS,
        `${field} "${target}" already has a mount (${current.fstype} ${current.root}, ` +
          `${current.readOnly ? "ro" : "rw"}) that is not volume "${id}" ` +
          `${readOnly ? "read-only" : "read-write"}`,
      );
    }
    await bindMount(source, target, { readOnly });
  }

  return {
    async NodeStageVolume(request: {
      volume_id: string;
      staging_target_path: string;
      volume_capability: VolumeCapability | null;
    }) {
      const id = requireVolumeId(request.volume_id);
      const staging = requirePath(request.staging_target_path, "staging_target_path");
      requireCapability(request.volume_capability);
      await ensureBind(id, staging, "staging_target_path", false);
      return {};
    },

    async NodeUnstageVolume(request: { volume_id: string; staging_target_path: string }) {
      requireVolumeId(request.volume_id);
      const staging = requirePath(request.staging_target_path, "staging_target_path");
      await unmountAll(staging);
      return {};
    },

    async NodePublishVolume(request: {
      volume_id: string;
      staging_target_path: string;
      target_path: string;
      volume_capability: VolumeCapability | null;
      readonly: boolean;
    }) {
      const id = requireVolumeId(request.volume_id);
      requirePath(request.staging_target_path, "staging_target_path");
      const target = requirePath(request.target_path, "target_path");
      const capability = requireCapability(request.volume_capability);
      await ensureBind(id, target, "target_path", request.readonly || readOnlyMode(capability));
      return {};
    },

    async NodeUnpublishVolume(request: { volume_id: string; target_path: string }) {
      requireVolumeId(request.volume_id);
      const target = requirePath(request.target_path, "target_path");
      if (!(await exists(target))) return {};
      await unmountAll(target);
      // The spec has the plugin remove the target it created; a directory left non-empty holds
      // something that is not ours.
      await Deno.remove(target).catch(() => {});
      return {};
    },

    async NodeGetVolumeStats(request: { volume_id: string; volume_path: string }) {
      const id = requireVolumeId(request.volume_id);
      const path = requirePath(request.volume_path, "volume_path");
      if (!(await exists(path))) throw notFound(`volume_path "${path}" does not exist`);
      const { volume } = await volumeSource(id);
      const entry = mountOn(path);
      if (entry === undefined || !isBindOf(entry, volume)) {
        throw notFound(`volume "${id}" is not published or staged at volume_path "${path}"`);
      }
      const fs = await statfs(path);
      const bytes = (blocks: number) => blocks * fs.bsize;
      return {
        usage: [
          {
            unit: "BYTES",
            total: bytes(fs.blocks),
            available: bytes(fs.bavail),
            used: bytes(fs.blocks - fs.bfree),
          },
          { unit: "INODES", total: fs.files, available: fs.ffree, used: fs.files - fs.ffree },
        ],
      };
    },

    async NodeExpandVolume(request: {
      volume_id: string;
      volume_path: string;
      capacity_range: { required_bytes: number; limit_bytes: number } | null;
    }) {
      const id = requireVolumeId(request.volume_id);
      const path = requirePath(request.volume_path, "volume_path");
      if (!(await exists(path))) throw notFound(`volume_path "${path}" does not exist`);
      const { volume } = await volumeSource(id);
      const required = request.capacity_range?.required_bytes ?? 0;
      if (required > volume.capacityBytes) {
        throw new CsiError(
          status.OUT_OF_RANGE,
          `volume "${id}" has ${volume.capacityBytes} bytes, below capacity_range.required_bytes ` +
            `${required}: expand it with ControllerExpandVolume first`,
        );
      }
      // The quota lives in the volume record; statfs in the bind already reports the new size.
      return { capacity_bytes: volume.capacityBytes };
    },

    NodeGetCapabilities: () => ({
      capabilities: CAPABILITIES.map((type) => ({ rpc: { type } })),
    }),

    NodeGetInfo: () => ({
      node_id: ctx.nodeId,
      max_volumes_per_node: 0,
      accessible_topology: ctx.zone === undefined
        ? null
        : { segments: { [ZONE_TOPOLOGY_KEY]: ctx.zone } },
    }),
  };
}
