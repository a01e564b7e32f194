/**
 * What the CSI tests share: the volume admin API under test (a real mount's, or the contract's
 * fake in `_fake_volume_api.ts`, by SKYFS_TEST_VOLUME_API), a `skyfs csi` driver as a real process,
 * and a grpc-js client on its unix socket with one promise per call.
 * @module
 */

import * as grpc from "@grpc/grpc-js";
import assert from "node:assert/strict";
import { join } from "node:path";
import { findEndpoint } from "../../src/http/endpoint_file.ts";
import { csiPackage } from "../../src/csi/proto.ts";
import { MOD_TS, type Mount, REPO_ROOT, startMount } from "../_harness.ts";
import { startFakeVolumeApi } from "./_fake_volume_api.ts";

export { assert };
export const TOKEN = "csi-test-token-0123456789";

/**
 * SKYFS_TEST_VOLUME_API = fake | mount: who serves /api/v1/volumes to the driver. `mount` is the
 * mount's own endpoint; `fake` serves the contract from this process over directories of the real
 * skyfs mount (`_fake_volume_api.ts`), for a tree without the mount's volume API. Default: `mount`
 * when the tree has it (src/http/volumes.ts), else `fake`, so merging the volumes work switches
 * the tests to the real API. The tests do not depend on which.
 */
export function volumeApiKind(): "fake" | "mount" {
  const hasMountApi = (() => {
    try {
      return Deno.statSync(join(REPO_ROOT, "src", "http", "volumes.ts")).isFile;
    } catch {
      return false;
    }
  })();
  const kind = Deno.env.get("SKYFS_TEST_VOLUME_API") ?? (hasMountApi ? "mount" : "fake");
  if (kind !== "fake" && kind !== "mount") {
    throw new RangeError(`SKYFS_TEST_VOLUME_API="${kind}" is not fake or mount`);
  }
  return kind;
}

/** A skyfs mount with its volume API. */
export interface Skyfs {
  mount: Mount;
  mountpoint: string;
  /** --api for the driver: undefined when the driver finds the mount's own endpoint. */
  apiUrl?: string;
  /** The API's URL, for the tests' own requests. */
  url: string;
  dispose(): Promise<void>;
}

/** The endpoint the mount's daemon publishes (just after the mount appears in mountinfo). */
export async function publishedEndpoint(mountpoint: string): Promise<string> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      return findEndpoint(mountpoint);
    } catch (error) {
      if (Date.now() > deadline) throw error;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
}

export async function startSkyfs(): Promise<Skyfs> {
  const kind = volumeApiKind();
  const tokenFile = await Deno.makeTempFile({ prefix: "skyfs-csi-token-" });
  await Deno.writeTextFile(tokenFile, TOKEN + "\n");
  const mount = await startMount({
    extraArgs: ["--http", "127.0.0.1:0", "--http-token-file", tokenFile],
  });
  let url: string;
  let stopApi = () => Promise.resolve();
  if (kind === "fake") {
    const fake = startFakeVolumeApi(mount.mountpoint, TOKEN);
    url = fake.url;
    stopApi = fake.stop;
  } else {
    url = `http://${await publishedEndpoint(mount.mountpoint)}`;
  }
  return {
    mount,
    mountpoint: mount.mountpoint,
    apiUrl: kind === "fake" ? url : undefined,
    url,
    async dispose() {
      await stopApi();
      await mount.dispose();
      await Deno.remove(tokenFile).catch(() => {});
    },
  };
}

/** A `skyfs csi` process. */
export interface Driver {
  socket: string;
  pid: number;
  output(): string;
  /** SIGTERM and wait for exit 0. */
  stop(): Promise<void>;
  /** SIGKILL and wait. */
  kill9(): Promise<void>;
}

export interface DriverOptions {
  socket: string;
  mode?: "node" | "controller" | "both";
  mountpoint?: string;
  apiUrl?: string;
  nodeId?: string;
  zone?: string;
  /** The admin token the driver is given (default TOKEN). */
  token?: string;
  extraArgs?: string[];
}

/** Starts `mod.ts csi` and waits until its socket accepts; throws with its output if it exits. */
export async function startDriver(options: DriverOptions): Promise<Driver> {
  const args = ["run", "-A", "--quiet", MOD_TS, "csi", "--endpoint", `unix://${options.socket}`];
  args.push("--mode", options.mode ?? "both");
  if (options.mountpoint) args.push("--mount", options.mountpoint);
  if (options.apiUrl) args.push("--api", options.apiUrl);
  if (options.nodeId) args.push("--node-id", options.nodeId);
  if (options.zone) args.push("--zone", options.zone);
  args.push(...(options.extraArgs ?? []));
  const child = new Deno.Command(Deno.execPath(), {
    args,
    cwd: REPO_ROOT,
    env: { SKYFS_HTTP_TOKEN: options.token ?? TOKEN },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const log = { text: "" };
  const drain = async (stream: ReadableStream<Uint8Array>) => {
    const decoder = new TextDecoder();
    for await (const chunk of stream) log.text += decoder.decode(chunk, { stream: true });
  };
  const drained = Promise.all([drain(child.stdout), drain(child.stderr)]);
  let exited: Deno.CommandStatus | undefined;
  child.status.then((s) => exited = s);
  const deadline = Date.now() + 60_000;
  while (!log.text.includes("csi: serving")) {
    if (exited) {
      await drained;
      throw new Error(`skyfs csi exited with ${exited.code} before serving:\n${log.text}`);
    }
    if (Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new Error(`skyfs csi did not serve within 60 s:\n${log.text}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return {
    socket: options.socket,
    pid: child.pid,
    output: () => log.text,
    async stop() {
      child.kill("SIGTERM");
      const status = await child.status;
      await drained;
      assert.equal(status.code, 0, `skyfs csi exited ${status.code}:\n${log.text}`);
    },
    async kill9() {
      child.kill("SIGKILL");
      await child.status;
      await drained;
    },
  };
}

type Service = "Identity" | "Controller" | "Node";

/** grpc-js clients of the three services on one socket. */
export class CsiClient {
  readonly #clients: Record<Service, grpc.Client>;

  constructor(socket: string) {
    const csi = csiPackage();
    const address = `unix://${socket}`;
    const credentials = grpc.credentials.createInsecure();
    this.#clients = {
      Identity: new csi.Identity(address, credentials),
      Controller: new csi.Controller(address, credentials),
      Node: new csi.Node(address, credentials),
    };
  }

  /** The reply of `service.method(request)`; rejects with the grpc ServiceError. */
  // deno-lint-ignore no-explicit-any
  call(service: Service, method: string, request: Record<string, unknown> = {}): Promise<any> {
    const client = this.#clients[service] as unknown as Record<
      string,
      (
        request: unknown,
        options: grpc.CallOptions,
        callback: (error: grpc.ServiceError | null, reply: unknown) => void,
      ) => void
    >;
    return new Promise((resolve, reject) =>
      client[method].call(
        client,
        request,
        { deadline: Date.now() + 60_000 },
        (error, reply) => error ? reject(error) : resolve(reply),
      )
    );
  }

  /** Asserts the call fails with `code` and a message matching `message`; returns the message. */
  async fails(
    service: Service,
    method: string,
    request: Record<string, unknown>,
    code: grpc.status,
    message: RegExp,
  ): Promise<string> {
    try {
      const reply = await this.call(service, method, request);
      throw new Error(
        `${method} succeeded (${JSON.stringify(reply)}); expected ${grpc.status[code]}`,
      );
    } catch (error) {
      const serviceError = error as grpc.ServiceError;
      if (serviceError.code === undefined) throw error;
      assert.equal(
        grpc.status[serviceError.code],
        grpc.status[code],
        `${method}: ${serviceError.details}`,
      );
      assert.match(serviceError.details, message);
      return serviceError.details;
    }
  }

  close(): void {
    for (const client of Object.values(this.#clients)) client.close();
  }
}

export const MOUNT_CAPABILITY = {
  mount: { fs_type: "", mount_flags: [] },
  access_mode: { mode: "SINGLE_NODE_WRITER" },
};
export const READER_CAPABILITY = {
  mount: {},
  access_mode: { mode: "MULTI_NODE_READER_ONLY" },
};
export const BLOCK_CAPABILITY = { block: {}, access_mode: { mode: "SINGLE_NODE_WRITER" } };

/** The mounts /proc/self/mountinfo lists at `path`: their root inside the file system and
 * whether they are read-only. */
export function mountsAt(path: string): { root: string; readOnly: boolean; fstype: string }[] {
  const found = [];
  for (const line of Deno.readTextFileSync("/proc/self/mountinfo").split("\n")) {
    const fields = line.split(" ");
    const dash = fields.indexOf("-");
    if (dash < 6 || fields[4] !== path) continue;
    found.push({
      root: fields[3],
      readOnly: fields[5].split(",").includes("ro"),
      fstype: fields[dash + 1],
    });
  }
  return found;
}

/** A fresh directory for sockets, staging and target paths. */
export async function workDir(): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "skyfs-csi-" });
  await Deno.mkdir(join(dir, "pods"), { recursive: true });
  return dir;
}

export { grpc };

/** Unmounts (lazily) every mount under `dir`, deepest first: what a failed test left bound. */
export async function unmountUnder(dir: string): Promise<void> {
  const points = Deno.readTextFileSync("/proc/self/mountinfo").split("\n")
    .map((line) => line.split(" ")[4])
    .filter((point) => point !== undefined && point.startsWith(dir + "/"))
    .sort((a, b) => b.length - a.length);
  for (const point of points) {
    await new Deno.Command("umount", { args: ["-l", point], stderr: "null" }).output();
  }
}

/** Runs every clean-up step even when one fails, then throws the first failure (so a driver that
 * did not exit cleanly fails the test without leaving a mount behind). */
export async function settle(...steps: (() => unknown)[]): Promise<void> {
  let first: unknown;
  for (const step of steps) {
    try {
      await step();
    } catch (error) {
      first ??= error;
    }
  }
  if (first !== undefined) throw first;
}
