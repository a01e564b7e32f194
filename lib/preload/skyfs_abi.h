/*
 * skyfs_abi.h: the whole contract between libskyfs_preload.so (the LD_PRELOAD shim) and the skyfs
 * daemon's shim server (src/intercept). src/intercept/abi.ts mirrors it; src/intercept/abi_test.ts
 * compiles this header and checks every offset and size the TypeScript side uses.
 *
 * Append-only: fields and ops are only ever added at the end; a changed meaning gets a new op and
 * a new SKYFS_ABI_VERSION. All integers are little-endian, fixed width, naturally aligned.
 *
 * Transport: one SOCK_SEQPACKET unix socket per process and mount, bound by the daemon to the
 * abstract name "\0skyfs-shim-<major>:<minor>" (st_dev of the mount, as in /proc/self/mountinfo).
 * The daemon sets SO_PASSCRED, so the kernel stamps every request with the sender's pid/uid/gid;
 * the shim checks with SO_PEERCRED that the server runs as the mount's owner (user_id= in
 * mountinfo). One request, then one reply, per exchange; a connection is used by one process.
 */
#ifndef SKYFS_ABI_H
#define SKYFS_ABI_H

#include <stdint.h>

#define SKYFS_ABI_VERSION 1u
/* "SKYS" read as a little-endian u32. */
#define SKYFS_ABI_MAGIC 0x53594b53u
/* Prefix of the abstract socket name (after the leading NUL byte). */
#define SKYFS_SHIM_SOCKET_PREFIX "skyfs-shim-"

/* Ops of struct skyfs_request.op. */
enum skyfs_op {
  /* Give me a local fd for my open file `fd` (inode `ino` on this mount). The daemon checks in
   * /proc/<pid>/fdinfo/<fd> that the sender holds that file open on this mount, and opens the
   * local data with the same access mode and O_APPEND/O_DIRECT/O_SYNC/O_DSYNC bits. Reply status
   * 0 carries the fd as SCM_RIGHTS; else -errno and no fd (the shim then uses FUSE). */
  SKYFS_OP_GET_FD = 1,
  /* I wrote inode `ino` through a local fd: drop the kernel's cached attributes, so that the next
   * stat (mine or another process's) asks the daemon, which reads size and mtime from the local
   * file. `fd` must be an open file of the sender on this mount, as for GET_FD. Reply status 0. */
  SKYFS_OP_WROTE = 2,
  /* Reads and writes I served in-process on this mount since my last COUNTS (for the daemon's
   * metrics): `ino` carries the reads, `reserved` the writes (at most 2^32-1; the rest goes in a
   * later COUNTS), `fd` is 0. Sent when an adopted fd is closed (at most once a second per mount)
   * and at exit. Not checked against /proc: it changes nothing but two counters. Reply status 0. */
  SKYFS_OP_COUNTS = 3,
};

/* Request, shim -> daemon: exactly sizeof(struct skyfs_request) bytes. */
struct skyfs_request {
  uint32_t magic;   /* SKYFS_ABI_MAGIC */
  uint16_t version; /* SKYFS_ABI_VERSION of the sender */
  uint16_t op;      /* enum skyfs_op */
  int32_t fd;       /* the sender's fd number of the file, opened through the mount */
  uint32_t reserved; /* 0 */
  uint64_t ino;     /* st_ino of that fd (the FUSE node id) */
  uint64_t seq;     /* echoed in the reply */
};

/* Reply, daemon -> shim: exactly sizeof(struct skyfs_reply) bytes (+ SCM_RIGHTS for GET_FD). */
struct skyfs_reply {
  uint32_t magic;   /* SKYFS_ABI_MAGIC */
  uint16_t version; /* SKYFS_ABI_VERSION of the daemon */
  uint16_t op;      /* op of the request */
  int32_t status;   /* 0, or -errno (-EPROTO for a malformed request) */
  uint32_t open_flags; /* GET_FD: the open(2) flags the local fd was opened with */
  uint64_t seq;     /* seq of the request */
};

/* Counters of the shim in this process; skyfs_preload_stats() copies them. Thread-safe. */
struct skyfs_preload_stats {
  uint64_t adopted;     /* fds given a local fd by the daemon */
  uint64_t refused;     /* fds on the mount the daemon refused (served by FUSE) */
  uint64_t reads;       /* read-family calls served from a local fd */
  uint64_t writes;      /* write-family calls served to a local fd */
  uint64_t bytes_read;
  uint64_t bytes_written;
  uint64_t wrote_notices; /* SKYFS_OP_WROTE sent */
};

/* Exported by libskyfs_preload.so: fills *out (0), or -EINVAL for NULL. Never fails otherwise. */
int skyfs_preload_stats(struct skyfs_preload_stats *out);

#endif
