/**
 * The thin FFI edge to lib/uring/build/libskyfs_uring.so (contract: lib/uring/skyfs_uring.h):
 * loading it, its symbol table, and the layouts of the op and completion records. All policy
 * (slots, batching, back-pressure, shutdown) lives in uring.ts.
 * @module
 */

import { Errno, FsError } from "../fs_error.ts";

/** The ABI version this binding speaks; a library reporting another one is refused. */
export const ABI_VERSION = 9;

/** Operation codes of `struct skyfs_uring_op` (ours, not the kernel's IORING_OP_* numbers). */
export const Op = {
  NOP: 0,
  READ: 1,
  WRITE: 2,
  READV: 3,
  WRITEV: 4,
  FSYNC: 5,
  FALLOCATE: 6,
  OPENAT: 7,
  CLOSE: 8,
  STATX: 9,
  UNLINKAT: 10,
  RENAMEAT: 11,
  CANCEL_ALL: 12,
  SPLICE: 13,
  RECV: 14,
  SEND: 15,
  ACCEPT: 16,
  CONNECT: 17,
  /** FUSE over io_uring (src/fuse/transport_uring.ts), on an SQE128 ring only. */
  URING_CMD: 18,
  POLL_ADD: 19,
} as const;

export const OP_NAMES = [
  "nop",
  "read",
  "write",
  "readv",
  "writev",
  "fsync",
  "fallocate",
  "openat",
  "close",
  "statx",
  "unlinkat",
  "renameat",
  "cancel",
  "splice",
  "recv",
  "send",
  "accept",
  "connect",
  "uring_cmd",
  "poll_add",
] as const;

/** Size of `struct skyfs_uring_op` and the index (in u32 words) of each field. */
export const OP_BYTES = 64;
export const OpWord = {
  /** u8 opcode, u8 link (IOSQE_IO_LINK), u8 async (IOSQE_ASYNC), u8 reserved */
  HEAD: 0,
  FD: 1,
  OFFSET: 2,
  ADDR: 4,
  ADDR2: 6,
  LENGTH: 8,
  FLAGS: 10,
  MODE: 11,
  USER_DATA: 12,
  RESERVED1: 14,
} as const;

/** HEAD word bits: the link and async bytes. */
export const HEAD_LINK = 0x100;
export const HEAD_ASYNC = 0x10000;

/** Levels of skyfs_uring_open_with: which task-work setup flags the ring asks for. */
export const RING_SETUPS = { defer: 0, coop: 1, plain: 2 } as const;
export type RingSetup = keyof typeof RING_SETUPS;
/** OR-ed into a level: 128-byte SQEs (IORING_SETUP_SQE128), for Op.URING_CMD. */
export const SETUP_SQE128 = 0x100;
/** OR-ed into "defer" or "coop": IORING_SETUP_TASKRUN_FLAG (skyfs_uring_cq_ready sees pending
 * task work without a syscall). */
export const SETUP_TASKRUN_FLAG = 0x200;
/** IORING_SETUP_* flags, to say which ones a ring got. */
export const IORING_SETUP_COOP_TASKRUN = 1 << 8;
export const IORING_SETUP_TASKRUN_FLAG = 1 << 9;
export const IORING_SETUP_SQE128 = 1 << 10;
export const IORING_SETUP_SINGLE_ISSUER = 1 << 12;
export const IORING_SETUP_DEFER_TASKRUN = 1 << 13;

/** Bits of skyfs_uring_fd_mode's result. */
export const FD_DIRECT = 1;
export const FD_REGULAR = 2;

/** Size of `struct skyfs_uring_cqe`: u64 user_data, i32 res, u32 flags. */
export const CQE_BYTES = 16;

export const AT_FDCWD = -100;
export const IORING_FSYNC_DATASYNC = 1;
/** statx(2) mask for the fields of struct stat. */
export const STATX_BASIC_STATS = 0x7ff;

const symbols = {
  skyfs_uring_abi_version: { parameters: [], result: "i32" },
  skyfs_uring_open: { parameters: ["u32", "buffer"], result: "pointer" },
  skyfs_uring_open_with: { parameters: ["u32", "u32", "buffer"], result: "pointer" },
  skyfs_uring_setup_flags: { parameters: ["pointer"], result: "u32" },
  skyfs_uring_entries: { parameters: ["pointer"], result: "u32" },
  skyfs_uring_probe: { parameters: ["pointer"], result: "i32" },
  skyfs_uring_probe_net: { parameters: ["pointer"], result: "i32" },
  skyfs_uring_submit: { parameters: ["pointer", "pointer", "u32"], result: "i32" },
  skyfs_uring_submit_reap: {
    parameters: ["pointer", "pointer", "u32", "pointer", "u32", "u32"],
    result: "i32",
  },
  skyfs_uring_reap: { parameters: ["pointer", "pointer", "u32"], result: "i32" },
  skyfs_uring_prepare_wait: { parameters: ["pointer", "pointer", "u32"], result: "i32" },
  // Blocks in poll(2) on the ring's eventfd: on Deno's blocking pool, never on the JS thread.
  skyfs_uring_wait: { parameters: ["pointer"], result: "i32", nonblocking: true },
  skyfs_uring_wake: { parameters: ["pointer"], result: "i32" },
  skyfs_uring_sq_pending: { parameters: ["pointer"], result: "u32" },
  skyfs_uring_fd_mode: { parameters: ["i32"], result: "i32" },
  skyfs_uring_async_count: { parameters: ["pointer"], result: "u32" },
  skyfs_uring_set_poll_ns: { parameters: ["pointer", "u32"], result: "void" },
  skyfs_uring_cq_ready: { parameters: ["pointer"], result: "u32" },
  skyfs_uring_eventfd_total: { parameters: ["pointer"], result: "u64" },
  skyfs_uring_close: { parameters: ["pointer"], result: "void" },
} as const satisfies Deno.ForeignLibraryInterface;

export type UringLibrary = Deno.DynamicLibrary<typeof symbols>;
export type UringSymbols = UringLibrary["symbols"];

/** Where the library is: lib/uring/build/ of this checkout (a mount passes config io.uring_lib,
 * SKYFS_URING_LIB, as UringEngineOptions.libraryPath instead). */
export function defaultLibraryPath(): string {
  return new URL("../../lib/uring/build/libskyfs_uring.so", import.meta.url).pathname;
}

/**
 * Loads the library and checks its ABI version. Throws FsError(ENOENT) when it is missing or
 * lacks a symbol, FsError(EINVAL) when it reports another ABI version; each names the fix.
 */
export function loadUringLibrary(path: string): UringLibrary {
  let library: UringLibrary;
  try {
    library = Deno.dlopen(path, symbols);
  } catch (error) {
    throw new FsError(
      Errno.ENOENT,
      `cannot load "${path}" (${(error as Error).message}): run \`deno task build\``,
    );
  }
  const version = library.symbols.skyfs_uring_abi_version();
  if (version !== ABI_VERSION) {
    library.close();
    throw new FsError(
      Errno.EINVAL,
      `"${path}" speaks ABI ${version}, this code needs ${ABI_VERSION}: run \`deno task build\``,
    );
  }
  return library;
}

const bases = new WeakMap<ArrayBufferLike, number>();

/**
 * The address of a view's first byte. Reading `.buffer` first moves a small on-heap typed array
 * off the V8 heap, after which its bytes never move; the base address of each ArrayBuffer is
 * cached because Deno.UnsafePointer.of + value costs about 0.2 us, the cache about 13 ns.
 */
export function addressOf(view: ArrayBufferView): number {
  const buffer = view.buffer;
  let base = bases.get(buffer);
  if (base === undefined) {
    const pointer = Deno.UnsafePointer.of(buffer as ArrayBuffer);
    base = pointer === null ? 0 : Number(Deno.UnsafePointer.value(pointer));
    bases.set(buffer, base);
  }
  return base + view.byteOffset;
}

/**
 * A zeroed buffer of `bytes` whose first byte sits on an `alignment` boundary (default 4096):
 * copies between the page cache and a page-aligned buffer are faster, and O_DIRECT requires it.
 * V8's own ArrayBuffers start 16 bytes past a page boundary.
 */
export function alignedBuffer(bytes: number, alignment = 4096): Uint8Array<ArrayBuffer> {
  if (!Number.isInteger(alignment) || alignment <= 0 || (alignment & (alignment - 1)) !== 0) {
    throw new RangeError(`alignment ${alignment} is not a power of two`);
  }
  const backing = new Uint8Array(new ArrayBuffer(bytes + alignment));
  const skip = (alignment - (addressOf(backing) % alignment)) % alignment;
  return backing.subarray(skip, skip + bytes);
}

/** A pointer object for a buffer the engine owns for its whole life. */
export function pointerOf(buffer: ArrayBuffer): Deno.PointerObject {
  const pointer = Deno.UnsafePointer.of(buffer);
  if (pointer === null) throw new RangeError("Cannot take the address of an empty buffer");
  return pointer;
}
