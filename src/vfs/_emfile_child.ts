// Child of kept_test.ts's EMFILE test, run under `prlimit --nofile=N:N`: keeps as many closed
// files as the keep allows, fills every other free fd with /dev/null, then opens a file whose
// fd was not kept. Prints one JSON line: the keep's size and how that open ended.
import { createVfs } from "./vfs.ts";
import { createPortableEngine } from "../io/portable.ts";
import { openEmbeddedKV } from "../meta/embedded.ts";
import { errnoOf } from "../fs_error.ts";
import * as libc from "../io/libc.ts";

const dir = Deno.args[0];
const root = { uid: 0, gid: 0, pid: 1 };
const kv = await openEmbeddedKV(`${dir}/meta.db`);
const vfs = await createVfs({
  kv,
  io: createPortableEngine(),
  dataDir: dir,
  rootUid: 0,
  rootGid: 0,
  localSpareFiles: 0,
});
const inos: number[] = [];
for (let i = 0;; i++) {
  const c = await vfs.create(root, 1, new TextEncoder().encode(`f${i}`), 0o644, 0, libc.O_RDWR);
  await vfs.release(c.attr.ino, c.fh, 0);
  inos.push(c.attr.ino);
  if (i > 4096) break;
  // Stop once the first file's fd was evicted (the keep is full).
  let open = 0;
  for (const entry of Deno.readDirSync("/proc/self/fd")) {
    try {
      if (Deno.readLinkSync(`/proc/self/fd/${entry.name}`).startsWith(`${dir}/data/`)) open++;
    } catch { /* the readDir's own fd */ }
  }
  if (open <= i) break;
}
const kept = inos.length - 1;
const fillers: Deno.FsFile[] = [];
for (;;) {
  try {
    fillers.push(Deno.openSync("/dev/null"));
  } catch {
    break;
  }
}
let result: string;
try {
  const o = await vfs.open(root, inos[0], libc.O_RDONLY);
  await vfs.release(inos[0], o.fh, 0);
  result = "opened";
} catch (error) {
  result = `errno ${errnoOf(error)}`;
}
for (const f of fillers) f.close();
console.log(JSON.stringify({ kept, fillers: fillers.length, result }));
await vfs.destroy();
