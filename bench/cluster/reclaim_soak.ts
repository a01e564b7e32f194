/**
 * Soak of the deferred reclaim (src/cluster/README.md, "Unlink while open elsewhere"): two mounts
 * on three CURP replicas (or one etcd) run mixed create / write / append / rename / unlink on the
 * same names for a while, in a volume and outside one, and node A also holds files open (reading
 * and writing them) across B's unlinks and renames over them. Afterwards, once the reclaim had
 * time: no orphan mark, no inode at nlink 0, no open record left in the store; the volume's usage
 * equals the sizes and count of the files left in it; and the daemons logged no error.
 *
 *   deno run -A bench/cluster/reclaim_soak.ts [--seconds 600] [--meta curp|etcd] [--seed N]
 *
 * Prints the operation counts (`held_write_unlinked`: writes by A to a file it held open whose
 * name was gone), errno counts (ENOENT from the other node's renames and unlinks is expected,
 * EXDEV from renames between the volume and the plain directory) and the checks; exits 1 when a
 * check failed.
 * @module
 */

import { join } from "node:path";
import { LocalCluster } from "../../src/cluster/local_cluster.ts";
import { findEndpoint } from "../../src/http/endpoint_file.ts";
import { openMetaBackend } from "../../src/meta/backend.ts";
import { prefixEnd } from "../../src/meta/kv.ts";
import { decodeInode, keys } from "../../src/meta/namespace.ts";

const args = Deno.args;
const option = (name: string, fallback: string) => {
  const at = args.indexOf(name);
  return at >= 0 ? args[at + 1] : fallback;
};
const seconds = Number(option("--seconds", "600"));
const meta = option("--meta", "curp") as "curp" | "etcd";
const seed = Number(option("--seed", String(Date.now() % 1_000_000)));
const TOKEN = "reclaim-soak-token-0123456789abcdef";
const PYTHON = Deno.env.get("SKYFS_TEST_PYTHON") ?? "/usr/bin/python3";
const MiB = 1024 * 1024;

/** One worker: random operations on names n0..n59 of each of two directories until the time is
 * up; with `hold`, also keeps up to 12 files open, writing and reading them, closing the oldest
 * now and then. Prints a JSON summary. */
const WORKER = String.raw`
import errno, json, os, random, sys, time
dirs, seconds, seed, hold = sys.argv[1].split(","), float(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
rng = random.Random(seed)
ops, errs, held = {}, {}, []
def name():
    return os.path.join(rng.choice(dirs), "n%d" % rng.randrange(60))
def data(n):
    return bytes([rng.randrange(256)]) * n
def op(kind, fn):
    ops[kind] = ops.get(kind, 0) + 1
    try:
        fn()
    except OSError as e:
        key = "%s:%s" % (kind, errno.errorcode.get(e.errno, e.errno))
        errs[key] = errs.get(key, 0) + 1
def create():
    fd = os.open(name(), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data(rng.randrange(0, 256 * 1024)))
    finally:
        os.close(fd)
def append():
    fd = os.open(name(), os.O_WRONLY | os.O_APPEND)
    try:
        if os.fstat(fd).st_size < 2 * 1024 * 1024:
            os.write(fd, data(rng.randrange(1, 64 * 1024)))
    finally:
        os.close(fd)
def read():
    with open(name(), "rb") as f:
        f.read()
def rename():
    os.rename(name(), name())
def unlink():
    os.unlink(name())
def open_hold():
    fd = os.open(name(), os.O_RDWR)
    held.append(fd)
def held_write():
    fd = rng.choice(held)
    st = os.fstat(fd)
    if st.st_nlink == 0:
        ops["held_write_unlinked"] = ops.get("held_write_unlinked", 0) + 1
    if st.st_size < 2 * 1024 * 1024:
        os.pwrite(fd, data(rng.randrange(1, 128 * 1024)), rng.randrange(0, 1024 * 1024))
    if rng.random() < 0.3:
        os.fsync(fd)
def held_read():
    fd = rng.choice(held)
    os.pread(fd, 65536, 0)
def held_close():
    os.close(held.pop(0))
end = time.time() + seconds
while time.time() < end:
    r = rng.random()
    if hold and r < 0.30:
        if len(held) < 12 and rng.random() < 0.5:
            op("hold", open_hold)
        elif held and rng.random() < 0.6:
            op("held_write", held_write)
        elif held and rng.random() < 0.5:
            op("held_read", held_read)
        elif held:
            op("held_close", held_close)
        continue
    if r < 0.50:
        op("create", create)
    elif r < 0.62:
        op("append", append)
    elif r < 0.74:
        op("read", read)
    elif r < 0.86:
        op("rename", rename)
    else:
        op("unlink", unlink)
while held:
    op("held_close", held_close)
print(json.dumps({"ops": ops, "errors": errs}))
`;

async function worker(dirs: string[], workerSeed: number, hold: boolean) {
  const out = await new Deno.Command(PYTHON, {
    args: ["-c", WORKER, dirs.join(","), String(seconds), String(workerSeed), hold ? "1" : "0"],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout).trim();
  if (out.code !== 0) throw new Error(`worker failed: ${new TextDecoder().decode(out.stderr)}`);
  return JSON.parse(text) as { ops: Record<string, number>; errors: Record<string, number> };
}

async function usage(mountpoint: string) {
  const response = await fetch(`http://${findEndpoint(mountpoint)}/api/v1/volumes/soak`);
  return await response.json() as { usedBytes: number; usedInodes: number };
}

const started = Date.now();
const cluster = await LocalCluster.start("reclaim-soak-", {
  nodes: 2,
  meta,
  nodeEnv: { SKYFS_HTTP_TOKEN: TOKEN, SKYFS_VOLUME_RESERVE_BYTES: String(4 * MiB) },
});
const kv = await openMetaBackend(cluster.meta, { dataDir: cluster.dir });
let failed = false;
const check = (ok: boolean, what: string) => {
  console.log(`${ok ? "ok  " : "FAIL"} ${what}`);
  if (!ok) failed = true;
};
try {
  const [a, b] = cluster.nodes;
  const created = await fetch(`http://${findEndpoint(a.mountpoint)}/api/v1/volumes`, {
    method: "POST",
    headers: { authorization: `Bearer ${TOKEN}`, "content-type": "application/json" },
    body: JSON.stringify({ name: "soak", capacityBytes: 4096 * MiB }),
  });
  if (!created.ok) throw new Error(`volume create: ${created.status} ${await created.text()}`);
  await Deno.mkdir(join(a.mountpoint, "plain"));
  const dirsOf = (node: { mountpoint: string }) => [
    join(node.mountpoint, "volumes", "soak"),
    join(node.mountpoint, "plain"),
  ];
  for (let i = 0; i < 100; i++) {
    try {
      Deno.statSync(join(b.mountpoint, "volumes", "soak"));
      Deno.statSync(join(b.mountpoint, "plain"));
      break;
    } catch {
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
  console.log(
    `soak: ${seconds} s, ${meta}, seed ${seed}, load ${Deno.loadavg().join(" ")}, ` +
      `dir ${cluster.dir}`,
  );
  const results = await Promise.all([
    worker(dirsOf(a), seed, true),
    worker(dirsOf(a), seed + 1, false),
    worker(dirsOf(b), seed + 2, false),
    worker(dirsOf(b), seed + 3, false),
  ]);
  results.forEach((result, i) => console.log(`worker ${i}: ${JSON.stringify(result)}`));
  console.log(`workload done, load ${Deno.loadavg().join(" ")}`);

  // The reclaim: 70 ms to 1 s per round after the last acknowledgement.
  const orphansLeft = async () => {
    const marks = (await kv.range({ key: keys.orphans(), rangeEnd: prefixEnd(keys.orphans()) }))
      .kvs;
    const records = await kv.range({
      key: new TextEncoder().encode("cl/open/"),
      rangeEnd: prefixEnd(new TextEncoder().encode("cl/open/")),
    });
    return { marks: marks.length, records: records.kvs.length };
  };
  let left = await orphansLeft();
  for (let i = 0; i < 100 && (left.marks > 0 || left.records > 0); i++) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    left = await orphansLeft();
  }
  check(left.marks === 0, `orphan marks left after the reclaim: ${left.marks}`);
  check(left.records === 0, `open records left: ${left.records}`);
  const inodePrefix = keys.inode(0).slice(0, 4);
  const inodes = (await kv.range({ key: inodePrefix, rangeEnd: prefixEnd(inodePrefix) })).kvs;
  const unlinked = inodes.filter((kv) => {
    const record = decodeInode(0, kv.value);
    return record.nlink === 0;
  });
  check(unlinked.length === 0, `inodes at nlink 0: ${unlinked.length} of ${inodes.length}`);

  // The volume's usage is what is left in it, seen from both nodes.
  const volumeDir = join(b.mountpoint, "volumes", "soak");
  let bytes = 0;
  let count = 0;
  for (const entry of Deno.readDirSync(volumeDir)) {
    bytes += Deno.statSync(join(volumeDir, entry.name)).size;
    count++;
  }
  for (const node of [a, b]) {
    const used = await usage(node.mountpoint);
    check(
      used.usedBytes === bytes && used.usedInodes === count + 1,
      `usage on ${node.id}: ${used.usedBytes} bytes, ${used.usedInodes} inodes; ` +
        `files: ${bytes} bytes, ${count} (+1 root)`,
    );
  }

  // No error in the daemons' logs. A peer send cut because the sender's own write changed the
  // chunk meanwhile is the designed answer (the connection closes, the reader goes to the next
  // source: src/cluster/uring_transport.ts), counted apart.
  const cut = /changed while being sent/;
  for (const node of [a, b]) {
    const log = await cluster.logOf(node);
    const bad = log.split("\n").filter((line) =>
      /error|fail|uncaught|panic|retrying/i.test(line) && !cut.test(line)
    );
    const sends = log.split("\n").filter((line) => cut.test(line)).length;
    check(bad.length === 0, `${node.id}'s log: ${bad.length} error lines (${sends} sends cut)`);
    for (const line of bad.slice(0, 10)) console.log(`  ${line}`);
  }
} finally {
  kv.close();
  await cluster.stop();
}
console.log(`total ${((Date.now() - started) / 1000).toFixed(0)} s`);
Deno.exit(failed ? 1 : 0);
