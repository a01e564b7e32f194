/**
 * The gRPC server of `skyfs csi`: the Identity service always, Controller and Node by mode, on a
 * unix socket. Handlers are plain functions from a decoded request to a reply; this file is the
 * one place where a thrown {@linkcode CsiError} (or any other error) becomes the call's status.
 * @module
 */

import * as grpc from "@grpc/grpc-js";
import { type CsiContext, servesController, servesNode } from "./context.ts";
import { controllerHandlers } from "./controller.ts";
import { startGoawayProxy } from "./goaway_filter.ts";
import { identityHandlers } from "./identity.ts";
import { nodeHandlers } from "./node.ts";
import { csiPackage } from "./proto.ts";
import { CsiError, status } from "./status.ts";
import { VolumeApiError } from "./volume_api.ts";

// deno-lint-ignore no-explicit-any
export type Handler = (request: any) => unknown;
export type Handlers = Record<string, Handler>;

/** The socket path of `unix:///path` (or `unix:/path`); throws a TypeError naming the form. */
export function socketPathOf(endpoint: string): string {
  const match = /^unix:\/\/(\/.+)$/.exec(endpoint) ?? /^unix:(\/[^/].*)$/.exec(endpoint);
  if (!match) {
    throw new TypeError(
      `--endpoint "${endpoint}" is not a unix socket URL; write unix:///path/to/csi.sock`,
    );
  }
  return match[1];
}

function toServiceError(error: unknown): Partial<grpc.ServiceError> {
  if (error instanceof CsiError) return { code: error.code, details: error.message };
  if (error instanceof VolumeApiError) {
    // Unreachable or failing API: the CO retries an UNAVAILABLE call. A refusal of the token or
    // of a value the driver passed on is the CO's to see as such.
    const code = error.status === 0 || error.status >= 500
      ? status.UNAVAILABLE
      : error.status === 401
      ? status.UNAUTHENTICATED
      : error.status === 403
      ? status.PERMISSION_DENIED
      : error.status === 400
      ? status.INVALID_ARGUMENT
      : status.INTERNAL;
    return { code, details: error.message };
  }
  return {
    code: status.INTERNAL,
    details: `internal error: ${(error as Error)?.message ?? error}`,
  };
}

/**
 * Runs calls about one volume one after the other. A CO should not overlap them, but a retry after
 * a timeout can: two NodePublishVolume calls for one target could then both find it unmounted and
 * stack two binds, two CreateVolume calls both find no volume. Calls about different volumes run
 * concurrently.
 */
class VolumeQueue {
  readonly #tails = new Map<string, Promise<unknown>>();

  run<T>(key: string | undefined, work: () => Promise<T>): Promise<T> {
    if (!key) return work();
    const previous = this.#tails.get(key) ?? Promise.resolve();
    const result = previous.then(work, work);
    const tail = result.catch(() => {});
    this.#tails.set(key, tail);
    tail.then(() => {
      if (this.#tails.get(key) === tail) this.#tails.delete(key);
    });
    return result;
  }
}

/** Calls served (by method) and running now. */
interface CallCounts {
  byMethod: Map<string, number>;
  running: number;
}

/** grpc-js unary implementations of a table of handlers, counting calls. */
function implement(
  handlers: Handlers,
  calls: CallCounts,
  queue: VolumeQueue,
): grpc.UntypedServiceImplementation {
  const implementation: grpc.UntypedServiceImplementation = {};
  for (const [name, handler] of Object.entries(handlers)) {
    implementation[name] = (
      call: grpc.ServerUnaryCall<unknown, unknown>,
      callback: grpc.sendUnaryData<unknown>,
    ) => {
      calls.byMethod.set(name, (calls.byMethod.get(name) ?? 0) + 1);
      calls.running++;
      const request = call.request as { volume_id?: string; name?: string };
      queue.run(request.volume_id || request.name, async () => await handler(call.request))
        .finally(() => calls.running--)
        .then((reply) => callback(null, reply), (error) => callback(toServiceError(error)));
    };
  }
  return implementation;
}

/** A running driver. */
export interface CsiServer {
  socketPath: string;
  /** Calls served, by method name. */
  calls: Map<string, number>;
  /** Removes the socket (no new connections) and waits, at most `graceMs`, for the running calls
   * to finish; the caller then exits the process. */
  close(graceMs?: number): Promise<void>;
}

/** Serves the driver's services for `ctx` on the unix socket of `endpoint`. A socket file left by
 * a killed driver is replaced; a live driver on it is an error (its address is in use). */
export async function startCsiServer(ctx: CsiContext, endpoint: string): Promise<CsiServer> {
  const socketPath = socketPathOf(endpoint);
  const csi = csiPackage();
  const calls: CallCounts = { byMethod: new Map(), running: 0 };
  const queue = new VolumeQueue();
  const server = new grpc.Server();
  server.addService(csi.Identity.service, implement(identityHandlers(ctx), calls, queue));
  if (servesController(ctx)) {
    server.addService(csi.Controller.service, implement(controllerHandlers(ctx), calls, queue));
  }
  if (servesNode(ctx)) {
    server.addService(csi.Node.service, implement(nodeHandlers(ctx), calls, queue));
  }

  await removeStaleSocket(socketPath);
  const directory = socketPath.replace(/\/[^/]*$/, "") || "/";
  await Deno.mkdir(directory, { recursive: true });
  // grpc-js listens on a socket of its own beside the public one; the GOAWAY filter
  // (goaway_filter.ts: why) listens on the public one.
  // One name, not one per process: a killed driver's is replaced like its public socket.
  const internalPath = `${directory}/.${socketPath.slice(directory.length + 1)}.grpc`;
  await Deno.remove(internalPath).catch(() => {});
  await new Promise<void>((resolve, reject) =>
    server.bindAsync(
      `unix://${internalPath}`,
      grpc.ServerCredentials.createInsecure(),
      (error) =>
        error
          ? reject(new Error(`Cannot serve CSI on "${internalPath}": ${error.message}`))
          : resolve(),
    )
  );
  let proxy;
  try {
    proxy = startGoawayProxy(socketPath, internalPath);
  } catch (error) {
    await Deno.remove(internalPath).catch(() => {});
    throw new Error(`Cannot serve CSI on "${socketPath}": ${(error as Error).message}`);
  }
  return {
    socketPath,
    calls: calls.byMethod,
    async close(graceMs = 5_000) {
      // Not grpc-js's tryShutdown/forceShutdown: their GOAWAY to a connected client can abort
      // the process inside Deno's node:http2 as well. Every call is idempotent, so a call cut by
      // the exit is retried by the CO.
      proxy.close();
      await Deno.remove(socketPath).catch(() => {});
      const deadline = Date.now() + graceMs;
      while (calls.running > 0 && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      await Deno.remove(internalPath).catch(() => {});
    },
  };
}

/** Removes `path` if it is a socket nobody listens on; refuses when a process still serves it. */
async function removeStaleSocket(path: string): Promise<void> {
  const info = await Deno.lstat(path).catch(() => undefined);
  if (info === undefined) return;
  if (!info.isSocket) {
    throw new Error(`Cannot serve CSI on "${path}": it exists and is not a socket; remove it`);
  }
  try {
    const connection = await Deno.connect({ transport: "unix", path });
    connection.close();
  } catch {
    await Deno.remove(path);
    return;
  }
  throw new Error(`Cannot serve CSI on "${path}": another process serves it; stop that one first`);
}
