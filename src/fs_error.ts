/**
 * The one error type that crosses layers inside skyfs: a failure with a POSIX errno.
 *
 * Every edge (FUSE reply, shim reply, HTTP status) converts it exactly once (DESIGN.md section 2).
 * @module
 */

/** Linux errno values used by skyfs (x86_64 / asm-generic numbering). */
export const Errno = {
  EPERM: 1,
  ENOENT: 2,
  ESRCH: 3,
  EINTR: 4,
  EIO: 5,
  ENXIO: 6,
  E2BIG: 7,
  EBADF: 9,
  EAGAIN: 11,
  ENOMEM: 12,
  EACCES: 13,
  EFAULT: 14,
  EBUSY: 16,
  EEXIST: 17,
  EXDEV: 18,
  ENODEV: 19,
  ENOTDIR: 20,
  EISDIR: 21,
  EINVAL: 22,
  ENFILE: 23,
  EMFILE: 24,
  ETXTBSY: 26,
  EFBIG: 27,
  ENOSPC: 28,
  ESPIPE: 29,
  EROFS: 30,
  EMLINK: 31,
  EPIPE: 32,
  ERANGE: 34,
  EDEADLK: 35,
  ENAMETOOLONG: 36,
  ENOLCK: 37,
  ENOSYS: 38,
  ENOTEMPTY: 39,
  ELOOP: 40,
  ENODATA: 61,
  EPROTO: 71,
  EOVERFLOW: 75,
  EOPNOTSUPP: 95,
  ECONNRESET: 104,
  ETIMEDOUT: 110,
  ECONNREFUSED: 111,
  ESTALE: 116,
  EDQUOT: 122,
  ECANCELED: 125,
} as const;

export type ErrnoName = keyof typeof Errno;

const namesByNumber = new Map<number, ErrnoName>(
  Object.entries(Errno).map(([name, value]) => [value, name as ErrnoName]),
);

/** Name of an errno number, e.g. `errnoName(2) === "ENOENT"`; unknown numbers give `"E<n>"`. */
export function errnoName(errno: number): string {
  return namesByNumber.get(errno) ?? `E${errno}`;
}

/** A file-system failure that carries a positive errno. */
export class FsError extends Error {
  readonly errno: number;
  constructor(errno: number | ErrnoName, message?: string) {
    const value = typeof errno === "number" ? errno : Errno[errno];
    super(message ? `${errnoName(value)}: ${message}` : errnoName(value));
    this.name = "FsError";
    this.errno = value;
  }
}

/** The errno to report for any thrown value: FsError keeps its own, anything else is EIO. */
export function errnoOf(error: unknown): number {
  return error instanceof FsError ? error.errno : Errno.EIO;
}
