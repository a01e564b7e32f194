/**
 * How `skyfs stats MOUNTPOINT` finds the HTTP endpoint of the daemon serving a mount: the daemon
 * writes `http-<major>-<minor>.json` (its address, pid and mount point) into a runtime directory,
 * named by the device number the kernel gave the mount, the same key the LD_PRELOAD shim uses to
 * find the daemon's socket. Both sides read the device number from /proc/self/mountinfo, so
 * neither stats the mount (a daemon touching its own mount can deadlock). The file is removed at
 * unmount; one left by a killed daemon is recognized by its pid and mount point, and a later
 * mount with the same device number overwrites it.
 * @module
 */

import { join, resolve } from "node:path";

/** What the daemon publishes. */
export interface EndpointRecord {
  /** host:port of the HTTP server. */
  address: string;
  pid: number;
  mountPoint: string;
}

/** `/run/skyfs` as root; else `$XDG_RUNTIME_DIR/skyfs`, or `/tmp/skyfs-<uid>`. */
export function endpointDir(): string {
  if (Deno.uid() === 0) return "/run/skyfs";
  const runtime = Deno.env.get("XDG_RUNTIME_DIR");
  return runtime ? join(runtime, "skyfs") : `/tmp/skyfs-${Deno.uid()}`;
}

/** A mount as /proc/self/mountinfo lists it. */
export interface MountInfoEntry {
  major: number;
  minor: number;
  mountPoint: string;
  fstype: string;
}

/** The last mount on `path` in /proc/self/mountinfo (the one a path lookup reaches). */
export function mountAt(path: string): MountInfoEntry | undefined {
  let found: MountInfoEntry | undefined;
  for (const line of Deno.readTextFileSync("/proc/self/mountinfo").split("\n")) {
    const fields = line.split(" ");
    const dash = fields.indexOf("-");
    if (fields.length < 10 || dash < 6) continue;
    const mountPoint = fields[4].replace(
      /\\(\d{3})/g,
      (_, octal) => String.fromCharCode(parseInt(octal, 8)),
    );
    if (mountPoint !== path) continue;
    const [major, minor] = fields[2].split(":").map(Number);
    found = { major, minor, mountPoint, fstype: fields[dash + 1] };
  }
  return found;
}

function fileOf(entry: MountInfoEntry, dir: string): string {
  return join(dir, `http-${entry.major}-${entry.minor}.json`);
}

/** Write the record for the mount on `mountPoint` (call after the mount and the HTTP server
 * are up); returns a function that removes it. */
export function publishEndpoint(
  mountPoint: string,
  address: string,
  options: { dir?: string } = {},
): () => void {
  const dir = options.dir ?? endpointDir();
  const entry = mountAt(resolve(mountPoint));
  if (!entry) throw new Error(`"${mountPoint}" is not in /proc/self/mountinfo`);
  Deno.mkdirSync(dir, { recursive: true, mode: 0o755 });
  const file = fileOf(entry, dir);
  const record: EndpointRecord = { address, pid: Deno.pid, mountPoint: entry.mountPoint };
  const temporary = `${file}.${Deno.pid}.tmp`;
  Deno.writeTextFileSync(temporary, JSON.stringify(record) + "\n");
  Deno.renameSync(temporary, file);
  return () => {
    try {
      const current = JSON.parse(Deno.readTextFileSync(file)) as EndpointRecord;
      if (current.pid === Deno.pid) Deno.removeSync(file);
    } catch { /* already gone or replaced */ }
  };
}

/** The HTTP address of the daemon serving the mount on `path`; throws an Error whose message
 * names the problem and the fix. */
export function findEndpoint(path: string, options: { dir?: string } = {}): string {
  const dir = options.dir ?? endpointDir();
  const mountPoint = resolve(path);
  const entry = mountAt(mountPoint);
  if (!entry) {
    throw new Error(
      `"${mountPoint}" is not a mount point; pass a skyfs mount point or the daemon's HOST:PORT`,
    );
  }
  if (entry.fstype !== "fuse.skyfs") {
    throw new Error(
      `"${mountPoint}" is a ${entry.fstype} mount, not skyfs; pass a skyfs mount point or HOST:PORT`,
    );
  }
  const file = fileOf(entry, dir);
  let record: EndpointRecord;
  try {
    record = JSON.parse(Deno.readTextFileSync(file));
  } catch {
    throw new Error(
      `the daemon of "${mountPoint}" published no HTTP endpoint (${file} is missing: started ` +
        `with --http off?); remount with --http HOST:PORT or pass that address`,
    );
  }
  let alive = true;
  try {
    Deno.statSync(`/proc/${record.pid}`);
  } catch {
    alive = false;
  }
  if (!alive || record.mountPoint !== mountPoint) {
    throw new Error(
      `${file} is stale (pid ${record.pid}, mount "${record.mountPoint}"): the daemon of ` +
        `"${mountPoint}" did not publish its endpoint; pass its HOST:PORT instead`,
    );
  }
  return record.address;
}

/** What advertiseEndpoint needs of cluster membership (src/cluster/membership.ts). */
export interface HttpAdvertiser {
  self: { address: string };
  advertiseHttp(address: string): Promise<void>;
}

/**
 * Make a mount's endpoint findable: the runtime file for `skyfs stats MOUNTPOINT`, and in
 * cluster mode the node's membership record for the other nodes' dashboards (a wildcard bind
 * is advertised with the host of the node's peer address, which the other nodes already reach).
 * Failures are logged, never fatal. Returns the clean-up for the unmount.
 */
export function advertiseEndpoint(
  mountPoint: string,
  address: string,
  options: { membership?: HttpAdvertiser; log: (line: string) => void; dir?: string },
): () => void {
  let unpublish = () => {};
  try {
    unpublish = publishEndpoint(mountPoint, address, { dir: options.dir });
  } catch (error) {
    options.log(
      `skyfs: cannot publish the HTTP address for skyfs stats: ${(error as Error).message}`,
    );
  }
  const membership = options.membership;
  if (membership) {
    const wildcard = /^(0\.0\.0\.0|\[::\]):/.exec(address);
    const peerHost = membership.self.address.replace(/:\d+$/, "");
    const advertised = wildcard ? `${peerHost}:${address.slice(wildcard[0].length)}` : address;
    membership.advertiseHttp(advertised).catch((error) =>
      options.log(`skyfs: cannot advertise the HTTP address to the cluster: ${error.message}`)
    );
  }
  return unpublish;
}
