/**
 * The local-file part of a create and an unlink, one checkout's LocalStore (src/cache/local.ts)
 * in process (src/fuse/README.md, "Spare local files"): per round, N times `acquire(ino, 0, fresh)`,
 * a 1 KiB pwrite and `release`, then `removeSoon` of all of them; prints process CPU per file.
 *
 * Usage: deno run -A bench/meta/local_store_ab.ts CHECKOUT [FILES=2000] [ROUNDS=3] [DIR=.]
 * (DIR: where the temporary data directory goes; on the disk to measure, not tmpfs). Run it for
 * the old and the new checkout in turn, alternating.
 * @module
 */
import process from "node:process";

const [tree, filesArg = "2000", roundsArg = "3", parent = "."] = Deno.args;
const files = Number(filesArg);
const rounds = Number(roundsArg);
if (!tree || tree === "--help" || tree === "-h") {
  console.log("usage: local_store_ab.ts CHECKOUT [FILES=2000] [ROUNDS=3] [DIR=.]");
  Deno.exit(tree ? 0 : 2);
}
if (!Number.isInteger(files) || files < 1 || !Number.isInteger(rounds) || rounds < 1) {
  console.error(
    `local_store_ab: FILES and ROUNDS must be whole numbers above 0 (got ${filesArg} ${roundsArg})`,
  );
  Deno.exit(2);
}
const root = await Deno.realPath(tree).catch(() => {
  console.error(`local_store_ab: no checkout at ${tree}: give the path of a skyfs worktree`);
  Deno.exit(2);
});
const { LocalStore } = await import(`${root}/src/cache/local.ts`);
const { createPortableEngine } = await import(`${root}/src/io/portable.ts`);
const libc = await import(`${root}/src/io/libc.ts`);
const dir = await Deno.makeTempDir({ dir: parent, prefix: "local-store-ab-" });
// An older checkout ignores the fourth argument (it has no spares).
const store = await LocalStore.open(createPortableEngine(), dir, "inline", 4096);
const data = new Uint8Array(1024).fill(120);
const cpu = () => process.cpuUsage();
let ino = 1000;
try {
  for (let round = 0; round < rounds; round++) {
    const made: number[] = [];
    let start = cpu();
    for (let i = 0; i < files; i++) {
      const fd = await store.acquire(++ino, 0, true);
      libc.pwrite(fd, data, 0);
      await store.release(ino);
      made.push(ino);
    }
    let used = cpu();
    const create = (used.user + used.system - start.user - start.system) / files;
    const createSys = (used.system - start.system) / files;
    start = cpu();
    for (const i of made) store.removeSoon(i, data.length);
    await store.closeAll();
    used = cpu();
    const remove = (used.user + used.system - start.user - start.system) / files;
    const removeSys = (used.system - start.system) / files;
    console.log(
      `round ${round}: create ${create.toFixed(1)} us (system ${createSys.toFixed(1)}), ` +
        `remove ${remove.toFixed(1)} us (system ${removeSys.toFixed(1)}), load ${
          (await Deno.readTextFile("/proc/loadavg")).split(" ")[0]
        }`,
    );
  }
} finally {
  await Deno.remove(dir, { recursive: true });
}
