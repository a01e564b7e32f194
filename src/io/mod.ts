/**
 * Local disk I/O for skyfs: one engine per process through which every data and metadata-log
 * I/O goes. `openIoEngine()` gives io_uring (liburing through FFI) where the kernel allows it,
 * else the portable engine (synchronous libc calls through FFI), with one log line saying so.
 * @module
 */
export type { IoEngine, StatxResult } from "./types.ts";
export type { UringEngineOptions, UringStats } from "./uring.ts";
export { alignedBuffer } from "./uring_native.ts";

import type { IoEngine } from "./types.ts";
import { createPortableEngine } from "./portable.ts";
import { useNativeLibrary } from "./libc.ts";
import { openUringEngine, type UringEngineOptions } from "./uring.ts";
import { FsError } from "../fs_error.ts";

export interface OpenIoEngineOptions {
  /** Which engine: "io_uring" (fail if it cannot open), "portable", or "auto" (io_uring, else
   * portable). Default "auto" (a mount takes config io.engine, SKYFS_IO). */
  engine?: string;
  /** Where the one line saying which engine and why goes. Default console.error. */
  log?: (line: string) => void;
  /** Options of the io_uring engine. */
  uring?: UringEngineOptions;
  /** Opens the io_uring engine; tests replace it to simulate an init failure. */
  openUring?: (options: UringEngineOptions) => IoEngine;
}

/**
 * The process's I/O engine; call it once per process and share the engine (one ring serves all
 * I/O), then `shutdown()` it on exit. Throws RangeError for an unknown engine name and FsError
 * when io_uring was demanded but cannot open.
 */
export function openIoEngine(options: OpenIoEngineOptions = {}): Promise<IoEngine> {
  const choice = options.engine ?? "auto";
  const log = options.log ?? ((line: string) => console.error(line));
  const how = options.engine !== undefined ? "io.engine" : "default";
  if (choice !== "auto" && choice !== "io_uring" && choice !== "portable") {
    return Promise.reject(
      new RangeError(`Unknown I/O engine "${choice}": use io_uring, portable or auto`),
    );
  }
  // libc.ts's system calls come from the same library as the ring's: a missing or old build
  // rejects with one line naming the fix, whichever engine was asked for.
  const portable = (why: string): Promise<IoEngine> => {
    try {
      const engine = createPortableEngine();
      log(`skyfs io: engine portable (${why})`);
      return Promise.resolve(engine);
    } catch (error) {
      return Promise.reject(error);
    }
  };
  try {
    if (options.uring?.libraryPath) useNativeLibrary(options.uring.libraryPath);
  } catch (error) {
    return Promise.reject(error);
  }
  if (choice === "portable") return portable(`${how}: portable`);
  const open = options.openUring ?? openUringEngine;
  try {
    const engine = open(options.uring ?? {});
    log(`skyfs io: engine io_uring (${how}: ${choice})`);
    return Promise.resolve(engine);
  } catch (error) {
    if (choice === "io_uring") return Promise.reject(error);
    return portable(`io_uring unavailable: ${describe(error)}`);
  }
}

function describe(error: unknown): string {
  const text = error instanceof Error ? error.message : String(error);
  if (!(error instanceof FsError) || error.errno !== 1) return text;
  // EPERM: say whether the sysctl is the reason, which is the first thing an operator checks.
  try {
    const value = Deno.readTextFileSync("/proc/sys/kernel/io_uring_disabled").trim();
    return `${text}; kernel.io_uring_disabled = ${value}`;
  } catch {
    return text;
  }
}
