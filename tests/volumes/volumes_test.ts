/**
 * Volumes with quotas on real mounts (issue 16 point 1): a process writing into a volume hits
 * EDQUOT at its capacity with nothing past it stored; `df` of a bind mount of the volume shows the
 * volume; the inode limit; EXDEV across volumes (`mv` copies); usage exact after truncate, unlink
 * of an open file and kill -9 of the mount mid-write; the admin API's status codes and token; the
 * `skyfs volume` command. Needs root and /dev/fuse.
 * @module
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { makeTempDir, type Mount, PYTHON, run, runSkyfs, startMount } from "../_harness.ts";
import { listeningUrl } from "../http/_http.ts";
import { until } from "../cluster/_cluster_util.ts";

const MiB = 1024 * 1024;
const TOKEN = "volumes-test-token-0123456789";

/** Python that writes `chunk` bytes at a time to argv[1] until `total` or an error; prints
 * `written errno` (errno 0: no error). */
const WRITER = `
import os, sys
path, chunk, total = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
written, err = 0, 0
data = b"x" * chunk
while written < total:
    try:
        n = os.write(fd, data)
    except OSError as e:
        err = e.errno
        break
    written += n
try:
    os.close(fd)
except OSError as e:
    err = err or e.errno
print(written, err)
`;

async function python(code: string, args: string[] = []): Promise<string> {
  return (await run(PYTHON, ["-c", code, ...args])).stdout.trim();
}

async function writeUntil(path: string, chunk: number, total: number) {
  const [written, errno] = (await python(WRITER, [path, String(chunk), String(total)]))
    .split(" ").map(Number);
  return { written, errno };
}

interface VolumeJson {
  name: string;
  path: string;
  capacityBytes: number;
  inodes: number;
  usedBytes: number;
  usedInodes: number;
}

class Api {
  constructor(readonly url: string) {}
  async call(method: string, path: string, body?: unknown, token: string | null = TOKEN) {
    const headers: Record<string, string> = {};
    if (token !== null) headers.authorization = `Bearer ${token}`;
    const response = await fetch(`${this.url}/api/v1${path}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await response.text();
    // deno-lint-ignore no-explicit-any
    const json: any = text ? JSON.parse(text) : undefined;
    return { status: response.status, json };
  }
  async volume(name: string): Promise<VolumeJson> {
    const { status, json } = await this.call("GET", `/volumes/${name}`);
    assert.equal(status, 200, JSON.stringify(json));
    return json;
  }
  async create(name: string, capacityBytes: number, inodes?: number): Promise<VolumeJson> {
    const { status, json } = await this.call("POST", "/volumes", { name, capacityBytes, inodes });
    assert.equal(status, 201, JSON.stringify(json));
    return json;
  }
}

async function withMount(body: (mount: Mount, api: Api, tokenFile: string) => Promise<void>) {
  const dir = await makeTempDir("volumes");
  const tokenFile = join(dir, "token");
  await Deno.writeTextFile(tokenFile, TOKEN + "\n");
  const mount = await startMount({
    extraArgs: ["--http", "127.0.0.1:0", "--http-token-file", tokenFile],
  });
  try {
    await body(mount, new Api(await listeningUrl(mount.stderr)), tokenFile);
  } finally {
    await mount.dispose();
    await Deno.remove(dir, { recursive: true });
  }
}

/** Sum of the sizes of the regular files under `dir` (what the namespace holds). */
async function sizesUnder(dir: string): Promise<number> {
  const out = await python(
    "import os,sys\nt=0\nfor r,_,fs in os.walk(sys.argv[1]):\n" +
      "  for f in fs: t+=os.lstat(os.path.join(r,f)).st_size\nprint(t)",
    [dir],
  );
  return Number(out);
}

Deno.test("volume: EDQUOT at the capacity, df of a bind mount shows the volume", async () => {
  await withMount(async (mount, api) => {
    await api.create("v1", 8 * MiB);
    const dir = join(mount.mountpoint, "volumes", "v1");
    const { written, errno } = await writeUntil(join(dir, "big"), MiB, 64 * MiB);
    assert.equal(errno, 122, `EDQUOT expected, got errno ${errno} after ${written} bytes`);
    assert.equal(written, 8 * MiB, "every byte up to the capacity was written, none past it");
    assert.equal((await Deno.stat(join(dir, "big"))).size, 8 * MiB);
    // dd too: the same EDQUOT for a second file, with nothing written.
    const dd = await run("dd", ["if=/dev/zero", `of=${dir}/dd`, "bs=64k", "count=4"], {
      check: false,
    });
    assert.notEqual(dd.code, 0);
    assert.match(dd.stderr, /Disk quota exceeded/);
    assert.equal((await Deno.stat(join(dir, "dd"))).size, 0);
    const usage = await api.volume("v1");
    assert.equal(usage.usedBytes, 8 * MiB);
    assert.equal(usage.usedInodes, 3);

    const bind = await makeTempDir("volume-bind");
    await run("mount", ["--bind", dir, bind]);
    try {
      const df = await run("df", ["-B1", "--output=size,used,avail", bind]);
      const [size, used, avail] = df.stdout.trim().split("\n")[1].trim().split(/\s+/).map(Number);
      assert.deepEqual([size, used, avail], [8 * MiB, 8 * MiB, 0], df.stdout);
      // Shrink is refused below usage; growing shows in df at once.
      assert.equal(
        (await api.call("POST", "/volumes/v1/resize", { capacityBytes: MiB })).status,
        409,
      );
      assert.equal(
        (await api.call("POST", "/volumes/v1/resize", { capacityBytes: 16 * MiB })).status,
        200,
      );
      const df2 = await run("df", ["-B1", "--output=size,avail", bind]);
      assert.deepEqual(df2.stdout.trim().split("\n")[1].trim().split(/\s+/).map(Number), [
        16 * MiB,
        8 * MiB,
      ]);
      // Outside the volumes, df shows the data directory's file system, not a volume.
      const dfRoot = await run("df", ["-B1", "--output=size", mount.mountpoint]);
      assert.notEqual(Number(dfRoot.stdout.trim().split("\n")[1]), 16 * MiB);
    } finally {
      await run("umount", [bind]);
      await Deno.remove(bind);
    }
  });
});

Deno.test("volume: inode limit, EXDEV across volumes and mv, truncate and unlink of an open file", async () => {
  await withMount(async (mount, api) => {
    await api.create("few", 64 * MiB, 4);
    await api.create("other", 64 * MiB);
    const few = join(mount.mountpoint, "volumes", "few");
    const other = join(mount.mountpoint, "volumes", "other");
    // The root counts as one inode: three more fit, the fourth is EDQUOT.
    const made = await python(
      "import os,sys\nn=0\ntry:\n  for i in range(10):\n" +
        "    os.mkdir(os.path.join(sys.argv[1], 'd%d' % i)) if i % 2 else " +
        "open(os.path.join(sys.argv[1], 'f%d' % i), 'w').close()\n    n+=1\n" +
        "except OSError as e:\n  print(n, e.errno)",
      [few],
    );
    assert.equal(made, "3 122");
    const dfi = await run("df", ["--output=itotal,iused,iavail", few]);
    assert.deepEqual(dfi.stdout.trim().split("\n")[1].trim().split(/\s+/).map(Number), [4, 4, 0]);

    // rename and link across volumes: EXDEV; mv copies and usage moves with the bytes.
    await Deno.writeFile(join(other, "a"), new Uint8Array(3 * MiB));
    const errnos = await python(
      "import os,sys\nr=[]\nfor f in (os.rename, os.link):\n  try:\n" +
        "    f(sys.argv[1], sys.argv[2])\n  except OSError as e:\n    r.append(e.errno)\nprint(r)",
      [join(other, "a"), join(mount.mountpoint, "a")],
    );
    assert.equal(errnos, "[18, 18]");
    await run("rm", [join(few, "f0")]);
    await run("mv", [join(other, "a"), join(few, "a")]);
    // mv's unlink of the source frees its bytes when the kernel forgets the inode (a FORGET that
    // can come after mv exits), as at the last close below.
    await until(async () => (await api.volume("other")).usedBytes === 0, "usage after mv's unlink");
    assert.equal((await api.volume("other")).usedBytes, 0);
    assert.equal((await api.volume("few")).usedBytes, 3 * MiB);

    // truncate: usage follows the size down and up.
    await run("truncate", ["-s", "1M", join(few, "a")]);
    assert.equal((await api.volume("few")).usedBytes, MiB);
    const tooBig = await run("truncate", ["-s", "100M", join(few, "a")], { check: false });
    assert.match(tooBig.stderr, /Disk quota exceeded/);
    assert.equal((await Deno.stat(join(few, "a"))).size, MiB);

    // unlink of an open file: counted until its last close.
    const child = new Deno.Command(PYTHON, {
      args: [
        "-c",
        "import os,sys\nfd=os.open(sys.argv[1], os.O_RDWR)\nos.unlink(sys.argv[1])\n" +
        "print('unlinked', flush=True)\nsys.stdin.read()\nos.close(fd)",
        join(few, "a"),
      ],
      stdin: "piped",
      stdout: "piped",
    }).spawn();
    const reader = child.stdout.getReader();
    assert.match(new TextDecoder().decode((await reader.read()).value), /unlinked/);
    const open = await api.volume("few");
    assert.deepEqual([open.usedBytes, open.usedInodes], [MiB, 4]);
    await child.stdin.close();
    reader.releaseLock();
    await child.output();
    await until(async () => (await api.volume("few")).usedBytes === 0, "usage after last close");
    assert.equal((await api.volume("few")).usedInodes, 3);
  });
});

Deno.test("volume: usage equals the namespace after kill -9 of the mount mid-write", async () => {
  await withMount(async (mount, api) => {
    await api.create("crash", 64 * MiB);
    const dir = join(mount.mountpoint, "volumes", "crash");
    // Two writers: one fsyncs every MiB, one never does; the mount dies under them.
    const writers = ["synced", "unsynced"].map((name) =>
      new Deno.Command(PYTHON, {
        args: [
          "-c",
          "import os,sys,time\nfd=os.open(sys.argv[1], os.O_WRONLY|os.O_CREAT, 0o644)\n" +
          "while os.fstat(fd).st_size < 30*1048576:\n  os.write(fd, b'y'*262144)\n" +
          "  time.sleep(0.01)\n" +
          "  if sys.argv[2]=='1' and os.fstat(fd).st_size % 1048576 == 0: os.fsync(fd)\n",
          join(dir, name),
          name === "synced" ? "1" : "0",
        ],
        stdout: "null",
        stderr: "null",
      }).spawn()
    );
    await until(async () => {
      try {
        return (await Deno.stat(join(dir, "synced"))).size >= 6 * MiB &&
          (await Deno.stat(join(dir, "unsynced"))).size >= 4 * MiB;
      } catch {
        return false;
      }
    }, "writers under way");
    await mount.kill9();
    assert.ok((await api.call("GET", "/volumes/crash").catch(() => undefined)) === undefined);
    for (const writer of writers) {
      try {
        writer.kill("SIGKILL");
      } catch { /* already gone with the mount */ }
      await writer.status;
    }
    await mount.restart();
    // The restarted daemon's endpoint: the second "listening" line.
    const second = () => mount.stderr().split("http: listening on").slice(2).join("");
    await until(() => second() !== "", "the restarted daemon's endpoint");
    const api2 = new Api(/^ (http:\/\/\S+)/.exec(second())![1]);
    const usage = await api2.volume("crash");
    const sizes = await sizesUnder(dir);
    assert.equal(usage.usedBytes, sizes, "usage is what the namespace holds");
    assert.ok(sizes >= 6 * MiB - MiB, `the fsync'd data is there (${sizes})`);
    assert.equal(usage.usedInodes, 3);
    // No reservation of the dead process is left: the whole rest of the capacity can be written.
    const { written, errno } = await writeUntil(join(dir, "fill"), MiB / 4, 128 * MiB);
    assert.equal(errno, 122);
    assert.equal(written + sizes, 64 * MiB);
  });
});

Deno.test("volume admin API: status codes of the contract, token required", async () => {
  await withMount(async (mount, api) => {
    const body = { name: "pvc-1", capacityBytes: 10 * MiB };
    assert.equal((await api.call("POST", "/volumes", body, null)).status, 401);
    assert.equal((await api.call("POST", "/volumes", body, "wrong-token-wrong-token")).status, 403);
    const created = await api.call("POST", "/volumes", { ...body, parameters: { tier: "fast" } });
    assert.equal(created.status, 201);
    assert.deepEqual(
      { ...created.json, createdAt: undefined },
      {
        name: "pvc-1",
        path: "/volumes/pvc-1",
        capacityBytes: 10 * MiB,
        inodes: 0,
        usedBytes: 0,
        usedInodes: 1,
        parameters: { tier: "fast" },
        createdAt: undefined,
      },
    );
    assert.equal((await api.call("POST", "/volumes", body)).status, 200);
    assert.equal((await api.call("POST", "/volumes", { ...body, capacityBytes: MiB })).status, 409);
    const bad = await api.call("POST", "/volumes", { name: "Bad_Name", capacityBytes: 1 });
    assert.equal(bad.status, 400);
    assert.equal(bad.json.field, "name");
    assert.match(bad.json.error, /\^\[a-z0-9\]/);
    assert.equal(
      (await api.call("POST", "/volumes", { name: "x", capacityBytes: -1 })).status,
      400,
    );
    for (const name of ["pvc-2", "pvc-3"]) await api.create(name, MiB);
    const page1 = await api.call("GET", "/volumes?limit=2");
    assert.equal(page1.status, 200);
    assert.deepEqual(page1.json.volumes.map((v: VolumeJson) => v.name), ["pvc-1", "pvc-2"]);
    const page2 = await api.call("GET", `/volumes?limit=2&start=${page1.json.next}`);
    assert.deepEqual(page2.json.volumes.map((v: VolumeJson) => v.name), ["pvc-3"]);
    assert.equal(page2.json.next, undefined);
    assert.equal((await api.call("GET", "/volumes?limit=0")).status, 400);
    assert.equal((await api.call("GET", "/volumes/pvc-9")).status, 404);
    assert.equal(
      (await api.call("POST", "/volumes/pvc-9/resize", { capacityBytes: 1 })).status,
      404,
    );
    assert.equal((await api.call("DELETE", "/volumes/pvc-2", undefined, null)).status, 401);
    assert.equal((await api.call("DELETE", "/volumes/pvc-2")).status, 204);
    assert.equal((await api.call("DELETE", "/volumes/pvc-2")).status, 404);
    // The kernel's cached names follow creates and deletes made through the API at once: a name
    // looked up before it existed, a deleted volume, the same name made again.
    const dir = join(mount.mountpoint, "volumes", "pvc-4");
    await assert.rejects(() => Deno.stat(dir), Deno.errors.NotFound);
    await api.create("pvc-4", MiB);
    assert.ok((await Deno.stat(dir)).isDirectory);
    await Deno.writeFile(join(dir, "f"), new Uint8Array(10));
    assert.equal((await api.call("DELETE", "/volumes/pvc-4")).status, 204);
    await assert.rejects(() => Deno.stat(dir), Deno.errors.NotFound);
    await api.create("pvc-4", MiB);
    assert.deepEqual([...Deno.readDirSync(dir)], []);
    const capacity = await api.call("GET", "/capacity");
    assert.equal(capacity.status, 200);
    assert.ok(capacity.json.totalBytes >= capacity.json.availableBytes);
    assert.ok(capacity.json.availableBytes > 0);
  });
});

Deno.test("skyfs volume: create, list, usage, resize, delete through the real command", async () => {
  await withMount(async (mount, api, tokenFile) => {
    const mp = mount.mountpoint;
    const token = ["--http-token-file", tokenFile];
    const bad = await runSkyfs(["volume", "create", mp, "Bad_Name", "--capacity", "1G", ...token]);
    assert.equal(bad.code, 1);
    assert.equal(
      bad.stderr.trim(),
      'skyfs: invalid volume name "Bad_Name": it must match ^[a-z0-9][a-z0-9._-]{0,127}$ ' +
        "(lower-case letters, digits, '.', '_', '-'; at most 128 characters)",
    );
    const noToken = await runSkyfs(["volume", "create", mp, "data", "--capacity", "1G"]);
    assert.equal(noToken.code, 1);
    assert.equal(noToken.stderr.trim(), "skyfs: this action needs Authorization: Bearer <token>");
    const noSize = await runSkyfs(["volume", "create", mp, "data", "--capacity", "lots", ...token]);
    assert.match(noSize.stderr, /^skyfs: --capacity "lots" is not a size/);
    const created = await runSkyfs(
      ["volume", "create", mp, "data", "--capacity", "1G", "--inodes", "100", ...token],
    );
    assert.equal(created.code, 0, created.stderr);
    assert.match(created.stdout, /^created data: 0 B of 1 GiB used \(0%\), 1 of 100 inodes/);
    await Deno.writeFile(join(mp, "volumes", "data", "f"), new Uint8Array(3 * MiB));
    const usage = await runSkyfs(["volume", "usage", mp, "data"]);
    assert.equal(
      usage.stdout.trim(),
      "data: 3 MiB of 1 GiB used (0%), 2 of 100 inodes, at /volumes/data",
    );
    const resized = await runSkyfs(["volume", "resize", mp, "data", "--capacity", "2G", ...token]);
    assert.match(resized.stdout, /^resized data: 3 MiB of 2 GiB/);
    const shrink = await runSkyfs(["volume", "resize", mp, "data", "--capacity", "1M", ...token]);
    assert.equal(shrink.code, 1);
    assert.match(shrink.stderr, /^skyfs: EBUSY: volume data uses 3145728 bytes: cannot shrink/);
    const list = await runSkyfs(["volume", "list", mp]);
    assert.match(
      list.stdout,
      /^NAME +CAPACITY +USED +INODES +PATH\ndata +2 GiB +3 MiB +2\/100 +\/volumes\/data\n$/,
    );
    const deleted = await runSkyfs(["volume", "delete", mp, "data", ...token]);
    assert.equal(deleted.stdout.trim(), "deleted volume data");
    const gone = await runSkyfs(["volume", "usage", mp, "data"]);
    assert.equal(gone.stderr.trim(), "skyfs: no volume data");
    assert.equal((await api.call("GET", "/volumes")).json.volumes.length, 0);
    const notMount = await runSkyfs(["volume", "list", "/tmp"]);
    assert.match(notMount.stderr, /^skyfs: "\/tmp" is not a mount point/);
  });
});
