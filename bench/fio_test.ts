import assert from "node:assert/strict";
import {
  coreJobs,
  datenlordJobs,
  fioTimeMs,
  jobVars,
  measurementsFromFio,
  parseFioJson,
  runFio,
} from "./fio.ts";
import { MODE_SETTINGS } from "./model.ts";

Deno.test("coreJobs covers issue 3's matrix with unique names and existing job files", () => {
  const jobs = coreJobs();
  const names = jobs.map((j) => j.name);
  assert.equal(new Set(names).size, names.length);
  for (
    const expected of [
      "seq-read-1m-j1-warm",
      "seq-read-1m-j4-cold",
      "seq-write-1m-j4",
      "rand-read-4k-psync-qd1-j1-cold",
      "rand-read-4k-uring-qd32-j4-warm",
      "rand-write-4k-uring-qd32-j1",
      "write-verify-crc32c",
    ]
  ) {
    assert.ok(names.includes(expected), `missing job ${expected}`);
  }
  for (const job of [...jobs, ...datenlordJobs()]) {
    Deno.statSync(new URL(`./fio/${job.file}`, import.meta.url));
  }
  // Writes come before reads of the same engine so that rand-write finds its files laid out.
  assert.ok(names.indexOf("seq-write-1m-j1") < names.indexOf("rand-write-4k-psync-qd1-j1"));
});

Deno.test("datenlordJobs sweeps block sizes 4k..512k and 1..32 jobs", () => {
  const jobs = datenlordJobs();
  assert.equal(jobs.length, 2 * (8 + 6));
  assert.ok(jobs.some((j) => j.vars?.BS === "512k" && j.vars?.RW === "randwrite"));
  assert.ok(jobs.some((j) => j.numjobs === 32 && j.vars?.RW === "randread"));
});

Deno.test("fioTimeMs parses fio durations and rejects nonsense", () => {
  assert.equal(fioTimeMs("5s"), 5000);
  assert.equal(fioTimeMs("200ms"), 200);
  assert.equal(fioTimeMs("2m"), 120_000);
  assert.equal(fioTimeMs("3"), 3000);
  assert.throws(() => fioTimeMs("soon"), RangeError);
});

Deno.test("jobVars makes cold reads one capped pass and warm reads time based", () => {
  const settings = MODE_SETTINGS.quick;
  const [cold] = coreJobs().filter((j) => j.name === "seq-read-1m-j1-cold");
  const [warm] = coreJobs().filter((j) => j.name === "seq-read-1m-j1-warm");
  assert.deepEqual(
    [jobVars(cold, "/d", settings).TIME_BASED, jobVars(cold, "/d", settings).INVALIDATE],
    ["0", "1"],
  );
  assert.deepEqual(
    [jobVars(warm, "/d", settings).TIME_BASED, jobVars(warm, "/d", settings).INVALIDATE],
    ["1", "0"],
  );
  assert.equal(jobVars(warm, "/d", settings).DIR, "/d");
});

const SAMPLE = `note: fio printed something first
{"jobs":[{"jobname":"x","error":0,"job_runtime":1000,
"read":{"bw":2048,"iops":512,"io_bytes":2097152,"clat_ns":{"mean":1500,"percentile":{"99.000000":4000}}},
"write":{"bw":1024,"iops":256,"io_bytes":1048576,"clat_ns":{"mean":3000}}}]}`;

Deno.test("measurementsFromFio picks the job's direction and headline metric", () => {
  const fio = parseFioJson(SAMPLE);
  const jobs = coreJobs();
  const read = jobs.find((j) => j.name === "rand-read-4k-psync-qd1-j1-warm")!;
  const [m] = measurementsFromFio(read, "ext4", fio);
  assert.equal(m.value, 512);
  assert.equal(m.unit, "IOPS");
  assert.equal(m.details?.read_clat_p99_us, 4);
  const write = jobs.find((j) => j.name === "seq-write-1m-j1")!;
  assert.equal(measurementsFromFio(write, "ext4", fio)[0].value, 1);
  const verify = jobs.find((j) => j.kind === "verify")!;
  const both = measurementsFromFio(verify, "ext4", fio);
  assert.deepEqual(both.map((x) => [x.job, x.value]), [
    ["write-verify-crc32c", 1],
    ["write-verify-crc32c-verify-read", 2],
  ]);
});

Deno.test("measurementsFromFio turns a job error into a null value with the reason", () => {
  const fio = parseFioJson(SAMPLE.replace(`"error":0`, `"error":5`));
  const [m] = measurementsFromFio(coreJobs()[0], "bindfs", fio);
  assert.equal(m.value, null);
  assert.match(m.error ?? "", /error 5/);
});

Deno.test({
  name: "runFio runs a pinned job file end to end and verifies crc32c on a temp dir",
  ignore: !commandExists("fio"),
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "skyfs-bench-test-" });
    try {
      const job = coreJobs().find((j) => j.kind === "verify")!;
      const vars = jobVars(job, dir, MODE_SETTINGS.tiny);
      const fio = await runFio(job.file, vars, {
        env: {},
        timeoutMs: 30_000,
        outputPath: `${dir}/out.json`,
      });
      const [write, verify] = measurementsFromFio(job, "ext4", fio);
      assert.ok(write.value !== null && write.value > 0);
      assert.equal(verify.details?.read_bytes, 2 * 1024 * 1024);
      await assert.rejects(
        runFio("no_such_job.fio", vars, { env: {}, timeoutMs: 10_000, outputPath: `${dir}/x` }),
        /exited with/,
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

function commandExists(command: string): boolean {
  return (Deno.env.get("PATH") ?? "").split(":").some((d) => {
    try {
      return Deno.statSync(`${d}/${command}`).isFile;
    } catch {
      return false;
    }
  });
}
