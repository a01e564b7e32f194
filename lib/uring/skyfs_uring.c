/* libskyfs_uring: batch submit/reap over liburing 2.3 for Deno FFI, and the synchronous system
 * calls of src/io/libc.ts and src/io/sockets.ts (contract: skyfs_uring.h). */
#define _GNU_SOURCE
#include "skyfs_uring.h"

#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <poll.h>
#include <sched.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#define EXPORT __attribute__((visibility("default")))

_Static_assert(sizeof(struct skyfs_uring_op) == 64, "skyfs_uring_op must stay 64 bytes");
_Static_assert(sizeof(struct skyfs_uring_cqe) == 16, "skyfs_uring_cqe must stay 16 bytes");

struct skyfs_uring {
  struct io_uring ring;
  int event_fd;
  uint32_t async_count;
  uint32_t poll_ns;
  /* Sum of the eventfd counter values skyfs_uring_prepare_wait cleared (a test's view of the
   * signals: kernel CQE notifications plus skyfs_uring_wake calls). */
  uint64_t eventfd_total;
};

EXPORT int32_t skyfs_uring_abi_version(void) { return SKYFS_URING_ABI_VERSION; }

/* Ring setup flags to try, best first, for each SKYFS_SETUP_* level; a kernel that refuses one
 * set (EINVAL: too old) gets the next. SUBMIT_ALL: a bad SQE fails alone instead of leaving the
 * rest of the batch unsubmitted. */
static const unsigned setup_tries[] = {
    /* SKYFS_SETUP_DEFER (6.1+): completions of io-wq work (every ext4 buffered write) are run
     * by this thread at its next io_uring_enter instead of being posted by the worker, which
     * leaves the single hashed worker more time for the writes themselves. */
    IORING_SETUP_SUBMIT_ALL | IORING_SETUP_CLAMP | IORING_SETUP_SINGLE_ISSUER |
        IORING_SETUP_DEFER_TASKRUN,
    /* SKYFS_SETUP_COOP (5.19+): task work waits for this thread's next kernel entry, no IPI. */
    IORING_SETUP_SUBMIT_ALL | IORING_SETUP_CLAMP | IORING_SETUP_COOP_TASKRUN,
    /* SKYFS_SETUP_PLAIN (5.18+), then anything since 5.6. */
    IORING_SETUP_SUBMIT_ALL | IORING_SETUP_CLAMP,
    IORING_SETUP_CLAMP,
};

EXPORT struct skyfs_uring *skyfs_uring_open(uint32_t entries, int32_t *error) {
  return skyfs_uring_open_with(entries, SKYFS_SETUP_DEFER, error);
}

EXPORT struct skyfs_uring *skyfs_uring_open_with(uint32_t entries, uint32_t setup,
                                                 int32_t *error) {
  unsigned extra = (setup & SKYFS_SETUP_SQE128) ? IORING_SETUP_SQE128 : 0;
  unsigned taskrun_flag = (setup & SKYFS_SETUP_TASKRUN_FLAG) ? IORING_SETUP_TASKRUN_FLAG : 0;
  setup &= ~(uint32_t)(SKYFS_SETUP_SQE128 | SKYFS_SETUP_TASKRUN_FLAG);
  if (setup > SKYFS_SETUP_PLAIN) {
    *error = -EINVAL;
    return NULL;
  }
  struct skyfs_uring *handle = calloc(1, sizeof(*handle));
  if (handle == NULL) {
    *error = -ENOMEM;
    return NULL;
  }
  struct io_uring_params params;
  int result = -EINVAL;
  for (size_t i = setup; i < sizeof(setup_tries) / sizeof(setup_tries[0]); i++) {
    memset(&params, 0, sizeof(params));
    params.flags = setup_tries[i] | extra;
    /* Only with COOP or DEFER task work: the kernel refuses it on a plain ring. */
    if (params.flags & (IORING_SETUP_COOP_TASKRUN | IORING_SETUP_DEFER_TASKRUN)) {
      params.flags |= taskrun_flag;
    }
    result = io_uring_queue_init_params(entries, &handle->ring, &params);
    if (result != -EINVAL) break;
  }
  if (result < 0) {
    free(handle);
    *error = result;
    return NULL;
  }
  handle->event_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (handle->event_fd < 0) {
    *error = -errno;
    io_uring_queue_exit(&handle->ring);
    free(handle);
    return NULL;
  }
  result = io_uring_register_eventfd(&handle->ring, handle->event_fd);
  if (result < 0) {
    *error = result;
    close(handle->event_fd);
    io_uring_queue_exit(&handle->ring);
    free(handle);
    return NULL;
  }
  handle->poll_ns = SKYFS_URING_POLL_NS;
  *error = 0;
  return handle;
}

EXPORT uint32_t skyfs_uring_setup_flags(const struct skyfs_uring *handle) {
  return handle->ring.flags;
}

EXPORT uint32_t skyfs_uring_entries(const struct skyfs_uring *handle) {
  return handle->ring.sq.ring_entries;
}

struct op_pair {
  int32_t ours;
  int kernel;
};

/* Our code of the first op in `needed` the kernel's probe lacks, -1 if none, -ENOSYS without a
 * probe. */
static int32_t first_missing(struct skyfs_uring *handle, const struct op_pair *needed, size_t n) {
  struct io_uring_probe *probe = io_uring_get_probe_ring(&handle->ring);
  if (probe == NULL) return -ENOSYS;
  int32_t missing = -1;
  for (size_t i = 0; i < n; i++) {
    if (!io_uring_opcode_supported(probe, needed[i].kernel)) {
      missing = needed[i].ours;
      break;
    }
  }
  io_uring_free_probe(probe);
  return missing;
}

EXPORT int32_t skyfs_uring_probe(struct skyfs_uring *handle) {
  static const struct op_pair needed[] = {
      {SKYFS_OP_NOP, IORING_OP_NOP},           {SKYFS_OP_READ, IORING_OP_READ},
      {SKYFS_OP_WRITE, IORING_OP_WRITE},       {SKYFS_OP_READV, IORING_OP_READV},
      {SKYFS_OP_WRITEV, IORING_OP_WRITEV},     {SKYFS_OP_FSYNC, IORING_OP_FSYNC},
      {SKYFS_OP_FALLOCATE, IORING_OP_FALLOCATE}, {SKYFS_OP_OPENAT, IORING_OP_OPENAT},
      {SKYFS_OP_CLOSE, IORING_OP_CLOSE},       {SKYFS_OP_STATX, IORING_OP_STATX},
      {SKYFS_OP_UNLINKAT, IORING_OP_UNLINKAT}, {SKYFS_OP_RENAMEAT, IORING_OP_RENAMEAT},
      {SKYFS_OP_CANCEL_ALL, IORING_OP_ASYNC_CANCEL},
  };
  return first_missing(handle, needed, sizeof(needed) / sizeof(needed[0]));
}

EXPORT int32_t skyfs_uring_probe_net(struct skyfs_uring *handle) {
  static const struct op_pair needed[] = {
      {SKYFS_OP_SPLICE, IORING_OP_SPLICE}, {SKYFS_OP_RECV, IORING_OP_RECV},
      {SKYFS_OP_SEND, IORING_OP_SEND},     {SKYFS_OP_ACCEPT, IORING_OP_ACCEPT},
      {SKYFS_OP_CONNECT, IORING_OP_CONNECT},
  };
  return first_missing(handle, needed, sizeof(needed) / sizeof(needed[0]));
}

static int32_t copy_cqes(struct skyfs_uring *handle, struct skyfs_uring_cqe *out, uint32_t max);
static void run_deferred(struct skyfs_uring *handle);

/*
 * Quiet submits: a completion that skyfs_uring_submit_reap posts and copies out itself needs no
 * eventfd signal (its caller sees it in the result), but the kernel signals every posted CQE, and
 * a thread parked in skyfs_uring_wait then wakes the event loop for nothing. So the call turns the
 * eventfd off (IORING_CQ_EVENTFD_DISABLED, a store to the shared CQ ring) and back on at its end;
 * whatever then is still unreaped, or waits as deferred task work, is signalled by the call
 * itself. Only on a DEFER_TASKRUN ring: there every CQE is posted by this thread, inside one of
 * its io_uring_enter calls, and another thread only adds task work, with a locked (fully ordered)
 * list update and IORING_SQ_TASKRUN set before the kernel reads the disabled flag, so the store
 * of the flag, a full fence and the look at the rings below cannot both miss. On COOP and plain
 * rings io-wq workers post CQEs themselves with no full barrier between the tail store and the
 * flag load, so a completion could go unsignalled: those rings keep the eventfd on throughout.
 * The kernel signals deferred work only when it is the first in an empty list, so work added
 * while muted must be noticed here, or a later one would not signal either: with
 * IORING_SETUP_TASKRUN_FLAG the SQ ring's flag shows it, without it one io_uring_get_events runs
 * it (posting its CQEs signals the eventfd again).
 */
static bool mute_eventfd(struct skyfs_uring *handle) {
  if (!(handle->ring.flags & IORING_SETUP_DEFER_TASKRUN)) return false;
  if (io_uring_cq_eventfd_toggle(&handle->ring, false) < 0) return false; /* kernel < 5.8 */
  return true;
}

static void unmute_eventfd(struct skyfs_uring *handle) {
  struct io_uring *ring = &handle->ring;
  io_uring_cq_eventfd_toggle(ring, true);
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
  bool pending = io_uring_cq_ready(ring) > 0;
  if (ring->flags & IORING_SETUP_TASKRUN_FLAG) {
    pending = pending || (IO_URING_READ_ONCE(*ring->sq.kflags) & IORING_SQ_TASKRUN) != 0;
  } else {
    io_uring_get_events(ring);
  }
  if (pending) skyfs_uring_wake(handle);
}

/* Fills one SQE from one op whose opcode the caller has validated. */
static void prepare(struct skyfs_uring *handle, struct io_uring_sqe *sqe,
                    const struct skyfs_uring_op *op) {
  void *addr = (void *)(uintptr_t)op->addr;
  void *addr2 = (void *)(uintptr_t)op->addr2;
  switch (op->opcode) {
    case SKYFS_OP_NOP:
      io_uring_prep_nop(sqe);
      break;
    case SKYFS_OP_READ:
      io_uring_prep_read(sqe, op->fd, addr, (unsigned)op->length, op->offset);
      break;
    case SKYFS_OP_WRITE:
      io_uring_prep_write(sqe, op->fd, addr, (unsigned)op->length, op->offset);
      break;
    case SKYFS_OP_READV:
      io_uring_prep_readv(sqe, op->fd, addr, (unsigned)op->length, op->offset);
      break;
    case SKYFS_OP_WRITEV:
      io_uring_prep_writev(sqe, op->fd, addr, (unsigned)op->length, op->offset);
      break;
    case SKYFS_OP_FSYNC:
      io_uring_prep_fsync(sqe, op->fd, op->flags);
      break;
    case SKYFS_OP_FALLOCATE:
      io_uring_prep_fallocate(sqe, op->fd, (int)op->flags, (off_t)op->offset, (off_t)op->length);
      break;
    case SKYFS_OP_OPENAT:
      io_uring_prep_openat(sqe, op->fd, addr, (int)op->flags, op->mode);
      break;
    case SKYFS_OP_CLOSE:
      io_uring_prep_close(sqe, op->fd);
      break;
    case SKYFS_OP_STATX:
      io_uring_prep_statx(sqe, op->fd, addr, (int)op->flags, op->mode, addr2);
      break;
    case SKYFS_OP_UNLINKAT:
      io_uring_prep_unlinkat(sqe, op->fd, addr, (int)op->flags);
      break;
    case SKYFS_OP_RENAMEAT:
      io_uring_prep_renameat(sqe, op->fd, addr, op->fd, addr2, op->flags);
      break;
    case SKYFS_OP_CANCEL_ALL:
      io_uring_prep_cancel64(sqe, 0, IORING_ASYNC_CANCEL_ANY | IORING_ASYNC_CANCEL_ALL);
      break;
    case SKYFS_OP_SPLICE:
      /* All ones (-1 as int64) means "no offset": the pipe's or socket's own position. */
      io_uring_prep_splice(sqe, op->fd, (int64_t)op->offset, (int)op->addr, (int64_t)op->addr2,
                           (unsigned)op->length, op->flags);
      break;
    case SKYFS_OP_RECV:
      io_uring_prep_recv(sqe, op->fd, addr, (size_t)op->length, (int)op->flags);
      break;
    case SKYFS_OP_SEND:
      io_uring_prep_send(sqe, op->fd, addr, (size_t)op->length, (int)op->flags);
      break;
    case SKYFS_OP_ACCEPT:
      io_uring_prep_accept(sqe, op->fd, NULL, NULL, (int)op->flags);
      break;
    case SKYFS_OP_CONNECT:
      io_uring_prep_connect(sqe, op->fd, addr, (socklen_t)op->length);
      break;
    case SKYFS_OP_URING_CMD: {
      io_uring_prep_rw(IORING_OP_URING_CMD, sqe, op->fd, addr, (unsigned)op->length, 0);
      sqe->cmd_op = op->flags;
      /* The command area (sqe->cmd, 80 bytes on an SQE128 ring): struct fuse_uring_cmd_req
       * { u64 flags; u64 commit_id; u16 qid; u8 padding[6]; }. */
      uint8_t *cmd = sqe->cmd;
      memset(cmd, 0, 80);
      uint64_t commit_id = op->offset;
      uint16_t qid = (uint16_t)op->mode;
      memcpy(cmd + 8, &commit_id, sizeof(commit_id));
      memcpy(cmd + 16, &qid, sizeof(qid));
      break;
    }
    case SKYFS_OP_POLL_ADD:
      io_uring_prep_poll_add(sqe, op->fd, op->flags);
      break;
  }
  if (op->link) sqe->flags |= IOSQE_IO_LINK;
  if (op->async) {
    sqe->flags |= IOSQE_ASYNC;
    handle->async_count++;
  }
  io_uring_sqe_set_data64(sqe, op->user_data);
}

/* Sends every queued SQE; a transient refusal leaves them queued and is not an error. */
static int32_t flush(struct skyfs_uring *handle) {
  for (;;) {
    int result = io_uring_submit(&handle->ring);
    if (result >= 0 || result == -EAGAIN || result == -EBUSY) return 0;
    if (result != -EINTR) return result;
  }
}

EXPORT int32_t skyfs_uring_submit(struct skyfs_uring *handle, const struct skyfs_uring_op *ops,
                                  uint32_t count) {
  /* Validate the whole batch first, so a bad op never leaves half a batch in the ring. */
  for (uint32_t i = 0; i < count; i++) {
    if (ops[i].opcode > SKYFS_OP_LAST) return -EINVAL;
  }
  uint32_t prepared = 0;
  for (; prepared < count; prepared++) {
    struct io_uring_sqe *sqe = io_uring_get_sqe(&handle->ring);
    if (sqe == NULL) break;
    prepare(handle, sqe, &ops[prepared]);
  }
  int32_t result = flush(handle);
  return result < 0 ? result : (int32_t)prepared;
}

static int32_t submit_reap(struct skyfs_uring *handle, const struct skyfs_uring_op *ops,
                           uint32_t count, struct skyfs_uring_cqe *out, uint32_t max,
                           uint32_t wait_ns);

EXPORT int32_t skyfs_uring_submit_reap(struct skyfs_uring *handle,
                                       const struct skyfs_uring_op *ops, uint32_t count,
                                       struct skyfs_uring_cqe *out, uint32_t max,
                                       uint32_t wait_ns) {
  struct io_uring *ring = &handle->ring;
  for (uint32_t i = 0; i < count; i++) {
    if (ops[i].opcode > SKYFS_OP_LAST) return -EINVAL;
  }
  if (count > io_uring_sq_space_left(ring)) return -EBUSY;
  bool muted = mute_eventfd(handle);
  int32_t result = submit_reap(handle, ops, count, out, max, wait_ns);
  if (muted) unmute_eventfd(handle);
  return result;
}

/* skyfs_uring_submit_reap after its checks. */
static int32_t submit_reap(struct skyfs_uring *handle, const struct skyfs_uring_op *ops,
                           uint32_t count, struct skyfs_uring_cqe *out, uint32_t max,
                           uint32_t wait_ns) {
  struct io_uring *ring = &handle->ring;
  for (uint32_t i = 0; i < count; i++) prepare(handle, io_uring_get_sqe(ring), &ops[i]);
  if (wait_ns > 0 && (ring->features & IORING_FEAT_EXT_ARG)) {
    /* Poll first: a timed wait arms an hrtimer, and on a VM programming the timer (and again
     * when the wait ends early) is a VM exit each time; for writes that io-wq finishes within a
     * few microseconds that cost more than the write (bench: QD1 4 KiB writes 1.6x faster with
     * the poll). sched_yield lets the io-wq worker run if it was woken onto this CPU. */
    uint64_t waited = 0;
    if (handle->poll_ns > 0) {
      /* One enter submits and runs deferred completions: inline ones (page-cache reads) come
       * back from it, as they did from the timed wait. */
      int result;
      do result = io_uring_submit_and_get_events(ring);
      while (result == -EINTR);
      if (result < 0 && result != -EAGAIN && result != -EBUSY) return result;
      uint64_t limit = handle->poll_ns < wait_ns ? handle->poll_ns : wait_ns;
      struct timespec start, now;
      clock_gettime(CLOCK_MONOTONIC, &start);
      for (;;) {
        if (io_uring_cq_ready(ring) > 0) return copy_cqes(handle, out, max);
        sched_yield();
        clock_gettime(CLOCK_MONOTONIC, &now);
        waited = (uint64_t)(now.tv_sec - start.tv_sec) * 1000000000u + (uint64_t)now.tv_nsec -
                 (uint64_t)start.tv_nsec;
        if (waited >= limit) break;
        run_deferred(handle);
      }
      if (waited >= wait_ns) return copy_cqes(handle, out, max);
    }
    /* With EXT_ARG the timeout travels with the enter call: no timeout SQE is queued. */
    uint64_t rest = wait_ns - waited;
    struct __kernel_timespec timeout = {.tv_sec = (long long)(rest / 1000000000u),
                                        .tv_nsec = (long long)(rest % 1000000000u)};
    struct io_uring_cqe *cqe;
    int result = io_uring_submit_and_wait_timeout(ring, &cqe, 1, &timeout, NULL);
    if (result < 0 && result != -ETIME && result != -EINTR && result != -EAGAIN &&
        result != -EBUSY) {
      return result;
    }
    return copy_cqes(handle, out, max); /* that enter ran deferred completions already */
  }
  if (handle->ring.flags & IORING_SETUP_DEFER_TASKRUN) {
    /* One enter that submits and runs deferred completions (a flush and then run_deferred
     * would be two). */
    int result;
    do result = io_uring_submit_and_get_events(&handle->ring);
    while (result == -EINTR);
    if (result < 0 && result != -EAGAIN && result != -EBUSY) return result;
    return copy_cqes(handle, out, max);
  }
  int32_t result = flush(handle);
  if (result < 0) return result;
  return copy_cqes(handle, out, max);
}

/* Copies and consumes up to `max` posted completions; re-sends SQEs a refusal left queued. */
static int32_t copy_cqes(struct skyfs_uring *handle, struct skyfs_uring_cqe *out, uint32_t max) {
  struct io_uring *ring = &handle->ring;
  unsigned head;
  struct io_uring_cqe *cqe;
  uint32_t count = 0;
  io_uring_for_each_cqe(ring, head, cqe) {
    if (count == max) break;
    out[count].user_data = cqe->user_data;
    out[count].res = cqe->res;
    out[count].flags = cqe->flags;
    count++;
  }
  io_uring_cq_advance(ring, count);
  if (io_uring_sq_ready(ring) > 0) flush(handle);
  return (int32_t)count;
}

/* With DEFER_TASKRUN the kernel posts completions only while the ring's task is inside
 * io_uring_enter(GETEVENTS): enter once to run them before reading the CQ ring. */
static void run_deferred(struct skyfs_uring *handle) {
  if (handle->ring.flags & IORING_SETUP_DEFER_TASKRUN) io_uring_get_events(&handle->ring);
}

EXPORT int32_t skyfs_uring_reap(struct skyfs_uring *handle, struct skyfs_uring_cqe *out,
                                uint32_t max) {
  bool muted = mute_eventfd(handle);
  run_deferred(handle);
  int32_t count = copy_cqes(handle, out, max);
  if (muted) unmute_eventfd(handle);
  return count;
}

EXPORT int32_t skyfs_uring_prepare_wait(struct skyfs_uring *handle, struct skyfs_uring_cqe *out,
                                        uint32_t max) {
  /* Muted from before the clear: the CQEs the reap below posts (deferred work it runs) would
   * otherwise signal again after the clear, and the wait that follows would wake at once. */
  bool muted = mute_eventfd(handle);
  uint64_t value;
  /* EFD_NONBLOCK: EAGAIN here just means the counter was already zero. */
  if (read(handle->event_fd, &value, sizeof(value)) < 0) {
    if (errno != EAGAIN) {
      int32_t error = -errno;
      if (muted) unmute_eventfd(handle);
      return error;
    }
  } else {
    handle->eventfd_total += value;
  }
  run_deferred(handle);
  int32_t count = copy_cqes(handle, out, max);
  if (muted) unmute_eventfd(handle);
  return count;
}

EXPORT int32_t skyfs_uring_wait(struct skyfs_uring *handle) {
  struct pollfd pfd = {.fd = handle->event_fd, .events = POLLIN, .revents = 0};
  if (poll(&pfd, 1, -1) < 0) return -errno;
  return 0;
}

EXPORT int32_t skyfs_uring_wake(struct skyfs_uring *handle) {
  uint64_t one = 1;
  if (write(handle->event_fd, &one, sizeof(one)) < 0) return -errno;
  return 0;
}

EXPORT uint32_t skyfs_uring_sq_pending(const struct skyfs_uring *handle) {
  return io_uring_sq_ready(&handle->ring);
}

EXPORT int32_t skyfs_uring_fd_mode(int32_t fd) {
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0) return -errno;
  struct stat st;
  if (fstat(fd, &st) < 0) return -errno;
  return ((flags & O_DIRECT) ? SKYFS_FD_DIRECT : 0) | (S_ISREG(st.st_mode) ? SKYFS_FD_REGULAR : 0);
}

EXPORT void skyfs_uring_set_poll_ns(struct skyfs_uring *handle, uint32_t poll_ns) {
  handle->poll_ns = poll_ns;
}

EXPORT uint32_t skyfs_uring_async_count(const struct skyfs_uring *handle) {
  return handle->async_count;
}

EXPORT uint32_t skyfs_uring_cq_ready(const struct skyfs_uring *handle) {
  const struct io_uring *ring = &handle->ring;
  uint32_t flagged = (IO_URING_READ_ONCE(*ring->sq.kflags) & IORING_SQ_TASKRUN) ? 1 : 0;
  return io_uring_cq_ready(ring) + flagged;
}

EXPORT uint64_t skyfs_uring_eventfd_total(const struct skyfs_uring *handle) {
  return handle->eventfd_total;
}

EXPORT void skyfs_uring_close(struct skyfs_uring *handle) {
  io_uring_unregister_eventfd(&handle->ring);
  io_uring_queue_exit(&handle->ring);
  close(handle->event_fd);
  free(handle);
}

/* Synchronous system calls (since ABI 8; skyfs_uring.h says why errno is read here). */

/* The result of a call that returns -1 and sets errno on failure, as -errno. */
#define SYS_RESULT(call)                 \
  do {                                   \
    long long result_ = (call);          \
    return result_ < 0 ? -errno : result_; \
  } while (0)

/* The same, retrying EINTR (calls that move data; none of them has done anything on EINTR). */
#define SYS_RESULT_RETRY(call)                  \
  do {                                          \
    for (;;) {                                  \
      long long result_ = (call);               \
      if (result_ >= 0) return result_;         \
      if (errno != EINTR) return -errno;        \
    }                                           \
  } while (0)

_Static_assert(sizeof(struct stat) == 144, "struct stat is not the x86_64 layout libc.ts reads");
_Static_assert(sizeof(struct statvfs) == 112, "struct statvfs is not the layout libc.ts reads");

EXPORT int32_t skyfs_sys_open(const char *path, int32_t flags, uint32_t mode) {
  SYS_RESULT(open(path, flags, (mode_t)mode));
}

EXPORT int32_t skyfs_sys_close(int32_t fd) { SYS_RESULT(close(fd)); }

EXPORT int32_t skyfs_sys_dup(int32_t fd) { SYS_RESULT(dup(fd)); }

EXPORT int64_t skyfs_sys_pread(int32_t fd, void *buffer, uint64_t length, int64_t offset) {
  SYS_RESULT_RETRY(pread(fd, buffer, (size_t)length, (off_t)offset));
}

EXPORT int64_t skyfs_sys_pwrite(int32_t fd, const void *buffer, uint64_t length, int64_t offset) {
  SYS_RESULT_RETRY(pwrite(fd, buffer, (size_t)length, (off_t)offset));
}

EXPORT int32_t skyfs_sys_fsync(int32_t fd) { SYS_RESULT(fsync(fd)); }

EXPORT int32_t skyfs_sys_fdatasync(int32_t fd) { SYS_RESULT(fdatasync(fd)); }

EXPORT int32_t skyfs_sys_ftruncate(int32_t fd, int64_t length) {
  SYS_RESULT(ftruncate(fd, (off_t)length));
}

EXPORT int32_t skyfs_sys_fallocate(int32_t fd, int32_t mode, int64_t offset, int64_t length) {
  SYS_RESULT(fallocate(fd, mode, (off_t)offset, (off_t)length));
}

EXPORT int64_t skyfs_sys_lseek(int32_t fd, int64_t offset, int32_t whence) {
  SYS_RESULT(lseek(fd, (off_t)offset, whence));
}

EXPORT int64_t skyfs_sys_copy_file_range(int32_t fd_in, int64_t *offset_in, int32_t fd_out,
                                         int64_t *offset_out, uint64_t length, uint32_t flags) {
  SYS_RESULT_RETRY(copy_file_range(fd_in, (off_t *)offset_in, fd_out, (off_t *)offset_out,
                                   (size_t)length, flags));
}

EXPORT int32_t skyfs_sys_statvfs(const char *path, void *out) {
  SYS_RESULT(statvfs(path, (struct statvfs *)out));
}

EXPORT int32_t skyfs_sys_fstatvfs(int32_t fd, void *out) {
  SYS_RESULT(fstatvfs(fd, (struct statvfs *)out));
}

EXPORT int32_t skyfs_sys_stat(const char *path, void *out) {
  SYS_RESULT(stat(path, (struct stat *)out));
}

EXPORT int32_t skyfs_sys_fstat(int32_t fd, void *out) {
  SYS_RESULT(fstat(fd, (struct stat *)out));
}

EXPORT int32_t skyfs_sys_unlink(const char *path) { SYS_RESULT(unlink(path)); }

EXPORT int32_t skyfs_sys_rename(const char *from, const char *to) {
  SYS_RESULT(rename(from, to));
}

EXPORT int32_t skyfs_sys_flock(int32_t fd, int32_t operation) {
  SYS_RESULT(flock(fd, operation));
}

EXPORT int32_t skyfs_sys_futimens(int32_t fd, const void *times) {
  SYS_RESULT(futimens(fd, (const struct timespec *)times));
}

EXPORT int32_t skyfs_sys_poll(void *fds, uint64_t count, int32_t timeout_ms) {
  SYS_RESULT(poll((struct pollfd *)fds, (nfds_t)count, timeout_ms));
}

EXPORT void *skyfs_sys_mmap(uint64_t length, int32_t prot, int32_t flags, int32_t fd,
                            int64_t offset, int32_t *error) {
  void *address = mmap(NULL, (size_t)length, prot, flags, fd, (off_t)offset);
  if (address == MAP_FAILED) {
    *error = -errno;
    return NULL;
  }
  *error = 0;
  return address;
}

EXPORT int32_t skyfs_sys_munmap(void *address, uint64_t length) {
  SYS_RESULT(munmap(address, (size_t)length));
}

EXPORT int32_t skyfs_sys_socket(int32_t domain, int32_t type, int32_t protocol) {
  SYS_RESULT(socket(domain, type, protocol));
}

EXPORT int32_t skyfs_sys_setsockopt(int32_t fd, int32_t level, int32_t name, const void *value,
                                    uint32_t length) {
  SYS_RESULT(setsockopt(fd, level, name, value, (socklen_t)length));
}

EXPORT int32_t skyfs_sys_bind(int32_t fd, const void *address, uint32_t length) {
  SYS_RESULT(bind(fd, (const struct sockaddr *)address, (socklen_t)length));
}

EXPORT int32_t skyfs_sys_listen(int32_t fd, int32_t backlog) { SYS_RESULT(listen(fd, backlog)); }

EXPORT int32_t skyfs_sys_getsockname(int32_t fd, void *address, uint32_t *length) {
  SYS_RESULT(getsockname(fd, (struct sockaddr *)address, (socklen_t *)length));
}

EXPORT int32_t skyfs_sys_shutdown(int32_t fd, int32_t how) { SYS_RESULT(shutdown(fd, how)); }

EXPORT int32_t skyfs_sys_pipe2(int32_t *fds, int32_t flags) { SYS_RESULT(pipe2(fds, flags)); }

EXPORT int32_t skyfs_sys_fcntl(int32_t fd, int32_t command, int32_t argument) {
  SYS_RESULT(fcntl(fd, command, argument));
}

/* Since ABI 9: /dev/fuse (src/fuse/session.ts) and the shim's socket (src/intercept/socket.ts). */

EXPORT int64_t skyfs_sys_read(int32_t fd, void *buffer, uint64_t length) {
  SYS_RESULT(read(fd, buffer, (size_t)length));
}

EXPORT int64_t skyfs_sys_write(int32_t fd, const void *buffer, uint64_t length) {
  SYS_RESULT(write(fd, buffer, (size_t)length));
}

EXPORT int32_t skyfs_sys_ioctl(int32_t fd, uint64_t request, void *argument) {
  SYS_RESULT(ioctl(fd, (unsigned long)request, argument));
}

EXPORT int32_t skyfs_sys_accept4(int32_t fd, void *address, uint32_t *length, int32_t flags) {
  SYS_RESULT(accept4(fd, (struct sockaddr *)address, (socklen_t *)length, flags));
}

EXPORT int64_t skyfs_sys_recvmsg(int32_t fd, void *message, int32_t flags) {
  SYS_RESULT(recvmsg(fd, (struct msghdr *)message, flags));
}

EXPORT int64_t skyfs_sys_sendmsg(int32_t fd, const void *message, int32_t flags) {
  SYS_RESULT(sendmsg(fd, (const struct msghdr *)message, flags));
}
