import assert from "node:assert/strict";
import { join } from "node:path";
import { turnOnUring } from "./uring_switch.ts";

/** A stand-in for /sys/module/fuse/parameters/enable_uring holding `value`. */
async function fakeSwitch(value: string): Promise<{ path: string; dir: string }> {
  const dir = await Deno.makeTempDir({ prefix: "skyfs-uring-switch-test-" });
  const path = join(dir, "enable_uring");
  await Deno.writeTextFile(path, value);
  return { path, dir };
}

Deno.test("an off switch is turned on for the run and put back once", async () => {
  const { path, dir } = await fakeSwitch("N\n");
  try {
    const sw = turnOnUring(path);
    assert.equal(sw.unavailable, null);
    assert.equal(sw.before, "N");
    assert.equal(sw.changed, true);
    assert.equal(await Deno.readTextFile(path), "1");
    assert.equal(sw.restore(), `bench: ${path} put back to N`);
    assert.equal(await Deno.readTextFile(path), "0");
    // A second call (the signal handler's clean-up after the normal one) does nothing.
    await Deno.writeTextFile(path, "Y");
    assert.equal(sw.restore(), null);
    assert.equal(await Deno.readTextFile(path), "Y");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a switch already on is left on, at the start and at the end", async () => {
  const { path, dir } = await fakeSwitch("Y\n");
  try {
    const sw = turnOnUring(path);
    assert.deepEqual([sw.unavailable, sw.before, sw.changed], [null, "Y", false]);
    assert.equal(sw.restore(), null);
    assert.equal(await Deno.readTextFile(path), "Y\n");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a switch turned off by something else during the run is said so at the end", async () => {
  const { path, dir } = await fakeSwitch("N\n");
  try {
    const sw = turnOnUring(path);
    await Deno.writeTextFile(path, "N\n");
    assert.match(sw.restore()!, /put back to N \(it had been turned off during the run/);
    assert.equal(await Deno.readTextFile(path), "0");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("no switch, or one the bench may not touch, gives a one-line reason", async () => {
  const { path, dir } = await fakeSwitch("N\n");
  try {
    const missing = turnOnUring(join(dir, "no-such-file"));
    assert.equal(missing.before, null);
    assert.match(missing.unavailable!, /^no .*no-such-file: this kernel has no FUSE over io_uring/);
    assert.equal(missing.restore(), null);

    const left = turnOnUring(path, true);
    assert.match(left.unavailable!, /is N\) and bench.no_uring_switch \(--no-uring-switch\)/);
    assert.equal(await Deno.readTextFile(path), "N\n");

    // A file the bench may not write: refused to a user (PermissionDenied: "needs root"), and a
    // write error (EIO) for root. Its text is not "Y", so the bench tries to turn it on.
    const failed = turnOnUring("/proc/version");
    assert.equal(failed.changed, false);
    assert.match(failed.unavailable!, /and the bench cannot turn it on: ./);
    assert.ok(!failed.unavailable!.includes("\n"), failed.unavailable!);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
