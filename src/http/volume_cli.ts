/**
 * `skyfs volume create|list|delete|resize|usage`: a client of a mount's volume admin API
 * (src/http/volumes.ts), found as `skyfs stats` finds a mount's endpoint (endpoint_file.ts).
 * Every failure is one line naming the problem (VolumeCliError); mod.ts prints it and exits 1.
 * @module
 */

import { checkVolumeName } from "../vfs/volumes.ts";
import { findEndpoint } from "./endpoint_file.ts";

export class VolumeCliError extends Error {
  override name = "VolumeCliError";
}

export const VOLUME_USAGE = `Usage: skyfs volume COMMAND TARGET [NAME] [options]

Manage the volumes of a skyfs mount (directories /volumes/NAME with their own capacity and inode
quota; README "Volumes and quotas"). TARGET is the mount point or its daemon's HOST:PORT.

  create TARGET NAME --capacity SIZE [--inodes N] [--param KEY=VALUE]...
  list TARGET
  usage TARGET NAME
  resize TARGET NAME --capacity SIZE
  delete TARGET NAME         removes the volume's files too

SIZE is bytes or a number with K, M, G, T (powers of 1024), e.g. 10G. Changing commands need the
mount's admin token: --http-token-file FILE or SKYFS_HTTP_TOKEN, as the mount was given.

Options:
  --capacity SIZE        the volume's capacity
  --inodes N             most inodes (files, directories, ...); default 0 = no limit
  --param KEY=VALUE      a parameter kept with the volume (repeatable)
  --http-token-file F    file holding the mount's bearer token
  --config FILE          configuration file (http.token_file, http.token)`;

export interface VolumeCliOptions {
  capacity?: string;
  inodes?: string;
  params?: string[];
  token?: string;
  write?: (line: string) => void;
}

const UNITS: Record<string, number> = { "": 1, K: 2 ** 10, M: 2 ** 20, G: 2 ** 30, T: 2 ** 40 };

/** Bytes of a SIZE argument ("10G", "512M", "4096"). */
export function parseSize(text: string, flag = "--capacity"): number {
  const match = /^(\d+(?:\.\d+)?)([KMGT]?)(?:i?B)?$/i.exec(text.trim());
  const bytes = match ? Math.floor(Number(match[1]) * UNITS[match[2].toUpperCase()]) : NaN;
  if (!(bytes > 0 && bytes <= Number.MAX_SAFE_INTEGER)) {
    throw new VolumeCliError(
      `${flag} ${JSON.stringify(text)} is not a size: give bytes or a number with K, M, G or T ` +
        "(e.g. 10G)",
    );
  }
  return bytes;
}

/** A byte count as people read it: 10 GiB, 1.5 MiB, 512 B. */
export function showBytes(bytes: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${unit === 0 ? value : Number(value.toFixed(value < 10 ? 2 : 1))} ${units[unit]}`;
}

function baseUrl(target: string): string {
  if (/^https?:\/\//.test(target)) return target.replace(/\/+$/, "");
  if (/^[^/]*:\d+$/.test(target)) return `http://${target}`;
  try {
    return `http://${findEndpoint(target)}`;
  } catch (error) {
    throw new VolumeCliError((error as Error).message);
  }
}

interface VolumeJson {
  name: string;
  path: string;
  capacityBytes: number;
  inodes: number;
  usedBytes: number;
  usedInodes: number;
  parameters: Record<string, string>;
  createdAt: string;
}

async function call(
  url: string,
  method: string,
  options: { token?: string; body?: unknown } = {},
): Promise<{ status: number; json: Record<string, unknown> }> {
  const headers: Record<string, string> = {};
  if (options.token) headers.authorization = `Bearer ${options.token}`;
  if (options.body !== undefined) headers["content-type"] = "application/json";
  let response: Response;
  try {
    response = await fetch(url, {
      method,
      headers,
      body: options.body === undefined ? undefined : JSON.stringify(options.body),
      signal: AbortSignal.timeout(30_000),
    });
  } catch (error) {
    throw new VolumeCliError(`cannot reach ${new URL(url).host}: ${(error as Error).message}`);
  }
  const text = await response.text();
  let json: Record<string, unknown> = {};
  try {
    json = text ? JSON.parse(text) : {};
  } catch {
    throw new VolumeCliError(`${url} answered ${response.status} with no JSON: is it skyfs?`);
  }
  if (response.status >= 400) {
    throw new VolumeCliError(String(json.error ?? `HTTP ${response.status}`));
  }
  return { status: response.status, json };
}

function usageLine(v: VolumeJson): string {
  const percent = v.capacityBytes > 0 ? Math.round((100 * v.usedBytes) / v.capacityBytes) : 0;
  const inodes = v.inodes > 0 ? `${v.usedInodes} of ${v.inodes} inodes` : `${v.usedInodes} inodes`;
  return `${v.name}: ${showBytes(v.usedBytes)} of ${showBytes(v.capacityBytes)} used ` +
    `(${percent}%), ${inodes}, at ${v.path}`;
}

/** Run one `skyfs volume` command; throws VolumeCliError with the one line to print. */
export async function runVolumeCommand(
  positionals: string[],
  options: VolumeCliOptions = {},
): Promise<void> {
  const write = options.write ?? ((line: string) => console.log(line));
  const [command, target, name, ...rest] = positionals;
  const commands = ["create", "list", "usage", "resize", "delete"];
  if (!commands.includes(command)) {
    throw new VolumeCliError(
      `skyfs volume needs a command: ${commands.join(", ")} (got ${JSON.stringify(command ?? "")})`,
    );
  }
  if (target === undefined) {
    throw new VolumeCliError(`skyfs volume ${command} needs TARGET: a mount point or HOST:PORT`);
  }
  const wantsName = command !== "list";
  if (wantsName && name === undefined) {
    throw new VolumeCliError(`skyfs volume ${command} needs the volume NAME after TARGET`);
  }
  if (rest.length > 0 || (!wantsName && name !== undefined)) {
    throw new VolumeCliError(
      `skyfs volume ${command}: unexpected argument ${JSON.stringify(rest[0] ?? name)}`,
    );
  }
  if (wantsName) {
    try {
      checkVolumeName(name);
    } catch (error) {
      throw new VolumeCliError((error as Error).message);
    }
  }
  const base = `${baseUrl(target)}/api/v1`;
  const token = options.token;
  switch (command) {
    case "create": {
      if (options.capacity === undefined) {
        throw new VolumeCliError("skyfs volume create needs --capacity SIZE (e.g. 10G)");
      }
      const parameters: Record<string, string> = {};
      for (const param of options.params ?? []) {
        const at = param.indexOf("=");
        if (at <= 0) throw new VolumeCliError(`--param ${JSON.stringify(param)} is not KEY=VALUE`);
        parameters[param.slice(0, at)] = param.slice(at + 1);
      }
      let inodes: number | undefined;
      if (options.inodes !== undefined) {
        inodes = Number(options.inodes);
        if (!Number.isInteger(inodes) || inodes < 0) {
          throw new VolumeCliError(`--inodes ${JSON.stringify(options.inodes)} is not a count`);
        }
      }
      const { status, json } = await call(`${base}/volumes`, "POST", {
        token,
        body: {
          name,
          capacityBytes: parseSize(options.capacity),
          ...(inodes !== undefined ? { inodes } : {}),
          ...(Object.keys(parameters).length > 0 ? { parameters } : {}),
        },
      });
      const volume = json as unknown as VolumeJson;
      write(`${status === 201 ? "created" : "exists"} ${usageLine(volume)}`);
      return;
    }
    case "list": {
      write(
        ["NAME", "CAPACITY", "USED", "INODES", "PATH"].map((h, i) => h.padEnd(i === 0 ? 24 : 12))
          .join("").trimEnd(),
      );
      let start: string | undefined;
      do {
        const query = `limit=1000${start ? `&start=${encodeURIComponent(start)}` : ""}`;
        const { json } = await call(`${base}/volumes?${query}`, "GET");
        for (const v of json.volumes as VolumeJson[]) {
          const inodes = v.inodes > 0 ? `${v.usedInodes}/${v.inodes}` : `${v.usedInodes}`;
          write(
            v.name.padEnd(24) + showBytes(v.capacityBytes).padEnd(12) +
              showBytes(v.usedBytes).padEnd(12) + inodes.padEnd(12) + v.path,
          );
        }
        start = json.next as string | undefined;
      } while (start !== undefined);
      return;
    }
    case "usage": {
      const { json } = await call(`${base}/volumes/${name}`, "GET");
      write(usageLine(json as unknown as VolumeJson));
      return;
    }
    case "resize": {
      if (options.capacity === undefined) {
        throw new VolumeCliError("skyfs volume resize needs --capacity SIZE (e.g. 20G)");
      }
      const { json } = await call(`${base}/volumes/${name}/resize`, "POST", {
        token,
        body: { capacityBytes: parseSize(options.capacity) },
      });
      write(`resized ${usageLine(json as unknown as VolumeJson)}`);
      return;
    }
    case "delete": {
      await call(`${base}/volumes/${name}`, "DELETE", { token });
      write(`deleted volume ${name}`);
      return;
    }
  }
}
