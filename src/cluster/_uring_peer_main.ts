/**
 * Test helper for uring_transport_test.ts: a process that writes `bytes` random bytes to `path`
 * and serves them over the io_uring peer server as chunks of CHUNK_BYTES (default 1 MiB) (from the file, by splice),
 * printing its address on one line. Runs until killed.
 * Usage: deno run -A src/cluster/_uring_peer_main.ts PATH BYTES [CHUNK_BYTES]
 * @module
 */

import { openUringEngine } from "../io/uring.ts";
import { listenPeersUring } from "./uring_transport.ts";

const [path, bytes] = [Deno.args[0], Number(Deno.args[1])];
const chunk = Number(Deno.args[2] ?? 1 << 20);
const content = new Uint8Array(bytes);
for (let i = 0; i < bytes; i += 65536) crypto.getRandomValues(content.subarray(i, i + 65536));
await Deno.writeFile(path, content);
const io = openUringEngine({ queueDepth: 16 });
const fd = await io.open(path, 0);
const server = listenPeersUring(io, "127.0.0.1", 0, (r) =>
  Promise.resolve({
    length: chunk,
    fd,
    start: r.index * chunk,
    unchanged: () => true,
    read: async (into: Uint8Array, offset: number) => {
      await io.read(fd, into, r.index * chunk + offset);
    },
    done: () => {},
  }));
console.log(server.address);
