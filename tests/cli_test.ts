/**
 * The skyfs CLI against bad input and a hostile environment (issue 2 point 9): each failure is
 * one clear line on stderr and a non-zero exit; a full data disk gives ENOSPC to the program while
 * the daemon keeps serving; SIGTERM and SIGINT unmount cleanly; `mod.ts umount` clears the dead
 * mount a kill -9 leaves. Needs root (tmpfs mounts, other uids, private mount namespaces).
 * @module
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import {
  denoForEveryUid,
  isSkyfsMounted,
  makeTempDir,
  MOD_TS,
  PYTHON,
  run,
  runAs,
  runSkyfs,
  runSkyfsAs,
  startMount,
  targetKinds,
} from "./_harness.ts";

const ignore = !targetKinds().includes("skyfs");
const options = { ignore, sanitizeOps: false, sanitizeResources: false };

/**
 * Asserts a failed run of skyfs: non-zero exit, one line on stderr, skyfs's own ("skyfs: ...") and
 * matching `pattern`, no stack trace. A program that never started (exec refused, no such binary,
 * a wrong path) prints someone else's line, so it fails here whatever that line says.
 */
function assertOneLineError(
  result: { code: number; stderr: string; timedOut?: boolean },
  pattern: RegExp,
  what: string,
): void {
  assert.ok(!result.timedOut, `${what}: skyfs did not exit (it should fail at once)`);
  assert.notEqual(result.code, 0, `${what}: exit code 0, expected a failure`);
  const lines = result.stderr.trim().split("\n").filter((line) => line.trim());
  assert.equal(lines.length, 1, `${what}: expected one line on stderr, got:\n${result.stderr}`);
  assert.match(lines[0], /^skyfs: /, `${what}: not skyfs's own message (did skyfs start?)`);
  assert.match(lines[0], pattern, `${what}: unclear message`);
}

/** Where rootOnlyDeno() put its link, removed when the tests end. */
let rootOnlyDir: string | undefined;
let rootOnly: Promise<string> | undefined;

/**
 * The Deno the non-root cases start from, as a fresh machine has it: only in a directory no other
 * uid can traverse (npx's cache under /root, mode 0700). A link to (or copy of) Deno.execPath() in
 * a mode-0700 directory, made on every machine, so a machine with a Deno installed for everyone
 * tests the same condition (issue 12).
 */
function rootOnlyDeno(): Promise<string> {
  rootOnly ??= (async () => {
    rootOnlyDir = await makeTempDir("root-only");
    await Deno.chmod(rootOnlyDir, 0o700);
    const path = join(rootOnlyDir, "deno");
    await Deno.link(Deno.execPath(), path).catch(() => Deno.copyFile(Deno.execPath(), path));
    return path;
  })();
  return rootOnly;
}

globalThis.addEventListener("unload", () => {
  if (rootOnlyDir) Deno.removeSync(rootOnlyDir, { recursive: true });
});

/** `mod.ts args...` as uid 1000, started from rootOnlyDeno() through the harness's shared copy. */
async function runSkyfsAsUser(args: string[], options: { path?: string } = {}) {
  return runSkyfsAs(1000, args, { ...options, deno: await rootOnlyDeno() });
}

/** Runs a shell script in a private mount namespace, then `mod.ts args...` inside it. */
function runSkyfsInNamespace(setup: string, args: string[]) {
  const quoted = [Deno.execPath(), "run", "-A", "--quiet", MOD_TS, ...args]
    .map((a) => `'${a}'`).join(" ");
  return run(
    "unshare",
    ["-m", "--propagation", "private", "sh", "-c", `${setup}\nexec ${quoted}`],
    {
      check: false,
    },
  );
}

Deno.test({
  name: "cli: uid 1000 runs skyfs from a Deno that lives only in a root-only directory",
  ...options,
  async fn() {
    // The condition of a fresh machine, reproduced: uid 1000 cannot execute the source itself.
    const source = await rootOnlyDeno();
    const refused = await runAs(1000, source, ["--version"]);
    assert.notEqual(refused.code, 0, `uid 1000 ran "${source}": not a root-only Deno`);
    assert.match(refused.stderr, /Permission denied/, `uid 1000 running "${source}"`);
    // The harness's copy of it is what the other uid gets, and that uid can run it.
    const copy = await denoForEveryUid(source);
    assert.ok(!copy.startsWith(`${rootOnlyDir}/`), `"${copy}" is inside the root-only directory`);
    const version = await runAs(1000, copy, ["--version"]);
    assert.equal(version.code, 0, `uid 1000 running "${copy}":\n${version.stderr}`);
    assert.match(version.stdout, new RegExp(`^deno ${Deno.version.deno.replaceAll(".", "\\.")} `));
    // Where the tests' own Deno is root-only too (started by npx), the copy is not that binary.
    if ((await runAs(1000, Deno.execPath(), ["--version"])).code !== 0) {
      assert.notEqual(await denoForEveryUid(), Deno.execPath());
    }
    const help = await runSkyfsAsUser(["--help"]);
    assert.equal(help.code, 0, `skyfs --help as uid 1000:\n${help.stderr}`);
    assert.match(help.stdout, /^skyfs: a userspace distributed file system/);
  },
});

Deno.test({
  name: "cli: mountpoint missing, not a directory, not empty",
  ...options,
  async fn() {
    const base = await makeTempDir("cli");
    try {
      const data = join(base, "data");
      const missing = join(base, "missing");
      assertOneLineError(
        await runSkyfs(["mount", missing, "--data", data]),
        new RegExp(`"${missing}".*(no such|does not exist|missing)`, "i"),
        "missing mountpoint",
      );
      const file = join(base, "file");
      await Deno.writeTextFile(file, "x");
      assertOneLineError(
        await runSkyfs(["mount", file, "--data", data]),
        /not a directory/i,
        "mountpoint is a file",
      );
      const full = join(base, "full");
      await Deno.mkdir(full);
      await Deno.writeTextFile(join(full, "x"), "x");
      assertOneLineError(
        await runSkyfs(["mount", full, "--data", data]),
        /not empty/i,
        "mountpoint not empty",
      );
      assert.ok(!isSkyfsMounted(full));
    } finally {
      await Deno.remove(base, { recursive: true });
    }
  },
});

Deno.test({
  name: "cli: bad arguments, unknown command, --help",
  ...options,
  async fn() {
    assertOneLineError(await runSkyfs(["mount"]), /mount point/, "mount without a mountpoint");
    assertOneLineError(
      await runSkyfs(["mount", "/tmp", "--cache-seconds", "soon"]),
      /cache-seconds.*soon/,
      "bad --cache-seconds",
    );
    assertOneLineError(
      await runSkyfs(["mount", "/tmp", "--frobnicate"]),
      /frobnicate/,
      "unknown flag",
    );
    assertOneLineError(await runSkyfs(["fly"]), /unknown command "fly"/, "unknown command");
    for (const command of [["--help"], ["mount", "--help"], ["umount", "--help"]]) {
      const help = await runSkyfs(command);
      assert.equal(help.code, 0, `${command.join(" ")} exits 0`);
      assert.match(help.stdout, /Usage/, `${command.join(" ")} prints usage`);
    }
    const base = await makeTempDir("cli");
    try {
      assertOneLineError(
        await runSkyfs(["umount", base]),
        /not mounted/i,
        "umount of a directory that is not mounted",
      );
    } finally {
      await Deno.remove(base, { recursive: true });
    }
  },
});

Deno.test({
  name: "cli: already mounted, and a data directory locked by another daemon",
  ...options,
  async fn() {
    const mount = await startMount();
    const other = await makeTempDir("cli");
    try {
      assertOneLineError(
        await runSkyfs(["mount", mount.mountpoint, "--data", join(other, "data")]),
        /already mounted/i,
        "second mount on the same mountpoint",
      );
      const mountpoint2 = join(other, "mnt");
      await Deno.mkdir(mountpoint2);
      assertOneLineError(
        await runSkyfs(["mount", mountpoint2, "--data", mount.dataDir]),
        /lock/i,
        "second daemon on the same data directory",
      );
      assert.ok(!isSkyfsMounted(mountpoint2), "the refused daemon left a mount behind");
      // The first daemon is unharmed.
      await Deno.writeTextFile(join(mount.mountpoint, "still"), "serving");
      assert.equal(await Deno.readTextFile(join(mount.mountpoint, "still")), "serving");
    } finally {
      await mount.dispose();
      await Deno.remove(other, { recursive: true });
    }
  },
});

Deno.test({
  name: "cli: a data directory of a newer format, or one that is not a skyfs directory",
  ...options,
  async fn() {
    const base = await makeTempDir("cli");
    try {
      const mountpoint = join(base, "mnt");
      await Deno.mkdir(mountpoint);
      const newer = join(base, "newer");
      await Deno.mkdir(newer);
      await Deno.writeTextFile(join(newer, "FORMAT"), "999\n");
      assertOneLineError(
        await runSkyfs(["mount", mountpoint, "--data", newer]),
        /999.*newer|newer.*999/i,
        "data directory with FORMAT 999",
      );
      const foreign = join(base, "foreign");
      await Deno.mkdir(foreign);
      await Deno.writeTextFile(join(foreign, "precious.txt"), "not skyfs");
      assertOneLineError(
        await runSkyfs(["mount", mountpoint, "--data", foreign]),
        /foreign|not a skyfs/i,
        "data directory holding other files",
      );
      assert.equal(await Deno.readTextFile(join(foreign, "precious.txt")), "not skyfs");
      assert.ok(!isSkyfsMounted(mountpoint));
    } finally {
      await Deno.remove(base, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "cli: an unwritable data directory (read-only file system, and as a non-root uid); --dev, --suid",
  ...options,
  async fn() {
    const base = await makeTempDir("cli");
    const readOnly = join(base, "ro");
    await Deno.mkdir(readOnly);
    await run("mount", ["-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", readOnly]);
    try {
      const mountpoint = join(base, "mnt");
      await Deno.mkdir(mountpoint);
      assertOneLineError(
        await runSkyfs(["mount", mountpoint, "--data", join(readOnly, "data")]),
        /data directory.*read-only/i,
        "data directory on a read-only file system",
      );
      const userMountpoint = join(base, "umnt");
      await Deno.mkdir(userMountpoint);
      await Deno.chown(userMountpoint, 1000, 1000);
      const rootOwned = join(base, "rootdata");
      await Deno.mkdir(rootOwned, { mode: 0o755 });
      assertOneLineError(
        await runSkyfsAsUser(["mount", userMountpoint, "--data", rootOwned]),
        new RegExp(`"${rootOwned}.*(writable|permission denied)`, "i"),
        "uid 1000 with a root-owned data directory",
      );
      assert.ok(!isSkyfsMounted(userMountpoint));
      // fusermount3 mounts a user's file system nodev,nosuid whatever is asked: refused at once.
      for (const flag of ["--dev", "--suid"]) {
        assertOneLineError(
          await runSkyfsAsUser(["mount", userMountpoint, flag, "--data", join(base, "udata")]),
          new RegExp(`${flag} needs root`),
          `uid 1000 with ${flag}`,
        );
      }
      assert.ok(!isSkyfsMounted(userMountpoint));
    } finally {
      await run("umount", [readOnly]);
      await Deno.remove(base, { recursive: true });
    }
  },
});

Deno.test({
  name: "cli: /dev/fuse missing, libfuse3 unloadable, not root without fusermount3",
  ...options,
  async fn() {
    const base = await makeTempDir("cli");
    try {
      const mountpoint = join(base, "mnt");
      await Deno.mkdir(mountpoint);
      const data = join(base, "data");
      // A private /dev with only what Deno itself needs.
      const noFuse = [
        "mount -t tmpfs -o size=1m tmpfs /dev",
        "mknod -m 666 /dev/null c 1 3 && mknod -m 666 /dev/zero c 1 5",
        "mknod -m 666 /dev/random c 1 8 && mknod -m 666 /dev/urandom c 1 9",
        "ln -s /proc/self/fd /dev/fd",
      ].join("\n");
      assertOneLineError(
        await runSkyfsInNamespace(noFuse, ["mount", mountpoint, "--data", data]),
        /\/dev\/fuse/,
        "/dev/fuse missing",
      );
      const empty = join(base, "empty.so");
      await Deno.writeTextFile(empty, "");
      const lib = await Deno.realPath("/usr/lib/x86_64-linux-gnu/libfuse3.so.3");
      assertOneLineError(
        await runSkyfsInNamespace(`mount --bind '${empty}' '${lib}'`, [
          "mount",
          mountpoint,
          "--data",
          data,
        ]),
        /libfuse/i,
        "libfuse3 unloadable",
      );
      await Deno.chown(mountpoint, 1000, 1000);
      assertOneLineError(
        await runSkyfsAsUser(["mount", mountpoint, "--data", join(base, "udata")], {
          path: "/nonexistent",
        }),
        /fusermount3/,
        "not root and no fusermount3 on PATH",
      );
      assert.ok(!isSkyfsMounted(mountpoint));
    } finally {
      await Deno.remove(base, { recursive: true });
    }
  },
});

Deno.test({
  name: "cli: a full data disk gives ENOSPC to the program and the daemon keeps serving",
  ...options,
  async fn() {
    const base = await makeTempDir("cli");
    const small = join(base, "small");
    await Deno.mkdir(small);
    await run("mount", ["-t", "tmpfs", "-o", "size=8m", "tmpfs", small]);
    try {
      const mount = await startMount({ dataDir: join(small, "data") });
      try {
        const mp = mount.mountpoint;
        const result = await run(PYTHON, [
          "-c",
          `
import errno, os, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT, 0o644)
written, err = 0, None
try:
    for _ in range(64):
        written += os.write(fd, b"z" * (1 << 20))
    os.fsync(fd)
except OSError as e:
    err = errno.errorcode[e.errno]
try:
    os.close(fd)
except OSError as e:
    err = err or errno.errorcode[e.errno]
print(err, written)
`,
          join(mp, "big"),
        ]);
        const [err, written] = result.stdout.trim().split(" ");
        assert.equal(err, "ENOSPC", `writing 64 MiB into an 8 MiB data disk gave ${err}`);
        assert.ok(Number(written) < 64 << 20);
        assert.ok(mount.pid() !== undefined && isSkyfsMounted(mp), "the daemon died on ENOSPC");
        await Deno.remove(join(mp, "big"));
        await Deno.writeTextFile(join(mp, "after"), "space again");
        assert.equal(await Deno.readTextFile(join(mp, "after")), "space again");
        assert.deepEqual([...Deno.readDirSync(mp)].map((e) => e.name), ["after"]);
      } catch (error) {
        // Report the first failure, not the unmount that may fail after it.
        await mount.dispose().catch(() => {});
        throw error;
      }
      await mount.dispose();
    } finally {
      await run("umount", [small]);
      await Deno.remove(base, { recursive: true });
    }
  },
});

Deno.test({
  name: "cli: SIGTERM and SIGINT unmount cleanly; umount clears the mount a kill -9 leaves",
  ...options,
  async fn() {
    const mount = await startMount();
    const file = join(mount.mountpoint, "kept");
    try {
      await Deno.writeTextFile(file, "one");
      await mount.stop(); // SIGTERM; throws unless exit 0 and the mount is gone
      assert.ok(!isSkyfsMounted(mount.mountpoint));
      await mount.restart();
      assert.equal(await Deno.readTextFile(file), "one");
      // SIGINT, as a terminal's Ctrl-C sends it.
      Deno.kill(mount.pid()!, "SIGINT");
      const deadline = Date.now() + 20_000;
      while (isSkyfsMounted(mount.mountpoint) && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      assert.ok(!isSkyfsMounted(mount.mountpoint), "SIGINT did not unmount");
      await mount.stop(); // collects the exited daemon (exit code 0 required)
      await mount.restart();
      await Deno.writeTextFile(join(mount.mountpoint, "two"), "two");
      await mount.kill9(); // SIGKILL, then `mod.ts umount`; throws unless the mount is gone
      assert.ok(!isSkyfsMounted(mount.mountpoint));
      assert.deepEqual([...Deno.readDirSync(mount.mountpoint)], [], "mountpoint not empty again");
      await mount.restart();
      assert.equal(await Deno.readTextFile(file), "one");
    } finally {
      await mount.dispose();
    }
  },
});
