/**
 * What skyfs negotiates with the kernel, seen from the requests the kernel actually sends: 1 MiB
 * writes (max_write), readdirplus priming the dentry cache, keep_cache serving a second read from
 * the page cache, cached attributes, and passthrough keeping reads and writes away from the
 * daemon. The daemon prints its per-operation request counts at unmount with SKYFS_DEBUG=1.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { PYTHON, run, startMount, targetKinds } from "./_harness.ts";

const skip = !targetKinds().includes("skyfs");
Deno.env.set("SKYFS_DEBUG", "1");

/** Mount, run `body` against the mountpoint, unmount, and return the request counts. */
async function countRequests(
  args: string[],
  body: (mountpoint: string) => Promise<void>,
  dataDir?: string,
): Promise<Map<string, number>> {
  const mount = await startMount({ extraArgs: args, dataDir });
  try {
    await body(mount.mountpoint);
  } finally {
    await mount.stop();
  }
  const line = mount.stderr().split("\n").findLast((l) => l.includes("skyfs: requests:"));
  assert.ok(line, `the daemon printed no request counts:\n${mount.stderr()}`);
  const counts = new Map<string, number>();
  for (const part of line.replace(/.*requests: /, "").split(";")[0].split(", ")) {
    const [name, count] = part.split(" ");
    counts.set(name, Number(count));
  }
  return counts;
}

async function python(code: string, ...args: string[]): Promise<void> {
  await run(PYTHON, ["-c", code, ...args]);
}

const options = { ignore: skip, sanitizeResources: false, sanitizeOps: false };

Deno.test({
  name: "fuse: one 4 MiB write() reaches the daemon as four 1 MiB WRITEs (max_write)",
  ...options,
  async fn() {
    const counts = await countRequests(["--passthrough", "off"], async (mp) => {
      await python(
        "import os,sys; fd=os.open(sys.argv[1], os.O_WRONLY|os.O_CREAT, 0o644); " +
          "assert os.write(fd, b'x' * (4 << 20)) == 4 << 20; os.close(fd)",
        join(mp, "f"),
      );
    });
    assert.equal(counts.get("WRITE"), 4, `requests: ${[...counts]}`);
  },
});

Deno.test({
  name: "fuse: ls -l of 60 new entries after a remount uses READDIRPLUS, not a LOOKUP each",
  ...options,
  async fn() {
    const dataDir = await Deno.makeTempDir({ prefix: "skyfs-fuse-test-" });
    try {
      await countRequests([], async (mp) => {
        await python(
          "import os,sys\nfor i in range(60): open(os.path.join(sys.argv[1], 'f%d' % i), 'w').close()",
          mp,
        );
      }, dataDir);
      const counts = await countRequests([], async (mp) => {
        await run("ls", ["-l", mp]);
      }, dataDir);
      assert.ok((counts.get("READDIRPLUS") ?? 0) >= 1, `requests: ${[...counts]}`);
      assert.ok((counts.get("LOOKUP") ?? 0) < 10, `requests: ${[...counts]}`);
    } finally {
      await Deno.remove(dataDir, { recursive: true });
    }
  },
});

Deno.test({
  name: "fuse: a second read of an unchanged file is served from the page cache (keep_cache)",
  ...options,
  async fn() {
    const dataDir = await Deno.makeTempDir({ prefix: "skyfs-fuse-test-" });
    try {
      // Written in one mount, read in fresh ones: the kernel starts with no cached pages.
      await countRequests(["--passthrough", "off"], async (mp) => {
        await Deno.writeFile(join(mp, "f"), new Uint8Array(1 << 20).fill(7));
      }, dataDir);
      const readTimes = async (times: number) => {
        const counts = await countRequests(["--passthrough", "off"], async (mp) => {
          for (let i = 0; i < times; i++) {
            await run("sh", ["-c", `cat ${join(mp, "f")} > /dev/null`]);
          }
        }, dataDir);
        return counts.get("READ") ?? 0;
      };
      const once = await readTimes(1);
      const thrice = await readTimes(3);
      assert.ok(once > 0, "the first read must reach the daemon");
      assert.equal(thrice, once, "later reads of an unchanged file must not reach the daemon");
    } finally {
      await Deno.remove(dataDir, { recursive: true });
    }
  },
});

Deno.test({
  name: "fuse: with passthrough, reads and writes never reach the daemon",
  ...options,
  async fn() {
    const counts = await countRequests(["--passthrough", "on"], async (mp) => {
      await python(
        "import os,sys; fd=os.open(sys.argv[1], os.O_RDWR|os.O_CREAT, 0o644)\n" +
          "for i in range(200): os.pwrite(fd, b'y' * 4096, i * 4096)\n" +
          "for i in range(200): assert os.pread(fd, 4096, i * 4096) == b'y' * 4096\n" +
          "os.close(fd)",
        join(mp, "f"),
      );
    });
    assert.equal(counts.get("WRITE") ?? 0, 0, `requests: ${[...counts]}`);
    assert.equal(counts.get("READ") ?? 0, 0, `requests: ${[...counts]}`);
    // HANDLE_KILLPRIV_V2: no security.capability lookup per write.
    assert.ok((counts.get("GETXATTR") ?? 0) < 5, `requests: ${[...counts]}`);
  },
});

Deno.test({
  name: "fuse: a create + 1 KiB + close costs five requests (src/fuse/README.md, issue 17)",
  ...options,
  async fn() {
    const files = 100;
    const counts = await countRequests(["--passthrough", "on"], async (mp) => {
      await python(
        "import os,sys\nd=os.path.join(sys.argv[1], 'd'); os.mkdir(d)\n" +
          "for i in range(int(sys.argv[2])):\n" +
          "  fd=os.open(os.path.join(d, 'f%d' % i), os.O_CREAT|os.O_EXCL|os.O_WRONLY, 0o644)\n" +
          "  os.write(fd, b'x' * 1024); os.close(fd)",
        mp,
        String(files),
      );
    });
    const get = (name: string) => counts.get(name) ?? 0;
    const shown = `requests: ${[...counts]}`;
    assert.equal(get("CREATE"), files, shown);
    assert.equal(get("RELEASE"), files, shown);
    assert.equal(get("FLUSH"), 0, shown); // FOPEN_NOFLUSH
    assert.equal(get("WRITE"), 0, shown); // passthrough
    // One each per create: the new name's LOOKUP, the directory's GETATTR (default_permissions
    // after fuse_dir_changed), the first write's security.capability; a few for the mount and
    // the mkdir.
    for (const name of ["LOOKUP", "GETATTR", "GETXATTR"]) {
      assert.ok(get(name) <= files + 4, `${name}: ${shown}`);
    }
    const total = [...counts.values()].reduce((a, b) => a + b, 0);
    assert.ok(total <= 5 * files + 12, shown);
  },
});

Deno.test({
  name: "fuse: listings of an unchanged directory come from the kernel cache; changes show at once",
  ...options,
  async fn() {
    let listings: string[][] = [];
    const counts = await countRequests([], async (mp) => {
      for (let i = 0; i < 30; i++) await Deno.writeTextFile(join(mp, `f${i}`), "x");
      const list = () => [...Deno.readDirSync(mp)].map((e) => e.name).sort();
      for (let i = 0; i < 50; i++) list();
      await Deno.writeTextFile(join(mp, "new"), "y");
      await Deno.remove(join(mp, "f3"));
      await Deno.rename(join(mp, "f4"), join(mp, "g4"));
      listings = [list(), list()];
    });
    const reads = (counts.get("READDIR") ?? 0) + (counts.get("READDIRPLUS") ?? 0);
    assert.ok(reads < 20, `50 listings of an unchanged directory: requests ${[...counts]}`);
    for (const names of listings) {
      assert.ok(names.includes("new") && names.includes("g4"), `listing: ${names}`);
      assert.ok(!names.includes("f3") && !names.includes("f4"), `listing: ${names}`);
    }
  },
});

// Lists through libc's opendir/readdir/telldir/seekdir (getdents64 of 32 KiB: several READDIR
// requests per listing here), checking names, d_type and d_ino against lstat. Needs root (it
// drops the page cache so that offsets reach the daemon, not the kernel's cached listing).
const listingChecks = String.raw`
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
class Dirent(ctypes.Structure):
    _fields_ = [("d_ino", ctypes.c_uint64), ("d_off", ctypes.c_int64), ("d_reclen", ctypes.c_ushort),
                ("d_type", ctypes.c_ubyte), ("d_name", ctypes.c_char * 256)]
libc.opendir.restype = ctypes.c_void_p
libc.opendir.argtypes = [ctypes.c_char_p]
libc.readdir.restype = ctypes.POINTER(Dirent)
libc.readdir.argtypes = [ctypes.c_void_p]
libc.telldir.restype = ctypes.c_long
libc.telldir.argtypes = [ctypes.c_void_p]
libc.seekdir.argtypes = [ctypes.c_void_p, ctypes.c_long]
libc.rewinddir.argtypes = [ctypes.c_void_p]
libc.closedir.argtypes = [ctypes.c_void_p]
top = sys.argv[1]
d = os.path.join(top, "d")
os.mkdir(d)
names = set()
for i in range(1500):
    # 6 to 100 bytes, some not ASCII
    name = f"{i:05d}-" + ("é" if i % 7 == 0 else "") + "x" * (i % 90)
    open(os.path.join(d, name), "w").close(); names.add(name)
for i in range(20):
    os.mkdir(os.path.join(d, f"sub{i}")); names.add(f"sub{i}")
    os.symlink("target", os.path.join(d, f"link{i}")); names.add(f"link{i}")
DT = {0o100000: 8, 0o040000: 4, 0o120000: 10}
def entry(p):
    e = p.contents
    return e.d_name.decode(), e.d_type, e.d_ino
def read(h, n=None):
    out = []
    while n is None or len(out) < n:
        p = libc.readdir(h)
        if not p: break
        out.append(entry(p))
    return out
def drop():
    # The kernel keeps a listing in the directory's page cache and serves offsets from it once
    # complete; dropping it sends the next getdents to the daemon at its offset.
    with open("/proc/sys/vm/drop_caches", "w") as f: f.write("1\n")
def check(listing, want):
    got = [n for n, _, _ in listing if n not in (".", "..")]
    assert len(got) == len(set(got)), f"duplicates: {len(got) - len(set(got))}"
    assert set(got) == want, f"missing {sorted(want - set(got))[:5]}, extra {sorted(set(got) - want)[:5]}"
    for n, t, ino in listing:
        if n in (".", ".."): continue
        st = os.lstat(os.path.join(d, n))
        assert ino == st.st_ino and t == DT[st.st_mode & 0o170000], (n, t, ino, st)
# 1. a whole listing
h = libc.opendir(d.encode())
check(read(h), names)
# 2. telldir/seekdir back into the middle: the same entries again
libc.rewinddir(h)
head = read(h, 300)
pos = libc.telldir(h)
tail = read(h)
drop()
libc.seekdir(h, pos)
assert read(h) == tail, "seekdir to telldir's position gave other entries"
libc.closedir(h)
# 3. the directory changes during a listing: what was there throughout comes exactly once
drop()
h = libc.opendir(d.encode())
first = read(h, 400)
seen = {n for n, _, _ in first}
unread = sorted(names - seen)
gone = set(unread[:50]) | set(sorted(seen - {".", ".."})[:50])
moved = unread[100:120]
for n in gone: os.unlink(os.path.join(d, n))
for n in moved: os.rename(os.path.join(d, n), os.path.join(d, "ren-" + n))
for i in range(50): open(os.path.join(d, f"new{i}"), "w").close()
rest = read(h)
got = [n for n, _, _ in first + rest if n not in (".", "..")]
assert len(got) == len(set(got)), f"duplicates during changes: {len(got) - len(set(got))}"
kept = names - gone - set(moved)
assert kept <= set(got), f"lost during changes: {sorted(kept - set(got))[:5]}"
names = kept | {"ren-" + n for n in moved} | {f"new{i}" for i in range(50)}
# 4. rewinddir and a new listing show the changes at once (no stale listing)
libc.rewinddir(h)
check(read(h), names)
libc.closedir(h)
h = libc.opendir(d.encode())
check(read(h), names)
libc.closedir(h)
print("ok")
`;

Deno.test({
  name:
    "fuse: listings across READDIR offsets: telldir/seekdir, changes during a listing, none stale",
  ...options,
  async fn() {
    const counts = await countRequests([], (mp) => python(listingChecks, mp));
    assert.ok((counts.get("READDIR") ?? 0) >= 4, `requests: ${[...counts]}`);
  },
});

Deno.test({
  name: "fuse: an idle /dev/fuse reader parks on the JS thread (fuse.park_us), and not with 0",
  ...options,
  async fn() {
    // Lookups 2 ms apart: each request comes after the 50 us idle spin has ended and within
    // the 10 ms park, or, with park_us 0, in the thread-pool park.
    const statLoop = "import os,sys,time\n" +
      "for i in range(200):\n  os.stat(sys.argv[1]); time.sleep(0.002)";
    const parked = async (env: Record<string, string>) => {
      const mount = await startMount({ extraArgs: ["--transport", "dev"], env });
      try {
        await python(
          "import os,sys; os.mkdir(os.path.join(sys.argv[1], 'd'))",
          mount.mountpoint,
        );
        // --cache-seconds is not 0 here, so stat a new name each time: a LOOKUP per stat.
        await python(
          statLoop.replace("os.stat(sys.argv[1])", "os.path.exists(sys.argv[1] + '/n%d' % i)"),
          join(mount.mountpoint, "d"),
        );
      } finally {
        await mount.stop();
      }
      const line = mount.stderr().split("\n").findLast((l) => l.includes("skyfs: requests:"));
      const match = line?.match(/woken on the JS thread (\d+) \(epoll fds (-?\d+)\)/);
      assert.ok(match, `no park counts in the daemon's output:\n${mount.stderr()}`);
      return { woken: Number(match[1]), epollFds: Number(match[2]) };
    };
    const on = await parked({ SKYFS_FUSE_PARK_US: "10000" });
    assert.ok(on.epollFds >= 1, `no epoll fd of the event loop found: ${JSON.stringify(on)}`);
    // Most of the 200 LOOKUPs (and the mkdir's requests) wake the reader on its own thread.
    assert.ok(on.woken >= 100, `only ${on.woken} of 200 requests found by the park`);
    const off = await parked({ SKYFS_FUSE_PARK_US: "0" });
    assert.equal(off.woken, 0);
  },
});

Deno.test({
  name: "fuse: the idle spin waits for the next request in a ppoll, and not with fuse.spin_us 0",
  ...options,
  async fn() {
    // The client on one CPU, the daemon on another (else the client's request is queued before
    // the daemon runs again and no spin is needed); a LOOKUP every 100 us, inside a 10 ms spin.
    const cpus = [
      ...Deno.readTextFileSync("/proc/self/status").matchAll(/Cpus_allowed_list:\s*(\S+)/g),
    ];
    const allowed = cpus[0]?.[1] ?? "0";
    if (!/[,-]/.test(allowed)) return; // one CPU: nothing to measure
    const lookups = "import os,sys,time\n" +
      "os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[-1]})\n" +
      "for i in range(500):\n" +
      "  os.path.exists(sys.argv[1] + '/n%d' % i)\n" +
      "  t = time.perf_counter()\n" +
      "  while time.perf_counter() - t < 1e-4: pass";
    const waits = async (env: Record<string, string>) => {
      const mount = await startMount({ extraArgs: ["--transport", "dev"], env });
      try {
        await python("import os,sys; os.mkdir(os.path.join(sys.argv[1], 'd'))", mount.mountpoint);
        const first = allowed.split(/[,-]/)[0];
        await run("taskset", ["-a", "-p", "-c", first, String(mount.pid())]);
        await python(lookups, join(mount.mountpoint, "d"));
      } finally {
        await mount.stop();
      }
      const line = mount.stderr().split("\n").findLast((l) => l.includes("skyfs: requests:"));
      const match = line?.match(/idle spin waits (\d+) \(ended by a request (\d+)\)/);
      assert.ok(match, `no idle spin counts in the daemon's output:\n${mount.stderr()}`);
      return { waits: Number(match[1]), hits: Number(match[2]) };
    };
    const on = await waits({ SKYFS_FUSE_SPIN_US: "10000" });
    assert.ok(
      on.hits >= 250,
      `only ${on.hits} of 500 lookups ended a spin's wait: ${JSON.stringify(on)}`,
    );
    const off = await waits({ SKYFS_FUSE_SPIN_US: "0" });
    assert.deepEqual(off, { waits: 0, hits: 0 });
  },
});

/** The daemon's fds open on local data files of `mount`, by local path (" (deleted)" cut). */
function daemonLocalFds(pid: number, dataDir: string): string[] {
  const found: string[] = [];
  for (const entry of Deno.readDirSync(`/proc/${pid}/fd`)) {
    try {
      const target = Deno.readLinkSync(`/proc/${pid}/fd/${entry.name}`);
      if (target.startsWith(`${dataDir}/data/`)) found.push(target.replace(/ \(deleted\)$/, ""));
    } catch {
      // closed meanwhile
    }
  }
  return found;
}

const localOf = (dataDir: string, ino: number) =>
  `${dataDir}/data/${(ino % 256).toString(16).padStart(2, "0")}/${ino.toString(16)}`;

Deno.test({
  name:
    "fuse: a file opened again after its close reuses the daemon's local fd and backing id; a cached open meanwhile works; an unlink closes them",
  ...options,
  async fn() {
    const mount = await startMount({ extraArgs: ["--passthrough", "on"] });
    let stopped = false;
    try {
      const mp = mount.mountpoint;
      const pid = mount.pid()!;
      const f = join(mp, "f");
      await python(
        "import sys\nfor i in range(20):\n  with open(sys.argv[1], 'ab') as h: h.write(b'x' * 10)\n" +
          "for i in range(20):\n  with open(sys.argv[1], 'rb') as h: assert h.read() == b'x' * 200",
        f,
      );
      const local = localOf(mount.dataDir, (await Deno.stat(f)).ino!);
      assert.deepEqual(daemonLocalFds(pid, mount.dataDir), [local], "kept after the close");
      // A set-uid file takes cached opens (its writes must drop the bits): after a kept
      // passthrough id, a cached open, a shared writable mapping and a write() still work, and
      // passthrough comes back with the bits gone.
      const g = join(mp, "g");
      await python(
        "import os,sys,mmap\np=sys.argv[1]\nopen(p, 'wb').write(b'hello world')\n" +
          "os.chmod(p, 0o4755)\n" +
          "with open(p, 'r+b') as h:\n  m = mmap.mmap(h.fileno(), 0)\n  m[0:5] = b'HELLO'\n" +
          "  m.flush(); m.close(); h.seek(6); h.write(b'WORLD')\n" +
          "assert open(p, 'rb').read() == b'HELLO WORLD', open(p, 'rb').read()\n" +
          "os.chmod(p, 0o644)\n" +
          "with open(p, 'r+b') as h: h.seek(11); h.write(b'!')\n" +
          "assert open(p, 'rb').read() == b'HELLO WORLD!'\nassert os.stat(p).st_size == 12",
        g,
      );
      // The unlinks free the files: no fd of the daemon holds them after the kernel's FORGET.
      await Deno.remove(f);
      await Deno.remove(g);
      let left = daemonLocalFds(pid, mount.dataDir);
      for (let i = 0; i < 100 && left.length > 0; i++) {
        await new Promise((r) => setTimeout(r, 20));
        left = daemonLocalFds(pid, mount.dataDir);
      }
      assert.deepEqual(left, [], "the unlinked files' fds are closed");
      await mount.stop();
      stopped = true;
      const line = mount.stderr().split("\n").findLast((l) => l.includes("backing ids:")) ?? "";
      const [opened, , reused] =
        (line?.match(/backing ids: (\d+) opened, (\d+) closed, (\d+) reused/) ?? [])
          .slice(1).map(Number);
      // f's create and g's create register a backing file; f's 39 reopens and g's reopens
      // after the chmod take the kept ids.
      assert.equal(opened, 2, line);
      assert.ok(reused >= 40, line);
    } finally {
      if (!stopped) await mount.stop();
      await mount.dispose();
    }
  },
});
