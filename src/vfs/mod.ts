/**
 * The POSIX core of skyfs (DESIGN.md section 1): inodes, handles, permissions, locks,
 * attribute write-back and crash recovery over the metadata namespace and the local data store.
 * Both access paths (FUSE and the shim) call it through the `Vfs` interface of types.ts.
 * @module
 */
export { createVfs, type RecoveryReport, type VfsOptions, type VfsWithRecovery } from "./vfs.ts";
export type * from "./types.ts";
export { RENAME_EXCHANGE, RENAME_NOREPLACE } from "./types.ts";
