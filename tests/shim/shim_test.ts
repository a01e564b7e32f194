/**
 * The LD_PRELOAD shim on a real mount (root only): unmodified programs give the same output with
 * and without it, the shim really serves their I/O (its counters), a FUSE reader sees a shim
 * writer's data and size, and the daemon refuses what a process may not have.
 */

import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { type ProgramResult, runProgram, type ShimMount, startShimMount } from "./_shim.ts";

const isRoot = Deno.uid() === 0;
const here = fileURLToPath(new URL(".", import.meta.url)).replace(/\/$/, "");
const PYTHON = "/usr/bin/python3";

/** One mount for the whole file; each test works in its own directories. */
let shared: Promise<{ mount: ShimMount; calls: string; source: string }> | undefined;
function setup() {
  shared ??= (async () => {
    const mount = await startShimMount();
    const calls = `${mount.mountpoint}/../calls`;
    const cc = await new Deno.Command("gcc", {
      args: ["-O2", "-Wall", "-Werror", "-pthread", "-o", calls, `${here}/calls.c`],
    }).output();
    assert.equal(cc.code, 0, new TextDecoder().decode(cc.stderr));
    const source = `${mount.mountpoint}/../source.bin`;
    const data = new Uint8Array(3 * 1024 * 1024 + 123);
    for (let i = 0; i < data.length; i += 65536) {
      crypto.getRandomValues(data.subarray(i, i + 65536));
    }
    await Deno.writeFile(source, data);
    return { mount, calls, source };
  })();
  return shared;
}

let dirCounter = 0;
/** Run `command` in two fresh directories on the mount, without and with the shim. */
async function both(
  command: string,
  env: Record<string, string> = {},
): Promise<[ProgramResult, ProgramResult]> {
  const { mount } = await setup();
  const results: ProgramResult[] = [];
  for (const shim of [false, true]) {
    const cwd = `${mount.mountpoint}/${shim ? "shim" : "plain"}-${dirCounter}`;
    await Deno.mkdir(cwd);
    results.push(await runProgram(mount, command, { cwd, shim, env }));
  }
  dirCounter++;
  for (const r of results) assert.equal(r.code, 0, `"${command}" failed:\n${r.stderr}`);
  assert.equal(results[1].stdout, results[0].stdout, `"${command}": output differs with the shim`);
  return results as [ProgramResult, ProgramResult];
}

const test = (name: string, fn: () => Promise<void>) =>
  Deno.test({ name: `shim: ${name}`, ignore: !isRoot, sanitizeResources: false, fn });

test("every interposed call gives the result it gives without the shim (calls.c)", async () => {
  const { calls } = await setup();
  const [plain, shim] = await both(`${calls} .`);
  assert.ok(plain.stdout.split("\n").length > 100, plain.stdout);
  assert.equal(plain.counters.adopted, 0);
  assert.ok(shim.counters.reads > 100 && shim.counters.writes > 100, JSON.stringify(shim.counters));
});

test("cat, cp, dd, sha256sum and tar", async () => {
  const { source } = await setup();
  const [, shim] = await both(
    `set -e
    cp "$SRC" f1; cat f1 > f2; dd if=f2 of=f3 bs=4k status=none
    sha256sum f1 f2 f3; dd if=f3 bs=1000 skip=3 count=5 status=none | sha256sum
    cat f1 >> f2; stat -c %s f1 f2 f3; sha256sum "$SRC"
    tar cf t.tar f1 f3; mkdir x; tar xf t.tar -C x; sha256sum x/f1 x/f3; tar tf t.tar
    echo line1 > l; echo line2 >> l; cat l; wc -c < f2`,
    { SRC: source },
  );
  assert.ok(shim.counters.adopted >= 5, JSON.stringify(shim.counters));
  assert.ok(shim.counters.bytes_read > 10_000_000, JSON.stringify(shim.counters));
  assert.ok(shim.counters.bytes_written > 10_000_000, JSON.stringify(shim.counters));
});

test("python3 read, write, seek, append and mmap (mmap goes through the kernel)", async () => {
  const script = `
import mmap, os
with open("p", "wb") as f:
    f.write(b"0123456789" * 1000)
with open("p", "r+b") as f:
    f.seek(5000); print(f.read(10)); f.seek(0, 2); f.write(b"tail"); print(f.tell())
with open("p", "ab") as f:
    f.write(b"!append")
with open("p", "r+b") as f:
    m = mmap.mmap(f.fileno(), 0)
    print(m[:10], m[-7:], len(m)); m[0:4] = b"MMAP"; m.flush(); m.close()
fd = os.open("p", os.O_RDONLY)
print(os.pread(fd, 8, 0), os.fstat(fd).st_size, os.stat("p").st_size)
os.close(fd)
with open("p", "rb") as f:
    data = f.read(); print(len(data), data[:6], data[-11:])
`;
  const [, shim] = await both(`${PYTHON} -c '${script}'`);
  assert.ok(shim.counters.writes > 0 && shim.counters.reads > 0, JSON.stringify(shim.counters));
});

test("sqlite3", async () => {
  const [, shim] = await both(
    `sqlite3 db "create table t(a integer, b text);
     begin; with recursive n(i) as (select 1 union all select i + 1 from n where i < 20000)
       insert into t select i, 'v' || i from n; commit;
     create index ta on t(a); update t set b = 'x' || b where a % 7 = 0; delete from t where a % 11 = 0;
     select count(*), sum(a), max(b) from t; pragma integrity_check;"
     sqlite3 db "select count(*) from t where b like 'x%'"`,
  );
  assert.ok(shim.counters.writes > 0 && shim.counters.reads > 0, JSON.stringify(shim.counters));
});

test("fio psync, pvsync2, libaio and io_uring write and verify", async () => {
  for (const engine of ["psync", "pvsync2", "libaio", "io_uring"]) {
    const [, shim] = await both(
      `fio --thread --name=v --filename=fio.dat --size=4M --bs=4k --rw=randwrite --ioengine=${engine} ` +
        `--verify=crc32c --do_verify=1 --randrepeat=1 --output-format=terse >/dev/null && ` +
        `stat -c %s fio.dat && echo ok`,
    );
    if (engine === "psync" || engine === "pvsync2") {
      assert.ok(shim.counters.writes >= 1024, `${engine}: ${JSON.stringify(shim.counters)}`);
      assert.ok(shim.counters.reads >= 1024, `${engine}: ${JSON.stringify(shim.counters)}`);
    }
  }
});

test("a FUSE reader sees a shim writer's data at once and its size after fsync", async () => {
  const { mount } = await setup();
  const path = `${mount.mountpoint}/coherent`;
  const writer = new Deno.Command(PYTHON, {
    args: [
      "-c",
      `
import os, sys
fd = os.open(${JSON.stringify(path)}, os.O_CREAT | os.O_RDWR | os.O_TRUNC, 0o644)
for k in range(8):
    os.pwrite(fd, bytes([65 + k]) * 4096, k * 4096)
    print(k, flush=True); sys.stdin.readline()
os.fsync(fd); print("synced", flush=True); sys.stdin.readline()
os.close(fd); print("closed", flush=True); sys.stdin.readline()
`,
    ],
    env: { LD_PRELOAD: mount.library },
    stdin: "piped",
    stdout: "piped",
  }).spawn();
  const lines = writer.stdout.pipeThrough(new TextDecoderStream()).getReader();
  const stdin = writer.stdin.getWriter();
  let pending = "";
  const nextLine = async () => {
    while (!pending.includes("\n")) {
      const { value, done } = await lines.read();
      if (done) throw new Error("writer exited early");
      pending += value;
    }
    const line = pending.slice(0, pending.indexOf("\n"));
    pending = pending.slice(pending.indexOf("\n") + 1);
    return line;
  };
  let reader: Deno.FsFile | undefined;
  try {
    for (let k = 0; k < 8; k++) {
      assert.equal(await nextLine(), String(k));
      reader ??= await Deno.open(path, { read: true }); // this process has no shim: FUSE
      const block = new Uint8Array(4096);
      await reader.seek(k * 4096, Deno.SeekMode.Start);
      let got = 0;
      while (got < 4096) {
        const n = await reader.read(block.subarray(got));
        if (n === null) break;
        got += n;
      }
      assert.equal(got, 4096, `block ${k}: FUSE read ${got} bytes of the shim's write`);
      assert.ok(block.every((b) => b === 65 + k), `block ${k} content`);
      await stdin.write(new TextEncoder().encode("\n"));
    }
    assert.equal(await nextLine(), "synced");
    assert.equal((await Deno.stat(path)).size, 8 * 4096, "size after the writer's fsync");
    await stdin.write(new TextEncoder().encode("\n"));
    assert.equal(await nextLine(), "closed");
    assert.equal((await Deno.stat(path)).size, 8 * 4096, "size after the writer's close");
    await stdin.write(new TextEncoder().encode("\n"));
  } finally {
    reader?.close();
    await stdin.close().catch(() => {});
    lines.releaseLock();
    await writer.stdout.cancel().catch(() => {});
    assert.equal((await writer.status).code, 0);
  }
});

test("the daemon refuses fds a process does not hold, malformed messages, and keeps serving", async () => {
  const { mount } = await setup();
  const script = `
import json, os, socket, struct, sys
mnt = sys.argv[1]
dev = os.stat(mnt).st_dev
name = b"\\0skyfs-shim-%d:%d" % (os.major(dev), os.minor(dev))
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET); s.connect(name)
def ask(op, fd, ino, magic=0x53594b53, version=1, raw=None):
    s.send(raw if raw is not None else struct.pack("<IHHiIQQ", magic, version, op, fd, 0, ino, 9))
    msg, fds, _, _ = socket.recv_fds(s, 64, 1)
    return struct.unpack("<IHHiIQ", msg)[3], fds
out = {}
out["garbage"] = ask(0, 0, 0, raw=b"junk")[0]
out["bad_magic"] = ask(1, 0, 1, magic=7)[0]
out["bad_version"] = ask(1, 0, 1, version=99)[0]
out["unknown_op"] = ask(42, 0, 1)[0]
out["fd_not_open"] = ask(1, 999, 5)[0]
other = os.open("/etc/hostname", os.O_RDONLY)
out["not_on_mount"] = ask(1, other, os.fstat(other).st_ino)[0]
with open(mnt + "/ro", "w") as f: f.write("secret")
ro = os.open(mnt + "/ro", os.O_RDONLY)
out["wrong_ino"] = ask(1, ro, os.fstat(ro).st_ino + 1)[0]
status, fds = ask(1, ro, os.fstat(ro).st_ino)
out["granted"] = status
out["read_local"] = os.read(fds[0], 6).decode()
try:
    os.write(fds[0], b"x"); out["write_local"] = "allowed"
except OSError as e:
    out["write_local"] = e.errno
out["wrote"] = ask(2, ro, os.fstat(ro).st_ino)[0]
print(json.dumps(out))
`;
  const out = await new Deno.Command(PYTHON, { args: ["-c", script, mount.mountpoint] }).output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  assert.deepEqual(JSON.parse(new TextDecoder().decode(out.stdout)), {
    garbage: -71,
    bad_magic: -71,
    bad_version: -71,
    unknown_op: -71,
    fd_not_open: -9,
    not_on_mount: -13,
    wrong_ino: -13,
    granted: 0,
    read_local: "secret",
    write_local: 9,
    wrote: 0,
  });
  assert.match(mount.log(), /shim: rejected a message from pid \d+ uid 0: bad magic/);
});

test("SKYFS_PRELOAD=0 disables it; programs off the mount are untouched", async () => {
  const { mount, source } = await setup();
  const off = await runProgram(mount, `cat "${source}" | sha256sum; sha256sum < "${source}"`, {
    cwd: mount.mountpoint,
    shim: true,
    env: { SKYFS_PRELOAD: "0" },
  });
  const offMount = await runProgram(mount, `sha256sum "${source}"; cp "${source}" /dev/null`, {
    cwd: "/tmp",
    shim: true,
  });
  assert.equal(off.code, 0);
  assert.equal(offMount.code, 0);
  assert.equal(off.counters.adopted + offMount.counters.adopted, 0);
  assert.equal(off.counters.reads + offMount.counters.reads, 0);
});

/** Compile one of this directory's C files next to the mount (outside it); returns the path. */
async function compile(source: string, output: string, flags: string[]): Promise<string> {
  const { mount } = await setup();
  const path = `${mount.mountpoint}/../${output}`;
  const cc = await new Deno.Command("gcc", {
    args: ["-O2", "-Wall", "-Werror", ...flags, "-o", path, `${here}/${source}`],
  }).output();
  assert.equal(cc.code, 0, new TextDecoder().decode(cc.stderr));
  return path;
}

test("a malloc that does file I/O on the mount at its first call neither recurses nor hangs", async () => {
  const hook = await compile("malloc_hook.c", "malloc_hook.so", ["-shared", "-fPIC"]);
  const { source } = await setup();
  // The hook comes first in LD_PRELOAD, so its malloc is the one the shim would call while
  // initialising; `timeout` turns a deadlock into a failure.
  const [, shim] = await both(
    `set -e
    head -c 300000 "$SRC" > f1
    run() { LD_PRELOAD="$HOOK\${LD_PRELOAD:+ $LD_PRELOAD}" MALLOC_HOOK_FILE="$PWD/f1" timeout 20 "$@"; }
    run sha256sum f1; run cp f1 f2; run cat f1 f2 | run wc -c; run dd if=f2 bs=4k status=none | sha256sum`,
    { SRC: source, HOOK: hook },
  );
  assert.ok(shim.counters.adopted >= 3 && shim.counters.reads > 10, JSON.stringify(shim.counters));
});

test("static and setuid binaries ignore the shim and read through FUSE", async () => {
  const { mount, source } = await setup();
  const staticReader = await compile("reader.c", "reader_static", ["-static"]);
  const setuidReader = await compile("reader.c", "reader_setuid", []);
  await Deno.chmod(setuidReader, 0o4755); // owned by root: runs as euid 0 for uid 1000
  await Deno.chmod(`${mount.mountpoint}/..`, 0o755); // uid 1000 reaches the binary and the mount
  const cwd = `${mount.mountpoint}/loader-${dirCounter++}`;
  await Deno.mkdir(cwd);
  await Deno.copyFile(source, `${cwd}/f1`);
  const command =
    `"$STATIC" f1; setpriv --reuid 1000 --regid 1000 --clear-groups "$SETUID" "$PWD/f1"`;
  const env = { STATIC: staticReader, SETUID: setuidReader };
  const plain = await runProgram(mount, command, { cwd, shim: false, env });
  const shim = await runProgram(mount, command, { cwd, shim: true, env });
  assert.equal(plain.code, 0, plain.stderr);
  assert.equal(shim.code, 0, shim.stderr);
  const size = (await Deno.stat(source)).size;
  assert.match(plain.stdout, new RegExp(`^${size} [0-9a-f]+\n${size} [0-9a-f]+\n$`));
  assert.equal(shim.stdout, plain.stdout);
  // bash and setpriv load the shim but read nothing; the two readers never load it.
  assert.equal(shim.counters.adopted, 0, JSON.stringify(shim.counters));
  assert.equal(shim.counters.reads, 0, JSON.stringify(shim.counters));
});

Deno.test({
  name: "shim: stop the daemon",
  ignore: !isRoot,
  sanitizeResources: false,
  async fn() {
    if (!shared) return;
    const { mount } = await shared;
    await mount.stop();
    assert.doesNotMatch(mount.log(), /internal error/);
  },
});
