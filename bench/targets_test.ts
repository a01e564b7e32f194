import assert from "node:assert/strict";
import {
  clusterTargetOptions,
  DaemonCpuClock,
  isMounted,
  mountPoints,
  processCpuSeconds,
  setUpTarget,
  skyfsTargetFlags,
  summedCpuClock,
  TargetSkipped,
  tellingLine,
  unescapeMountPath,
} from "./targets.ts";

Deno.test("mountPoints reads field 5 of mountinfo and decodes octal escapes", () => {
  const text = "36 25 0:32 / /tmp/a\\040b rw,relatime - fuse x rw\n" +
    "37 25 0:33 / / rw - ext4 /dev/vda rw\n";
  assert.deepEqual(mountPoints(text), ["/tmp/a b", "/"]);
  assert.equal(unescapeMountPath("/x\\011y\\134z"), "/x\ty\\z");
});

Deno.test("isMounted sees / and not a plain directory", () => {
  assert.equal(isMounted("/"), true);
  assert.equal(isMounted("/no/such/mount/point"), false);
});

Deno.test("tellingLine skips colour codes and backtrace noise and prefers error lines", () => {
  const output =
    'starting\n\x1b[31merror\x1b[0m: Module not found "x"\nmore\n\nStack backtrace:\n   0: <unknown>\n';
  assert.equal(tellingLine(output), `error: Module not found "x"`);
  assert.equal(tellingLine("a\nb\n"), "b");
  assert.equal(tellingLine(""), "(no output)");
});

Deno.test("every skyfs mount of the bench but skyfs-uring's is pinned to /dev/fuse", () => {
  // The bench turns the kernel's FUSE over io_uring on for its run: a mount left at the default
  // (auto) would take the ring, and the skyfs column would measure the same as skyfs-uring.
  const transportOf = (flags: string[]) => {
    const at = flags.lastIndexOf("--transport");
    return at < 0 ? "auto" : flags[at + 1];
  };
  for (const name of ["skyfs", "skyfs-http-off", "skyfs-shim"] as const) {
    assert.equal(transportOf(skyfsTargetFlags(name)), "dev", name);
  }
  assert.equal(transportOf(skyfsTargetFlags("skyfs-uring")), "uring");
  // skyfs-uring is the skyfs mount on the other transport: the same flags otherwise.
  const without = (flags: string[]) =>
    flags.filter((f, i, all) => f !== "--transport" && all[i - 1] !== "--transport");
  assert.deepEqual(without(skyfsTargetFlags("skyfs-uring")), without(skyfsTargetFlags("skyfs")));
  for (const name of ["skyfs-cluster", "skyfs-cluster-etcd"] as const) {
    const options = clusterTargetOptions(name, "/scratch");
    assert.equal(options.nodeEnv?.SKYFS_FUSE_TRANSPORT, "dev", name);
    assert.equal(options.parentDir, "/scratch");
    assert.equal(options.nodes, 2);
  }
  assert.equal(clusterTargetOptions("skyfs-cluster-etcd", "/s").meta, "etcd");
  assert.equal(clusterTargetOptions("skyfs-cluster", "/s").meta, "curp");
});

Deno.test("skyfs-uring is skipped with the switch's one-line reason, nothing mounted", async () => {
  const scratch = await Deno.makeTempDir({ prefix: "skyfs-bench-target-test-" });
  try {
    const reason = "the kernel's FUSE over io_uring is off (enable_uring is N) and the bench " +
      "cannot turn it on: needs root";
    const error = await setUpTarget("skyfs-uring", scratch, { uringUnavailable: reason }).then(
      () => undefined,
      (e) => e,
    );
    assert.ok(error instanceof TargetSkipped, String(error));
    assert.equal(error.state, "failed");
    assert.equal(error.message, `not mounted: ${reason}`);
    assert.deepEqual([...Deno.readDirSync(scratch)], []);
  } finally {
    await Deno.remove(scratch, { recursive: true });
  }
});

Deno.test({
  name: "bindfs and mergerfs targets mount, pass the warm-up and unmount",
  // Mounting FUSE needs /dev/fuse and root here; the tools come from scripts/setup.sh.
  ignore: Deno.uid() !== 0 || !hasCommands(["bindfs", "mergerfs"]),
  fn: async () => {
    const scratch = await Deno.makeTempDir({ prefix: "skyfs-bench-target-test-" });
    try {
      for (const name of ["bindfs", "mergerfs"] as const) {
        const target = await setUpTarget(name, scratch);
        try {
          assert.equal(isMounted(target.dir), true);
          assert.equal(target.report.state, "ok");
          await Deno.writeTextFile(`${target.dir}/hello`, "through fuse");
          const backing = await Deno.readTextFile(`${scratch}/${name}-backing/hello`);
          assert.equal(backing, "through fuse");
        } finally {
          await target.tearDown();
        }
        assert.equal(isMounted(target.dir), false);
      }
    } finally {
      await Deno.remove(scratch, { recursive: true });
    }
  },
});

Deno.test({
  name: "cluster targets start, count the store's proposals and fsyncs, and stop cleanly",
  // A cluster mounts FUSE as root; etcd-server comes from scripts/setup.sh.
  ignore: Deno.uid() !== 0 || !hasCommands(["etcd"]),
  fn: async () => {
    const scratch = await Deno.makeTempDir({ prefix: "skyfs-bench-target-test-" });
    try {
      for (const name of ["skyfs-cluster", "skyfs-cluster-etcd"] as const) {
        const target = await setUpTarget(name, scratch);
        try {
          assert.equal(isMounted(target.dir), true);
          assert.ok(target.storeCounters, `${name} has no store counters`);
          const before = await target.storeCounters();
          await Deno.writeTextFile(`${target.dir}/hello`, "through the cluster");
          const after = await target.storeCounters();
          const sum = (c: typeof before, key: "proposals" | "fsyncs") =>
            Object.values(c.replicas).reduce((total, r) => total + r[key], 0);
          assert.equal(Object.keys(after.replicas).length, name === "skyfs-cluster" ? 3 : 1);
          assert.ok(sum(after, "proposals") > sum(before, "proposals"), JSON.stringify(after));
          assert.ok(sum(after, "fsyncs") > sum(before, "fsyncs"), JSON.stringify(after));
        } finally {
          await target.tearDown();
        }
        assert.equal(isMounted(target.dir), false);
        // The store is down too: nothing answers for its counters any more.
        const gone = await target.storeCounters!().catch(() => undefined);
        assert.ok(gone === undefined || Object.keys(gone.replicas).length === 0);
      }
      assert.deepEqual(
        mountPoints(Deno.readTextFileSync("/proc/self/mountinfo")).filter((m) =>
          m.startsWith(scratch)
        ),
        [],
      );
    } finally {
      await Deno.remove(scratch, { recursive: true });
    }
  },
});

function hasCommands(commands: string[]): boolean {
  const dirs = (Deno.env.get("PATH") ?? "").split(":");
  return commands.every((c) =>
    dirs.some((d) => {
      try {
        return Deno.statSync(`${d}/${c}`).isFile;
      } catch {
        return false;
      }
    })
  );
}

/** A fake /proc/PID: utime+stime in ticks and one schedstat per thread (run time in ns). */
function writeFakeProc(
  root: string,
  pid: number,
  ticks: [number, number],
  threads: [string, number][],
) {
  Deno.removeSync(`${root}/${pid}`, { recursive: true });
  Deno.mkdirSync(`${root}/${pid}/task`, { recursive: true });
  // Fields after the command: state is field 3; utime and stime are fields 14 and 15.
  const after = ["S", ...Array(10).fill("0"), String(ticks[0]), String(ticks[1]), "0", "0"];
  Deno.writeTextFileSync(`${root}/${pid}/stat`, `${pid} (a daemon (x)) ${after.join(" ")}\n`);
  for (const [tid, ns] of threads) {
    Deno.mkdirSync(`${root}/${pid}/task/${tid}`);
    Deno.writeTextFileSync(`${root}/${pid}/task/${tid}/schedstat`, `${ns} 0 0\n`);
  }
}

Deno.test("DaemonCpuClock: nanosecond differences from the threads' schedstat, ticks when a thread ended", () => {
  const root = Deno.makeTempDirSync();
  try {
    Deno.mkdirSync(`${root}/7`);
    writeFakeProc(root, 7, [3, 2], [["7", 40_000_000], ["8", 10_000_000]]);
    assert.equal(processCpuSeconds(7, root), 0.05);
    const clock = new DaemonCpuClock(7, root);
    const first = clock.seconds();
    assert.equal(first, 0.05);
    // 6 us more on one thread, a new thread with 1 us: ticks did not move, the clock does.
    writeFakeProc(root, 7, [3, 2], [["7", 40_006_000], ["8", 10_000_000], ["9", 1_000]]);
    const second = clock.seconds();
    assert.ok(Math.abs((second - first) - 7e-6) < 1e-12, `${second - first}`);
    // Thread 9 ended: its time is gone from the tasks, so the interval is read from the ticks.
    writeFakeProc(root, 7, [4, 3], [["7", 40_007_000], ["8", 10_000_000]]);
    const third = clock.seconds();
    assert.ok(Math.abs((third - second) - 0.02) < 1e-12, `${third - second}`);
    assert.equal(clock.coarseIntervals, 1);
    // And back to nanoseconds once the set of threads is stable again.
    writeFakeProc(root, 7, [4, 3], [["7", 40_009_000], ["8", 10_000_000]]);
    assert.ok(Math.abs((clock.seconds() - third) - 2e-6) < 1e-12);
  } finally {
    Deno.removeSync(root, { recursive: true });
  }
});

Deno.test("DaemonCpuClock reads a real process: this one's CPU moves under a busy loop", () => {
  const clock = new DaemonCpuClock(Deno.pid);
  const before = clock.seconds();
  let x = 0;
  for (let i = 0; i < 5_000_000; i++) x += i % 7;
  assert.ok(x > 0);
  assert.ok(clock.seconds() > before);
});

Deno.test("summedCpuClock: a store's processes summed, one clock each, new pids counted whole", () => {
  const root = Deno.makeTempDirSync();
  try {
    Deno.mkdirSync(`${root}/11`);
    Deno.mkdirSync(`${root}/12`);
    writeFakeProc(root, 11, [1, 0], [["11", 10_000_000]]);
    writeFakeProc(root, 12, [2, 0], [["12", 20_000_000]]);
    const pids = [11, 12];
    const clock = summedCpuClock(() => pids, root);
    const first = clock();
    assert.ok(Math.abs(first - 0.03) < 1e-12, `${first}`);
    // 5 us on one replica, 7 us on the other: 12 us in all.
    writeFakeProc(root, 11, [1, 0], [["11", 10_005_000]]);
    writeFakeProc(root, 12, [2, 0], [["12", 20_007_000]]);
    const second = clock();
    assert.ok(Math.abs((second - first) - 12e-6) < 1e-12, `${second - first}`);
    // A process that is gone makes the reading throw: the phase gets no figure.
    pids.push(13);
    assert.throws(() => clock());
  } finally {
    Deno.removeSync(root, { recursive: true });
  }
});
