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
