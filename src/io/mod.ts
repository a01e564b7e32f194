/**
 * Local disk I/O for skyfs: one engine per process through which every data and metadata-log
 * I/O goes. `openIoEngine()` gives io_uring (liburing through FFI) where the kernel allows it,
 * else the portable engine (synchronous libc calls through FFI), with one log line saying so.
 * @module
 */
export type { IoEngine, StatxResult } from "./types.ts";

import type { IoEngine } from "./types.ts";
import { createPortableEngine } from "./portable.ts";

/** The process's I/O engine. Replaced by the io_uring selection when src/io/uring.ts lands. */
export function openIoEngine(): Promise<IoEngine> {
  return Promise.resolve(createPortableEngine());
}
