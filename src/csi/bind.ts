/**
 * Bind mounts of volume directories, as the node service makes and checks them: what
 * /proc/self/mountinfo lists at a path (so a repeated call finds its own earlier work, even one made
 * by a previous driver process), `mount --bind` (then a read-only remount, since the kernel ignores
 * `ro` on the first bind), and `umount`.
 * @module
 */

import { CsiError, status } from "./status.ts";

/** One line of /proc/self/mountinfo. */
export interface MountEntry {
  id: number;
  major: number;
  minor: number;
  /** The directory of the mounted file system this mount shows (a bind's source inside it). */
  root: string;
  mountPoint: string;
  readOnly: boolean;
  fstype: string;
}

const unescape = (text: string) =>
  text.replace(/\\(\d{3})/g, (_, octal) => String.fromCharCode(parseInt(octal, 8)));

export function readMountInfo(): MountEntry[] {
  const entries: MountEntry[] = [];
  for (const line of Deno.readTextFileSync("/proc/self/mountinfo").split("\n")) {
    const fields = line.split(" ");
    const dash = fields.indexOf("-");
    if (fields.length < 10 || dash < 6) continue;
    const [major, minor] = fields[2].split(":").map(Number);
    entries.push({
      id: Number(fields[0]),
      major,
      minor,
      root: unescape(fields[3]),
      mountPoint: unescape(fields[4]),
      readOnly: fields[5].split(",").includes("ro"),
      fstype: fields[dash + 1],
    });
  }
  return entries;
}

/** The topmost mount on `path` (the one a lookup reaches), if any. */
export function mountOn(path: string): MountEntry | undefined {
  let found: MountEntry | undefined;
  for (const entry of readMountInfo()) if (entry.mountPoint === path) found = entry;
  return found;
}

async function runMountTool(tool: string, args: string[]): Promise<void> {
  let output: Deno.CommandOutput;
  try {
    output = await new Deno.Command(tool, { args, stdout: "piped", stderr: "piped" }).output();
  } catch (error) {
    throw new CsiError(
      status.INTERNAL,
      `cannot run ${tool} (util-linux): ${(error as Error).message}`,
    );
  }
  if (!output.success) {
    const text = new TextDecoder().decode(output.stderr).trim().split("\n")[0];
    throw new CsiError(status.INTERNAL, `${tool} ${args.join(" ")} failed: ${text}`);
  }
}

/** Binds `source` on `target` (an existing directory), read-only when asked. */
export async function bindMount(
  source: string,
  target: string,
  options: { readOnly: boolean },
): Promise<void> {
  await runMountTool("mount", ["--bind", source, target]);
  if (options.readOnly) {
    try {
      await runMountTool("mount", ["-o", "remount,bind,ro", target]);
    } catch (error) {
      // Never leave a writable bind where a read-only one was asked for.
      await runMountTool("umount", [target]).catch(() => {});
      throw error;
    }
  }
}

/** Unmounts every mount stacked on `target`; a busy one is detached lazily (the pod is gone by
 * the time a CO unpublishes, so what still holds it is a stray process, not the workload). */
export async function unmountAll(target: string): Promise<void> {
  for (let round = 0; round < 16 && mountOn(target) !== undefined; round++) {
    try {
      await runMountTool("umount", [target]);
    } catch (error) {
      if (!/busy/i.test((error as Error).message)) throw error;
      await runMountTool("umount", ["-l", target]);
    }
  }
  if (mountOn(target) !== undefined) {
    throw new CsiError(status.INTERNAL, `"${target}" is still mounted after 16 unmounts`);
  }
}
