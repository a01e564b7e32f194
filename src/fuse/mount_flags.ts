/**
 * The access-time rule of this daemon's mount, read from its flags in /proc/self/mountinfo. FUSE
 * leaves atime to the daemon (the kernel marks FUSE inodes S_NOATIME), and no request says which
 * mount it came through or whether the file system is read-only, so the daemon follows the flags
 * itself: `mount -o remount,ro`, `noatime`, `nodiratime`, `strictatime` take effect at once.
 * @module
 */

import * as libc from "../io/libc.ts";
import type { AtimeRule } from "../vfs/core.ts";

/** The flags of one mount, as mountinfo shows them. */
export interface MountEntry {
  mountId: number;
  mountPoint: string;
  /** Per-mount options (`rw`, `ro`, `noatime`, `relatime`, `nodiratime`, ...). */
  options: string[];
  fsType: string;
  /** Superblock options (`ro` after `mount -o remount,ro` of the file system). */
  superOptions: string[];
}

/** Octal escapes (`\040` for a space) as mountinfo writes them. */
function unescape(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, octal) => String.fromCharCode(parseInt(octal, 8)));
}

/** Parses /proc/self/mountinfo text (proc(5)). */
export function parseMountInfo(text: string): MountEntry[] {
  const entries: MountEntry[] = [];
  for (const line of text.split("\n")) {
    if (!line) continue;
    const fields = line.split(" ");
    const dash = fields.indexOf("-", 6);
    if (dash < 0 || fields.length < dash + 4) continue;
    entries.push({
      mountId: Number(fields[0]),
      mountPoint: unescape(fields[4]),
      options: fields[5].split(","),
      fsType: fields[dash + 1],
      superOptions: fields[dash + 3].split(","),
    });
  }
  return entries;
}

/** The rule for files and for directories from one mount's flags. */
export function atimeRules(entry: MountEntry): { file: AtimeRule; dir: AtimeRule } {
  const has = (option: string) => entry.options.includes(option);
  if (has("ro") || entry.superOptions.includes("ro")) {
    return { file: "readonly", dir: "readonly" };
  }
  if (has("noatime")) return { file: "noatime", dir: "noatime" };
  const file: AtimeRule = has("relatime") ? "relatime" : "strictatime";
  return { file, dir: has("nodiratime") ? "noatime" : file };
}

/**
 * Follows the flags of the FUSE mount at `mountPoint` (the last one mounted there, as path walks
 * see it). Checking costs one zero-timeout poll of an open mountinfo fd (the kernel signals
 * POLLPRI when the mount table changes, remounts included); the file is read again only then.
 * Bind mounts elsewhere with other flags are not followed: a request does not say which mount it
 * came through, so reads through them follow this mount's rule (README, "What does not yet").
 */
export class MountFlags {
  readonly mountPoint: string;
  #fd: number;
  #rules: { file: AtimeRule; dir: AtimeRule } = { file: "relatime", dir: "relatime" };

  constructor(mountPoint: string) {
    this.mountPoint = mountPoint;
    this.#fd = libc.open("/proc/self/mountinfo", libc.O_RDONLY);
    this.#read();
  }

  /** The rule now, for a directory or anything else. */
  atimeRule(isDir: boolean): AtimeRule {
    if (this.#fd >= 0 && libc.pollNow(this.#fd, libc.POLLPRI) & (libc.POLLPRI | libc.POLLERR)) {
      this.#read();
    }
    return isDir ? this.#rules.dir : this.#rules.file;
  }

  #read(): void {
    const entries = parseMountInfo(Deno.readTextFileSync("/proc/self/mountinfo"));
    const ours = entries.filter((e) =>
      e.mountPoint === this.mountPoint && e.fsType.startsWith("fuse")
    );
    // Not mounted (yet, or any more): relatime, the kernel's default.
    const entry = ours.at(-1);
    this.#rules = entry ? atimeRules(entry) : { file: "relatime", dir: "relatime" };
  }

  close(): void {
    if (this.#fd >= 0) libc.close(this.#fd);
    this.#fd = -1;
  }
}
