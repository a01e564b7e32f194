import assert from "node:assert/strict";
import { buildMetaWorker, expectedPhases, measurementsFromWorker, runMeta } from "./meta.ts";

Deno.test("measurementsFromWorker turns phase lines into ops/s rows", () => {
  const rows = measurementsFromWorker(
    `{"phase":"create","ops":100,"seconds":0.5}\n{"phase":"stat","ops":100,"seconds":0.01}\n`,
    { layout: "flat", workers: 4 },
    "ext4",
  );
  assert.deepEqual(rows.map((m) => [m.job, m.family, m.value]), [
    ["meta-flat-create-w4", "meta-flat", 200],
    ["meta-flat-stat-w4", "meta-flat", 10000],
  ]);
});

Deno.test("expectedPhases adds mkdir/rmdir for trees and stat-cold only when caches can drop", () => {
  assert.deepEqual(expectedPhases("flat", false), [
    "create",
    "stat",
    "open-close",
    "readdir",
    "rename",
    "unlink",
  ]);
  const tree = expectedPhases("tree", true);
  assert.equal(tree[0], "mkdir");
  assert.equal(tree[tree.length - 1], "rmdir");
  assert.ok(tree.includes("stat-cold"));
});

Deno.test("meta_worker compiles and measures every phase on a real directory", async () => {
  const binary = await buildMetaWorker();
  const dir = await Deno.makeTempDir({ prefix: "skyfs-bench-meta-test-" });
  try {
    for (const run of [{ layout: "flat", workers: 2 }, { layout: "tree", workers: 3 }] as const) {
      const rows = await runMeta(run, "ext4", {
        binary,
        dir,
        files: 130,
        fileBytes: 100,
        dropCaches: false,
        env: {},
        timeoutMs: 60_000,
      });
      assert.deepEqual(
        rows.map((m) => m.job),
        expectedPhases(run.layout, false).map((p) => `meta-${run.layout}-${p}-w${run.workers}`),
      );
      for (const m of rows) assert.ok(m.value !== null && m.value > 0, `${m.job}: ${m.error}`);
      const create = rows.find((m) => m.job.includes("-create-"))!;
      assert.equal(create.details?.ops, 130);
      if (run.layout === "tree") {
        // mkdir and rmdir time as many operations as the file phases (64 leaves + 66 more), not
        // just the 64 leaves: a 64-operation phase is a few milliseconds, moved 2-10x by one stall.
        for (const phase of ["mkdir", "rmdir"]) {
          const row = rows.find((m) => m.job === `meta-tree-${phase}-w3`)!;
          assert.equal(row.details?.ops, 130, phase);
        }
      }
    }
    // Fewer files than leaves: the phases still make and remove every leaf.
    const small = await runMeta({ layout: "tree", workers: 2 }, "ext4", {
      binary,
      dir,
      files: 10,
      fileBytes: 0,
      dropCaches: false,
      env: {},
      timeoutMs: 60_000,
    });
    for (const phase of ["mkdir", "rmdir"]) {
      assert.equal(small.find((m) => m.job === `meta-tree-${phase}-w2`)?.details?.ops, 64, phase);
    }
    // The worker cleans up after itself, so the directory is empty again.
    assert.deepEqual([...Deno.readDirSync(dir)], []);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a failing meta_worker run reports every phase as an error with the reason", async () => {
  const binary = await buildMetaWorker();
  const rows = await runMeta({ layout: "flat", workers: 1 }, "bindfs", {
    binary,
    dir: "/proc/skyfs-no-such-dir",
    files: 10,
    fileBytes: 0,
    dropCaches: false,
    env: {},
    timeoutMs: 10_000,
  });
  assert.equal(rows.length, expectedPhases("flat", false).length);
  for (const m of rows) {
    assert.equal(m.value, null);
    assert.ok(m.error && m.error.length > 0);
  }
});

Deno.test("measurementsFromWorker skips --pause lines and adds each phase's store cost", () => {
  const rows = measurementsFromWorker(
    `{"next":"create"}\n{"phase":"create","ops":10,"seconds":1}\n{"next":"stat"}\n` +
      `{"phase":"stat","ops":10,"seconds":0.5}\n`,
    { layout: "flat", workers: 1 },
    "skyfs-cluster",
    { create: { proposals_per_op: 1, fsyncs_per_op: 3 } },
  );
  assert.deepEqual(rows.map((m) => [m.job, m.value, m.details?.proposals_per_op]), [
    ["meta-flat-create-w1", 10, 1],
    ["meta-flat-stat-w1", 20, undefined],
  ]);
});

Deno.test("runMeta with store counters reads them around every phase, outside its timing", async () => {
  const binary = await buildMetaWorker();
  const dir = await Deno.makeTempDir({ prefix: "skyfs-bench-meta-test-" });
  // A store whose counters move by 2 proposals and 6 fsyncs between two reads: 20 files per
  // phase make that 0.1 and 0.3 per operation.
  let reads = 0;
  const storeCounters = () => {
    reads++;
    return Promise.resolve({
      replicas: { m1: { proposals: 2 * reads, fsyncs: 6 * reads } },
      missing: [],
      leader: "m1",
      term: 1,
    });
  };
  try {
    const rows = await runMeta({ layout: "tree", workers: 2 }, "skyfs-cluster", {
      binary,
      dir,
      files: 20,
      fileBytes: 10,
      dropCaches: false,
      env: {},
      timeoutMs: 60_000,
      storeCounters,
    });
    const phases = expectedPhases("tree", false);
    assert.deepEqual(rows.map((m) => m.job), phases.map((p) => `meta-tree-${p}-w2`));
    assert.equal(reads, 2 * phases.length);
    const create = rows.find((m) => m.job === "meta-tree-create-w2")!;
    assert.equal(create.details?.proposals_per_op, 0.1);
    assert.ok(Math.abs(Number(create.details?.fsyncs_per_op) - 0.3) < 1e-9);
    assert.equal(create.details?.files, 20);
    for (const m of rows) assert.ok(m.value !== null && m.value > 0, `${m.job}: ${m.error}`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("runMeta keeps the rates when the store counters cannot be read", async () => {
  const binary = await buildMetaWorker();
  const dir = await Deno.makeTempDir({ prefix: "skyfs-bench-meta-test-" });
  try {
    const rows = await runMeta({ layout: "flat", workers: 1 }, "skyfs-cluster-etcd", {
      binary,
      dir,
      files: 5,
      fileBytes: 0,
      dropCaches: false,
      env: {},
      timeoutMs: 60_000,
      storeCounters: () => Promise.reject(new Error("connection refused")),
    });
    assert.equal(rows.length, expectedPhases("flat", false).length);
    for (const m of rows) {
      assert.ok(m.value !== null && m.value > 0, `${m.job}: ${m.error}`);
      assert.match(String(m.details?.store_note), /store counters not read: connection refused/);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("runMeta with a store CPU clock alone gives each phase's mount and store CPU per op", async () => {
  const binary = await buildMetaWorker();
  const dir = await Deno.makeTempDir({ prefix: "skyfs-bench-meta-test-" });
  // Fake clocks: the mount's moves 0.001 s and the store's 0.002 s per reading, so a phase of N
  // operations (one reading before, one after) costs 1000/N and 2000/N us per operation.
  let mount = 0;
  let store = 0;
  try {
    const rows = await runMeta({ layout: "flat", workers: 1 }, "skyfs-cluster", {
      binary,
      dir,
      files: 10,
      fileBytes: 0,
      dropCaches: false,
      env: {},
      timeoutMs: 60_000,
      daemonCpuSeconds: () => (mount += 0.001),
      storeCpuSeconds: () => (store += 0.002),
    });
    assert.equal(rows.length, expectedPhases("flat", false).length);
    for (const m of rows) {
      const ops = Number(m.details?.ops);
      assert.ok(Math.abs(Number(m.details?.daemon_cpu_us_per_op) - 1000 / ops) < 1e-6, m.job);
      assert.ok(Math.abs(Number(m.details?.store_cpu_us_per_op) - 2000 / ops) < 1e-6, m.job);
    }
    // A store process gone (the clock throws): the rows keep their rates, with no CPU figure.
    const gone = await runMeta({ layout: "flat", workers: 1 }, "skyfs-cluster", {
      binary,
      dir,
      files: 5,
      fileBytes: 0,
      dropCaches: false,
      env: {},
      timeoutMs: 60_000,
      storeCpuSeconds: () => {
        throw new Error("ENOENT /proc/1234/task");
      },
    });
    for (const m of gone) {
      assert.ok(m.value !== null && m.value > 0, `${m.job}: ${m.error}`);
      assert.equal(m.details?.store_cpu_us_per_op, undefined);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
