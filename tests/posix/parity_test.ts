/**
 * The last POSIX differences to ext4 found by a broad suite (issue 18, points 1, 5, 7, 9, 10):
 * exec-only programs, device nodes and set-id programs (`--dev`, `--suid`), set-id bits dropped
 * by writes and fallocate as setattr_should_drop_suidgid says, protected hard links with the
 * caller's real capabilities, a directory's ctime after `chown -1 -1`, and unaligned O_DIRECT.
 *
 * Every case runs on ext4 (the reference), on skyfs as mounted by default (FUSE passthrough as
 * root; a cluster node without passthrough under SKYFS_TEST_META) and on skyfs with
 * `--passthrough off`, with the same expectations. Where the LD_PRELOAD shim can be in the way
 * (exec, writes), the case runs a second time with the shim loaded in the acting process.
 * @module
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { ensurePreloadLibrary } from "../../src/intercept/mod.ts";
import {
  makeTempDir,
  openTarget,
  run,
  type StartMountOptions,
  type Target,
  type TargetKind,
  targetKinds,
  testMeta,
} from "../_harness.ts";
import { dedent, py } from "./_py.ts";

/** A target flavour: which file system, and the extra mount arguments for skyfs. */
interface Variant {
  kind: TargetKind;
  label: string;
  args: string[];
}

/** ext4, skyfs as mounted by default, skyfs without passthrough (a cluster node has none, so
 * there the last would repeat the second). */
function variants(): Variant[] {
  const out: Variant[] = [];
  for (const kind of targetKinds()) {
    if (kind === "ext4") out.push({ kind, label: "ext4", args: [] });
    else {
      out.push({ kind, label: testMeta() ? `skyfs ${testMeta()} node` : "skyfs", args: [] });
      if (!testMeta()) {
        out.push({ kind, label: "skyfs --passthrough off", args: ["--passthrough", "off"] });
      }
    }
  }
  return out;
}

/** The tiny C program the exec cases run: prints its real and effective uid. */
const EUID_C = `#include <stdio.h>
#include <unistd.h>
int main(void) { printf("%d %d\\n", (int)getuid(), (int)geteuid()); return 0; }
`;

let euidProgram: Promise<string> | undefined;

/** Builds the program once per test run with gcc, in a directory every uid can read. */
function buildEuid(): Promise<string> {
  euidProgram ??= (async () => {
    const dir = await makeTempDir("parity-euid");
    await Deno.writeTextFile(join(dir, "euid.c"), EUID_C);
    await run("gcc", ["-O1", "-o", join(dir, "euid"), join(dir, "euid.c")]);
    await Deno.chmod(join(dir, "euid"), 0o755);
    return join(dir, "euid");
  })();
  return euidProgram;
}

interface ParityContext {
  dir: string;
  variant: Variant;
  target: Target;
  /** The preload library (built on first use). */
  library: string;
  euid: string;
}

/** One Deno test per variant; each case is a step in a fresh directory of that target. */
function paritySuite(
  name: string,
  cases: Record<string, (ctx: ParityContext) => Promise<void>>,
  options: { variants?: Variant[]; mount?: (v: Variant) => StartMountOptions } = {},
): void {
  for (const variant of options.variants ?? variants()) {
    Deno.test({
      name: `${name} [${variant.label}]`,
      sanitizeOps: false,
      sanitizeResources: false,
      sanitizeExit: false,
      async fn(t) {
        const library = await ensurePreloadLibrary();
        const euid = await buildEuid();
        const target = await openTarget(
          variant.kind,
          options.mount?.(variant) ?? { extraArgs: variant.args },
        );
        try {
          let index = 0;
          for (const [caseName, body] of Object.entries(cases)) {
            const dir = join(target.dir, `c${index++}`);
            await t.step(caseName, async () => {
              await Deno.mkdir(dir);
              await Deno.chmod(dir, 0o755);
              await body({ dir, variant, target, library, euid });
            });
          }
        } finally {
          await target.close();
        }
      },
    });
  }
}

/** `code` (indented as it sits in TypeScript) after RUN_AS's helpers, for py(). */
function withRunAs(code: string): string {
  return RUN_AS + "\n" + dedent(code);
}

/** Python: run `argv` as uid/gid/groups (fork, setgroups, setgid, setuid, exec; no capability
 * survives) with extra environment; returns its stdout stripped, or the errno name. */
const RUN_AS = `
import subprocess, shutil
def run_as(argv, uid, gid, groups=(), env=None):
    def drop():
        os.setgroups(list(groups)); os.setgid(gid); os.setuid(uid)
    try:
        p = subprocess.run(argv, capture_output=True, preexec_fn=drop,
                           env=dict(os.environ, **(env or {})))
        return p.stdout.decode().strip() if p.returncode == 0 else "exit %d" % p.returncode
    except OSError as e:
        return ename(e)

PR_SET_KEEPCAPS = 8
CAP_DAC_OVERRIDE, CAP_FOWNER = 1, 3
class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]
class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]

def as_user_with_caps(uid, gid, caps, fn):
    """fn() in a child that is uid/gid with only the capabilities \`caps\` effective."""
    def body():
        bits = 0
        for c in caps:
            bits |= 1 << c
        data = (_CapData * 2)()
        data[0].effective = data[0].permitted = bits
        if libc.capset(ctypes.byref(_CapHeader(0x20080522, 0)), data) != 0:
            raise OSError(ctypes.get_errno(), "capset")
        return fn()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            libc.prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0)
            os.setgroups([]); os.setgid(gid); os.setuid(uid)
            data = json.dumps({"ok": body()})
        except BaseException as e:
            data = json.dumps({"exc": repr(e)})
        os.write(w, data.encode())
        os._exit(0)
    os.close(w)
    got = b""
    while True:
        b = os.read(r, 65536)
        if not b:
            break
        got += b
    os.close(r)
    os.waitpid(pid, 0)
    d = json.loads(got)
    if "exc" in d:
        raise RuntimeError(d["exc"])
    return d["ok"]
`;

paritySuite("posix parity", {
  // Point 1: the kernel checks execute permission; the exec's FUSE_OPEN (flags with
  // __FMODE_EXEC) must not then be refused for lack of read permission.
  "a program its user may only execute runs (001 other, 010 group, 100 owner)": async (c) => {
    const r = await py(
      c.dir,
      withRunAs(`
      res = {}
      for name, owner, mode in [("other", 99, 0o001), ("group", 99, 0o010), ("owner", 1000, 0o100)]:
          shutil.copyfile(${JSON.stringify(c.euid)}, name)
          os.chown(name, owner, 99)
          os.chmod(name, mode)
      for shim in [False, True]:
          env = {"LD_PRELOAD": ${JSON.stringify(c.library)}} if shim else {}
          key = "shim " if shim else ""
          res[key + "other"] = run_as(["./other"], 1000, 1000, env=env)
          res[key + "group"] = run_as(["./group"], 1000, 1000, [99], env=env)
          res[key + "owner"] = run_as(["./owner"], 1000, 1000, env=env)
          # The class rule still holds: the owner of a 001 file may not run it.
          res[key + "owner of 001"] = run_as(["./other"], 99, 99, env=env)
          res[key + "reading 001"] = run_as(["cat", "other"], 1000, 1000, env=env)
      out(res)
    `),
    );
    const expected = {
      other: "1000 1000",
      group: "1000 1000",
      owner: "1000 1000",
      "owner of 001": "EACCES",
      "reading 001": "exit 1",
    };
    assert.deepEqual(r, {
      ...expected,
      ...Object.fromEntries(Object.entries(expected).map(([k, v]) => [`shim ${k}`, v])),
    });
  },

  // Point 7: setattr_should_drop_suidgid. A writer without CAP_FSETID drops set-user-id always,
  // and set-group-id when group-execute is set or when it is outside the file's group.
  "writes and fallocate drop set-id bits as ext4 does (2666 by an outsider -> 666)": async (c) => {
    const r = await py(
      c.dir,
      `
      FALLOC_FL_ZERO_RANGE = 0x10
      ops = {
          "write": lambda fd: os.pwrite(fd, b"x", 1),
          "fallocate": lambda fd: fallocate(fd, 0, 0, 8192),
          "punch hole": lambda fd: fallocate(fd, FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE, 0, 4096),
          "zero range": lambda fd: fallocate(fd, FALLOC_FL_ZERO_RANGE, 0, 4096),
      }
      def mode_after(op, mode, uid, groups=(), root=False):
          p = "%s-%o-%d" % (op.replace(" ", "_"), mode, uid)
          write_file(p, b"\\0" * 8192)
          os.chown(p, 1001, 2000)
          os.chmod(p, mode)
          def act():
              fd = os.open(p, os.O_WRONLY)
              try:
                  ops[op](fd)
              finally:
                  os.close(fd)
              return "%o" % stat.S_IMODE(os.stat(p).st_mode)
          return act() if root else as_user(uid, 1000, act, groups=groups)
      res = {}
      for op in ops:
          res[op + " outsider 2666"] = mode_after(op, 0o2666, 1000)
          res[op + " member 2666"] = mode_after(op, 0o2666, 1002, groups=[2000])
          res[op + " member 2676"] = mode_after(op, 0o2676, 1003, groups=[2000])
          res[op + " member 6666"] = mode_after(op, 0o6666, 1004, groups=[2000])
          res[op + " root 6676"] = mode_after(op, 0o6676, 0, root=True)
      out(res)
    `,
    );
    const expected: Record<string, string> = {};
    for (const op of ["write", "fallocate", "punch hole", "zero range"]) {
      expected[`${op} outsider 2666`] = "666";
      expected[`${op} member 2666`] = "2666";
      expected[`${op} member 2676`] = "676";
      expected[`${op} member 6666`] = "2666";
      expected[`${op} root 6676`] = "6676";
    }
    assert.deepEqual(r, expected);
  },

  "set-gid added by chmod while an outsider holds the file open goes at its next write": async (
    c,
  ) => {
    const r = await py(
      c.dir,
      `
      write_file("f", b"hello")
      os.chown("f", 1001, 2000)
      os.chmod("f", 0o666)
      opened, go = os.pipe(), os.pipe()
      def writer():
          fd = os.open("f", os.O_WRONLY)  # with passthrough: a backing file, no set-id yet
          os.write(fd, b"a")
          os.write(opened[1], b"1")
          os.read(go[0], 1)
          os.write(fd, b"b")
          os.close(fd)
          return "%o" % stat.S_IMODE(os.stat("f").st_mode)
      wait = fork_child(writer, 1000, 1000)
      os.read(opened[0], 1)
      os.chmod("f", 0o2666)
      os.write(go[1], b"1")
      out({"writer": wait(), "after": "%o" % stat.S_IMODE(os.stat("f").st_mode),
           "data": read_file("f").decode()})
    `,
    );
    assert.deepEqual(r, { writer: "666", after: "666", data: "abllo" });
  },

  "a write through the LD_PRELOAD shim drops set-id bits too": async (c) => {
    const statsDir = await makeTempDir("parity-shim-stats");
    try {
      const stats = join(statsDir, "stats");
      await Deno.writeTextFile(stats, "");
      await Deno.chmod(stats, 0o666);
      const r = await py(
        c.dir,
        withRunAs(`
        write_file("sgid", b"0123456789")
        os.chown("sgid", 1001, 2000)
        os.chmod("sgid", 0o2666)
        write_file("plain", b"0123456789")
        os.chmod("plain", 0o666)
        # The shim's process writes a plain file (which it serves itself) and the set-gid one.
        code = ("import os\\n"
                "for p in ['plain', 'sgid']:\\n"
                "    fd = os.open(p, os.O_WRONLY)\\n"
                "    os.write(fd, b'ab')\\n"
                "    os.close(fd)\\n"
                "print('%o' % (os.stat('sgid').st_mode & 0o7777))\\n")
        got = run_as([sys.executable, "-c", code], 1000, 1000,
                     env={"LD_PRELOAD": ${JSON.stringify(c.library)},
                          "SKYFS_PRELOAD_STATS": ${JSON.stringify(stats)}})
        out({"child": got, "after": "%o" % stat.S_IMODE(os.stat("sgid").st_mode),
             "data": read_file("sgid").decode()})
      `),
      );
      assert.deepEqual(r, { child: "666", after: "666", data: "ab23456789" });
      const text = await Deno.readTextFile(stats);
      if (c.variant.kind === "skyfs" && c.variant.args.length === 0 && !testMeta()) {
        // With passthrough the shim served the plain file's write in-process.
        const adopted = Number(text.match(/ adopted (\d+)/)?.[1] ?? 0);
        const writes = Number(text.match(/ writes (\d+)/)?.[1] ?? 0);
        assert.ok(adopted >= 1 && writes >= 1, `the shim served nothing: ${text}`);
      }
    } finally {
      await Deno.remove(statsDir, { recursive: true });
    }
  },

  // Point 9: may_linkat / safe_hardlink_source with fs.protected_hardlinks = 1, and the
  // capabilities of the linking process (CAP_FOWNER, CAP_DAC_OVERRIDE), not only uid 0.
  "protected hard links in a sticky directory follow may_linkat, capabilities included": async (
    c,
  ) => {
    const r = await py(
      c.dir,
      withRunAs(`
      assert read_file("/proc/sys/fs/protected_hardlinks").strip() == b"1"
      os.mkdir("st")
      os.chmod("st", 0o1777)
      def mk(name, uid, mode):
          write_file("st/" + name, b"x")
          os.chown("st/" + name, uid, uid)
          os.chmod("st/" + name, mode)
      mk("own", 1000, 0o600)
      mk("rw", 1001, 0o666)
      mk("ro", 1001, 0o644)
      mk("secret", 1001, 0o600)
      mk("suid", 1001, 0o4777)
      mk("sgidx", 1001, 0o2777)
      mk("sgid", 1001, 0o2666)
      res = {}
      for n in ["own", "rw", "ro", "secret", "suid", "sgidx", "sgid"]:
          res[n] = as_user(1000, 1000, lambda: E(os.link, "st/" + n, "st/plain_" + n))
          res["fowner " + n] = as_user_with_caps(
              1000, 1000, [CAP_FOWNER], lambda: E(os.link, "st/" + n, "st/fowner_" + n))
      res["dac_override secret"] = as_user_with_caps(
          1000, 1000, [CAP_DAC_OVERRIDE], lambda: E(os.link, "st/secret", "st/dac_secret"))
      res["dac_override suid"] = as_user_with_caps(
          1000, 1000, [CAP_DAC_OVERRIDE], lambda: E(os.link, "st/suid", "st/dac_suid"))
      # check_sticky: CAP_FOWNER may remove another user's entry from a sticky directory.
      res["unlink other's"] = as_user(1000, 1000, lambda: E(os.unlink, "st/ro"))
      res["fowner unlink other's"] = as_user_with_caps(
          1000, 1000, [CAP_FOWNER], lambda: E(os.unlink, "st/ro"))
      out(res)
    `),
    );
    assert.deepEqual(r, {
      own: "OK",
      rw: "OK",
      ro: "EPERM",
      secret: "EPERM",
      suid: "EPERM",
      sgidx: "EPERM",
      sgid: "OK",
      "fowner own": "OK",
      "fowner rw": "OK",
      "fowner ro": "OK",
      "fowner secret": "OK",
      "fowner suid": "OK",
      "fowner sgidx": "OK",
      "fowner sgid": "OK",
      "dac_override secret": "OK",
      "dac_override suid": "EPERM",
      "unlink other's": "EPERM",
      "fowner unlink other's": "OK",
    });
  },

  // Point 10: chown(dir, -1, -1) is a change of the inode (ATTR_CTIME).
  "chown -1 -1 moves the ctime of a directory and of a file": async (c) => {
    const r = await py(
      c.dir,
      `
      os.mkdir("d")
      write_file("f", b"x")
      res = {}
      for p in ["d", "f"]:
          before = os.stat(p).st_ctime_ns
          time.sleep(0.02)
          os.chown(p, -1, -1)
          res[p] = os.stat(p).st_ctime_ns > before
      out(res)
    `,
    );
    assert.deepEqual(r, { d: true, f: true });
  },

  // Point 10: O_DIRECT needs 512-byte aligned offsets and lengths, also when set by fcntl.
  "unaligned O_DIRECT reads and writes fail with EINVAL": async (c) => {
    const r = await py(
      c.dir,
      `
      buf = mmap.mmap(-1, 8192)  # page-aligned memory
      def io(fd):
          return {
              "aligned write": V(os.pwritev, fd, [memoryview(buf)[:4096]], 0),
              "odd length write": V(os.pwritev, fd, [memoryview(buf)[:100]], 0),
              "odd offset write": V(os.pwritev, fd, [memoryview(buf)[:4096]], 100),
              "aligned read": V(os.preadv, fd, [memoryview(buf)[:4096]], 0),
              "odd length read": V(os.preadv, fd, [memoryview(buf)[:100]], 0),
              "odd offset read": V(os.preadv, fd, [memoryview(buf)[:512]], 100),
          }
      fd = os.open("dio", os.O_RDWR | os.O_CREAT | os.O_DIRECT, 0o644)
      res = {"open": io(fd)}
      os.close(fd)
      fd = os.open("dio", os.O_RDWR)
      plain = V(os.pwrite, fd, b"abc", 100)
      fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_DIRECT)
      res["fcntl"] = io(fd)
      res["buffered"] = plain
      os.close(fd)
      out(res)
    `,
    );
    const expected = {
      "aligned write": 4096,
      "odd length write": "EINVAL",
      "odd offset write": "EINVAL",
      "aligned read": 4096,
      "odd length read": "EINVAL",
      "odd offset read": "EINVAL",
    };
    // With FUSE passthrough the kernel opens its backing file with the flags of the open: an
    // O_DIRECT set later by fcntl never reaches it (nor the daemon), so that I/O stays buffered
    // and unaligned is accepted; a known difference (README, "What does not work yet").
    const passthrough = c.variant.kind === "skyfs" && c.variant.args.length === 0 && !testMeta();
    const fcntlExpected = passthrough
      ? {
        ...expected,
        "odd length write": 100,
        "odd offset write": 4096,
        "odd length read": 100,
        "odd offset read": 512,
      }
      : expected;
    assert.deepEqual(r, { open: expected, fcntl: fcntlExpected, buffered: 3 });
  },
});

// Point 5: device nodes and set-id programs. ext4 under the test directory is mounted with dev
// and suid (the reference for `--dev --suid`); skyfs is nodev,nosuid unless asked.
const DEV_SUID_CASE = async (c: ParityContext): Promise<{ dev: string; euid: string }> =>
  await py(
    c.dir,
    withRunAs(`
    os.mknod("null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    dev = E(lambda: os.close(os.open("null", os.O_WRONLY)))
    if dev == "OK":
        fd = os.open("null", os.O_WRONLY)
        dev = "wrote %d" % os.write(fd, b"discarded")
        os.close(fd)
    shutil.copyfile(${JSON.stringify(c.euid)}, "euid")
    os.chown("euid", 0, 0)
    os.chmod("euid", 0o4755)
    out({"dev": dev, "euid": run_as(["./euid"], 1000, 1000)})
  `),
  );

const skyfsOnly = (args: string[], label: string): Variant[] =>
  targetKinds().includes("skyfs") ? [{ kind: "skyfs", label, args }] : [];

paritySuite("posix parity: --dev --suid", {
  "a device node works and a setuid-root program gains euid 0": async (c) => {
    assert.deepEqual(await DEV_SUID_CASE(c), { dev: "wrote 9", euid: "1000 0" });
  },
}, {
  variants: [
    ...(targetKinds().includes("ext4") ? [{ kind: "ext4" as const, label: "ext4", args: [] }] : []),
    ...skyfsOnly(["--dev", "--suid"], "skyfs --dev --suid"),
    ...(testMeta() ? [] : skyfsOnly(
      ["--dev", "--suid", "--passthrough", "off"],
      "skyfs --dev --suid --passthrough off",
    )),
  ],
});

paritySuite("posix parity: nodev,nosuid by default", {
  "a device node cannot be opened and a setuid program gains nothing": async (c) => {
    assert.deepEqual(await DEV_SUID_CASE(c), { dev: "EACCES", euid: "1000 1000" });
    const mountinfo = await Deno.readTextFile("/proc/self/mountinfo");
    const line = mountinfo.split("\n").find((l) => l.split(" ")[4] === c.target.mount!.mountpoint);
    assert.match(line ?? "", / rw,nosuid,nodev[, ]/);
  },
}, { variants: skyfsOnly([], "skyfs") });
