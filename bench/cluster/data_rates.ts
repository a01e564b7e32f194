/**
 * Data rates of cluster mode against one node and ext4 (issue 13's data goals): a `dd conv=fsync`
 * write of N MiB and a cold read of it, on
 * - ext4: a plain directory on the disk everything else uses,
 * - skyfs: a single-node mount (`skyfs mount --data`, passthrough as a root user gets it),
 * - cluster: node A of a LocalCluster (3 CURP replicas, directory backend, 3 mounts) writes, and
 *   node B reads it first ("first read on another node"),
 * alternating within each round. Before each cold read the file's pages are dropped everywhere they
 * sit (the data files, the backend's objects, every node's local file) with
 * posix_fadvise(DONTNEED), so nothing comes from the page cache but nothing else on this shared
 * machine loses its cache either. Prints MB/s (10^6 bytes/s, as dd), the daemons' CPU seconds,
 * the backend objects a write left, medians and ratios.
 *
 *   deno run -A bench/cluster/data_rates.ts [--mib 256] [--rounds 3] [--root DIR]...
 *
 * `--root` runs another checkout's skyfs cluster (e.g. a worktree of the commit before a change:
 * give both roots, rounds alternate between them); ext4 and single-node skyfs run from the first.
 * @module
 */

import { join } from "node:path";
import { parseArgs } from "node:util";

const USAGE = "deno run -A bench/cluster/data_rates.ts [--mib 256] [--rounds 3] [--root DIR]...";
let parsed;
try {
  parsed = parseArgs({
    args: Deno.args,
    options: {
      mib: { type: "string", default: "256" },
      rounds: { type: "string", default: "3" },
      root: { type: "string", multiple: true, default: [] },
      help: { type: "boolean", default: false },
    },
  });
} catch (error) {
  console.error(`data_rates: ${(error as Error).message}; usage: ${USAGE}`);
  Deno.exit(2);
}
if (parsed.values.help) {
  console.log(USAGE);
  Deno.exit(0);
}
const roots = [...parsed.values.root];
if (roots.length === 0) roots.push(new URL("../../", import.meta.url).pathname);
const mib = Number(parsed.values.mib);
const rounds = Number(parsed.values.rounds);
if (!Number.isInteger(mib) || mib < 1) {
  console.error(`data_rates: --mib ${parsed.values.mib} is not a whole number of MiB from 1`);
  Deno.exit(2);
}
if (!Number.isInteger(rounds) || rounds < 1) {
  console.error(`data_rates: --rounds ${parsed.values.rounds} is not a whole number from 1`);
  Deno.exit(2);
}
const bytes = mib * 2 ** 20;

const libc = Deno.dlopen("libc.so.6", {
  open: { parameters: ["buffer", "i32"], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
  posix_fadvise: { parameters: ["i32", "i64", "i64", "i32"], result: "i32" },
});
const POSIX_FADV_DONTNEED = 4;

/** Drop the clean page-cache pages of every regular file under `path` (Deno hides the fds
 * posix_fadvise needs, so libc opens them). */
function dropTree(path: string): void {
  let info: Deno.FileInfo;
  try {
    info = Deno.lstatSync(path);
  } catch {
    return;
  }
  if (info.isDirectory) {
    for (const entry of Deno.readDirSync(path)) dropTree(join(path, entry.name));
    return;
  }
  if (!info.isFile) return;
  const fd = libc.symbols.open(new TextEncoder().encode(path + "\0"), 0);
  if (fd < 0) return;
  libc.symbols.posix_fadvise(fd, 0n, 0n, POSIX_FADV_DONTNEED);
  libc.symbols.close(fd);
}

interface Sample {
  writeMBs: number;
  readMBs: number;
  /** CPU seconds of the daemons during the write, by process. */
  writeCpu: Record<string, number>;
  readCpu: Record<string, number>;
  /** Backend objects the write left (cluster). */
  objects?: number;
}

interface Target {
  name: string;
  /** Where the file is written. */
  writeDir: string;
  /** Where it is read (another node's mount for a cluster). */
  readDir: string;
  /** Directories whose files' pages are dropped before the read. */
  cacheDirs: string[];
  pids: Record<string, number>;
  backendObjects?: () => number;
  stop(): Promise<void>;
}

async function dd(input: string, output: string, extra: string[]): Promise<number> {
  const start = performance.now();
  const out = await new Deno.Command("dd", {
    args: [`if=${input}`, `of=${output}`, "bs=1M", ...extra, "status=none"],
    stdout: "null",
    stderr: "piped",
  }).output();
  const seconds = (performance.now() - start) / 1000;
  if (out.code !== 0) {
    throw new Error(`dd ${input} -> ${output}: ${new TextDecoder().decode(out.stderr).trim()}`);
  }
  return bytes / seconds / 1e6;
}

/** CPU seconds of each process so far: utime + stime of /proc/PID/stat, which (unlike the
 * per-thread schedstat of cpu.ts) keeps the time of threads that exited, e.g. io-wq workers. */
function cpuOf(pids: Record<string, number>): Record<string, number> {
  const ticks = 100; // USER_HZ
  return Object.fromEntries(
    Object.entries(pids).map(([name, pid]) => {
      const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      return [name, (Number(fields[11]) + Number(fields[12])) / ticks];
    }),
  );
}

function diff(after: Record<string, number>, before: Record<string, number>) {
  return Object.fromEntries(Object.entries(after).map(([k, v]) => [k, v - (before[k] ?? 0)]));
}

async function measure(target: Target, source: string, round: number): Promise<Sample> {
  const name = `f${round}`;
  // The source stays in the page cache: the write measures the target, not the source's disk.
  await dd(source, "/dev/null", []);
  let cpu0 = cpuOf(target.pids);
  const writeMBs = await dd(source, join(target.writeDir, name), ["conv=fsync"]);
  const writeCpu = diff(cpuOf(target.pids), cpu0);
  const objects = target.backendObjects?.();
  for (const dir of target.cacheDirs) dropTree(dir);
  cpu0 = cpuOf(target.pids);
  const readMBs = await dd(join(target.readDir, name), "/dev/null", []);
  const readCpu = diff(cpuOf(target.pids), cpu0);
  await Deno.remove(join(target.writeDir, name));
  return { writeMBs, readMBs, writeCpu, readCpu, objects };
}

async function waitMounted(path: string, child: Deno.ChildProcess): Promise<void> {
  let exited = false;
  child.status.then(() => exited = true);
  const deadline = Date.now() + 60_000;
  while (
    !Deno.readTextFileSync("/proc/self/mountinfo").split("\n").some((l) => l.split(" ")[4] === path)
  ) {
    if (exited || Date.now() > deadline) throw new Error(`skyfs did not mount ${path}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function ext4(scratch: string): Promise<Target> {
  const dir = join(scratch, "ext4");
  await Deno.mkdir(dir);
  return {
    name: "ext4",
    writeDir: dir,
    readDir: dir,
    cacheDirs: [dir],
    pids: {},
    stop: async () => {},
  };
}

async function singleNode(root: string, scratch: string): Promise<Target> {
  const mountpoint = join(scratch, "skyfs-mnt");
  const data = join(scratch, "skyfs-data");
  await Deno.mkdir(mountpoint);
  await Deno.mkdir(data);
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", join(root, "mod.ts"), "mount", mountpoint, "--data", data],
    stdout: "null",
    stderr: "inherit",
  }).spawn();
  await waitMounted(mountpoint, child);
  return {
    name: "skyfs",
    writeDir: mountpoint,
    readDir: mountpoint,
    cacheDirs: [data, mountpoint],
    pids: { daemon: child.pid },
    stop: async () => {
      child.kill("SIGTERM");
      await child.status;
    },
  };
}

async function cluster(root: string, label: string): Promise<Target> {
  const { LocalCluster } = await import(join(root, "src/cluster/local_cluster.ts"));
  const local = await LocalCluster.start("data-rates-");
  const [a, b] = local.nodes;
  const pids: Record<string, number> = {};
  for (const node of local.nodes) pids[node.id] = node.child.pid;
  for (const replica of local.replicas) pids[replica.id] = replica.child.pid;
  const objectsDir = join(local.backend, "o");
  return {
    name: label,
    writeDir: a.mountpoint,
    readDir: b.mountpoint,
    cacheDirs: [local.backend, ...local.nodes.map((n: { dataDir: string }) => n.dataDir)],
    pids,
    backendObjects: () => {
      let count = 0;
      const walk = (dir: string) => {
        for (const entry of Deno.readDirSync(dir)) {
          if (entry.isDirectory) walk(join(dir, entry.name));
          else count++;
        }
      };
      try {
        walk(objectsDir);
      } catch { /* none yet */ }
      return count;
    },
    stop: () => local.stop(),
  };
}

const median = (xs: number[]) => {
  const s = [...xs].sort((x, y) => x - y);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

const scratch = await Deno.makeTempDir({ prefix: "data-rates-" });
const source = join(scratch, "source");
{
  // Random bytes (nothing along the way may compress or skip zeros), generated once.
  const file = await Deno.open(source, { write: true, create: true });
  const piece = new Uint8Array(2 ** 20);
  for (let i = 0; i < mib; i++) {
    for (let at = 0; at < piece.length; at += 65536) {
      crypto.getRandomValues(piece.subarray(at, at + 65536));
    }
    await file.write(piece);
  }
  file.close();
}

const targets: Target[] = [];
try {
  targets.push(await ext4(scratch));
  targets.push(await singleNode(roots[0], scratch));
  for (const [i, root] of roots.entries()) {
    targets.push(await cluster(root, roots.length > 1 ? `cluster ${i + 1}` : "cluster"));
  }
  const load0 = Deno.loadavg();
  const samples = new Map<string, Sample[]>();
  for (let round = 0; round < rounds; round++) {
    // Alternate the order so no target always runs right after the same neighbour.
    const order = round % 2 ? [...targets].reverse() : targets;
    for (const target of order) {
      const sample = await measure(target, source, round);
      samples.set(target.name, [...(samples.get(target.name) ?? []), sample]);
      const cpu = (c: Record<string, number>) =>
        Object.entries(c).map(([k, v]) => `${k} ${v.toFixed(1)}`).join(", ");
      console.error(
        `round ${round + 1} ${target.name}: write ${sample.writeMBs.toFixed(0)} MB/s` +
          (sample.objects !== undefined ? ` (${sample.objects} objects)` : "") +
          ` [cpu s: ${cpu(sample.writeCpu)}], read ${sample.readMBs.toFixed(0)} MB/s` +
          ` [cpu s: ${cpu(sample.readCpu)}]`,
      );
    }
  }
  const load1 = Deno.loadavg();
  console.log(
    `${mib} MiB, ${rounds} rounds, load average ${load0[0].toFixed(1)} at start, ${
      load1[0].toFixed(1)
    } at end (1 min), ${Deno.osRelease()}`,
  );
  if (roots.length > 1) roots.forEach((root, i) => console.log(`cluster ${i + 1}: ${root}`));
  // Ratios are taken within each round (the load of this shared machine moves between rounds
  // more than between neighbours in one round), then the median of those.
  const skyfs = samples.get("skyfs")!;
  const ratio = (list: Sample[], pick: (s: Sample) => number) =>
    median(list.map((s, round) => pick(s) / pick(skyfs[round])));
  const cpu = (list: Sample[], pick: (s: Sample) => Record<string, number>) => {
    const names = Object.keys(pick(list[0]));
    return names.map((n) => `${n} ${median(list.map((s) => pick(s)[n])).toFixed(1)}`)
      .filter((text) => !text.endsWith(" 0.0")).join(", ");
  };
  console.log(
    "| target | write MB/s, median (rounds) | vs skyfs, same round | daemon CPU s | " +
      "cold read MB/s, median (rounds) | vs skyfs, same round | daemon CPU s |",
  );
  console.log("| --- | ---: | ---: | --- | ---: | ---: | --- |");
  for (const [name, list] of samples) {
    const w = median(list.map((s) => s.writeMBs));
    const r = median(list.map((s) => s.readMBs));
    console.log(
      `| ${name} | ${w.toFixed(0)} (${list.map((s) => s.writeMBs.toFixed(0)).join(", ")}) | ${
        ratio(list, (s) => s.writeMBs).toFixed(2)
      }x | ${cpu(list, (s) => s.writeCpu)} | ${r.toFixed(0)} (${
        list.map((s) => s.readMBs.toFixed(0)).join(", ")
      }) | ${ratio(list, (s) => s.readMBs).toFixed(2)}x | ${cpu(list, (s) => s.readCpu)} |`,
    );
  }
} finally {
  for (const target of targets.reverse()) await target.stop().catch((e) => console.error(e));
  await Deno.remove(scratch, { recursive: true });
}
