/** The shim's listening socket: a name held by another process is waited for, up to a limit. */

import assert from "node:assert/strict";
import { closeFd, listenAbstract, listenAbstractWaiting } from "./socket.ts";

/** A child process that listens on `name`, says so, and exits after `holdMs`. */
async function holdName(name: string, holdMs: number): Promise<Deno.ChildProcess> {
  const code = `
    import { listenAbstract } from ${JSON.stringify(new URL("./socket.ts", import.meta.url).href)};
    listenAbstract(${JSON.stringify(name)});
    console.log("held");
    setTimeout(() => Deno.exit(0), ${holdMs});
  `;
  const child = new Deno.Command(Deno.execPath(), {
    args: ["eval", "--ext=ts", code],
    stdout: "piped",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  while (!text.includes("held")) {
    const { value, done } = await reader.read();
    if (done) throw new Error("the holder exited before listening");
    text += value;
  }
  reader.releaseLock();
  return child;
}

Deno.test("shim socket: a name in use fails at once, or is waited for until its holder goes", async () => {
  const name = `skyfs-shim-test-${crypto.randomUUID()}`;
  const child = await holdName(name, 700);
  try {
    assert.throws(() => listenAbstract(name), (e: Error & { errno?: number }) => e.errno === 98);
    assert.throws(
      () => listenAbstractWaiting(name, 50),
      (e: Error) => /address in use/.test(e.message),
    );
    const fd = listenAbstractWaiting(name, 20_000);
    assert.ok(fd >= 0);
    closeFd(fd);
  } finally {
    await child.status;
    await child.stdout.cancel().catch(() => {});
  }
});
