/*
 * skyfs_uring.h: the whole contract between src/io/uring.ts (Deno FFI) and libskyfs_uring.so, a
 * thin batch-oriented layer over liburing 2.3 (whose get_sqe and prep helpers are static inline,
 * so FFI cannot call them directly).
 *
 * Rules: fixed-width types only; every call returns 0 or a count on success and -errno on failure;
 * the caller allocates every struct. The contract only grows: a changed call gets a new name and
 * SKYFS_URING_ABI_VERSION goes up.
 *
 * Threads: one thread (the JS thread) owns a ring and is the only one that calls submit, reap,
 * prepare_wait and close. skyfs_uring_wait may run concurrently on one other thread (a Deno
 * `nonblocking` call); it touches only the eventfd. skyfs_uring_wake is safe from any thread.
 */
#ifndef SKYFS_URING_H
#define SKYFS_URING_H

#include <stdint.h>

#define SKYFS_URING_ABI_VERSION 9

/* Default of skyfs_uring_set_poll_ns. */
#define SKYFS_URING_POLL_NS 20000

/* Operation codes of skyfs_uring_op.opcode (ours, not the kernel's IORING_OP_* numbers). */
enum {
  SKYFS_OP_NOP = 0,
  SKYFS_OP_READ = 1,       /* fd, addr = buffer, length = bytes, offset */
  SKYFS_OP_WRITE = 2,      /* fd, addr = buffer, length = bytes, offset */
  SKYFS_OP_READV = 3,      /* fd, addr = struct iovec[], length = count, offset */
  SKYFS_OP_WRITEV = 4,     /* fd, addr = struct iovec[], length = count, offset */
  SKYFS_OP_FSYNC = 5,      /* fd, flags = IORING_FSYNC_DATASYNC or 0 */
  SKYFS_OP_FALLOCATE = 6,  /* fd, flags = mode, offset, length */
  SKYFS_OP_OPENAT = 7,     /* fd = dirfd, addr = path, flags = open flags, mode */
  SKYFS_OP_CLOSE = 8,      /* fd */
  SKYFS_OP_STATX = 9,      /* fd = dirfd, addr = path, addr2 = struct statx *, flags, mode = mask */
  SKYFS_OP_UNLINKAT = 10,  /* fd = dirfd, addr = path, flags (AT_REMOVEDIR) */
  SKYFS_OP_RENAMEAT = 11,  /* fd = both dirfds, addr = old path, addr2 = new path, flags */
  SKYFS_OP_CANCEL_ALL = 12, /* cancels every cancelable request in flight */
  /* Socket ops, since ABI 5. Not required by skyfs_uring_probe (disk I/O works without them);
   * skyfs_uring_probe_net says whether this kernel has them. */
  SKYFS_OP_SPLICE = 13,  /* fd = fd in, offset = offset in (all ones: none), addr = fd out,
                            addr2 = offset out (all ones: none), length, flags = SPLICE_F_* */
  SKYFS_OP_RECV = 14,    /* fd = socket, addr = buffer, length, flags = MSG_* */
  SKYFS_OP_SEND = 15,    /* fd = socket, addr = buffer, length, flags = MSG_* */
  SKYFS_OP_ACCEPT = 16,  /* fd = listening socket, flags = SOCK_CLOEXEC etc.; no address */
  SKYFS_OP_CONNECT = 17, /* fd = socket, addr = struct sockaddr *, length = its size */
  /* Since ABI 6, for FUSE over io_uring (src/fuse/transport_uring.ts); only on a ring opened with
   * SKYFS_SETUP_SQE128. Not required by skyfs_uring_probe. */
  SKYFS_OP_URING_CMD = 18, /* fd, addr = struct iovec[], length = iovec count, flags = cmd_op;
                              the SQE's cmd area gets struct fuse_uring_cmd_req: flags 0,
                              commit_id = offset, qid = mode */
  SKYFS_OP_POLL_ADD = 19,  /* fd, flags = poll mask (POLLIN ...), one shot */
  SKYFS_OP_LAST = 19
};

/* One operation to submit. 64 bytes, little-endian, no padding. Pointers are plain addresses. */
struct skyfs_uring_op {
  uint8_t opcode;      /* SKYFS_OP_* */
  uint8_t link;        /* nonzero: IOSQE_IO_LINK, the next op in the batch runs only if this succeeds */
  uint8_t async;       /* nonzero: IOSQE_ASYNC, straight to an io-wq worker (since ABI 3) */
  uint8_t reserved0;   /* 0 */
  int32_t fd;          /* fd or dirfd (AT_FDCWD = -100) */
  uint64_t offset;
  uint64_t addr;
  uint64_t addr2;
  uint64_t length;
  uint32_t flags;
  uint32_t mode;
  uint64_t user_data;  /* returned unchanged in the completion */
  uint64_t reserved1;  /* 0 */
};

/* One completion. 16 bytes. */
struct skyfs_uring_cqe {
  uint64_t user_data;
  int32_t res;         /* result, or -errno */
  uint32_t flags;      /* kernel CQE flags */
};

struct skyfs_uring;

/* Returns SKYFS_URING_ABI_VERSION, so a caller can refuse a stale build. */
int32_t skyfs_uring_abi_version(void);

/* Creates a ring of at least `entries` SQEs (CQ twice that) with an eventfd registered for
 * completions. Returns the handle, or NULL with -errno in *error (-ENOSYS: no io_uring in this
 * kernel; -EPERM: io_uring_disabled sysctl, seccomp or a container forbids it). */
struct skyfs_uring *skyfs_uring_open(uint32_t entries, int32_t *error);

/* How much of the kernel's task-work machinery the ring uses (skyfs_uring_open_with). */
enum {
  SKYFS_SETUP_DEFER = 0, /* SINGLE_ISSUER | DEFER_TASKRUN, else COOP, else PLAIN */
  SKYFS_SETUP_COOP = 1,  /* COOP_TASKRUN, else PLAIN */
  SKYFS_SETUP_PLAIN = 2, /* neither */
  /* OR-ed into any level (since ABI 6): 128-byte SQEs (IORING_SETUP_SQE128), which
   * SKYFS_OP_URING_CMD needs for FUSE's command area. */
  SKYFS_SETUP_SQE128 = 0x100,
  /* OR-ed into DEFER or COOP (since ABI 6): IORING_SETUP_TASKRUN_FLAG, the kernel flags in the
   * shared SQ ring when completions wait to be run (skyfs_uring_cq_ready sees it). */
  SKYFS_SETUP_TASKRUN_FLAG = 0x200
};

/* skyfs_uring_open with a choice of setup flags (skyfs_uring_open is SKYFS_SETUP_DEFER), for
 * measuring them against each other; an older kernel gets the next level down. With DEFER the
 * thread that opened the ring must be the one that submits and reaps (it is: the JS thread), and
 * skyfs_uring_reap and skyfs_uring_prepare_wait enter the kernel once to run completions. -EINVAL
 * for an unknown level. Since ABI 3. */
struct skyfs_uring *skyfs_uring_open_with(uint32_t entries, uint32_t setup, int32_t *error);

/* The IORING_SETUP_* flags the ring got. Since ABI 3. */
uint32_t skyfs_uring_setup_flags(const struct skyfs_uring *ring);

/* Returns the number of SQ entries the ring got (a power of two). */
uint32_t skyfs_uring_entries(const struct skyfs_uring *ring);

/* Checks that the kernel supports every SKYFS_OP_* used by skyfs. Returns -1 when all are
 * supported, else the first unsupported SKYFS_OP_* code; -errno when probing itself failed. */
int32_t skyfs_uring_probe(struct skyfs_uring *ring);

/* Checks that the kernel supports the socket ops (SKYFS_OP_SPLICE .. SKYFS_OP_CONNECT). Returns
 * -1 when all are, else the first unsupported SKYFS_OP_* code; -errno when probing failed.
 * Since ABI 5. */
int32_t skyfs_uring_probe_net(struct skyfs_uring *ring);

/* Prepares `count` ops into SQEs in order and submits every queued SQE with one io_uring_enter.
 * Returns the number of ops prepared (less than count only when the SQ ring is full); if the
 * kernel refused the batch transiently (EAGAIN/EBUSY) the SQEs stay queued and the next submit or
 * reap sends them. Returns -errno for anything else. A link chain must not be cut by `count`. */
int32_t skyfs_uring_submit(struct skyfs_uring *ring, const struct skyfs_uring_op *ops,
                           uint32_t count);

/* The same as skyfs_uring_submit (count may be 0), then waits up to `wait_ns` nanoseconds (0: no
 * wait) for at least one completion, then reaps like skyfs_uring_reap. The wait first polls the
 * ring for up to the poll time (skyfs_uring_set_poll_ns; sched_yield between looks), then sleeps in
 * io_uring_enter for the rest. Ops that complete inline (page-cache hits) end the wait at once; the wait
 * covers ops the kernel hands to its io-wq threads (ext4 buffered writes, fsync), which are
 * usually done within tens of microseconds, without the ~13 us hop of a `nonblocking` call.
 * On a DEFER ring (since ABI 7) completions this call copies out do not signal the eventfd, so a
 * thread parked in skyfs_uring_wait is not woken for them; anything it leaves unreaped (more than
 * `max`, or arriving after its last look) is signalled before it returns, so none is lost.
 * Returns the number of completions copied, or -EBUSY (nothing prepared) when `count` exceeds
 * the free SQ space, or -errno; a timeout or a signal is not an error. Since ABI 2. */
int32_t skyfs_uring_submit_reap(struct skyfs_uring *ring, const struct skyfs_uring_op *ops,
                                uint32_t count, struct skyfs_uring_cqe *out, uint32_t max,
                                uint32_t wait_ns);

/* Copies up to `max` available completions into `out` and consumes them; then re-submits SQEs
 * left queued by a transient refusal, if any. Never blocks (with DEFER_TASKRUN it enters the
 * kernel once, without waiting, to run deferred completions). Returns the number copied. */
int32_t skyfs_uring_reap(struct skyfs_uring *ring, struct skyfs_uring_cqe *out, uint32_t max);

/* Clears the eventfd, then reaps like skyfs_uring_reap. Call it just before starting
 * skyfs_uring_wait: a completion that arrives after the clear wakes the waiter, one that arrived
 * before is in `out`, so no wakeup is lost. On a DEFER ring (since ABI 7) the completions the reap
 * itself posts and copies do not signal the eventfd again, so the wait that follows does not
 * return at once for them; skyfs_uring_reap is quiet the same way. */
int32_t skyfs_uring_prepare_wait(struct skyfs_uring *ring, struct skyfs_uring_cqe *out,
                                 uint32_t max);

/* Blocks until a completion was posted since the last prepare_wait, or skyfs_uring_wake was
 * called. Returns 0, or -errno (-EINTR: call again). Meant for a Deno `nonblocking` call. */
int32_t skyfs_uring_wait(struct skyfs_uring *ring);

/* Wakes a thread blocked in skyfs_uring_wait. Returns 0 or -errno. */
int32_t skyfs_uring_wake(struct skyfs_uring *ring);

/* Number of SQEs queued but not yet taken by the kernel. */
uint32_t skyfs_uring_sq_pending(const struct skyfs_uring *ring);

/* How long skyfs_uring_submit_reap polls (yielding the CPU between looks) before it sleeps in a
 * timed io_uring_enter; 0: never poll. Default SKYFS_URING_POLL_NS. Since ABI 4. */
void skyfs_uring_set_poll_ns(struct skyfs_uring *ring, uint32_t poll_ns);

/* Bits of skyfs_uring_fd_mode's result. */
enum {
  SKYFS_FD_DIRECT = 1, /* opened with O_DIRECT (or switched to it with F_SETFL) */
  SKYFS_FD_REGULAR = 2 /* a regular file */
};

/* What the engine needs to know about an fd it did not open: fcntl(F_GETFL) and fstat. Returns
 * SKYFS_FD_* bits, or -errno (-EBADF: not an open fd). Two syscalls, no I/O. Since ABI 3. */
int32_t skyfs_uring_fd_mode(int32_t fd);

/* SQEs prepared with IOSQE_ASYNC since the ring opened (for tests: the flag reached the SQE). */
uint32_t skyfs_uring_async_count(const struct skyfs_uring *ring);

/* Completions posted and not yet reaped, read from the shared CQ ring: no syscall; plus 1 when
 * the ring has SKYFS_SETUP_TASKRUN_FLAG and the kernel flagged completions that a reap would run.
 * On a plain ring the kernel posts completions by itself, so this sees new ones as they come.
 * Since ABI 6. */
uint32_t skyfs_uring_cq_ready(const struct skyfs_uring *ring);

/* Sum of the eventfd counter values skyfs_uring_prepare_wait has cleared since the ring opened:
 * the kernel's completion signals plus skyfs_uring_wake calls (for tests). Since ABI 7. */
uint64_t skyfs_uring_eventfd_total(const struct skyfs_uring *ring);

/* Frees the ring and its eventfd. No wait may be running and no op may be in flight: the kernel
 * tears a ring down asynchronously, so a request still running could write into a buffer the
 * caller has already freed. Cancel and reap first. */
void skyfs_uring_close(struct skyfs_uring *ring);

/*
 * Synchronous system calls for src/io/libc.ts and src/io/sockets.ts (since ABI 8), and for
 * src/fuse/session.ts and src/intercept/socket.ts (since ABI 9). Each makes the one libc call its
 * name says and returns its result, or -errno on failure, read in the same C call: errno is
 * thread-local and the JS runtime makes system calls of its own on the same thread (allocation,
 * GC, other ops), so a second FFI call to read it could see another call's code. The fsync calls
 * run on Deno's blocking pool (`nonblocking`), whose errno the JS thread cannot read at all.
 * pread, pwrite and copy_file_range retry EINTR themselves; no other call retries anything. Every
 * one is safe from any thread (each is one libc call and touches no ring). Pointers are the
 * caller's buffers; struct stat and struct statvfs are the x86_64 glibc layouts (144 and 112
 * bytes).
 */
int32_t skyfs_sys_open(const char *path, int32_t flags, uint32_t mode);
int32_t skyfs_sys_close(int32_t fd);
int32_t skyfs_sys_dup(int32_t fd);
int64_t skyfs_sys_pread(int32_t fd, void *buffer, uint64_t length, int64_t offset);
int64_t skyfs_sys_pwrite(int32_t fd, const void *buffer, uint64_t length, int64_t offset);
int32_t skyfs_sys_fsync(int32_t fd);
int32_t skyfs_sys_fdatasync(int32_t fd);
int32_t skyfs_sys_ftruncate(int32_t fd, int64_t length);
int32_t skyfs_sys_fallocate(int32_t fd, int32_t mode, int64_t offset, int64_t length);
int64_t skyfs_sys_lseek(int32_t fd, int64_t offset, int32_t whence);
/* offsets: one int64_t each, advanced by the bytes copied */
int64_t skyfs_sys_copy_file_range(int32_t fd_in, int64_t *offset_in, int32_t fd_out,
                                  int64_t *offset_out, uint64_t length, uint32_t flags);
int32_t skyfs_sys_statvfs(const char *path, void *out);
int32_t skyfs_sys_fstatvfs(int32_t fd, void *out);
int32_t skyfs_sys_stat(const char *path, void *out);
int32_t skyfs_sys_fstat(int32_t fd, void *out);
int32_t skyfs_sys_unlink(const char *path);
int32_t skyfs_sys_rename(const char *from, const char *to);
int32_t skyfs_sys_flock(int32_t fd, int32_t operation);
int32_t skyfs_sys_futimens(int32_t fd, const void *times); /* struct timespec[2] */
int32_t skyfs_sys_poll(void *fds, uint64_t count, int32_t timeout_ms); /* struct pollfd[] */
/* The mapping's address, or NULL with -errno in *error (MAP_FAILED is never returned). */
void *skyfs_sys_mmap(uint64_t length, int32_t prot, int32_t flags, int32_t fd, int64_t offset,
                     int32_t *error);
int32_t skyfs_sys_munmap(void *address, uint64_t length);
int32_t skyfs_sys_socket(int32_t domain, int32_t type, int32_t protocol);
int32_t skyfs_sys_setsockopt(int32_t fd, int32_t level, int32_t name, const void *value,
                             uint32_t length);
int32_t skyfs_sys_bind(int32_t fd, const void *address, uint32_t length);
int32_t skyfs_sys_listen(int32_t fd, int32_t backlog);
int32_t skyfs_sys_getsockname(int32_t fd, void *address, uint32_t *length);
int32_t skyfs_sys_shutdown(int32_t fd, int32_t how);
int32_t skyfs_sys_pipe2(int32_t *fds, int32_t flags); /* int[2] */
/* fcntl with an int argument (F_SETPIPE_SZ, F_GETPIPE_SZ, F_GETFL ...). */
int32_t skyfs_sys_fcntl(int32_t fd, int32_t command, int32_t argument);
/* Since ABI 9, for /dev/fuse (src/fuse/session.ts: read, write, the passthrough ioctls) and the
 * shim's socket (src/intercept/socket.ts). None retries EINTR: the callers loop themselves. */
int64_t skyfs_sys_read(int32_t fd, void *buffer, uint64_t length);
int64_t skyfs_sys_write(int32_t fd, const void *buffer, uint64_t length);
int32_t skyfs_sys_ioctl(int32_t fd, uint64_t request, void *argument);
int32_t skyfs_sys_accept4(int32_t fd, void *address, uint32_t *length, int32_t flags);
int64_t skyfs_sys_recvmsg(int32_t fd, void *message, int32_t flags); /* struct msghdr */
int64_t skyfs_sys_sendmsg(int32_t fd, const void *message, int32_t flags);

#endif
