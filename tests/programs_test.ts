/**
 * Unmodified programs on the target: git, tar, cp -a, rsync -a, sqlite3 (WAL), python3 -m venv,
 * make and fio --verify. Each scenario returns a result that is checked against fixed expectations;
 * on skyfs the same scenario also runs in an ext4 directory and the two results must be equal.
 * @module
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { makeTempDir, PYTHON, REPO_ROOT, run, suite } from "./_harness.ts";
import { py } from "./posix/_py.ts";

/** JSON description of a tree (see tests/_tree.py). */
// deno-lint-ignore no-explicit-any
async function tree(dir: string, options: { mtime?: boolean } = {}): Promise<any> {
  const args = [join(REPO_ROOT, "tests", "_tree.py"), dir];
  if (options.mtime === false) args.push("--no-mtime");
  return JSON.parse((await run(PYTHON, args)).stdout);
}

/** Builds the sample tree `src` in `dir`: nested dirs, hard links, symlinks, xattrs, owners. */
async function makeSourceTree(dir: string): Promise<void> {
  await py(
    dir,
    `
    import random
    os.makedirs("src/sub/deep"); os.mkdir("src/empty")
    write_file("src/a.txt", "alpha\\n" * 100)
    write_file("src/sub/b.bin", bytes(range(256)) * 1000, 0o600)
    write_file("src/sub/deep/c.sh", "#!/bin/sh\\necho c\\n", 0o755)
    write_file("src/big.bin", random.Random(3).randbytes(3 << 20))
    os.link("src/a.txt", "src/sub/a-hard")
    os.symlink("../a.txt", "src/sub/a-link"); os.symlink("nowhere", "src/dangling")
    os.setxattr("src/a.txt", "user.note", b"kept")
    os.chown("src/sub/b.bin", 1000, 2000)
    paths = []
    for dp, dns, fns in os.walk("src"):
        paths += [os.path.join(dp, n) for n in dns + fns]
    # Whole seconds, children before parents, so every format (tar stores seconds) keeps them.
    for i, p in enumerate(sorted(paths, key=lambda p: (-p.count("/"), p))):
        t = (1_600_000_000 + i) * 1_000_000_000
        os.utime(p, ns=(t, t), follow_symlinks=False)
    os.utime("src", ns=(1_599_999_999_000_000_000,) * 2)
    out(None)
  `,
  );
}

/** Runs `scenario` on the target; on skyfs also on ext4 and requires equal results. */
async function sameAsExt4<T>(
  kind: string,
  dir: string,
  scenario: (dir: string) => Promise<T>,
): Promise<T> {
  const result = await scenario(dir);
  if (kind !== "ext4") {
    const reference = await makeTempDir("ref");
    try {
      assert.deepEqual(
        result,
        await scenario(reference),
        `${kind} and ext4 give different results`,
      );
    } finally {
      await Deno.remove(reference, { recursive: true });
    }
  }
  return result;
}

const GIT_ENV = {
  GIT_AUTHOR_NAME: "Test",
  GIT_AUTHOR_EMAIL: "test@example.invalid",
  GIT_COMMITTER_NAME: "Test",
  GIT_COMMITTER_EMAIL: "test@example.invalid",
  GIT_AUTHOR_DATE: "2020-01-01T00:00:00Z",
  GIT_COMMITTER_DATE: "2020-01-01T00:00:00Z",
  GIT_CONFIG_GLOBAL: "/dev/null",
  GIT_CONFIG_NOSYSTEM: "1",
};

async function git(cwd: string, ...args: string[]): Promise<string> {
  return (await run("git", args, { cwd, env: GIT_ENV })).stdout.trimEnd();
}

suite("programs", {
  "git: init, add, commit, status, clone (hard-linked and packed), fsck, gc": async (
    { kind, dir },
  ) => {
    const result = await sameAsExt4(kind, dir, async (d) => {
      await makeSourceTree(d);
      await git(d, "init", "-q", "-b", "main", "repo");
      await run("cp", ["-a", "src/.", "repo/"], { cwd: d });
      const repo = join(d, "repo");
      await git(repo, "add", "-A");
      await git(repo, "commit", "-q", "-m", "first");
      const first = await git(repo, "rev-parse", "HEAD");
      const cleanStatus = await git(repo, "status", "--porcelain");
      await Deno.writeTextFile(join(repo, "a.txt"), "changed\n", { append: true });
      await Deno.mkdir(join(repo, "new"));
      await Deno.writeTextFile(join(repo, "new", "n.txt"), "n\n");
      const dirtyStatus = await git(repo, "status", "--porcelain", "--untracked-files=all");
      await git(repo, "add", "-A");
      await git(repo, "commit", "-q", "-m", "second");
      await git(d, "clone", "-q", "repo", "clone");
      await git(d, "clone", "-q", "--no-local", "repo", "packed");
      await git(repo, "gc", "-q");
      return {
        first,
        cleanStatus,
        dirtyStatus,
        log: await git(join(d, "clone"), "log", "--format=%H %s"),
        packedLog: await git(join(d, "packed"), "log", "--format=%H %s"),
        fsck: [
          await git(repo, "fsck", "--full", "--strict"),
          await git(join(d, "clone"), "fsck", "--full"),
          await git(join(d, "packed"), "fsck", "--full"),
        ],
        cloneStatus: await git(join(d, "clone"), "status", "--porcelain"),
        cloneTree: (await tree(join(d, "clone"), { mtime: false })).entries
          .filter(([p]: [string]) => !p.startsWith(".git")),
      };
    });
    assert.equal(result.cleanStatus, "");
    assert.equal(result.dirtyStatus, " M a.txt\n M sub/a-hard\n?? new/n.txt");
    assert.equal(result.log.split("\n").length, 2);
    assert.equal(result.log, result.packedLog);
    assert.deepEqual(result.fsck, ["", "", ""]);
    assert.equal(result.cloneStatus, "");
  },

  "tar: create (sorted, byte-identical to ext4's) and extract keep links, modes, times": async (
    { kind, dir },
  ) => {
    const result = await sameAsExt4(kind, dir, async (d) => {
      await makeSourceTree(d);
      await run("tar", ["--sort=name", "-C", "src", "-cf", "src.tar", "."], { cwd: d });
      await run("tar", ["--sort=name", "--xattrs", "-C", "src", "-cf", "src-x.tar", "."], {
        cwd: d,
      });
      await Deno.mkdir(join(d, "x"));
      await run("tar", ["--xattrs", "--xattrs-include=user.*", "-C", "x", "-xpf", "src-x.tar"], {
        cwd: d,
      });
      const sha = (await run("sha1sum", ["src.tar"], { cwd: d })).stdout.split(" ")[0];
      const listing = (await run("tar", ["-tvf", "src.tar"], { cwd: d })).stdout;
      return { sha, listing, src: await tree(join(d, "src")), x: await tree(join(d, "x")) };
    });
    assert.deepEqual(result.x, result.src);
    assert.equal(result.src.hardlinks.length, 1);
    assert.match(result.listing, /sub\/a-hard link to \.\/a\.txt/);
  },

  "cp -a copies a tree exactly (hard links, symlinks, xattrs, owners, times)": async (
    { kind, dir },
  ) => {
    const result = await sameAsExt4(kind, dir, async (d) => {
      await makeSourceTree(d);
      await run("cp", ["-a", "src", "dst"], { cwd: d });
      return { src: await tree(join(d, "src")), dst: await tree(join(d, "dst")) };
    });
    assert.deepEqual(result.dst, result.src);
  },

  "rsync -aHX copies exactly, and a second run has nothing to do": async ({ kind, dir }) => {
    const result = await sameAsExt4(kind, dir, async (d) => {
      await makeSourceTree(d);
      await run("rsync", ["-aHX", "src/", "dst/"], { cwd: d });
      const second = await run("rsync", ["-aHX", "--itemize-changes", "src/", "dst/"], { cwd: d });
      const src = await tree(join(d, "src"));
      const dst = await tree(join(d, "dst"));
      // The change takes the current time, so only its own tree comparison is returned.
      await Deno.writeTextFile(join(d, "src", "sub", "deep", "c.sh"), "changed\n");
      const third = await run("rsync", ["-aHX", "--itemize-changes", "src/", "dst/"], { cwd: d });
      let thirdCopyExact = true;
      try {
        assert.deepEqual(await tree(join(d, "dst")), await tree(join(d, "src")));
      } catch {
        thirdCopyExact = false;
      }
      return {
        src,
        dst,
        second: second.stdout,
        third: third.stdout.trim().split("\n").map((l) => l.split(" ")[1]),
        thirdCopyExact,
      };
    });
    assert.deepEqual(result.dst, result.src);
    assert.equal(result.second, "");
    assert.deepEqual(result.third, ["sub/deep/c.sh"]);
    assert.ok(result.thirdCopyExact);
  },

  "sqlite3 in WAL mode: 10k rows over many processes, integrity_check ok": async (
    { kind, dir },
  ) => {
    const result = await sameAsExt4(kind, dir, async (d) => {
      const sql = (text: string) => run("sqlite3", ["db.sqlite"], { cwd: d, stdin: text });
      const mode = (await sql("PRAGMA journal_mode=WAL;")).stdout.trim();
      await sql("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT NOT NULL);");
      for (let batch = 0; batch < 10; batch++) {
        await sql(
          `BEGIN; WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1000)
           INSERT INTO t SELECT x + ${batch * 1000}, printf('%08d-%s', x, hex(x * ${batch + 7}))
           FROM c; COMMIT;`,
        );
      }
      await sql("CREATE INDEX tv ON t(v); UPDATE t SET v = v || '!' WHERE id % 3 = 0;");
      await sql("DELETE FROM t WHERE id % 7 = 0;");
      const walExists = await Deno.stat(join(d, "db.sqlite-wal")).then(() => true, () => false);
      const check = (await sql(
        "SELECT count(*), sum(id), sum(length(v)) FROM t; PRAGMA integrity_check; " +
          "PRAGMA journal_mode; PRAGMA wal_checkpoint(TRUNCATE);",
      )).stdout.trim().split("\n");
      const dump =
        (await run("sh", ["-c", "sqlite3 db.sqlite .dump | sha1sum"], { cwd: d })).stdout;
      return { mode, walExists, check, dump };
    });
    assert.equal(result.mode, "wal");
    assert.deepEqual(result.check.slice(1, 3), ["ok", "wal"]);
    assert.equal(result.check[0].split("|")[0], String(10000 - Math.floor(10000 / 7)));
  },

  "python3 -m venv (pip bootstrapped offline by ensurepip) and the venv's python runs": async (
    { kind, dir },
  ) => {
    const result = await sameAsExt4(kind, dir, async (d) => {
      await run("/usr/bin/python3", ["-m", "venv", "v"], { cwd: d });
      const probe = await run(join(d, "v", "bin", "python"), [
        "-c",
        "import sys, pip, json; print(json.dumps([sys.prefix != sys.base_prefix, " +
        "sys.prefix.endswith('/v'), bool(pip.__version__)]))",
      ], { cwd: d });
      const pip = await run(join(d, "v", "bin", "pip"), ["--version"], { cwd: d });
      const scripts = [...Deno.readDirSync(join(d, "v", "bin"))].map((e) => e.name).sort();
      return {
        probe: JSON.parse(probe.stdout),
        pip: pip.stdout.split(" from ")[0],
        scripts,
        tree: (await tree(join(d, "v"), { mtime: false })).entries.length,
      };
    });
    assert.deepEqual(result.probe, [true, true, true]);
    assert.match(result.pip, /^pip \d+/);
    assert.ok(result.scripts.includes("activate"));
  },

  "make builds a small C project, rebuilds only what changed, and the program runs": async (
    { kind, dir },
  ) => {
    const result = await sameAsExt4(kind, dir, async (d) => {
      const files: Record<string, string> = {
        "util.h": "int twice(int x);\n",
        "util.c": '#include "util.h"\nint twice(int x) { return 2 * x; }\n',
        "main.c":
          '#include <stdio.h>\n#include "util.h"\nint main(void) { printf("%d\\n", twice(21)); return 0; }\n',
        "Makefile": "app: main.o util.o\n\tcc -o app main.o util.o\n" +
          "%.o: %.c util.h\n\tcc -O1 -c -o $@ $<\n",
      };
      for (const [name, text] of Object.entries(files)) {
        await Deno.writeTextFile(join(d, name), text);
      }
      const build = (await run("make", ["-j2"], { cwd: d })).stdout;
      const output = (await run("./app", [], { cwd: d })).stdout;
      // Times are set explicitly (sources older than outputs) so nothing depends on the clock.
      await py(
        d,
        `
        for i, n in enumerate(["util.h", "util.c", "main.c", "Makefile", "main.o", "util.o", "app"]):
            os.utime(n, ns=((1_700_000_000 + i) * 10**9,) * 2)
        out(None)
      `,
      );
      const upToDate = (await run("make", ["-n"], { cwd: d })).stdout;
      await Deno.utime(join(d, "util.c"), 1_800_000_000, 1_800_000_000);
      const afterTouch = (await run("make", ["-n"], { cwd: d })).stdout;
      await run("make", [], { cwd: d });
      const rebuiltOutput = (await run("./app", [], { cwd: d })).stdout;
      return { build: build.split("\n").sort(), output, upToDate, afterTouch, rebuiltOutput };
    });
    assert.equal(result.output, "42\n");
    assert.equal(result.rebuiltOutput, "42\n");
    assert.match(result.upToDate, /^make: 'app' is up to date\.\n?$|^$/);
    assert.equal(result.afterTouch, "cc -O1 -c -o util.o util.c\ncc -o app main.o util.o\n");
  },

  "fio writes and verifies with crc32c (random 4k and sequential 1M)": async ({ kind, dir }) => {
    const result = await sameAsExt4(kind, dir, async (d) => {
      const out = await run("fio", [
        "--output-format=json",
        "--name=rand4k",
        "--filename=rand.dat",
        "--size=16m",
        "--bs=4k",
        "--rw=randwrite",
        "--ioengine=psync",
        "--verify=crc32c",
        "--do_verify=1",
        "--verify_fatal=1",
        "--randseed=42",
        "--name=seq1m",
        "--filename=seq.dat",
        "--size=32m",
        "--bs=1m",
        "--rw=write",
        "--ioengine=psync",
        "--verify=crc32c",
        "--do_verify=1",
        "--verify_fatal=1",
      ], { cwd: d });
      const report = JSON.parse(out.stdout.slice(out.stdout.indexOf("{")));
      // deno-lint-ignore no-explicit-any
      return report.jobs.map((job: any) => ({
        name: job.jobname,
        error: job.error,
        written: job.write.io_bytes,
        verified: job.read.io_bytes,
      }));
    });
    assert.deepEqual(result, [
      { name: "rand4k", error: 0, written: 16 << 20, verified: 16 << 20 },
      { name: "seq1m", error: 0, written: 32 << 20, verified: 32 << 20 },
    ]);
  },
});
