/**
 * Where a node's local miss is read from, nearest first (issue 15 point 3): the chunk's owner
 * among this zone's nodes over the peer transport, this zone's backend, the chunk's owner in
 * another zone the map places it in, that zone's backend; each tier after a failure of the one
 * before (even mid-chunk). Used by ClusterNode and, unchanged, by bench/cluster (which has no
 * membership and names the owner itself). ClusterData fetches each chunk once per node across
 * concurrent readers (its in-flight map covers the whole chain).
 * @module
 */

import {
  checkChunk,
  type ChunkSource,
  type ClusterData,
  type RangePlan,
} from "../cache/cluster_data.ts";
import type { ChunkRef } from "../cache/chunk_map.ts";
import { recycleBuffer } from "../cache/buffer_pool.ts";
import { chunkObjectKey } from "../cache/backend.ts";
import { FsError } from "../fs_error.ts";
import type { PeerTransport } from "./transport.ts";
import type { GetChunk, GetRange } from "./peer_wire.ts";

export interface PeerSourceOptions {
  /** The peer owning the chunk among this zone's nodes, or undefined when it is this node (or
   * there is none). */
  owner(ino: number, index: number): { id: string; address: string } | undefined;
  /** The chunk's owner among the live nodes of the first of `zones` that has one (tier
   * peer_remote), or undefined. */
  remoteOwner?(
    ino: number,
    index: number,
    zones: string[],
  ): { id: string; address: string } | undefined;
  /** A chunk came from its owner. */
  fetched?(): void;
  /** The owner failed; the backend is read instead. */
  failed?(): void;
}

function request(ino: number, index: number, ref: ChunkRef): GetChunk {
  return {
    ino,
    index,
    version: ref.version,
    length: ref.length,
    crc: ref.crc,
    objectLength: ref.objectLength ?? 0,
  };
}

export function peerThenBackend(
  data: ClusterData,
  transport: PeerTransport,
  options: PeerSourceOptions,
): ChunkSource {
  const failed = (owner: { id: string; address: string }, what: string, error: unknown) => {
    options.failed?.();
    console.error(
      `skyfs: peer ${owner.id} (${owner.address}) could not serve chunk ${what}: ` +
        `${(error as Error).message}; reading the backend`,
    );
  };
  /** The plan's ranges per owning peer, each list in plan order; chunks this node owns are
   * filled here in the background (from the backend: this node is their cache). */
  const planByOwner = (ino: number, plan: RangePlan) => {
    const byOwner = new Map<string, GetRange[]>();
    for (const next of plan) {
      const owner = options.owner(ino, next.index);
      if (!owner) {
        if (next.offset === 0) data.fillAhead(ino, next.index, next.ref);
        continue;
      }
      let list = byOwner.get(owner.address);
      if (!list) byOwner.set(owner.address, list = []);
      list.push({
        ...request(ino, next.index, next.ref),
        offset: next.offset,
        rangeLength: next.length,
      });
    }
    return byOwner;
  };
  const prefetchOwners = (ino: number, byOwner: Map<string, GetRange[]>) => {
    for (const [address, ranges] of byOwner) transport.prefetch?.(address, `${ino}`, ranges);
  };
  const remoteOwner = async (ino: number, index: number, ref: ChunkRef) => {
    if (!options.remoteOwner) return undefined;
    const zones = await data.remoteZones(ref);
    return zones.length > 0 ? options.remoteOwner(ino, index, zones) : undefined;
  };
  /** After the zone's tiers: the remote owner's bytes, else another zone's store. */
  const fromAfar = async (ino: number, index: number, ref: ChunkRef, errors: string[]) => {
    const far = await remoteOwner(ino, index, ref);
    if (far) {
      try {
        const bytes = await transport.getChunk(far.address, request(ino, index, ref));
        checkChunk(bytes, ref, `chunk ${ino}/${index} from ${far.id}`);
        options.fetched?.();
        data.stats.peerFills++;
        data.stats.peerFetchedBytes += bytes.length;
        data.stats.peerRemoteBytes += bytes.length;
        return bytes;
      } catch (error) {
        failed(far, `${ino}/${index}`, error);
      }
    }
    const bytes = await data.fetchFromRemote(ino, index, ref, errors);
    if (bytes) return bytes;
    throw new FsError(
      "EIO",
      errors.at(-1) ?? `backend object ${chunkObjectKey(ino, index, ref.version)} is missing`,
    );
  };
  return {
    async fetch(ino, index, ref) {
      const owner = options.owner(ino, index);
      if (owner) {
        try {
          const bytes = await transport.getChunk(owner.address, request(ino, index, ref));
          // Checked once here; the cache then records it under the map's CRC without rehashing.
          checkChunk(bytes, ref, `chunk ${ino}/${index} from ${owner.id}`);
          options.fetched?.();
          data.stats.peerFills++;
          data.stats.peerFetchedBytes += bytes.length;
          data.stats.peerZoneBytes += bytes.length;
          return bytes;
        } catch (error) {
          failed(owner, `${ino}/${index}`, error);
        }
      }
      const errors: string[] = [];
      return await data.fetchFromZone(ino, index, ref, errors) ??
        await fromAfar(ino, index, ref, errors);
    },
    /**
     * Part of a chunk straight from its owner into the reader's buffer (transports that can:
     * uring_transport.ts). False when there is no owner to ask, or it failed (logged): the
     * caller then fills the chunk, which asks the backend while the peer is marked failed.
     */
    readRange: transport.readRange
      ? async (ino, index, ref, offset, into, plan) => {
        const owner = options.owner(ino, index);
        if (!owner) return false;
        // This owner's ranges go with the read, in order; the other owners' are requested on
        // their own streams at once (prefetch), so each owner sends while the reader is on
        // another's chunk.
        const byOwner = planByOwner(ino, plan);
        const ranges = byOwner.get(owner.address) ?? [];
        byOwner.delete(owner.address);
        const reading = transport.readRange!(
          owner.address,
          `${ino}`,
          { ...request(ino, index, ref), offset, rangeLength: into.length },
          into,
          ranges,
        );
        prefetchOwners(ino, byOwner);
        try {
          await reading;
          data.stats.peerFetchedBytes += into.length;
          data.stats.peerDirectBytes += into.length;
          data.stats.peerZoneBytes += into.length;
          return true;
        } catch (error) {
          failed(owner, `${ino}/${index} [${offset}, +${into.length})`, error);
          return false;
        }
      }
      : undefined,
    prefetch: transport.prefetch
      ? (ino, plan) => prefetchOwners(ino, planByOwner(ino, plan))
      : undefined,
    endStream: (ino) => transport.endStream?.(`${ino}`),
    /**
     * Streamed: the owner's pieces go to `sink` as they arrive (ClusterData writes them into the
     * local file and checks the CRC at the end). On a peer failure, even mid-chunk, the
     * backend's copy is handed over from offset 0.
     */
    async fetchInto(ino, index, ref, sink) {
      const owner = options.owner(ino, index);
      if (owner) {
        try {
          await transport.getChunkInto(owner.address, request(ino, index, ref), sink);
          options.fetched?.();
          data.stats.peerFills++;
          data.stats.peerFetchedBytes += ref.length;
          data.stats.peerZoneBytes += ref.length;
          return;
        } catch (error) {
          failed(owner, `${ino}/${index}`, error);
        }
      }
      const errors: string[] = [];
      const bytes = await data.fetchFromZone(ino, index, ref, errors) ??
        await fromAfar(ino, index, ref, errors);
      await sink(bytes, 0);
      recycleBuffer(bytes); // the sink wrote them into the local file; nothing else holds them
    },
  };
}
