/**
 * Differential test: fast-check generates random sequences of file operations (as root and as an
 * unprivileged uid), applies each one to the skyfs mount and to an ext4 directory, and requires
 * the same result or the same errno name at every step and the same tree at the end. With only
 * the ext4 target selected it compares two ext4 directories, which checks the harness itself.
 *
 * Environment: SKYFS_DIFF_SEED (default 20260601), SKYFS_DIFF_RUNS (150), SKYFS_DIFF_OPS (40).
 * @module
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import fc from "fast-check";
import { openTarget, PYTHON, REPO_ROOT, type Target, targetKinds } from "./_harness.ts";

const SEED = Number(Deno.env.get("SKYFS_DIFF_SEED") ?? 20260601);
const RUNS = Number(Deno.env.get("SKYFS_DIFF_RUNS") ?? 150);
const MAX_OPS = Number(Deno.env.get("SKYFS_DIFF_OPS") ?? 40);
/** A bound on the whole property (shrinking included), so a slow mount cannot stall CI. */
const TIME_LIMIT_MS = 180_000;
/** The second user, also in group 2000 so supplementary-group rules are exercised. */
const UNPRIVILEGED = { uid: 1000, gid: 1000, groups: [2000] };

/** One python3 _ops_server.py process: JSON request lines in, JSON reply lines out. */
class OpsServer {
  #child: Deno.ChildProcess;
  #writer: WritableStreamDefaultWriter<Uint8Array>;
  #reader: ReadableStreamDefaultReader<Uint8Array>;
  #buffer = "";
  #decoder = new TextDecoder();
  #encoder = new TextEncoder();

  constructor(user?: { uid: number; gid: number; groups: number[] }) {
    const args = [join(REPO_ROOT, "tests", "_ops_server.py")];
    if (user) args.push(String(user.uid), String(user.gid), ...user.groups.map(String));
    this.#child = new Deno.Command(PYTHON, {
      args,
      stdin: "piped",
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    this.#writer = this.#child.stdin.getWriter();
    this.#reader = this.#child.stdout.getReader();
  }

  async call(request: Record<string, unknown>): Promise<unknown> {
    await this.#writer.write(this.#encoder.encode(JSON.stringify(request) + "\n"));
    while (!this.#buffer.includes("\n")) {
      const { value, done } = await this.#reader.read();
      if (done) throw new Error(`ops server exited while answering ${JSON.stringify(request)}`);
      this.#buffer += this.#decoder.decode(value, { stream: true });
    }
    const at = this.#buffer.indexOf("\n");
    const line = this.#buffer.slice(0, at);
    this.#buffer = this.#buffer.slice(at + 1);
    return JSON.parse(line);
  }

  async close(): Promise<void> {
    await this.#writer.close();
    this.#reader.releaseLock();
    await this.#child.stdout.cancel();
    await this.#child.status;
  }
}

/** A target with one ops server per user (index 0 root, 1 unprivileged). */
interface Side {
  name: string;
  target: Target;
  servers: OpsServer[];
}

function openSide(name: string, target: Target): Side {
  return { name, target, servers: [new OpsServer(), new OpsServer(UNPRIVILEGED)] };
}

// Operations mostly use names of the kind they expect (directories d, e; files f, g), and
// sometimes any name, so both the successes and the errno paths get exercised.
const DIRS = ["d", "e", "d/e"];
const FILES = ["f", "g", "d/f", "d/g", "e/f", "d/e/f"];
const PATHS = [...DIRS, ...FILES, "."];
const anyPath = fc.constantFrom(...PATHS);
const dirPath = fc.oneof({ weight: 4, arbitrary: fc.constantFrom(...DIRS) }, anyPath);
const filePath = fc.oneof({ weight: 4, arbitrary: fc.constantFrom(...FILES) }, anyPath);
const path = anyPath;
const xattrName = fc.constantFrom("user.a", "user.b");
const slot = fc.nat(4);
const offset = fc.oneof(
  fc.constantFrom(0, 1, 4095, 4096, 65536, 1 << 20),
  fc.nat(70_000),
);
const length = fc.constantFrom(0, 1, 100, 4096, 5000, 70_000);
// Offsets and sizes stay near 1 MiB: files over 4 GiB are in the POSIX suite, and the tree
// comparison reads whole files.
const size = fc.oneof(fc.constantFrom(0, 1, 4096, 1 << 20), fc.nat(70_000));
const fileMode = fc.constantFrom(0o644, 0o600, 0o755, 0o444, 0o000, 0o777, 0o1777, 0o2755, 0o4755);
const openFlags = fc.constantFrom(
  ["RDONLY"],
  ["WRONLY", "CREAT"],
  ["RDWR", "CREAT"],
  ["RDWR", "CREAT"],
  ["RDWR", "CREAT"],
  ["RDWR"],
  ["RDWR", "CREAT", "EXCL"],
  ["WRONLY", "TRUNC"],
  ["RDWR", "APPEND"],
  ["WRONLY", "CREAT", "APPEND"],
  ["RDONLY", "DIRECTORY"],
  ["RDONLY", "NOFOLLOW"],
);

/** One generated operation: which user runs it and the request for the ops server. */
const operation = fc.record({
  user: fc.oneof({ weight: 4, arbitrary: fc.constant(0) }, {
    weight: 1,
    arbitrary: fc.constant(1),
  }),
  request: fc.oneof(
    {
      weight: 4,
      arbitrary: fc.record({
        op: fc.constant("open"),
        path: filePath,
        flags: openFlags,
        mode: fileMode,
      }),
    },
    {
      weight: 4,
      arbitrary: fc.record({
        op: fc.constant("write"),
        slot,
        offset,
        len: length,
        seed: fc.nat(250),
      }),
    },
    { weight: 2, arbitrary: fc.record({ op: fc.constant("read"), slot, offset, len: length }) },
    { weight: 1, arbitrary: fc.record({ op: fc.constant("close"), slot }) },
    { weight: 1, arbitrary: fc.record({ op: fc.constant("ftruncate"), slot, size }) },
    { weight: 1, arbitrary: fc.record({ op: fc.constant("fsync"), slot }) },
    { weight: 1, arbitrary: fc.record({ op: fc.constant("fstat"), slot }) },
    { weight: 1, arbitrary: fc.record({ op: fc.constant("truncate"), path: filePath, size }) },
    {
      weight: 3,
      arbitrary: fc.record({
        op: fc.constant("mkdir"),
        path: dirPath,
        mode: fc.constantFrom(0o755, 0o700, 0o777, 0o555, 0o1777, 0o2775),
      }),
    },
    { weight: 1, arbitrary: fc.record({ op: fc.constant("rmdir"), path: dirPath }) },
    { weight: 2, arbitrary: fc.record({ op: fc.constant("unlink"), path: filePath }) },
    { weight: 2, arbitrary: fc.record({ op: fc.constant("rename"), from: path, to: path }) },
    { weight: 2, arbitrary: fc.record({ op: fc.constant("link"), from: filePath, to: filePath }) },
    {
      weight: 1,
      arbitrary: fc.record({
        op: fc.constant("symlink"),
        target: fc.constantFrom(...PATHS, "../f", "d/../g", "missing"),
        path: filePath,
      }),
    },
    { weight: 1, arbitrary: fc.record({ op: fc.constant("readlink"), path }) },
    { weight: 2, arbitrary: fc.record({ op: fc.constant("chmod"), path, mode: fileMode }) },
    { weight: 2, arbitrary: fc.record({ op: fc.constant("stat"), path }) },
    { weight: 1, arbitrary: fc.record({ op: fc.constant("lstat"), path }) },
    { weight: 2, arbitrary: fc.record({ op: fc.constant("readdir"), path: dirPath }) },
    { weight: 1, arbitrary: fc.record({ op: fc.constant("readfile"), path: filePath }) },
    {
      weight: 1,
      arbitrary: fc.record({
        op: fc.constant("chown"),
        path,
        uid: fc.constantFrom(-1, 0, 1000),
        gid: fc.constantFrom(-1, 0, 1000, 2000),
      }),
    },
    {
      weight: 1,
      arbitrary: fc.record({
        op: fc.constant("access"),
        path,
        mode: fc.constantFrom("F", "R", "W", "X"),
      }),
    },
    {
      weight: 1,
      arbitrary: fc.record({
        op: fc.constant("setxattr"),
        path,
        name: xattrName,
        value: fc.constantFrom("", "v", "x".repeat(3000)),
        flags: fc.constantFrom("", "CREATE", "REPLACE"),
      }),
    },
    { weight: 1, arbitrary: fc.record({ op: fc.constant("getxattr"), path, name: xattrName }) },
    { weight: 1, arbitrary: fc.record({ op: fc.constant("listxattr"), path }) },
    { weight: 1, arbitrary: fc.record({ op: fc.constant("removexattr"), path, name: xattrName }) },
  ),
});

/** Every run starts from this small tree, so the random operations find things to act on. */
const SETUP: Array<{ user: number; request: Record<string, unknown> }> = [
  { op: "mkdir", path: "d", mode: 0o777 },
  { op: "mkdir", path: "e", mode: 0o755 },
  { op: "mkdir", path: "d/e", mode: 0o777 },
  { op: "open", path: "f", flags: ["WRONLY", "CREAT"], mode: 0o666 },
  { op: "write", slot: 0, offset: 0, len: 5000, seed: 1 },
  { op: "open", path: "d/f", flags: ["WRONLY", "CREAT"], mode: 0o644 },
  { op: "write", slot: 1, offset: 10, len: 100, seed: 2 },
  { op: "reset" },
].map((request) => ({ user: 0, request }));

/** Drops fields that legitimately differ between file systems (inode numbers). */
function normalize(reply: unknown): unknown {
  if (reply && typeof reply === "object" && "ok" in reply) {
    const ok = (reply as { ok: unknown }).ok;
    if (ok && typeof ok === "object" && !Array.isArray(ok) && "ino" in ok) {
      const { ino: _ino, ...rest } = ok as Record<string, unknown>;
      return { ok: rest };
    }
  }
  return reply;
}

Deno.test({
  name: "differential: random operation sequences give the same results on skyfs and ext4",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const kinds = targetKinds();
    // The reference is always ext4; the subject is skyfs when selected, else a second ext4 dir.
    const subjectKind = kinds.includes("skyfs") ? "skyfs" : "ext4";
    const reference = openSide("ext4", await openTarget("ext4"));
    let subject: Side | undefined;
    try {
      subject = openSide(subjectKind, await openTarget(subjectKind));
      const sides = [reference, subject];
      let runIndex = 0;
      const outcomes = new Map<string, number>();
      console.log(
        `differential: ${subjectKind} vs ext4, seed ${SEED}, ${RUNS} runs x ${MAX_OPS} ops`,
      );
      await fc.assert(
        fc.asyncProperty(
          fc.array(operation, { minLength: 1, maxLength: MAX_OPS, size: "max" }),
          async (ops) => {
            const run = `r${runIndex++}`;
            for (const side of sides) {
              const dir = join(side.target.dir, run);
              await Deno.mkdir(dir);
              await Deno.chmod(dir, 0o777);
              for (const server of side.servers) {
                await server.call({ op: "reset" });
                await server.call({ op: "root", path: dir });
              }
            }
            const transcript: string[] = [];
            for (const [index, { user, request }] of [...SETUP, ...ops].entries()) {
              const [expected, actual] = await Promise.all(
                sides.map(async (side) => normalize(await side.servers[user].call(request))),
              );
              const outcome = `${request.op}:${
                expected && typeof expected === "object" && "err" in expected
                  ? expected.err
                  : (expected as { ok: unknown }).ok === "noslot"
                  ? "noslot"
                  : "ok"
              }`;
              outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1);
              transcript.push(
                `${index}: ${user ? "uid1000 " : ""}${JSON.stringify(request)} -> ` +
                  JSON.stringify(expected),
              );
              assert.deepEqual(
                actual,
                expected,
                `${subjectKind} differs from ext4 at step ${index} in ${run}:\n` +
                  `${transcript.join("\n")}\n${subjectKind} gave ${JSON.stringify(actual)}`,
              );
            }
            for (const side of sides) {
              for (const server of side.servers) await server.call({ op: "reset" });
            }
            const [expectedTree, actualTree] = await Promise.all(
              sides.map((side) => side.servers[0].call({ op: "tree" })),
            );
            assert.deepEqual(
              actualTree,
              expectedTree,
              `${subjectKind}'s tree differs from ext4's after ${run}:\n${transcript.join("\n")}`,
            );
          },
        ),
        { seed: SEED, numRuns: RUNS, interruptAfterTimeLimit: TIME_LIMIT_MS },
      );
      // Shows that the sequences reach both successes and the interesting errnos.
      console.log([...outcomes].sort().map(([k, v]) => `${k}=${v}`).join(" "));
    } finally {
      for (const side of [reference, subject]) {
        if (!side) continue;
        for (const server of side.servers) await server.close();
        await side.target.close();
      }
    }
  },
});
