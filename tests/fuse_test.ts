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
