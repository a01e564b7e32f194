/** Test fixture for the vfs: a temp data dir with an EmbeddedKV, and reopen for restart tests. */

import { openEmbeddedKV } from "../meta/embedded.ts";
import { createPortableEngine } from "../io/portable.ts";
import { createVfs, type VfsOptions, type VfsWithRecovery } from "./vfs.ts";
import type { Ctx } from "./types.ts";
import type { MetaKV } from "../meta/kv.ts";

export const root: Ctx = { uid: 0, gid: 0, pid: 1 };
export const alice: Ctx = { uid: 1000, gid: 1000, pid: 2, groups: [1000, 50] };
export const bob: Ctx = { uid: 1001, gid: 1001, pid: 3, groups: [1001] };

const encoder = new TextEncoder();
export const n = (s: string) => encoder.encode(s);
export const text = (b: Uint8Array) => new TextDecoder().decode(b);

/** Where the local data file of `ino` lies under data directory `dir` (LocalStore.path). */
export const localPath = (dir: string, ino: number) =>
  `${dir}/data/${(ino % 256).toString(16).padStart(2, "0")}/${ino.toString(16)}`;

/** This process's fds open on `path` (a kept or held local file; " (deleted)" once unlinked). */
export function fdsOn(path: string): number[] {
  const fds: number[] = [];
  for (const entry of Deno.readDirSync("/proc/self/fd")) {
    try {
      const target = Deno.readLinkSync(`/proc/self/fd/${entry.name}`);
      if (target === path || target === `${path} (deleted)`) fds.push(Number(entry.name));
    } catch {
      // closed meanwhile (the readDir's own fd)
    }
  }
  return fds;
}

export interface Fixture {
  dir: string;
  vfs: VfsWithRecovery;
  /** The store under the current vfs (closed by its destroy). */
  kv: MetaKV;
  /** destroy + createVfs again on the same directory and store. */
  restart(): Promise<VfsWithRecovery>;
  /** Close and delete everything. */
  cleanup(): Promise<void>;
}

export async function openFixture(options: Partial<VfsOptions> = {}): Promise<Fixture> {
  const dir = await Deno.makeTempDir({ prefix: "vfs-test-" });
  const io = createPortableEngine();
  let kv = await openEmbeddedKV(`${dir}/meta.db`);
  const open = () => createVfs({ kv, io, dataDir: dir, rootUid: 0, rootGid: 0, ...options });
  let destroyed = false;
  const fixture: Fixture = {
    dir,
    kv,
    vfs: await open(),
    async restart() {
      await fixture.vfs.destroy();
      fixture.kv = kv = await openEmbeddedKV(`${dir}/meta.db`);
      fixture.vfs = await open();
      return fixture.vfs;
    },
    async cleanup() {
      if (!destroyed) await fixture.vfs.destroy();
      destroyed = true;
      await Deno.remove(dir, { recursive: true });
    },
  };
  return fixture;
}

/** Run `body` with a fresh fixture, always cleaning up. */
export async function withVfs(
  body: (f: Fixture) => Promise<void>,
  options: Partial<VfsOptions> = {},
): Promise<void> {
  const f = await openFixture(options);
  try {
    await body(f);
  } finally {
    await f.cleanup();
  }
}
