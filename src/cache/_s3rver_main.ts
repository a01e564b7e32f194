/**
 * A real S3-compatible server (the npm package s3rver) as its own process, for tests and the
 * local cluster: `deno run -A _s3rver_main.ts DIR BUCKET` prints `port N` once it listens.
 * @module
 */

import S3rver from "s3rver";

const [directory, bucket] = Deno.args;
if (!directory || !bucket) {
  console.error("usage: _s3rver_main.ts DIR BUCKET");
  Deno.exit(2);
}
const server = new S3rver({
  port: 0,
  address: "127.0.0.1",
  silent: true,
  directory,
  configureBuckets: [{ name: bucket }],
});
const { port } = await server.run();
console.log(`port ${port}`);
Deno.addSignalListener("SIGTERM", () => server.close().then(() => Deno.exit(0)));
