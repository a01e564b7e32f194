/**
 * The TypeScript mirror of lib/preload/skyfs_abi.h: constants, struct offsets and the codec of
 * the shim's control messages. abi_test.ts compiles the header and checks every number here.
 * @module
 */

export const ABI_VERSION = 1;
export const ABI_MAGIC = 0x53594b53;
export const SOCKET_PREFIX = "skyfs-shim-";

export const Op = { GET_FD: 1, WROTE: 2, COUNTS: 3 } as const;

/** struct skyfs_request: field offsets and the total size. */
export const Request = {
  magic: 0,
  version: 4,
  op: 6,
  fd: 8,
  reserved: 12,
  ino: 16,
  seq: 24,
  size: 32,
} as const;

/** struct skyfs_reply: field offsets and the total size. */
export const Reply = {
  magic: 0,
  version: 4,
  op: 6,
  status: 8,
  openFlags: 12,
  seq: 16,
  size: 24,
} as const;

/** struct skyfs_preload_stats: field offsets and the total size. */
export const PreloadStats = {
  adopted: 0,
  refused: 8,
  reads: 16,
  writes: 24,
  bytesRead: 32,
  bytesWritten: 40,
  wroteNotices: 48,
  size: 56,
} as const;

export interface ShimRequest {
  op: number;
  fd: number;
  /** COUNTS: the reads served since the last COUNTS; else the inode. */
  ino: number;
  seq: bigint;
  /** COUNTS: the writes served since the last COUNTS; else 0. */
  reserved: number;
}

/** Abstract socket name of the mount whose st_dev is major:minor (without the leading NUL). */
export function socketName(major: number, minor: number): string {
  return `${SOCKET_PREFIX}${major}:${minor}`;
}

/**
 * Decode a request; throws a RangeError naming what is wrong (size, magic, version, op, fields),
 * so the server can log it and answer EPROTO.
 */
export function decodeRequest(bytes: Uint8Array): ShimRequest {
  if (bytes.byteLength !== Request.size) {
    throw new RangeError(`request of ${bytes.byteLength} bytes, expected ${Request.size}`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const magic = view.getUint32(Request.magic, true);
  if (magic !== ABI_MAGIC) throw new RangeError(`bad magic 0x${magic.toString(16)}`);
  const version = view.getUint16(Request.version, true);
  if (version !== ABI_VERSION) {
    throw new RangeError(`ABI version ${version}, this daemon speaks ${ABI_VERSION}`);
  }
  const op = view.getUint16(Request.op, true);
  if (op !== Op.GET_FD && op !== Op.WROTE && op !== Op.COUNTS) {
    throw new RangeError(`unknown op ${op}`);
  }
  const fd = view.getInt32(Request.fd, true);
  const reserved = view.getUint32(Request.reserved, true);
  const ino = view.getBigUint64(Request.ino, true);
  const seq = view.getBigUint64(Request.seq, true);
  if (op === Op.COUNTS) {
    if (fd !== 0) throw new RangeError(`COUNTS with fd ${fd}, not 0`);
    if (ino > BigInt(Number.MAX_SAFE_INTEGER)) throw new RangeError(`COUNTS of ${ino} reads`);
    return { op, fd, ino: Number(ino), seq, reserved };
  }
  if (fd < 0) throw new RangeError(`negative fd ${fd}`);
  if (reserved !== 0) throw new RangeError("reserved field not 0");
  if (ino === 0n || ino > BigInt(Number.MAX_SAFE_INTEGER)) throw new RangeError(`bad ino ${ino}`);
  return { op, fd, ino: Number(ino), seq, reserved };
}

/** The reply bytes; `status` is 0 or -errno. */
export function encodeReply(
  op: number,
  seq: bigint,
  status: number,
  openFlags = 0,
): Uint8Array<ArrayBuffer> {
  const bytes = new Uint8Array(Reply.size);
  const view = new DataView(bytes.buffer);
  view.setUint32(Reply.magic, ABI_MAGIC, true);
  view.setUint16(Reply.version, ABI_VERSION, true);
  view.setUint16(Reply.op, op, true);
  view.setInt32(Reply.status, status, true);
  view.setUint32(Reply.openFlags, openFlags >>> 0, true);
  view.setBigUint64(Reply.seq, seq, true);
  return bytes;
}
