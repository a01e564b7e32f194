/**
 * Where libskyfs_preload.so is, and building it when missing or stale (scripts/setup.sh does the
 * build, with the same staleness rule as every lib/* part).
 * @module
 */

import { fileURLToPath } from "node:url";

const repoRoot = fileURLToPath(new URL("../..", import.meta.url)).replace(/\/$/, "");

/** Absolute path of the shim library (it may not exist yet: see ensurePreloadLibrary). */
export function preloadLibraryPath(): string {
  return `${repoRoot}/lib/preload/build/libskyfs_preload.so`;
}

/** Build lib/* natives when missing or stale; returns the library path, or throws with why. */
export async function ensurePreloadLibrary(): Promise<string> {
  const { code, stderr } = await new Deno.Command("bash", {
    args: [`${repoRoot}/scripts/setup.sh`, "--build-only", "--quiet"],
    stdout: "null",
    stderr: "piped",
  }).output();
  if (code !== 0) {
    throw new Error(
      `Cannot build lib/preload: scripts/setup.sh --build-only failed:\n` +
        new TextDecoder().decode(stderr).trim(),
    );
  }
  return preloadLibraryPath();
}
