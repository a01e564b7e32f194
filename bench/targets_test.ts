import assert from "node:assert/strict";
import {
  clusterTargetOptions,
  isMounted,
  mountPoints,
  setUpTarget,
  skyfsTargetFlags,
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
