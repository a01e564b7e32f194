/**
 * Durability (issue 2 point 6): a writer creates files, replaces a file atomically and appends to
 * a journal, fsyncing file and directory before recording each step in a log outside the mount;
 * the daemon is killed with SIGKILL at a random moment, the dead mount is cleared with
 * `mod.ts umount`, the file system is mounted again and every recorded step must be there, intact.
 * Then a clean unmount and mount must keep even data that was never fsync'd.
 *
 * On ext4 (nothing to kill) the same writer and checker run without the crash, which validates them.
 * Environment: SKYFS_CRASH_ROUNDS (default 6), SKYFS_CRASH_SEED (default 7).
 * @module
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import {
  makeTempDir,
  PYTHON,
  REPO_ROOT,
  run,
  seededRandom,
  startMount,
  targetKinds,
  testMeta,
} from "./_harness.ts";

const ROUNDS = Number(Deno.env.get("SKYFS_CRASH_ROUNDS") ?? 6);
const SEED = Number(Deno.env.get("SKYFS_CRASH_SEED") ?? 7);
const WRITER = join(REPO_ROOT, "tests", "_crash_writer.py");

interface Verdict {
  files: number;
  curs: number;
  journals: number;
  walked: number;
  problems: string[];
}

async function verify(root: string, log: string): Promise<Verdict> {
  return JSON.parse((await run(PYTHON, [WRITER, "verify", root, log])).stdout);
}

/** Starts the writer; the caller waits for its first log record. */
function startWriter(root: string, log: string, round: string, extra: string[] = []) {
  const child = new Deno.Command(PYTHON, {
    args: [WRITER, "write", root, log, round, ...extra],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const output = child.output();
  return { child, output };
}

async function waitForFile(path: string, text: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const content = await Deno.readTextFile(path).catch(() => "");
    if (content.includes(text)) return;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  throw new Error(`"${path}" did not record "${text}" within ${timeoutMs} ms`);
}

for (const kind of targetKinds()) {
  Deno.test({
    name:
      `crash: kill -9 at random moments loses nothing fsync'd; clean unmount keeps all [${kind}]`,
    sanitizeOps: false,
    sanitizeResources: false,
    async fn() {
      const work = await makeTempDir("crash");
      const log = join(work, "log.tsv");
      const mount = kind === "skyfs" ? await startMount() : undefined;
      const root = mount?.mountpoint ?? join(work, "ext4");
      if (!mount) await Deno.mkdir(root);
      const random = seededRandom(SEED);
      try {
        let recorded = 0;
        for (let round = 0; round < ROUNDS; round++) {
          const delayMs = 300 + Math.floor(random() * 1500);
          const writer = startWriter(
            root,
            log,
            String(round),
            mount ? [] : ["--limit", "60"],
          );
          await waitForFile(log, `journal\t${round}\t1\n`, 30_000);
          if (mount) {
            await new Promise((resolve) => setTimeout(resolve, delayMs));
            await mount.kill9();
          }
          const out = await writer.output;
          const said = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
          // The writer must have been cut off by the crash, not have run out of work.
          if (mount) {
            assert.match(said, /stopped: /, `round ${round}: the writer was not interrupted`);
          }
          if (mount) await mount.restart();
          const verdict = await verify(root, log);
          assert.deepEqual(
            verdict.problems,
            [],
            `round ${round} (seed ${SEED}, kill after ${delayMs} ms; writer said: ${said.trim()})`,
          );
          assert.ok(verdict.files > recorded, `round ${round} recorded no new file`);
          recorded = verdict.files;
        }
        // Clean unmount: nothing is fsync'd, everything must still be there after a remount.
        const writer = startWriter(root, log, "clean", ["--limit", "150", "--no-sync"]);
        const out = await writer.output;
        assert.match(new TextDecoder().decode(out.stdout), /finished/);
        if (mount) await mount.restart();
        const verdict = await verify(root, log);
        assert.deepEqual(verdict.problems, []);
        assert.ok(verdict.files > recorded);
        console.log(
          `crash: ${ROUNDS} rounds, ${verdict.files} files, ${verdict.walked} readable after recovery`,
        );
      } finally {
        await mount?.dispose();
        await Deno.remove(work, { recursive: true });
      }
    },
  });
}

/** Regular files under the data directory's local store (`<data>/data/xx/<ino>`). */
/** Local files in the 256 buckets of `<dataDir>/data`; the spares (`data/spare`, emptied files of
 * deleted inodes kept for new ones) must be empty. */
async function localFiles(dataDir: string): Promise<number> {
  let count = 0;
  for await (const bucket of Deno.readDir(join(dataDir, "data"))) {
    if (!bucket.isDirectory) continue;
    for await (const entry of Deno.readDir(join(dataDir, "data", bucket.name))) {
      if (!entry.isFile) continue;
      if (bucket.name !== "spare") count++;
      else {
        const st = await Deno.stat(join(dataDir, "data", bucket.name, entry.name));
        assert.equal(st.size, 0, `spare ${entry.name} is empty`);
      }
    }
  }
  return count;
}

Deno.test({
  name: "crash: kill -9 right after creates and unlinks: names as replied, no local file left over",
  ignore: !targetKinds().includes("skyfs"),
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const mount = await startMount();
    const root = mount.mountpoint;
    const body = (name: string) => new TextEncoder().encode(`${name}:`.repeat(100));
    const kept = new Set<string>();
    try {
      for (let round = 0; round < 3; round++) {
        // Creates, then unlinks of every other file, the last ones right before the kill: the
        // unlinks' local files go after the reply (in the background, or at the FORGET), so a
        // kill -9 now finds some not yet removed; the restart must remove them.
        const names = Array.from({ length: 120 }, (_, i) => `r${round}-${i}`);
        for (const name of names) await Deno.writeFile(join(root, name), body(name));
        for (const [i, name] of names.entries()) {
          if (i % 2 === 0) await Deno.remove(join(root, name));
          else kept.add(name);
        }
        // The last replies of the round: a create and an unlink.
        await Deno.writeFile(join(root, `last${round}`), body(`last${round}`));
        await Deno.remove(join(root, names[names.length - 1]));
        kept.delete(names[names.length - 1]);
        kept.add(`last${round}`);
        await mount.kill9();
        await mount.restart();
        const listed = new Set<string>();
        for await (const entry of Deno.readDir(root)) listed.add(entry.name);
        assert.deepEqual([...listed].sort(), [...kept].sort(), `round ${round}: names`);
        for (const name of kept) {
          assert.deepEqual(await Deno.readFile(join(root, name)), body(name), `round ${round}`);
        }
        // One node: every kept file has its local file and nothing else is left (a cluster
        // node's local files are a cache).
        if (testMeta() === undefined) {
          assert.equal(await localFiles(mount.dataDir), kept.size, `round ${round}: local files`);
        }
      }
    } finally {
      await mount.dispose();
    }
  },
});

/** Opens `count` files (new, or existing ones appended to), writes each, closes them all in a
 * row (close(2) does not wait for FUSE_RELEASE: the RELEASEs queue up in the daemon), then
 * kills the daemon with SIGKILL at once. */
const CLOSE_THEN_KILL = `
import os, signal, sys
root, prefix, count, append, pid = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1", int(sys.argv[5])
flags = os.O_WRONLY | (os.O_APPEND if append else os.O_CREAT | os.O_EXCL)
fds = []
for i in range(count):
    name = f"{prefix}{i}"
    fd = os.open(os.path.join(root, name), flags, 0o644)
    os.write(fd, (name + ":").encode() * (50 + i % 300))
    fds.append(fd)
for fd in fds:
    os.close(fd)
os.kill(pid, signal.SIGKILL)
`;

Deno.test({
  name:
    "crash: kill -9 right after close(2), before the RELEASEs: every closed file keeps its size",
  ignore: !targetKinds().includes("skyfs") || testMeta() !== undefined,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const mount = await startMount();
    const root = mount.mountpoint;
    const count = 300;
    const body = (name: string, times: number) =>
      `${name}:`.repeat(times * (50 + Number(name.slice(1)) % 300));
    try {
      // Round 0 creates the files; round 1 opens them again (O_APPEND, no O_TRUNC) and appends.
      for (const [round, append] of [[0, false], [1, true]] as const) {
        const pid = mount.pid()!;
        const out = await run(PYTHON, [
          "-c",
          CLOSE_THEN_KILL,
          root,
          "f",
          String(count),
          append ? "1" : "0",
          String(pid),
        ]);
        assert.equal(out.code, 0, out.stderr);
        await mount.kill9();
        await mount.restart();
        const recovered = mount.stderr().match(/size\/mtime of (\d+) of (\d+) pending/g);
        console.log(`round ${round}: ${recovered?.at(-1) ?? "no pending write-back taken"}`);
        for (let i = 0; i < count; i++) {
          const name = `f${i}`;
          const want = body(name, round + 1);
          const got = await Deno.readTextFile(join(root, name));
          assert.equal(got.length, want.length, `round ${round}: ${name}: size`);
          assert.equal(got, want, `round ${round}: ${name}: content`);
        }
      }
    } finally {
      await mount.dispose();
    }
  },
});
