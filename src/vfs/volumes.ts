/**
 * Volumes: directory trees `/<volume.root>/<name>` of the namespace with their own capacity and
 * inode limit, the unit a Kubernetes volume is (DESIGN.md section 10). This file creates, reads,
 * lists, resizes and deletes them; volume_quota.ts keeps their usage.
 * @module
 */

import { Errno, FsError } from "../fs_error.ts";
import { type QuotaRecord, ROOT_INO, type VolumeRecord } from "../meta/namespace.ts";
import * as libc from "../io/libc.ts";
import type { Ctx } from "./types.ts";
import type { VfsCore } from "./core.ts";
import { createIn, forget, lookup, makeNode, rmdir, unlink } from "./entry.ts";
import { isDir, S_IFDIR } from "./perm.ts";
import { totalReserved } from "./volume_quota.ts";

/** What the rule for a volume name is, as the errors quote it. */
export const VOLUME_NAME_RULE = "^[a-z0-9][a-z0-9._-]{0,127}$";
const VOLUME_NAME = new RegExp(VOLUME_NAME_RULE);

/** A volume as the admin API and `skyfs volume` show it. */
export interface Volume {
  name: string;
  /** Its directory in the namespace, e.g. "/volumes/pvc-1". */
  path: string;
  capacityBytes: number;
  /** Most inodes; 0: no limit. */
  inodes: number;
  usedBytes: number;
  usedInodes: number;
  /** Bytes reserved by writers for data not stored yet (counted against the capacity). */
  reservedBytes: number;
  parameters: Record<string, string>;
  createdAt: string;
}

export interface CreateVolume {
  name: string;
  capacityBytes: number;
  inodes?: number;
  parameters?: Record<string, string>;
}

/** The volume operations of a mount (reached through its Vfs). */
export interface Volumes {
  /** Create, or find the one of that name (`created` false): the caller compares capacities. */
  create(request: CreateVolume): Promise<{ volume: Volume; created: boolean }>;
  get(name: string): Promise<Volume | undefined>;
  /** In name order, at most `limit`, after name `after`. */
  list(limit: number, after?: string): Promise<Volume[]>;
  /** Remove its tree and its record; false when there is none. */
  delete(name: string): Promise<boolean>;
  /** New capacity (EBUSY below its usage, ENOENT when absent). */
  resize(name: string, capacityBytes: number): Promise<Volume>;
  /** What the data directory's file system has (the backing store of a single node). */
  capacity(): { availableBytes: number; totalBytes: number };
  /** Whether a file may be written outside the vfs (passthrough, the shim): not in a volume. */
  outsideWritesAllowed(ino: number): boolean;
}

const ROOT: Ctx = { uid: 0, gid: 0, pid: 0 };
const encoder = new TextEncoder();

/** RangeError naming the rule when `name` is not a valid volume name. */
export function checkVolumeName(name: string): void {
  if (!VOLUME_NAME.test(name)) {
    throw new RangeError(
      `invalid volume name ${JSON.stringify(name)}: it must match ${VOLUME_NAME_RULE} ` +
        "(lower-case letters, digits, '.', '_', '-'; at most 128 characters)",
    );
  }
}

function show(core: VfsCore, record: VolumeRecord, quota: QuotaRecord | undefined): Volume {
  return {
    name: record.name,
    path: `/${core.volumeRoot}/${record.name}`,
    capacityBytes: quota?.capacityBytes ?? 0,
    inodes: quota?.inodes ?? 0,
    usedBytes: quota?.usedBytes ?? 0,
    usedInodes: quota?.usedInodes ?? 0,
    reservedBytes: quota ? totalReserved(quota) : 0,
    parameters: record.parameters,
    createdAt: record.createdAt,
  };
}

/** The directory holding the volumes, created (mode 0755, root's) when missing. */
async function volumeRootDir(core: VfsCore): Promise<number> {
  const name = encoder.encode(core.volumeRoot);
  const found = await lookup(core, ROOT, ROOT_INO, name);
  if (found) {
    forget(core, found.ino, 1); // lookup counted a kernel reference nobody holds
    if (!isDir(found.mode)) {
      throw new FsError("ENOTDIR", `/${core.volumeRoot} exists and is not a directory`);
    }
    return found.ino;
  }
  try {
    const record = await makeNode(core, ROOT, ROOT_INO, name, { mode: S_IFDIR | 0o755, umask: 0 });
    forget(core, record.ino, 1);
    return record.ino;
  } catch (error) {
    if (error instanceof FsError && error.errno === Errno.EEXIST) return await volumeRootDir(core);
    throw error;
  }
}

export function createVolumes(core: VfsCore): Volumes {
  const get = async (name: string): Promise<Volume | undefined> => {
    return await core.txn(async (t) => {
      const record = await t.tx.getVolume(name);
      return record ? show(core, record, await t.tx.getQuota(record.id)) : undefined;
    });
  };

  return {
    async create(request) {
      checkVolumeName(request.name);
      const rootDir = await volumeRootDir(core);
      const ino = await core.ns.allocIno();
      const name = encoder.encode(request.name);
      const result = await core.txn(async (t) => {
        const existing = await t.tx.getVolume(request.name);
        if (existing) {
          return {
            volume: show(core, existing, await t.tx.getQuota(existing.id)),
            created: false,
          };
        }
        const dir = await t.dir(rootDir);
        if (await t.tx.getDirent(rootDir, name)) {
          throw new FsError(
            "EEXIST",
            `/${core.volumeRoot}/${request.name} exists and is not a volume: remove or rename it`,
          );
        }
        const id = await t.tx.nextVolumeId();
        const quota: QuotaRecord = {
          capacityBytes: request.capacityBytes,
          inodes: request.inodes ?? 0,
          usedBytes: 0,
          usedInodes: 0,
          reserved: {},
        };
        t.tx.putQuota(id, quota);
        // World-writable like a fresh volume a pod gets (the pod's user is not known here).
        const spec = { mode: S_IFDIR | 0o777, umask: 0 };
        const root = createIn(t, ROOT, dir, name, ino, spec, core.now());
        root.volume = id;
        t.putInode(root);
        const record: VolumeRecord = {
          name: request.name,
          id,
          ino,
          parameters: request.parameters ?? {},
          createdAt: new Date().toISOString(),
        };
        t.tx.putVolume(record);
        // The root directory counts as the volume's first inode (as df -i shows on ext4).
        return { volume: show(core, record, { ...quota, usedInodes: 1 }), created: true };
      });
      // The kernel may hold a negative entry for the name (someone looked before it existed).
      if (result.created) {
        core.onInodeChange(rootDir);
        core.onEntriesChange();
      }
      return result;
    },

    get,

    async list(limit, after) {
      const records = await core.ns.listVolumes(limit, after);
      const out: Volume[] = [];
      for (const record of records) {
        out.push(show(core, record, await core.ns.getQuotaRecord(record.id)));
      }
      return out;
    },

    async delete(name) {
      const record = await core.txn((t) => t.tx.getVolume(name));
      if (!record) return false;
      await removeTree(core, record.ino);
      const rootDir = await volumeRootDir(core);
      const gone = await core.txn(async (t) => {
        const current = await t.tx.getVolume(name);
        if (!current || current.id !== record.id) return false;
        const dir = await t.dir(rootDir);
        const root = await t.getInode(record.ino);
        if (root && !(await t.tx.dirIsEmpty(root.ino))) {
          throw new FsError("EBUSY", `volume ${name} got new files while it was being deleted`);
        }
        t.tx.deleteDirent(rootDir, encoder.encode(name));
        dir.nlink--;
        dir.mtime = dir.ctime = core.now();
        t.putInode(dir);
        if (root) await t.deleteInode(root.ino, false);
        t.tx.deleteVolume(name);
        t.tx.deleteQuota(record.id);
        return true;
      });
      core.onInodeChange(rootDir);
      core.onEntriesChange();
      return gone;
    },

    async resize(name, capacityBytes) {
      return await core.txn(async (t) => {
        const record = await t.tx.getVolume(name);
        if (!record) throw new FsError("ENOENT", `no volume ${JSON.stringify(name)}`);
        const quota = await t.tx.getQuota(record.id);
        if (!quota) throw new FsError("ENOENT", `volume ${JSON.stringify(name)} has no quota`);
        if (capacityBytes < quota.usedBytes) {
          throw new FsError(
            "EBUSY",
            `volume ${name} uses ${quota.usedBytes} bytes: cannot shrink it to ${capacityBytes}`,
          );
        }
        // Writers may fill what they reserved: a capacity below that could be overrun.
        const reserved = totalReserved(quota);
        if (capacityBytes < quota.usedBytes + reserved) {
          throw new FsError(
            "EBUSY",
            `volume ${name} uses ${quota.usedBytes} bytes and writers hold ${reserved} more ` +
              `reserved: cannot shrink it to ${capacityBytes} now (retry when they are done)`,
          );
        }
        const next = { ...quota, capacityBytes };
        t.tx.putQuota(record.id, next);
        return show(core, record, next);
      });
    },

    capacity() {
      const st = libc.statvfs(core.dataDir);
      return { availableBytes: st.bavail * st.frsize, totalBytes: st.blocks * st.frsize };
    },

    outsideWritesAllowed(ino) {
      return !core.inodes.get(ino)?.volume;
    },
  };
}

/** Remove everything under directory `dir`, depth first, through the vfs's own unlink and
 * rmdir (so open files become orphans and usage follows, as for any removal). */
async function removeTree(core: VfsCore, dir: number): Promise<void> {
  for (const entry of await core.ns.listDir(dir)) {
    if ((entry.type & 0o170000) === S_IFDIR) {
      await removeTree(core, entry.ino);
      await rmdir(core, ROOT, dir, entry.name);
    } else {
      await unlink(core, ROOT, dir, entry.name);
    }
  }
}
