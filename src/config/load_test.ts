// The table of keys keeps its own promises: defaults valid, one variable per key, one key per flag.
import assert from "node:assert/strict";
import { COMMANDS, envName, type KeyName, KEYS, keysOf, type KeySpec } from "./keys.ts";
import { ConfigError, resolveConfig } from "./load.ts";

Deno.test("config keys: every default passes its key's own schema", () => {
  for (const key of keysOf()) {
    const spec = KEYS[key] as KeySpec;
    const value = typeof spec.default === "function" ? spec.default() : spec.default;
    if (value === undefined) {
      assert.ok(spec.unsetMeans, `${key}: no default and no word on what unset means`);
      continue;
    }
    assert.ok(spec.schema.safeParse(value).success, `${key}: default ${value} is invalid`);
  }
});

Deno.test("config keys: one environment variable per key, one key per flag of a command", () => {
  const variables = keysOf().map((key) => envName(key));
  assert.equal(new Set(variables).size, variables.length, "two keys share a variable");
  for (const name of variables) assert.match(name, /^SKYFS_[A-Z0-9_]+$/);
  for (const command of COMMANDS) {
    const flags = keysOf(command).map((key) => (KEYS[key] as KeySpec).flag).filter(Boolean);
    assert.equal(new Set(flags).size, flags.length, `${command}: two keys share a flag`);
  }
  assert.equal(envName("fuse.spin_us"), "SKYFS_FUSE_SPIN_US");
  assert.equal(envName("io.engine"), "SKYFS_IO");
});

Deno.test("config resolve: flag > env > file > default without a process", () => {
  const dir = Deno.makeTempDirSync();
  try {
    const file = `${dir}/c.toml`;
    Deno.writeTextFileSync(file, "[curp]\ntimeout_ms = 500\nfast_path = false\n");
    const key: KeyName = "curp.timeout_ms";
    const fromFile = resolveConfig("mount", { flags: { config: file }, env: {} });
    assert.equal(fromFile.get(key), 500);
    assert.deepEqual(fromFile.source(key), { kind: "file", path: file });
    assert.equal(fromFile.get("curp.fast_path"), false);
    const env = { SKYFS_CURP_TIMEOUT_MS: "700", SKYFS_CURP_FAST_PATH: "1" };
    const fromEnv = resolveConfig("mount", { flags: { config: file }, env });
    assert.equal(fromEnv.get(key), 700);
    assert.equal(fromEnv.get("curp.fast_path"), true);
    const fromFlag = resolveConfig("bench", { flags: { config: file, quick: true }, env });
    assert.equal(fromFlag.get("bench.quick"), true);
    assert.deepEqual(fromFlag.source("bench.quick"), { kind: "flag", flag: "--quick" });
    assert.equal(resolveConfig("mount", { env: {} }).get(key), 10_000);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("config cluster.zone: default, flag, env and file; a bad name is one line", () => {
  assert.equal(resolveConfig("mount", { env: {} }).get("cluster.zone"), "default");
  assert.equal(
    resolveConfig("mount", { flags: { zone: "eu-west-1" }, env: {} }).get("cluster.zone"),
    "eu-west-1",
  );
  assert.equal(
    resolveConfig("mount", { env: { SKYFS_CLUSTER_ZONE: "z2" } }).get("cluster.zone"),
    "z2",
  );
  const dir = Deno.makeTempDirSync();
  try {
    Deno.writeTextFileSync(`${dir}/c.toml`, '[cluster]\nzone = "on-prem"\n');
    const fromFile = resolveConfig("mount", { flags: { config: `${dir}/c.toml` }, env: {} });
    assert.equal(fromFile.get("cluster.zone"), "on-prem");
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
  for (const bad of ["", "EU", "a_b", "a.b", "x".repeat(33), "zone one"]) {
    assert.throws(
      () => resolveConfig("mount", { flags: { zone: bad }, env: {} }),
      (error: Error) => {
        assert.ok(error instanceof ConfigError, `${error.name}: ${error.message}`);
        assert.ok(!error.message.includes("\n"), `two lines: ${error.message}`);
        assert.match(error.message, /--zone/);
        assert.match(error.message, /1-32 characters of a-z, 0-9 and -/);
        return true;
      },
      `zone "${bad}" was accepted`,
    );
  }
  assert.throws(
    () => resolveConfig("mount", { env: { SKYFS_CLUSTER_ZONE: "Bad" } }),
    /SKYFS_CLUSTER_ZONE/,
  );
});
