// A slow or hostile HTTP client cannot delay FUSE replies: 100 connections to the mount's endpoint
// send a request's headers one byte at a time and never finish, while the mount serves file I/O
// through the daemon (passthrough off). The I/O must complete with the right bytes; nothing here
// measures time.
import assert from "node:assert/strict";
import { join } from "node:path";
import { fetchJson, startHttpMount } from "./_http.ts";

const CONNECTIONS = 100;
const HEADER = new TextEncoder().encode(
  "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: slowloris\r\nX-Pad: " + "a".repeat(4096),
);

Deno.test("100 slow HTTP clients do not stop the mount's file I/O", async () => {
  const { mount, url } = await startHttpMount({ extraArgs: ["--passthrough", "off"] });
  const { hostname, port } = new URL(url);
  const conns: Deno.TcpConn[] = [];
  const stop = { done: false };
  let bytesSent = 0;
  let closedByServer = 0;
  const drips: Promise<void>[] = [];
  try {
    for (let i = 0; i < CONNECTIONS; i++) {
      conns.push(await Deno.connect({ hostname, port: Number(port) }));
    }
    for (const conn of conns) {
      drips.push((async () => {
        for (let at = 0; at < HEADER.length && !stop.done; at++) {
          try {
            await conn.write(HEADER.subarray(at, at + 1));
          } catch {
            closedByServer++; // the server closed it: it stops costing anything
            return;
          }
          bytesSent++;
          await new Promise((resolve) => setTimeout(resolve, 20));
        }
      })());
    }
    // File I/O through the daemon while every connection is mid-header.
    const payload = new Uint8Array(256 * 1024).map((_, i) => (i * 7) & 255);
    for (let i = 0; i < 40; i++) {
      const path = join(mount.mountpoint, `file-${i}`);
      payload[0] = i;
      await Deno.writeFile(path, payload);
      const back = await Deno.readFile(path);
      assert.equal(back.length, payload.length);
      assert.equal(back[0], i);
      assert.deepEqual(back.subarray(1), payload.subarray(1));
    }
    await Deno.mkdir(join(mount.mountpoint, "d"));
    for (let i = 0; i < 200; i++) {
      await Deno.writeTextFile(join(mount.mountpoint, "d", `${i}`), `${i}`);
    }
    const names = [...Deno.readDirSync(join(mount.mountpoint, "d"))].map((e) => e.name);
    assert.equal(names.length, 200);
    assert.ok(bytesSent >= CONNECTIONS, `the slow clients sent ${bytesSent} bytes`);
    // The connections were held open during the I/O (the test is not vacuous).
    assert.equal(closedByServer, 0, `${closedByServer} slow connections were closed early`);
    // The endpoint itself still answers a well-behaved client.
    assert.equal((await fetchJson(`${url}/healthz`)).status, 200);
  } finally {
    stop.done = true;
    for (const conn of conns) {
      try {
        conn.close();
      } catch { /* closed by the server */ }
    }
    await Promise.all(drips);
    await mount.dispose();
  }
});
