/**
 * The file-system namespace on MetaKV (DESIGN.md section 3): how inodes, directory entries,
 * symlink targets, xattrs and the orphan list are encoded as keys, and the optimistic transaction
 * through which every POSIX metadata operation runs as exactly one MetaKV txn.
 *
 * A transaction records the modRevision of every key it reads and commits with a compare on each,
 * so any backend with etcd txn semantics (embedded, CURP, etcd) gives serializable operations; on a
 * conflict the operation's function runs again on fresh reads. Commits, validations and reads are
 * sent with `revisionsUnused` (CURP's one-round-trip fast path, DESIGN.md section 4): a key this
 * node wrote on the fast path has no known modRevision, so it is compared by value instead (equal
 * bytes mean the operation would decide the same; every change to a directory's entries rewrites
 * its inode record with a new ctime, so equal bytes do not hide a change of entries). The POSIX
 * rules themselves live in src/vfs; this file knows only keys, records and the retry loop.
 *
 * Invariant the compares rely on: every change to a key owned by inode X (its directory entries if
 * X is a directory, its xattrs) also writes X's inode record. So a transaction that read X's record
 * conflicts with any concurrent change to X's entries or xattrs, and range reads (is the directory
 * empty, which xattrs exist) need no compare of their own.
 * @module
 */

import { DurationHistogram } from "../duration_histogram.ts";
import { monotonicSeconds, wallClock } from "../io/libc.ts";
import type { Compare, KeyValue, MergeRequest, MetaKV, RequestOp, TxnResponse } from "./kv.ts";
import { applyMerge, prefixEnd } from "./kv.ts";
import { FsError } from "../fs_error.ts";

/** The metadata format this build writes; a store with a newer one is refused. */
export const NAMESPACE_FORMAT = 1;

/** The root directory's inode number (the FUSE root node id). */
export const ROOT_INO = 1;

/** Seconds and nanoseconds since the epoch (the same shape as src/vfs Timespec). */
export interface Timespec {
  sec: number;
  nsec: number;
}

/** One inode as stored. `mode` includes the S_IFMT type bits. */
export interface InodeRecord {
  ino: number;
  mode: number;
  uid: number;
  gid: number;
  nlink: number;
  rdev: number;
  /** Logical size in bytes (symlinks: length of the target). */
  size: number;
  /** Directories: the inode of the directory holding it (root: itself). Others: 0. */
  parent: number;
  generation: number;
  atime: Timespec;
  mtime: Timespec;
  ctime: Timespec;
  btime: Timespec;
  /** Symlinks only: the target bytes. */
  target?: Uint8Array;
  /** The volume the inode belongs to (its `VolumeRecord.id`); 0 or absent: none. Stored in the
   * header's bytes 45-47 (the high bytes of what was a u64 generation), so records written before volumes existed read as 0. */
  volume?: number;
  /** An orphan of a volume whose usage (inode and bytes) its unlink already took off the volume:
   * unlinked in a cluster while no handle on the unlinking node had it open (another node may,
   * with no trace in the store). Volume accounting (src/vfs/volume_quota.ts `account`, gc's purge)
   * counts nothing for it: not at its deletion, not at later size changes. Bit 0 of header byte
   * 44 (spare before), so older records read as counted. */
  uncounted?: boolean;
}

/** A directory entry's value: the child and its S_IFMT type bits. */
export interface DirentRecord {
  ino: number;
  type: number;
}

export interface NamedDirent extends DirentRecord {
  name: Uint8Array;
}

// ---------------------------------------------------------------------------------------------
// Key encoding. Every key starts with "fs/" so the store can hold other subsystems' keys too.
// Numbers are big-endian u64 so that a directory's entries (and an inode's xattrs) sort together.

const TAG_FORMAT = 0x56; // "V": format version, JSON
const TAG_COUNTER = 0x4e; // "N": next unallocated inode number
const TAG_INODE = 0x49; // "I" + ino
const TAG_DENTRY = 0x44; // "D" + parent ino + name bytes
const TAG_XATTR = 0x58; // "X" + ino + name (UTF-8)
const TAG_ORPHAN = 0x4f; // "O" + ino: nlink 0 but still referenced; purged at startup
const TAG_PENDING = 0x50; // "P" + ino: its local file may be ahead of its record (vfs core.ts)
const TAG_CHUNKS = 0x43; // "C" + ino: cluster mode's chunk map (src/cache/chunk_map.ts)
const TAG_VOLUME = 0x76; // "v" + name: a volume's fixed facts (VolumeRecord), JSON
const TAG_QUOTA = 0x71; // "q" + volume id: its capacity, limits, usage and reservations, JSON
const TAG_VOLUME_COUNTER = 0x6e; // "n": the next unused volume id

const PREFIX = [0x66, 0x73, 0x2f]; // "fs/"
const encoder = new TextEncoder();
const decoder = new TextDecoder();

// Keys are built for every read and write of every operation: bytes are set one by one, as a
// DataView per call and a set() from an array cost more than the rest of the key.
function tagKey(tag: number, ino?: number, suffix?: Uint8Array): Uint8Array {
  const length = PREFIX.length + 1 + (ino === undefined ? 0 : 8) + (suffix?.length ?? 0);
  const key = new Uint8Array(length);
  key[0] = PREFIX[0];
  key[1] = PREFIX[1];
  key[2] = PREFIX[2];
  key[PREFIX.length] = tag;
  if (ino !== undefined) writeU64(key, PREFIX.length + 1, ino);
  if (suffix) key.set(suffix, PREFIX.length + (ino === undefined ? 1 : 9));
  return key;
}

/** Big-endian u64 (so keys sort by inode number). */
function writeU64(into: Uint8Array, at: number, value: number): void {
  const hi = Math.floor(value / 2 ** 32);
  const lo = value >>> 0;
  into[at] = hi >>> 24;
  into[at + 1] = (hi >>> 16) & 0xff;
  into[at + 2] = (hi >>> 8) & 0xff;
  into[at + 3] = hi & 0xff;
  into[at + 4] = lo >>> 24;
  into[at + 5] = (lo >>> 16) & 0xff;
  into[at + 6] = (lo >>> 8) & 0xff;
  into[at + 7] = lo & 0xff;
}

function readU64(from: Uint8Array, at: number): number {
  const hi = ((from[at] << 24) | (from[at + 1] << 16) | (from[at + 2] << 8) | from[at + 3]) >>> 0;
  const lo = ((from[at + 4] << 24) | (from[at + 5] << 16) | (from[at + 6] << 8) | from[at + 7]) >>>
    0;
  return hi * 2 ** 32 + lo;
}

export const keys = {
  /** Every key of the namespace: the range a watch over all of it covers (with prefixEnd). */
  all: () => new Uint8Array(PREFIX),
  format: () => tagKey(TAG_FORMAT),
  counter: () => tagKey(TAG_COUNTER),
  inode: (ino: number) => tagKey(TAG_INODE, ino),
  inodes: () => tagKey(TAG_INODE),
  dentry: (parent: number, name: Uint8Array) => tagKey(TAG_DENTRY, parent, name),
  dentries: (parent: number) => tagKey(TAG_DENTRY, parent),
  xattr: (ino: number, name: string) => tagKey(TAG_XATTR, ino, encoder.encode(name)),
  xattrs: (ino: number) => tagKey(TAG_XATTR, ino),
  orphan: (ino: number) => tagKey(TAG_ORPHAN, ino),
  orphans: () => tagKey(TAG_ORPHAN),
  pending: (ino: number) => tagKey(TAG_PENDING, ino),
  pendings: () => tagKey(TAG_PENDING),
  chunkMap: (ino: number) => tagKey(TAG_CHUNKS, ino),
  chunkMaps: () => tagKey(TAG_CHUNKS),
  volume: (name: string) => tagKey(TAG_VOLUME, undefined, encoder.encode(name)),
  volumes: () => tagKey(TAG_VOLUME),
  quota: (id: number) => tagKey(TAG_QUOTA, id),
  volumeCounter: () => tagKey(TAG_VOLUME_COUNTER),
};

/** Largest volume id: it is kept in 3 bytes of the inode record. */
export const MAX_VOLUME_ID = 2 ** 24 - 1;

/** A volume's facts that never change after creation (src/vfs/volumes.ts has the rules). */
export interface VolumeRecord {
  name: string;
  id: number;
  /** The inode of its root directory. */
  ino: number;
  parameters: Record<string, string>;
  /** ISO time of creation. */
  createdAt: string;
}

/** A volume's limits and usage, written in the transaction of every change that moves them. */
export interface QuotaRecord {
  capacityBytes: number;
  /** Most inodes; 0: no limit. */
  inodes: number;
  usedBytes: number;
  usedInodes: number;
  /** Bytes of capacity reserved by each node for writes not yet published (node id -> bytes). */
  reserved: Record<string, number>;
}

/** The inode number at the end of an inode, orphan, dentry or xattr key. */
function inoOfKey(key: Uint8Array): number {
  return readU64(key, PREFIX.length + 1);
}

/** The inode number of an inode key (`keys.inode`); undefined for every other key. */
export function inodeOfKey(key: Uint8Array): number | undefined {
  if (key.length !== PREFIX.length + 9 || key[PREFIX.length] !== TAG_INODE) return undefined;
  return inoOfKey(key);
}

/** Whether `key` is a directory entry key (`keys.dentry`): a name added, removed or repointed. */
export function isDentryKey(key: Uint8Array): boolean {
  return key.length > PREFIX.length + 9 && key[PREFIX.length] === TAG_DENTRY;
}

/** The directory of a directory entry key (`keys.dentry`); undefined for every other key. */
export function parentOfDentryKey(key: Uint8Array): number | undefined {
  return isDentryKey(key) ? inoOfKey(key) : undefined;
}

/** The same for a cache key string (one char per byte). */
function inoOfKeyString(name: string): number {
  let value = 0;
  for (let i = PREFIX.length + 1; i < PREFIX.length + 9; i++) {
    value = value * 256 + name.charCodeAt(i);
  }
  return value;
}

// ---------------------------------------------------------------------------------------------
// Record encoding: a fixed little-endian header, then the symlink target.

const RECORD_VERSION = 1;
const HEADER_BYTES = 96;

// Offsets in the header of the fields a directory's entry changes touch, and of the merge count
// (bytes 1-3, zero in a record written whole): on a store with merges (MetaKV.merges), an entry
// change writes its directory's record as a merge (mtime and ctime raised to the change's time,
// nlink moved by its delta, the count bumped) instead of a put, and compares the record with these
// bytes ignored, so changes of one directory's entries commute (CURP's fast path side by side).
// The count makes every merge change the record's bytes, so a compare of the whole value (a key
// whose modRevision is unknown) still sees every entry change.
const AT_MERGES = 1;
const AT_NLINK = 16;
const AT_MTIME = 60;
const AT_CTIME = 72;
/** The bytes a directory merge may change: what a merging transaction's compare ignores. */
const MERGED_BYTES = [
  { at: AT_MERGES, width: 3 },
  { at: AT_NLINK, width: 4 },
  { at: AT_MTIME, width: 12 },
  { at: AT_CTIME, width: 12 },
];

// Written byte by byte, 64-bit fields as two 32-bit halves (exact below 2^53, as decodeInode
// reads them): a DataView and a BigInt per 64-bit field (six) cost 1.3-1.9 us a record, and every
// create, rename, unlink and attribute change writes two or three (src/fuse/README.md).
export function encodeInode(record: InodeRecord): Uint8Array {
  const target = record.target;
  const out = new Uint8Array(HEADER_BYTES + (target?.length ?? 0));
  out[0] = RECORD_VERSION;
  putU32(out, 4, record.mode);
  putU32(out, 8, record.uid);
  putU32(out, 12, record.gid);
  putU32(out, 16, record.nlink);
  putU32(out, 20, record.rdev);
  putI64(out, 24, record.size);
  putI64(out, 32, record.parent);
  // Generation: 32 bits at 40 (it was a u64; its high bytes are 0 in every record written), then
  // byte 44 flags (bit 0: `uncounted`) and the volume id in bytes 45-47 (bytes 1-3 are the
  // directory merge count).
  putU32(out, 40, record.generation);
  if (record.uncounted) out[44] = 1;
  const volume = record.volume ?? 0;
  out[45] = volume & 0xff;
  out[46] = (volume >>> 8) & 0xff;
  out[47] = (volume >>> 16) & 0xff;
  putTime(out, 48, record.atime);
  putTime(out, 60, record.mtime);
  putTime(out, 72, record.ctime);
  putTime(out, 84, record.btime);
  if (target !== undefined) out.set(target, HEADER_BYTES);
  return out;
}

/** Little-endian u32 (also the low half of a negative i64: `>>>` and `&` take it mod 2^32). */
function putU32(out: Uint8Array, at: number, value: number): void {
  out[at] = value & 0xff;
  out[at + 1] = (value >>> 8) & 0xff;
  out[at + 2] = (value >>> 16) & 0xff;
  out[at + 3] = (value >>> 24) & 0xff;
}

/** Little-endian two's complement i64 of an integer within +-2^53. */
function putI64(out: Uint8Array, at: number, value: number): void {
  putU32(out, at, value >>> 0);
  putU32(out, at + 4, Math.floor(value / 0x1_0000_0000));
}

/** A Timespec as i64 seconds then u32 nanoseconds. */
function putTime(out: Uint8Array, at: number, time: Timespec): void {
  putI64(out, at, time.sec);
  putU32(out, at + 8, time.nsec);
}

export function decodeInode(ino: number, bytes: Uint8Array): InodeRecord {
  if (bytes.length < HEADER_BYTES || bytes[0] !== RECORD_VERSION) {
    throw new Error(
      `Inode ${ino} record has version ${bytes[0]} and ${bytes.length} bytes; ` +
        `this build reads version ${RECORD_VERSION}: upgrade skyfs`,
    );
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  // 64-bit fields as two 32-bit halves (exact below 2^53): a BigInt per field cost more than
  // the rest of the decode, on every GETATTR and LOOKUP (src/fuse/README.md).
  const time = (i: number): Timespec => ({
    sec: view.getInt32(52 + 12 * i, true) * 0x1_0000_0000 + view.getUint32(48 + 12 * i, true),
    nsec: view.getUint32(56 + 12 * i, true),
  });
  const record: InodeRecord = {
    ino,
    mode: view.getUint32(4, true),
    uid: view.getUint32(8, true),
    gid: view.getUint32(12, true),
    nlink: view.getUint32(16, true),
    rdev: view.getUint32(20, true),
    size: view.getUint32(28, true) * 0x1_0000_0000 + view.getUint32(24, true),
    parent: view.getUint32(36, true) * 0x1_0000_0000 + view.getUint32(32, true),
    generation: view.getUint32(40, true),
    atime: time(0),
    mtime: time(1),
    ctime: time(2),
    btime: time(3),
  };
  if (bytes.length > HEADER_BYTES) record.target = bytes.slice(HEADER_BYTES);
  const volume = volumeOfRecord(bytes);
  if (volume !== 0) record.volume = volume;
  if ((bytes[44] & 1) !== 0) record.uncounted = true;
  return record;
}

/** The volume id of an encoded inode record, without decoding the rest. */
export function volumeOfRecord(bytes: Uint8Array): number {
  return bytes[45] | (bytes[46] << 8) | (bytes[47] << 16);
}

function encodeDirent(dirent: DirentRecord): Uint8Array {
  const out = new Uint8Array(12);
  writeU64(out, 0, dirent.ino);
  // The type as a big-endian u32, byte by byte (a DataView was a second allocation).
  const type = dirent.type;
  out[8] = type >>> 24;
  out[9] = (type >>> 16) & 0xff;
  out[10] = (type >>> 8) & 0xff;
  out[11] = type & 0xff;
  return out;
}

function decodeDirent(bytes: Uint8Array): DirentRecord {
  return { ino: direntIno(bytes), type: direntType(bytes) };
}

/** The inode number of a stored dirent (`NamespaceStore.scanDir`). */
export function direntIno(bytes: Uint8Array): number {
  return readU64(bytes, 0);
}

/** The S_IFMT bits of a stored dirent (`NamespaceStore.scanDir`). */
export function direntType(bytes: Uint8Array): number {
  return ((bytes[8] << 24) | (bytes[9] << 16) | (bytes[10] << 8) | bytes[11]) >>> 0;
}

function cloneRecord(record: InodeRecord): InodeRecord {
  return {
    ...record,
    atime: { ...record.atime },
    mtime: { ...record.mtime },
    ctime: { ...record.ctime },
    btime: { ...record.btime },
  };
}

// ---------------------------------------------------------------------------------------------
// The read cache: values with the modRevision they were read or written at.

interface CachedValue {
  /** The key's bytes, for an entry this namespace's own commit wrote (the store keeps the same
   * bytes: PutRequest.owned): a transaction reading or writing the key again takes these instead
   * of building new ones (a Uint8Array costs 0.3 us to allocate in Deno, and a rename built 8
   * keys; src/fuse/README.md, "A rename's and an unlink's transaction"). Not kept for entries only
   * read (memory: 200,000 entries by default). Never written to by anyone. */
  key?: Uint8Array;
  /** Undefined: the key is absent (modRevision 0). */
  value: Uint8Array | undefined;
  /** Undefined when written on a fast path, which cannot know it: compare the value then. */
  modRevision: number | undefined;
  /** The store revision at which this was the key's state (decides which of two is newer). */
  knownAt: number;
  /** Namespace-local sequence number of when this entry was cached. */
  cachedAt?: number;
  /** Written by this namespace's own commit (not read from the store). */
  own?: boolean;
  /** Inode records only: the values of this namespace's own earlier writes of the key that this
   * one replaced (newest first, at most OWN_HISTORY). A watch delivers a write's echo after its
   * commit, which on the fast path can be after the next own write of the key is cached (a
   * directory's record in a create loop): that echo is still this node's own. */
  ownEarlier?: Uint8Array[];
  /** Directory entries only: the values (undefined: deleted) of this namespace's own earlier
   * writes of the key whose watch echo has not arrived yet, newest first, at most OWN_HISTORY.
   * A file created and removed within a few milliseconds (git's temporary object names) had its
   * create's echo arrive after the removal was cached: it was taken for another node's change,
   * which dropped the directory's completeness and bumped the kernel's entry epoch twice (the
   * removal's echo then found nothing cached). An entry's bytes (inode number and type) can be
   * written again by another node (a rename back), so each remembered write matches one echo
   * only, the oldest first: the watch delivers a key's events in revision order, so an own
   * write's echo comes before any later write's. */
  unechoed?: (Uint8Array | undefined)[];
  /** Directory entries only: the watch brought this own write back already. */
  echoed?: boolean;
}

const OWN_HISTORY = 4;

const MAX_CACHED_VALUE_BYTES = 4096;
/** Chunk maps are cached up to this size (a small file's inline data, cluster.inline_bytes up to
 * 64 KiB, is ~88 KiB of map): an open reads the map once, and the watch recognises this node's own
 * publish coming back (an uncached map would look like another node's change)... */
const MAX_CACHED_MAP_BYTES = 96 << 10;
/** ...and those over MAX_CACHED_VALUE_BYTES take at most this much in all (oldest dropped). */
const MAX_LARGE_MAP_TOTAL = 64 << 20;

/** `keyString` of a key made of the prefix, `tag` and big-endian u64 `ino` (`tagKey` without
 * a suffix), without building its bytes: one flat string from its 12 character codes. */
function tagInoString(tag: number, ino: number): string {
  const hi = Math.floor(ino / 2 ** 32);
  const lo = ino >>> 0;
  return String.fromCharCode(
    PREFIX[0],
    PREFIX[1],
    PREFIX[2],
    tag,
    hi >>> 24,
    (hi >>> 16) & 0xff,
    (hi >>> 8) & 0xff,
    hi & 0xff,
    lo >>> 24,
    (lo >>> 16) & 0xff,
    (lo >>> 8) & 0xff,
    lo & 0xff,
  );
}

/** `keyString(keys.inode(ino))` without the key's bytes (the inode cache lookup of every GETATTR
 * and LOOKUP). */
export function inodeKeyString(ino: number): string {
  return tagInoString(TAG_INODE, ino);
}

/** `keyString(keys.dentry(parent, name))` without the key's bytes. */
export function dentryKeyString(parent: number, name: Uint8Array): string {
  return tagInoString(TAG_DENTRY, parent) + keyString(name);
}

/** The cache's key for `key`: one character per byte. */
export function keyString(key: Uint8Array): string {
  // One flat string from the codes (a `+=` per byte built a rope that the Map lookup then had to
  // flatten); in slices, as an argument list has a limit.
  if (key.length <= 4096) return String.fromCharCode.apply(null, key as unknown as number[]);
  let s = "";
  for (let i = 0; i < key.length; i += 4096) {
    s += String.fromCharCode.apply(null, key.subarray(i, i + 4096) as unknown as number[]);
  }
  return s;
}

// ---------------------------------------------------------------------------------------------

export interface NamespaceOptions {
  /** Owner and mode of the root directory when the store is new. Default: this process, 0o755. */
  rootUid?: number;
  rootGid?: number;
  rootMode?: number;
  /** Inode numbers taken from the shared counter at a time. Default 1024. */
  inoRangeSize?: number;
  /** Keys cached in memory. Default 200,000. */
  cacheEntries?: number;
  /**
   * Validate the reads of read-only operations (and of failing ones) with a compare-only txn.
   * Needed only when other writers share the store (cluster backends). Default false: with one
   * writer the cache is exactly the store, so a cached read is never stale.
   */
  validateReads?: boolean;
  /** Attempts of one operation before it fails with EIO. Default 100. */
  maxAttempts?: number;
  /** The clock, for the root's times. Default: the system clock. */
  now?: () => Timespec;
}

export interface TransactOptions {
  /** Validate a read-only transaction's cached reads with a compare-only round trip. Default: the
   * namespace's `validateReads`. False serves it from the cache, which the watch keeps current but
   * may be behind by one watch delivery: for answers that may lag another node's change by that
   * much (the kernel's `security.capability` check at a file's first write). Writing
   * transactions always compare what they read. */
  validate?: boolean;
}

/** Thrown when an operation kept conflicting with concurrent writers; EIO at the edges. */
export class TxnConflictError extends Error {
  constructor(attempts: number) {
    super(`Metadata transaction still conflicted after ${attempts} attempts`);
    this.name = "TxnConflictError";
  }
}

/** The namespace over one MetaKV. Create with `Namespace.open`. */
export class Namespace {
  readonly kv: MetaKV;
  /** For /metrics: operations run (`transact`), their time, conflicts seen, attempts retried. */
  readonly counters = {
    transactions: 0,
    durations: new DurationHistogram(),
    conflicts: 0,
    retries: 0,
  };
  readonly #cache = new Map<string, CachedValue>();
  /** Directories whose every entry is in the cache (see `markComplete`), each with the cache
   * keys of its entries cached since (present or known absent), so its listing is the cache's
   * (`listDir`): directory inode -> dentry key strings. */
  readonly #completeDirs = new Map<number, Set<string>>();
  /** Directory listings (`listDir`), kept until an entry of the directory changes: this
   * namespace's own commit drops its directories' listings, and so does a watch event of another
   * writer's change (`watched`, which forgets the key), so a listing is exactly as fresh as a
   * cached name. Parent inode -> entries in name order; at most `cacheEntries` entries in all. */
  readonly #listings = new Map<number, NamedDirent[]>();
  #listingEntries = 0;
  /** Bumped whenever a listing may have gone stale: a listing read while it moved may miss that
   * change and is not kept. */
  #listingChanges = 0;
  #cacheSeq = 0;
  /** Cached xattr key names per inode, so deleting an inode's xattrs need not scan the cache. */
  readonly #cachedXattrs = new Map<number, Set<string>>();
  /** Cached chunk maps larger than MAX_CACHED_VALUE_BYTES and their sizes, oldest first. */
  readonly #largeMaps = new Map<string, number>();
  #largeMapBytes = 0;
  /** Keys written by this namespace's commits still in flight: key string -> the values being
   * written (undefined: deleted), so a watch event that brings one of them back before its commit
   * returns (the store's watch can beat a fast-path reply) is known as this node's own. */
  readonly #inFlight = new Map<string, (Uint8Array | undefined)[]>();
  /** Directory entries' own writes whose watch echo came while their commit was in flight. */
  readonly #earlyEchoes = new Map<string, (Uint8Array | undefined)[]>();
  readonly #cacheEntries: number;
  readonly #validateReads: boolean;
  /** A watch reported a change (`watched`): own writes' history is kept from then on. */
  #watchSeen = false;
  readonly #maxAttempts: number;
  readonly #rangeSize: number;
  #nextIno = 0;
  #rangeEnd = 0;
  #allocating: Promise<void> | undefined;

  private constructor(kv: MetaKV, options: NamespaceOptions) {
    this.kv = kv;
    this.#cacheEntries = options.cacheEntries ?? 200_000;
    this.#validateReads = options.validateReads ?? false;
    this.#maxAttempts = options.maxAttempts ?? 100;
    this.#rangeSize = options.inoRangeSize ?? 1024;
  }

  /** Open the namespace, creating the format key, the root and the counter on a new store. */
  static async open(kv: MetaKV, options: NamespaceOptions = {}): Promise<Namespace> {
    const ns = new Namespace(kv, options);
    const formatKey = keys.format();
    const found = await kv.range({ key: formatKey });
    if (found.kvs.length === 0) {
      const now = (options.now ?? systemNow)();
      const root: InodeRecord = {
        ino: ROOT_INO,
        mode: 0o040000 | (options.rootMode ?? 0o755),
        uid: options.rootUid ?? Deno.uid() ?? 0,
        gid: options.rootGid ?? Deno.gid() ?? 0,
        nlink: 2,
        rdev: 0,
        size: 4096,
        parent: ROOT_INO,
        generation: 1,
        atime: now,
        mtime: now,
        ctime: now,
        btime: now,
      };
      const counter = new Uint8Array(8);
      writeU64(counter, 0, ROOT_INO + 1);
      // The compare makes two first starts racing on one store create the root once.
      await kv.txn({
        compare: [{ key: formatKey, target: "version", result: "==", value: 0 }],
        success: [
          { put: { key: formatKey, value: encoder.encode(`{"format":${NAMESPACE_FORMAT}}`) } },
          { put: { key: keys.inode(ROOT_INO), value: encodeInode(root) } },
          { put: { key: keys.counter(), value: counter } },
        ],
      });
    } else {
      let format = NaN;
      try {
        format = JSON.parse(decoder.decode(found.kvs[0].value)).format;
      } catch { /* reported below */ }
      if (!(format <= NAMESPACE_FORMAT)) {
        throw new Error(
          `Metadata store has namespace format ${
            JSON.stringify(decoder.decode(found.kvs[0].value))
          }; this build reads format ${NAMESPACE_FORMAT}: upgrade skyfs`,
        );
      }
    }
    return ns;
  }

  /**
   * Run `operation` as one transaction: its reads are recorded, its writes buffered, and at the
   * end one MetaKV txn applies the writes if no key read has changed; otherwise it runs again.
   * `operation` must have no effect outside `tx` (it may run several times); errors it throws
   * abort without writing.
   */
  async transact<T>(
    operation: (tx: NsTxn) => Promise<T>,
    options?: TransactOptions,
  ): Promise<T> {
    const started = monotonicSeconds();
    try {
      return await this.#transact(operation, options?.validate ?? this.#validateReads);
    } catch (error) {
      throw storeError(error);
    } finally {
      this.counters.transactions++;
      this.counters.durations.observe(monotonicSeconds() - started);
    }
  }

  async #transact<T>(operation: (tx: NsTxn) => Promise<T>, validate: boolean): Promise<T> {
    for (let attempt = 1; attempt <= this.#maxAttempts; attempt++) {
      if (attempt > 1) this.counters.retries++;
      const tx = new NsTxn(this);
      let result: T;
      try {
        result = await operation(tx);
      } catch (error) {
        // A failure decided on stale cached reads is retried; with one writer reads are never
        // stale, so only validating stores pay for the check.
        if (validate && tx.readCount > 0 && !(await this.#validate(tx))) continue;
        throw error;
      }
      if (!tx.hasWrites) {
        if (validate && tx.readCount > 0 && !(await this.#validate(tx))) continue;
        return result;
      }
      if (await this.#commit(tx)) return result;
      if (attempt > 3) await new Promise((resolve) => setTimeout(resolve, Math.min(attempt, 20)));
    }
    throw new TxnConflictError(this.#maxAttempts);
  }

  async #validate(tx: NsTxn): Promise<boolean> {
    const response = await this.kv.txn({ compare: tx.compares(), revisionsUnused: true });
    if (!response.succeeded) {
      this.counters.conflicts++;
      tx.forgetReads();
    }
    return response.succeeded;
  }

  async #commit(tx: NsTxn): Promise<boolean> {
    // Only a shared store has a watch that can echo a write back (cluster mode).
    const writes = this.#validateReads ? tx.writtenValues() : [];
    for (const [name, value] of writes) {
      const values = this.#inFlight.get(name);
      if (values) values.push(value);
      else this.#inFlight.set(name, [value]);
    }
    let response: TxnResponse;
    try {
      response = await this.kv.txn({
        compare: tx.compares(),
        success: tx.requestOps(),
        revisionsUnused: true,
      });
    } finally {
      for (const [name, value] of writes) {
        const values = this.#inFlight.get(name)!;
        values.splice(values.indexOf(value), 1);
        if (values.length === 0) this.#inFlight.delete(name);
      }
    }
    if (!response.succeeded) {
      this.counters.conflicts++;
      tx.forgetReads();
      return false;
    }
    tx.applyToCache(response.revision);
    return true;
  }

  // --- cache ---

  /** Value and modRevision of one key, from the cache or the store. */
  async get(key: Uint8Array): Promise<CachedValue> {
    const name = keyString(key);
    const known = this.#cachedByName(name);
    if (known) return known;
    const startedAt = this.#cacheSeq;
    // The kvs' revisions come from committed state even on the fast path; only the response's
    // own revision may be 0 there.
    const response = await this.kv.txn({ success: [{ range: { key } }], revisionsUnused: true });
    const kv: KeyValue | undefined = (response.responses[0] as { range: { kvs: KeyValue[] } })
      .range.kvs[0];
    const entry = {
      value: kv?.value,
      modRevision: kv?.modRevision ?? 0,
      knownAt: response.revision,
    };
    // A commit (or a delete) that landed while this read was in flight may already be cached:
    // keep whichever state is newer, so a deleted key never comes back from a slow read.
    const now = this.#cache.get(name);
    if (now && (now.knownAt >= entry.knownAt || (now.cachedAt ?? 0) > startedAt)) return now;
    this.cachePut(name, entry);
    return entry;
  }

  /** What the cache knows of `key` without a read of the store (undefined: nothing). What
   * `get` returns at once: the synchronous fast path of GETATTR and LOOKUP (src/fuse/README.md,
   * "Daemon CPU per request"). */
  cached(key: Uint8Array): CachedValue | undefined {
    return this.#cachedByName(keyString(key));
  }

  /** @internal `cached` by the key's string (keyString, inodeKeyString, dentryKeyString). */
  cachedByName(name: string): CachedValue | undefined {
    return this.#cachedByName(name);
  }

  #cachedByName(name: string): CachedValue | undefined {
    const hit = this.#cache.get(name);
    if (hit) return hit;
    if (
      name.charCodeAt(PREFIX.length) === TAG_DENTRY && this.#completeDirs.has(inoOfKeyString(name))
    ) {
      // Every entry of this directory is cached: a name not cached does not exist.
      const absent = { value: undefined, modRevision: 0, knownAt: 0 };
      this.cachePut(name, absent);
      return absent;
    }
    return undefined;
  }

  /** Read `keys` from the store in one round trip (one snapshot) and cache them: for callers
   * that know they are about to read all of them (cluster mode's open: inode and chunk map). */
  async fetch(keysToRead: Uint8Array[]): Promise<void> {
    const startedAt = this.#cacheSeq;
    const response = await this.kv.txn({
      success: keysToRead.map((key) => ({ range: { key } })),
      revisionsUnused: true,
    });
    keysToRead.forEach((key, i) => {
      const kv: KeyValue | undefined = (response.responses[i] as { range: { kvs: KeyValue[] } })
        .range.kvs[0];
      const name = keyString(key);
      const entry = {
        value: kv?.value,
        modRevision: kv?.modRevision ?? 0,
        knownAt: response.revision,
      };
      // As in get(): never replace a newer cached state with this read.
      const now = this.#cache.get(name);
      if (now && (now.knownAt >= entry.knownAt || (now.cachedAt ?? 0) > startedAt)) return;
      this.cachePut(name, entry);
    });
  }

  /** @internal */
  cachePut(name: string, entry: CachedValue): void {
    // Large values (xattrs up to 64 KiB) are not worth their memory: such reads go to the store,
    // which is always correct (the cache is only ever a copy).
    if (entry.value && entry.value.length > MAX_CACHED_VALUE_BYTES) {
      if (
        name.charCodeAt(PREFIX.length) !== TAG_CHUNKS || entry.value.length > MAX_CACHED_MAP_BYTES
      ) {
        return this.cacheForget(name);
      }
      this.#forgetLargeMap(name);
      this.#largeMaps.set(name, entry.value.length);
      this.#largeMapBytes += entry.value.length;
      while (this.#largeMapBytes > MAX_LARGE_MAP_TOTAL) {
        this.cacheForget(this.#largeMaps.keys().next().value!);
      }
    } else if (this.#largeMapBytes > 0) {
      this.#forgetLargeMap(name);
    }
    // This namespace's own commit of a directory entry (a create, unlink, rename): the
    // directory's listing is stale.
    if (name.charCodeAt(PREFIX.length) === TAG_DENTRY) {
      const parent = inoOfKeyString(name);
      if (entry.own) this.#dropListing(parent);
      this.#completeDirs.get(parent)?.add(name);
    }
    entry.cachedAt = ++this.#cacheSeq;
    // set() on a key already there replaces the value in place; a delete first would leave a hole
    // in V8's ordered table for every write (measured 2 us a put against 1 without, below).
    this.#cache.set(name, entry);
    if (name.charCodeAt(PREFIX.length) === TAG_XATTR) {
      const ino = inoOfKeyString(name);
      let names = this.#cachedXattrs.get(ino);
      if (!names) this.#cachedXattrs.set(ino, names = new Set());
      names.add(name);
    }
    if (this.#cache.size > this.#cacheEntries) {
      // Map iteration is insertion order (a key keeps its place when rewritten): this drops the
      // key cached first.
      this.cacheForget(this.#cache.keys().next().value!);
    }
  }

  /** @internal Cache what this namespace's own commit wrote; an inode record keeps the values
   * of the own writes it replaces (`ownEarlier`). */
  cacheOwn(name: string, entry: CachedValue): void {
    // What follows only serves recognising echoes of own writes, which only a watch brings (a
    // shared store, validating reads): one node's store has none, so no history to keep.
    if (!this.#validateReads && !this.#watchSeen) return this.cachePut(name, entry);
    const now = this.#cache.get(name);
    if (now?.own && now.value && name.charCodeAt(PREFIX.length) === TAG_INODE) {
      entry.ownEarlier = [now.value, ...(now.ownEarlier ?? [])].slice(0, OWN_HISTORY);
    }
    if (name.charCodeAt(PREFIX.length) === TAG_DENTRY) {
      // Its echo came before the commit's reply (`watched`, in flight): nothing left to expect.
      const early = this.#earlyEchoes.get(name);
      const at = early?.findIndex((v) => sameBytes(v, entry.value)) ?? -1;
      if (at >= 0) {
        early!.splice(at, 1);
        if (early!.length === 0) this.#earlyEchoes.delete(name);
        entry.echoed = true;
      }
      if (now?.own) {
        const unechoed = [...(now.echoed ? [] : [now.value]), ...(now.unechoed ?? [])];
        if (unechoed.length > 0) entry.unechoed = unechoed.slice(0, OWN_HISTORY);
      }
    }
    this.cachePut(name, entry);
  }

  /** @internal The cached value of a key (undefined: not cached or absent). */
  cachedValue(name: string): Uint8Array | undefined {
    return this.#cache.get(name)?.value;
  }

  /** @internal */
  cacheForget(name: string): void {
    this.#cache.delete(name);
    if (this.#largeMapBytes > 0) this.#forgetLargeMap(name);
    // A directory entry that leaves the cache (evicted, or changed by another writer) leaves its
    // directory's listing incomplete here.
    if (name.charCodeAt(PREFIX.length) === TAG_DENTRY) {
      this.#completeDirs.delete(inoOfKeyString(name));
      this.#dropListing(inoOfKeyString(name));
    }
    if (name.charCodeAt(PREFIX.length) === TAG_XATTR) {
      const ino = inoOfKeyString(name);
      const names = this.#cachedXattrs.get(ino);
      names?.delete(name);
      if (names?.size === 0) this.#cachedXattrs.delete(ino);
    }
  }

  #forgetLargeMap(name: string): void {
    const size = this.#largeMaps.get(name);
    if (size === undefined) return;
    this.#largeMaps.delete(name);
    this.#largeMapBytes -= size;
  }

  /** @internal Drop every cached xattr of `ino` (after its xattrs were range-deleted). */
  cacheForgetXattrs(ino: number): void {
    for (const name of this.#cachedXattrs.get(ino) ?? []) this.#cache.delete(name);
    this.#cachedXattrs.delete(ino);
  }

  /**
   * A watch saw `key` change to `value` (undefined: deleted). Returns true, keeping the cached
   * entry, when that is exactly what this namespace's own last commit of the key wrote (its own
   * change coming back); otherwise the key leaves the cache and the result is false.
   */
  watched(key: Uint8Array, value: Uint8Array | undefined): boolean {
    this.#watchSeen = true;
    const name = keyString(key);
    const cached = this.#cache.get(name);
    // An own earlier write of a directory entry, echoed after a later own write was cached: each
    // remembered write is matched once, the oldest first (see `CachedValue.unechoed`).
    const unechoed = cached?.own ? cached.unechoed : undefined;
    if (unechoed) {
      for (let i = unechoed.length - 1; i >= 0; i--) {
        if (!sameBytes(unechoed[i], value)) continue;
        unechoed.splice(i, 1);
        return true;
      }
    }
    if (cached?.own && sameBytes(cached.value, value)) {
      cached.echoed = true;
      return true;
    }
    // An older own write of an inode record (their bytes carry nanosecond times and, for a
    // directory, the merge count: another node's write never repeats them).
    if (cached?.own && cached.ownEarlier?.some((v) => sameBytes(v, value))) return true;
    // This node's own write whose commit has not returned yet: its commit caches it.
    if (this.#inFlight.get(name)?.some((v) => sameBytes(v, value))) {
      if (name.charCodeAt(PREFIX.length) === TAG_DENTRY) this.#noteEarlyEcho(name, value);
      return true;
    }
    this.cacheForget(name);
    return false;
  }

  /** A directory entry's own write echoed before its commit returned (`cacheOwn` then marks it
   * echoed). Bounded: a commit that never returns leaves its note, dropped with the oldest. */
  #noteEarlyEcho(name: string, value: Uint8Array | undefined): void {
    const values = this.#earlyEchoes.get(name);
    if (values) values.push(value);
    else this.#earlyEchoes.set(name, [value]);
    if (this.#earlyEchoes.size > 1024) {
      this.#earlyEchoes.delete(this.#earlyEchoes.keys().next().value!);
    }
  }

  /** Drop one key from the cache (a watch saw another writer change it). */
  forgetKey(key: Uint8Array): void {
    this.cacheForget(keyString(key));
  }

  /**
   * Directory `ino` was just created by this namespace's own commit, so every entry it has (none)
   * is cached: a lookup of a name in it needs no round trip until an entry leaves the cache (a
   * change by another writer arrives through the watch, which forgets the key). Cluster mode's
   * git, tar and builds look up many names in directories they just made.
   */
  markComplete(ino: number): void {
    this.#completeDirs.set(ino, new Set());
    if (this.#completeDirs.size > this.#cacheEntries) {
      this.#completeDirs.delete(this.#completeDirs.keys().next().value!);
    }
  }

  /** Drop the whole cache (after another writer may have changed the store). */
  invalidate(): void {
    this.#earlyEchoes.clear();
    this.#completeDirs.clear();
    this.#listings.clear();
    this.#listingEntries = 0;
    this.#listingChanges++;
    this.#cache.clear();
    this.#cachedXattrs.clear();
    this.#largeMaps.clear();
    this.#largeMapBytes = 0;
  }

  // --- reads outside transactions ---

  async getInode(ino: number): Promise<InodeRecord | undefined> {
    const found = await this.get(keys.inode(ino));
    return found.value ? decodeInode(ino, found.value) : undefined;
  }

  async getDirent(parent: number, name: Uint8Array): Promise<DirentRecord | undefined> {
    const found = await this.get(keys.dentry(parent, name));
    return found.value ? decodeDirent(found.value) : undefined;
  }

  /** `getInode` from the cache alone: null when the cache knows there is none, undefined when
   * only the store can tell. */
  cachedInode(ino: number): InodeRecord | null | undefined {
    const found = this.#cachedByName(inodeKeyString(ino));
    if (!found) return undefined;
    return found.value ? decodeInode(ino, found.value) : null;
  }

  /** `getDirent` from the cache alone (null: known absent; undefined: ask the store). */
  cachedDirent(parent: number, name: Uint8Array): DirentRecord | null | undefined {
    const found = this.cached(keys.dentry(parent, name));
    if (!found) return undefined;
    return found.value ? decodeDirent(found.value) : null;
  }

  /** A volume's quota record, from the cache or the store (statfs; not compared). */
  async getQuotaRecord(id: number): Promise<QuotaRecord | undefined> {
    const found = await this.get(keys.quota(id));
    return found.value ? JSON.parse(decoder.decode(found.value)) : undefined;
  }

  /**
   * Every entry of a directory, in name byte order: the listing kept since the last one when no
   * entry of the directory changed meanwhile (see `#listings`), else read from the store. The
   * entries are the caller's (copies).
   */
  async listDir(parent: number): Promise<NamedDirent[]> {
    const kept = this.#listings.get(parent);
    if (kept) return kept.map((entry) => ({ ...entry }));
    const cached = this.#cachedListing(parent);
    if (cached) return cached;
    const changes = this.#listingChanges;
    const prefix = keys.dentries(parent);
    const out: NamedDirent[] = [];
    for await (const kv of this.#scan(prefix, false)) {
      // The store's copy is ours: the name is a view of it, not another copy.
      const dirent = decodeDirent(kv.value) as NamedDirent;
      dirent.name = kv.key.subarray(prefix.length);
      out.push(dirent);
    }
    // Kept only when nothing could have changed it while it was read (a change whose watch
    // event arrived during the scan may or may not be in it).
    if (this.#listingChanges === changes && out.length <= this.#cacheEntries) {
      this.#listings.set(parent, out.map((entry) => ({ ...entry })));
      this.#listingEntries += out.length;
      while (this.#listingEntries > this.#cacheEntries) {
        this.#dropListing(this.#listings.keys().next().value!);
      }
    }
    return out;
  }

  /**
   * The listing of a complete directory (`markComplete`: made by this node's own commit, every
   * entry since cached, no other writer's change seen by the watch) from the cache alone: no
   * read of the store (a READDIRPLUS of an `objects/xx` directory git just made scanned it).
   * Undefined when the directory is not complete.
   */
  #cachedListing(parent: number): NamedDirent[] | undefined {
    const names = this.#completeDirs.get(parent);
    if (!names) return undefined;
    const present: string[] = [];
    for (const name of names) {
      const entry = this.#cache.get(name);
      // Every entry of a complete directory is cached (cacheForget ends the completeness).
      if (!entry) return undefined;
      if (entry.value) present.push(name);
    }
    // One character per byte: the strings' order is the names' byte order.
    present.sort((a, b) => a < b ? -1 : a > b ? 1 : 0);
    const nameAt = PREFIX.length + 9;
    return present.map((name) => {
      const dirent = decodeDirent(this.#cache.get(name)!.value!) as NamedDirent;
      const bytes = new Uint8Array(name.length - nameAt);
      for (let i = 0; i < bytes.length; i++) bytes[i] = name.charCodeAt(nameAt + i);
      dirent.name = bytes;
      return dirent;
    });
  }

  #dropListing(parent: number): void {
    this.#listingChanges++;
    const kept = this.#listings.get(parent);
    if (!kept) return;
    this.#listings.delete(parent);
    this.#listingEntries -= kept.length;
  }

  /**
   * Every entry of a directory, in name byte order, without an object per entry: `visit` gets
   * the entry's key (its name is `key.subarray(nameAt)`) and its stored dirent (`direntIno`,
   * `direntType`), views valid only during the call. Synchronous views of the stored bytes when
   * the store is in this process (`MetaKV.scan`), else the listing `listDir` keeps (a remote
   * store: a cluster node reads an unchanged directory once).
   */
  async scanDir(
    parent: number,
    visit: (key: Uint8Array, nameAt: number, dirent: Uint8Array) => void,
  ): Promise<void> {
    const prefix = keys.dentries(parent);
    if (this.kv.scan) {
      this.kv.scan(prefix, prefixEnd(prefix), (key, value) => visit(key, prefix.length, value));
      return;
    }
    for (const entry of await this.listDir(parent)) visit(entry.name, 0, encodeDirent(entry));
  }

  /** Volume records in name order, at most `limit`, starting after name `after`. */
  async listVolumes(limit: number, after?: string): Promise<VolumeRecord[]> {
    const prefix = keys.volumes();
    let from = prefix;
    if (after !== undefined) {
      const key = keys.volume(after);
      from = new Uint8Array(key.length + 1);
      from.set(key);
    }
    const page = await this.kv.range({ key: from, rangeEnd: prefixEnd(prefix), limit });
    return page.kvs.map((kv) => JSON.parse(decoder.decode(kv.value)));
  }

  /** Every quota record, with its volume id (startup: drop reservations of gone writers). */
  async listQuotas(): Promise<{ id: number; quota: QuotaRecord }[]> {
    const out: { id: number; quota: QuotaRecord }[] = [];
    for await (const kv of this.#scan(tagKey(TAG_QUOTA), false)) {
      out.push({ id: inoOfKey(kv.key), quota: JSON.parse(decoder.decode(kv.value)) });
    }
    return out;
  }

  /** Inodes on the orphan list (nlink 0 when last referenced). */
  async listOrphans(): Promise<number[]> {
    const out: number[] = [];
    for await (const kv of this.#scan(keys.orphans(), true)) out.push(inoOfKey(kv.key));
    return out;
  }

  /** Inodes on the pending write-back list (their local file may be ahead of their record). */
  async listPending(): Promise<number[]> {
    const out: number[] = [];
    for await (const kv of this.#scan(keys.pendings(), true)) out.push(inoOfKey(kv.key));
    return out;
  }

  /** Whether each of `inos` has an inode record (one range scan per call, for startup checks). */
  async existingInodes(): Promise<Set<number>> {
    const out = new Set<number>();
    for await (const kv of this.#scan(keys.inodes(), true)) out.add(inoOfKey(kv.key));
    return out;
  }

  async *#scan(prefix: Uint8Array, keysOnly: boolean): AsyncGenerator<KeyValue> {
    const end = prefixEnd(prefix);
    let from = prefix;
    for (;;) {
      const page = await this.kv.range({ key: from, rangeEnd: end, limit: 1000, keysOnly });
      for (const kv of page.kvs) yield kv;
      if (!page.more || page.kvs.length === 0) return;
      const last = page.kvs[page.kvs.length - 1].key;
      from = new Uint8Array(last.length + 1);
      from.set(last);
    }
  }

  // --- inode numbers ---

  /**
   * A fresh inode number. Numbers come from the shared counter in ranges of `inoRangeSize`, one
   * txn per range; a number is never handed out twice, even across restarts (the unused rest of
   * a range is skipped), so the kernel can never confuse a new inode with one it still holds.
   */
  async allocIno(): Promise<number> {
    while (this.#nextIno >= this.#rangeEnd) {
      this.#allocating ??= this.#takeRange().finally(() => this.#allocating = undefined);
      try {
        await this.#allocating;
      } catch (error) {
        throw storeError(error);
      }
    }
    return this.#nextIno++;
  }

  async #takeRange(): Promise<void> {
    const key = keys.counter();
    for (let attempt = 1; attempt <= this.#maxAttempts; attempt++) {
      const found = await this.kv.range({ key });
      const kv = found.kvs[0];
      if (!kv) throw new Error("Metadata store has no inode counter: it was not created by skyfs");
      const start = readU64(kv.value, 0);
      const next = new Uint8Array(8);
      writeU64(next, 0, start + this.#rangeSize);
      const response = await this.kv.txn({
        compare: [{ key, target: "modRevision", result: "==", value: kv.modRevision }],
        success: [{ put: { key, value: next } }],
        revisionsUnused: true,
      });
      if (response.succeeded) {
        this.#nextIno = start;
        this.#rangeEnd = start + this.#rangeSize;
        return;
      }
    }
    throw new TxnConflictError(this.#maxAttempts);
  }
}

/** One operation's view of the store: reads recorded for compares, writes buffered. */
export class NsTxn {
  readonly #ns: Namespace;
  /** key string -> modRevision read (0 for absent); `masked`: compared with MERGED_BYTES
   * ignored (a directory record this transaction merges). */
  readonly #reads = new Map<
    string,
    {
      key: Uint8Array;
      modRevision: number | undefined;
      value: Uint8Array | undefined;
      masked?: boolean;
    }
  >();
  /** Directory records written as merges (stores with merges): key string -> the merge. */
  readonly #merges = new Map<string, { ino: number; merge: MergeRequest }>();
  /** key string -> value to put, or undefined to delete. Insertion order is commit order. */
  readonly #writes = new Map<
    string,
    {
      key: Uint8Array;
      value: Uint8Array | undefined;
      lease?: number;
      outside?: boolean;
      /** Key and value are the namespace's own, never changed (PutRequest.owned). */
      owned?: boolean;
    }
  >();
  /** Keys this transaction knows do not exist (under an inode it creates): cached as absent. */
  readonly #absent: Uint8Array[] = [];
  /** Conditions on keys outside the namespace's own (`compareOutside`). */
  readonly #outsideCompares: Compare[] = [];
  readonly #newDirs: number[] = [];
  readonly #rangeDeletes: { key: Uint8Array; rangeEnd: Uint8Array }[] = [];
  /** Inodes whose xattrs are range-deleted by this transaction. */
  readonly #xattrsDeleted: number[] = [];

  constructor(ns: Namespace) {
    this.#ns = ns;
  }

  get readCount(): number {
    return this.#reads.size;
  }

  get hasWrites(): boolean {
    return this.#writes.size > 0 || this.#rangeDeletes.length > 0 || this.#merges.size > 0;
  }

  /** How many directory records this transaction writes as merges (for tests and traces). */
  get mergeCount(): number {
    return this.#merges.size;
  }

  /** @internal Key string and value (undefined: delete) of every single-key write; a merged
   * record's value as the merge makes it from what was read. */
  writtenValues(): [string, Uint8Array | undefined][] {
    const out: [string, Uint8Array | undefined][] = [...this.#writes].map((
      [name, w],
    ) => [name, w.value]);
    for (const [name, { merge }] of this.#merges) {
      out.push([name, applyMerge(merge, this.#reads.get(name)!.value!)]);
    }
    return out;
  }

  async #read(key: Uint8Array): Promise<Uint8Array | undefined> {
    const name = keyString(key);
    const written = this.#writes.get(name);
    if (written) return written.value;
    return await this.#readFromStore(name, key);
  }

  /** `#read` of the key named `name` (`tag`, `ino`, `suffix` as `tagKey` takes them): its bytes
   * are built only if neither the cache nor this transaction holds them already. */
  async #readNamed(
    name: string,
    tag: number,
    ino: number,
    suffix?: Uint8Array,
  ): Promise<Uint8Array | undefined> {
    const written = this.#writes.get(name);
    if (written) return written.value;
    const key = this.#ns.cachedByName(name)?.key ?? tagKey(tag, ino, suffix);
    return await this.#readFromStore(name, key);
  }

  /** The bytes of key `name` if this transaction or the cache has them. */
  #knownKey(name: string): Uint8Array | undefined {
    return this.#reads.get(name)?.key ?? this.#writes.get(name)?.key ??
      this.#ns.cachedByName(name)?.key;
  }

  async #readFromStore(name: string, key: Uint8Array): Promise<Uint8Array | undefined> {
    const found = await this.#ns.get(key);
    const earlier = this.#reads.get(name);
    // Reading one key twice at different revisions means it changed under us: record the first,
    // so the commit's compare fails and the operation reruns on a consistent view.
    if (!earlier) {
      this.#reads.set(name, { key, modRevision: found.modRevision, value: found.value });
    }
    return found.value;
  }

  #write(key: Uint8Array, value: Uint8Array | undefined): void {
    this.#writeNamed(keyString(key), key, value);
  }

  #writeNamed(
    name: string,
    key: Uint8Array,
    value: Uint8Array | undefined,
    owned?: boolean,
  ): void {
    this.#unmerge(name);
    this.#writes.delete(name);
    this.#writes.set(name, owned ? { key, value, owned } : { key, value });
  }

  /** A record about to be written whole: a merge of it planned earlier is dropped (the whole
   * record carries its changes) and its read is compared whole again. */
  #unmerge(name: string): void {
    if (!this.#merges.delete(name)) return;
    const read = this.#reads.get(name);
    if (read) read.masked = false;
  }

  /**
   * On a store with merges: `record`, a live directory this transaction read, differs from what
   * was read only by an entry change's stamp (mtime = ctime, the time of the change; nlink by a
   * subdirectory added or removed). Returns the merge that writes that change, or undefined when
   * the record must be put whole (another store, another kind of change, pending attributes).
   */
  #entryStamp(record: InodeRecord, name: string): MergeRequest | undefined {
    if (this.#ns.kv.merges !== true || (record.mode & 0o170000) !== 0o040000) return undefined;
    if (this.#writes.has(name)) return undefined;
    const read = this.#reads.get(name);
    if (read?.value === undefined) return undefined;
    const before = decodeInode(record.ino, read.value);
    if (before.nlink === 0 || record.nlink === 0) return undefined;
    const same = before.mode === record.mode && before.uid === record.uid &&
      before.gid === record.gid && before.rdev === record.rdev && before.size === record.size &&
      before.parent === record.parent && before.generation === record.generation &&
      sameTime(before.atime, record.atime) && sameTime(before.btime, record.btime) &&
      sameTime(record.mtime, record.ctime) && sameBytes(before.target, record.target);
    if (!same) return undefined;
    const earlier = this.#merges.get(name)?.merge;
    // Two stamps of one directory in one transaction: the later record already holds both.
    const delta = record.nlink - before.nlink;
    const t = record.ctime;
    const max = [{ at: AT_MTIME, sec: t.sec, nsec: t.nsec }, { at: AT_CTIME, ...t }];
    if (earlier) {
      const e = earlier.max![0];
      if (e.sec > t.sec || (e.sec === t.sec && e.nsec > t.nsec)) return undefined;
    }
    const add = [{ at: AT_MERGES, width: 3, delta: 1 }];
    if (delta !== 0) add.push({ at: AT_NLINK, width: 4, delta });
    return { key: read.key, max: max.map(({ at, sec, nsec }) => ({ at, sec, nsec })), add };
  }

  async getInode(ino: number): Promise<InodeRecord | undefined> {
    const value = await this.#readNamed(inodeKeyString(ino), TAG_INODE, ino);
    return value ? decodeInode(ino, value) : undefined;
  }

  /** Write `record`. A directory's entry-change stamp goes as a merge on a store with merges
   * (see MERGED_BYTES); everything else is written whole. */
  putInode(record: InodeRecord): void {
    const name = inodeKeyString(record.ino);
    const merge = this.#entryStamp(record, name);
    if (merge === undefined) {
      const key = this.#knownKey(name) ?? keys.inode(record.ino);
      return this.#writeNamed(name, key, encodeInode(record), true);
    }
    this.#merges.set(name, { ino: record.ino, merge });
    this.#reads.get(name)!.masked = true;
  }

  /** Delete an inode with its xattrs and orphan mark (directory entries are the caller's);
   * `pending`: its pending write-back mark too; `orphan` false: the caller knows it has no
   * orphan mark (it had a name until this transaction), so no delete of a key not there. */
  deleteInode(ino: number, pending = false, orphan = true): void {
    const name = inodeKeyString(ino);
    this.#writeNamed(name, this.#knownKey(name) ?? keys.inode(ino), undefined);
    if (orphan) this.#write(keys.orphan(ino), undefined);
    if (pending) this.#write(keys.pending(ino), undefined);
    const prefix = keys.xattrs(ino);
    this.#rangeDeletes.push({ key: prefix, rangeEnd: prefixEnd(prefix) });
    this.#xattrsDeleted.push(ino);
  }

  async getDirent(parent: number, name: Uint8Array): Promise<DirentRecord | undefined> {
    const value = await this.#readNamed(dentryKeyString(parent, name), TAG_DENTRY, parent, name);
    return value ? decodeDirent(value) : undefined;
  }

  putDirent(parent: number, name: Uint8Array, dirent: DirentRecord): void {
    const keyName = dentryKeyString(parent, name);
    const key = this.#knownKey(keyName) ?? keys.dentry(parent, name);
    this.#writeNamed(keyName, key, encodeDirent(dirent), true);
  }

  deleteDirent(parent: number, name: Uint8Array): void {
    const keyName = dentryKeyString(parent, name);
    this.#writeNamed(keyName, this.#knownKey(keyName) ?? keys.dentry(parent, name), undefined);
  }

  /**
   * Whether directory `ino` has no entries. Reads `ino`'s record so the answer is compared.
   * Entries deleted earlier in this same transaction are not looked at: no operation empties a
   * directory and then asks whether it is empty.
   */
  async dirIsEmpty(ino: number): Promise<boolean> {
    await this.getInode(ino);
    const prefix = keys.dentries(ino);
    const prefixString = keyString(prefix);
    for (const [name, write] of this.#writes) {
      if (write.value && name.startsWith(prefixString)) return false;
    }
    const found = await this.#ns.kv.range({ key: prefix, rangeEnd: prefixEnd(prefix), limit: 1 });
    return found.kvs.length === 0;
  }

  async getXattr(ino: number, name: string): Promise<Uint8Array | undefined> {
    return await this.#read(keys.xattr(ino, name));
  }

  putXattr(ino: number, name: string, value: Uint8Array): void {
    this.#write(keys.xattr(ino, name), value);
  }

  deleteXattr(ino: number, name: string): void {
    this.#write(keys.xattr(ino, name), undefined);
  }

  /** Names and total value bytes of `ino`'s xattrs. Reads `ino`'s record so it is compared. */
  async listXattrs(ino: number): Promise<{ name: string; size: number }[]> {
    await this.getInode(ino);
    const prefix = keys.xattrs(ino);
    const found = await this.#ns.kv.range({ key: prefix, rangeEnd: prefixEnd(prefix) });
    const byName = new Map<string, number>();
    for (const kv of found.kvs) {
      byName.set(decoder.decode(kv.key.subarray(prefix.length)), kv.value.length);
    }
    const prefixString = keyString(prefix);
    for (const [key, write] of this.#writes) {
      if (!key.startsWith(prefixString)) continue;
      const name = decoder.decode(write.key.subarray(prefix.length));
      if (write.value) byName.set(name, write.value.length);
      else byName.delete(name);
    }
    return [...byName].map(([name, size]) => ({ name, size }));
  }

  /** Whether `volumeChanges` may find anything: a cheap synchronous look, so that transactions
   * outside volumes (nearly all) pay no await for volume accounting. */
  mayTouchVolumes(): boolean {
    for (const [name, write] of this.#writes) {
      if (inodeOfKey(write.key) === undefined) continue;
      if (write.value) {
        if (volumeOfRecord(write.value) !== 0) return true;
        continue;
      }
      const read = this.#reads.get(name);
      if (!read || (read.value && volumeOfRecord(read.value) !== 0)) return true;
    }
    return false;
  }

  /**
   * Every inode this transaction writes or deletes that belongs to a volume, with its stored
   * record before (undefined: created here) and after (undefined: deleted). A record put without
   * being read first is read now (and compared at commit), unless it is a new inode. Inodes
   * outside volumes cost no read: an inode never changes volume.
   */
  async volumeChanges(): Promise<
    { volume: number; before?: InodeRecord; after?: InodeRecord }[]
  > {
    const out: { volume: number; before?: InodeRecord; after?: InodeRecord }[] = [];
    for (const [name, write] of [...this.#writes]) {
      const ino = inodeOfKey(write.key);
      if (ino === undefined) continue;
      if (write.value && volumeOfRecord(write.value) === 0) continue;
      let beforeBytes: Uint8Array | undefined;
      const read = this.#reads.get(name);
      if (read) {
        beforeBytes = read.value;
      } else if (!this.#absent.some((key) => keyString(key) === name)) {
        const found = await this.#ns.get(write.key);
        this.#reads.set(name, {
          key: write.key,
          modRevision: found.modRevision,
          value: found.value,
        });
        beforeBytes = found.value;
      }
      const volume = write.value
        ? volumeOfRecord(write.value)
        : beforeBytes
        ? volumeOfRecord(beforeBytes)
        : 0;
      if (volume === 0) continue;
      out.push({
        volume,
        before: beforeBytes ? decodeInode(ino, beforeBytes) : undefined,
        after: write.value ? decodeInode(ino, write.value) : undefined,
      });
    }
    return out;
  }

  async getVolume(name: string): Promise<VolumeRecord | undefined> {
    const value = await this.#read(keys.volume(name));
    return value ? JSON.parse(decoder.decode(value)) : undefined;
  }

  putVolume(record: VolumeRecord): void {
    this.#write(keys.volume(record.name), encoder.encode(JSON.stringify(record)));
  }

  deleteVolume(name: string): void {
    this.#write(keys.volume(name), undefined);
  }

  async getQuota(id: number): Promise<QuotaRecord | undefined> {
    const value = await this.#read(keys.quota(id));
    return value ? JSON.parse(decoder.decode(value)) : undefined;
  }

  putQuota(id: number, record: QuotaRecord): void {
    this.#write(keys.quota(id), encoder.encode(JSON.stringify(record)));
  }

  deleteQuota(id: number): void {
    this.#write(keys.quota(id), undefined);
  }

  /** A fresh volume id from the shared counter (ids are never reused). */
  async nextVolumeId(): Promise<number> {
    const key = keys.volumeCounter();
    const value = await this.#read(key);
    const id = value ? readU64(value, 0) : 1;
    if (id > MAX_VOLUME_ID) throw new FsError("ENOSPC", `all ${MAX_VOLUME_ID} volume ids are used`);
    const next = new Uint8Array(8);
    writeU64(next, 0, id + 1);
    this.#write(key, next);
    return id;
  }

  /** Cluster mode's chunk map of `ino` (opaque bytes; written with the inode's record). */
  async getChunkMap(ino: number): Promise<Uint8Array | undefined> {
    return await this.#read(keys.chunkMap(ino));
  }

  putChunkMap(ino: number, value: Uint8Array | undefined): void {
    this.#write(keys.chunkMap(ino), value);
  }

  addOrphan(ino: number): void {
    this.#write(keys.orphan(ino), new Uint8Array(0));
  }

  removeOrphan(ino: number): void {
    this.#write(keys.orphan(ino), undefined);
  }

  /**
   * Put the inode on the pending write-back list (vfs core.ts, "pending write-back"). `stamp`: a
   * value no earlier write of the key had, where a transaction that read the mark must see this
   * write as a change even when it compares by value (a fast-path commit's modRevision is
   * unknown); a new inode's mark, which nobody can have read, needs none.
   */
  addPending(ino: number, stamp?: Uint8Array): void {
    this.#write(keys.pending(ino), stamp ?? new Uint8Array(0));
  }

  removePending(ino: number): void {
    this.#write(keys.pending(ino), undefined);
  }

  /** Whether the inode is on the pending write-back list (read, so compared at commit). */
  async isPending(ino: number): Promise<boolean> {
    return (await this.#read(keys.pending(ino))) !== undefined;
  }

  async isOrphan(ino: number): Promise<boolean> {
    return (await this.#read(keys.orphan(ino))) !== undefined;
  }

  /**
   * Read `guard` and every key under `prefix` in one snapshot, bypassing the cache: for keys
   * outside fs/ that no watch keeps fresh (cluster mode's open records). `guard` is compared at
   * commit like any read, so whoever adds or removes a key under `prefix` must write `guard` in
   * the same transaction for this read to stay valid until the commit. `also` (a namespace key,
   * e.g. the chunk map) is read in the same snapshot and compared too, saving its own round trip.
   */
  async readGuarded(
    guard: Uint8Array,
    prefix: Uint8Array,
    also?: Uint8Array,
  ): Promise<{ kvs: KeyValue[]; also?: Uint8Array }> {
    const response = await this.#ns.kv.txn({
      success: [
        { range: { key: guard } },
        { range: { key: prefix, rangeEnd: prefixEnd(prefix) } },
        ...(also ? [{ range: { key: also } }] : []),
      ],
      // Read kvs carry their committed modRevisions even on CURP's fast path.
      revisionsUnused: true,
    });
    const [g, found, extra] = response.responses as { range: { kvs: KeyValue[] } }[];
    const record = (key: Uint8Array, kv: KeyValue | undefined) => {
      const name = keyString(key);
      if (this.#reads.has(name) || this.#writes.has(name)) return;
      this.#reads.set(name, { key, modRevision: kv?.modRevision ?? 0, value: kv?.value });
    };
    record(guard, g.range.kvs[0]);
    if (also) record(also, extra.range.kvs[0]);
    return { kvs: found.range.kvs, also: extra?.range.kvs[0]?.value };
  }

  /** `readGuarded` of several guards at once: one read (one snapshot) for all of them. */
  async readGuardedMany(
    items: { guard: Uint8Array; prefix: Uint8Array; also: Uint8Array }[],
  ): Promise<{ kvs: KeyValue[]; also?: Uint8Array }[]> {
    if (items.length === 0) return [];
    const response = await this.#ns.kv.txn({
      success: items.flatMap(({ guard, prefix, also }) => [
        { range: { key: guard } },
        { range: { key: prefix, rangeEnd: prefixEnd(prefix) } },
        { range: { key: also } },
      ]),
      revisionsUnused: true,
    });
    const ranges = response.responses as { range: { kvs: KeyValue[] } }[];
    const record = (key: Uint8Array, kv: KeyValue | undefined) => {
      const name = keyString(key);
      if (this.#reads.has(name) || this.#writes.has(name)) return;
      this.#reads.set(name, { key, modRevision: kv?.modRevision ?? 0, value: kv?.value });
    };
    return items.map(({ guard, also }, i) => {
      const [g, found, extra] = ranges.slice(3 * i, 3 * i + 3);
      record(guard, g.range.kvs[0]);
      record(also, extra.range.kvs[0]);
      return { kvs: found.range.kvs, also: extra.range.kvs[0]?.value };
    });
  }

  /** A condition on a key outside the namespace's own (cluster mode's open guard), checked at
   * commit with the compares of the keys read. */
  compareOutside(compare: Compare): void {
    this.#outsideCompares.push(compare);
  }

  /** Delete a key outside the namespace's own (cluster mode's open marker) in this commit. */
  deleteOutside(key: Uint8Array): void {
    this.#write(key, undefined);
  }

  /** Put a key outside the namespace's own (cluster mode's open record, on `lease`; a
   * replication queue entry, on none). Never cached by the namespace. */
  putOutside(key: Uint8Array, value: Uint8Array, lease?: number): void {
    const name = keyString(key);
    this.#writes.delete(name);
    this.#writes.set(name, { key, value, lease, outside: true });
  }

  /**
   * `key` belongs to an inode this transaction creates (its number was never used), so it is
   * absent: once committed, the cache says so and reads of it (the kernel's security.capability
   * lookup at the first write, the chunk map at publish) cost no round trip. A change by anyone
   * else arrives through the watch and replaces the entry, as for any cached key.
   */
  knownAbsent(key: Uint8Array): void {
    this.#absent.push(key);
  }

  /** Directory `ino` is created by this transaction: once committed it is known empty
   * (`Namespace.markComplete`). */
  newDirectory(ino: number): void {
    this.#newDirs.push(ino);
  }

  /** @internal */
  compares(): Compare[] {
    const out = [...this.#reads.values()].map(({ key, modRevision, value, masked }): Compare =>
      masked
        ? { key, target: "value", result: "==", value: value!, ignore: MERGED_BYTES }
        : modRevision !== undefined
        ? { key, target: "modRevision", result: "==", value: modRevision }
        : { key, target: "value", result: "==", value: value! }
    );
    // The masked compare ignores nlink, so it cannot tell a removed directory still on the
    // orphan list (nlink 0, kept for an open handle) from a live one: its orphan mark can.
    for (const { ino } of this.#merges.values()) {
      const key = keys.orphan(ino);
      if (!this.#reads.has(keyString(key))) {
        out.push({ key, target: "version", result: "==", value: 0 });
      }
    }
    out.push(...this.#outsideCompares);
    return out;
  }

  /** @internal */
  requestOps(): RequestOp[] {
    const ops: RequestOp[] = this.#rangeDeletes.map((range) => ({ deleteRange: { ...range } }));
    for (const { merge } of this.#merges.values()) ops.push({ merge });
    const handOver = this.#ns.kv.keepsOwnedBuffers === true;
    for (const { key, value, lease, owned } of this.#writes.values()) {
      ops.push(
        value
          ? {
            put: lease !== undefined
              ? { key, value, lease }
              : owned && handOver
              ? { key, value, owned }
              : { key, value },
          }
          : { deleteRange: { key } },
      );
    }
    return ops;
  }

  /** @internal After a failed commit: the keys read are stale, drop them from the cache. */
  forgetReads(): void {
    for (const name of this.#reads.keys()) this.#ns.cacheForget(name);
  }

  /** @internal After a successful commit at `revision`: the cache now holds what was written. */
  applyToCache(revision: number): void {
    for (const ino of this.#xattrsDeleted) this.#ns.cacheForgetXattrs(ino);
    for (const [name, { key, value, lease, outside }] of this.#writes) {
      if (lease !== undefined || outside) continue; // cluster bookkeeping, read around the cache
      // A fast-path commit reports revision 0: the written keys' modRevision is unknown.
      const modRevision = value ? (revision > 0 ? revision : undefined) : 0;
      this.#ns.cacheOwn(name, { key, value, modRevision, knownAt: revision, own: true });
    }
    for (const [name, { merge }] of this.#merges) {
      // Merged onto what the cache holds now (another of this node's merges of the directory
      // may have landed since this transaction read it): merges commute. The modRevision is
      // unknown, so the next whole compare of the record is by value.
      const read = this.#reads.get(name)!;
      const value = this.#ns.cachedValue(name) ?? read.value!;
      this.#ns.cacheOwn(name, {
        key: read.key,
        value: applyMerge(merge, value),
        modRevision: undefined,
        knownAt: revision,
        own: true,
      });
    }
    for (const key of this.#absent) {
      const name = keyString(key);
      if (this.#writes.has(name)) continue;
      this.#ns.cachePut(name, {
        key,
        value: undefined,
        modRevision: 0,
        knownAt: revision,
        own: true,
      });
    }
    for (const ino of this.#newDirs) this.#ns.markComplete(ino);
  }
}

/**
 * The error to report for a store failure: a full disk under the store is ENOSPC (the program
 * sees what it would see on a full ext4, and the daemon keeps serving); FsErrors pass through;
 * anything else stays as it is (EIO at the edges).
 */
function storeError(error: unknown): unknown {
  if (error instanceof FsError) return error;
  const record = error as { errcode?: number; code?: string; message?: string };
  // SQLITE_FULL is 13; ENOSPC may also surface as a Node-style code or in the message.
  if (
    record?.errcode === 13 || record?.code === "ENOSPC" ||
    /disk is full|No space left/i.test(record?.message ?? "")
  ) {
    return new FsError("ENOSPC", `metadata store: ${record?.message ?? error}`);
  }
  return error;
}

/** Read a record for modification: a copy the caller may change and put back. */
export function copyInode(record: InodeRecord): InodeRecord {
  return cloneRecord(record);
}

/**
 * The system clock as a Timespec, never going backwards: the wall clock to the nanosecond
 * (clock_gettime(CLOCK_REALTIME), `libc.wallClock`), so a long-running daemon does not drift from
 * `date` (which make and rsync compare against) and no stamp is ahead of the kernel's clock (a
 * local file's times, another process's `date`). A reading not after the last one (the same
 * nanosecond, or the clock stepped back) is nudged 1 ns past it, so two changes in a row always
 * get distinct, ordered times; only then can a stamp be ahead of the real clock (by the step).
 * Until session 12 the digits below the millisecond came from `performance.now() % 1`, which is
 * not the wall clock's phase: stamps ran up to 1 ms ahead of the real time.
 */
// The last stamp (numbers, not one BigInt of nanoseconds: every change of an inode calls this).
let lastSec = 0;
let lastNsec = 0;
export function systemNow(): Timespec {
  const now = wallClock();
  if (now.sec < lastSec || (now.sec === lastSec && now.nsec <= lastNsec)) {
    now.sec = lastSec;
    now.nsec = lastNsec + 1;
    if (now.nsec === 1_000_000_000) {
      now.sec++;
      now.nsec = 0;
    }
  }
  lastSec = now.sec;
  lastNsec = now.nsec;
  return now;
}

function sameTime(a: Timespec, b: Timespec): boolean {
  return a.sec === b.sec && a.nsec === b.nsec;
}

export function sameBytes(a: Uint8Array | undefined, b: Uint8Array | undefined): boolean {
  if (a === undefined || b === undefined) return a === b;
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
