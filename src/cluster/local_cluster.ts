/**
 * A whole cluster on this machine: one etcd (Debian's etcd-server), a directory backend, and N
 * `skyfs mount` daemons (separate processes, each with its own data dir and peer port). Used by
 * tests/cluster, bench/cluster and `deno task cluster`.
 * @module
 */

import { join } from "node:path";

const ROOT = new URL("../../", import.meta.url).pathname;

export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

export interface LocalNode {
  id: string;
  mountpoint: string;
  dataDir: string;
  child?: Deno.ChildProcess;
}

export class LocalCluster {
  readonly dir: string;
  readonly meta: string;
  readonly backend: string;
  readonly nodes: LocalNode[] = [];
  readonly #etcd: Deno.ChildProcess;
  readonly #log: string;

  private constructor(dir: string, meta: string, etcd: Deno.ChildProcess) {
    this.dir = dir;
    this.meta = meta;
    this.backend = join(dir, "backend");
    this.#etcd = etcd;
    this.#log = join(dir, "logs");
  }

  /** Start etcd and `nodes` mounts under a fresh directory named with `prefix`. */
  static async start(prefix: string, nodes = 3): Promise<LocalCluster> {
    const dir = await Deno.makeTempDir({ prefix });
    await Deno.mkdir(join(dir, "logs"));
    const client = `127.0.0.1:${freePort()}`;
    const peer = `127.0.0.1:${freePort()}`;
    const etcd = new Deno.Command("/usr/bin/etcd", {
      args: [
        "--name=m",
        `--data-dir=${join(dir, "etcd")}`,
        `--listen-client-urls=http://${client}`,
        `--advertise-client-urls=http://${client}`,
        `--listen-peer-urls=http://${peer}`,
        `--initial-advertise-peer-urls=http://${peer}`,
        `--initial-cluster=m=http://${peer}`,
      ],
      stdout: "null",
      stderr: "null",
    }).spawn();
    const cluster = new LocalCluster(dir, `etcd://${client}`, etcd);
    await waitFor(
      async () => {
        const out = await new Deno.Command("/usr/bin/etcdctl", {
          args: [`--endpoints=${client}`, "endpoint", "health"],
          env: { ETCDCTL_API: "3" },
          stdout: "null",
          stderr: "null",
        }).output();
        return out.code === 0;
      },
      20_000,
      `etcd on ${client}`,
    );
    for (let i = 0; i < nodes; i++) {
      const id = String.fromCharCode(0x61 + i);
      const node: LocalNode = {
        id,
        mountpoint: join(dir, `mnt-${id}`),
        dataDir: join(dir, `data-${id}`),
      };
      await Deno.mkdir(node.mountpoint);
      await Deno.mkdir(node.dataDir);
      cluster.nodes.push(node);
      await cluster.startNode(node);
    }
    return cluster;
  }

  async startNode(node: LocalNode): Promise<void> {
    node.child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        join(ROOT, "mod.ts"),
        "mount",
        node.mountpoint,
        "--data",
        node.dataDir,
        "--meta",
        this.meta,
        "--backend",
        this.backend,
        "--node-id",
        node.id,
      ],
      stdout: "null",
      stderr: "piped",
    }).spawn();
    // Keep the daemon's stderr in its log (and readable by tests).
    node.child.stderr.pipeTo(
      (await Deno.open(join(this.#log, `${node.id}.err`), { append: true, create: true }))
        .writable,
    ).catch(() => {});
    await waitFor(() => Promise.resolve(isMounted(node.mountpoint)), 60_000, `mount ${node.id}`);
  }

  /** kill -9 of a node's daemon; its mount is left dead and cleared. */
  async kill(node: LocalNode): Promise<void> {
    node.child?.kill("SIGKILL");
    await node.child?.status;
    node.child = undefined;
    await lazyUnmount(node.mountpoint);
  }

  /** Stop cleanly (SIGTERM unmounts). */
  async stopNode(node: LocalNode): Promise<void> {
    if (!node.child) return;
    node.child.kill("SIGTERM");
    const timer = setTimeout(() => node.child?.kill("SIGKILL"), 10_000);
    await node.child.status;
    clearTimeout(timer);
    node.child = undefined;
    if (isMounted(node.mountpoint)) await lazyUnmount(node.mountpoint);
  }

  /** The daemon's stderr so far. */
  async logOf(node: LocalNode): Promise<string> {
    return await Deno.readTextFile(join(this.#log, `${node.id}.err`)).catch(() => "");
  }

  async stop(options: { keep?: boolean } = {}): Promise<void> {
    for (const node of this.nodes) await this.stopNode(node);
    this.#etcd.kill("SIGKILL");
    await this.#etcd.status;
    if (!options.keep) await Deno.remove(this.dir, { recursive: true });
  }
}

export function isMounted(path: string): boolean {
  return Deno.readTextFileSync("/proc/self/mountinfo").split("\n").some((line) =>
    line.split(" ")[4] === path
  );
}

async function lazyUnmount(path: string): Promise<void> {
  if (!isMounted(path)) return;
  await new Deno.Command("umount", { args: ["-l", path], stderr: "null" }).output();
}

export async function waitFor(
  check: () => Promise<boolean>,
  timeoutMs: number,
  what: string,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check().catch(() => false))) {
    if (Date.now() > deadline) throw new Error(`${what} not ready after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
