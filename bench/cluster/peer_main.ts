/**
 * Node A of bench/cluster/main.ts in its own process, as a deployed daemon is: opens A's cache
 * directory and serves peers with the code a `skyfs mount` node runs (listenPeers +
 * ClusterData.serveChunk), plus a plain Deno TCP sender for the loopback baseline in the same
 * shape (this process sends, the benchmark process receives, same write sizes). Prints one JSON
 * line `{"peer": "host:port", "tcp": "host:port"}` when ready; exits when stdin closes.
 * Usage (by main.ts): deno run -A bench/cluster/peer_main.ts --dir D --backend B --node-id ID
 * @module
 */

import { parseArgs } from "node:util";
import { openEmbeddedKV } from "../../src/meta/embedded.ts";
import { Namespace } from "../../src/meta/namespace.ts";
import { openIoEngine } from "../../src/io/mod.ts";
import { LocalStore } from "../../src/cache/local.ts";
import { DirBackend } from "../../src/cache/backend.ts";
import { ClusterData } from "../../src/cache/cluster_data.ts";
import { recycleBuffer } from "../../src/cache/buffer_pool.ts";
import { PIECE_BYTES } from "../../src/cluster/transport.ts";
import { openPeers } from "../../src/cluster/uring_transport.ts";
import { HEADER_BYTES } from "../../src/cluster/peer_wire.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    dir: { type: "string" },
    backend: { type: "string" },
    "node-id": { type: "string" },
  },
});
if (!values.dir || !values.backend || !values["node-id"]) {
  throw new Error("usage: peer_main.ts --dir D --backend B --node-id ID (started by main.ts)");
}

const io = await openIoEngine({ log: () => {} });
const backend = await DirBackend.open(values.backend);
const data = new ClusterData(values.dir, { nodeId: values["node-id"], backend });
// Serving peers needs only the local store; the namespace is never read by serveChunk.
const kv = await openEmbeddedKV(":memory:");
const local = await LocalStore.open(io, values.dir);
await data.attach(await Namespace.open(kv), local, io);

// A long-running daemon has checked its chunks once (the first serve of each after a start
// reads and checks it whole); do that now so the rounds measure the steady state.
let benchIno = 0;
for (const row of data.index.oldest(Number.MAX_SAFE_INTEGER)) {
  benchIno = row.ino;
  const served = await data.serveChunk(row.ino, row.index, row);
  if (served instanceof Uint8Array) recycleBuffer(served);
  else served.done();
}

// The server a mount node opens with this engine (io_uring: splice from the cache file).
const { server, transport } = openPeers(io, "127.0.0.1", 0, (r) =>
  data.serveChunk(r.ino, r.index, {
    version: r.version,
    length: r.length,
    crc: r.crc,
    objectLength: r.objectLength,
  }));
transport.close(); // only the server is used here

// Loopback baseline: a request of 8 bytes (u64 BE byte count), answered with that many bytes in
// writes of one piece each (the first carrying a frame header's worth more, as the peer server's).
// With the top bit of the count set, each piece is first read from A's cache file (the file the
// benchmark reads, from offset 0, through the io engine): the same bytes the peer path sends,
// from the page cache rather than from one buffer that stays in the CPU cache.
const cacheFile = local.path(benchIno);
const tcp = Deno.listen({ hostname: "127.0.0.1", port: 0 });
const payload = new Uint8Array(HEADER_BYTES + PIECE_BYTES);
crypto.getRandomValues(payload.subarray(0, 65536));
(async () => {
  for await (const conn of tcp) {
    (async () => {
      conn.setNoDelay(true);
      const request = new Uint8Array(8);
      for (let got = 0; got < 8;) {
        const n = await conn.read(request.subarray(got));
        if (n === null) return;
        got += n;
      }
      const view = new DataView(request.buffer);
      const fromFile = (view.getUint32(0) & 0x8000_0000) !== 0;
      const total = (view.getUint32(0) & 0x7fff_ffff) * 2 ** 32 + view.getUint32(4);
      const fd = fromFile ? await io.open(cacheFile, 0) : -1;
      let from = 0;
      for (let sent = 0; sent < total;) {
        const end = Math.min(payload.length, from + total - sent);
        if (fd >= 0) await io.read(fd, payload.subarray(from, end), sent);
        for (let at = from; at < end;) {
          const n = await conn.write(payload.subarray(at, end));
          at += n;
          sent += n;
        }
        from = HEADER_BYTES;
      }
      if (fd >= 0) await io.close(fd);
    })().catch((e) => console.error(`peer_main: loopback sender: ${e}`)).finally(() => {
      try {
        conn.close();
      } catch { /* closed */ }
    });
  }
})().catch(() => {/* listener closed */});

const tcpAddr = tcp.addr as Deno.NetAddr;
console.log(JSON.stringify({ peer: server.address, tcp: `127.0.0.1:${tcpAddr.port}` }));

// Until the benchmark closes our stdin.
for await (const _ of Deno.stdin.readable) { /* nothing is sent */ }
server.close();
tcp.close();
await data.close();
await kv.close();
await backend.close();
await io.shutdown();
