/**
 * A skyfs daemon with the shim server attached, for tests/shim and bench/shim: what
 * `skyfs mount` does (src/mount.ts) plus startShimServer, until src/mount.ts wires the shim
 * itself. Usage: deno run -A tests/shim/_daemon.ts MOUNTPOINT DATADIR
 * @module
 */

import { resolve } from "node:path";
import { checkMountPoint } from "../../src/mount.ts";
import { FuseDevice } from "../../src/fuse/session.ts";
import { FuseServer } from "../../src/fuse/server.ts";
import { notifyInvalInode } from "../../src/fuse/wire.ts";
import { openDataDir } from "../../src/datadir.ts";
import { openEmbeddedKV } from "../../src/meta/embedded.ts";
import { openIoEngine } from "../../src/io/mod.ts";
import { createVfs } from "../../src/vfs/mod.ts";
import { startShimServer } from "../../src/intercept/mod.ts";

const [mountArg, dataArg] = Deno.args;
if (!mountArg || !dataArg) {
  console.error("usage: _daemon.ts MOUNTPOINT DATADIR");
  Deno.exit(2);
}
const path = checkMountPoint(mountArg);
const dataDir = openDataDir(resolve(dataArg));
const kv = await openEmbeddedKV(`${dataDir.path}/meta.db`);
const io = await openIoEngine();
const vfs = await createVfs({ kv, io, dataDir: dataDir.path });
const device = FuseDevice.mount(path, {
  options: ["default_permissions", "allow_other"],
  fsname: "skyfs",
  subtype: "skyfs",
});
const server = new FuseServer(device, vfs, {
  // SKYFS_TEST_PASSTHROUGH=0 gives plain FUSE (the shim is then refused: see README.md).
  passthrough: Deno.env.get("SKYFS_TEST_PASSTHROUGH") !== "0",
  validity: { entrySeconds: 10, attrSeconds: 10 },
  onInit: (n) => console.error(`skyfs: passthrough ${n.passthrough ? "on" : "off"}`),
  onInternalError: (op, error) => console.error(`skyfs: internal error in ${op}: ${error}`),
});
const shim = startShimServer({
  mountPoint: path,
  dataDir: dataDir.path,
  passthrough: () => server.negotiated?.passthrough === true,
  invalidate: (ino) => device.writeMessage(notifyInvalInode(ino, -1, 0) as Uint8Array<ArrayBuffer>),
});
const stop = () => device.unmount();
Deno.addSignalListener("SIGINT", stop);
Deno.addSignalListener("SIGTERM", stop);
console.error(`skyfs: mounted ${path} with shim socket @${shim.socketName}`);
try {
  await server.serve();
} finally {
  await shim.close();
  device.unmount();
  await io.shutdown();
  console.error(`skyfs: unmounted ${path}; shim ${JSON.stringify(shim.stats)}`);
}
