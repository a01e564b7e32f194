/**
 * What the driver accepts, shared by the controller and node services: volume capabilities
 * (filesystem access in every access mode, since a skyfs volume is a directory every node can
 * mount read-write; no raw block), StorageClass parameters (one zod schema), capacity ranges, and
 * how a CO's volume name becomes a skyfs volume name.
 * @module
 */

import { z } from "zod";
import { CsiError, invalid, missing, status } from "./status.ts";

/** The plugin name a CO knows the driver by (CSIDriver object, StorageClass provisioner). */
export const DRIVER_NAME = "skyfs.csi.datenlord.io";
/** The topology key of NodeGetInfo's segment (a skyfs cluster zone). */
export const ZONE_TOPOLOGY_KEY = "topology.skyfs.datenlord.io/zone";

/** A volume capability as the loader decodes it (`access_type` names the set oneof). */
export interface VolumeCapability {
  access_type?: "mount" | "block" | null;
  mount?: { fs_type: string; mount_flags: string[]; volume_mount_group: string } | null;
  block?: Record<string, never> | null;
  access_mode?: { mode: string } | null;
}

export const ACCESS_MODES = [
  "SINGLE_NODE_WRITER",
  "SINGLE_NODE_READER_ONLY",
  "MULTI_NODE_READER_ONLY",
  "MULTI_NODE_SINGLE_WRITER",
  "MULTI_NODE_MULTI_WRITER",
  "SINGLE_NODE_SINGLE_WRITER",
  "SINGLE_NODE_MULTI_WRITER",
] as const;

/** Why skyfs cannot serve `capability` (undefined: it can). `field` names it in the message. */
export function capabilityProblem(
  capability: VolumeCapability | null | undefined,
  field: string,
): string | undefined {
  if (!capability) return `${field} is required`;
  if (!capability.access_mode || capability.access_mode.mode === "UNKNOWN") {
    return `${field}.access_mode.mode is required (one of ${ACCESS_MODES.join(", ")})`;
  }
  if (!(ACCESS_MODES as readonly string[]).includes(capability.access_mode.mode)) {
    return `${field}.access_mode.mode "${capability.access_mode.mode}" is unknown`;
  }
  if (capability.access_type === "block") {
    return `${field}.block: skyfs volumes are file systems; ask for mount access`;
  }
  if (capability.access_type !== "mount") {
    return `${field}: one of mount or block access_type is required`;
  }
  const flags = capability.mount?.mount_flags ?? [];
  if (flags.length > 0) {
    return `${field}.mount.mount_flags ${
      JSON.stringify(flags)
    }: skyfs bind mounts take no flags; ` +
      `leave mountOptions empty`;
  }
  return undefined;
}

/** Throws INVALID_ARGUMENT unless every capability can be served (and there is one). */
export function requireCapabilities(
  capabilities: VolumeCapability[] | null | undefined,
  field = "volume_capabilities",
): void {
  if (!capabilities || capabilities.length === 0) throw missing(field);
  capabilities.forEach((capability, index) => {
    const problem = capabilityProblem(capability, `${field}[${index}]`);
    if (problem !== undefined) throw invalid(problem);
  });
}

/** True when the mode only reads. */
export function readOnlyMode(capability: VolumeCapability): boolean {
  const mode = capability.access_mode?.mode ?? "";
  return mode.endsWith("READER_ONLY");
}

const wholeNumber = (what: string, max: number) =>
  z.string().regex(/^\d{1,15}$/, `${what} must be a whole number written in digits`).refine(
    (text) => Number(text) <= max,
    `${what} must be at most ${max}`,
  );

/**
 * StorageClass parameters. `inodes`: the volume's inode limit (0 = none). The keys the
 * external-provisioner adds with --extra-create-metadata (`csi.storage.k8s.io/pv/name`,
 * `.../pvc/name`, `.../pvc/namespace`) are kept as the volume's parameters; anything else is
 * refused so a typo in a StorageClass fails at provisioning, not later.
 */
export const ParametersSchema = z.object({
  inodes: wholeNumber("inodes", 2 ** 32).optional(),
  "csi.storage.k8s.io/pv/name": z.string().max(253).optional(),
  "csi.storage.k8s.io/pvc/name": z.string().max(253).optional(),
  "csi.storage.k8s.io/pvc/namespace": z.string().max(63).optional(),
}).strict();
export type Parameters = z.infer<typeof ParametersSchema>;

/** The parameters, valid, or INVALID_ARGUMENT naming the first bad key. */
export function parseParameters(
  parameters: Record<string, string> | null | undefined,
  field = "parameters",
): Parameters {
  const parsed = ParametersSchema.safeParse(parameters ?? {});
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0];
  if (issue.code === "unrecognized_keys") {
    throw invalid(
      `${field}: unknown key${issue.keys.length > 1 ? "s" : ""} ${
        issue.keys.map((k) => `"${k}"`).join(", ")
      }; skyfs takes "inodes" (and the csi.storage.k8s.io/ metadata keys)`,
    );
  }
  throw invalid(`${field}["${issue.path.join(".")}"]: ${issue.message}`);
}

/** A capacity range as decoded (0 = unset, per the spec). */
export interface CapacityRange {
  required_bytes: number;
  limit_bytes: number;
}

/** The capacity to give a new volume: required_bytes, else the default within limit_bytes.
 * INVALID_ARGUMENT for negative values, OUT_OF_RANGE when required exceeds the limit. */
export function capacityFor(
  range: CapacityRange | null | undefined,
  defaultBytes: number,
): number {
  const required = range?.required_bytes ?? 0;
  const limit = range?.limit_bytes ?? 0;
  if (required < 0) throw invalid(`capacity_range.required_bytes ${required} is negative`);
  if (limit < 0) throw invalid(`capacity_range.limit_bytes ${limit} is negative`);
  if (limit > 0 && required > limit) {
    throw new CsiError(
      status.OUT_OF_RANGE,
      `capacity_range.required_bytes ${required} exceeds capacity_range.limit_bytes ${limit}`,
    );
  }
  if (required > 0) return required;
  return limit > 0 ? Math.min(limit, defaultBytes) : defaultBytes;
}

/** True when a volume of `capacityBytes` satisfies the range. */
export function capacityFits(capacityBytes: number, range: CapacityRange | null | undefined) {
  const required = range?.required_bytes ?? 0;
  const limit = range?.limit_bytes ?? 0;
  return capacityBytes >= required && (limit === 0 || capacityBytes <= limit);
}

const VOLUME_NAME = /^[a-z0-9][a-z0-9._-]{0,127}$/;

/**
 * The skyfs volume name for a CO's volume name: the name itself when skyfs allows it (Kubernetes
 * sends `pvc-<uuid>`), else a lowercase form cut to 119 characters plus `-` and 8 hex digits of
 * its SHA-256, so the same CO name always gives the same volume (CreateVolume is idempotent by
 * name) and two names differing only in case do not collide.
 */
export async function volumeNameFor(coName: string): Promise<string> {
  if (VOLUME_NAME.test(coName)) return coName;
  const digest = new Uint8Array(
    await crypto.subtle.digest("SHA-256", new TextEncoder().encode(coName)),
  );
  const hash = [...digest.slice(0, 4)].map((b) => b.toString(16).padStart(2, "0")).join("");
  let base = coName.toLowerCase().replace(/[^a-z0-9._-]+/g, "-").replace(/^[^a-z0-9]+/, "");
  base = base.slice(0, 119);
  return base === "" ? `v-${hash}` : `${base}-${hash}`;
}

/** Throws INVALID_ARGUMENT unless `id` could name a skyfs volume (volume ids are volume names). */
export function requireVolumeId(id: string | null | undefined, field = "volume_id"): string {
  if (!id) throw missing(field);
  if (!VOLUME_NAME.test(id)) {
    throw new CsiError(
      status.NOT_FOUND,
      `${field} "${id}": no such volume (skyfs volume ids match ${VOLUME_NAME.source})`,
    );
  }
  return id;
}
