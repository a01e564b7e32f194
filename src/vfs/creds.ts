/**
 * Supplementary groups and capabilities of the process behind a request, for callers (the FUSE
 * header) that only carry uid, gid and pid: read from /proc/<pid>/status, as the kernel's own
 * permission check (default_permissions) would use them. A vanished process has none.
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

/** Capability numbers (linux/capability.h) that the permission rules ask for. */
export const CAP_DAC_OVERRIDE = 1;
export const CAP_DAC_READ_SEARCH = 2;
export const CAP_FOWNER = 3;
export const CAP_FSETID = 4;

/**
 * Whether the caller holds capability `cap` in its effective set. uid 0 always does (as in the
 * initial user namespace; the kernel's default_permissions check has already refused a root
 * without it where that matters). Another uid is asked about only on a path that would otherwise
 * refuse, so the common case reads nothing: its CapEff is read from /proc/<pid>/status once per
 * request, and trusted only while that process's fsuid is the request's uid (a process that
 * exited and whose pid was reused is not asked about).
 */
export function capable(ctx: Ctx, cap: number): boolean {
  if (ctx.uid === 0) return true;
  if (ctx.caps === undefined) ctx.caps = ctx.pid > 0 ? procCaps(ctx.pid, ctx.uid) : 0n;
  return ((ctx.caps >> BigInt(cap)) & 1n) === 1n;
}

function procCaps(pid: number, uid: number): bigint {
  let status: string;
  try {
    status = decoder.decode(Deno.readFileSync(`/proc/${pid}/status`));
  } catch {
    return 0n;
  }
  const field = (name: string) =>
    status.split("\n").find((l) => l.startsWith(name))?.slice(name.length).trim();
  // Uid: real, effective, saved, filesystem; the FUSE header carries the filesystem uid.
  const fsuid = field("Uid:")?.split(/\s+/)[3];
  const capEff = field("CapEff:");
  if (fsuid !== String(uid) || !capEff || !/^[0-9a-f]+$/i.test(capEff)) return 0n;
  return BigInt(`0x${capEff}`);
}
