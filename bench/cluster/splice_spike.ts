/**
 * Spike for the zero-copy peer path: node A (a child process) sends a page-cached file to a TCP
 * socket with io_uring splice (file -> pipe -> socket, no copy through user space), node B (this
 * process) receives it into one reused buffer, either with io_uring recv MSG_WAITALL or Deno's
 * conn.read; beside plain Deno TCP between the same two processes (write and read of the same
 * sizes), interleaved per round. Prints MiB/s and CPU ms/GiB of each side (schedstat).
 * Usage: deno run -A bench/cluster/splice_spike.ts [--mib 128] [--rounds 5] [--piece-kib 1024]
 * @module
 */

import { parseArgs } from "node:util";
import { fileURLToPath } from "node:url";
import { openUringEngine } from "../../src/io/uring.ts";
import { pipe, sockaddrIn, tcpListen, tcpSocket } from "../../src/io/sockets.ts";
import { cpuNs } from "./cpu.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    mib: { type: "string" },
    rounds: { type: "string" },
    "piece-kib": { type: "string" },
    serve: { type: "string" },
  },
});
const MIB = Number(values.mib ?? 128);
const SIZE = MIB << 20;
const PIECE = Number(values["piece-kib"] ?? 1024) << 10;

if (values.serve) {
  // Node A.
  const io = openUringEngine({ spinUs: Number(Deno.env.get("SPIN") ?? 50) });
  const file = await Deno.open(values.serve);
  const fileFd = await io.open(values.serve, 0);
  file.close();
  const [listenFd, port] = tcpListen("127.0.0.1", 0);
  const sendfile = Deno.dlopen("libc.so.6", {
    sendfile: { parameters: ["i32", "i32", "buffer", "usize"], result: "isize", nonblocking: true },
  });
  const plain = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const payload = new Uint8Array(PIECE);
  crypto.getRandomValues(payload.subarray(0, 65536));
  (async () => {
    for (;;) {
      const fd = await io.accept(listenFd);
      (async () => {
        const p = pipe(PIECE);
        const request = new Uint8Array(8);
        for (;;) {
          const n = await io.recv(fd, request, 0x100);
          if (n < 8) break;
          const total = new DataView(request.buffer).getUint32(4);
          if (new DataView(request.buffer).getUint32(0) === 1) {
            const off = new BigInt64Array(1);
            for (let done = 0; done < total;) {
              const r = Number(
                await sendfile.symbols.sendfile(
                  fd,
                  fileFd,
                  new Uint8Array(off.buffer),
                  BigInt(Math.min(PIECE, total - done)),
                ),
              );
              if (r <= 0) throw new Error(`sendfile ${r}`);
              done += r;
            }
          } else await io.spliceToSocket(fileFd, 0, total, p.fds, p.capacity, fd);
        }
        await io.close(fd);
      })().catch((e) => console.error(`A: ${e}`));
    }
  })().catch(() => {});
  (async () => {
    for await (const conn of plain) {
      (async () => {
        conn.setNoDelay(true);
        const request = new Uint8Array(8);
        for (;;) {
          for (let got = 0; got < 8;) {
            const n = await conn.read(request.subarray(got));
            if (n === null) return;
            got += n;
          }
          const total = new DataView(request.buffer).getUint32(4);
          for (let sent = 0; sent < total;) {
            sent += await conn.write(payload.subarray(0, Math.min(PIECE, total - sent)));
          }
        }
      })().catch(() => {}).finally(() => conn.close());
    }
  })();
  console.log(JSON.stringify({ splice: port, plain: (plain.addr as Deno.NetAddr).port }));
  for await (const _ of Deno.stdin.readable) { /* until closed */ }
  Deno.exit(0);
}

// Node B.
const dir = await Deno.makeTempDir({ prefix: "peerzc-spike-" });
const path = `${dir}/data`;
{
  const f = await Deno.open(path, { write: true, create: true });
  const block = new Uint8Array(1 << 20);
  for (let i = 0; i < MIB; i++) {
    crypto.getRandomValues(block.subarray(0, 65536));
    await f.write(block);
  }
  f.close();
  await Deno.readFile(path); // into the page cache
}
const child = new Deno.Command(Deno.execPath(), {
  args: [
    "run",
    "-A",
    fileURLToPath(import.meta.url),
    "--serve",
    path,
    "--piece-kib",
    `${PIECE >> 10}`,
  ],
  stdin: "piped",
  stdout: "piped",
  stderr: "inherit",
}).spawn();
const ports = await (async () => {
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  while (!text.includes("\n")) text += (await reader.read()).value ?? "";
  reader.releaseLock();
  return JSON.parse(text) as { splice: number; plain: number };
})();
const io = openUringEngine({ spinUs: Number(Deno.env.get("SPIN") ?? 50) });
const request = new Uint8Array(8);
new DataView(request.buffer).setUint32(4, SIZE);
const buffer = new Uint8Array(PIECE);

const plainConn = await Deno.connect({ hostname: "127.0.0.1", port: ports.plain });
plainConn.setNoDelay(true);
const spliceDeno = await Deno.connect({ hostname: "127.0.0.1", port: ports.splice });
spliceDeno.setNoDelay(true);
const spliceFd = tcpSocket();
await io.connect(spliceFd, sockaddrIn("127.0.0.1", ports.splice));

const denoRead = (conn: Deno.TcpConn) => async () => {
  await conn.write(request);
  for (let total = 0; total < SIZE;) {
    const n = await conn.read(buffer);
    if (n === null) throw new Error("closed");
    total += n;
  }
};
const sfRequest = request.slice();
new DataView(sfRequest.buffer).setUint32(0, 1);
const sendfileFd = tcpSocket();
await io.connect(sendfileFd, sockaddrIn("127.0.0.1", ports.splice));
const sfRecv = async () => {
  await io.send(sendfileFd, sfRequest);
  for (let total = 0; total < SIZE;) {
    const n = await io.recv(sendfileFd, buffer.subarray(0, Math.min(PIECE, SIZE - total)), 0x100);
    if (n <= 0) throw new Error("closed");
    total += n;
  }
};
const uringRecv = async () => {
  await io.send(spliceFd, request);
  for (let total = 0; total < SIZE;) {
    const n = await io.recv(spliceFd, buffer.subarray(0, Math.min(PIECE, SIZE - total)), 0x100);
    if (n <= 0) throw new Error("closed");
    total += n;
  }
};
const cases: Record<string, () => Promise<void>> = {
  "Deno TCP write -> Deno read": denoRead(plainConn),
  "splice -> Deno read": denoRead(spliceDeno),
  "splice -> uring recv WAITALL": uringRecv,
  "sendfile FFI -> uring recv WAITALL": sfRecv,
};
const results: Record<string, { mibs: number[]; b: number[]; a: number[] }> = {};
const load0 = Deno.readTextFileSync("/proc/loadavg").split(" ")[0];
for (let round = 0; round < Number(values.rounds ?? 5); round++) {
  for (const [name, run] of Object.entries(cases)) {
    const [b0, a0, t0] = [cpuNs("self"), cpuNs(child.pid), performance.now()];
    await run();
    const [b1, a1, t1] = [cpuNs("self"), cpuNs(child.pid), performance.now()];
    const r = results[name] ??= { mibs: [], b: [], a: [] };
    r.mibs.push(MIB / ((t1 - t0) / 1000));
    r.b.push((b1 - b0) / 1e6 / (MIB / 1024));
    r.a.push((a1 - a0) / 1e6 / (MIB / 1024));
  }
}
const median = (xs: number[]) => [...xs].sort((p, q) => p - q)[Math.floor(xs.length / 2)];
const base = median(results["Deno TCP write -> Deno read"].mibs);
console.log(
  `${MIB} MiB, pieces ${PIECE >> 10} KiB, load ${load0} -> ${
    Deno.readTextFileSync("/proc/loadavg").split(" ")[0]
  }`,
);
for (const [name, r] of Object.entries(results)) {
  console.log(
    `${name.padEnd(32)} ${median(r.mibs).toFixed(0).padStart(7)} MiB/s ${
      (median(r.mibs) / base).toFixed(2)
    }x  ` +
      `cpu ms/GiB B ${median(r.b).toFixed(0)} A ${median(r.a).toFixed(0)}  [${
        r.mibs.map((x) => x.toFixed(0)).join(" ")
      }]`,
  );
}
plainConn.close();
spliceDeno.close();
await child.stdin.close();
await child.status;
await io.shutdown();
await Deno.remove(dir, { recursive: true });
