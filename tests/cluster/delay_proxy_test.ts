/** DelayProxy (src/cluster/delay_proxy.ts): bytes both ways, order, a lower bound on the delay.
 * @module */

import assert from "node:assert/strict";
import { DelayProxy } from "../../src/cluster/delay_proxy.ts";

Deno.test("DelayProxy forwards both ways, in order, each way delayed by oneWayMs", async () => {
  const server = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const echo = (async () => {
    const c = await server.accept();
    const buf = new Uint8Array(1024);
    while (true) {
      const n = await c.read(buf);
      if (n === null) break;
      await c.write(buf.subarray(0, n));
    }
    c.close();
  })();
  const proxy = new DelayProxy({
    target: { port: (server.addr as Deno.NetAddr).port },
    oneWayMs: 20,
  });
  const port = proxy.start();
  const c = await Deno.connect({ hostname: "127.0.0.1", port });
  const t0 = performance.now();
  await c.write(new TextEncoder().encode("hello"));
  const buf = new Uint8Array(16);
  let got = "";
  while (got.length < 5) got += new TextDecoder().decode(buf.subarray(0, (await c.read(buf))!));
  const rtt = performance.now() - t0;
  assert.equal(got, "hello");
  assert(rtt >= 39, `round trip ${rtt} ms through a 20 ms one-way proxy`);
  const s = proxy.stats();
  assert.equal(s.connections, 1);
  assert.equal(s.bytesUp, 5);
  assert.equal(s.bytesDown, 5);
  c.close();
  await proxy.stop();
  server.close();
  await echo.catch(() => {});
});

Deno.test("DelayProxy: a cut drops bytes and answers nothing; the heal closes broken streams", async () => {
  const server = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const echoes: Promise<void>[] = [];
  const serving = (async () => {
    for await (const c of server) {
      echoes.push((async () => {
        const buf = new Uint8Array(1024);
        try {
          while (true) {
            const n = await c.read(buf);
            if (n === null) break;
            await c.write(buf.subarray(0, n));
          }
        } catch { /* closed */ }
        c.close();
      })());
    }
  })().catch(() => {});
  const proxy = new DelayProxy({
    target: { port: (server.addr as Deno.NetAddr).port },
    oneWayMs: 1,
    bandwidthMbit: 100,
  });
  const port = proxy.start();
  const c = await Deno.connect({ hostname: "127.0.0.1", port });
  const buf = new Uint8Array(16);
  await c.write(new TextEncoder().encode("one"));
  assert.equal(await c.read(buf), 3);
  assert.equal(proxy.stats().exchanges, 1);
  proxy.cut();
  assert.ok(proxy.isCut);
  await c.write(new TextEncoder().encode("lost"));
  // Nothing comes back while cut: the read is still pending after the bytes were dropped.
  const pending = c.read(buf);
  let answered = false;
  pending.then(() => answered = true, () => answered = true);
  for (let i = 0; i < 200 && proxy.stats().dropped < 4; i++) {
    await new Promise((r) => setTimeout(r, 5));
  }
  assert.equal(proxy.stats().dropped, 4);
  assert.equal(answered, false);
  // A connection made during the cut reaches nothing either.
  const during = await Deno.connect({ hostname: "127.0.0.1", port });
  await during.write(new TextEncoder().encode("x"));
  // Heal: both broken streams end; a new connection works again.
  proxy.cut(false);
  assert.equal(await pending.catch(() => null), null);
  assert.equal(await during.read(buf).catch(() => null), null);
  const again = await Deno.connect({ hostname: "127.0.0.1", port });
  await again.write(new TextEncoder().encode("two"));
  assert.equal(await again.read(buf), 3);
  assert.equal(proxy.stats().bytesDown, 6);
  for (const x of [c, during, again]) {
    try {
      x.close();
    } catch { /* closed */ }
  }
  await proxy.stop();
  server.close();
  await serving;
  await Promise.all(echoes);
});
