/**
 * A whole cluster on this machine: three CURP metadata replicas (`skyfs meta serve`, or one etcd
 * with `meta: "etcd"`), a directory backend, and N `skyfs mount` daemons (separate processes, each
 * with its own data dir and peer port). Used by tests/cluster, bench/cluster and
 * `deno task cluster`.
 * @module
 */

import { join } from "node:path";
import type { DelayProxyStats } from "./delay_proxy.ts";
import { fetchStatus, type ReplicaStatus } from "../meta/curp/server.ts";

const ROOT = new URL("../../", import.meta.url).pathname;
const MOD = join(ROOT, "mod.ts");

/** Ports handed out by this process, never handed out twice. */
const handedOut = new Set<number>();

/** The lowest port of the kernel's ephemeral range (net.ipv4.ip_local_port_range), 32768 if unread. */
function ephemeralLow(): number {
  try {
    const low = Number(
      Deno.readTextFileSync("/proc/sys/net/ipv4/ip_local_port_range").split(/\s+/)[0],
    );
    return Number.isSafeInteger(low) && low > 0 ? low : 32768;
  } catch {
    return 32768;
  }
}

/**
 * A free port for a child to listen on, chosen below the kernel's ephemeral range: a port picked
 * by binding port 0 comes from that range, and between its close here and the child's bind an
 * outgoing connection of any process (this machine's tests make thousands on loopback) could take
 * it as its source port (seen in CI: "E98: bind(127.0.0.1:36927) failed" at a mount's start). Ports
 * below the range are only ever taken by a listener.
 */
export function freePort(hostname = "127.0.0.1"): number {
  const high = Math.min(ephemeralLow(), 65536);
  const low = Math.max(1024, high - 12000);
  for (let attempt = 0; attempt < 200 && high - low > 100; attempt++) {
    const port = low + Math.floor(Math.random() * (high - low));
    if (handedOut.has(port)) continue;
    try {
      Deno.listen({ hostname, port }).close();
      handedOut.add(port);
      return port;
    } catch {
      // In use: try another.
    }
  }
  const listener = Deno.listen({ hostname, port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

export interface LocalNode {
  id: string;
  mountpoint: string;
  dataDir: string;
  /** Its zone (`--zone`); unset = the default zone. */
  zone?: string;
  /** Its `--backend`; unset = the cluster's one backend directory. */
  backend?: string;
  /** Environment added to the cluster's `nodeEnv` for this node alone (a config key for one
   * node, e.g. SKYFS_ZONE_SYNC), taken at its next start. */
  env?: Record<string, string>;
  child?: Deno.ChildProcess;
  /** With `rttMs`: its peer server's port (fixed, so the other zones' proxies can point at it). */
  peerPort?: number;
  /** With `netns`: the node's network namespace, its address there and the host end of its
   * veth pair (down = the node is cut off from everything). */
  net?: { ns: string; address: string; hostVeth: string };
}

/** One CURP replica process. */
export interface LocalReplica {
  id: string;
  address: string;
  dataDir: string;
  /** With `zones`: its zone (replica i in zone z(i mod N + 1), like the nodes). */
  zone?: string;
  child?: Deno.ChildProcess;
}

/** With `zones` and `rttMs`: a delay proxy on the way from a zone to something in another zone. */
export interface ZoneLink {
  /** The zone whose mounts and replicas connect through it. */
  from: string;
  /** What it forwards to: a replica (`m2`), a node's peer server (`b`) or a zone's backend
   * store (`backend-z2`). */
  to: string;
  /** The zone of `to`. */
  toZone: string;
  kind: "meta" | "peer" | "backend";
  /** The delay proxy (in the links process, `_links_main.ts`): its id there and its address. */
  proxy: { id: string; address: string };
}

/** A link's counters (DelayProxyStats) and whether it is cut. */
export type LinkStats = DelayProxyStats & { cut: boolean };

export interface LocalClusterOptions {
  /** Mount daemons (default 3). */
  nodes?: number;
  /** Metadata: three CURP replicas (default) or one etcd member. */
  meta?: "curp" | "etcd";
  /** CURP replicas (default 3). */
  replicas?: number;
  /** Added to the mount daemons' environment (SKYFS_CURP_TIMEOUT_MS in tests). */
  nodeEnv?: Record<string, string>;
  /** Each mount in its own network namespace, joined by veth pairs to a bridge in this one
   * (replicas listen on the bridge's address): peers and metadata cross real interfaces, and
   * `cutNetwork` partitions a node. Needs root and `ip`; everything is removed by `stop()`. */
  netns?: boolean;
  /** Zones z1..zN, nodes assigned round-robin (node i in zone z(i mod N + 1)), each zone with its
   * own backend directory `backend-zK`. Unset: every node in the default zone, one backend. */
  zones?: number;
  /** With `zones`: every metadata connection that crosses zones (mount to replica,
   * replica to replica) goes through a userspace TCP delay proxy (src/cluster/delay_proxy.ts)
   * adding rttMs / 2 in each direction; so do peer cache connections (each node advertises a
   * route per other zone, `--peer-routes`) and reads and writes of another zone's backend (each
   * zone's directory is also served over HTTP, `src/cache/backend_http.ts`, which the other
   * zones reach through `--backend-routes`). With etcd: a member per zone, Raft traffic through
   * proxies (see `#startEtcdZones`). Not with `netns`. */
  rttMs?: number;
  /** With `rttMs`: every proxy also limits each direction to this many megabits per second. */
  bandwidthMbit?: number;
  /** Where the cluster's own directory is made (default: the system's temporary directory). */
  parentDir?: string;
}

/** A bridge and a random 10.x.y.0/24 for the nodes' namespaces. */
interface LocalNet {
  tag: string;
  bridge: string;
  prefix: string;
}

export class LocalCluster {
  readonly dir: string;
  readonly meta: string;
  readonly backend: string;
  readonly nodes: LocalNode[] = [];
  /** Empty with etcd. */
  readonly replicas: LocalReplica[];
  /** With `zones` and `rttMs`: the cross-zone delay proxies, one per (zone, replica of another
   * zone). */
  readonly links: ZoneLink[] = [];
  /** The injected round trip between zones (0: none). */
  rttMs = 0;
  /** Each proxy's bandwidth limit, Mbit/s (0: none). */
  bandwidthMbit = 0;
  /** With `rttMs`: each zone's backend directory served over HTTP (its address). */
  readonly zoneServers = new Map<string, { address: string }>();
  /** With etcd and `rttMs`: one member per zone. */
  readonly etcdMembers: { id: string; zone: string; client: string; child: Deno.ChildProcess }[] =
    [];
  /** With `rttMs`: the process holding the proxies and HTTP servers, and its control address. */
  #links: { child: Deno.ChildProcess; control: string } | undefined;
  nodeEnv: Record<string, string> = {};
  readonly #net: LocalNet | undefined;
  /** The one etcd member (`meta: "etcd"` without zones): its process and its flags, kept for
   * a restart on the same data dir and ports (`startEtcd`). */
  #etcd: Deno.ChildProcess | undefined;
  #etcdArgs: string[] = [];
  readonly #log: string;

  private constructor(
    dir: string,
    meta: string,
    replicas: LocalReplica[],
    etcd: Deno.ChildProcess | undefined,
    net?: LocalNet,
  ) {
    this.#net = net;
    this.dir = dir;
    this.meta = meta;
    this.replicas = replicas;
    this.backend = join(dir, "backend");
    this.#etcd = etcd;
    this.#log = join(dir, "logs");
  }

  /** Start the metadata service and the mounts under a fresh directory named with `prefix`.
   * A number as the second argument is the node count (CURP metadata). */
  static async start(
    prefix: string,
    options: LocalClusterOptions | number = {},
  ): Promise<LocalCluster> {
    const opts = typeof options === "number" ? { nodes: options } : options;
    const dir = await Deno.makeTempDir({ prefix, dir: opts.parentDir });
    await Deno.mkdir(join(dir, "logs"));
    let cluster: LocalCluster;
    let net: LocalNet | undefined;
    try {
      if (opts.rttMs && (opts.netns || !opts.zones)) {
        throw new RangeError("rttMs needs zones, without netns");
      }
      if (opts.netns) {
        if (opts.meta === "etcd") throw new RangeError("netns clusters run CURP replicas only");
        net = await createBridge();
      }
      cluster = opts.meta === "etcd"
        ? (opts.rttMs
          ? await LocalCluster.#startEtcdZones(dir, opts.zones!, opts.rttMs, opts.bandwidthMbit)
          : await LocalCluster.#startEtcd(dir))
        : await LocalCluster.#startCurp(
          dir,
          opts.replicas ?? 3,
          net,
          opts.zones,
          opts.rttMs,
          opts.bandwidthMbit,
        );
    } catch (error) {
      if (net) await removeNet(net, []);
      await Deno.remove(dir, { recursive: true }).catch(() => {});
      throw error;
    }
    cluster.nodeEnv = opts.nodeEnv ?? {};
    try {
      for (let i = 0; i < (opts.nodes ?? 3); i++) {
        const id = String.fromCharCode(0x61 + i);
        const node: LocalNode = {
          id,
          mountpoint: join(dir, `mnt-${id}`),
          dataDir: join(dir, `data-${id}`),
        };
        if (opts.zones !== undefined) {
          node.zone = `z${(i % opts.zones) + 1}`;
          node.backend = cluster.zoneBackend(node.zone);
        }
        if (cluster.rttMs) {
          // Every other zone reaches this node's peer server through its own delay proxy.
          node.peerPort = freePort();
          for (let z = 1; z <= opts.zones!; z++) {
            if (`z${z}` !== node.zone) {
              await cluster.#link(`z${z}`, node.id, node.zone!, "peer", node.peerPort);
            }
          }
        }
        await Deno.mkdir(node.mountpoint);
        await Deno.mkdir(node.dataDir);
        cluster.nodes.push(node);
        if (net) node.net = await addNamespace(net, id, i + 2);
        await cluster.startNode(node);
      }
    } catch (error) {
      await cluster.stop().catch(() => {});
      throw error;
    }
    return cluster;
  }

  static async #startCurp(
    dir: string,
    count: number,
    net?: LocalNet,
    zones?: number,
    rttMs?: number,
    bandwidthMbit?: number,
  ): Promise<LocalCluster> {
    // In namespaces the nodes reach the replicas at the bridge's address, not this loopback.
    const host = net ? `${net.prefix}.1` : "127.0.0.1";
    const replicas: LocalReplica[] = Array.from({ length: count }, (_, i) => {
      const id = `m${i + 1}`;
      const replica: LocalReplica = {
        id,
        address: `${host}:${freePort(host)}`,
        dataDir: join(dir, `meta-${id}`),
      };
      if (zones !== undefined) replica.zone = `z${(i % zones) + 1}`;
      return replica;
    });
    const cluster = new LocalCluster(
      dir,
      `curp://${replicas.map((r) => r.address).join(",")}`,
      replicas,
      undefined,
      net,
    );
    if (zones !== undefined && rttMs) {
      cluster.rttMs = rttMs;
      cluster.bandwidthMbit = bandwidthMbit ?? 0;
      await cluster.#startLinks();
      for (let z = 1; z <= zones; z++) {
        for (const replica of replicas) {
          if (replica.zone === `z${z}`) continue;
          await cluster.#link(
            `z${z}`,
            replica.id,
            replica.zone!,
            "meta",
            Number(replica.address.split(":")[1]),
          );
        }
      }
      await cluster.#backendLinks(zones);
    }
    try {
      for (const replica of replicas) await cluster.startReplica(replica);
      await cluster.metaLeader();
    } catch (error) {
      await cluster.stop({ keep: true }).catch(() => {});
      throw error;
    }
    return cluster;
  }

  /** Each zone's backend directory, served over HTTP for the other zones (through proxies). */
  async #backendLinks(zones: number): Promise<void> {
    for (let z = 1; z <= zones; z++) {
      const zone = `z${z}`;
      await Deno.mkdir(this.zoneBackend(zone), { recursive: true });
      const server = await this.#control("/serve", { dir: this.zoneBackend(zone) }) as {
        address: string;
      };
      this.zoneServers.set(zone, server);
      for (let from = 1; from <= zones; from++) {
        if (from === z) continue;
        await this.#link(
          `z${from}`,
          `backend-${zone}`,
          zone,
          "backend",
          Number(server.address.split(":")[1]),
        );
      }
    }
  }

  /**
   * With `meta: "etcd"` and `rttMs`: one etcd member per zone (e1 in z1, ...). Each member's peer
   * URL is a delay proxy (`from` "*": every other member is in another zone), so Raft traffic
   * crosses zones delayed; a mount talks to its own zone's member only (`metaFrom`), which
   * forwards writes to the leader. `cutZone` cuts the traffic into the zone's member (its own
   * outgoing connections go through the others' proxies: a partial partition for etcd).
   */
  static async #startEtcdZones(
    dir: string,
    zones: number,
    rttMs: number,
    bandwidthMbit?: number,
  ): Promise<LocalCluster> {
    const members = Array.from({ length: zones }, (_, i) => ({
      id: `e${i + 1}`,
      zone: `z${i + 1}`,
      client: `127.0.0.1:${freePort()}`,
      peerPort: freePort(),
    }));
    const cluster = new LocalCluster(
      dir,
      `etcd://${members.map((m) => m.client).join(",")}`,
      [],
      undefined,
    );
    cluster.rttMs = rttMs;
    cluster.bandwidthMbit = bandwidthMbit ?? 0;
    try {
      await cluster.#startLinks();
      for (const m of members) await cluster.#link("*", m.id, m.zone, "meta", m.peerPort);
      const peerUrl = (id: string) =>
        `http://${cluster.links.find((l) => l.to === id)!.proxy.address}`;
      const initial = members.map((m) => `${m.id}=${peerUrl(m.id)}`).join(",");
      for (const m of members) {
        const child = new Deno.Command("/usr/bin/etcd", {
          args: [
            `--name=${m.id}`,
            `--data-dir=${join(dir, `etcd-${m.id}`)}`,
            `--listen-client-urls=http://${m.client}`,
            `--advertise-client-urls=http://${m.client}`,
            `--listen-peer-urls=http://127.0.0.1:${m.peerPort}`,
            `--initial-advertise-peer-urls=${peerUrl(m.id)}`,
            `--initial-cluster=${initial}`,
            "--initial-cluster-state=new",
          ],
          stdout: "null",
          stderr: "null",
        }).spawn();
        cluster.etcdMembers.push({ ...m, child });
      }
      for (const m of members) {
        await waitFor(
          async () => {
            const out = await new Deno.Command("/usr/bin/etcdctl", {
              args: [`--endpoints=${m.client}`, "endpoint", "health"],
              env: { ETCDCTL_API: "3" },
              stdout: "null",
              stderr: "null",
            }).output();
            return out.code === 0;
          },
          30_000,
          `etcd member ${m.id} on ${m.client}`,
        );
      }
      await cluster.#backendLinks(zones);
    } catch (error) {
      await cluster.stop({ keep: true }).catch(() => {});
      throw error;
    }
    return cluster;
  }

  /** With etcd across zones: the zone of the member that is the Raft leader. */
  async etcdLeaderZone(): Promise<string> {
    for (const m of this.etcdMembers) {
      const out = await new Deno.Command("/usr/bin/etcdctl", {
        args: [`--endpoints=${m.client}`, "endpoint", "status", "-w", "json"],
        env: { ETCDCTL_API: "3" },
        stdout: "piped",
        stderr: "null",
      }).output();
      if (out.code !== 0) continue;
      const [status] = JSON.parse(new TextDecoder().decode(out.stdout));
      if (String(status.Status.leader) === String(status.Status.header.member_id)) return m.zone;
    }
    throw new Error("no etcd member reports itself leader");
  }

  static async #startEtcd(dir: string): Promise<LocalCluster> {
    const client = `127.0.0.1:${freePort()}`;
    const peer = `127.0.0.1:${freePort()}`;
    const cluster = new LocalCluster(dir, `etcd://${client}`, [], undefined);
    cluster.#etcdArgs = [
      "--name=m",
      `--data-dir=${join(dir, "etcd")}`,
      `--listen-client-urls=http://${client}`,
      `--advertise-client-urls=http://${client}`,
      `--listen-peer-urls=http://${peer}`,
      `--initial-advertise-peer-urls=http://${peer}`,
      `--initial-cluster=m=http://${peer}`,
    ];
    try {
      await cluster.startEtcd();
    } catch (error) {
      await cluster.stop({ keep: true }).catch(() => {});
      throw error;
    }
    return cluster;
  }

  /** The etcd member's client address (a cluster of one member). */
  get etcdClient(): string {
    if (this.#etcdArgs.length === 0) throw new RangeError("not a one-member etcd cluster");
    return this.meta.slice("etcd://".length);
  }

  /** Start (or restart, on its data dir and ports) the one etcd member; waits until it answers.
   * Its stderr is not kept (etcd logs a JSON line per event). */
  async startEtcd(): Promise<void> {
    if (this.#etcdArgs.length === 0) throw new RangeError("not a one-member etcd cluster");
    this.#etcd = new Deno.Command("/usr/bin/etcd", {
      args: this.#etcdArgs,
      stdout: "null",
      stderr: "null",
    }).spawn();
    const client = this.etcdClient;
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
  }

  /** kill -9 of the one etcd member (no shutdown path runs). */
  async killEtcd(): Promise<void> {
    signal(this.#etcd, "SIGKILL");
    await this.#etcd?.status;
    this.#etcd = undefined;
  }

  /** Start the links process (`_links_main.ts`): proxies and HTTP servers live there. */
  async #startLinks(): Promise<void> {
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", join(ROOT, "src/cluster/_links_main.ts")],
      stdin: "piped",
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let text = "";
    while (!/control \S+\n/.test(text)) {
      const { value, done } = await reader.read();
      if (done) throw new Error(`the links process exited before listening: ${text}`);
      text += value;
    }
    reader.releaseLock();
    void child.stdout.cancel().catch(() => {});
    this.#links = { child, control: /control (\S+)\n/.exec(text)![1] };
  }

  /** A request to the links process's control API. */
  async #control(path: string, body?: unknown): Promise<unknown> {
    if (!this.#links) throw new RangeError("this cluster has no emulated links (rttMs)");
    const response = await fetch(`http://${this.#links.control}${path}`, {
      method: body === undefined ? "GET" : "POST",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (!response.ok) throw new Error(`links process: ${path}: ${await response.text()}`);
    return await response.json();
  }

  /** A delay proxy from zone `from` to a port of this machine that belongs to zone `toZone`. */
  async #link(
    from: string,
    to: string,
    toZone: string,
    kind: ZoneLink["kind"],
    port: number,
  ): Promise<void> {
    const proxy = await this.#control("/link", {
      port,
      oneWayMs: this.rttMs / 2,
      bandwidthMbit: this.bandwidthMbit || undefined,
    }) as { id: string; address: string };
    this.links.push({ from, to, toZone, kind, proxy });
  }

  /** Every link's counters, read from the links process. */
  async linkStats(): Promise<Map<ZoneLink, LinkStats>> {
    const all = await this.#control("/stats") as Record<string, LinkStats>;
    return new Map(this.links.map((l) => [l, all[l.proxy.id]]));
  }

  /** The link from `from` to `to` (a replica, node or `backend-zK`), if there is one. */
  link(from: string | undefined, to: string): ZoneLink | undefined {
    return this.links.find((l) => l.from === from && l.to === to);
  }

  /**
   * Cut (or heal, `cut` false) every link of a zone: the proxies from it and to it drop what they
   * get and answer nothing (DelayProxy.cut), as if the cloud's network were gone. Its nodes and
   * replicas keep running and reach each other (same zone).
   */
  async cutZone(zone: string, cut = true): Promise<void> {
    if (this.links.length === 0) throw new RangeError("cutZone needs a cluster started with rttMs");
    const ids = this.links.filter((l) => l.from === zone || l.toZone === zone).map((l) =>
      l.proxy.id
    );
    await this.#control("/cut", { ids, cut });
  }

  /** Cut (or heal) the links from the other zones to one zone's backend store only. */
  async cutBackend(zone: string, cut = true): Promise<void> {
    const ids = this.links.filter((l) => l.kind === "backend" && l.toZone === zone).map((l) =>
      l.proxy.id
    );
    await this.#control("/cut", { ids, cut });
  }

  /** The address a replica is reached at from `zone`: its own, or the delay proxy from that zone
   * when the replica is in another zone and an RTT is injected. */
  replicaAddressFrom(replica: LocalReplica, zone: string | undefined): string {
    const link = this.link(zone, replica.id);
    return link ? link.proxy.address : replica.address;
  }

  /** The `--meta` a mount of `zone` is given: every replica as that zone reaches it, the zone's
   * own replicas first (the replica that answers first hands out the member list the client then
   * uses, and a replica's list is its zone's view). */
  metaFrom(zone: string | undefined): string {
    const member = this.etcdMembers.find((m) => m.zone === zone);
    if (member) return `etcd://${member.client}`;
    if (this.links.length === 0 || zone === undefined) return this.meta;
    const own = this.replicas.filter((r) => r.zone === zone);
    const others = this.replicas.filter((r) => r.zone !== zone);
    return `curp://${[...own, ...others].map((r) => this.replicaAddressFrom(r, zone)).join(",")}`;
  }

  /** Process ids of the metadata store's running processes: the CURP replicas, or etcd (every
   * member across zones). The bench reads their CPU per phase (bench/targets.ts). */
  storePids(): number[] {
    return [
      ...this.replicas.map((r) => r.child?.pid),
      this.#etcd?.pid,
      ...this.etcdMembers.map((m) => m.child.pid),
    ].filter((pid): pid is number => pid !== undefined);
  }

  /** The backend directory of a zone of a cluster started with `zones`. */
  zoneBackend(zone: string): string {
    return join(this.dir, `backend-${zone}`);
  }

  /** Start (or restart, on its data dir) one CURP replica; its stderr goes to logs/<id>.err. */
  async startReplica(replica: LocalReplica): Promise<void> {
    // Across zones, the other replicas as this replica's zone reaches them (through the delay
    // proxies); its own entry is its real address, which it listens on.
    const peers = this.replicas.map((r) => `${r.id}=${this.replicaAddressFrom(r, replica.zone)}`)
      .join(",");
    replica.child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", MOD, "meta", "serve", "--id", replica.id, "--peers", peers, "--data"]
        .concat([replica.dataDir]),
      stdout: "null",
      stderr: "piped",
    }).spawn();
    await this.#keepLog(replica.child, replica.id);
  }

  /** kill -9 of a replica (no shutdown path runs). */
  async killReplica(replica: LocalReplica): Promise<void> {
    signal(replica.child, "SIGKILL");
    await replica.child?.status;
    replica.child = undefined;
  }

  /** A replica's status, or undefined when it does not answer within a second. */
  async replicaStatus(replica: LocalReplica): Promise<ReplicaStatus | undefined> {
    if (!replica.child) return undefined;
    return await fetchStatus(replica.address, 1000).catch(() => undefined);
  }

  /** The running replica that reports itself leader (waits up to `timeoutMs` for one). */
  async metaLeader(timeoutMs = 20_000): Promise<LocalReplica> {
    let leader: LocalReplica | undefined;
    await waitFor(
      async () => {
        for (const replica of this.replicas) {
          if ((await this.replicaStatus(replica))?.role === "leader") {
            leader = replica;
            return true;
          }
        }
        return false;
      },
      timeoutMs,
      "a CURP leader",
    );
    return leader!;
  }

  /** Start (or restart, on its data dir) one mount daemon with `nodeEnv` added to the inherited
   * environment. */
  async startNode(node: LocalNode): Promise<void> {
    // nsenter enters only the network namespace (`ip netns exec` would also make a mount
    // namespace, hiding the FUSE mount from this one) and execs deno, so the child is the daemon.
    const [program, prefix] = node.net
      ? ["nsenter", [`--net=/run/netns/${node.net.ns}`, Deno.execPath()]]
      : [Deno.execPath(), []];
    // In a namespace the HTTP endpoint listens on the node's address, not the namespace's own
    // loopback, so the other nodes' dashboards can scrape it.
    const listen = node.net
      ? ["--peer-listen", `${node.net.address}:0`, "--http", `${node.net.address}:0`]
      : [];
    if (node.peerPort) {
      // Emulated distant zones: a fixed peer port, each other zone's route to it (its proxy),
      // and this zone's routes to the other zones' backends (their HTTP servers' proxies).
      const routes = this.links.filter((l) => l.to === node.id).map((l) =>
        `${l.from}=${l.proxy.address}`
      );
      const backends = this.links.filter((l) => l.kind === "backend" && l.from === node.zone)
        .map((l) => `${l.toZone}=http://${l.proxy.address}`);
      listen.push("--peer-listen", `127.0.0.1:${node.peerPort}`);
      if (routes.length > 0) listen.push("--peer-routes", routes.join(","));
      if (backends.length > 0) listen.push("--backend-routes", backends.join(","));
    }
    node.child = new Deno.Command(program, {
      args: [
        ...prefix,
        "run",
        "-A",
        MOD,
        "mount",
        node.mountpoint,
        "--data",
        node.dataDir,
        "--meta",
        this.metaFrom(node.zone),
        "--backend",
        node.backend ?? this.backend,
        "--node-id",
        node.id,
        ...(node.zone ? ["--zone", node.zone] : []),
        ...listen,
      ],
      env: { ...this.nodeEnv, ...node.env },
      stdout: "null",
      stderr: "piped",
    }).spawn();
    await this.#keepLog(node.child, node.id);
    // A daemon that exits (bad flags, metadata unreachable) is reported at once with its log.
    let exit: Deno.CommandStatus | undefined;
    node.child.status.then((status) => exit = status);
    const deadline = Date.now() + 60_000;
    while (!isMounted(node.mountpoint)) {
      if (exit || Date.now() > deadline) {
        const why = exit ? `exited with ${exit.code}` : "not mounted after 60 s";
        throw new Error(`mount ${node.id} ${why}; its log:\n${await this.logOf(node)}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    // fuse.transport = uring (SKYFS_FUSE_TRANSPORT, inherited or set for the cluster or the node)
    // must mean the ring: the daemon logs its transport after INIT, which the first request
    // after the mount brings. Without this check a test run meant for the ring could pass on
    // /dev/fuse unnoticed.
    const transport = node.env?.SKYFS_FUSE_TRANSPORT ?? this.nodeEnv.SKYFS_FUSE_TRANSPORT ??
      Deno.env.get("SKYFS_FUSE_TRANSPORT");
    if (transport === "uring") {
      const ringDeadline = Date.now() + 30_000;
      while (!(await this.logOf(node)).includes("skyfs: FUSE transport io_uring")) {
        if (exit || Date.now() > ringDeadline) {
          throw new Error(
            `mount ${node.id} is not on FUSE over io_uring (fuse.transport = uring); ` +
              `its log:\n${await this.logOf(node)}`,
          );
        }
        await Deno.stat(node.mountpoint).catch(() => {});
        await new Promise((r) => setTimeout(r, 20));
      }
    }
  }

  /** Keep a child's stderr in logs/<name>.err (appended across restarts, readable by tests). */
  async #keepLog(child: Deno.ChildProcess, name: string): Promise<void> {
    const file = await Deno.open(join(this.#log, `${name}.err`), { append: true, create: true });
    // Written chunk by chunk: piping into `file.writable` held everything back until the child
    // exited, so a test never saw the log of a running daemon.
    void (async () => {
      try {
        for await (const chunk of child.stderr) {
          for (let done = 0; done < chunk.length;) done += await file.write(chunk.subarray(done));
        }
      } catch {
        /* the child or the file went away */
      } finally {
        file.close();
      }
    })();
  }

  /** kill -9 of a node's daemon; its mount is left dead and cleared. */
  async kill(node: LocalNode): Promise<void> {
    signal(node.child, "SIGKILL");
    await node.child?.status;
    node.child = undefined;
    await lazyUnmount(node.mountpoint);
  }

  /** Stop cleanly (SIGTERM unmounts). */
  async stopNode(node: LocalNode): Promise<void> {
    if (!node.child) return;
    signal(node.child, "SIGTERM");
    const timer = setTimeout(() => signal(node.child, "SIGKILL"), 10_000);
    await node.child.status;
    clearTimeout(timer);
    node.child = undefined;
    if (isMounted(node.mountpoint)) await lazyUnmount(node.mountpoint);
  }

  /** The URL of a daemon's HTTP endpoint (dashboard, /metrics), from the "http: listening on"
   * line of its log; waits up to `timeoutMs` for it. */
  async httpUrl(daemon: { id: string }, timeoutMs = 30_000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const match = /http: listening on (http:\/\/\S+)/.exec(await this.logOf(daemon));
      if (match) return match[1];
      if (Date.now() > deadline) {
        throw new Error(`${daemon.id} logged no "http: listening on" line in ${timeoutMs} ms`);
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }

  /** A daemon's (node or replica id) stderr so far. */
  async logOf(node: { id: string }): Promise<string> {
    return await Deno.readTextFile(join(this.#log, `${node.id}.err`)).catch(() => "");
  }

  /** Take the node's link down (true) or up again (false): a partition without a kill. */
  async cutNetwork(node: LocalNode, cut = true): Promise<void> {
    if (!node.net) throw new RangeError(`node ${node.id} has no network namespace (netns option)`);
    await ip("link", "set", node.net.hostVeth, cut ? "down" : "up");
  }

  /** Stop the mounts (SIGTERM unmounts), then the metadata service (SIGTERM; SIGKILL after
   * 10 s), and remove the directory unless `keep`. */
  async stop(options: { keep?: boolean } = {}): Promise<void> {
    try {
      for (const node of this.nodes) await this.stopNode(node);
    } finally {
      // Even when a mount would not stop, the metadata service must not outlive the cluster.
      await Promise.all(this.replicas.map(async (replica) => {
        await terminate(replica.child);
        replica.child = undefined;
      }));
      await terminate(this.#etcd);
      this.#etcd = undefined;
      await Promise.all(this.etcdMembers.map((m) => terminate(m.child)));
      await terminate(this.#links?.child);
      this.#links = undefined;
    }
    if (this.#net) await removeNet(this.#net, this.nodes);
    if (options.keep) return;
    // A backend write still landing (a request of a cut link, aborted) can refill a directory
    // being removed: try again.
    for (let attempt = 0;; attempt++) {
      try {
        await Deno.remove(this.dir, { recursive: true });
        return;
      } catch (error) {
        if (attempt >= 5) throw error;
        await new Promise((r) => setTimeout(r, 300));
      }
    }
  }
}

/** SIGTERM, then SIGKILL if the child has not exited within `timeoutMs`; waits for the exit. */
async function terminate(child: Deno.ChildProcess | undefined, timeoutMs = 10_000): Promise<void> {
  if (!child) return;
  signal(child, "SIGTERM");
  const timer = setTimeout(() => signal(child, "SIGKILL"), timeoutMs);
  await child.status;
  clearTimeout(timer);
}

/** Signal a child that may have exited already (Ctrl-C reaches the whole process group). */
function signal(child: Deno.ChildProcess | undefined, name: Deno.Signal): void {
  try {
    child?.kill(name);
  } catch { /* already gone */ }
}

async function ip(...args: string[]): Promise<void> {
  const out = await new Deno.Command("ip", { args, stdout: "null", stderr: "piped" }).output();
  if (out.code !== 0) {
    throw new Error(`ip ${args.join(" ")}: ${new TextDecoder().decode(out.stderr).trim()}`);
  }
}

/** A bridge with a 10.x.y.1/24 no interface of this machine uses yet. */
async function createBridge(): Promise<LocalNet> {
  const used = new TextDecoder().decode(
    (await new Deno.Command("ip", { args: ["-4", "addr"], stdout: "piped" }).output()).stdout,
  );
  for (let attempt = 0; attempt < 20; attempt++) {
    const [x, y] = crypto.getRandomValues(new Uint8Array(2));
    const prefix = `10.${100 + (x % 150)}.${y}`;
    if (used.includes(` ${prefix}.`)) continue;
    // Interface names are at most 15 bytes: "skb" + 6 hex digits here, "skv" + 6 + id for veths.
    const tag = [...crypto.getRandomValues(new Uint8Array(3))]
      .map((b) => b.toString(16).padStart(2, "0")).join("");
    const net = { tag, bridge: `skb${tag}`, prefix };
    await ip("link", "add", net.bridge, "type", "bridge");
    await ip("addr", "add", `${prefix}.1/24`, "dev", net.bridge);
    await ip("link", "set", net.bridge, "up");
    return net;
  }
  throw new Error("no free 10.x.y.0/24 found for the cluster's bridge");
}

/** Namespace `skyfs-<tag>-<id>` with one end of a veth pair (address prefix.<host>), the other
 * end on the bridge. */
async function addNamespace(net: LocalNet, id: string, host: number) {
  const ns = `skyfs-${net.tag}-${id}`;
  const hostVeth = `skv${net.tag}${id}`;
  const inner = `skn${net.tag}${id}`;
  const address = `${net.prefix}.${host}`;
  try {
    await ip("netns", "add", ns);
    await ip("link", "add", hostVeth, "type", "veth", "peer", "name", inner);
    await ip("link", "set", inner, "netns", ns);
    await ip("link", "set", hostVeth, "master", net.bridge);
    await ip("link", "set", hostVeth, "up");
    await ip("-n", ns, "addr", "add", `${address}/24`, "dev", inner);
    await ip("-n", ns, "link", "set", inner, "up");
    await ip("-n", ns, "link", "set", "lo", "up");
  } catch (error) {
    await ip("link", "del", hostVeth).catch(() => {});
    await ip("netns", "del", ns).catch(() => {});
    throw error;
  }
  return { ns, address, hostVeth };
}

/** Remove the veths, namespaces and bridge (each may already be gone). */
async function removeNet(net: LocalNet, nodes: LocalNode[]): Promise<void> {
  for (const node of nodes) {
    if (!node.net) continue;
    await ip("link", "del", node.net.hostVeth).catch(() => {});
    await ip("netns", "del", node.net.ns).catch(() => {});
  }
  await ip("link", "del", net.bridge).catch(() => {});
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
