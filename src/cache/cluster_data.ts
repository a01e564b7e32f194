/**
 * The data side of cluster mode (DESIGN.md sections 5 and 6), called by src/vfs when created
 * with `cluster`. While a file is open the node's local file is its working copy, as on one
 * node; around it this class keeps the cluster rules:
 * - open loads the chunk map from metadata (close-to-open) and drops local chunks of other
 *   versions; a read or a partial write first fills missing chunks (peer, then backend, through
 *   the ChunkSource), checking the CRC of what arrives and of local bytes trusted after a restart;
 * - writes mark chunks dirty; at flush/fsync/close the dirty chunks are uploaded as new immutable
 *   objects, and the new map is written in the same transaction as size and mtime;
 * - the local files double as a cache with a byte limit (LRU over chunks of files not open).
 * @module
 */

import { crc32 } from "node:zlib";
import { Errno, FsError } from "../fs_error.ts";
import type { IoEngine } from "../io/types.ts";
import * as libc from "../io/libc.ts";
import {
  decodeInode,
  type InodeRecord,
  keys,
  type Namespace,
  type NsTxn,
  sameBytes,
} from "../meta/namespace.ts";
import type { LocalStore } from "./local.ts";
import { type BackendStore, chunkObjectKey } from "./backend.ts";
import { type CachedChunk, CacheIndex } from "./cache_index.ts";
import { addressOf, DIRECT_ALIGN_BYTES, recycleBuffer, takeBuffer } from "./buffer_pool.ts";
import {
  openGuardKey,
  openRecordKey,
  OpenRecords,
  reclaimBarrier,
  reclaimBarriers,
} from "./open_records.ts";
import {
  CHUNK_SIZE,
  type ChunkMap,
  type ChunkRef,
  decodeChunkMap,
  encodeChunkMap,
  hasInline,
  MAX_INLINE_BYTES,
  truncateChunkMap,
  withoutInline,
} from "./chunk_map.ts";

/** Inodes whose last-open content is remembered (`#samePages`); a forgotten one only costs its
 * kernel pages at the next open. */
const MAX_PAGE_SIGNATURES = 65_536;
/** Inodes whose record at their last open `beforeOpen` keeps (the oldest forgotten first). */
const OPENED_INODES_MAX = 65_536;
/** Bytes `#openedMap` may hold, all inodes together, each kept map charged its stored bytes and
 * `OPENED_MAP_OVERHEAD` (the inode opened longest ago forgotten first): a forgotten one costs its
 * next open a decode. */
const OPENED_MAPS_BYTES = 8 << 20;
/** What one kept map costs beyond its stored bytes, charged against `OPENED_MAPS_BYTES`: its
 * decode (a Map, a ref per chunk, a version string, inline bytes in a buffer of their own), the
 * signature string and the buffers' own headers. Measured (session 16 review): 1.3 KB of RSS per
 * kept one-chunk map of 66 stored bytes, 2.4 KB per 206-byte inline one; without this charge
 * 8 MiB of small maps were 127,000 entries and 156 MiB of RSS. */
const OPENED_MAP_OVERHEAD = 2048;
const signatureDecoder = new TextDecoder();

/** Linux 6.13+: a change after a stat that saw the ctime gets a fine-grained timestamp (multigrain
 * timestamps), so size and mtime tell whether a passthrough writer wrote since (`#markOutside`). */
const MULTIGRAIN_TIMES = (() => {
  try {
    const [major, minor] = Deno.osRelease().split(".").map((part) => parseInt(part));
    return major > 6 || (major === 6 && minor >= 13);
  } catch {
    return false; // no --allow-sys: the 50 ms rule, which holds on any kernel
  }
})();

/**
 * Where a chunk missing locally comes from (src/cluster: the owner peer, then the backend).
 * `fetch` returns the chunk's file bytes [0, ref.length), checked with `checkChunk`: the cache
 * records them under ref.crc without hashing them again.
 */
export interface ChunkSource extends ChunkSourceRanges {
  fetch(ino: number, index: number, ref: ChunkRef): Promise<Uint8Array>;
  /**
   * Optional streamed form: hand the chunk's bytes to `sink` in order as they arrive (offset
   * within the chunk). A source may start over at offset 0 (e.g. the backend after a peer
   * failed mid-chunk). Unchecked: the cache checks length and CRC of what the sink received.
   */
  fetchInto?(ino: number, index: number, ref: ChunkRef, sink: ChunkPieceSink): Promise<void>;
}

export type ChunkPieceSink = (piece: Uint8Array, offset: number) => Promise<void>;

/** Ranges of chunks of one file, in the order a reader will read them. */
export type RangePlan = { index: number; ref: ChunkRef; offset: number; length: number }[];

/** See ClusterData.readDirect. */
export interface ChunkSourceRanges {
  /**
   * Optional: bytes [offset, offset + into.length) of the chunk straight into `into`. `plan`
   * is what to ask the owner for, in order: its first range holds those bytes (it may run on
   * to the chunk's end), the next ones the chunks the reader will probably read next. Resolves
   * false when this source cannot (no owner to ask, or it failed: the caller then fills the
   * chunk the usual way).
   */
  readRange?(
    ino: number,
    index: number,
    ref: ChunkRef,
    offset: number,
    into: Uint8Array,
    plan: RangePlan,
  ): Promise<boolean>;
  /**
   * Optional: a sequential reader will read `plan` next (after the read in progress): ask the
   * owners now. Chunks this node owns are filled here (`ClusterData.fillAhead`).
   */
  prefetch?(ino: number, plan: RangePlan): void;
  /** The reads of inode `ino` stopped for now. */
  endStream?(ino: number): void;
}

/** A chunk read again from another open within this long is stored locally (readDirect). */
export const ADMIT_WINDOW_MS = 10 * 60_000;
/** Smaller stores go through the page cache (the aligned part of a chunk filled for a peer is
 * written with O_DIRECT from this size on). */
const DIRECT_STORE_MIN_BYTES = 64 << 10;
/** Chunks whose peer reads readDirect remembers for admission. */
const MAX_PEER_READS = 65_536;
/** How far ahead of a sequential reader readDirect requests ranges, over all owners (each
 * owner's stream keeps at most 8 MiB outstanding, UringTransport.WINDOW_BYTES). */
const READ_AHEAD_BYTES = 24 << 20;

/**
 * Throw unless `data` is the chunk `ref` names: its length, and for a whole object (the map's
 * CRC covers exactly the file bytes) its CRC. A shortened object's CRC covers bytes the file
 * no longer has; whoever read the whole object checked it.
 */
export function checkChunk(data: Uint8Array, ref: ChunkRef, what: string): void {
  if (data.length !== ref.length) {
    throw new FsError("EIO", `${what}: ${data.length} bytes, the chunk map says ${ref.length}`);
  }
  if (isWhole(ref) && crc32(data) !== ref.crc) {
    throw new FsError("EIO", `${what} fails its checksum`);
  }
}

/** The tag byte of an inode key (`fs/I` + u64, src/meta/namespace.ts). */
const INODE_TAG = 0x49;
const ORPHAN_TAG = 0x4f;
/** Inodes the watch saw unlinked remembered for `openMark` (past it, opens hold to be safe). */
const MAX_UNLINKED_SEEN = 10_000;
/** The first look at an orphan's reclaim barrier after its unlink: past the acknowledgements'
 * coalescing (OpenRecords' ACK_DELAY_MS), so one round frees a burst's orphans together. */
const RECLAIM_FIRST_MS = 70;
/** Least time between two reclaim rounds (a steady stream of unlinks: about 10 purge
 * transactions per second, whatever its rate). */
const RECLAIM_INTERVAL_MS = 100;

function inoOfKey(key: Uint8Array): number {
  const view = new DataView(key.buffer, key.byteOffset, key.byteLength);
  return view.getUint32(4) * 2 ** 32 + view.getUint32(8);
}

/** lseek on the local file; undefined where it says ENXIO (past its end). */
function localSeek(fd: number, offset: number, whence: number): number | undefined {
  try {
    return libc.lseek(fd, offset, whence);
  } catch (error) {
    if (error instanceof FsError && error.errno === 6) return undefined;
    throw error;
  }
}

function isWhole(ref: ChunkRef): boolean {
  return ref.objectLength !== undefined && ref.objectLength === ref.length;
}

/**
 * The backend stores of every zone (src/cluster/zones.ts ZonedBackend): this node's zone and the
 * others', for placement, nearest-first reads and deletes across zones.
 */
export interface ZoneStores {
  /** This node's zone. */
  readonly zone: string;
  /** Every zone, sorted by name (this node's included). */
  zones(): Promise<string[]>;
  /** A zone's store; throws for an unknown zone. */
  store(zone: string): Promise<BackendStore>;
}

/** How many zones hold each chunk of a file, and how many before its fsync or close returns. */
export interface PlacementPolicy {
  /** Zones holding each chunk (config cluster.zone_replicas), capped at the zones that exist. */
  replicas: number;
  /** Zones holding it before fsync/close returns (config cluster.zone_sync), 1 = asynchronous. */
  sync: number;
}

/** The zones a chunk written in `own` goes to: `own` first, then the next zones by name
 * (wrapping around), `policy.replicas` in all; the first `policy.sync` are written before the
 * publish, the rest queued. */
export function placeChunk(
  own: string,
  zones: string[],
  policy: PlacementPolicy,
): { sync: string[]; queued: string[] } {
  const sorted = [...new Set([...zones, own])].sort();
  const at = sorted.indexOf(own);
  const order = [...sorted.slice(at), ...sorted.slice(0, at)];
  const replicas = Math.max(1, Math.min(policy.replicas, order.length));
  const sync = Math.max(1, Math.min(policy.sync, replicas));
  return { sync: order.slice(0, sync), queued: order.slice(sync, replicas) };
}

/** The replication queue entry of one chunk version: `cl/repl/<writer zone>/<ino hex>/<index>/<version>`. */
export const REPL_PREFIX = "cl/repl/";

export function replQueueKey(zone: string, ino: number, index: number, version: string) {
  return new TextEncoder().encode(`${REPL_PREFIX}${zone}/${ino.toString(16)}/${index}/${version}`);
}

/** A queued copy: the object `chunkObjectKey(ino, index, version)` of the writer's zone goes to
 * every zone of `targets`. `owner` drains it; another node of the zone takes it over once
 * `owner` is not a live member. */
export interface ReplEntry {
  ino: number;
  index: number;
  version: string;
  crc: number;
  targets: string[];
  owner: string;
  queuedMs: number;
}

export interface ClusterDataOptions {
  /** This node's id: part of every chunk version it writes. */
  nodeId: string;
  backend: BackendStore;
  /** Default: the backend alone. */
  source?: ChunkSource;
  /** Byte limit of cached chunk data. Default 8 GiB. */
  capacityBytes?: number;
  /** Chunks read ahead of a sequential reader. Default 8 (2 was measured slower: 745 -> 1026 MiB/s from a peer). */
  readaheadChunks?: number;
  /** Uploads in flight per flush. Default 4. */
  uploadParallel?: number;
  /** TTL of the lease this node's open records are on. Default 5 s (as membership). */
  openLeaseSeconds?: number;
  /** Ignored since session 13 (config cluster.open_linger_ms): a record is put only for a file
   * seen unlinked while open here, and goes at its last close. */
  openLingerMs?: number;
  /** The zones' stores; unset: one store, `backend`, and no placement. */
  zones?: ZoneStores;
  /** The placement of a file's chunks: cluster-wide now (config cluster.zone_replicas and
   * cluster.zone_sync); the hook for a per-volume policy (issue 16). Default 2 and 1. */
  placement?: (ino: number) => PlacementPolicy;
  /** How long another zone's store is skipped after a request to it failed (not "missing"),
   * unless it is the last place a chunk can come from. Default 10000 ms (config
   * cluster.zone_down_ms). */
  zoneDownMs?: number;
  /** Files up to this many bytes keep their data in the chunk map (format 2) instead of a backend
   * object: no PUT, one metadata write at close. 0 = off; at most MAX_INLINE_BYTES. Default 4096
   * (config cluster.inline_bytes). */
  inlineBytes?: number;
  /** Let the kernel write a file this node created or truncated at an O_WRONLY open straight
   * into its local file (FUSE passthrough; config cluster.passthrough_writes). Default false. */
  passthroughWrites?: boolean;
  /** The clock of the down window (tests). Default Date.now. */
  now?: () => number;
  /** Where the down/back lines go. Default console.error. */
  log?: (line: string) => void;
}

/** An uploaded chunk waiting for its map transaction. */
export interface PendingChunk {
  index: number;
  ref: ChunkRef;
  /** The chunk's dirty sequence when it was read for upload. */
  seq: number;
  /** CRC of the bytes [0, ref.length) as they sit in the local file. */
  localCrc: number;
  /** Zones to copy it to after the publish (a replication queue entry in the same commit). */
  queued?: string[];
  /** An inline chunk uploaded as an object because the file grew past cluster.inline_bytes:
   * the version it had inline (the local copy, same bytes, is renamed to the new version). */
  converted?: string;
}

/** A stored chunk map as an open read it (`ClusterData.#openedMap`). */
interface OpenedMap {
  bytes: Uint8Array;
  /** Its decode, never handed out: every open gets a copy (`copyChunkMap`). */
  map: ChunkMap;
  signature: string;
}

/** A map whose entries a caller may change or replace without touching `map`'s (a new `zones`
 * array is assigned, never pushed to; inline bytes are never written in place). */
function copyChunkMap(map: ChunkMap): ChunkMap {
  const out: ChunkMap = new Map();
  for (const [index, ref] of map) out.set(index, { ...ref });
  return out;
}

interface FileState {
  map: ChunkMap;
  /** Chunk index -> write sequence; present = local bytes newer than any object. */
  dirty: Map<number, number>;
  /** Last chunk read, for readahead. */
  lastRead: number;
  /** Last chunk whose readahead was issued: once per chunk, not once per read. */
  readaheadAt: number;
  /** Which open of the file this is (`ClusterData.opened` counts): admission's "another open". */
  generation: number;
  /** Where the last read ended: a read starting there is sequential (readDirect). */
  directEnd: number;
  /** Chunk at which readDirect last requested the chunks ahead: once per chunk. */
  aheadAt: number;
  /** The local file is the whole file as this node wrote it: a handle of this open got FUSE
   * passthrough, which only a file created or truncated at that open gets (`outsideOpened`). */
  complete?: boolean;
  /** Open passthrough handles that may write (the kernel writes the local file itself). */
  outsideWriters?: number;
  /** A passthrough writer was open since the last look at the local file (`#markOutside`). */
  outsideSince?: boolean;
  /** The local file's size and mtime at that look. */
  outsideKey?: string;
}

/**
 * A chunk served in pieces straight from the local file (the peer transport's ChunkBody):
 * `read` fills `into` from `offset` within the chunk and throws if the chunk changed meanwhile;
 * `done` must be called once when sending ends, whatever happened.
 */
export interface ServedChunk {
  length: number;
  read(into: Uint8Array, offset: number): Promise<void>;
  done(): void;
  /** The local file's fd and the chunk's first byte in it, to send from without a copy. */
  fd: number;
  start: number;
  /** Whether the chunk is still the one served (not evicted, refilled or overwritten). */
  unchanged(): boolean;
}

/** An fd kept open for serving peers; closed when dropped and no request uses it. */
interface ServeFd {
  fd: number;
  users: number;
  dropped: boolean;
}

export interface CacheStats {
  hits: number;
  /** Chunks fetched from a peer: filled into the local cache, or read straight (once per open). */
  peerFills: number;
  /** Reads answered straight from a peer's bytes (readDirect), not stored here. */
  peerReads: number;
  misses: number;
  evictions: number;
  checksumFailures: number;
  uploads: number;
  bytes: number;
  capacityBytes: number;
  /** Bytes received from peers (chunks filled and ranges read straight into a reader). */
  peerFetchedBytes: number;
  /** Of those, bytes read straight into a reader's buffer (never stored here). */
  peerDirectBytes: number;
  /** Bytes fetched from the backend. */
  backendFetchedBytes: number;
  /** Bytes of chunks this node served to peers (a range request counts its whole chunk). */
  peerServedBytes: number;
  /** Bytes a miss read by tier (nearest first): a peer of this zone, this zone's backend, a peer
   * of another zone, another zone's backend (skyfs_read_bytes_total). */
  peerZoneBytes: number;
  backendZoneBytes: number;
  peerRemoteBytes: number;
  backendRemoteBytes: number;
  /** Chunk copies to other zones made before a publish (cluster.zone_sync > 1). */
  syncCopies: number;
  /** Bytes a miss read from the chunk map itself (a small file's inline data; tier inline). */
  inlineBytes: number;
  /** Publishes that kept the file's data inline in its chunk map (no backend object). */
  inlineWrites: number;
  /** Inline chunks uploaded as objects because their file grew past cluster.inline_bytes. */
  inlineConversions: number;
}

export class ClusterData {
  readonly nodeId: string;
  readonly backend: BackendStore;
  source: ChunkSource;
  readonly index: CacheIndex;
  readonly stats: CacheStats;
  #ns!: Namespace;
  #local!: LocalStore;
  #io!: IoEngine;
  readonly #files = new Map<number, FileState>();
  /** Per inode, the content seen at this node's last open (`#samePages`), oldest first. */
  readonly #pageSignatures = new Map<number, string>();
  /** Per inode, the stored chunk map this node's last open read, decoded, with its signature
   * (`#openedMap`), oldest first; `#openedMapsBytes` their stored bytes. */
  readonly #openedMaps = new Map<number, OpenedMap>();
  #openedMapsBytes = 0;
  /** Bytes `#openedMaps` may hold, each map charged its stored bytes and `OPENED_MAP_OVERHEAD`
   * (tests lower it). */
  openedMapsBudget = OPENED_MAPS_BYTES;
  /** Chunk maps an open decoded (not the same bytes as that inode's previous open): for tests. */
  openMapDecodes = 0;
  /** Index rows whose local bytes were written or checked by this process: trusted as is. */
  readonly #verified = new WeakSet<CachedChunk>();
  /** fds opened to serve peers chunks of files not open here, most recently used last. */
  readonly #serveFds = new Map<number, ServeFd>();
  readonly #inflight = new Map<string, Promise<void>>();
  readonly #readahead: number;
  /** Chunks filled for a peer are stored with O_DIRECT until the file system refuses it. */
  #directStore = true;
  readonly #uploadParallel: number;
  readonly #openLeaseSeconds: number | undefined;
  readonly zones: ZoneStores | undefined;
  readonly #placement: (ino: number) => PlacementPolicy;
  readonly #zoneDownMs: number;
  /** cluster.inline_bytes: files up to this size keep their data in the chunk map. */
  readonly inlineBytes: number;
  /** cluster.passthrough_writes (see `outsideOpened`). */
  readonly passthroughWrites: boolean;
  readonly #now: () => number;
  readonly #log: (line: string) => void;
  /** Other zones whose store failed a request and has not answered one since, with the end of
   * their skip window (cluster.zone_down_ms): skyfs_zone_store_down. */
  readonly zonesDown = new Map<string, { since: number; until: number }>();
  /** Set by the node: copies were queued by a publish of this node (the queue drains them). */
  onQueued: () => void = () => {};
  /** Set by the vfs: free these orphans, one transaction (their barrier passed). */
  onOrphans: (inos: number[]) => Promise<number[]> = () => Promise.resolve([]);
  /** Set by the vfs: this node just put its open record of orphan `ino` (it holds it open):
   * count it against its volume again if its unlink took it off (`VfsCore.recountOrphan`). */
  onHeld: (ino: number) => Promise<void> = () => Promise.resolve();
  /** Set by the vfs: whether this node has `ino` open (a handle). */
  isOpenHere: (ino: number) => boolean = () => false;
  /** Inodes the watch saw unlinked, with the value of `#unlinkSeq` then (`openMark`). */
  readonly #unlinkedAt = new Map<number, number>();
  #unlinkSeq = 0;
  /** Orphans open here whose record the watch asked for, and whether the record it saw says
   * the orphan counts against no volume now (`uncounted`): only those need `onHeld`'s recount. */
  readonly #holdsAsked = new Map<number, boolean>();
  /** The sequence number of the newest entry `#unlinkedAt` let go (bounded). */
  #unlinkForgotten = 0;
  /** Orphans to free once their reclaim barrier passed (`reclaimLater`). */
  readonly #reclaim = new Map<number, { due: number; pause: number }>();
  #reclaimTimer: ReturnType<typeof setTimeout> | undefined;
  #reclaimStopped = false;
  /** When the last reclaim round started. */
  #reclaimAt = 0;
  /** What the watch asked to acknowledge before `attach` made the records. */
  #ackBeforeAttach: number | undefined;
  /** Orphans whose barrier `#reclaimRound` saw passed, for the purge it runs now. */
  readonly #barrierPassed = new Set<number>();
  /** `prefetchOpen`'s reads, per transaction. */
  readonly #prefetched = new WeakMap<
    NsTxn,
    Map<number, { elsewhere: boolean; also?: Uint8Array }>
  >();
  /** Chunk maps read by `openElsewhere`, per transaction, for `dropInTxn`. */
  readonly #mapsRead = new WeakMap<NsTxn, Map<number, Uint8Array | undefined>>();
  /** Which inodes this node has open, in metadata (set at attach). */
  records!: OpenRecords;
  #seq = 0;
  #opens = 0;
  /** `beforeOpen`'s reads in flight, by inode: a close racing the open waits for it (`closed`). */
  readonly #refreshing = new Map<number, Promise<void>>();
  /** Per inode, its record as this node's last open read it (`beforeOpen`). */
  readonly #openedInodes = new Map<number, Uint8Array>();
  /**
   * Chunks read straight from their owner (readDirect) and by which open, most recent last:
   * a read of one from another open within ADMIT_WINDOW_MS stores it here (admission).
   */
  readonly #peerRead = new Map<string, { generation: number; at: number }>();
  #versionCounter = 0;

  constructor(dataDir: string, options: ClusterDataOptions) {
    this.nodeId = options.nodeId;
    this.backend = options.backend;
    this.source = options.source ?? {
      fetch: (ino, index, ref) => this.fetchFromBackend(ino, index, ref),
    };
    this.index = new CacheIndex(`${dataDir}/cache.log`);
    this.#readahead = options.readaheadChunks ?? 8;
    this.#uploadParallel = options.uploadParallel ?? 4;
    this.#openLeaseSeconds = options.openLeaseSeconds;
    this.zones = options.zones;
    this.#placement = options.placement ?? (() => ({ replicas: 2, sync: 1 }));
    this.#zoneDownMs = options.zoneDownMs ?? 10_000;
    this.inlineBytes = options.inlineBytes ?? 4096;
    if (
      !Number.isInteger(this.inlineBytes) || this.inlineBytes < 0 ||
      this.inlineBytes > MAX_INLINE_BYTES
    ) {
      throw new RangeError(
        `cluster.inline_bytes = ${this.inlineBytes} is out of range: use 0 (off) to ${MAX_INLINE_BYTES}`,
      );
    }
    this.passthroughWrites = options.passthroughWrites ?? false;
    this.#now = options.now ?? Date.now;
    this.#log = options.log ?? ((line) => console.error(line));
    this.stats = {
      hits: 0,
      peerFills: 0,
      peerReads: 0,
      misses: 0,
      evictions: 0,
      checksumFailures: 0,
      uploads: 0,
      bytes: this.index.bytes,
      capacityBytes: options.capacityBytes ?? 8 * 2 ** 30,
      peerFetchedBytes: 0,
      peerDirectBytes: 0,
      backendFetchedBytes: 0,
      peerServedBytes: 0,
      peerZoneBytes: 0,
      backendZoneBytes: 0,
      peerRemoteBytes: 0,
      backendRemoteBytes: 0,
      syncCopies: 0,
      inlineBytes: 0,
      inlineWrites: 0,
      inlineConversions: 0,
    };
  }

  /** Called by createVfs once the namespace and local store exist: loads the cache index
   * through the engine. */
  async attach(ns: Namespace, local: LocalStore, io: IoEngine): Promise<void> {
    await this.index.open(io);
    this.stats.bytes = this.index.bytes;
    this.#ns = ns;
    this.#local = local;
    this.#io = io;
    this.records = new OpenRecords(ns.kv, this.nodeId, this.#openLeaseSeconds);
    this.records.onHeld = (ino) => {
      // Asked for by the watch: it read the record (no read needed to know there is nothing to
      // recount). An open racing the unlink: the vfs looks (its cache has the open's read).
      const uncounted = this.#holdsAsked.get(ino);
      this.#holdsAsked.delete(ino);
      if (uncounted === false) return;
      this.onHeld(ino).catch((error) =>
        this.#log(`skyfs: counting orphan ${ino}, open here, in its volume again: ${error}`)
      );
    };
    if (this.#ackBeforeAttach !== undefined) await this.records.acknowledge(this.#ackBeforeAttach);
  }

  get attached(): boolean {
    return this.#ns !== undefined;
  }

  // --- open / close ---

  /**
   * Call before an open reads the inode (`beforeOpen`, a create's transaction); pass the mark to
   * `opened`. An unlink the watch sees after it makes that open put this node's record itself.
   */
  openMark(): number {
    return this.#unlinkSeq;
  }

  /** The watch saw `ino` unlinked after `mark` (or may have: the memory of it was bounded). */
  #unlinkedSince(ino: number, mark: number): boolean {
    const at = this.#unlinkedAt.get(ino);
    return at !== undefined ? at > mark : this.#unlinkForgotten > mark;
  }

  /** The watch saw regular file `ino` at nlink 0 (an orphan mark comes in the same commit). */
  #sawUnlinked(ino: number, record: InodeRecord): void {
    this.#unlinkedAt.delete(ino);
    this.#unlinkedAt.set(ino, ++this.#unlinkSeq);
    if (this.#unlinkedAt.size > MAX_UNLINKED_SEEN) {
      const [oldest, seq] = this.#unlinkedAt.entries().next().value!;
      this.#unlinkedAt.delete(oldest);
      this.#unlinkForgotten = seq;
    }
    // Open here (a handle, or an open past its mark): its record goes in before the ack.
    if (this.isOpenHere(ino) && !this.records.isHeld(ino)) {
      this.#holdsAsked.set(ino, record.volume !== undefined && record.uncounted === true);
      this.records.holdBeforeAck(ino);
    }
  }

  /**
   * The metadata watch runs from `revision` + 1 on (set up before this node serves anything):
   * this node takes part in the reclaim barrier from now, acknowledging `revision` (nothing was
   * open here before it).
   */
  watchStarted(revision: number): Promise<void> {
    return this.#acknowledge(revision);
  }

  /** Acknowledge `revision` (OpenRecords.acknowledge); before `attach`, at attach. */
  #acknowledge(revision: number): Promise<void> {
    if (this.records) return this.records.acknowledge(revision);
    this.#ackBeforeAttach = Math.max(this.#ackBeforeAttach ?? 0, revision);
    return Promise.resolve();
  }

  /**
   * Orphan `ino` (unlinked here, or its purge found the barrier not passed yet): try to free it
   * once every node has acknowledged its unlink (`reclaimBarrier`), checked again and again with
   * a growing pause (70 ms to 1 s), many in one transaction. Lost if this process ends first: gc
   * frees it then.
   */
  reclaimLater(ino: number): void {
    if (!this.#reclaim.has(ino)) {
      this.#reclaim.set(ino, { due: this.#now() + RECLAIM_FIRST_MS, pause: RECLAIM_FIRST_MS });
    }
    this.#scheduleReclaim();
  }

  #scheduleReclaim(): void {
    if (this.#reclaimTimer !== undefined || this.#reclaim.size === 0 || this.#reclaimStopped) {
      return;
    }
    let due = this.#reclaimAt + RECLAIM_INTERVAL_MS;
    let first = Infinity;
    for (const entry of this.#reclaim.values()) first = Math.min(first, entry.due);
    due = Math.max(due, first);
    this.#reclaimTimer = setTimeout(() => {
      this.#reclaimAt = this.#now();
      this.#reclaimRound().catch((error) => this.#log(`skyfs: reclaiming orphans: ${error}`))
        .finally(() => {
          this.#reclaimTimer = undefined;
          this.#scheduleReclaim();
        });
    }, Math.max(0, due - this.#now()));
    Deno.unrefTimer(this.#reclaimTimer);
  }

  /** Up to 64 orphans, the due ones first: one read of their barriers, one transaction freeing
   * those passed; the due ones not passed wait twice as long as before (up to 1 s). */
  async #reclaimRound(): Promise<void> {
    const now = this.#now();
    const all = [...this.#reclaim];
    const due = [
      ...all.filter(([, entry]) => entry.due <= now),
      ...all.filter(([, entry]) => entry.due > now),
    ].slice(0, 64);
    let barriers: Map<number, "passed" | "waiting" | "gone">;
    try {
      barriers = await reclaimBarriers(this.#ns.kv, due.map(([ino]) => ino));
    } catch {
      barriers = new Map();
    }
    const passed: number[] = [];
    for (const [ino, entry] of due) {
      const barrier = barriers.get(ino) ?? "waiting";
      if (barrier === "waiting") {
        if (entry.due > now) continue; // looked early: its turn stays
        entry.pause = Math.min(entry.pause * 2, 1000);
        entry.due = this.#now() + entry.pause;
        continue;
      }
      this.#reclaim.delete(ino);
      // Read before the purge reads the records, so that read sees every record it waited for.
      if (barrier === "passed") passed.push(ino);
    }
    if (passed.length === 0) return;
    for (const ino of passed) this.#barrierPassed.add(ino);
    try {
      await this.onOrphans(passed);
    } catch (error) {
      this.#log(`skyfs: freeing orphans ${passed.join(", ")} (gc will retry): ${error}`);
    } finally {
      for (const ino of passed) this.#barrierPassed.delete(ino);
    }
  }

  /** Before an open reads the inode: read inode and chunk map again, so the open sees the last
   * close (close-to-open), both in one round trip. True when the kernel's cached attributes of
   * the inode may be older than the record read (the open then has them dropped). */
  async beforeOpen(ino: number): Promise<boolean> {
    const inodeKey = keys.inode(ino);
    this.#ns.forgetKey(inodeKey);
    this.#ns.forgetKey(keys.chunkMap(ino));
    const read = this.#ns.fetch([inodeKey, keys.chunkMap(ino)]);
    this.#refreshing.set(ino, read);
    try {
      await read;
    } finally {
      if (this.#refreshing.get(ino) === read) this.#refreshing.delete(ino);
    }
    // Whether the kernel may hold attributes older than the store's: not when the record is
    // byte for byte the one this node's previous open read (every change writes a new ctime, so
    // nothing changed the inode since, and that open had the kernel drop anything older).
    const now = this.#ns.cached(inodeKey)?.value;
    const last = this.#openedInodes.get(ino);
    if (now === undefined) {
      this.#openedInodes.delete(ino);
      return true;
    }
    this.#openedInodes.delete(ino); // re-inserted last: the map drops the inode opened longest ago
    this.#openedInodes.set(ino, now);
    if (this.#openedInodes.size > OPENED_INODES_MAX) {
      this.#openedInodes.delete(this.#openedInodes.keys().next().value!);
    }
    return last === undefined || !sameBytes(last, now);
  }

  /**
   * A regular file was opened with local fd `fd` (its handle counted): load its current chunk
   * map. `mark`: `openMark()` before the open read the inode; `orphan`: it read nlink 0.
   */
  async opened(ino: number, fd: number, size: number, mark = -1, orphan = false): Promise<boolean> {
    const encoded = await this.#loadMap(ino, mark, orphan);
    const { map, signature } = this.#openedMap(ino, encoded);
    let state = this.#files.get(ino);
    if (!state) {
      this.#files.set(
        ino,
        state = {
          map,
          dirty: new Map(),
          lastRead: -2,
          readaheadAt: -1,
          generation: 0,
          directEnd: -1,
          aheadAt: -1,
        },
      );
    }
    state.map = map;
    state.generation = ++this.#opens;
    // Opened again while this node writes it with passthrough: its local file stays the file
    // (this node's version of every chunk, as dirty chunks stay; `outsideOpened`).
    if (state.complete) return false;
    // Local chunks of other versions are stale; drop them so holes read as zeros until filled.
    for (const cached of this.index.ofInode(ino)) {
      const ref = map.get(cached.index);
      if (state.dirty.has(cached.index)) continue;
      if (!ref || ref.version !== cached.version || ref.length !== cached.length) {
        await this.#dropLocal(ino, cached.index, fd);
      }
    }
    if (state.dirty.size === 0 && libc.fstat(fd).size !== size) {
      libc.ftruncate(fd, size);
      this.#local.noteOwnChange(ino);
    }
    return this.#samePages(ino, `${size}:${signature}`);
  }

  /** Decoded chunk maps kept for the next open (`#openedMap`): for tests. */
  get openedMapsKept(): number {
    return this.#openedMaps.size;
  }

  /**
   * The chunk map an open read (`encoded`, stored bytes) as a map of its own for the file's state
   * (which writes and publishes change), and its signature for `#samePages`. When the bytes are
   * those this node's previous open of `ino` read, both come from that open's decode: an open +
   * close of an unchanged file decodes no JSON or base64 and encodes no map (src/cluster/README.md,
   * "Session 16: where an open + close's mount CPU goes"). Same bytes, same map: nothing to drop
   * on a change, the next open's bytes differ.
   */
  #openedMap(ino: number, encoded: Uint8Array | undefined): { map: ChunkMap; signature: string } {
    if (!encoded) return { map: new Map(), signature: "" };
    const kept = this.#openedMaps.get(ino);
    if (kept !== undefined) {
      this.#openedMaps.delete(ino); // re-inserted last, or replaced below
      if (sameBytes(kept.bytes, encoded)) {
        this.#openedMaps.set(ino, kept);
        return { map: copyChunkMap(kept.map), signature: kept.signature };
      }
      this.#openedMapsBytes -= kept.bytes.length + OPENED_MAP_OVERHEAD;
    }
    this.openMapDecodes++;
    const map = decodeChunkMap(encoded);
    // An inline map's signature leaves its bytes out (up to 64 KiB per remembered inode): its
    // chunk's version is new at every publish, and the CRC is in the entry.
    const signature = hasInline(map)
      ? signatureDecoder.decode(encodeChunkMap(withoutInline(map)))
      : signatureDecoder.decode(encoded);
    if (encoded.length <= OPENED_MAPS_BYTES / 64) {
      this.#openedMaps.set(ino, { bytes: encoded, map: copyChunkMap(map), signature });
      this.#openedMapsBytes += encoded.length + OPENED_MAP_OVERHEAD;
      while (this.#openedMapsBytes > this.openedMapsBudget) {
        const [oldest, entry] = this.#openedMaps.entries().next().value!;
        this.#openedMaps.delete(oldest);
        this.#openedMapsBytes -= entry.bytes.length + OPENED_MAP_OVERHEAD;
      }
    }
    return { map, signature };
  }

  /**
   * Whether the content this open sees (size and chunk map) is the one seen at this node's
   * previous open of `ino`, so the kernel may keep the pages it cached then (close-to-open:
   * otherwise the open drops them). Changes by other nodes while the file stays cached drop the
   * pages through the metadata watch (ClusterNode); a publish from this node forgets the entry,
   * since another node's chunks may have been merged into the stored map by it.
   */
  #samePages(ino: number, signature: string): boolean {
    const same = this.#pageSignatures.get(ino) === signature;
    this.#pageSignatures.delete(ino);
    this.#pageSignatures.set(ino, signature);
    if (this.#pageSignatures.size > MAX_PAGE_SIGNATURES) {
      this.#pageSignatures.delete(this.#pageSignatures.keys().next().value!);
    }
    return same;
  }

  /**
   * The chunk map at open, read with the inode by `beforeOpen` (no write: issue 13). An open that
   * raced an unlink elsewhere (it read nlink 0, or the watch saw the unlink after its mark and
   * may have acknowledged it before this handle was counted) puts this node's record first,
   * compared against the inode's existence: the orphan is then kept until this node closes it,
   * or the open fails with ENOENT as if it came after the reclaim.
   */
  async #loadMap(ino: number, mark: number, orphan: boolean): Promise<Uint8Array | undefined> {
    if (this.records.isHeld(ino) || (!orphan && !this.#unlinkedSince(ino, mark))) {
      // `beforeOpen` read it with the inode (or the create that made the file knows it absent).
      return (await this.#ns.get(keys.chunkMap(ino))).value;
    }
    const held = await this.records.hold(ino, keys.chunkMap(ino));
    if (!held) {
      throw new FsError("ENOENT", `inode ${ino} was deleted (on another node) while opening`);
    }
    return held.value;
  }

  /**
   * The last handle of `ino` on this node closed (after its flush published). True when the inode
   * is an orphan (nlink 0, unlinked while open) as far as this node knows, so the caller should
   * try to free it now; undefined when this node neither held a record nor knows it unlinked.
   * A record this node held (put when it saw the unlink) goes first.
   */
  async closed(ino: number): Promise<boolean | undefined> {
    this.#endDirect(ino);
    const state = this.#files.get(ino);
    if (state && state.dirty.size === 0) this.#files.delete(ino);
    // A record the watch is putting (it saw the unlink while this handle was open) goes too.
    await this.records.holding(ino);
    if (this.records.isHeld(ino)) {
      const stored = await this.records.release(ino);
      return stored !== undefined && decodeInode(ino, stored).nlink === 0;
    }
    // Cached unless another node changed it since this node's open (the watch forgets it), or an
    // open of the same file racing this close dropped it to read it again (close-to-open): that
    // read, in flight, answers this close too (git commit reopens files it just closed).
    if (this.#ns.cachedInode(ino) === undefined) {
      await this.#refreshing.get(ino)?.catch(() => {});
    }
    const cached = this.#ns.cachedInode(ino);
    return cached ? cached.nlink === 0 : undefined;
  }

  /**
   * In a transaction that would delete orphan `ino`: whether it must stay, because another node
   * may have it open (the reclaim barrier has not passed: then it is retried later,
   * `reclaimLater`) or has it open (its record: that node's last close frees it).
   */
  async openElsewhere(tx: NsTxn, ino: number): Promise<boolean> {
    const prefetched = this.#prefetched.get(tx)?.get(ino);
    if (prefetched) {
      this.#mapRead(tx, ino, prefetched.also);
      return prefetched.elsewhere;
    }
    if (!this.#barrierPassed.has(ino)) {
      const barrier = await reclaimBarrier(this.#ns.kv, ino);
      if (barrier === "waiting") this.reclaimLater(ino);
      if (barrier !== "passed") return true;
    }
    // The chunk map comes in the same snapshot: if the inode is deleted, dropInTxn needs it.
    const found = await this.records.openElsewhere(tx, ino, keys.chunkMap(ino));
    let maps = this.#mapsRead.get(tx);
    if (!maps) this.#mapsRead.set(tx, maps = new Map());
    maps.set(ino, found.also);
    return found.elsewhere;
  }

  /** Before `openElsewhere` of each of `inos` in `tx` (a reclaim round's purge): the records of
   * those whose barrier passed, read at once (one read instead of one per inode). */
  async prefetchOpen(tx: NsTxn, inos: number[]): Promise<void> {
    const passed = inos.filter((ino) => this.#barrierPassed.has(ino));
    if (passed.length < 2) return;
    const found = await this.records.openElsewhereMany(tx, passed, (ino) => keys.chunkMap(ino));
    this.#prefetched.set(tx, found);
  }

  #mapRead(tx: NsTxn, ino: number, map: Uint8Array | undefined): void {
    let maps = this.#mapsRead.get(tx);
    if (!maps) this.#mapsRead.set(tx, maps = new Map());
    maps.set(ino, map);
  }

  /**
   * In the transaction deleting `ino`: its chunk map and open guard go too. Returns the backend
   * objects the map named, for `deleted` to remove once the transaction committed.
   */
  async dropInTxn(tx: NsTxn, ino: number): Promise<string[]> {
    const maps = this.#mapsRead.get(tx);
    const map = decodeChunkMap(maps?.has(ino) ? maps.get(ino) : await tx.getChunkMap(ino));
    tx.putChunkMap(ino, undefined);
    tx.deleteOutside(openGuardKey(ino));
    // This node's own record (lingering after its last close) goes in the same commit.
    if (this.records.hasRecord(ino)) tx.deleteOutside(openRecordKey(ino, this.nodeId));
    // Inline chunks have no object.
    return [...map].filter(([, ref]) => !ref.inline).map(([index, ref]) =>
      chunkObjectKey(ino, index, ref.version)
    );
  }

  /** `ino` was deleted (committed): local state goes, and its objects (nobody has it open). */
  deleted(ino: number, objects: string[]): void {
    this.records.deletedWithInode(ino);
    this.forgetInode(ino);
    const zones = this.zones;
    if (!zones) {
      for (const key of objects) {
        this.backend.delete(key).catch((error) =>
          console.error(`skyfs: deleting ${key} (gc will retry): ${(error as Error).message}`)
        );
      }
      return;
    }
    // Every zone that may hold a copy (placed, or queued and copied meanwhile).
    zones.zones().then(async (names) => {
      for (const zone of names) {
        const store = zone === zones.zone ? this.backend : await zones.store(zone);
        for (const key of objects) {
          await store.delete(key).catch((error) =>
            console.error(
              `skyfs: deleting ${key} in zone ${zone} (gc will retry): ${(error as Error).message}`,
            )
          );
        }
      }
    }).catch((error) => console.error(`skyfs: deleting objects of ${ino}: ${error}`));
  }

  hasDirty(ino: number): boolean {
    return (this.#files.get(ino)?.dirty.size ?? 0) > 0;
  }

  // --- passthrough writers ---

  /**
   * A handle of open file `ino` got FUSE passthrough: the kernel reads and writes the local file
   * itself, and this node never sees those writes. The vfs offers it only to an O_WRONLY open of
   * a file created or truncated by that open with no other handle of it open here (so the local
   * file is the whole file: every byte of it written on this node), and the kernel gives later
   * opens of the inode passthrough too while one is open (the vfs refuses readable and writable
   * ones: a shared writable mapping of the local file could change it after its last close,
   * unseen). From here on the local file is the file on this node (`complete`): reads never
   * fill from peers or the backend, and a publish first compares the local file's size and
   * mtime with the last look (`#markOutside`): if they moved, every chunk is dirty.
   */
  outsideOpened(ino: number, writable: boolean): void {
    const state = this.#files.get(ino);
    if (!state) throw new FsError("EBADF", `inode ${ino} is not open on this node`);
    state.complete = true;
    if (!writable) return;
    state.outsideWriters = (state.outsideWriters ?? 0) + 1;
    state.outsideSince = true;
  }

  /** A writable passthrough handle of `ino` closed (its writes are done). */
  outsideClosed(ino: number): void {
    const state = this.#files.get(ino);
    if (state?.outsideWriters) state.outsideWriters--;
  }

  /** Whether writes may have reached the local file of `ino` unseen since the last publish: the
   * vfs then takes its size and mtime as the file's (VfsCore.observeLocal). */
  watchesOutside(ino: number): boolean {
    return this.#files.get(ino)?.outsideSince === true;
  }

  /** Whether `ino` may have data not published yet: dirty chunks, or a local file written
   * outside the vfs (passthrough) since the last look. */
  unpublished(ino: number): boolean {
    const state = this.#files.get(ino);
    return state !== undefined && (state.dirty.size > 0 || state.outsideSince === true);
  }

  /** Whether a passthrough writer of `ino` is open (the write-back timer leaves it alone: each
   * publish reads and uploads the whole file; its close and fsync publish it). */
  writingOutside(ino: number): boolean {
    return (this.#files.get(ino)?.outsideWriters ?? 0) > 0;
  }

  /**
   * Before a publish of a file written with passthrough: if the local file's size or mtime moved
   * since the last look, every chunk up to its size that holds data (SEEK_DATA) or is in the map
   * is dirty (which ones the kernel wrote is not known). A write after the fstat here moves the
   * mtime even within one clock tick: on Linux 6.13+ the fstat marks the ctime as seen
   * (multigrain timestamps, ext4, xfs, btrfs, tmpfs), so the next change takes a fine-grained
   * time. On an older kernel a look within 50 ms of the
   * mtime is not trusted (the next publish marks every chunk again). Once no writer is open, the
   * look covers every write it made and the file is watched no more.
   */
  #markOutside(ino: number, fd: number, state: FileState): void {
    if (!state.outsideSince) return;
    const st = libc.fstat(fd);
    const key = `${st.size}/${st.mtimeSec}.${st.mtimeNsec}`;
    if (key !== state.outsideKey) {
      const mark = (index: number) => {
        state.dirty.set(index, ++this.#seq);
        this.index.delete(ino, index);
      };
      // The chunks holding data in the local file (a chunk never written stays a hole, not an
      // object of zeros), and those the map names (their bytes may be zeros now).
      for (let at = 0; at < st.size;) {
        const data = localSeek(fd, at, libc.SEEK_DATA);
        if (data === undefined || data >= st.size) break;
        const end = Math.min(localSeek(fd, data, libc.SEEK_HOLE) ?? st.size, st.size);
        for (let i = Math.floor(data / CHUNK_SIZE); i <= Math.floor((end - 1) / CHUNK_SIZE); i++) {
          mark(i);
        }
        at = end;
      }
      for (const index of state.map.keys()) if (index * CHUNK_SIZE < st.size) mark(index);
    }
    const mtimeMs = st.mtimeSec * 1000 + st.mtimeNsec / 1e6;
    const trusted = MULTIGRAIN_TIMES || Date.now() - mtimeMs > 50;
    state.outsideKey = trusted ? key : undefined;
    if (!state.outsideWriters) state.outsideSince = false;
  }

  // --- reads and writes ---

  /**
   * A read answered by the chunk's owner straight into `into`, without storing the chunk here:
   * the owner is the cluster's cache for its chunks (as a JuiceFS cache group), so a chunk read
   * once on this node takes no space here. Returns the bytes read, or undefined when this read
   * must go through `ensure` and the local file instead: the chunk is local, dirty, a hole or
   * being filled; the read crosses a chunk or its end; the source cannot read ranges (portable
   * engine) or the owner is this node or failed; or the chunk is admitted (below).
   *
   * Admission: a chunk this node read from its owner is stored here at its next read from
   * another open of the file within ADMIT_WINDOW_MS (a second access): a file read once (a
   * scan, a copy) costs no local space and no write, a working set read again becomes local.
   * A sequential reader gets the next ranges requested ahead (8 MiB) on its own connection.
   */
  async readDirect(ino: number, fd: number, offset: number, into: Uint8Array) {
    const state = this.#files.get(ino);
    const readRange = this.source.readRange;
    if (!state || !readRange || into.length === 0 || state.complete) return undefined;
    const index = Math.floor(offset / CHUNK_SIZE);
    const within = offset - index * CHUNK_SIZE;
    // Sequential whatever served the previous read (a peer, the local file or a fill).
    const sequential = offset === state.directEnd;
    state.directEnd = offset + into.length;
    // A new chunk of a sequential reader: the chunks after it are requested from their owners
    // (and filled here for the chunks this node owns) while this one is read.
    const ahead = sequential && within < into.length && index !== state.aheadAt
      ? this.#planAhead(ino, state, index + 1, READ_AHEAD_BYTES)
      : [];
    if (ahead.length > 0) state.aheadAt = index;
    const ref = state.map.get(index);
    const local = () => {
      this.source.prefetch?.(ino, ahead);
      return undefined;
    };
    if (!ref || state.dirty.has(index) || this.#inflight.has(`${ino}/${index}`)) return local();
    // Inline bytes are here already (in the map): the fill path writes them locally.
    if (ref.inline) return local();
    const cached = this.index.get(ino, index);
    if (cached && cached.version === ref.version && cached.length === ref.length) return local();
    // The map is cut at the file's size, so bytes inside ref.length exist; only a read running
    // past them needs the size (the local file's length while it is open): past the end of the
    // file the read is short, and zeros between ref.length and the size take the fill path.
    const length = Math.min(into.length, ref.length - within);
    if (length <= 0) return local();
    if (length < into.length && libc.fstat(fd).size > index * CHUNK_SIZE + ref.length) {
      return local();
    }
    const key = `${ino}/${index}`;
    const now = Date.now();
    const seen = this.#peerRead.get(key);
    if (seen && seen.generation !== state.generation && now - seen.at < ADMIT_WINDOW_MS) {
      this.#peerRead.delete(key);
      return local(); // read again by another open: store it (ensure fills it)
    }
    // What the owner should send: just this read, or for a sequential reader the rest of the
    // chunk, then the chunks after it (the source sends each owner's part on that owner's
    // stream; the transport keeps up to 8 MiB requested ahead per stream).
    const plan: RangePlan = [{ index, ref, offset: within, length }];
    if (sequential) {
      plan[0].length = ref.length - within;
      plan.push(...ahead);
    }
    const done = await readRange(ino, index, ref, within, into.subarray(0, length), plan);
    if (!done) return undefined;
    // Counted and remembered once read: a failed read fills the chunk instead.
    if (seen?.generation !== state.generation) this.stats.peerFills++;
    this.#peerRead.delete(key);
    this.#peerRead.set(key, { generation: state.generation, at: now });
    if (this.#peerRead.size > MAX_PEER_READS) {
      this.#peerRead.delete(this.#peerRead.keys().next().value!);
    }
    this.stats.peerReads++;
    return length;
  }

  /**
   * The chunks from `first` on, up to `bytes`, that a sequential reader would fetch: in the map,
   * not dirty, not held here. Chunks it will store (admitted: read before by another open) are
   * filled here at once instead of being planned.
   */
  #planAhead(ino: number, state: FileState, first: number, bytes: number): RangePlan {
    const plan: RangePlan = [];
    const now = Date.now();
    for (let i = first; i < first + bytes / CHUNK_SIZE; i++) {
      const next = state.map.get(i);
      if (!next) break; // a hole or the end of the file
      if (next.inline) continue; // in the map: nothing to ask a peer for
      if (state.dirty.has(i) || this.index.get(ino, i)?.version === next.version) continue;
      const seen = this.#peerRead.get(`${ino}/${i}`);
      if (seen && seen.generation !== state.generation && now - seen.at < ADMIT_WINDOW_MS) {
        this.fillAhead(ino, i, next);
        continue;
      }
      plan.push({ index: i, ref: next, offset: 0, length: next.length });
    }
    return plan;
  }

  /**
   * Fill chunk `index` here in the background (a sequential reader will want it and this node
   * is its owner, so its copy belongs here), holding the local fd meanwhile; nothing if it is
   * present, being filled, dirty, or no longer the chunk `ref` names.
   */
  fillAhead(ino: number, index: number, ref: ChunkRef): void {
    const state = this.#files.get(ino);
    const now = state?.map.get(index);
    if (!state || now?.version !== ref.version || state.dirty.has(index)) return;
    if (
      this.#inflight.has(`${ino}/${index}`) || this.index.get(ino, index)?.version === ref.version
    ) {
      return;
    }
    const fd = this.#local.fdOf(ino);
    if (fd === undefined) return;
    const size = libc.fstat(fd).size;
    this.#local.acquire(ino, size).then(async (fd) => {
      try {
        await this.#ensureChunk(ino, fd, state, index);
      } finally {
        await this.#local.release(ino);
      }
    }).catch((error) => console.error(`skyfs: read-ahead of ${ino}/${index}: ${error}`));
  }

  /** The file's reads from peers are over for now (its last handle closed here). */
  #endDirect(ino: number): void {
    this.source.endStream?.(ino);
  }

  /**
   * Make the chunks overlapping [offset, offset+length) of the file present in `fd`. With
   * `overwrite`, chunks the range covers completely are skipped (a write replaces them whole).
   */
  async ensure(
    ino: number,
    fd: number,
    offset: number,
    length: number,
    overwrite = false,
  ): Promise<void> {
    const state = this.#files.get(ino);
    if (!state || length <= 0) return;
    const first = Math.floor(offset / CHUNK_SIZE);
    const last = Math.floor((offset + length - 1) / CHUNK_SIZE);
    let waits: Promise<void>[] | undefined;
    for (let index = first; index <= last; index++) {
      const start = index * CHUNK_SIZE;
      if (overwrite && offset <= start && offset + length >= start + CHUNK_SIZE) {
        // A fill in flight writes into the local file: let it finish before this write lands.
        const filling = this.#inflight.get(`${ino}/${index}`);
        if (filling) (waits ??= []).push(filling.catch(() => {}));
        continue;
      }
      // The hot path (a hit) creates no promise: a 1 MiB read from the page cache is ~40 us,
      // so microseconds of bookkeeping per read show in the local-hit benchmark.
      if (this.#present(ino, state, index)) continue;
      (waits ??= []).push(this.#ensureChunk(ino, fd, state, index));
    }
    if (waits) await Promise.all(waits);
    // With ranges from peers, readDirect reads ahead (each chunk from its owner, filled here
    // only where this node owns or admits it); filling every chunk ahead here as well fetched
    // the peers' chunks twice.
    if (!overwrite && !this.source.readRange) {
      // Sequential reader: fetch the next chunks in the background, holding the fd meanwhile.
      const sequential = first === state.lastRead || first === state.lastRead + 1;
      if (sequential && last !== state.readaheadAt) {
        state.readaheadAt = last;
        this.#readAhead(ino, last);
      }
      state.lastRead = last;
    }
  }

  #readAhead(ino: number, last: number): void {
    const state = this.#files.get(ino)!;
    for (let index = last + 1; index <= last + this.#readahead; index++) {
      const ref = state.map.get(index);
      if (!ref || state.dirty.has(index) || this.#inflight.has(`${ino}/${index}`)) continue;
      if (this.index.get(ino, index)?.version === ref.version) continue;
      const fd = this.#local.fdOf(ino);
      if (fd === undefined) return;
      const size = libc.fstat(fd).size;
      this.#local.acquire(ino, size).then(async (fd) => {
        try {
          await this.#ensureChunk(ino, fd, state, index);
        } finally {
          await this.#local.release(ino);
        }
      }).catch((error) => console.error(`skyfs: readahead of ${ino}/${index}: ${error}`));
    }
  }

  /** Whether the chunk's local bytes can be read as they are (counted as a hit if cached). */
  #present(ino: number, state: FileState, index: number): boolean {
    if (state.dirty.has(index) || state.complete) return true;
    const ref = state.map.get(index);
    if (!ref) return true; // a hole: the local file has zeros there (opened() dropped stale data)
    const cached = this.index.get(ino, index);
    if (cached && cached.version === ref.version && this.#verified.has(cached)) {
      this.stats.hits++;
      this.index.touch(ino, index);
      return true;
    }
    return false;
  }

  async #ensureChunk(ino: number, fd: number, state: FileState, index: number): Promise<void> {
    if (this.#present(ino, state, index)) return;
    const ref = state.map.get(index)!;
    // Concurrent misses of one chunk check and fetch it once.
    const key = `${ino}/${index}`;
    let pending = this.#inflight.get(key);
    if (!pending) {
      pending = this.#checkOrFill(ino, fd, state, index, ref).finally(() =>
        this.#inflight.delete(key)
      );
      this.#inflight.set(key, pending);
    }
    await pending;
  }

  async #checkOrFill(ino: number, fd: number, state: FileState, index: number, ref: ChunkRef) {
    const key = `${ino}/${index}`;
    const cached = this.index.get(ino, index);
    if (cached && cached.version === ref.version && cached.length === ref.length) {
      if (this.#verified.has(cached) || await this.#verifyLocal(fd, cached)) {
        this.#verified.add(cached);
        this.index.touch(ino, index);
        this.stats.hits++;
        return;
      }
      this.stats.checksumFailures++;
      console.error(`skyfs: cached chunk ${key} failed its checksum; fetching it again`);
      await this.#dropLocal(ino, index, fd);
    }
    // A peer's request is filling it here from the backends: share that fetch (it asks no peer,
    // so waiting for it cannot wait for this node). The other way round is not shared: a serve
    // waiting for a local fill could wait for the asking peer.
    const serving = this.#inflight.get(`serve/${key}`);
    if (serving) {
      await serving.catch(() => {});
      if (this.#present(ino, state, index)) return;
    }
    await this.#fill(ino, fd, state, index, ref);
  }

  async #fill(ino: number, fd: number, state: FileState, index: number, ref: ChunkRef) {
    if (ref.inline) {
      // A small file's bytes came with its chunk map (tier inline): no peer, no backend.
      checkChunk(ref.inline, ref, `inline chunk ${ino}/${index}`);
      this.stats.inlineBytes += ref.inline.length;
      if (state.dirty.has(index) || state.map.get(index)?.version !== ref.version) return;
      await this.#storeChunk(ino, fd, index, ref, ref.inline);
      await this.#evict();
      return;
    }
    this.stats.misses++;
    if (this.source.fetchInto) return await this.#fillStreamed(ino, fd, state, index, ref);
    const data = await this.source.fetch(ino, index, ref);
    try {
      // A write may have landed while the fetch was in flight: local bytes are newer then.
      if (state.dirty.has(index) || state.map.get(index)?.version !== ref.version) return;
      await this.#storeChunk(ino, fd, index, ref, data);
    } finally {
      recycleBuffer(data); // the source hands it over; nothing else holds it
    }
    await this.#evict();
  }

  /**
   * Fill from a streaming source: each piece is written into the local file at its place as it
   * arrives (the piece buffer stays in the CPU cache; no 4 MiB buffer is assembled), with the
   * CRC computed on the way. The bytes count only once the whole chunk arrived and matches: the
   * index row is written last, so a failed or abandoned fill leaves bytes no row vouches for
   * (the next fill overwrites them). Stops writing as soon as the chunk is written locally or
   * replaced (dirty, other version, truncated): local bytes are then newer.
   */
  async #fillStreamed(ino: number, fd: number, state: FileState, index: number, ref: ChunkRef) {
    const start = index * CHUNK_SIZE;
    const stillWanted = () => {
      const now = state.map.get(index);
      return !state.dirty.has(index) && now?.version === ref.version && now.length === ref.length;
    };
    this.index.delete(ino, index);
    let crc = 0;
    let received = 0;
    let abandoned = false;
    const sink: ChunkPieceSink = async (piece, offset) => {
      if (abandoned || !stillWanted()) {
        abandoned = true;
        return;
      }
      if (offset === 0) [crc, received] = [0, 0]; // the source started over
      if (offset !== received || received + piece.length > ref.length) {
        throw new FsError("EIO", `chunk ${ino}/${index}: piece at ${offset}, expected ${received}`);
      }
      // The whole chunk in one piece (the backend's buffer): its aligned head with O_DIRECT,
      // then read back into the page cache by the kernel (DMA) for the reads that want it,
      // instead of copied into fresh page-cache pages by this process.
      const whole = offset === 0 && piece.length === ref.length;
      let done = whole ? await this.#writeDirect(fd, piece, start) : 0;
      if (done > 0) libc.willNeed(fd, start, done);
      while (done < piece.length) {
        done += await this.#io.write(fd, piece.subarray(done), start + offset + done);
      }
      crc = crc32(piece, crc);
      received += piece.length;
    };
    await this.source.fetchInto!(ino, index, ref, sink);
    if (abandoned || !stillWanted()) return;
    if (received !== ref.length || (isWhole(ref) && crc !== ref.crc)) {
      // A bad copy (from a peer): the backend's, checked, replaces it.
      this.stats.checksumFailures++;
      const why = received !== ref.length
        ? `${received} of ${ref.length} bytes`
        : `CRC 0x${crc.toString(16)}, the map says 0x${ref.crc.toString(16)}`;
      console.error(`skyfs: chunk ${ino}/${index} arrived bad (${why}); reading the backend`);
      const data = await this.fetchFromBackend(ino, index, ref);
      if (stillWanted()) await this.#storeChunk(ino, fd, index, ref, data);
      await this.#evict();
      return;
    }
    if (ref.length < CHUNK_SIZE) {
      const mode = libc.FALLOC_FL_PUNCH_HOLE | libc.FALLOC_FL_KEEP_SIZE;
      await this.#io.fallocate(fd, mode, start + ref.length, CHUNK_SIZE - ref.length);
    }
    this.index.set({ ino, index, version: ref.version, length: ref.length, crc });
    this.#verified.add(this.index.get(ino, index)!);
    this.stats.bytes = this.index.bytes;
    await this.#evict();
  }

  /**
   * Write a fetched chunk's file bytes (checked by the source) into the local file and record
   * them. The bytes overwrite the chunk in place; only the part past `ref.length` is punched
   * (it may hold stale bytes not in the index, e.g. unpublished writes before a crash), which
   * for a full chunk is nothing: punching the whole chunk first made every fill allocate fresh
   * pages (measured 10 vs 18 GB/s for pwrite here).
   */
  async #storeChunk(
    ino: number,
    fd: number,
    index: number,
    ref: ChunkRef,
    data: Uint8Array,
    direct = false,
  ) {
    const start = index * CHUNK_SIZE;
    this.index.delete(ino, index);
    const bytes = data.subarray(0, ref.length);
    let done = direct ? await this.#writeDirect(fd, bytes, start) : 0;
    while (done < bytes.length) {
      done += await this.#io.write(fd, bytes.subarray(done), start + done);
    }
    if (ref.length < CHUNK_SIZE) {
      const mode = libc.FALLOC_FL_PUNCH_HOLE | libc.FALLOC_FL_KEEP_SIZE;
      await this.#io.fallocate(fd, mode, start + ref.length, CHUNK_SIZE - ref.length);
    }
    const crc = isWhole(ref) ? ref.crc : crc32(bytes);
    this.index.set({ ino, index, version: ref.version, length: ref.length, crc });
    this.#verified.add(this.index.get(ino, index)!);
    this.stats.bytes = this.index.bytes;
  }

  /**
   * The 4 KiB-aligned head of `bytes` written at `start` of the local file with O_DIRECT (a
   * second fd on it, `/proc/PID/fd/N`): from the buffer to the disk, no copy into fresh
   * page-cache pages, which was most of an owner's CPU when it filled chunks from the backend
   * for a peer's first read (issue 13). Returns the bytes written (0: buffered instead, e.g.
   * a buffer not aligned, or a file system that refuses O_DIRECT, after which it is not tried).
   */
  async #writeDirect(fd: number, bytes: Uint8Array, start: number): Promise<number> {
    const aligned = bytes.length - bytes.length % DIRECT_ALIGN_BYTES;
    if (!this.#directStore || aligned < DIRECT_STORE_MIN_BYTES) return 0;
    if (addressOf(bytes) % DIRECT_ALIGN_BYTES !== 0) return 0;
    let direct: number;
    try {
      direct = await this.#io.open(
        `/proc/${Deno.pid}/fd/${fd}`,
        libc.O_WRONLY | libc.O_DIRECT | libc.O_CLOEXEC,
      );
    } catch {
      this.#directStore = false;
      return 0;
    }
    let done = 0;
    try {
      while (done < aligned) {
        done += await this.#io.write(direct, bytes.subarray(done, aligned), start + done);
      }
    } catch (error) {
      // EINVAL: O_DIRECT refused at the first write (some file systems accept the open).
      if (done > 0 || !(error instanceof FsError && error.errno === Errno.EINVAL)) throw error;
      this.#directStore = false;
      done = 0;
    } finally {
      await this.#io.close(direct).catch(() => {});
    }
    return done;
  }

  async #verifyLocal(fd: number, cached: { index: number; length: number; crc: number }) {
    const bytes = new Uint8Array(cached.length);
    const n = await this.#io.read(fd, bytes, cached.index * CHUNK_SIZE);
    return n === cached.length && crc32(bytes) === cached.crc;
  }

  /** Forget a local chunk and punch its bytes out of the local file. */
  async #dropLocal(ino: number, index: number, fd: number): Promise<void> {
    this.index.delete(ino, index);
    const mode = libc.FALLOC_FL_PUNCH_HOLE | libc.FALLOC_FL_KEEP_SIZE;
    await this.#io.fallocate(fd, mode, index * CHUNK_SIZE, CHUNK_SIZE);
    this.stats.bytes = this.index.bytes;
  }

  /**
   * The backends' copy of a chunk's file bytes, the whole object checked against its CRC: this
   * zone's store, then the other zones the map places it in (fetchFromZone, fetchFromRemote).
   * EIO naming the last failure when none has it.
   */
  async fetchFromBackend(ino: number, index: number, ref: ChunkRef): Promise<Uint8Array> {
    const errors: string[] = [];
    const data = await this.fetchFromZone(ino, index, ref, errors) ??
      await this.fetchFromRemote(ino, index, ref, errors);
    if (data) return data;
    throw new FsError(
      "EIO",
      errors.at(-1) ?? `backend object ${chunkObjectKey(ino, index, ref.version)} is missing`,
    );
  }

  /** Whether this node's zone is one the map places the chunk in (or the map does not say). */
  inOwnZone(ref: ChunkRef): boolean {
    return !this.zones || !ref.zones || ref.zones.includes(this.zones.zone);
  }

  /** Other zones the map places the chunk in, in its order (every other zone if it does not say). */
  async remoteZones(ref: ChunkRef): Promise<string[]> {
    const zones = this.zones;
    if (!zones) return [];
    return (ref.zones ?? await zones.zones()).filter((z) => z !== zones.zone);
  }

  /** Tier backend_zone: this zone's store, if the map places the chunk here (a queued copy not
   * made yet reads as absent). Failures are pushed to `errors`. */
  async fetchFromZone(ino: number, index: number, ref: ChunkRef, errors: string[] = []) {
    if (!this.inOwnZone(ref)) return undefined;
    const data = await this.#fetchFrom(
      this.backend,
      `the ${this.backend.kind} backend`,
      ino,
      index,
      ref,
      errors,
    );
    if (data) this.stats.backendZoneBytes += data.length;
    return data;
  }

  /**
   * Tier backend_remote: the other zones' stores placed in the map, in its order. A zone whose
   * store failed a request (an error, a timeout; not a missing object) is skipped for
   * `zoneDownMs`, unless no other zone gives the chunk: then the skipped zones are tried last.
   */
  async fetchFromRemote(ino: number, index: number, ref: ChunkRef, errors: string[] = []) {
    const skipped: string[] = [];
    for (const zone of await this.remoteZones(ref)) {
      const down = this.zonesDown.get(zone);
      if (down && this.#now() < down.until) {
        skipped.push(zone);
        continue;
      }
      const data = await this.#fetchFromZoneStore(zone, ino, index, ref, errors);
      if (data) return data;
    }
    for (const zone of skipped) {
      const data = await this.#fetchFromZoneStore(zone, ino, index, ref, errors);
      if (data) return data;
    }
    return undefined;
  }

  async #fetchFromZoneStore(
    zone: string,
    ino: number,
    index: number,
    ref: ChunkRef,
    errors: string[],
  ): Promise<Uint8Array | undefined> {
    let store: BackendStore;
    try {
      store = await this.zones!.store(zone);
    } catch (error) {
      errors.push(`cannot reach zone ${zone}'s backend: ${(error as Error).message}`);
      return undefined;
    }
    let failed = false;
    const data = await this.#fetchFrom(
      store,
      `zone ${zone}'s ${store.kind} backend`,
      ino,
      index,
      ref,
      errors,
      () => failed = true,
    );
    const down = this.zonesDown.get(zone);
    if (failed) {
      const now = this.#now();
      if (!down) {
        this.#log(
          `skyfs: zone ${zone}'s backend marked down for ${this.#zoneDownMs} ms ` +
            `(cluster.zone_down_ms): ${errors.at(-1)}`,
        );
      }
      this.zonesDown.set(zone, { since: down?.since ?? now, until: now + this.#zoneDownMs });
    } else if (down) {
      this.zonesDown.delete(zone);
      this.#log(
        `skyfs: zone ${zone}'s backend is back (answered after ${
          this.#now() - down.since
        } ms down)`,
      );
    }
    if (data) this.stats.backendRemoteBytes += data.length;
    return data;
  }

  async #fetchFrom(
    store: BackendStore,
    where: string,
    ino: number,
    index: number,
    ref: ChunkRef,
    errors: string[],
    unreachable?: () => void,
  ): Promise<Uint8Array | undefined> {
    const key = chunkObjectKey(ino, index, ref.version);
    let data;
    try {
      data = await store.get(key);
    } catch (error) {
      unreachable?.();
      // As an upload failure: EIO naming the backend (the mount logs it as one line).
      errors.push(`cannot read chunk ${ino}/${index} from ${where}: ${(error as Error).message}`);
      return undefined;
    }
    if (!data) {
      errors.push(`backend object ${key} is missing (${where})`);
      return undefined;
    }
    if (crc32(data) !== ref.crc) {
      this.stats.checksumFailures++;
      errors.push(`backend object ${key} fails its checksum (${where})`);
      return undefined;
    }
    this.stats.backendFetchedBytes += data.length;
    if (data.length < ref.length) {
      errors.push(`backend object ${key} has ${data.length} bytes, not ${ref.length}`);
      return undefined;
    }
    return data.subarray(0, ref.length);
  }

  /** A write of [offset, offset+length) reached the local file. */
  noteWrite(ino: number, offset: number, length: number): void {
    const state = this.#files.get(ino);
    if (!state || length <= 0) return;
    const first = Math.floor(offset / CHUNK_SIZE);
    const last = Math.floor((offset + length - 1) / CHUNK_SIZE);
    for (let index = first; index <= last; index++) {
      state.dirty.set(index, ++this.#seq);
      this.index.delete(ino, index);
    }
  }

  // --- truncate ---

  /** Inside the transaction that sets the size: shorten the stored map the same way. */
  async truncateInTxn(tx: NsTxn, ino: number, size: number): Promise<void> {
    const bytes = await tx.getChunkMap(ino);
    if (!bytes) return;
    tx.putChunkMap(ino, encodeChunkMap(truncateChunkMap(decodeChunkMap(bytes), size)));
  }

  /** After a truncate committed: local state follows (the local file was cut by the vfs). */
  truncated(ino: number, size: number): void {
    const state = this.#files.get(ino);
    if (state) {
      state.map = truncateChunkMap(state.map, size);
      for (const index of state.dirty.keys()) {
        if (index * CHUNK_SIZE >= size) state.dirty.delete(index);
      }
    }
    for (const cached of this.index.ofInode(ino)) {
      if (cached.index * CHUNK_SIZE + cached.length > size) this.index.delete(ino, cached.index);
    }
  }

  // --- SEEK_DATA / SEEK_HOLE ---

  /**
   * lseek SEEK_DATA / SEEK_HOLE of an open file of `size` bytes, answered from the chunk map and
   * not from the local file, which may lack chunks never fetched here: a chunk in the map is data
   * for its length (holes inside an uploaded chunk are not tracked, which POSIX allows), past it
   * and outside the map is hole; a dirty chunk's local bytes are complete, so the local file
   * answers within it. Returns -1 for SEEK_DATA with no data at or after `offset` (ENXIO).
   */
  seek(ino: number, fd: number, offset: number, whence: number, size: number): number {
    const state = this.#files.get(ino);
    if (!state) throw new FsError("EBADF", `inode ${ino} is not open on this node`);
    if (state.complete) {
      // Written here with passthrough: the local file holds every byte, holes included.
      const found = localSeek(fd, offset, whence);
      if (whence === libc.SEEK_DATA) return found !== undefined && found < size ? found : -1;
      return Math.min(found ?? size, size);
    }
    if (whence === libc.SEEK_DATA) {
      const first = Math.floor(offset / CHUNK_SIZE);
      const indexes = new Set([...state.map.keys(), ...state.dirty.keys()]);
      for (const index of [...indexes].filter((i) => i >= first).sort((a, b) => a - b)) {
        const found = this.#dataIn(state, fd, index, Math.max(offset, index * CHUNK_SIZE));
        if (found === undefined) continue;
        return found < size ? found : -1;
      }
      return -1;
    }
    for (let at = offset; at < size;) {
      const index = Math.floor(at / CHUNK_SIZE);
      const hole = this.#holeIn(state, fd, index, at);
      if (hole !== undefined) return Math.min(hole, size);
      at = (index + 1) * CHUNK_SIZE;
    }
    return size;
  }

  /** The first data offset at or after `from` within chunk `index`, if any. */
  #dataIn(state: FileState, fd: number, index: number, from: number): number | undefined {
    const end = (index + 1) * CHUNK_SIZE;
    if (state.dirty.has(index)) {
      const found = localSeek(fd, from, libc.SEEK_DATA);
      return found !== undefined && found < end ? found : undefined;
    }
    const ref = state.map.get(index);
    return ref && from < index * CHUNK_SIZE + ref.length ? from : undefined;
  }

  /** The first hole offset at or after `from` within chunk `index`, if any. */
  #holeIn(state: FileState, fd: number, index: number, from: number): number | undefined {
    const end = (index + 1) * CHUNK_SIZE;
    if (state.dirty.has(index)) {
      const found = localSeek(fd, from, libc.SEEK_HOLE) ?? from;
      return found < end ? found : undefined;
    }
    const ref = state.map.get(index);
    if (!ref) return from;
    const dataEnd = index * CHUNK_SIZE + ref.length;
    if (from >= dataEnd) return from;
    return dataEnd < end ? dataEnd : undefined;
  }

  // --- publishing ---

  /**
   * Upload the dirty chunks of `ino` as new objects; undefined when none are dirty. The local
   * fd is held meanwhile, so a close of the file's last handle does not close it under the reads.
   */
  async upload(ino: number): Promise<PendingChunk[] | undefined> {
    const state = this.#files.get(ino);
    if (state?.outsideSince) {
      const fd = this.#local.fdOf(ino);
      if (fd !== undefined) this.#markOutside(ino, fd, state);
    }
    if (!state || state.dirty.size === 0) return undefined;
    const fd = this.#local.hold(ino);
    if (fd === undefined) {
      throw new FsError("EIO", `inode ${ino} has unpublished chunks but no local file open`);
    }
    try {
      return await this.#uploadFrom(ino, fd, state);
    } finally {
      await this.#local.release(ino);
    }
  }

  async #uploadFrom(ino: number, fd: number, state: FileState): Promise<PendingChunk[]> {
    const size = libc.fstat(fd).size;
    // A small file: its bytes go into the chunk map, in the publishing transaction (no object).
    if (size > 0 && size <= this.inlineBytes && state.dirty.has(0)) {
      return [await this.#inlineChunk(fd, state.dirty.get(0)!, size)];
    }
    // Where this publish's chunks go: this zone's store now, `sync` zones in all before the
    // publish, the rest queued in the publishing transaction (placeChunk).
    const zones = this.zones;
    const zoneNames = zones ? await zones.zones() : [];
    const placed = zones ? placeChunk(zones.zone, zoneNames, this.#placement(ino)) : undefined;
    const syncStores = zones && placed
      ? await Promise.all(
        placed.sync.slice(1).map(async (zone) => {
          try {
            return { zone, store: await zones.store(zone) };
          } catch (error) {
            throw new FsError(
              "EIO",
              `cannot reach zone ${zone}'s backend: ${(error as Error).message}`,
            );
          }
        }),
      )
      : [];
    const work = [...state.dirty].filter(([index]) => index * CHUNK_SIZE < size);
    const out: PendingChunk[] = [];
    // Grown past cluster.inline_bytes with its inline chunk unchanged (a write further on, or
    // the limit lowered): that chunk becomes an object too, so the map is format 1 again.
    const kept = state.map.get(0);
    if (kept?.inline && !state.dirty.has(0) && size > this.inlineBytes) {
      out.push(await this.#convertInline(ino, kept, zones, zoneNames, placed, syncStores));
    }
    const next = async (): Promise<void> => {
      for (let item = work.shift(); item; item = work.shift()) {
        const [index, seq] = item;
        const start = index * CHUNK_SIZE;
        // A pooled buffer: a fresh 4 MiB one per chunk was zeroed and faulted in page by page
        // (memset and page faults were ~10% of a writing node's CPU, issue 13).
        const data = takeBuffer(Math.min(CHUNK_SIZE, size - start));
        try {
          let done = 0;
          while (done < data.length) {
            const n = await this.#io.read(fd, data.subarray(done), start + done);
            if (n === 0) break;
            done += n;
          }
          // Past the end only if the file shrank meanwhile: zeros, as a read there gives.
          data.fill(0, done);
          const version = this.#newVersion();
          const objectKey = chunkObjectKey(ino, index, version);
          try {
            await this.backend.put(objectKey, data);
          } catch (error) {
            throw new FsError(
              "EIO",
              `cannot store chunk ${ino}/${index} in the ${this.backend.kind} backend: ${
                (error as Error).message
              }`,
            );
          }
          // cluster.zone_sync > 1: the other synchronous zones hold it before the publish.
          await Promise.all(syncStores.map(async ({ zone, store }) => {
            try {
              await store.put(objectKey, data);
              this.stats.syncCopies++;
            } catch (error) {
              throw new FsError(
                "EIO",
                `cannot store chunk ${ino}/${index} in zone ${zone}'s backend: ${
                  (error as Error).message
                }`,
              );
            }
          }));
          const crc = crc32(data);
          const ref: ChunkRef = { version, length: data.length, crc, objectLength: data.length };
          // With one zone there is nothing to say (and the map stays as small as before zones).
          if (placed && zoneNames.length > 1) {
            ref.zones = [...placed.sync, ...placed.queued];
          }
          out.push({
            index,
            seq,
            ref,
            localCrc: crc,
            ...(placed && placed.queued.length > 0 ? { queued: placed.queued } : {}),
          });
        } finally {
          recycleBuffer(data);
        }
        this.stats.uploads++;
      }
    };
    await Promise.all(Array.from({ length: this.#uploadParallel }, next));
    return out;
  }

  /** Chunk 0 of a file of `size` <= inlineBytes as an inline chunk: its bytes read now. */
  async #inlineChunk(fd: number, seq: number, size: number): Promise<PendingChunk> {
    const data = new Uint8Array(size);
    let done = 0;
    while (done < size) {
      const n = await this.#io.read(fd, data.subarray(done), done);
      if (n === 0) break;
      done += n;
    }
    // Past the end only if the file shrank meanwhile: zeros, as a read there gives.
    const crc = crc32(data);
    const version = this.#newVersion();
    this.stats.inlineWrites++;
    return {
      index: 0,
      seq,
      ref: { version, length: size, crc, objectLength: size, inline: data },
      localCrc: crc,
    };
  }

  /** An unchanged inline chunk uploaded as an object (its file grew past the limit). */
  async #convertInline(
    ino: number,
    kept: ChunkRef,
    zones: ZoneStores | undefined,
    zoneNames: string[],
    placed: { sync: string[]; queued: string[] } | undefined,
    syncStores: { zone: string; store: BackendStore }[],
  ): Promise<PendingChunk> {
    const data = kept.inline!;
    const version = this.#newVersion();
    const objectKey = chunkObjectKey(ino, 0, version);
    for (const { zone, store } of [{ zone: zones?.zone, store: this.backend }, ...syncStores]) {
      try {
        await store.put(objectKey, data);
      } catch (error) {
        throw new FsError(
          "EIO",
          `cannot store chunk ${ino}/0 in ${
            zone ? `zone ${zone}'s` : "the"
          } ${store.kind} backend: ${(error as Error).message}`,
        );
      }
    }
    this.stats.syncCopies += syncStores.length;
    this.stats.uploads++;
    this.stats.inlineConversions++;
    const ref: ChunkRef = {
      version,
      length: data.length,
      crc: kept.crc,
      objectLength: data.length,
    };
    if (placed && zoneNames.length > 1) ref.zones = [...placed.sync, ...placed.queued];
    return {
      index: 0,
      seq: -1,
      ref,
      localCrc: kept.crc,
      converted: kept.version,
      ...(placed && placed.queued.length > 0 ? { queued: placed.queued } : {}),
    };
  }

  #newVersion(): string {
    return `${this.nodeId}-${Date.now().toString(36)}-${(++this.#versionCounter).toString(36)}`;
  }

  /** In the publishing transaction: the stored map with the uploaded chunks, cut at `size`. */
  async applyInTxn(tx: NsTxn, ino: number, pending: PendingChunk[], size: number) {
    const map = decodeChunkMap(await tx.getChunkMap(ino));
    for (const p of pending) map.set(p.index, p.ref);
    tx.putChunkMap(ino, encodeChunkMap(truncateChunkMap(map, size)));
    // The copies to other zones are queued in the same commit: a crash after it leaves them in
    // the queue for another node of this zone (src/cluster/replication.ts).
    const zone = this.zones?.zone;
    if (zone === undefined) return;
    const now = Date.now();
    for (const p of pending) {
      if (!p.queued || p.index * CHUNK_SIZE >= size) continue;
      const entry: ReplEntry = {
        ino,
        index: p.index,
        version: p.ref.version,
        crc: p.ref.crc,
        targets: p.queued,
        owner: this.nodeId,
        queuedMs: now,
      };
      tx.putOutside(
        replQueueKey(zone, ino, p.index, p.ref.version),
        new TextEncoder().encode(JSON.stringify(entry)),
      );
    }
  }

  /** After the publishing transaction committed. */
  published(ino: number, pending: PendingChunk[]): void {
    this.#pageSignatures.delete(ino);
    if (pending.some((p) => p.queued)) this.onQueued();
    const state = this.#files.get(ino);
    if (!state) return;
    for (const p of pending) {
      state.map.set(p.index, p.ref);
      if (p.converted !== undefined) {
        // Same bytes under the object's version: the local copy stays valid.
        const cached = this.index.get(ino, p.index);
        if (cached?.version === p.converted && cached.length === p.ref.length) {
          const { index, length, crc } = cached;
          const checked = this.#verified.has(cached);
          this.index.set({ ino, index, version: p.ref.version, length, crc });
          if (checked) this.#verified.add(this.index.get(ino, p.index)!);
        }
        continue;
      }
      if (state.dirty.get(p.index) !== p.seq) continue; // written again since: stays dirty
      state.dirty.delete(p.index);
      // The row's fields only (an inline ref's bytes are not kept twice).
      const { version, length } = p.ref;
      this.index.set({ ino, index: p.index, version, length, crc: p.localCrc });
      this.#verified.add(this.index.get(ino, p.index)!);
    }
    this.stats.bytes = this.index.bytes;
  }

  // --- serving peers, cache limits ---

  /**
   * A peer asks for a chunk this node owns: the local copy if it holds that version (checked
   * once per process), else the backend's, which is then kept (so the backend is read once for
   * the cluster: concurrent requests share that fill). A chunk already checked in this process
   * is streamed: the transport reads it piece by piece from the local file (`ServedChunk`).
   * Otherwise each request gets its own buffer from the pool, handed over to the transport,
   * which sends it without a copy and recycles it.
   */
  async serveChunk(ino: number, index: number, ref: ChunkRef): Promise<Uint8Array | ServedChunk> {
    if (this.#files.get(ino)?.complete) {
      // Written here with passthrough: the local bytes may be newer than any published version
      // (writes this node has not seen yet), and must not be overwritten by a fill: the
      // backend's copy of the version asked for, stored nowhere.
      return await this.fetchFromBackend(ino, index, ref);
    }
    const held = await this.#acquireServeFd(ino);
    const cached = this.index.get(ino, index);
    if (
      cached && cached.version === ref.version && cached.length === ref.length &&
      this.#verified.has(cached)
    ) {
      this.index.touch(ino, index);
      this.stats.hits++;
      return this.#stream(held, ino, index, cached);
    }
    try {
      const local = await this.#readVerified(held.fd, ino, index, ref);
      if (local) return local;
      const key = `serve/${ino}/${index}`;
      const shared = this.#inflight.get(key) as Promise<Uint8Array> | undefined;
      if (!shared) {
        // This request filled it: it sends the fill's buffer (written to the local file with
        // O_DIRECT, so the file's pages are not in the page cache to splice from), which the
        // transport recycles; nobody else holds it.
        const pending = this.#serveFill(held.fd, ino, index, ref).finally(() =>
          this.#inflight.delete(key)
        );
        this.#inflight.set(key, pending as unknown as Promise<void>);
        const data = await pending;
        await this.#evict();
        return data.subarray(0, ref.length);
      }
      await shared;
      await this.#evict();
      // Stored here now (checked): sent from the local file like any cached chunk, without a
      // copy. Not stored (dirty here meanwhile): the backend's copy, read for this request.
      const stored = this.index.get(ino, index);
      if (
        stored && stored.version === ref.version && stored.length === ref.length &&
        this.#verified.has(stored)
      ) {
        return this.#stream(await this.#acquireServeFd(ino), ino, index, stored);
      }
      return await this.fetchFromBackend(ino, index, ref);
    } finally {
      this.#releaseServeFd(held);
    }
  }

  #stream(held: ServeFd, ino: number, index: number, cached: CachedChunk): ServedChunk {
    let released = false;
    return {
      length: cached.length,
      fd: held.fd,
      start: index * CHUNK_SIZE,
      unchanged: () => this.index.get(ino, index) === cached,
      read: async (into, offset) => {
        const n = await this.#io.read(held.fd, into, index * CHUNK_SIZE + offset);
        // Evicted, refilled or overwritten meanwhile: the row object changed.
        if (n !== into.length || this.index.get(ino, index) !== cached) {
          throw new Error(`chunk ${ino}/${index} changed while being sent`);
        }
      },
      done: () => {
        if (!released) this.#releaseServeFd(held);
        released = true;
      },
    };
  }

  /** The local bytes of the chunk in a pooled buffer, or undefined if not held or corrupt. */
  async #readVerified(fd: number, ino: number, index: number, ref: ChunkRef) {
    const cached = this.index.get(ino, index);
    if (!cached || cached.version !== ref.version || cached.length !== ref.length) return;
    const bytes = takeBuffer(cached.length);
    const n = await this.#io.read(fd, bytes, index * CHUNK_SIZE);
    // The row may have changed while the read was in flight (an asynchronous engine).
    if (n === cached.length && this.index.get(ino, index) === cached) {
      if (this.#verified.has(cached) || crc32(bytes) === cached.crc) {
        this.#verified.add(cached);
        this.index.touch(ino, index);
        this.stats.hits++;
        return bytes;
      }
      this.stats.checksumFailures++;
    }
    recycleBuffer(bytes);
  }

  async #serveFill(fd: number, ino: number, index: number, ref: ChunkRef) {
    const data = await this.fetchFromBackend(ino, index, ref);
    const state = this.#files.get(ino);
    if (!state?.dirty.has(index)) await this.#storeChunk(ino, fd, index, ref, data, true);
    return data;
  }

  /**
   * An fd on the local file of `ino` for serving peers and evicting, kept open for the next
   * request (an open and close per 4 MiB chunk showed in profiles). Unused ones beyond 64 are
   * closed, least recently used first.
   */
  async #acquireServeFd(ino: number, create = true): Promise<ServeFd> {
    let held = this.#serveFds.get(ino);
    if (!held) {
      const fd = await this.#io.open(
        this.#local.path(ino),
        libc.O_RDWR | libc.O_CLOEXEC | (create ? libc.O_CREAT : 0),
      );
      held = this.#serveFds.get(ino); // another request may have opened it meanwhile
      if (held) await this.#io.close(fd);
      else held = { fd, users: 0, dropped: false };
    }
    this.#serveFds.delete(ino);
    this.#serveFds.set(ino, held);
    held.users++;
    return held;
  }

  #releaseServeFd(held: ServeFd): void {
    held.users--;
    if (held.dropped && held.users === 0) this.#closeFd(held.fd);
    if (this.#serveFds.size <= 64) return;
    for (const [ino, old] of this.#serveFds) {
      if (this.#serveFds.size <= 64) break;
      if (old.users === 0) this.#dropServeFd(ino);
    }
  }

  /** Forget the serve fd of `ino`; it closes now, or when its last request is done. */
  #dropServeFd(ino: number): void {
    const held = this.#serveFds.get(ino);
    if (!held) return;
    this.#serveFds.delete(ino);
    held.dropped = true;
    if (held.users === 0) this.#closeFd(held.fd);
  }

  #closeFd(fd: number): void {
    this.#io.close(fd).catch((error) => console.error(`skyfs: closing fd ${fd}: ${error}`));
  }

  /** Evict least recently used chunks of files not open here until under the limit. */
  async #evict(): Promise<void> {
    if (this.index.bytes <= this.stats.capacityBytes) return;
    for (const victim of this.index.oldest(64)) {
      if (this.index.bytes <= this.stats.capacityBytes) break;
      if (this.#local.fdOf(victim.ino) !== undefined) continue;
      let held: ServeFd;
      try {
        held = await this.#acquireServeFd(victim.ino, false);
      } catch {
        this.index.delete(victim.ino, victim.index); // the local file is gone already
        continue;
      }
      try {
        await this.#dropLocal(victim.ino, victim.index, held.fd);
      } finally {
        this.#releaseServeFd(held);
      }
      this.stats.evictions++;
    }
  }

  /**
   * Drop every cached chunk of `ino` from this node (the admin API's drop-cache): the next read
   * fetches them again from a peer or the backend. Refused (EBUSY) while the file is open here or
   * holds data not yet uploaded. Resolves to what was dropped.
   */
  async dropCached(ino: number): Promise<{ chunks: number; bytes: number }> {
    if (this.#local.fdOf(ino) !== undefined || this.hasDirty(ino)) {
      throw new FsError("EBUSY", `inode ${ino} is open on this node; close it first`);
    }
    const cached = this.index.ofInode(ino);
    if (cached.length === 0) return { chunks: 0, bytes: 0 };
    let held: ServeFd;
    try {
      held = await this.#acquireServeFd(ino, false);
    } catch {
      this.index.deleteInode(ino); // the local file is gone already
      return { chunks: 0, bytes: 0 };
    }
    let bytes = 0;
    try {
      for (const chunk of cached) {
        await this.#dropLocal(ino, chunk.index, held.fd);
        bytes += chunk.length;
      }
    } finally {
      this.#releaseServeFd(held);
    }
    return { chunks: cached.length, bytes };
  }

  /**
   * A metadata watch saw `key` change to `value` (undefined: deleted) at `revision`. True when
   * that is this node's own latest write of the key coming back (nothing for the kernel to
   * drop). A regular file seen at nlink 0 that is open here gets this node's record; an orphan
   * mark is acknowledged once those records are in (the reclaim barrier, OpenRecords). Watch
   * events must come here in revision order, a batch in one synchronous run.
   */
  forgetMetadata(key: Uint8Array, value?: Uint8Array, revision?: number): boolean {
    const own = this.#ns?.watched(key, value) ?? false;
    if (key.length === 12 && key[3] === INODE_TAG) {
      const ino = inoOfKey(key);
      if (value) {
        const record = decodeInode(ino, value);
        if (record.nlink === 0 && (record.mode & 0o170000) === 0o100000) {
          this.#sawUnlinked(ino, record);
        }
      }
    } else if (key.length === 12 && key[3] === ORPHAN_TAG && value && revision !== undefined) {
      this.#acknowledge(revision).catch(() => {});
    }
    return own;
  }

  /** Local chunks of an inode deleted everywhere. */
  forgetInode(ino: number): void {
    this.#openedInodes.delete(ino);
    this.#pageSignatures.delete(ino);
    this.#holdsAsked.delete(ino);
    this.records?.forget(ino);
    this.#dropServeFd(ino);
    this.index.deleteInode(ino);
    this.#files.delete(ino);
    this.stats.bytes = this.index.bytes;
  }

  /** Before the metadata store closes: this node's open records go (its lease is revoked). */
  async shutdown(): Promise<void> {
    this.#reclaimStopped = true;
    if (this.#reclaimTimer !== undefined) clearTimeout(this.#reclaimTimer);
    this.#reclaimTimer = undefined;
    await this.records?.close();
  }

  async close(): Promise<void> {
    // At shutdown nothing is in flight any more: close the serve fds synchronously.
    for (const held of this.#serveFds.values()) libc.close(held.fd);
    this.#serveFds.clear();
    await this.index.close();
  }
}
