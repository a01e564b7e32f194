/**
 * The emulated cross-zone links of a `LocalCluster` (`rttMs`), in a process of their own: delay
 * proxies (delay_proxy.ts) and each zone's backend directory served over HTTP
 * (backend_http.ts), managed through a small HTTP control API on 127.0.0.1. They must not run in
 * the process that drives the mounts: a close(2) on a FUSE file blocks that process's thread while
 * the daemon publishes through metadata, and a proxy on that thread could not forward the publish
 * (each close then waited for the CURP timeout: seen in tests/cluster/zone_loss_test.ts).
 *
 * Control: `POST /link {port, oneWayMs, bandwidthMbit?}` -> `{id, address}`;
 * `POST /serve {dir}` -> `{address}`; `GET /stats` -> `{[id]: DelayProxyStats}`;
 * `POST /cut {ids, cut}`. Prints `control ADDRESS` once it listens; exits on SIGTERM or when
 * its stdin closes (the cluster's process died).
 * @module
 */

import { DelayProxy } from "./delay_proxy.ts";
import { serveDirBackend } from "../cache/backend_http.ts";

const proxies = new Map<string, DelayProxy>();
const servers: { stop: () => Promise<void> }[] = [];
let next = 0;

const control = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (req) => {
  const url = new URL(req.url);
  try {
    if (req.method === "GET" && url.pathname === "/stats") {
      return Response.json(
        Object.fromEntries([...proxies].map(([id, p]) => [id, { ...p.stats(), cut: p.isCut }])),
      );
    }
    const body = await req.json();
    if (url.pathname === "/link") {
      const proxy = new DelayProxy({
        target: { port: body.port },
        oneWayMs: body.oneWayMs,
        bandwidthMbit: body.bandwidthMbit,
      });
      proxy.start();
      const id = `l${next++}`;
      proxies.set(id, proxy);
      return Response.json({ id, address: proxy.address });
    }
    if (url.pathname === "/serve") {
      const server = await serveDirBackend(body.dir);
      servers.push(server);
      return Response.json({ address: server.address });
    }
    if (url.pathname === "/cut") {
      for (const id of body.ids as string[]) proxies.get(id)?.cut(body.cut);
      return Response.json({ ok: true });
    }
    return new Response("no such path", { status: 404 });
  } catch (error) {
    return new Response((error as Error).message, { status: 500 });
  }
});

async function stop(): Promise<never> {
  for (const proxy of proxies.values()) await proxy.stop();
  for (const server of servers) await server.stop();
  Deno.exit(0);
}

Deno.addSignalListener("SIGTERM", () => void stop());
console.log(`control ${(control.addr as Deno.NetAddr).hostname}:${control.addr.port}`);
// The parent holds our stdin: its end closing means the cluster is gone.
void (async () => {
  for await (const _ of Deno.stdin.readable) { /* nothing is sent */ }
  await stop();
})();
