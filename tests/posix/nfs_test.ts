/**
 * skyfs exported over NFS (issue 18 point 4). This kernel has no NFS server and no NFS client
 * (neither `nfsd` nor `nfs`/`nfs4` in /proc/filesystems, no modules to load: FACTS.md), so the
 * export is served by the userspace NFS server nfs-ganesha with its VFS FSAL, which reaches
 * every file of the export through `name_to_handle_at`/`open_by_handle_at` on the skyfs mount,
 * and is read and written with libnfs's userspace NFSv4 client (`nfs-ls`, `nfs-cat`, `nfs-cp`),
 * all on loopback. Between the client's calls the kernel's dentries and inodes are dropped
 * (`echo 2 > /proc/sys/vm/drop_caches`), so ganesha's cached handles must be decoded by skyfs
 * (LOOKUP of "." and ".."). Needs root and the Debian packages nfs-ganesha, nfs-ganesha-vfs and
 * libnfs-utils (scripts/setup.sh); without them it fails.
 * @module
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { freePort } from "../../src/cluster/local_cluster.ts";
import { makeTempDir, startMount, targetKinds } from "../_harness.ts";

const GANESHA = "/usr/bin/ganesha.nfsd";

async function run(program: string, args: string[]): Promise<{ code: number; out: string }> {
  const output = await new Deno.Command(program, { args, stdout: "piped", stderr: "piped" })
    .output();
  const decode = (bytes: Uint8Array) => new TextDecoder().decode(bytes);
  return { code: output.code, out: decode(output.stdout) + decode(output.stderr) };
}

function dropCaches(): void {
  Deno.writeTextFileSync("/proc/sys/vm/drop_caches", "2");
}

/** Resolves once something accepts TCP connections on 127.0.0.1:port; throws after 30 s. */
async function waitListening(port: number, log: () => string): Promise<void> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      (await Deno.connect({ hostname: "127.0.0.1", port })).close();
      return;
    } catch {
      if (Date.now() > deadline) {
        throw new Error(`ganesha.nfsd did not listen on port ${port} within 30 s:\n${log()}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
}

Deno.test({
  name: "nfs: skyfs exported by nfs-ganesha (VFS FSAL, file handles), read and written over NFSv4",
  ignore: !targetKinds().includes("skyfs"),
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    for (const program of [GANESHA, "/usr/bin/nfs-ls", "/usr/bin/nfs-cat", "/usr/bin/nfs-cp"]) {
      assert.ok(
        (await Deno.stat(program).catch(() => null))?.isFile,
        `${program} is missing: install nfs-ganesha, nfs-ganesha-vfs and libnfs-utils ` +
          `(scripts/setup.sh does)`,
      );
    }
    const mount = await startMount();
    const work = await makeTempDir("nfs");
    let ganesha: Deno.ChildProcess | undefined;
    try {
      const root = join(mount.mountpoint, "export");
      await Deno.mkdir(join(root, "sub"), { recursive: true });
      await Deno.writeTextFile(join(root, "hello.txt"), "hello over nfs\n");
      await Deno.writeTextFile(join(root, "sub", "inner.txt"), "inner\n");
      const port = freePort();
      await Deno.mkdir(join(work, "recovery"));
      const config = join(work, "ganesha.conf");
      await Deno.writeTextFile(
        config,
        `
NFS_CORE_PARAM { Protocols = 4; NFS_Port = ${port}; Bind_addr = 127.0.0.1;
  Enable_NLM = false; Enable_RQUOTA = false; }
NFSV4 { Graceless = true; RecoveryBackend = fs; RecoveryRoot = ${join(work, "recovery")}; }
EXPORT { Export_Id = 1; Path = ${root}; Pseudo = /skyfs; Access_Type = RW;
  Squash = No_Root_Squash; SecType = sys; Protocols = 4; FSAL { Name = VFS; } }
`,
      );
      const logFile = join(work, "ganesha.log");
      const log = () => {
        try {
          return Deno.readTextFileSync(logFile);
        } catch {
          return "(no log)";
        }
      };
      ganesha = new Deno.Command(GANESHA, {
        args: [
          "-F",
          "-L",
          logFile,
          "-f",
          config,
          "-p",
          join(work, "ganesha.pid"),
          "-N",
          "NIV_EVENT",
        ],
        stdout: "null",
        stderr: "null",
      }).spawn();
      await waitListening(port, log);
      const url = (path: string) => `nfs://127.0.0.1/skyfs${path}?version=4&nfsport=${port}`;

      const listing = await run("nfs-ls", [url("")]);
      assert.equal(listing.code, 0, listing.out);
      assert.match(listing.out, / hello\.txt\n/);
      assert.match(listing.out, / sub\n/);

      // Ganesha now holds handles of the entries; the kernel forgets the inodes.
      dropCaches();
      const hello = await run("nfs-cat", [url("/hello.txt")]);
      assert.equal(hello.out, "hello over nfs\n", `ganesha log:\n${log()}`);
      dropCaches();
      const inner = await run("nfs-cat", [url("/sub/inner.txt")]);
      assert.equal(inner.out, "inner\n", `ganesha log:\n${log()}`);

      // A file created and written over NFS. One WRITE of 4000 bytes or more from libnfs 4.0's
      // nfs-cp fails against ganesha 4.3 here ("Failed to write to dest file") on an ext4 export
      // as well, so the upload stays below that; the large transfer is the read below.
      const local = join(work, "upload.bin");
      const small = new Uint8Array(3000).map((_, i) => (i * 7919) % 251);
      await Deno.writeFile(local, small);
      const copied = await run("nfs-cp", [local, url("/sub/upload.bin")]);
      assert.equal(copied.code, 0, copied.out);
      dropCaches();
      assert.deepEqual(await Deno.readFile(join(root, "sub", "upload.bin")), small);

      // 3 MB written through the mount, read back over NFS after the kernel forgot it.
      const data = new Uint8Array(3_000_000).map((_, i) => (i * 7919) % 251);
      await Deno.writeFile(join(root, "sub", "big.bin"), data);
      dropCaches();
      const back = await run("nfs-cp", [url("/sub/big.bin"), join(work, "back.bin")]);
      assert.equal(back.code, 0, back.out);
      assert.deepEqual(await Deno.readFile(join(work, "back.bin")), data);

      // A file removed through the mount is gone for NFS too.
      await Deno.remove(join(root, "hello.txt"));
      dropCaches();
      const gone = await run("nfs-cat", [url("/hello.txt")]);
      assert.notEqual(gone.code, 0, `removed file still read: ${gone.out}`);
    } finally {
      if (ganesha) {
        try {
          ganesha.kill("SIGTERM");
        } catch { /* already exited */ }
        await ganesha.status;
      }
      await mount.dispose();
      await Deno.remove(work, { recursive: true }).catch(() => {});
    }
  },
});
