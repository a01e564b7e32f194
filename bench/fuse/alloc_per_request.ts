/**
 * JS heap allocated per cheap request through `FuseServer.handleRequest`, and where: GETATTR,
 * LOOKUP, and OPEN + RELEASE (counted as one operation) of cached files, replies to a sink as in
 * handler_cpu.ts (src/fuse/README.md, "GC, and where a cheap request's CPU goes").
 *
 * Usage: deno run -A --v8-flags=--min-semi-space-size=64,--max-semi-space-size=64 \
 *   bench/fuse/alloc_per_request.ts [--root DIR] [--files 500] [--reps 20] [--sites 12]
 *
 * Per operation: the growth of `heapUsed` over one pass (semi-spaces large enough that no
 * scavenge runs inside it), then V8's sampling heap profiler over `--reps` passes (objects
 * collected by scavenges included) with the top allocation sites per request. With
 * `--survivors`, the profile keeps only objects that outlived the scavenges (what is promoted).
 * @module
 */

import { parseArgs } from "node:util";
import { Session } from "node:inspector";

const { values } = parseArgs({
  options: {
    root: { type: "string", default: "." },
    files: { type: "string", default: "500" },
    reps: { type: "string", default: "20" },
    sites: { type: "string", default: "12" },
    survivors: { type: "boolean", default: false },
  },
});
const files = Number(values.files);
const reps = Number(values.reps);
const base = new URL(`file://${Deno.realPathSync(values.root)}/`);
const testing = await import(new URL("src/vfs/_testing.ts", base).href);
const serverMod = await import(new URL("src/fuse/server.ts", base).href);
const fixture = await testing.openFixture();
const vfs = fixture.vfs;
const encoder = new TextEncoder();
const root = { uid: 0, gid: 0, pid: 1 };

function request(opcode: number, nodeid: number, body: Uint8Array): Uint8Array {
  const bytes = new Uint8Array(40 + body.length);
  const dv = new DataView(bytes.buffer);
  dv.setUint32(0, bytes.length, true);
  dv.setUint32(4, opcode, true);
  dv.setBigUint64(8, 1n, true);
  dv.setBigUint64(16, BigInt(nodeid), true);
  bytes.set(body, 40);
  return bytes;
}

const dir = await vfs.mkdir(root, 1, encoder.encode("d"), 0o755, 0);
const getattrs: Uint8Array[] = [];
const lookups: Uint8Array[] = [];
const opens: Uint8Array[] = [];
const releases: Uint8Array[] = [];
for (let i = 0; i < files; i++) {
  const made = await vfs.create(root, dir.ino, encoder.encode(`f${i}`), 0o100644, 0, 2);
  await vfs.write(root, made.attr.ino, made.fh, 0, new Uint8Array(1024));
  await vfs.release(made.attr.ino, made.fh, 0);
  await vfs.getattr(root, made.attr.ino);
  getattrs.push(request(3, made.attr.ino, new Uint8Array(16)));
  lookups.push(request(1, dir.ino, encoder.encode(`f${i}\0`)));
  opens.push(request(14, made.attr.ino, new Uint8Array(8)));
  releases.push(request(18, made.attr.ino, new Uint8Array(24)));
}
// deno-lint-ignore no-explicit-any
const server = new serverMod.FuseServer({ backingOpen: () => -1 } as any, vfs);
let sink = 0;
let fh = 0n;
const send = (out: Uint8Array | null) => {
  if (!out) return;
  sink += out[0];
  if (out.length >= 24) fh = new DataView(out.buffer, out.byteOffset).getBigUint64(16, true);
};
const passes: [string, () => void][] = [
  ["getattr", () => getattrs.forEach((r) => server.handleRequest(r, send))],
  ["lookup", () => lookups.forEach((r) => server.handleRequest(r, send))],
  ["open+release", () => {
    for (let i = 0; i < opens.length; i++) {
      server.handleRequest(opens[i], send);
      new DataView(releases[i].buffer).setBigUint64(40, fh, true);
      server.handleRequest(releases[i], send);
    }
  }],
];

const session = new Session();
session.connect();
// deno-lint-ignore no-explicit-any
const post = (method: string, params: object = {}): Promise<any> =>
  new Promise((resolve, reject) =>
    session.post(method, params, (error, result) => error ? reject(error) : resolve(result))
  );
await post("HeapProfiler.enable");

interface ProfileNode {
  callFrame: { functionName: string; url: string; lineNumber: number };
  selfSize: number;
  children: ProfileNode[];
}

for (const [name, pass] of passes) {
  for (let i = 0; i < 3; i++) pass(); // warm up (the JIT)
  const before = Deno.memoryUsage().heapUsed;
  pass();
  const grown = Deno.memoryUsage().heapUsed - before;
  await post("HeapProfiler.startSampling", {
    samplingInterval: 128,
    includeObjectsCollectedByMinorGC: !values.survivors,
    includeObjectsCollectedByMajorGC: true,
  });
  for (let i = 0; i < reps; i++) pass();
  const { profile } = await post("HeapProfiler.stopSampling");
  const sites = new Map<string, number>();
  let total = 0;
  const walk = (node: ProfileNode, parent: string) => {
    const f = node.callFrame;
    const here = `${f.functionName || "(anonymous)"} ${f.url.split("/").slice(-2).join("/")}:${
      f.lineNumber + 1
    }`;
    total += node.selfSize;
    if (node.selfSize > 0) {
      const key = `${here} (in ${parent})`;
      sites.set(key, (sites.get(key) ?? 0) + node.selfSize);
    }
    for (const child of node.children) walk(child, here.split(" ")[0]);
  };
  walk(profile.head, "");
  const per = reps * files;
  console.log(
    `${name}: heapUsed +${(grown / files).toFixed(0)} bytes/operation in one pass; sampled ${
      (total / per).toFixed(0)
    } bytes/operation${values.survivors ? " (survivors of scavenges)" : ""}`,
  );
  for (
    const [site, bytes] of [...sites].sort((a, b) => b[1] - a[1]).slice(0, Number(values.sites))
  ) {
    console.log(`  ${(bytes / per).toFixed(0).padStart(6)} ${site}`);
  }
}
if (sink < 0) console.log(sink);
session.disconnect();
await fixture.cleanup();
