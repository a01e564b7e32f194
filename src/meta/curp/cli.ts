/**
 * `skyfs meta serve` and `skyfs meta status`: flag checking and the foreground replica process.
 * @module
 */

import { fetchStatus, ReplicaServer } from "./server.ts";
import { openIoEngine } from "../../io/mod.ts";
import { Logger } from "../../log.ts";
import {
  checkListen,
  DEFAULT_REPLICA_HTTP,
  type HttpServer,
  startHttpServer,
} from "../../http/server.ts";
import { replicaHttpContext } from "../../http/replica_context.ts";

/** What `skyfs meta serve` runs with, resolved and range-checked by src/config (mod.ts). */
export interface MetaServeOptions {
  /** Config meta.id, meta.peers, meta.data: required. */
  id?: string;
  peers?: string;
  dataDir?: string;
  /** Config meta.tick_ms. */
  tickMs: number;
  /** Config curp.snapshot_every (SKYFS_CURP_SNAPSHOT_EVERY). Default the core's. */
  snapshotEvery?: number;
  /** Config curp.witness_ack_after_write. Default true (ServeOptions). */
  witnessAckAfterWrite?: boolean;
  /** Config curp.log_writes. Default mapped (storage.ts). */
  logWrites?: "mapped" | "engine";
  /** Config io.engine and io.uring_lib. */
  io?: { engine?: string; libraryPath?: string };
  /** Config log.debug: nothing more yet (the replica has no debug output of its own). */
  debug?: boolean;
  /** Config meta.http (--http): HOST:PORT or "off". Default DEFAULT_REPLICA_HTTP. */
  http?: string;
  /** Config http.token_file or http.token: the admin API's bearer token; none = refused. */
  httpToken?: string;
}

/** Run a replica until SIGINT or SIGTERM. */
export async function metaServe(options: MetaServeOptions): Promise<void> {
  const { id, peers, dataDir: data, tickMs, snapshotEvery, witnessAckAfterWrite, httpToken } =
    options;
  if (id === undefined || peers === undefined || data === undefined) {
    throw new RangeError(
      "skyfs meta serve needs --id, --peers and --data (or meta.id, meta.peers, meta.data in " +
        "--config FILE); see --help",
    );
  }
  const listen = options.http ?? DEFAULT_REPLICA_HTTP;
  if (options.http !== undefined) checkListen(listen); // the default falls back to any port
  // One engine per process: the replica's log, snapshots and hard state go through it. No spin:
  // every append ends in an fdatasync (0.2 ms and up here), which never completes within a spin,
  // so spinning only took the CPU that the other replicas on the machine needed (a replica's
  // profile under a create loop: 28% of its busy time in the spin of #submitStaged).
  const io = await openIoEngine({
    engine: options.io?.engine,
    uring: {
      spinUs: 0,
      ...(options.io?.libraryPath ? { libraryPath: options.io.libraryPath } : {}),
    },
  });
  let server: ReplicaServer;
  try {
    server = await ReplicaServer.start({
      id,
      peers,
      dataDir: data,
      tickMs,
      snapshotEvery,
      witnessAckAfterWrite,
      logWrites: options.logWrites,
      io,
    });
  } catch (error) {
    await io.shutdown();
    throw error;
  }
  const logger = new Logger();
  let http: HttpServer | undefined;
  try {
    if (listen !== "off") {
      http = startHttpServer(replicaHttpContext({ server, io, logger, token: httpToken }), listen, {
        fallbackToAnyPort: options.http === undefined,
      });
    }
  } catch (error) {
    logger.error(`skyfs: ${(error as Error).message}; serving without the HTTP endpoint`);
  }
  let stop = () => {};
  const signalled = new Promise<void>((resolve) => {
    stop = () => {
      Deno.removeSignalListener("SIGINT", stop);
      Deno.removeSignalListener("SIGTERM", stop);
      resolve();
    };
    Deno.addSignalListener("SIGINT", stop);
    Deno.addSignalListener("SIGTERM", stop);
  });
  try {
    // A storage failure stops the replica: exit non-zero so a supervisor restarts it.
    await Promise.race([signalled, server.stopped]);
  } finally {
    stop();
    await http?.close();
    await server.close();
    await io.shutdown();
  }
}

/** Print one line per replica, asking every member the first reachable one names. */
export async function metaStatus(positionals: string[]): Promise<void> {
  const addresses = positionals.flatMap((p) => p.split(",")).filter((a) => a !== "");
  if (addresses.length === 0) {
    throw new RangeError("skyfs meta status needs HOST:PORT of at least one replica");
  }
  let members: Record<string, string> | undefined;
  for (const a of addresses) {
    try {
      members = (await fetchStatus(a)).members;
      break;
    } catch (error) {
      console.error(`${a}: ${(error as Error).message}`);
    }
  }
  if (members === undefined) throw new Error(`No replica of ${addresses.join(",")} answered`);
  for (const [id, address] of Object.entries(members)) {
    try {
      const s = await fetchStatus(address);
      const answered = s.fastReplies + s.slowReplies;
      const hit = answered === 0 ? "-" : `${(100 * s.fastReplies / answered).toFixed(1)}%`;
      console.log(
        `${id} ${address} ${s.role} term=${s.term} leader=${s.leaderId ?? "-"} ` +
          `commit=${s.commitIndex} applied=${s.appliedIndex} last=${s.lastIndex} ` +
          `revision=${s.revision} pool=${s.poolSize} fast-path=${hit} (${answered} proposals led) ` +
          `tick-lag-max=${s.maxTickLagMs ?? "-"}ms stalls=${s.tickStalls ?? "-"}`,
      );
    } catch (error) {
      console.log(`${id} ${address} unreachable: ${(error as Error).message}`);
    }
  }
}
