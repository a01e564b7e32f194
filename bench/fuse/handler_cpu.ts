/**
 * The JS thread's cost of one cheap request, without the kernel: `FuseServer.handleRequest` of a
 * GETATTR, a LOOKUP, and an OPEN + RELEASE of files held in the namespace's cache (and, with
 * `--ops rename,unlink`, a RENAME of each file to a new name in its directory and back, and an
 * UNLINK of each of a fresh set of empty files, made untimed before each pass, with `unlink+forget`
 * the kernel's FORGET after each and its purge; with `--ops create`
 * the five requests of a create + 1 KiB + close, `runCreate`), called in a loop with a reply sink that only looks at the reply (no write(2)), so what is measured is the
 * decode, dispatch, Vfs fast path (its stat of the local file included), encode and counters of
 * each tree. Trees are loaded side by side (dynamic import from each `--root`) and run
 * alternately, `--rounds` times.
 *
 * Usage: deno run -A bench/fuse/handler_cpu.ts --root /work/base --root . [--files 2000]
 *   [--loops 20] [--rounds 5]
 * Prints per tree and operation the median (range) of ns per request over the rounds (and, for
 * RENAME, UNLINK and each request of a create, of the process's CPU per request in the timed
 * part). TMPDIR on a tmpfs keeps the data disk's own create cost out of the CREATE figure.
 * @module
 */

import { parseArgs } from "node:util";
import process from "node:process";

const { values } = parseArgs({
  options: {
    root: { type: "string", multiple: true },
    files: { type: "string", default: "2000" },
    loops: { type: "string", default: "20" },
    rounds: { type: "string", default: "5" },
    ops: { type: "string", default: "getattr,lookup,open+release" },
  },
});
const roots = values.root ?? ["."];
const files = Number(values.files);
const loops = Number(values.loops);
const rounds = Number(values.rounds);
const ops = values.ops.split(",");
const encoder = new TextEncoder();
const root = { uid: 0, gid: 0, pid: 1 };

/** A FUSE request as the kernel writes it: header, then `body`. */
function request(opcode: number, nodeid: number, unique: bigint, body: Uint8Array) {
  const bytes = new Uint8Array(40 + body.length);
  const dv = new DataView(bytes.buffer);
  dv.setUint32(0, bytes.length, true);
  dv.setUint32(4, opcode, true);
  dv.setBigUint64(8, unique, true);
  dv.setBigUint64(16, BigInt(nodeid), true);
  bytes.set(body, 40);
  return bytes;
}

interface Tree {
  name: string;
  // deno-lint-ignore no-explicit-any
  server: any;
  getattrs: Uint8Array[];
  lookups: Uint8Array[];
  opens: Uint8Array[];
  fhs: number[];
  inos: number[];
  dir: number;
  // deno-lint-ignore no-explicit-any
  vfs: any;
  dataDir: string;
  /** Passes of runCreate so far (names of each pass are new). */
  creates: number;
  cleanup: () => Promise<void>;
}

async function load(rootDir: string): Promise<Tree> {
  const base = new URL(`file://${Deno.realPathSync(rootDir)}/`);
  const testing = await import(new URL("src/vfs/_testing.ts", base).href);
  const serverMod = await import(new URL("src/fuse/server.ts", base).href);
  const fixture = await testing.openFixture();
  const vfs = fixture.vfs;
  const dir = await vfs.mkdir(root, 1, encoder.encode("d"), 0o755, 0);
  const getattrs: Uint8Array[] = [];
  const lookups: Uint8Array[] = [];
  const opens: Uint8Array[] = [];
  const inos: number[] = [];
  const data = new Uint8Array(1024).fill(120);
  for (let i = 0; i < files; i++) {
    const made = await vfs.create(root, dir.ino, encoder.encode(`f${i}`), 0o100644, 0, 2);
    await vfs.write(root, made.attr.ino, made.fh, 0, data);
    await vfs.release(made.attr.ino, made.fh, 0);
    await vfs.getattr(root, made.attr.ino);
    inos.push(made.attr.ino);
    getattrs.push(request(3, made.attr.ino, 1n, new Uint8Array(16)));
    lookups.push(request(1, dir.ino, 1n, encoder.encode(`f${i}\0`)));
    const openIn = new Uint8Array(8); // fuse_open_in: flags u32 (O_RDONLY), open_flags u32
    opens.push(request(14, made.attr.ino, 1n, openIn));
  }
  // deno-lint-ignore no-explicit-any
  const server = new serverMod.FuseServer({ backingOpen: () => -1 } as any, vfs);
  return {
    name: rootDir,
    server,
    getattrs,
    lookups,
    opens,
    fhs: [],
    inos,
    dir: dir.ino,
    vfs,
    dataDir: fixture.dir,
    creates: 0,
    cleanup: () => fixture.cleanup(),
  };
}

let sink = 0;
/** Process CPU (us) of the timed parts of the current pass (runRename, runUnlink). */
let timedCpuUs = 0;
let pending = 0;
function reply(out: Uint8Array | null) {
  if (out === null) return;
  sink += out[0];
}
function asyncReply(out: Uint8Array | null) {
  reply(out);
  pending--;
}

async function run(tree: Tree, requests: Uint8Array[]): Promise<number> {
  const t0 = performance.now();
  for (let l = 0; l < loops; l++) {
    for (const r of requests) {
      pending++;
      tree.server.handleRequest(r, asyncReply);
    }
    while (pending > 0) await new Promise((r) => setTimeout(r, 0));
  }
  return (performance.now() - t0) * 1e6 / (loops * requests.length);
}

/** OPEN then RELEASE of each file: the fh comes from the OPEN reply (fuse_open_out.fh). */
async function runOpenClose(tree: Tree): Promise<number> {
  const releaseIn = new Uint8Array(24); // fuse_release_in: fh u64, flags, release_flags, owner
  const rdv = new DataView(releaseIn.buffer);
  let fh = 0n;
  const onOpen = (out: Uint8Array | null) => {
    fh = new DataView(out!.buffer, out!.byteOffset).getBigUint64(16, true);
    pending--;
  };
  const t0 = performance.now();
  for (let l = 0; l < loops; l++) {
    for (let i = 0; i < tree.opens.length; i++) {
      pending++;
      tree.server.handleRequest(tree.opens[i], onOpen);
      while (pending > 0) await new Promise((r) => setTimeout(r, 0));
      rdv.setBigUint64(0, fh, true);
      pending++;
      tree.server.handleRequest(request(18, tree.inos[i], 2n, releaseIn), asyncReply);
      while (pending > 0) await new Promise((r) => setTimeout(r, 0));
    }
  }
  return (performance.now() - t0) * 1e6 / (loops * tree.opens.length * 2);
}

/** One request, awaiting its reply (no timer turn: a write's reply comes after the log write). */
function one(tree: Tree, r: Uint8Array): Promise<void> {
  return new Promise((resolve) =>
    tree.server.handleRequest(r, (out: Uint8Array | null) => {
      reply(out);
      resolve();
    })
  );
}

/** fuse_rename_in (newdir u64), then both names: `from` to `to` in the tree's directory. */
function renameRequest(tree: Tree, from: string, to: string): Uint8Array {
  const body = new Uint8Array(8 + from.length + to.length + 2);
  new DataView(body.buffer).setBigUint64(0, BigInt(tree.dir), true);
  body.set(encoder.encode(`${from}\0${to}\0`), 8);
  return request(12, tree.dir, 3n, body);
}

/** Each file f<i> to r<i> and back: 2 RENAMEs per file and loop. */
async function runRename(tree: Tree): Promise<number> {
  const there = tree.inos.map((_, i) => renameRequest(tree, `f${i}`, `r${i}`));
  const back = tree.inos.map((_, i) => renameRequest(tree, `r${i}`, `f${i}`));
  let total = 0;
  for (let l = 0; l < loops; l++) {
    for (const batch of [there, back]) {
      const cpu0 = process.cpuUsage();
      const t0 = performance.now();
      for (const r of batch) {
        await one(tree, r);
      }
      total += performance.now() - t0;
      const cpu = process.cpuUsage(cpu0);
      timedCpuUs += cpu.user + cpu.system;
    }
  }
  return total * 1e6 / (loops * tree.inos.length * 2);
}

/** The local file of inode `ino` in the fixture's data directory (src/cache/local.ts). */
function localPath(tree: Tree, ino: number): string {
  return `${tree.dataDir}/data/${(ino % 256).toString(16).padStart(2, "0")}/${ino.toString(16)}`;
}

/** Process CPU per request (ns) of each request kind of the last runCreate pass. */
const createCpuNs = new Map<string, number>();

/**
 * What a create + 1 KiB + close sends on one node, request kind by request kind over fresh names
 * c<p>-<i>: the LOOKUP of the missing name, the CREATE (O_WRONLY|O_EXCL, as the bench's
 * meta_worker), the GETXATTR of `security.capability` (the first write to each new inode), the
 * directory's GETATTR (`default_permissions` after the kernel's `fuse_dir_changed`), 1 KiB
 * written into every new local file, untimed (what a passthrough write does: the daemon sees it
 * at RELEASE through the local file's size and mtime), then the RELEASE. Each request is awaited.
 * Returns the CREATEs' wall ns per request; the CPU of each kind goes to `createCpuNs`
 * ("create", "create-lookup", ...).
 */
async function runCreate(tree: Tree): Promise<number> {
  const count = Math.min(files, 500);
  const data = new Uint8Array(1024).fill(121);
  let total = 0;
  const cpuUs = new Map<string, number>();
  const timed = async (kind: string, requests: Uint8Array[], onReply = reply) => {
    const cpu0 = process.cpuUsage();
    for (const r of requests) {
      await new Promise<void>((resolve) =>
        tree.server.handleRequest(r, (out: Uint8Array | null) => {
          onReply(out);
          resolve();
        })
      );
    }
    const cpu = process.cpuUsage(cpu0);
    cpuUs.set(kind, (cpuUs.get(kind) ?? 0) + cpu.user + cpu.system);
  };
  for (let l = 0; l < loops; l++) {
    const made: { ino: number; fh: bigint }[] = [];
    const lookups: Uint8Array[] = [];
    const creates: Uint8Array[] = [];
    for (let i = 0; i < count; i++) {
      const name = encoder.encode(`c${tree.creates}-${i}\0`);
      lookups.push(request(1, tree.dir, 7n, name));
      const body = new Uint8Array(16 + name.length);
      const dv = new DataView(body.buffer);
      dv.setUint32(0, 0o1 | 0o200 | 0o100, true); // O_WRONLY | O_EXCL | O_CREAT
      dv.setUint32(4, 0o100644, true);
      dv.setUint32(8, 0o022, true);
      body.set(name, 16);
      creates.push(request(35, tree.dir, 5n, body));
    }
    tree.creates++;
    await timed("create-lookup", lookups);
    const t0 = performance.now();
    await timed("create", creates, (out) => {
      // fuse_out_header (16), fuse_entry_out (nodeid at 0, 128 bytes), fuse_open_out (fh)
      const v = new DataView(out!.buffer, out!.byteOffset);
      made.push({ ino: Number(v.getBigUint64(16, true)), fh: v.getBigUint64(144, true) });
      reply(out);
    });
    total += performance.now() - t0;
    // fuse_getxattr_in (size 0: the size only, as cap_inode_need_killpriv asks), then the name
    const xattrName = encoder.encode("security.capability\0");
    const getxattrBody = new Uint8Array(8 + xattrName.length);
    getxattrBody.set(xattrName, 8);
    await timed("create-getxattr", made.map(({ ino }) => request(22, ino, 8n, getxattrBody)));
    const dirGetattr = request(3, tree.dir, 9n, new Uint8Array(16));
    await timed("create-getattr-dir", made.map(() => dirGetattr));
    for (const { ino } of made) Deno.writeFileSync(localPath(tree, ino), data);
    await timed(
      "create-release",
      made.map(({ ino, fh }) => {
        const releaseIn = new Uint8Array(24);
        new DataView(releaseIn.buffer).setBigUint64(0, fh, true);
        return request(18, ino, 6n, releaseIn);
      }),
    );
  }
  for (const [kind, us] of cpuUs) createCpuNs.set(kind, us * 1000 / (loops * count));
  return total * 1e6 / (loops * count);
}

/** Fresh empty files u<l>-<i>, made through the Vfs (untimed), then one UNLINK each. `kernel`
 * (`--ops unlink+forget`): as the kernel does it, the create's lookup is still held at the
 * UNLINK and dropped by a FORGET right after its reply; the work either leaves behind (a purge,
 * the local file's removal) is waited for inside the timed part. */
async function runUnlink(tree: Tree, kernel = false): Promise<number> {
  let total = 0;
  const count = Math.min(files, 500);
  for (let l = 0; l < loops; l++) {
    const unlinks: Uint8Array[] = [];
    const inos: number[] = [];
    for (let i = 0; i < count; i++) {
      const name = `${kernel ? "k" : "u"}${l}-${i}`;
      const made = await tree.vfs.create(root, tree.dir, encoder.encode(name), 0o100644, 0, 2);
      await tree.vfs.release(made.attr.ino, made.fh, 0);
      if (!kernel) await tree.vfs.forget(made.attr.ino, 1);
      inos.push(made.attr.ino);
      unlinks.push(request(10, tree.dir, 4n, encoder.encode(`${name}\0`)));
    }
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    for (let i = 0; i < unlinks.length; i++) {
      await one(tree, unlinks[i]);
      if (kernel) tree.vfs.forget(inos[i], 1);
    }
    if (kernel) { for (let i = 0; i < 3; i++) await new Promise((r) => setTimeout(r, 0)); }
    total += performance.now() - t0;
    const cpu = process.cpuUsage(cpu0);
    timedCpuUs += cpu.user + cpu.system;
  }
  return total * 1e6 / (loops * count);
}

const trees: Tree[] = [];
for (const r of roots) trees.push(await load(r));
const results = new Map<string, number[]>();
const cpuResults = new Map<string, number[]>();
for (let round = 0; round < rounds; round++) {
  const order = round % 2 === 0 ? trees : [...trees].reverse();
  for (const tree of order) {
    for (
      const [op, fn] of [
        ["getattr", () => run(tree, tree.getattrs)],
        ["lookup", () => run(tree, tree.lookups)],
        ["open+release", () => runOpenClose(tree)],
        ["rename", () => runRename(tree)],
        ["unlink", () => runUnlink(tree)],
        ["unlink+forget", () => runUnlink(tree, true)],
        ["create", () => runCreate(tree)],
      ] as const
    ) {
      if (!ops.includes(op)) continue;
      timedCpuUs = 0;
      const ns = await fn();
      const key = `${tree.name} ${op}`;
      results.set(key, [...(results.get(key) ?? []), ns]);
      // The process's CPU (all threads: GC's too) over the timed part, per request (RENAME and
      // UNLINK). A loaded machine stretches the wall time, much less this.
      const count = op === "rename"
        ? files * 2
        : op === "unlink" || op === "unlink+forget"
        ? Math.min(files, 500)
        : 0;
      if (count > 0) {
        cpuResults.set(key, [...(cpuResults.get(key) ?? []), timedCpuUs * 1000 / (loops * count)]);
      }
      for (const [kind, ns] of op === "create" ? createCpuNs : []) {
        const kindKey = `${tree.name} ${kind}`;
        cpuResults.set(kindKey, [...(cpuResults.get(kindKey) ?? []), ns]);
      }
    }
  }
}
for (const [key, list] of cpuResults) {
  const sorted = [...list].sort((a, b) => a - b);
  console.log(
    `${key}: ${sorted[Math.floor(sorted.length / 2)].toFixed(0)} ns of process CPU/request (${
      sorted[0].toFixed(0)
    }-${sorted[sorted.length - 1].toFixed(0)})`,
  );
}
for (const [key, list] of results) {
  const sorted = [...list].sort((a, b) => a - b);
  const median = sorted[Math.floor(sorted.length / 2)];
  console.log(
    `${key}: ${median.toFixed(0)} ns/request (${sorted[0].toFixed(0)}-${
      sorted[sorted.length - 1].toFixed(0)
    })`,
  );
}
for (const tree of trees) await tree.cleanup();
if (sink < 0) console.log(sink);
