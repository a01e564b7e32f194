/** Tests of scripts/setup.sh (idempotence, the native build loop) and scripts/test.sh's interface. */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";

const SCRIPTS = fileURLToPath(new URL(".", import.meta.url));

async function bash(args: string[], cwd?: string): Promise<{ code: number; out: string }> {
  const output = await new Deno.Command("bash", { args, cwd, stdin: "null" }).output();
  const decoder = new TextDecoder();
  return { code: output.code, out: decoder.decode(output.stdout) + decoder.decode(output.stderr) };
}

/** A throwaway repository with scripts/setup.sh and one native part, lib/demo. */
async function fakeRepo(buildScript: string): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "skyfs-setup-test-" });
  await Deno.mkdir(`${dir}/scripts`);
  await Deno.copyFile(`${SCRIPTS}setup.sh`, `${dir}/scripts/setup.sh`);
  await Deno.mkdir(`${dir}/lib/demo`, { recursive: true });
  await Deno.writeTextFile(`${dir}/lib/demo/demo.c`, "int demo(void) { return 42; }\n");
  await Deno.writeTextFile(`${dir}/lib/demo/build.sh`, buildScript);
  return dir;
}

const GCC_BUILD = "set -e\necho compiling\ngcc -shared -fPIC -o libdemo.so demo.c\n";

Deno.test("setup.sh --quiet prints nothing when everything is in place", async () => {
  // The first run may install what is missing; the second must find everything present.
  const first = await bash([`${SCRIPTS}setup.sh`, "--quiet"]);
  assert.equal(first.code, 0, first.out);
  const second = await bash([`${SCRIPTS}setup.sh`, "--quiet"]);
  assert.equal(second.code, 0, second.out);
  assert.equal(second.out, "");
});

Deno.test("setup.sh rejects an unknown option with a one-line error", async () => {
  const result = await bash([`${SCRIPTS}setup.sh`, "--frobnicate"]);
  assert.equal(result.code, 2);
  assert.match(result.out, /unknown option "--frobnicate"/);
});

Deno.test("setup.sh builds lib/*/build.sh once, again when a source changes or an output goes", async () => {
  const repo = await fakeRepo(GCC_BUILD);
  try {
    const first = await bash(["scripts/setup.sh", "--build-only"], repo);
    assert.equal(first.code, 0, first.out);
    assert.match(first.out, /setup: building lib\/demo: bash lib\/demo\/build.sh/);
    await Deno.stat(`${repo}/lib/demo/libdemo.so`);

    const again = await bash(["scripts/setup.sh", "--build-only", "--quiet"], repo);
    assert.equal(again.code, 0, again.out);
    assert.equal(again.out, "", "an up-to-date build must not run again");

    // mtime resolution: make the source strictly newer than the stamp.
    const later = new Date(Date.now() + 5000);
    await Deno.utime(`${repo}/lib/demo/demo.c`, later, later);
    const changed = await bash(["scripts/setup.sh", "--build-only", "--quiet"], repo);
    assert.match(changed.out, /building lib\/demo/);

    await Deno.remove(`${repo}/lib/demo/libdemo.so`);
    const removed = await bash(["scripts/setup.sh", "--build-only", "--quiet"], repo);
    assert.match(removed.out, /building lib\/demo/);
    await Deno.stat(`${repo}/lib/demo/libdemo.so`);
  } finally {
    await Deno.remove(repo, { recursive: true });
  }
});

Deno.test("setup.sh stops with the fix when a build fails", async () => {
  const repo = await fakeRepo("echo 'demo: broken on purpose' >&2\nexit 3\n");
  try {
    const result = await bash(["scripts/setup.sh", "--build-only"], repo);
    assert.equal(result.code, 1);
    assert.match(result.out, /lib\/demo\/build.sh failed; fix it and run: deno task build/);
    // No stamp: the next run tries again.
    const retry = await bash(["scripts/setup.sh", "--build-only"], repo);
    assert.match(retry.out, /building lib\/demo/);
  } finally {
    await Deno.remove(repo, { recursive: true });
  }
});

Deno.test("test.sh rejects an unknown step and ends a run with the counted summary line", async () => {
  const bad = await bash([`${SCRIPTS}test.sh`, "nonsense"]);
  assert.equal(bad.code, 2);
  assert.match(bad.out, /unknown step "nonsense"/);
  const lint = await bash([`${SCRIPTS}test.sh`, "lint"]);
  const lines = lint.out.trimEnd().split("\n");
  assert.match(lines[lines.length - 1], /^tests: \d+ passed, \d+ failed, \d+ skipped$/);
  assert.match(lint.out, /=== test.sh summary/);
});
