/**
 * Test helper: start a CURP cluster of real `skyfs meta serve` processes on free loopback ports,
 * kill (SIGKILL) and restart single replicas, and stop them all.
 * @module
 */

import { fetchStatus, type ReplicaStatus } from "../../src/meta/curp/server.ts";
import { freePort } from "../../src/cluster/local_cluster.ts";

const MOD = new URL("../../mod.ts", import.meta.url).pathname;

/** A free port below the ephemeral range (src/cluster/local_cluster.ts says why). */
export { freePort } from "../../src/cluster/local_cluster.ts";

export class TestCluster {
  readonly ids: string[];
  readonly addresses: Map<string, string>;
  readonly peers: string;
  readonly children = new Map<string, Deno.ChildProcess>();
  readonly logs = new Map<string, string[]>();

  /** Extra environment for the replica processes (SKYFS_CURP_SNAPSHOT_EVERY). */
  env: Record<string, string> = {};

  constructor(readonly dir: string, size = 3, readonly tickMs = 50) {
    this.ids = Array.from({ length: size }, (_, i) => String.fromCharCode(97 + i));
    this.addresses = new Map(this.ids.map((id) => [id, `127.0.0.1:${freePort()}`]));
    this.peers = [...this.addresses].map(([id, a]) => `${id}=${a}`).join(",");
  }

  static async start(
    prefix: string,
    size = 3,
    env: Record<string, string> = {},
  ): Promise<TestCluster> {
    const cluster = new TestCluster(await Deno.makeTempDir({ prefix }), size);
    cluster.env = env;
    for (const id of cluster.ids) cluster.startReplica(id);
    await cluster.waitForLeader();
    return cluster;
  }

  get addressList(): string[] {
    return [...this.addresses.values()];
  }

  startReplica(id: string): void {
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        MOD,
        "meta",
        "serve",
        "--id",
        id,
        "--peers",
        this.peers,
        "--data",
        `${this.dir}/${id}`,
        "--tick-ms",
        String(this.tickMs),
      ],
      stdout: "null",
      stderr: "piped",
      env: this.env,
    }).spawn();
    this.children.set(id, child);
    const lines: string[] = this.logs.get(id) ?? [];
    this.logs.set(id, lines);
    void (async () => {
      const decoder = new TextDecoder();
      for await (const chunk of child.stderr) lines.push(decoder.decode(chunk));
    })();
  }

  /** kill -9: no shutdown path runs. */
  async kill(id: string): Promise<void> {
    const child = this.children.get(id);
    if (child === undefined) return;
    this.children.delete(id);
    try {
      child.kill("SIGKILL");
    } catch { /* already gone */ }
    await child.status;
  }

  /** SIGSTOP: the process keeps its sockets but runs nothing (a hiccup: GC, swap, a VM pause). */
  pause(id: string): void {
    this.children.get(id)?.kill("SIGSTOP");
  }

  resume(id: string): void {
    this.children.get(id)?.kill("SIGCONT");
  }

  async status(id: string): Promise<ReplicaStatus | undefined> {
    try {
      return await fetchStatus(this.addresses.get(id)!, 1000);
    } catch {
      return undefined;
    }
  }

  /** The leader's id once a live replica reports itself leader; throws after `timeoutMs`. */
  async waitForLeader(timeoutMs = 20_000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      for (const id of this.children.keys()) {
        const s = await this.status(id);
        if (s?.role === "leader") return id;
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`No leader within ${timeoutMs} ms; logs: ${JSON.stringify([...this.logs])}`);
  }

  /** The leader once every live replica names it in one term; throws after `timeoutMs`. */
  async waitForStableLeader(timeoutMs = 20_000): Promise<ReplicaStatus> {
    const deadline = Date.now() + timeoutMs;
    let last: (ReplicaStatus | undefined)[] = [];
    while (Date.now() < deadline) {
      last = await Promise.all([...this.children.keys()].map((id) => this.status(id)));
      const leader = last.find((s) => s?.role === "leader");
      if (
        leader !== undefined &&
        last.every((s) => s?.term === leader.term && s.leaderId === leader.id)
      ) return leader;
      await new Promise((r) => setTimeout(r, 100));
    }
    // What each replica said last (undefined: no answer within 1 s) and the end of its log, so a
    // failure can be read from the test's output alone.
    const said = [...this.children.keys()].map((id, i) => {
      const s = last[i];
      const state = s === undefined
        ? "no answer"
        : `${s.role} of term ${s.term}, leader ${s.leaderId}, commit ${s.commitIndex}, ` +
          `applied ${s.appliedIndex}, snapshot ${s.snapshotIndex}, tick lag max ${s.maxTickLagMs} ms`;
      const tail = (this.logs.get(id) ?? []).join("").split("\n").filter((l) => l !== "")
        .slice(-15).join("\n    ");
      return `  ${id}: ${state}\n    ${tail}`;
    });
    throw new Error(`No stable leader within ${timeoutMs} ms:\n${said.join("\n")}`);
  }

  async stop(): Promise<void> {
    for (const id of [...this.children.keys()]) await this.kill(id);
    await Deno.remove(this.dir, { recursive: true }).catch(() => {});
  }
}
