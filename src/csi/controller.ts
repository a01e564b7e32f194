/**
 * The CSI Controller service (spec.md "Controller Service RPC") over a mount's volume API: a CSI
 * volume is a skyfs volume, its id the volume's name. CreateVolume is idempotent by name and
 * DeleteVolume by id; ListVolumes pages with tokens this driver issues (so a forged one is ABORTED
 * before the API sees it).
 * @module
 */

import type { CsiContext } from "./context.ts";
import {
  capabilityProblem,
  capacityFits,
  capacityFor,
  type CapacityRange,
  parseParameters,
  requireCapabilities,
  requireVolumeId,
  type VolumeCapability,
  volumeNameFor,
} from "./rules.ts";
import type { Handlers } from "./server.ts";
import { CsiError, invalid, missing, notFound, status } from "./status.ts";
import type { Volume } from "./volume_api.ts";

/** The CSI Volume message of a skyfs volume. */
function csiVolume(volume: Volume) {
  return {
    capacity_bytes: volume.capacityBytes,
    volume_id: volume.name,
    volume_context: {},
  };
}

const CAPABILITIES = [
  "CREATE_DELETE_VOLUME",
  "LIST_VOLUMES",
  "GET_CAPACITY",
  "EXPAND_VOLUME",
  "SINGLE_NODE_MULTI_WRITER",
];

/** The most volumes one ListVolumes reply carries (fewer than max_entries, with a next_token, is
 * what the spec allows). */
const LIST_PAGE_LIMIT = 1000;

function encodeToken(next: string): string {
  return btoa(JSON.stringify({ v: 1, next })).replace(/=+$/, "");
}

function decodeToken(token: string): string {
  try {
    const value = JSON.parse(atob(token));
    if (value?.v === 1 && typeof value.next === "string") return value.next;
  } catch { /* falls through */ }
  throw new CsiError(
    status.ABORTED,
    `starting_token "${token.slice(0, 64)}" was not issued by ListVolumes of this driver`,
  );
}

function rangeText(range: CapacityRange | null | undefined): string {
  return `required_bytes ${range?.required_bytes ?? 0}, limit_bytes ${range?.limit_bytes ?? 0}`;
}

interface CreateVolumeRequest {
  name: string;
  capacity_range: CapacityRange | null;
  volume_capabilities: VolumeCapability[];
  parameters: Record<string, string>;
  volume_content_source: unknown;
}

export function controllerHandlers(ctx: CsiContext): Handlers {
  const api = ctx.api;
  return {
    async CreateVolume(request: CreateVolumeRequest) {
      if (!request.name) throw missing("name");
      requireCapabilities(request.volume_capabilities);
      const parameters = parseParameters(request.parameters);
      if (request.volume_content_source) {
        throw invalid(
          "volume_content_source: skyfs neither clones volumes nor restores snapshots",
        );
      }
      const capacityBytes = capacityFor(request.capacity_range, ctx.defaultCapacityBytes);
      const name = await volumeNameFor(request.name);
      const incompatible = (volume: Volume) =>
        new CsiError(
          status.ALREADY_EXISTS,
          `volume "${name}" (name "${request.name}") exists with ${volume.capacityBytes} bytes, ` +
            `outside capacity_range (${rangeText(request.capacity_range)})`,
        );
      const existing = await api.get(name);
      if (existing !== undefined) {
        if (!capacityFits(existing.capacityBytes, request.capacity_range)) {
          throw incompatible(existing);
        }
        return { volume: csiVolume(existing) };
      }
      const created = await api.create({
        name,
        capacityBytes,
        inodes: parameters.inodes === undefined ? undefined : Number(parameters.inodes),
        parameters: parameters as Record<string, string>,
      });
      if (created.outcome === "conflict") {
        // Created meanwhile by a concurrent call with another capacity.
        const other = await api.get(name);
        if (other !== undefined && capacityFits(other.capacityBytes, request.capacity_range)) {
          return { volume: csiVolume(other) };
        }
        throw other === undefined
          ? new CsiError(status.ABORTED, `volume "${name}" changed during CreateVolume; retry`)
          : incompatible(other);
      }
      return { volume: csiVolume(created.volume) };
    },

    async DeleteVolume(request: { volume_id: string }) {
      if (!request.volume_id) throw missing("volume_id");
      // An id no skyfs volume can have names a volume that does not exist: done already.
      try {
        requireVolumeId(request.volume_id);
      } catch {
        return {};
      }
      const outcome = await api.delete(request.volume_id);
      if (typeof outcome === "object") {
        throw new CsiError(
          status.FAILED_PRECONDITION,
          `volume "${request.volume_id}" cannot be deleted now: ${outcome.busy}`,
        );
      }
      return {};
    },

    async ValidateVolumeCapabilities(request: {
      volume_id: string;
      volume_context: Record<string, string>;
      volume_capabilities: VolumeCapability[];
      parameters: Record<string, string>;
    }) {
      const id = requireVolumeId(request.volume_id);
      if (!request.volume_capabilities || request.volume_capabilities.length === 0) {
        throw missing("volume_capabilities");
      }
      if ((await api.get(id)) === undefined) throw notFound(`volume "${id}" does not exist`);
      for (const [index, capability] of request.volume_capabilities.entries()) {
        const problem = capabilityProblem(capability, `volume_capabilities[${index}]`);
        if (problem !== undefined) return { message: problem };
      }
      try {
        parseParameters(request.parameters);
      } catch (error) {
        return { message: (error as Error).message };
      }
      return {
        confirmed: {
          volume_context: request.volume_context,
          volume_capabilities: request.volume_capabilities,
          parameters: request.parameters,
        },
      };
    },

    async ListVolumes(request: { max_entries: number; starting_token: string }) {
      if (request.max_entries < 0) {
        throw invalid(`max_entries ${request.max_entries} is negative`);
      }
      const start = request.starting_token ? decodeToken(request.starting_token) : undefined;
      const page = await api.list({
        limit: Math.min(request.max_entries || LIST_PAGE_LIMIT, LIST_PAGE_LIMIT),
        start,
      });
      if (page === "bad-token") {
        throw new CsiError(
          status.ABORTED,
          `starting_token "${request.starting_token}" is no longer valid; list again from the start`,
        );
      }
      return {
        entries: page.volumes.map((volume) => ({ volume: csiVolume(volume) })),
        next_token: page.next === undefined ? "" : encodeToken(page.next),
      };
    },

    async GetCapacity(request: {
      volume_capabilities: VolumeCapability[];
      parameters: Record<string, string>;
    }) {
      parseParameters(request.parameters);
      // The spec's answer for capabilities the plugin cannot serve: no capacity for them.
      const unsupported = (request.volume_capabilities ?? []).some((capability, index) =>
        capabilityProblem(capability, `volume_capabilities[${index}]`) !== undefined
      );
      if (unsupported) return { available_capacity: 0 };
      const capacity = await api.capacity();
      return { available_capacity: Math.floor(capacity.availableBytes) };
    },

    ControllerGetCapabilities: () => ({
      capabilities: CAPABILITIES.map((type) => ({ rpc: { type } })),
    }),

    async ControllerExpandVolume(request: {
      volume_id: string;
      capacity_range: CapacityRange | null;
    }) {
      const id = requireVolumeId(request.volume_id);
      if (!request.capacity_range) throw missing("capacity_range");
      const range = request.capacity_range;
      if (range.required_bytes <= 0 && range.limit_bytes <= 0) {
        throw invalid("capacity_range needs required_bytes or limit_bytes above 0");
      }
      capacityFor(range, 0); // negative values, required above limit
      const volume = await api.get(id);
      if (volume === undefined) throw notFound(`volume "${id}" does not exist`);
      const wanted = range.required_bytes > 0 ? range.required_bytes : range.limit_bytes;
      if (volume.capacityBytes >= wanted) {
        if (range.limit_bytes > 0 && volume.capacityBytes > range.limit_bytes) {
          throw new CsiError(
            status.OUT_OF_RANGE,
            `volume "${id}" has ${volume.capacityBytes} bytes, above capacity_range.limit_bytes ` +
              `${range.limit_bytes}; volumes do not shrink`,
          );
        }
        return { capacity_bytes: volume.capacityBytes, node_expansion_required: false };
      }
      const resized = await api.resize(id, wanted);
      if (resized === undefined) throw notFound(`volume "${id}" does not exist`);
      if (resized === "below-usage") {
        throw new CsiError(status.OUT_OF_RANGE, `volume "${id}" uses more than ${wanted} bytes`);
      }
      // The capacity is the volume record's, which statfs inside the mount reports on every node
      // at once: nothing to do on the nodes.
      return { capacity_bytes: resized.capacityBytes, node_expansion_required: false };
    },
  };
}
