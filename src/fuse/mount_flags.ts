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

/** How much each rule moves atime: never < relatime < always. */
const MOVES: Record<AtimeRule, number> = { readonly: 0, noatime: 0, relatime: 1, strictatime: 2 };

/** The least moving of two rules. */
function leastMoving(a: AtimeRule, b: AtimeRule): AtimeRule {
  return MOVES[b] < MOVES[a] ? b : a;
}

/**
 * How far (ms) an access's atime may be behind the read: the kernel stamps it with its coarse
 * clock (a tick behind at most: 10 ms at HZ=100, 4 at HZ=250), or a fine-grained time (Linux
 * 6.13+ multigrain timestamps). Wider only ever moves atime less.
 */
export const TICK_MS = 20;

/** Most periods kept: an access seen later than this many remounts ago takes the oldest. */
const MAX_PERIODS = 32;

/**
 * The rules a mount had over time, as far as looks at its flags tell (ms of the real-time clock,
 * the clock the kernel stamps atime with). A change is seen only at the next look: it happened
 * after the last look that saw none (`quiet`) and before the one that saw it (`changed`). An
 * access seen late (a passthrough read found in the local file's atime at a RELEASE or GETATTR
 * the daemon handles after `mount -o remount,rw`) is weighed by the rule that held when it
 * happened (`at`), not the one at hand: a read under ro or noatime never moves atime later.
 */
export class RuleHistory {
  /** Oldest first; the last is the rule now. `from`: the earliest its change may have been. */
  #periods: { from: number; seen: number; rules: { file: AtimeRule; dir: AtimeRule } }[];
  /** The last look that saw no change. */
  #quietAt: number;

  constructor(rules: { file: AtimeRule; dir: AtimeRule }, now: number) {
    this.#periods = [{ from: -Infinity, seen: now, rules }];
    this.#quietAt = now;
  }

  get now(): { file: AtimeRule; dir: AtimeRule } {
    return this.#periods[this.#periods.length - 1].rules;
  }

  /** A look (before `now`) found the flags unchanged. */
  quiet(now: number): void {
    this.#quietAt = now;
  }

  /** A look at `now` found these rules (the same ones: nothing recorded). */
  changed(rules: { file: AtimeRule; dir: AtimeRule }, now: number): void {
    const current = this.now;
    if (rules.file !== current.file || rules.dir !== current.dir) {
      this.#periods.push({ from: this.#quietAt, seen: now, rules });
      if (this.#periods.length > MAX_PERIODS) this.#periods.shift();
    }
    this.#quietAt = now;
  }

  /**
   * The rule that held at `at` (ms, an access's atime): where a change may have fallen near it
   * (after the look before it, before the look that saw it), the one of those that moves atime
   * least. The read was at `at` or up to `TICK_MS` later, and a look's `Date.now()` is up to 1 ms
   * behind the look: a period that began by the look at `from` covers reads stamped from
   * `from - TICK_MS` on, one that ended by the look at `seen` those stamped before `seen + 1`.
   * So a read right after the look that saw `mount -o remount,rw` (the OPEN's) moves atime. An
   * access older than every kept period takes the oldest kept.
   */
  at(isDir: boolean, at: number): AtimeRule {
    const periods = this.#periods;
    let rule: AtimeRule | undefined;
    for (let i = periods.length - 1; i >= 0; i--) {
      // Period i began within [from, seen] and ended within the next one's [from, seen].
      const end = i + 1 < periods.length ? periods[i + 1].seen : Infinity;
      if (at + TICK_MS <= periods[i].from) continue;
      if (at >= end + 1) break;
      const r = isDir ? periods[i].rules.dir : periods[i].rules.file;
      rule = rule === undefined ? r : leastMoving(rule, r);
    }
    if (rule !== undefined) return rule;
    return isDir ? periods[0].rules.dir : periods[0].rules.file;
  }
}

/**
 * Follows the flags of the FUSE mount at `mountPoint` (the last one mounted there, as path walks
 * see it). Checking costs one zero-timeout poll of an open mountinfo fd (the kernel signals
 * POLLPRI when the mount table changes, remounts included); the file is read again only then.
 * Bind mounts elsewhere with other flags are not followed: a request does not say which mount it
 * came through, so reads through them follow this mount's rule (README, "What does not yet").
 * The rules over time are kept (`RuleHistory`) for accesses seen after they happened.
 */
export class MountFlags {
  readonly mountPoint: string;
  #fd: number;
  #history: RuleHistory;

  constructor(mountPoint: string) {
    this.mountPoint = mountPoint;
    const before = Date.now();
    this.#fd = libc.open("/proc/self/mountinfo", libc.O_RDONLY);
    this.#history = new RuleHistory(this.#read(), before);
  }

  /**
   * The rule now, for a directory or anything else; with `at` (ms of the real-time clock, an
   * access seen after it happened), the rule then (`RuleHistory.at`).
   */
  atimeRule(isDir: boolean, at?: number): AtimeRule {
    this.#look();
    if (at !== undefined) return this.#history.at(isDir, at);
    const rules = this.#history.now;
    return isDir ? rules.dir : rules.file;
  }

  #look(): void {
    // Taken before the poll: a change the poll does not see came after it.
    const before = Date.now();
    if (this.#fd >= 0 && libc.pollNow(this.#fd, libc.POLLPRI) & (libc.POLLPRI | libc.POLLERR)) {
      const rules = this.#read();
      this.#history.changed(rules, Date.now());
    } else {
      this.#history.quiet(before);
    }
  }

  #read(): { file: AtimeRule; dir: AtimeRule } {
    const entries = parseMountInfo(Deno.readTextFileSync("/proc/self/mountinfo"));
    const ours = entries.filter((e) =>
      e.mountPoint === this.mountPoint && e.fsType.startsWith("fuse")
    );
    // Not mounted (yet, or any more): relatime, the kernel's default.
    const entry = ours.at(-1);
    return entry ? atimeRules(entry) : { file: "relatime", dir: "relatime" };
  }

  close(): void {
    if (this.#fd >= 0) libc.close(this.#fd);
    this.#fd = -1;
  }
}
