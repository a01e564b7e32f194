/**
 * Supplementary groups of the process behind a request, for callers (the FUSE header) that only
 * carry uid, gid and pid: read from /proc/<pid>/status, as the kernel's own permission check
 * (default_permissions) would use them. A vanished process has none.
 * @module
 */

import type { Ctx } from "./types.ts";

const decoder = new TextDecoder();

/** The caller's supplementary groups; read once per request and kept on `ctx`. */
export function groupsOf(ctx: Ctx): number[] {
  if (ctx.groups) return ctx.groups;
  ctx.groups = ctx.pid > 0 ? procGroups(ctx.pid) : [];
  return ctx.groups;
}

function procGroups(pid: number): number[] {
  let status: string;
  try {
    // The FUSE pid is the calling thread's id; /proc/<tid>/status has that thread's groups.
    status = decoder.decode(Deno.readFileSync(`/proc/${pid}/status`));
  } catch {
    return [];
  }
  const line = status.split("\n").find((l) => l.startsWith("Groups:"));
  if (!line) return [];
  return line.slice("Groups:".length).trim().split(/\s+/).filter((g) => g !== "").map(Number);
}
