/** The endpoint record: written and removed by its own daemon only, advertised to the cluster
 * with a reachable host, and refused for mounts that are not skyfs. */

import assert from "node:assert/strict";
import { join } from "node:path";
import { advertiseEndpoint, findEndpoint, mountAt, publishEndpoint } from "./endpoint_file.ts";

Deno.test("publishEndpoint writes the record named by the device number; removal is its own", () => {
  const dir = Deno.makeTempDirSync({ prefix: "skyfs-endpoint-" });
  try {
    const root = mountAt("/")!;
    const file = join(dir, `http-${root.major}-${root.minor}.json`);
    const unpublish = publishEndpoint("/", "127.0.0.1:9570", { dir });
    assert.deepEqual(JSON.parse(Deno.readTextFileSync(file)), {
      address: "127.0.0.1:9570",
      pid: Deno.pid,
      mountPoint: "/",
    });
    // A later daemon took the device number over: the earlier one's clean-up leaves it alone.
    const other = { address: "127.0.0.1:1", pid: Deno.pid + 1, mountPoint: "/" };
    Deno.writeTextFileSync(file, JSON.stringify(other));
    unpublish();
    assert.deepEqual(JSON.parse(Deno.readTextFileSync(file)), other);
    publishEndpoint("/", "127.0.0.1:9570", { dir })();
    assert.throws(() => Deno.statSync(file), Deno.errors.NotFound);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("findEndpoint refuses a path that is not a skyfs mount, naming what it is", () => {
  const fstype = mountAt("/")!.fstype;
  assert.throws(() => findEndpoint("/"), {
    message: `"/" is a ${fstype} mount, not skyfs; pass a skyfs mount point or HOST:PORT`,
  });
  assert.throws(() => findEndpoint("/no/such/dir"), /is not a mount point/);
});

Deno.test("advertiseEndpoint gives the cluster a reachable address for a wildcard bind", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "skyfs-endpoint-" });
  const advertised: string[] = [];
  const membership = {
    self: { address: "10.1.2.3:7400" },
    advertiseHttp: (address: string) => {
      advertised.push(address);
      return Promise.resolve();
    },
  };
  const lines: string[] = [];
  try {
    advertiseEndpoint("/", "0.0.0.0:9570", { membership, log: (l) => lines.push(l), dir })();
    advertiseEndpoint("/", "[::]:9571", { membership, log: (l) => lines.push(l), dir })();
    advertiseEndpoint("/", "10.9.9.9:9572", { membership, log: (l) => lines.push(l), dir })();
    // Not a mount point: logged, not thrown (the daemon keeps serving).
    advertiseEndpoint("/no/such/dir", "10.9.9.9:9572", { log: (l) => lines.push(l), dir })();
    await Promise.resolve();
    assert.deepEqual(advertised, ["10.1.2.3:9570", "10.1.2.3:9571", "10.9.9.9:9572"]);
    assert.equal(lines.length, 1);
    assert.match(lines[0], /^skyfs: cannot publish the HTTP address for skyfs stats: /);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});
