/**
 * FUSE over io_uring (issue 17 point 1, src/fuse/transport_uring.ts): requests reach the daemon
 * through ring entries and replies go back as COMMIT_AND_FETCH submissions; FORGET and
 * notifications keep using /dev/fuse; `fuse.transport = "uring"` refuses with one line when the
 * kernel's switch is off, and "auto" falls back to /dev/fuse with one info line. Root only (the
 * tests write /sys/module/fuse/parameters/enable_uring; the last one puts it back as it was when
 * the file started, so the test files after this one in the same run see the switch unchanged).
 *
 * The POSIX, differential and crash suites run on the ring too: `scripts/test.sh tests-uring`
 * (SKYFS_TEST_FUSE_TRANSPORT=uring).
 * @module
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { FuseRing, sharedRingOptions } from "../src/fuse/transport_uring.ts";
import { openUringEngine } from "../src/io/uring.ts";
import {
  IORING_SETUP_COOP_TASKRUN,
  IORING_SETUP_SQE128,
  IORING_SETUP_TASKRUN_FLAG,
} from "../src/io/uring_native.ts";
import { isSkyfsMounted, makeTempDir, PYTHON, run, runSkyfs, startMount } from "./_harness.ts";

const ENABLE = "/sys/module/fuse/parameters/enable_uring";
/** The switch as this file found it (undefined: no such file; the tests that need it fail). */
const ENABLED_AT_START = (() => {
  try {
    return Deno.readTextFileSync(ENABLE).trim() === "Y";
  } catch {
    return undefined;
  }
})();

function setEnabled(on: boolean): void {
  // A failure here (not root, a kernel without CONFIG_FUSE_IO_URING) fails the test.
  Deno.writeTextFileSync(ENABLE, on ? "1" : "0");
  assert.equal(Deno.readTextFileSync(ENABLE).trim(), on ? "Y" : "N");
}

/** The io_uring instances a process holds (fds naming anon_inode:[io_uring]). */
function ioUringFds(pid: number): number {
  let count = 0;
  for (const entry of Deno.readDirSync(`/proc/${pid}/fd`)) {
    try {
      if (Deno.readLinkSync(`/proc/${pid}/fd/${entry.name}`) === "anon_inode:[io_uring]") count++;
    } catch { /* closed meanwhile */ }
  }
  return count;
}

const WORKLOAD = `
import os, sys
root = sys.argv[1]
os.mkdir(os.path.join(root, "d"))
for i in range(200):
    p = os.path.join(root, "d", "f%03d" % i)
    with open(p, "w") as f:
        f.write("x" * i)
    os.stat(p)
    os.rename(p, p + ".r")
names = sorted(os.listdir(os.path.join(root, "d")))
assert len(names) == 200 and names[0] == "f000.r", names[:3]
data = os.urandom(3 << 20)
with open(os.path.join(root, "big"), "wb") as f:
    f.write(data)
with open(os.path.join(root, "big"), "rb") as f:
    assert f.read() == data
for name in names[:100]:
    os.unlink(os.path.join(root, "d", name))
print("ok")
`;

Deno.test({
  name: "fuse uring: requests come through the ring; FORGET and notifications through /dev/fuse",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    setEnabled(true);
    const mount = await startMount({
      env: { SKYFS_FUSE_TRANSPORT: "uring", SKYFS_DEBUG: "1" },
      extraArgs: ["--passthrough", "off"], // so READ and WRITE come to the daemon too
    });
    try {
      const out = await run(PYTHON, ["-c", WORKLOAD, mount.mountpoint]);
      assert.equal(out.stdout.trim(), "ok");
      // One ring in the daemon: the FUSE entries ride on the I/O engine's (a turn's replies and
      // disk I/O go to the kernel in one io_uring_enter), not on a second ring beside it.
      assert.equal(ioUringFds(mount.pid()!), 1);
      // Drop the kernel's dentries and inodes: the kernel sends FORGETs, which never use the ring.
      await Deno.writeTextFile("/proc/sys/vm/drop_caches", "2");
      await run(PYTHON, [
        "-c",
        "import os, sys; print(len(os.listdir(sys.argv[1])))",
        join(
          mount.mountpoint,
          "d",
        ),
      ]);
    } finally {
      await mount.stop();
    }
    const log = mount.stderr();
    assert.match(
      log,
      /skyfs: FUSE transport io_uring, \d+ queues? x 8 entries \(fuse.uring_depth\), on the I\/O engine's ring/,
    );
    const line = log.split("\n").findLast((l) => l.includes("skyfs: requests:"));
    assert.ok(line, `no request counts in the daemon's output:\n${log}`);
    const ring = line.match(
      /transport uring; .* ring: (\d+) requests, (\d+) enters, (\d+) \/dev\/fuse/,
    );
    assert.ok(ring, line);
    const [ringRequests, , devWakeups] = ring.slice(1).map(Number);
    const total = [...line.matchAll(/([A-Z_0-9]+) (\d+)/g)]
      .filter(([, name]) => !["INIT", "FORGET", "BATCH_FORGET", "INTERRUPT"].includes(name))
      .reduce((sum, [, , n]) => sum + Number(n), 0);
    // Every request but INIT and the forgets came through ring entries.
    assert.equal(ringRequests, total, line);
    assert.ok(ringRequests > 1000, line);
    assert.match(line, /\b(BATCH_)?FORGET \d+/, line);
    assert.ok(devWakeups >= 1, line);
  },
});

Deno.test({
  name: 'fuse uring: fuse.transport = "uring" with enable_uring off is one line and exit 1',
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const base = await makeTempDir("uring-off");
    const mountpoint = join(base, "mnt");
    await Deno.mkdir(mountpoint);
    setEnabled(false);
    try {
      const result = await runSkyfs(["mount", mountpoint, "--data", join(base, "data")], {
        env: { SKYFS_FUSE_TRANSPORT: "uring" },
      });
      assert.equal(result.code, 1, result.stderr);
      const lines = result.stderr.trim().split("\n").filter((l) => l.includes("fuse.transport"));
      assert.deepEqual(lines, [
        'skyfs: fuse.transport = "uring" cannot work: the kernel\'s FUSE over io_uring is off: ' +
        "run `echo 1 > /sys/module/fuse/parameters/enable_uring` as root, or set " +
        'fuse.transport = "dev"',
      ]);
      assert.equal(isSkyfsMounted(mountpoint), false);
    } finally {
      setEnabled(true);
      await Deno.remove(base, { recursive: true });
    }
  },
});

Deno.test({
  name: 'fuse uring: "auto" with enable_uring off serves /dev/fuse after one info line',
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    setEnabled(false);
    let mount;
    try {
      mount = await startMount({ env: { SKYFS_FUSE_TRANSPORT: "auto", SKYFS_DEBUG: "1" } });
    } finally {
      setEnabled(true);
    }
    try {
      await Deno.writeTextFile(join(mount.mountpoint, "a"), "hello");
      assert.equal(await Deno.readTextFile(join(mount.mountpoint, "a")), "hello");
    } finally {
      await mount.stop();
    }
    const lines = mount.stderr().split("\n").filter((l) => l.includes("FUSE transport"));
    assert.deepEqual(lines, [
      "skyfs: FUSE transport /dev/fuse (io_uring unavailable: the kernel's FUSE over io_uring " +
      "is off: run `echo 1 > /sys/module/fuse/parameters/enable_uring` as root, or set " +
      'fuse.transport = "dev")',
    ]);
    assert.match(mount.stderr(), /transport dev; parked waits/);
  },
});

const LOCK_WAIT = `
import fcntl, os, signal, sys, time
path = sys.argv[1]
holder = open(path, "w")
fcntl.lockf(holder, fcntl.LOCK_EX)
pid = os.fork()
if pid == 0:
    class Alarm(Exception):
        pass
    def ring(*_):
        raise Alarm()  # a handler that returns would make Python retry the fcntl (PEP 475)
    signal.signal(signal.SIGALRM, ring)
    f = open(path, "r+")
    signal.alarm(1)
    start = time.monotonic()
    try:
        # An OFD lock: not owned by the parent's process, so it waits.
        fcntl.fcntl(f, 38, __import__("struct").pack("hhqqi", fcntl.F_WRLCK, 0, 0, 0, 0))
        os._exit(3)  # got the lock: the holder's lock did not count
    except Alarm:
        os._exit(0 if time.monotonic() - start < 8 else 4)
    except OSError as e:
        print("child:", e, flush=True)
        os._exit(5)
_, status = os.waitpid(pid, 0)
print("child exit", os.waitstatus_to_exitcode(status))
`;

Deno.test({
  name: "fuse uring: a lock wait on a cluster node ends with EINTR on a signal (INTERRUPT)",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    setEnabled(true);
    // Locks are taken in the daemon only on a cluster node (src/fuse/README.md, Locks).
    const mount = await startMount({
      meta: "curp",
      env: { SKYFS_FUSE_TRANSPORT: "uring", SKYFS_DEBUG: "1" },
    });
    try {
      const out = await run(PYTHON, ["-c", LOCK_WAIT, join(mount.mountpoint, "locked")]);
      assert.equal(out.stdout.trim(), "child exit 0", out.stdout + out.stderr);
    } finally {
      await mount.stop();
    }
    const line = mount.stderr().split("\n").findLast((l) => l.includes("skyfs: requests:")) ?? "";
    assert.match(line, /\bINTERRUPT [1-9]/, mount.stderr());
    assert.match(line, /transport uring/, line);
  },
});

const BUSY = `
import os, sys, threading, time
root = sys.argv[1]
stop = time.monotonic() + 4
def work(n):
    i = 0
    while time.monotonic() < stop:
        p = os.path.join(root, "t%d-%d" % (n, i % 50))
        try:
            with open(p, "w") as f:
                f.write("y" * 4096)
            os.stat(p)
            os.unlink(p)
        except OSError:
            pass  # the mount went away under us: expected
        i += 1
threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
for t in threads: t.start()
for t in threads: t.join()
print("done")
`;

// On /dev/fuse closing the fd ends the connection; on the ring the waiting entries hold the file,
// so the daemon must cancel them (FuseRing.requestStop): both transports, same test.
for (const transport of ["uring", "dev"]) {
  Deno.test({
    name: `fuse ${transport}: SIGTERM with requests in flight exits 0, unmounts, no client hangs`,
    sanitizeResources: false,
    sanitizeOps: false,
    async fn() {
      setEnabled(true);
      const mount = await startMount({
        env: { SKYFS_FUSE_TRANSPORT: transport },
        extraArgs: ["--passthrough", "off"],
      });
      const client = new Deno.Command(PYTHON, {
        args: ["-c", BUSY, mount.mountpoint],
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      let clientOut: Deno.CommandOutput | undefined;
      try {
        await new Promise((resolve) => setTimeout(resolve, 1000));
        await mount.stop(); // asserts exit 0 and that the mount is gone
      } finally {
        // The client ends by its own clock (4 s); a request left unanswered would hang it.
        const timer = setTimeout(() => client.kill("SIGKILL"), 20_000);
        clientOut = await client.output();
        clearTimeout(timer);
      }
      assert.equal(new TextDecoder().decode(clientOut.stdout).trim(), "done");
      assert.equal(clientOut.code, 0, new TextDecoder().decode(clientOut.stderr));
    },
  });
}

Deno.test({
  name: "fuse uring: the ring is COOP_TASKRUN with TASKRUN_FLAG (no IPI per request)",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    setEnabled(true);
    const ring = FuseRing.open({ depth: 1, payloadBytes: 4096 });
    try {
      assert.equal(ring.setup, "coop");
      const flags = ring.setupFlags();
      assert.ok(flags & IORING_SETUP_COOP_TASKRUN, `setup flags ${flags.toString(16)}`);
      assert.ok(flags & IORING_SETUP_TASKRUN_FLAG, `setup flags ${flags.toString(16)}`);
    } finally {
      await ring.close();
    }
  },
});

Deno.test({
  name:
    "fuse uring: on the engine's ring (as a mount opens it): SQE128, COOP_TASKRUN, TASKRUN_FLAG",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    setEnabled(true);
    const io = openUringEngine({ queueDepth: 8, ...sharedRingOptions(1) });
    try {
      const ring = FuseRing.open({ depth: 1, payloadBytes: 4096, engine: io });
      try {
        assert.ok(ring.shared);
        assert.equal(ring.setup, "coop");
        assert.match(ring.describe(), /on the I\/O engine's ring$/);
        const flags = ring.setupFlags();
        for (
          const flag of [IORING_SETUP_SQE128, IORING_SETUP_COOP_TASKRUN, IORING_SETUP_TASKRUN_FLAG]
        ) {
          assert.ok(flags & flag, `setup flags ${flags.toString(16)} lack ${flag.toString(16)}`);
        }
        // The engine took it: a second FUSE ring gets a ring of its own.
        const own = FuseRing.open({ depth: 1, payloadBytes: 4096, engine: io });
        assert.equal(own.shared, false);
        await own.close();
      } finally {
        await ring.close();
      }
    } finally {
      await io.shutdown();
    }
  },
});

Deno.test({
  name: "fuse uring: the kernel's switch is put back as this file found it",
  ignore: ENABLED_AT_START === undefined,
  fn() {
    setEnabled(ENABLED_AT_START!);
  },
});
