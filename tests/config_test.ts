/**
 * The configuration file (issue 14 point 5), through real `mod.ts` processes: the example file
 * validates and holds every key; `skyfs config` names each value's source; flag > env > file >
 * default, one key each way; an unknown key, a wrong type, an out-of-range value (file, env,
 * flag) and bad TOML each give skyfs's own one-line message and a non-zero exit; a mount started
 * with a config file honours its keys, and `skyfs umount --config FILE` finds the mount point.
 * @module
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { parse as parseToml } from "smol-toml";
import { isSkyfsMounted, makeTempDir, REPO_ROOT, runSkyfs, startMount } from "./_harness.ts";

const EXAMPLE = join(REPO_ROOT, "docs/skyfs.example.toml");

/** Runs mod.ts with `env` and none of the caller's SKYFS_* settings (empty counts as unset). */
async function skyfs(args: string[], env: Record<string, string> = {}) {
  const cleared: Record<string, string> = {};
  for (const name of Object.keys(Deno.env.toObject())) {
    if (name.startsWith("SKYFS_") && !name.startsWith("SKYFS_TEST_")) cleared[name] = "";
  }
  return await runSkyfs(args, { env: { ...cleared, ...env } });
}

/** `skyfs config` output -> key -> { value, source } (the output is TOML; sources are comments). */
function effective(stdout: string): Map<string, { value: unknown; source: string }> {
  const parsed = parseToml(stdout) as Record<string, Record<string, unknown>>;
  const result = new Map<string, { value: unknown; source: string }>();
  let section = "";
  for (const line of stdout.split("\n")) {
    const header = /^\[(\w+)\]$/.exec(line);
    if (header) section = header[1];
    const set = /^(\w+) = .*?# (.*)$/.exec(line);
    const unset = /^# (\w+) \(unset.*?# (.*)$/.exec(line);
    const match = set ?? unset;
    if (match && section) {
      result.set(`${section}.${match[1]}`, {
        value: parsed[section]?.[match[1]],
        source: match[2],
      });
    }
  }
  return result;
}

/** Waits until process `pid` has exited (gone, or a zombie waiting to be reaped). */
async function daemonExit(pid: number): Promise<void> {
  for (let i = 0; i < 400; i++) {
    let state: string;
    try {
      state = (await Deno.readTextFile(`/proc/${pid}/stat`)).split(") ")[1]?.[0] ?? "";
    } catch {
      return;
    }
    if (state === "Z" || state === "X") return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`the daemon (pid ${pid}) did not exit within 20 s of its unmount`);
}

/** A failed run: non-zero exit, exactly one line on stderr, skyfs's own, matching `pattern`. */
function assertOneLine(
  result: { code: number; stderr: string },
  pattern: RegExp,
  what: string,
): void {
  assert.notEqual(result.code, 0, `${what}: exit code 0, expected a failure`);
  const lines = result.stderr.trim().split("\n").filter((line) => line.trim());
  assert.equal(lines.length, 1, `${what}: expected one line on stderr, got:\n${result.stderr}`);
  assert.match(lines[0], /^skyfs: /, `${what}: not skyfs's own message`);
  assert.match(lines[0], pattern, `${what}: unclear message: ${lines[0]}`);
}

Deno.test("config: the example file validates, holds every key, and skyfs config says so", async () => {
  const result = await skyfs(["config", "--config", EXAMPLE]);
  assert.equal(result.code, 0, result.stderr);
  const shown = effective(result.stdout);
  const example = parseToml(await Deno.readTextFile(EXAMPLE)) as Record<
    string,
    Record<string, unknown>
  >;
  assert.ok(shown.size >= 20, `too few keys shown:\n${result.stdout}`);
  for (const [key, { value, source }] of shown) {
    const [section, name] = key.split(".");
    assert.ok(name in (example[section] ?? {}), `${key} is missing from the example file`);
    assert.equal(source.split(" (env")[0], `file ${EXAMPLE}`, `${key}: source`);
    // The admin token is never printed.
    const expected = key === "http.token" ? "<hidden>" : example[section][name];
    assert.deepEqual(value, expected, `${key}: value`);
  }
  assert.ok(!result.stdout.includes(String(example.http.token)), "the token was printed");
  // Every section and key of the example is one skyfs shows (no stale key in the docs).
  for (const [section, keys] of Object.entries(example)) {
    for (const name of Object.keys(keys)) assert.ok(shown.has(`${section}.${name}`), name);
  }
  // Each section of the file is one of the commands' sections.
  assert.deepEqual(
    Object.keys(example).sort(),
    [
      "bench",
      "cache",
      "cluster",
      "csi",
      "curp",
      "fuse",
      "http",
      "io",
      "local_cluster",
      "log",
      "meta",
      "mount",
      "peer",
      "stats",
      "volume",
    ],
  );
});

Deno.test("config: flag > env > file > default, one key each way", async () => {
  const dir = await makeTempDir("config");
  try {
    const file = join(dir, "node.toml");
    await Deno.writeTextFile(file, "[fuse]\ncache_seconds = 5\n[mount]\npassthrough = 'off'\n");
    const key = "fuse.cache_seconds";
    const cases: [string[], Record<string, string>, number, RegExp][] = [
      [["config", "mount"], {}, 10, /^default \(env SKYFS_FUSE_CACHE_SECONDS\)$/],
      [["config", "--config", file, "mount"], {}, 5, /^file .*node\.toml/],
      [
        ["config", "--config", file, "mount"],
        { SKYFS_FUSE_CACHE_SECONDS: "6" },
        6,
        /^env SKYFS_FUSE_CACHE_SECONDS$/,
      ],
      [
        ["config", "--config", file, "mount", "--cache-seconds", "7"],
        { SKYFS_FUSE_CACHE_SECONDS: "6" },
        7,
        /^flag --cache-seconds/,
      ],
      // SKYFS_CONFIG names the file when --config does not.
      [["config", "mount"], { SKYFS_CONFIG: file }, 5, /^file .*node\.toml/],
    ];
    for (const [args, env, value, source] of cases) {
      const result = await skyfs(args, env);
      assert.equal(result.code, 0, result.stderr);
      const shown = effective(result.stdout).get(key);
      const what = `${args.join(" ")} ${JSON.stringify(env)}`;
      assert.equal(shown?.value, value, `${what}: value\n${result.stdout}`);
      assert.match(shown!.source, source, `${what}: source`);
    }
    // Another key in the same runs keeps its own source: the file's passthrough beats the default.
    const both = effective((await skyfs(["config", "--config", file, "mount"])).stdout);
    assert.equal(both.get("mount.passthrough")?.value, "off");
    // A command shows only its own keys.
    const meta = effective((await skyfs(["config", "meta", "serve", "--tick-ms", "20"])).stdout);
    assert.equal(meta.get("meta.tick_ms")?.value, 20);
    assert.equal(meta.has("fuse.cache_seconds"), false);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("config: bad keys and values are one line naming key, value and what is allowed", async () => {
  const dir = await makeTempDir("config");
  try {
    const file = join(dir, "bad.toml");
    const mountpoint = join(dir, "mnt");
    await Deno.mkdir(mountpoint);
    const cases: [string, RegExp][] = [
      ["[fuse]\nspin_usec = 10\n", /unknown key fuse\.spin_usec; keys of \[fuse\]: .*spin_us/],
      ["[fusee]\nspin_us = 10\n", /unknown section \[fusee\]; sections: mount, fuse/],
      [
        "[fuse]\nspin_us = 'fast'\n",
        /fuse\.spin_us = "fast" has the wrong type \(string\); allowed: a number of microseconds/,
      ],
      [
        "[fuse]\nspin_us = 20000\n",
        /fuse\.spin_us = 20000 is out of range; allowed: .*from 0 to 10000/,
      ],
      [
        "[mount]\npassthrough = 'maybe'\n",
        /mount\.passthrough = "maybe" .*allowed: auto, on or off/,
      ],
      [
        "[cache]\nbytes = 0\n",
        /cache\.bytes = 0 is out of range; allowed: a whole number of bytes/,
      ],
      ["[curp]\nfast_path = 'yes'\n", /curp\.fast_path = "yes" has the wrong type/],
      ["[fuse]\nspin_us = \n", /bad\.toml:2:\d+: not valid TOML/],
    ];
    for (const [text, pattern] of cases) {
      await Deno.writeTextFile(file, text);
      // The real command stops before it mounts anything.
      const result = await skyfs(["mount", mountpoint, "--config", file]);
      assertOneLine(result, pattern, JSON.stringify(text));
      assert.ok(result.stderr.includes(file), `the message names the file: ${result.stderr}`);
      assert.equal(isSkyfsMounted(mountpoint), false);
    }
    // The same checks hold for the environment and flags, naming the variable or flag.
    assertOneLine(
      await skyfs(["mount", mountpoint], { SKYFS_FUSE_SPIN_US: "lots" }),
      /SKYFS_FUSE_SPIN_US="lots": fuse\.spin_us must be a number of microseconds from 0 to 10000/,
      "bad env",
    );
    assertOneLine(
      await skyfs(["meta", "serve", "--tick-ms", "0"]),
      /--tick-ms "0": meta\.tick_ms must be a whole number of milliseconds from 1 to 10000/,
      "bad flag",
    );
    assertOneLine(
      await skyfs(["mount", mountpoint, "--zone", "EU_West"]),
      /--zone "EU_West": cluster\.zone must be 1-32 characters of a-z, 0-9 and -/,
      "bad zone",
    );
    assertOneLine(
      await skyfs(
        ["mount", mountpoint, "--meta", "curp://127.0.0.1:1", "--backend", join(dir, "b")],
        { SKYFS_ZONE_SYNC: "3" },
      ),
      /cluster\.zone_sync \(3\) exceeds cluster\.zone_replicas \(2\): lower zone_sync or raise/,
      "zone_sync above zone_replicas",
    );
    assertOneLine(
      await skyfs(["config", "--config", join(dir, "missing.toml")]),
      /Cannot read config file ".*missing\.toml"/,
      "missing file",
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "config: a mount started with a config file honours it; umount finds the mount point",
  ignore: Deno.uid() !== 0 || Deno.env.get("SKYFS_TEST_TARGET") === "ext4" ||
    Deno.env.get("SKYFS_TEST_META") !== undefined,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const dir = await makeTempDir("config");
    const mountpoint = join(dir, "mnt");
    const file = join(dir, "node.toml");
    // A port free now, for [http] listen (the default, 9570, may be another mount's).
    const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = (probe.addr as Deno.NetAddr).port;
    probe.close();
    // As root the default (auto) is passthrough on and the engine io_uring: the file turns both
    // off, and spin 0 means the FUSE reader never finds a request while spinning.
    await Deno.writeTextFile(
      file,
      [
        "[mount]",
        `mountpoint = ${JSON.stringify(mountpoint)}`,
        'passthrough = "off"',
        "[io]",
        'engine = "portable"',
        "[fuse]",
        "spin_us = 0",
        "[log]",
        'debug = "1"',
        "[http]",
        `listen = "127.0.0.1:${port}"`,
      ].join("\n"),
    );
    const mount = await startMount({ mountpoint, extraArgs: ["--config", file] });
    try {
      await Deno.writeTextFile(join(mountpoint, "f"), "honoured");
      assert.equal(await Deno.readTextFile(join(mountpoint, "f")), "honoured");
      const log = mount.stderr();
      assert.ok(log.includes(`skyfs: config ${file}\n`), "the mount names its config file");
      assert.match(log, /skyfs io: engine portable \(io\.engine: portable\)/);
      assert.match(log, /kernel FUSE 7\.\d+, passthrough off/);
      assert.match(log, new RegExp(`http: listening on http://127\\.0\\.0\\.1:${port}`));
      const health = await fetch(`http://127.0.0.1:${port}/healthz`);
      assert.equal(health.status, 200);
      assert.equal((await health.json()).ok, true);
      // `skyfs umount --config FILE`: the mount point comes from mount.mountpoint.
      const umount = await skyfs(["umount", "--config", file]);
      assert.equal(umount.code, 0, umount.stderr);
      // The daemon exits by itself after an external unmount; a SIGTERM from dispose() landing
      // during its shutdown (listeners already removed) would kill it with 143 instead.
      await daemonExit(mount.pid()!);
    } finally {
      await mount.dispose();
    }
    // log.debug from the file: the request counts at unmount, with no request found spinning.
    assert.match(mount.stderr(), /skyfs: requests: .*WRITE \d+.*\(idle spin found 0\)/s);
    assert.equal(isSkyfsMounted(mountpoint), false);
    await Deno.remove(dir, { recursive: true });
  },
});
