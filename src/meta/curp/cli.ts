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

/** Run a replica until SIGINT or SIGTERM. Flags are checked here; errors say which and why. */
export async function metaServe(
  values: Record<string, string | undefined>,
  httpToken?: string,
): Promise<void> {
  const id = values.id;
  const peers = values.peers;
  const data = values.data;
  if (id === undefined || peers === undefined || data === undefined) {
    throw new RangeError("skyfs meta serve needs --id, --peers and --data; see --help");
  }
  const tickText = values["tick-ms"];
  const tickMs = tickText === undefined ? 50 : Number(tickText);
  if (!(Number.isInteger(tickMs) && tickMs >= 1 && tickMs <= 10_000)) {
    throw new RangeError(`--tick-ms "${tickText}" is not a whole number of milliseconds (1-10000)`);
  }
  // No flag yet (mod.ts defines the flags): tests and operators tune it from the environment.
  const everyText = Deno.env.get("SKYFS_CURP_SNAPSHOT_EVERY");
  const snapshotEvery = everyText === undefined ? undefined : Number(everyText);
  if (snapshotEvery !== undefined && !(Number.isInteger(snapshotEvery) && snapshotEvery >= 1)) {
    throw new RangeError(`SKYFS_CURP_SNAPSHOT_EVERY "${everyText}" is not a positive integer`);
  }
  const listen = values.http ?? DEFAULT_REPLICA_HTTP;
  if (values.http !== undefined) checkListen(listen); // the default falls back to any port
  // One engine per process: the replica's log, snapshots and hard state go through it. No spin:
  // every append ends in an fdatasync (0.2 ms and up here), which never completes within a spin,
  // so spinning only took the CPU that the other replicas on the machine needed (a replica's
  // profile under a create loop: 28% of its busy time in the spin of #submitStaged).
  const io = await openIoEngine({ uring: { spinUs: 0 } });
  let server: ReplicaServer;
  try {
    server = await ReplicaServer.start({ id, peers, dataDir: data, tickMs, snapshotEvery, io });
  } catch (error) {
    await io.shutdown();
    throw error;
  }
  const logger = new Logger();
  let http: HttpServer | undefined;
  try {
    http = startHttpServer(replicaHttpContext({ server, io, logger, token: httpToken }), listen, {
      fallbackToAnyPort: values.http === undefined,
    });
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
          `revision=${s.revision} pool=${s.poolSize} fast-path=${hit} (${answered} proposals led)`,
      );
    } catch (error) {
      console.log(`${id} ${address} unreachable: ${(error as Error).message}`);
    }
  }
}
