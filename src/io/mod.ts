/**
 * Local disk I/O for skyfs: one engine per process through which every data and metadata-log
 * I/O goes. `openIoEngine()` gives io_uring (liburing through FFI) where the kernel allows it,
 * else the portable engine (synchronous libc calls through FFI), with one log line saying so.
 * @module
 */
export type { IoEngine, StatxResult } from "./types.ts";
