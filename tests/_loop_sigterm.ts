/**
 * A loop, not a CI test (the name has no _test): files written and closed right before a SIGTERM
 * must read back whole after the restart (a clean unmount keeps everything). Each round a Python
 * child writes FILES files (default 200), closes them all, and sends the daemon SIGTERM right
 * after the last close(2): RELEASEs are still queued in the kernel then. Prints "ROUND i: k/FILES short".
 * `LOOP_ROUNDS=10 SKYFS_TEST_TARGET=skyfs deno test -A tests/_loop_sigterm.ts`
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { PYTHON, startMount } from "./_harness.ts";

const ROUNDS = Number(Deno.env.get("LOOP_ROUNDS") ?? "10");
const FILES = Number(Deno.env.get("LOOP_FILES") ?? "200");

Deno.test({
  name: "loop: write + close, then SIGTERM at once; everything reads back after the restart",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const mount = await startMount();
    let short = 0;
    try {
      for (let round = 0; round < ROUNDS; round++) {
        const dir = join(mount.mountpoint, `r${round}`);
        const code = `
import os, signal
fds = []
for i in range(${FILES}):
    fd = os.open("${dir}/f%d" % i, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, b"round ${round} file %d" % i)
    fds.append(fd)
for fd in fds:   # every RELEASE queued at once, past the kernel's max_background
    os.close(fd)
os.kill(${mount.pid()}, signal.SIGTERM)
`;
        await Deno.mkdir(dir);
        const out = await new Deno.Command(PYTHON, { args: ["-c", code] }).output();
        assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
        // stop() sends SIGTERM again: only once the daemon has exited (a zombie until collected),
        // as a second SIGTERM late in the shutdown, after its listener is gone, ends it with 143.
        const pid = mount.pid()!;
        const deadline = Date.now() + 20_000;
        while (Date.now() < deadline) {
          const stat = await Deno.readTextFile(`/proc/${pid}/stat`).catch(() => "");
          if (stat === "" || stat.slice(stat.lastIndexOf(")") + 2).startsWith("Z")) break;
          await new Promise((resolve) => setTimeout(resolve, 20));
        }
        await mount.stop();
        await mount.restart();
        let bad = 0;
        for (let i = 0; i < FILES; i++) {
          const text = await Deno.readTextFile(join(dir, `f${i}`));
          if (text !== `round ${round} file ${i}`) bad++;
        }
        console.log(`ROUND ${round}: ${bad}/${FILES} short`);
        short += bad;
      }
    } finally {
      await mount.dispose();
    }
    assert.equal(short, 0, "files read back short after a SIGTERM");
  },
});
