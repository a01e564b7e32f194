/**
 * The shim's daemon side: the server that hands libskyfs_preload.so local fds of files a process
 * opened through the mount, the ABI mirror, and where the library is. See README.md.
 * @module
 */

export { ShimServer, type ShimServerOptions, startShimServer } from "./server.ts";
export { ABI_VERSION } from "./abi.ts";
export { ensurePreloadLibrary, preloadLibraryPath } from "./library.ts";
