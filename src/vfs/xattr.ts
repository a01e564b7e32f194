/**
 * Extended attributes with Linux's namespace rules (xattr_permission): user.* on regular files
 * and directories with read/write permission; trusted.* for root only; security.* for anyone
 * (there is no LSM here to decide otherwise). system.posix_acl_access / _default are refused with
 * EOPNOTSUPP: skyfs does not implement POSIX ACLs, so tools (cp -a, tar --acls, setfacl) see a
 * file system without ACL support instead of ACLs that would not be enforced.
 * @module
 */

import { FsError } from "../fs_error.ts";
import { type InodeRecord, keys } from "../meta/namespace.ts";
import type { Ctx } from "./types.ts";
import { checkAccess, isDir, isOwnerOrRoot, isReg, isRoot, R_OK, S_ISVTX, W_OK } from "./perm.ts";
import type { VfsCore } from "./core.ts";

export const XATTR_CREATE = 1;
export const XATTR_REPLACE = 2;
/** Longest name and largest value the Linux VFS accepts (XATTR_NAME_MAX, XATTR_SIZE_MAX). */
const NAME_MAX = 255;
const SIZE_MAX = 65536;
/** Largest sum of names and values listed (XATTR_LIST_MAX). */
const LIST_MAX = 65536;

type Access = "read" | "write";

function checkName(name: string): void {
  const bytes = new TextEncoder().encode(name).length;
  if (bytes === 0 || bytes > NAME_MAX) {
    throw new FsError("ERANGE", `xattr name of ${bytes} bytes (1 to ${NAME_MAX})`);
  }
}

/** xattr_permission: may `ctx` read or write attribute `name` of `inode`? */
function checkPermission(ctx: Ctx, inode: InodeRecord, name: string, access: Access): void {
  if (name.startsWith("system.")) {
    throw new FsError("EOPNOTSUPP", `${JSON.stringify(name)}: POSIX ACLs are not supported`);
  }
  if (name.startsWith("security.")) return;
  if (name.startsWith("trusted.")) {
    if (!isRoot(ctx)) throw new FsError("EPERM", `${JSON.stringify(name)} needs CAP_SYS_ADMIN`);
    return;
  }
  if (!name.startsWith("user.")) {
    throw new FsError("EOPNOTSUPP", `xattr namespace of ${JSON.stringify(name)} is unknown`);
  }
  // user.* only on files and directories: on others a write is EPERM and a read finds nothing.
  if (!isReg(inode.mode) && !isDir(inode.mode)) {
    if (access === "write") throw new FsError("EPERM", `user xattrs on inode ${inode.ino}`);
    throw new FsError("ENODATA", `no ${JSON.stringify(name)} on inode ${inode.ino}`);
  }
  // In a sticky directory only its owner may change user xattrs.
  if (
    access === "write" && isDir(inode.mode) && inode.mode & S_ISVTX && !isOwnerOrRoot(ctx, inode)
  ) {
    throw new FsError("EPERM", `sticky directory ${inode.ino} owned by ${inode.uid}`);
  }
  checkAccess(ctx, inode, access === "read" ? R_OK : W_OK);
}

export async function setxattr(
  core: VfsCore,
  ctx: Ctx,
  ino: number,
  name: string,
  value: Uint8Array,
  flags: number,
): Promise<void> {
  checkName(name);
  if (value.length > SIZE_MAX) throw new FsError("E2BIG", `xattr value of ${value.length} bytes`);
  if (flags & ~(XATTR_CREATE | XATTR_REPLACE)) {
    throw new FsError("EINVAL", `setxattr flags ${flags}`);
  }
  await core.txn(async (t) => {
    const inode = await t.inode(ino);
    checkPermission(ctx, inode, name, "write");
    const old = await t.tx.getXattr(ino, name);
    if (flags & XATTR_CREATE && old) throw new FsError("EEXIST", `${JSON.stringify(name)} exists`);
    if (flags & XATTR_REPLACE && !old) throw new FsError("ENODATA", `no ${JSON.stringify(name)}`);
    t.tx.putXattr(ino, name, value.slice());
    inode.ctime = core.now();
    t.putInode(inode);
  });
}

/** The kernel asks for it at the first write of every file (HANDLE_KILLPRIV_V2: once per inode,
 * to learn whether writes may skip the privilege check); in cluster mode it is answered from the
 * cache without a validating round trip (a create's own commit caches it as absent). A stale
 * answer is the same as the attribute being set a moment after the check, which the kernel
 * cannot tell apart either; the daemon drops set-id bits on write itself. Measured: one metadata
 * read less per create + write (0.6-2 ms on `deno task cluster`). */
const CAPABILITY = "security.capability";

/** The value of attribute `name`, or null when the inode has none of that name (ENODATA for the
 * callers that want an error; the kernel asks for `security.capability` at the first write of
 * every file, so "none" is the common answer and costs no exception here). */
export async function getxattr(
  core: VfsCore,
  ctx: Ctx,
  ino: number,
  name: string,
): Promise<Uint8Array | null> {
  checkName(name);
  const value = await core.ns.transact(async (tx) => {
    const inode = await tx.getInode(ino);
    if (!inode) throw new FsError("ENOENT", `inode ${ino} does not exist`);
    checkPermission(ctx, inode, name, "read");
    return await tx.getXattr(ino, name);
  }, name === CAPABILITY ? { validate: false } : undefined);
  return value ?? null;
}

/**
 * `getxattr` of `security.capability` answered from the namespace's cache alone, without a
 * promise: the value, null when it is known absent (a create's own commit caches it so:
 * `knownAbsent`), undefined when the store must be asked or for any other name (call `getxattr`
 * then). The kernel asks for it at the first write of every new inode, so it is one of a create's
 * five requests. Throws as `getxattr` rejects.
 */
export function getxattrCached(
  core: VfsCore,
  ctx: Ctx,
  ino: number,
  name: string,
): Uint8Array | null | undefined {
  // Only the name whose async read skips validation too (CAPABILITY): the same answer either way.
  if (name !== CAPABILITY) return undefined;
  const inode = core.ns.cachedInode(ino);
  if (inode === undefined) return undefined;
  if (inode === null) throw new FsError("ENOENT", `inode ${ino} does not exist`);
  checkPermission(ctx, inode, name, "read");
  const found = core.ns.cached(keys.xattr(ino, name));
  if (found === undefined) return undefined;
  return found.value ?? null;
}

export async function listxattr(core: VfsCore, ctx: Ctx, ino: number): Promise<string[]> {
  const names = await core.ns.transact(async (tx) => {
    if (!(await tx.getInode(ino))) throw new FsError("ENOENT", `inode ${ino} does not exist`);
    return await tx.listXattrs(ino);
  });
  // Only root sees trusted.* names (as ext4's list handler does).
  const visible = names.map((x) => x.name).filter((n) => isRoot(ctx) || !n.startsWith("trusted."));
  const total = visible.reduce((sum, n) => sum + new TextEncoder().encode(n).length + 1, 0);
  if (total > LIST_MAX) throw new FsError("E2BIG", `xattr list of ${total} bytes`);
  return visible;
}

export async function removexattr(
  core: VfsCore,
  ctx: Ctx,
  ino: number,
  name: string,
): Promise<void> {
  checkName(name);
  await core.txn(async (t) => {
    const inode = await t.inode(ino);
    checkPermission(ctx, inode, name, "write");
    if (!(await t.tx.getXattr(ino, name))) {
      throw new FsError("ENODATA", `no ${JSON.stringify(name)} on inode ${ino}`);
    }
    t.tx.deleteXattr(ino, name);
    inode.ctime = core.now();
    t.putInode(inode);
  });
}
