import assert from "node:assert/strict";
import { formatRatio, formatValue } from "./format.ts";
import type { Measurement, RunResult } from "./model.ts";
import {
  clusterGoalTable,
  endpointCostTable,
  familyTable,
  fuseRequestTable,
  goalMet,
  markdownReport,
  metaPhase,
  notes,
  ratioToBaseline,
  replaceReadmeSection,
  shortLabels,
  singleNodeGoal,
  singleNodeGoalTable,
  storeCostTable,
} from "./report.ts";

function measurement(
  target: string,
  value: number | null,
  job = "seq-read-1m-j1-warm",
): Measurement {
  return {
    family: "seq-read",
    job,
    target,
    unit: "MiB/s",
    value,
    higherIsBetter: true,
    ...(value === null ? { error: "fio exited with 1" } : {}),
  };
}

function run(measurements: Measurement[]): RunResult {
  return {
    formatVersion: 1,
    startedAt: "2025-01-01T00:00:00.000Z",
    finishedAt: "2025-01-01T00:01:00.000Z",
    mode: "quick",
    command: "deno task bench --quick",
    machine: {
      hostname: "h",
      kernel: "6.18",
      cpu: "EPYC",
      cpus: 2,
      memoryGiB: 24,
      scratchFs: "ext4 /dev/vda",
      fio: "fio-3.33",
      deno: "2.9.6",
    },
    targets: [
      { name: "ext4", state: "ok", command: "plain directory" },
      { name: "skyfs", state: "failed", reason: "failed to mount: mod.ts exited with 1" },
      { name: "bindfs", state: "ok", command: "bindfs -f a b" },
    ],
    skippedFamilies: [{ family: "io", reason: "not available yet" }],
    baselines: {},
    measurements,
  };
}

Deno.test("formatValue keeps three significant digits and k/M suffixes", () => {
  assert.equal(formatValue(1234, "MiB/s"), "1234");
  assert.equal(formatValue(12.345, "MiB/s"), "12.3");
  assert.equal(formatValue(81234, "IOPS"), "81.2k");
  assert.equal(formatValue(1_590_000, "IOPS"), "1.59M");
  assert.equal(formatValue(5893, "IOPS"), "5893");
  assert.equal(formatValue(0.5, "ops/s"), "0.50");
});

Deno.test("formatRatio tells small ratios apart", () => {
  assert.equal(formatRatio(0.25), "0.25x");
  assert.equal(formatRatio(0.004), "0.004x");
  assert.equal(formatRatio(25.4), "25x");
  assert.equal(formatRatio(1), "1.00x");
  assert.equal(formatRatio(0.0999), "0.10x");
  assert.equal(formatRatio(0.05), "0.05x");
});

Deno.test("ratioToBaseline inverts for lower-is-better figures and refuses missing values", () => {
  const base = measurement("ext4", 200);
  assert.equal(ratioToBaseline(measurement("bindfs", 50), base), 0.25);
  assert.equal(ratioToBaseline({ ...measurement("bindfs", 50), higherIsBetter: false }, base), 4);
  assert.equal(ratioToBaseline(measurement("bindfs", null), base), null);
  assert.equal(ratioToBaseline(measurement("bindfs", 50), undefined), null);
  assert.equal(ratioToBaseline(measurement("bindfs", 50), measurement("ext4", 0)), null);
});

Deno.test("familyTable shows every target column, ratios to ext4, dashes for failed targets", () => {
  const rows = [
    measurement("ext4", 1000),
    measurement("bindfs", 250),
    measurement("ext4", 10, "b"),
  ];
  rows.push(measurement("bindfs", null, "b"));
  const table = familyTable(run(rows), "seq-read", rows);
  const lines = table.split("\n");
  assert.equal(lines[0], "| seq-read | unit | ext4 | skyfs | bindfs |");
  assert.equal(lines[2], "| seq-read-1m-j1-warm | MiB/s | 1000 | — | 250 (0.25x) |");
  assert.equal(lines[3], "| b | MiB/s | 10.0 | — | error |");
});

Deno.test("notes name failed targets, skipped families and failed jobs", () => {
  const lines = notes(run([measurement("ext4", 1), measurement("bindfs", null)]));
  assert.deepEqual(lines, [
    "- skyfs: failed to mount: mod.ts exited with 1",
    "- io: not available yet",
    "- seq-read-1m-j1-warm on bindfs: fio exited with 1",
  ]);
});

Deno.test("markdownReport carries the command, the machine and chart links", () => {
  const text = markdownReport(run([measurement("ext4", 1), measurement("bindfs", 1)]), {
    chartDir: "bench/results/x",
  });
  assert.match(text, /`deno task bench --quick`/);
  assert.match(text, /2 x EPYC, 24 GiB, Linux 6\.18/);
  assert.match(text, /!\[seq-read\]\(bench\/results\/x\/seq-read\.svg\)/);
  assert.match(text, /- bindfs: `bindfs -f a b`/);
});

Deno.test("replaceReadmeSection swaps only the text between the markers", () => {
  const readme = "# x\n## Performance\n<!-- bench:start -->\nold\n<!-- bench:end -->\ntail\n";
  const out = replaceReadmeSection(readme, "new table\n");
  assert.equal(
    out,
    "# x\n## Performance\n<!-- bench:start -->\nnew table\n<!-- bench:end -->\ntail\n",
  );
  assert.equal(replaceReadmeSection(out, "again"), out.replace("new table", "again"));
  assert.throws(() => replaceReadmeSection("# no markers\n", "x"), /bench:start/);
});

Deno.test("shortLabels drops the words every job shares but never empties a label", () => {
  assert.deepEqual(
    shortLabels(["rand-read-4k-uring-qd32-j1-warm", "rand-read-4k-uring-qd32-j4-cold"]),
    ["j1-warm", "j4-cold"],
  );
  assert.deepEqual(
    shortLabels(["write-verify-crc32c", "write-verify-crc32c-verify-read"]),
    ["crc32c", "crc32c-verify-read"],
  );
  assert.deepEqual(shortLabels(["only-one"]), ["only-one"]);
  assert.deepEqual(shortLabels(["a-x", "b-y"]), ["a-x", "b-y"]);
});

Deno.test("storeCostTable gives cluster rows their ratio to skyfs and store cost per operation", () => {
  const meta = (target: string, value: number | null, details?: Measurement["details"]) => ({
    family: "meta-flat",
    job: "meta-flat-create-w1",
    target,
    unit: "ops/s",
    value,
    higherIsBetter: true,
    details: { files: target.startsWith("skyfs-cluster") ? 40 : 200, ...details },
  });
  const rows: Measurement[] = [
    meta("ext4", 40000),
    meta("skyfs", 1000),
    meta("skyfs-cluster", 300, {
      proposals_per_op: 1,
      fsyncs_per_op: 3.25,
      daemon_cpu_us_per_op: 1234.4,
      store_cpu_us_per_op: 2871.6,
    }),
    meta("skyfs-cluster-etcd", 50, {
      proposals_per_op: 0,
      fsyncs_per_op: 0.5,
      store_note: "leader changed during the phase (m1@1 -> m2@2)",
    }),
  ];
  const result: RunResult = {
    ...run(rows),
    targets: ["ext4", "skyfs", "skyfs-cluster", "skyfs-cluster-etcd"].map((name) => ({
      name,
      state: "ok" as const,
    })),
  };
  const lines = storeCostTable(result, "meta-flat", rows).split("\n");
  assert.equal(
    lines[0],
    "| meta-flat: cluster cost | skyfs-cluster ops/s | ÷ skyfs | proposals/op | fsyncs/op | " +
      "mount CPU us/op | store CPU us/op | skyfs-cluster-etcd ops/s | ÷ skyfs | proposals/op | " +
      "fsyncs/op | mount CPU us/op | store CPU us/op |",
  );
  // The mount's and the store's CPU per operation beside the store's counters; etcd's row had
  // no CPU figures (empty cells, not 0).
  assert.equal(
    lines[2],
    "| meta-flat-create-w1 | 300 | 0.30x | 1.00 | 3.25 | 1234 | 2872 | 50.0 | 0.05x | 0* | 0.50* " +
      "|  |  |",
  );
  // A family without store counters has no cost table.
  assert.equal(storeCostTable(result, "meta-flat", rows.slice(0, 2)), "");
  const text = markdownReport(result);
  assert.match(
    text,
    /Files per metadata run: ext4, skyfs: 200; skyfs-cluster, skyfs-cluster-etcd: 40/,
  );
  assert.match(text, /- meta-flat-create-w1 on skyfs-cluster-etcd, store counters: leader changed/);
});

Deno.test("endpointCostTable: skyfs against skyfs-http-off per job, geometric mean", () => {
  const lower = (target: string, value: number): Measurement => ({
    ...measurement(target, value, "meta-flat-stat-w1"),
    family: "meta-flat",
    unit: "us",
    higherIsBetter: false,
  });
  const text = endpointCostTable(run([
    measurement("skyfs", 97),
    measurement("skyfs-http-off", 100),
    lower("skyfs", 100),
    lower("skyfs-http-off", 97),
    measurement("ext4", 200),
  ]));
  assert.match(text, /2 jobs: geometric mean 0\.97x, range 0\.97x-0\.97x/);
  assert.match(text, /^\| seq-read-1m-j1-warm \| 0\.97x \|$/m);
  assert.match(text, /^\| meta-flat-stat-w1 \| 0\.97x \|$/m);
  assert.equal(endpointCostTable(run([measurement("skyfs", 1)])), "");
});

function metaRow(
  job: string,
  target: string,
  value: number | null,
  details: Measurement["details"] = {},
): Measurement {
  return {
    family: "meta-flat",
    job,
    target,
    unit: "ops/s",
    value,
    higherIsBetter: true,
    details,
  };
}

Deno.test("goalMet: no when a known ratio falls short, ? when one is unknown, else yes", () => {
  assert.equal(goalMet([{ ratio: 2, atLeast: 2 }, { ratio: 0.5, atLeast: 0.5 }]), "yes");
  assert.equal(goalMet([{ ratio: 1.99, atLeast: 2 }]), "no");
  assert.equal(goalMet([{ ratio: null, atLeast: 1 }, { ratio: 0.1, atLeast: 0.5 }]), "no");
  assert.equal(goalMet([{ ratio: null, atLeast: 1 }, { ratio: 0.9, atLeast: 0.5 }]), "?");
});

Deno.test("singleNodeGoal: issue 17's goal by phase", () => {
  assert.equal(metaPhase("meta-flat-stat-cold-w4"), "stat-cold");
  assert.equal(metaPhase("meta-tree-open-close-w1"), "open-close");
  assert.deepEqual(singleNodeGoal("meta-flat-create-w1").conditions, [
    { target: "bindfs", atLeast: 2 },
  ]);
  assert.deepEqual(singleNodeGoal("meta-tree-rename-w4").conditions, [
    { target: "bindfs", atLeast: 2 },
  ]);
  for (const phase of ["stat", "stat-cold", "open-close", "readdir"]) {
    assert.deepEqual(singleNodeGoal(`meta-flat-${phase}-w1`).conditions, [
      { target: "bindfs", atLeast: 1 },
      { target: "ext4", atLeast: 0.5 },
    ], phase);
  }
  assert.equal(singleNodeGoal("meta-tree-unlink-w1").text, "≥ bindfs");
});

Deno.test("singleNodeGoalTable: goal, measured ratios, met and the CPU and requests side by side", () => {
  const rows = [
    metaRow("meta-flat-create-w1", "ext4", 10000),
    metaRow("meta-flat-create-w1", "skyfs", 4000, {
      daemon_cpu_us_per_op: 500.2,
      fuse_requests_per_op: 5,
    }),
    metaRow("meta-flat-create-w1", "bindfs", 2000, { daemon_cpu_us_per_op: 130 }),
    metaRow("meta-flat-stat-w1", "ext4", 100000),
    metaRow("meta-flat-stat-w1", "skyfs", 40000, { daemon_cpu_us_per_op: 52 }),
    metaRow("meta-flat-stat-w1", "bindfs", 20000, { daemon_cpu_us_per_op: 24 }),
    metaRow("meta-flat-unlink-w1", "skyfs", 3000),
  ];
  const lines = singleNodeGoalTable("meta-flat", rows).split("\n");
  assert.equal(lines[0], "Issue 17 in meta-flat: skyfs meets its goal in 1 of 3 rows.");
  assert.equal(
    lines[2],
    "| meta-flat: issue 17 | goal | ÷ bindfs | ÷ ext4 | met | skyfs CPU us/op | " +
      "bindfs CPU us/op | requests/op |",
  );
  // create: 2x bindfs exactly meets "≥ 2x bindfs" (ext4 does not count for create).
  assert.equal(
    lines[4],
    "| meta-flat-create-w1 | ≥ 2x bindfs | 2.00x | 0.40x | yes | 500 | 130 | 5.00 |",
  );
  // stat: 2x bindfs, but 0.4x ext4 < 0.5x.
  assert.equal(
    lines[5],
    "| meta-flat-stat-w1 | ≥ bindfs, ≥ 0.5x ext4 | 2.00x | 0.40x | no | 52.0 | 24.0 |  |",
  );
  // unlink: bindfs not measured: unknown, not met.
  assert.equal(lines[6], "| meta-flat-unlink-w1 | ≥ bindfs |  |  | ? |  |  |  |");
  // Not a metadata family, or no skyfs row: no table.
  assert.equal(singleNodeGoalTable("seq-read", [measurement("skyfs", 1)]), "");
  assert.equal(singleNodeGoalTable("meta-flat", rows.filter((m) => m.target !== "skyfs")), "");
});

Deno.test("clusterGoalTable: each cluster row against 0.3x skyfs with proposals, fsyncs and CPU", () => {
  const rows = [
    metaRow("meta-flat-create-w1", "skyfs", 1000, { daemon_cpu_us_per_op: 450 }),
    metaRow("meta-flat-create-w1", "skyfs-cluster", 200, {
      proposals_per_op: 2,
      fsyncs_per_op: 7,
      daemon_cpu_us_per_op: 1200,
      store_cpu_us_per_op: 2900,
    }),
    metaRow("meta-flat-create-w1", "skyfs-cluster-etcd", 300, {
      proposals_per_op: 2,
      fsyncs_per_op: 2,
      daemon_cpu_us_per_op: 1100,
      store_cpu_us_per_op: 800,
    }),
    metaRow("meta-flat-stat-w1", "skyfs", 10000),
    metaRow("meta-flat-stat-w1", "skyfs-cluster", 2999, { proposals_per_op: 0, fsyncs_per_op: 0 }),
    metaRow("meta-flat-stat-w1", "skyfs-cluster-etcd", null),
  ];
  const result: RunResult = {
    ...run(rows),
    targets: ["skyfs", "skyfs-cluster", "skyfs-cluster-etcd"].map((name) => ({
      name,
      state: "ok" as const,
    })),
  };
  const lines = clusterGoalTable(result, "meta-flat", rows).split("\n");
  assert.equal(
    lines[0],
    "Issue 13 in meta-flat (goal: 0.30x of skyfs or better): met by skyfs-cluster in 0 of 2 " +
      "rows, skyfs-cluster-etcd in 1 of 2 rows.",
  );
  assert.equal(
    lines[2],
    "| meta-flat: issue 13 | target | ÷ skyfs | met | proposals/op | fsyncs/op | " +
      "mount CPU us/op | store CPU us/op | skyfs CPU us/op |",
  );
  assert.equal(
    lines[4],
    "| meta-flat-create-w1 | skyfs-cluster | 0.20x | no | 2.00 | 7.00 | 1200 | 2900 | 450 |",
  );
  assert.equal(
    lines[5],
    "| meta-flat-create-w1 | skyfs-cluster-etcd | 0.30x | yes | 2.00 | 2.00 | 1100 | 800 | 450 |",
  );
  // 0.2999x is short of 0.3x, though it prints as 0.30x; a failed row is unknown.
  assert.equal(lines[6], "| meta-flat-stat-w1 | skyfs-cluster | 0.30x | no | 0 | 0 |  |  |  |");
  assert.equal(lines[7], "| meta-flat-stat-w1 | skyfs-cluster-etcd |  | ? |  |  |  |  |  |");
  // The cluster mount's CPU is in the cluster tables, not in the daemon cost table.
  assert.doesNotMatch(fuseRequestTable(result, "meta-flat", rows), /skyfs-cluster/);
  const text = markdownReport(result);
  assert.match(text, /^\| meta-flat: issue 13 \|/m);
  assert.match(text, /store CPU us\/op = CPU time of the store's processes summed/);
  // Without cluster targets: no table.
  assert.equal(clusterGoalTable(result, "meta-flat", rows.filter((m) => m.target === "skyfs")), "");
});
