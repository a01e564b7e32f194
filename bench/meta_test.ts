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
