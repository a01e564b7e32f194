/**
 * The local data directory of a node: its on-disk format version, and an exclusive lock so that
 * two daemons never serve one directory. The lock is flock(2) on `<dir>/LOCK`, released by the
 * kernel when the process dies, so a kill -9 never leaves a stale lock behind.
 * @module
 */

import { join } from "node:path";
import { Errno, FsError } from "./fs_error.ts";
import * as libc from "./io/libc.ts";

/** The on-disk format this build writes and reads. */
export const DATA_FORMAT = 1;
const FORMAT_FILE = "FORMAT";
const LOCK_FILE = "LOCK";

/** The default data directory: /var/lib/skyfs for root, else under XDG_DATA_HOME or ~/.local. */
export function defaultDataDir(): string {
  if (Deno.uid() === 0) return "/var/lib/skyfs";
  const base = Deno.env.get("XDG_DATA_HOME") ??
    join(Deno.env.get("HOME") ?? "/tmp", ".local/share");
  return join(base, "skyfs");
}

export interface DataDir {
  path: string;
  /** fd holding the flock; closing it (or dying) releases the lock. */
  lockFd: number;
}

/**
 * Create (if needed), check and lock a data directory. Throws an Error with a one-line message
 * naming the problem and the fix.
 */
export function openDataDir(path: string): DataDir {
  try {
    Deno.mkdirSync(path, { recursive: true, mode: 0o700 });
  } catch (error) {
    throw new Error(`Cannot create data directory "${path}": ${reason(error)}; pass --data DIR`);
  }
  const stat = Deno.statSync(path);
  if (!stat.isDirectory) {
    throw new Error(`Data directory "${path}" is not a directory; pass --data DIR`);
  }
  const lockPath = join(path, LOCK_FILE);
  let fd: number;
  try {
    fd = libc.open(lockPath, libc.O_RDWR | libc.O_CREAT | libc.O_CLOEXEC, 0o600);
  } catch (error) {
    throw new Error(
      `Data directory "${path}" is not writable (${
        errnoText(error)
      }); fix its permissions or pass --data DIR`,
    );
  }
  try {
    libc.flock(fd, libc.LOCK_EX | libc.LOCK_NB);
  } catch (error) {
    libc.close(fd);
    throw new Error(
      error instanceof FsError && error.errno === Errno.EAGAIN
        ? `Data directory "${path}" is locked by another skyfs daemon; stop it or pass --data DIR`
        : `Cannot lock "${lockPath}": ${errnoText(error)}`,
    );
  }
  checkFormat(path);
  return { path, lockFd: fd };
}

function checkFormat(path: string): void {
  const formatPath = join(path, FORMAT_FILE);
  let text: string | undefined;
  try {
    text = Deno.readTextFileSync(formatPath);
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
  if (text === undefined) {
    const isEmpty = [...Deno.readDirSync(path)].every((e) => e.name === LOCK_FILE);
    if (!isEmpty) {
      throw new Error(
        `Data directory "${path}" has files but no ${FORMAT_FILE}: not a skyfs data directory; pass --data DIR`,
      );
    }
    try {
      Deno.writeTextFileSync(formatPath, `${DATA_FORMAT}\n`);
    } catch (error) {
      throw new Error(`Data directory "${path}" is not writable: ${reason(error)}`);
    }
    return;
  }
  const format = Number.parseInt(text.trim(), 10);
  if (!Number.isInteger(format)) {
    throw new Error(`"${formatPath}" does not hold a format number: "${text.trim()}"`);
  }
  if (format > DATA_FORMAT) {
    throw new Error(
      `Data directory "${path}" has format ${format}, newer than this skyfs (${DATA_FORMAT}): upgrade skyfs`,
    );
  }
}

function errnoText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function reason(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
