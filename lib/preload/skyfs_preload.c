/*
 * libskyfs_preload.so: an LD_PRELOAD shim that serves read/write of files on a skyfs mount from
 * the file's local data inside the calling process, without a FUSE round trip.
 *
 * The program's fd always stays the FUSE fd (so the kernel checked access, and close, dup, fork,
 * exec, fstat, locks and mmap stay exactly as without the shim). For a regular file on a skyfs
 * mount, the first read or write asks the daemon (skyfs_abi.h) for a second fd on the local data,
 * opened with the same access mode; the shim keeps fd -> local fd in a table and does the I/O on
 * the local fd. The file offset stays in the FUSE fd (read: lseek(F,0,CUR), pread(L), lseek(F)),
 * so processes that share the open file (fork, exec, shell redirections) agree on it. Writes
 * leave the fd "dirty"; stat calls, fsync, close and exit tell the daemon first (SKYFS_OP_WROTE)
 * so that stat sees size and mtime. Everything else passes through to libc untouched.
 * src/intercept/README.md has the design, the coherence rule and what the shim cannot see.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "skyfs_abi.h"

#define API __attribute__((visibility("default")))
#define MAX_FDS 65536
#define STRIPES 64
#define MAX_MOUNTS 16

/* ---- real functions, resolved once on first use ---- */

static void *resolve(const char *name) {
  void *f = dlsym(RTLD_NEXT, name);
  if (!f) {
    static const char msg[] = "skyfs-preload: libc symbol missing: ";
    syscall(SYS_write, 2, msg, sizeof msg - 1);
    syscall(SYS_write, 2, name, strlen(name));
    syscall(SYS_write, 2, "\n", 1);
    abort();
  }
  return f;
}
/* Each REAL(name) caches its pointer; two threads racing store the same value. */
#define REAL(name)                                                                  \
  (*({                                                                              \
    if (__builtin_expect(!real_##name, 0))                                          \
      real_##name = (__typeof__(real_##name))resolve(#name);                        \
    real_##name;                                                                    \
  }))
#define DECLARE_REAL(ret, name, ...) static ret (*real_##name)(__VA_ARGS__)

DECLARE_REAL(int, open, const char *, int, ...);
DECLARE_REAL(int, open64, const char *, int, ...);
DECLARE_REAL(int, openat, int, const char *, int, ...);
DECLARE_REAL(int, openat64, int, const char *, int, ...);
DECLARE_REAL(int, creat, const char *, mode_t);
DECLARE_REAL(int, creat64, const char *, mode_t);
DECLARE_REAL(int, __open_2, const char *, int);
DECLARE_REAL(int, __open64_2, const char *, int);
DECLARE_REAL(int, __openat_2, int, const char *, int);
DECLARE_REAL(int, __openat64_2, int, const char *, int);
DECLARE_REAL(int, close, int);
DECLARE_REAL(int, close_range, unsigned, unsigned, int);
DECLARE_REAL(void, closefrom, int);
DECLARE_REAL(ssize_t, read, int, void *, size_t);
DECLARE_REAL(ssize_t, __read_chk, int, void *, size_t, size_t);
DECLARE_REAL(ssize_t, pread, int, void *, size_t, off_t);
DECLARE_REAL(ssize_t, pread64, int, void *, size_t, off_t);
DECLARE_REAL(ssize_t, __pread_chk, int, void *, size_t, off_t, size_t);
DECLARE_REAL(ssize_t, __pread64_chk, int, void *, size_t, off_t, size_t);
DECLARE_REAL(ssize_t, readv, int, const struct iovec *, int);
DECLARE_REAL(ssize_t, preadv, int, const struct iovec *, int, off_t);
DECLARE_REAL(ssize_t, preadv64, int, const struct iovec *, int, off_t);
DECLARE_REAL(ssize_t, preadv2, int, const struct iovec *, int, off_t, int);
DECLARE_REAL(ssize_t, preadv64v2, int, const struct iovec *, int, off_t, int);
DECLARE_REAL(ssize_t, write, int, const void *, size_t);
DECLARE_REAL(ssize_t, pwrite, int, const void *, size_t, off_t);
DECLARE_REAL(ssize_t, pwrite64, int, const void *, size_t, off_t);
DECLARE_REAL(ssize_t, writev, int, const struct iovec *, int);
DECLARE_REAL(ssize_t, pwritev, int, const struct iovec *, int, off_t);
DECLARE_REAL(ssize_t, pwritev64, int, const struct iovec *, int, off_t);
DECLARE_REAL(ssize_t, pwritev2, int, const struct iovec *, int, off_t, int);
DECLARE_REAL(ssize_t, pwritev64v2, int, const struct iovec *, int, off_t, int);
DECLARE_REAL(off_t, lseek, int, off_t, int);
DECLARE_REAL(off_t, lseek64, int, off_t, int);
DECLARE_REAL(int, fstat, int, struct stat *);
DECLARE_REAL(int, fstat64, int, struct stat64 *);
DECLARE_REAL(int, stat, const char *, struct stat *);
DECLARE_REAL(int, stat64, const char *, struct stat64 *);
DECLARE_REAL(int, lstat, const char *, struct stat *);
DECLARE_REAL(int, lstat64, const char *, struct stat64 *);
DECLARE_REAL(int, fstatat, int, const char *, struct stat *, int);
DECLARE_REAL(int, fstatat64, int, const char *, struct stat64 *, int);
DECLARE_REAL(int, statx, int, const char *, int, unsigned, struct statx *);
DECLARE_REAL(int, __fxstat, int, int, struct stat *);
DECLARE_REAL(int, __fxstat64, int, int, struct stat64 *);
DECLARE_REAL(int, __xstat, int, const char *, struct stat *);
DECLARE_REAL(int, __xstat64, int, const char *, struct stat64 *);
DECLARE_REAL(int, __lxstat, int, const char *, struct stat *);
DECLARE_REAL(int, __lxstat64, int, const char *, struct stat64 *);
DECLARE_REAL(int, __fxstatat, int, int, const char *, struct stat *, int);
DECLARE_REAL(int, __fxstatat64, int, int, const char *, struct stat64 *, int);
DECLARE_REAL(int, fsync, int);
DECLARE_REAL(int, fdatasync, int);
DECLARE_REAL(int, ftruncate, int, off_t);
DECLARE_REAL(int, ftruncate64, int, off_t);
DECLARE_REAL(int, dup, int);
DECLARE_REAL(int, dup2, int, int);
DECLARE_REAL(int, dup3, int, int, int);
DECLARE_REAL(int, fcntl, int, int, ...);
DECLARE_REAL(int, fcntl64, int, int, ...);
DECLARE_REAL(FILE *, fopen, const char *, const char *);
DECLARE_REAL(FILE *, fopen64, const char *, const char *);
DECLARE_REAL(FILE *, fdopen, int, const char *);
DECLARE_REAL(FILE *, freopen, const char *, const char *, FILE *);
DECLARE_REAL(FILE *, freopen64, const char *, const char *, FILE *);
DECLARE_REAL(int, fclose, FILE *);
DECLARE_REAL(int, fcloseall, void);

/* ---- state ---- */

enum { FD_UNKNOWN = 0, FD_OTHER = 1, FD_LOCAL = 2 };

/* One program fd. `state` is read without a lock to keep unrelated fds cheap; everything else is
 * read under the fd's stripe lock and written under it exclusively. */
struct fd_entry {
  _Atomic uint8_t state;
  uint8_t dirty;
  uint8_t mount;
  int local_fd;
  uint32_t flags;
  uint64_t ino;
};

struct mount_info {
  dev_t dev;
  uid_t owner;
  int conn; /* connected socket, -1 if none yet, -2 if the daemon cannot be reached */
  /* Reads and writes served on this mount and not yet reported (SKYFS_OP_COUNTS). */
  _Atomic uint64_t unreported_reads;
  _Atomic uint64_t unreported_writes;
  _Atomic int64_t reported_at_ns; /* CLOCK_MONOTONIC of the last COUNTS */
};

static struct fd_entry table[MAX_FDS];
static pthread_rwlock_t stripes[STRIPES];
static struct mount_info mounts[MAX_MOUNTS];
static int mount_count;
static int enabled;
static int print_stats;
/* SKYFS_PRELOAD_STATS=/path appends the line to that file (coreutils close stderr at exit). */
static char stats_path[256];
static _Atomic int initialized;
static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static pthread_mutex_t conn_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t next_seq = 1;
static _Atomic int dirty_count;
static _Atomic int highest_fd = -1;
static struct {
  _Atomic uint64_t adopted, refused, reads, writes, bytes_read, bytes_written, wrote_notices;
} stats;

/* ---- initialisation: no malloc, no interposed calls (raw syscalls only) ---- */

static void parse_mountinfo_line(char *line) {
  /* id parent major:minor root mountpoint options [optional...] - fstype source superoptions */
  char *fields[6] = {0};
  int n = 0;
  char *p = line;
  while (n < 6 && *p) {
    fields[n++] = p;
    while (*p && *p != ' ') p++;
    if (*p) *p++ = '\0';
  }
  char *dash = strstr(p, " - ");
  if (n < 6) return;
  if (!dash) {
    if (strncmp(p, "- ", 2) != 0) return;
    dash = p - 1;
  }
  char *fstype = dash + 3;
  if (strncmp(fstype, "fuse.skyfs ", 11) != 0 || mount_count >= MAX_MOUNTS) return;
  unsigned major_no = 0, minor_no = 0;
  if (sscanf(fields[2], "%u:%u", &major_no, &minor_no) != 2) return;
  char *super = strrchr(fstype, ' ');
  char *owner = super ? strstr(super, "user_id=") : NULL;
  struct mount_info *m = &mounts[mount_count++];
  m->dev = makedev(major_no, minor_no);
  m->owner = owner ? (uid_t)strtoul(owner + 8, NULL, 10) : 0;
  m->conn = -1;
}

static void read_mountinfo(void) {
  int fd = (int)syscall(SYS_openat, AT_FDCWD, "/proc/self/mountinfo", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  static char chunk[8192];
  static char line[4096];
  size_t used = 0;
  for (;;) {
    ssize_t got = syscall(SYS_read, fd, chunk, sizeof chunk);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) break;
    for (ssize_t i = 0; i < got; i++) {
      if (chunk[i] != '\n') {
        if (used < sizeof line - 1) line[used++] = chunk[i];
        continue;
      }
      line[used] = '\0';
      parse_mountinfo_line(line);
      used = 0;
    }
  }
  syscall(SYS_close, fd);
}

static void print_stats_at_exit(void);
static void flush_all_dirty(void);
static void send_counts(int mount, int force);
static void before_fork(void);
static void after_fork_parent(void);
static void after_fork_child(void);

static void init(void) {
  const char *off = getenv("SKYFS_PRELOAD");
  enabled = !(off && strcmp(off, "0") == 0);
  const char *show = getenv("SKYFS_PRELOAD_STATS");
  print_stats = show && (strcmp(show, "1") == 0 || show[0] == '/');
  if (print_stats && show[0] == '/' && strlen(show) < sizeof stats_path) strcpy(stats_path, show);
  for (int i = 0; i < STRIPES; i++) pthread_rwlock_init(&stripes[i], NULL);
  if (enabled) read_mountinfo();
  if (mount_count == 0) enabled = 0; /* nothing to serve: pass everything through */
  pthread_atfork(before_fork, after_fork_parent, after_fork_child);
  atomic_store(&initialized, 1);
}

static inline int active(void) {
  if (__builtin_expect(!atomic_load_explicit(&initialized, memory_order_acquire), 0)) {
    int saved = errno;
    pthread_once(&init_once, init);
    errno = saved;
  }
  return enabled;
}

__attribute__((constructor)) static void preload_constructor(void) { (void)active(); }

__attribute__((destructor)) static void preload_destructor(void) {
  if (!atomic_load(&initialized)) return;
  /* exit() closes nothing through us: publish sizes before the kernel closes the fds. */
  if (enabled) flush_all_dirty();
  if (enabled) {
    for (int i = 0; i < mount_count; i++) send_counts(i, 1);
  }
  if (print_stats) print_stats_at_exit();
}

static void print_stats_at_exit(void) {
  char text[320];
  int n = snprintf(text, sizeof text,
                   "skyfs-preload: pid %d mounts %d adopted %llu refused %llu reads %llu "
                   "writes %llu bytes_read %llu bytes_written %llu wrote_notices %llu\n",
                   (int)getpid(), mount_count, (unsigned long long)stats.adopted,
                   (unsigned long long)stats.refused, (unsigned long long)stats.reads,
                   (unsigned long long)stats.writes, (unsigned long long)stats.bytes_read,
                   (unsigned long long)stats.bytes_written, (unsigned long long)stats.wrote_notices);
  if (n <= 0) return;
  int fd = 2;
  if (stats_path[0]) {
    fd = (int)syscall(SYS_openat, AT_FDCWD, stats_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC,
                      0644);
    if (fd < 0) return;
  }
  syscall(SYS_write, fd, text, (size_t)n);
  if (fd != 2) syscall(SYS_close, fd);
}

API int skyfs_preload_stats(struct skyfs_preload_stats *out) {
  if (!out) return -EINVAL;
  out->adopted = stats.adopted;
  out->refused = stats.refused;
  out->reads = stats.reads;
  out->writes = stats.writes;
  out->bytes_read = stats.bytes_read;
  out->bytes_written = stats.bytes_written;
  out->wrote_notices = stats.wrote_notices;
  return 0;
}

/* ---- fork: no lock may be held by a thread that does not exist in the child ---- */

static void before_fork(void) {
  pthread_mutex_lock(&conn_lock);
  for (int i = 0; i < STRIPES; i++) pthread_rwlock_wrlock(&stripes[i]);
}

static void after_fork_parent(void) {
  for (int i = STRIPES - 1; i >= 0; i--) pthread_rwlock_unlock(&stripes[i]);
  pthread_mutex_unlock(&conn_lock);
}

static void after_fork_child(void) {
  /* The kernel stamps requests with the sender's pid, but replies on a shared socket could reach
   * the wrong process: the child opens its own connection. */
  for (int i = 0; i < mount_count; i++) {
    if (mounts[i].conn >= 0) syscall(SYS_close, mounts[i].conn);
    if (mounts[i].conn != -2) mounts[i].conn = -1;
    /* The parent reports what it served; the child starts from nothing. */
    atomic_store(&mounts[i].unreported_reads, 0);
    atomic_store(&mounts[i].unreported_writes, 0);
  }
  /* The parent's thread took the locks; the child's only thread starts them afresh. */
  for (int i = 0; i < STRIPES; i++) pthread_rwlock_init(&stripes[i], NULL);
  pthread_mutex_init(&conn_lock, NULL);
}

/* ---- control channel ---- */

static int connect_mount(struct mount_info *m) {
  int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  if (s < 0) return -1;
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  int len = snprintf(addr.sun_path + 1, sizeof addr.sun_path - 1, SKYFS_SHIM_SOCKET_PREFIX "%u:%u",
                     major(m->dev), minor(m->dev));
  socklen_t addr_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)len);
  struct ucred peer;
  socklen_t peer_len = sizeof peer;
  struct timeval timeout = {.tv_sec = 10};
  if (connect(s, (struct sockaddr *)&addr, addr_len) < 0 ||
      getsockopt(s, SOL_SOCKET, SO_PEERCRED, &peer, &peer_len) < 0 ||
      /* Anyone can bind an abstract name: only the mount's owner is believed. */
      peer.uid != m->owner ||
      setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout) < 0) {
    syscall(SYS_close, s);
    return -1;
  }
  return s;
}


/* One request/reply exchange; returns the reply status (0 or -errno). For GET_FD with status 0,
 * *out_fd is the received fd and *out_flags its open flags. Callers keep errno themselves. */
static int exchange_full(int mount_index, uint16_t op, int fd, uint32_t reserved, uint64_t ino,
                         int *out_fd, uint32_t *out_flags) {
  struct mount_info *m = &mounts[mount_index];
  int status = -EIO;
  pthread_mutex_lock(&conn_lock);
  if (m->conn == -1) {
    int s = connect_mount(m);
    m->conn = s >= 0 ? s : -2; /* an unreachable daemon is not retried on every open */
  }
  if (m->conn < 0) {
    pthread_mutex_unlock(&conn_lock);
    return -ENOTCONN;
  }
  struct skyfs_request request = {
      .magic = SKYFS_ABI_MAGIC,
      .version = SKYFS_ABI_VERSION,
      .op = op,
      .fd = fd,
      .reserved = reserved,
      .ino = ino,
      .seq = next_seq++,
  };
  ssize_t sent;
  do sent = send(m->conn, &request, sizeof request, MSG_NOSIGNAL);
  while (sent < 0 && errno == EINTR);
  if (sent != (ssize_t)sizeof request) goto broken;

  struct skyfs_reply reply;
  struct iovec iov = {.iov_base = &reply, .iov_len = sizeof reply};
  union {
    char buf[CMSG_SPACE(sizeof(int))];
    struct cmsghdr align;
  } control;
  struct msghdr msg = {
      .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf, .msg_controllen = sizeof control.buf};
  ssize_t got;
  do got = recvmsg(m->conn, &msg, MSG_CMSG_CLOEXEC);
  while (got < 0 && errno == EINTR);
  int received = -1;
  for (struct cmsghdr *c = got > 0 ? CMSG_FIRSTHDR(&msg) : NULL; c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS &&
        c->cmsg_len == CMSG_LEN(sizeof(int)) && received < 0) {
      memcpy(&received, CMSG_DATA(c), sizeof(int));
    }
  }
  if (got != (ssize_t)sizeof reply || reply.magic != SKYFS_ABI_MAGIC || reply.seq != request.seq ||
      reply.op != op || (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC))) {
    if (received >= 0) syscall(SYS_close, received);
    goto broken;
  }
  status = reply.status;
  if (op == SKYFS_OP_GET_FD && status == 0) {
    if (received < 0) {
      status = -EPROTO;
    } else {
      *out_fd = received;
      *out_flags = reply.open_flags;
      received = -1;
    }
  }
  if (received >= 0) syscall(SYS_close, received);
  pthread_mutex_unlock(&conn_lock);
  return status;

broken:
  /* A timeout, a dead daemon or a confused stream: drop the connection, retry on a later open. */
  syscall(SYS_close, m->conn);
  m->conn = -1;
  pthread_mutex_unlock(&conn_lock);
  return -EIO;
}

static int exchange(int mount_index, uint16_t op, int fd, uint64_t ino, int *out_fd,
                    uint32_t *out_flags) {
  return exchange_full(mount_index, op, fd, 0, ino, out_fd, out_flags);
}

static int exchange_counts(int mount_index, uint64_t reads, uint32_t writes) {
  return exchange_full(mount_index, SKYFS_OP_COUNTS, 0, writes, reads, NULL, NULL);
}

/* The program closed or replaced one of our sockets: forget it (it is no longer ours). */
static void forget_conn_fd(int fd) {
  pthread_mutex_lock(&conn_lock);
  for (int i = 0; i < mount_count; i++) {
    if (mounts[i].conn == fd) mounts[i].conn = -1;
  }
  pthread_mutex_unlock(&conn_lock);
}

/* ---- the fd table ---- */

static inline pthread_rwlock_t *stripe(int fd) { return &stripes[fd % STRIPES]; }

static inline int in_table(int fd) { return fd >= 0 && fd < MAX_FDS; }

static void send_wrote(struct fd_entry *e, int fd) {
  if (!e->dirty) return;
  e->dirty = 0;
  atomic_fetch_sub(&dirty_count, 1);
  atomic_fetch_add(&stats.wrote_notices, 1);
  (void)exchange(e->mount, SKYFS_OP_WROTE, fd, e->ino, NULL, NULL);
}

static int64_t monotonic_ns(void) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return (int64_t)now.tv_sec * 1000000000 + now.tv_nsec;
}

/* Report this mount's unreported reads and writes (SKYFS_OP_COUNTS): always when `force`, else at
 * most once a second, so a program closing many files pays one extra exchange per second. */
static void send_counts(int mount, int force) {
  struct mount_info *m = &mounts[mount];
  if (atomic_load(&m->unreported_reads) == 0 && atomic_load(&m->unreported_writes) == 0) return;
  int64_t now = monotonic_ns();
  if (!force && now - atomic_load(&m->reported_at_ns) < 1000000000) return;
  atomic_store(&m->reported_at_ns, now);
  uint64_t reads = atomic_exchange(&m->unreported_reads, 0);
  uint64_t writes = atomic_exchange(&m->unreported_writes, 0);
  if (writes > UINT32_MAX) {
    atomic_fetch_add(&m->unreported_writes, writes - UINT32_MAX);
    writes = UINT32_MAX;
  }
  (void)exchange_counts(mount, reads, (uint32_t)writes);
}

/* Forget fd's mapping (its number is being closed or reused). Caller holds the stripe exclusively
 * and keeps errno. */
static void drop_entry(int fd) {
  struct fd_entry *e = &table[fd];
  if (atomic_load(&e->state) == FD_LOCAL) {
    send_wrote(e, fd);
    send_counts(e->mount, 0);
    syscall(SYS_close, e->local_fd);
    e->local_fd = -1;
  }
  atomic_store(&e->state, FD_UNKNOWN);
}

/* A new fd number appeared (open, dup, fopen): any mapping left under that number is stale. */
static void note_new_fd(int fd) {
  if (!in_table(fd)) return;
  int high = atomic_load(&highest_fd);
  while (fd > high && !atomic_compare_exchange_weak(&highest_fd, &high, fd)) {}
  if (atomic_load_explicit(&table[fd].state, memory_order_relaxed) == FD_UNKNOWN) return;
  int saved = errno;
  pthread_rwlock_wrlock(stripe(fd));
  drop_entry(fd);
  pthread_rwlock_unlock(stripe(fd));
  errno = saved;
}

static int mount_of(dev_t dev) {
  for (int i = 0; i < mount_count; i++) {
    if (mounts[i].dev == dev) return i;
  }
  return -1;
}

/* First I/O on an fd we have not classified: a regular file on a skyfs mount gets a local fd from
 * the daemon; anything else is marked FD_OTHER and never looked at again until closed. */
static void adopt(int fd) {
  int saved = errno;
  pthread_rwlock_wrlock(stripe(fd));
  struct fd_entry *e = &table[fd];
  if (atomic_load(&e->state) != FD_UNKNOWN) goto out;
  struct stat st;
  if (syscall(SYS_fstat, fd, &st) < 0) goto out; /* not open: the real call reports EBADF */
  int index = S_ISREG(st.st_mode) ? mount_of(st.st_dev) : -1;
  long flags = index < 0 ? 0 : syscall(SYS_fcntl, fd, F_GETFL);
  /* A write must drop set-id bits as the writer's credentials say (root keeps them; set-group-id
   * without group execute goes only for a writer outside the file's group), which only the FUSE
   * write path knows: such files stay on FUSE, as they get no passthrough backing fd. */
  int killable_set_id = (st.st_mode & (S_ISUID | S_ISGID)) != 0;
  if (index < 0 || flags < 0 || (flags & O_PATH) || killable_set_id) {
    atomic_store(&e->state, FD_OTHER);
    goto out;
  }
  int local = -1;
  uint32_t local_flags = 0;
  int status = exchange(index, SKYFS_OP_GET_FD, fd, st.st_ino, &local, &local_flags);
  if (status != 0) {
    atomic_fetch_add(&stats.refused, 1);
    atomic_store(&e->state, FD_OTHER);
    goto out;
  }
  e->local_fd = local;
  e->flags = local_flags;
  e->ino = st.st_ino;
  e->mount = (uint8_t)index;
  e->dirty = 0;
  atomic_fetch_add(&stats.adopted, 1);
  atomic_store(&e->state, FD_LOCAL);
out:
  pthread_rwlock_unlock(stripe(fd));
  errno = saved;
}

/* The fd's entry locked (shared, or exclusive when the call moves the file offset), or NULL when
 * the call must go to libc. Pair with release(). */
static struct fd_entry *acquire(int fd, int exclusive) {
  if (!active() || !in_table(fd)) return NULL;
  uint8_t state = atomic_load_explicit(&table[fd].state, memory_order_acquire);
  if (state == FD_OTHER) return NULL;
  if (state == FD_UNKNOWN) {
    adopt(fd);
    if (atomic_load(&table[fd].state) != FD_LOCAL) return NULL;
  }
  if (exclusive) pthread_rwlock_wrlock(stripe(fd));
  else pthread_rwlock_rdlock(stripe(fd));
  if (atomic_load(&table[fd].state) != FD_LOCAL) {
    pthread_rwlock_unlock(stripe(fd));
    return NULL;
  }
  return &table[fd];
}

static inline void release(int fd) { pthread_rwlock_unlock(stripe(fd)); }

static void mark_dirty(struct fd_entry *e) {
  if (e->dirty) return;
  /* A shared holder may race here: the flag is a hint, the counter only gates a scan. */
  e->dirty = 1;
  atomic_fetch_add(&dirty_count, 1);
}

static void flush_all_dirty(void) {
  if (atomic_load_explicit(&dirty_count, memory_order_relaxed) == 0) return;
  int saved = errno;
  int high = atomic_load(&highest_fd);
  for (int fd = 0; fd <= high && atomic_load(&dirty_count) > 0; fd++) {
    if (atomic_load(&table[fd].state) != FD_LOCAL || !table[fd].dirty) continue;
    pthread_rwlock_wrlock(stripe(fd));
    if (atomic_load(&table[fd].state) == FD_LOCAL) send_wrote(&table[fd], fd);
    pthread_rwlock_unlock(stripe(fd));
  }
  errno = saved;
}

/* ---- data path ---- */

enum io_kind { IO_READ, IO_WRITE };

static void count(int mount, enum io_kind kind, ssize_t n) {
  if (n < 0) return;
  if (kind == IO_READ) {
    atomic_fetch_add_explicit(&mounts[mount].unreported_reads, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&stats.reads, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&stats.bytes_read, (uint64_t)n, memory_order_relaxed);
  } else {
    atomic_fetch_add_explicit(&mounts[mount].unreported_writes, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&stats.writes, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&stats.bytes_written, (uint64_t)n, memory_order_relaxed);
  }
}

/* I/O at `offset` on the local fd (offset -1: at the file position of the FUSE fd, which then
 * moves, exactly as read/write/readv/writev do). `e` is held exclusively when offset is -1. */
static ssize_t local_io(struct fd_entry *e, int fd, enum io_kind kind, const struct iovec *iov,
                        int count_iov, off_t offset, int rwf) {
  int append = kind == IO_WRITE && (e->flags & O_APPEND);
  ssize_t n;
  if (offset >= 0 || append) {
    /* pwrite on an O_APPEND fd appends, as Linux does for the FUSE fd. */
    off_t at = append ? -1 : offset;
    n = kind == IO_READ ? (ssize_t)syscall(SYS_preadv2, e->local_fd, iov, count_iov, (long)at, 0L, rwf)
                        : (ssize_t)syscall(SYS_pwritev2, e->local_fd, iov, count_iov, (long)at, 0L, rwf);
    /* A write of nothing leaves the offset where it was, O_APPEND or not (generic_write_checks
     * returns before it moves ki_pos). */
    if (append && offset < 0 && n > 0) {
      off_t end = (off_t)syscall(SYS_lseek, e->local_fd, 0L, SEEK_CUR);
      if (end >= 0) syscall(SYS_lseek, fd, (long)end, SEEK_SET);
    }
  } else {
    off_t position = (off_t)syscall(SYS_lseek, fd, 0L, SEEK_CUR);
    if (position < 0) return -1;
    n = kind == IO_READ
            ? (ssize_t)syscall(SYS_preadv2, e->local_fd, iov, count_iov, (long)position, 0L, rwf)
            : (ssize_t)syscall(SYS_pwritev2, e->local_fd, iov, count_iov, (long)position, 0L, rwf);
    if (n > 0) syscall(SYS_lseek, fd, (long)(position + n), SEEK_SET);
  }
  if (kind == IO_WRITE && n > 0) mark_dirty(e);
  count(e->mount, kind, n);
  return n;
}

/* Serve one call through the local fd if fd is ours; *served says whether it was. */
static ssize_t try_local(int fd, enum io_kind kind, const struct iovec *iov, int count_iov,
                         off_t offset, int rwf, int *served) {
  struct fd_entry *e = acquire(fd, offset < 0);
  *served = e != NULL;
  if (!e) return 0;
  ssize_t n = local_io(e, fd, kind, iov, count_iov, offset, rwf);
  int saved = errno;
  release(fd);
  errno = saved;
  return n;
}

#define SERVE(fd, kind, iov, n_iov, offset, rwf, fallback)                     \
  do {                                                                          \
    int served_;                                                                \
    ssize_t r_ = try_local(fd, kind, iov, n_iov, offset, rwf, &served_);       \
    if (served_) return r_;                                                     \
    return fallback;                                                            \
  } while (0)

/* A buffer call as a one-element iovec. Offsets below -1 reach the local fd, which says EINVAL
 * as the FUSE fd would. */
#define ONE(buf, n) (&(struct iovec){.iov_base = (void *)(buf), .iov_len = (n)})

API ssize_t read(int fd, void *buf, size_t n) {
  SERVE(fd, IO_READ, ONE(buf, n), 1, -1, 0, REAL(read)(fd, buf, n));
}
API ssize_t __read_chk(int fd, void *buf, size_t n, size_t buflen) {
  if (n > buflen) return REAL(__read_chk)(fd, buf, n, buflen); /* let libc abort */
  SERVE(fd, IO_READ, ONE(buf, n), 1, -1, 0, REAL(__read_chk)(fd, buf, n, buflen));
}
static ssize_t positioned(int fd, enum io_kind kind, const struct iovec *iov, int n_iov,
                          off_t offset, int rwf, int *served) {
  if (offset < 0) {
    *served = 1;
    errno = EINVAL;
    return -1;
  }
  return try_local(fd, kind, iov, n_iov, offset, rwf, served);
}
#define SERVE_AT(fd, kind, iov, n_iov, offset, rwf, fallback)                    \
  do {                                                                            \
    int served_ = 0;                                                              \
    ssize_t r_ = active() && in_table(fd) &&                                      \
                         atomic_load(&table[fd].state) != FD_OTHER                \
                     ? positioned(fd, kind, iov, n_iov, offset, rwf, &served_)    \
                     : 0;                                                         \
    if (served_) return r_;                                                       \
    return fallback;                                                              \
  } while (0)

API ssize_t pread(int fd, void *buf, size_t n, off_t offset) {
  SERVE_AT(fd, IO_READ, ONE(buf, n), 1, offset, 0, REAL(pread)(fd, buf, n, offset));
}
API ssize_t pread64(int fd, void *buf, size_t n, off_t offset) {
  SERVE_AT(fd, IO_READ, ONE(buf, n), 1, offset, 0, REAL(pread64)(fd, buf, n, offset));
}
API ssize_t __pread_chk(int fd, void *buf, size_t n, off_t offset, size_t buflen) {
  if (n > buflen) return REAL(__pread_chk)(fd, buf, n, offset, buflen);
  SERVE_AT(fd, IO_READ, ONE(buf, n), 1, offset, 0, REAL(__pread_chk)(fd, buf, n, offset, buflen));
}
API ssize_t __pread64_chk(int fd, void *buf, size_t n, off_t offset, size_t buflen) {
  if (n > buflen) return REAL(__pread64_chk)(fd, buf, n, offset, buflen);
  SERVE_AT(fd, IO_READ, ONE(buf, n), 1, offset, 0,
           REAL(__pread64_chk)(fd, buf, n, offset, buflen));
}
API ssize_t readv(int fd, const struct iovec *iov, int n) {
  SERVE(fd, IO_READ, iov, n, -1, 0, REAL(readv)(fd, iov, n));
}
API ssize_t preadv(int fd, const struct iovec *iov, int n, off_t offset) {
  SERVE_AT(fd, IO_READ, iov, n, offset, 0, REAL(preadv)(fd, iov, n, offset));
}
API ssize_t preadv64(int fd, const struct iovec *iov, int n, off_t offset) {
  SERVE_AT(fd, IO_READ, iov, n, offset, 0, REAL(preadv64)(fd, iov, n, offset));
}
API ssize_t preadv2(int fd, const struct iovec *iov, int n, off_t offset, int flags) {
  if (offset == -1) SERVE(fd, IO_READ, iov, n, -1, flags, REAL(preadv2)(fd, iov, n, offset, flags));
  SERVE_AT(fd, IO_READ, iov, n, offset, flags, REAL(preadv2)(fd, iov, n, offset, flags));
}
API ssize_t preadv64v2(int fd, const struct iovec *iov, int n, off_t offset, int flags) {
  if (offset == -1) {
    SERVE(fd, IO_READ, iov, n, -1, flags, REAL(preadv64v2)(fd, iov, n, offset, flags));
  }
  SERVE_AT(fd, IO_READ, iov, n, offset, flags, REAL(preadv64v2)(fd, iov, n, offset, flags));
}

API ssize_t write(int fd, const void *buf, size_t n) {
  SERVE(fd, IO_WRITE, ONE(buf, n), 1, -1, 0, REAL(write)(fd, buf, n));
}
API ssize_t pwrite(int fd, const void *buf, size_t n, off_t offset) {
  SERVE_AT(fd, IO_WRITE, ONE(buf, n), 1, offset, 0, REAL(pwrite)(fd, buf, n, offset));
}
API ssize_t pwrite64(int fd, const void *buf, size_t n, off_t offset) {
  SERVE_AT(fd, IO_WRITE, ONE(buf, n), 1, offset, 0, REAL(pwrite64)(fd, buf, n, offset));
}
API ssize_t writev(int fd, const struct iovec *iov, int n) {
  SERVE(fd, IO_WRITE, iov, n, -1, 0, REAL(writev)(fd, iov, n));
}
API ssize_t pwritev(int fd, const struct iovec *iov, int n, off_t offset) {
  SERVE_AT(fd, IO_WRITE, iov, n, offset, 0, REAL(pwritev)(fd, iov, n, offset));
}
API ssize_t pwritev64(int fd, const struct iovec *iov, int n, off_t offset) {
  SERVE_AT(fd, IO_WRITE, iov, n, offset, 0, REAL(pwritev64)(fd, iov, n, offset));
}
API ssize_t pwritev2(int fd, const struct iovec *iov, int n, off_t offset, int flags) {
  if (offset == -1) {
    SERVE(fd, IO_WRITE, iov, n, -1, flags, REAL(pwritev2)(fd, iov, n, offset, flags));
  }
  SERVE_AT(fd, IO_WRITE, iov, n, offset, flags, REAL(pwritev2)(fd, iov, n, offset, flags));
}
API ssize_t pwritev64v2(int fd, const struct iovec *iov, int n, off_t offset, int flags) {
  if (offset == -1) {
    SERVE(fd, IO_WRITE, iov, n, -1, flags, REAL(pwritev64v2)(fd, iov, n, offset, flags));
  }
  SERVE_AT(fd, IO_WRITE, iov, n, offset, flags, REAL(pwritev64v2)(fd, iov, n, offset, flags));
}

/* SEEK_END/DATA/HOLE need the size, which the kernel's cache of the FUSE inode may not have yet
 * after our writes: take it from the local file, then place the FUSE fd's position. */
static off_t seek(int fd, off_t offset, int whence, off_t (*fallback)(int, off_t, int)) {
  if (whence == SEEK_SET || whence == SEEK_CUR) return fallback(fd, offset, whence);
  struct fd_entry *e = acquire(fd, 1);
  if (!e) return fallback(fd, offset, whence);
  off_t position = (off_t)syscall(SYS_lseek, e->local_fd, (long)offset, whence);
  if (position >= 0 && syscall(SYS_lseek, fd, (long)position, SEEK_SET) < 0) position = -1;
  int saved = errno;
  release(fd);
  errno = saved;
  return position;
}
API off_t lseek(int fd, off_t offset, int whence) { return seek(fd, offset, whence, REAL(lseek)); }
API off_t lseek64(int fd, off_t offset, int whence) {
  return seek(fd, offset, whence, REAL(lseek64));
}

/* ---- opening and closing ---- */

static int opened(int fd) {
  if (fd >= 0 && active()) note_new_fd(fd);
  return fd;
}

static mode_t mode_argument(int flags, va_list ap) {
  return (flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE ? (mode_t)va_arg(ap, int) : 0;
}

API int open(const char *path, int flags, ...) {
  va_list ap;
  va_start(ap, flags);
  mode_t mode = mode_argument(flags, ap);
  va_end(ap);
  return opened(REAL(open)(path, flags, mode));
}
API int open64(const char *path, int flags, ...) {
  va_list ap;
  va_start(ap, flags);
  mode_t mode = mode_argument(flags, ap);
  va_end(ap);
  return opened(REAL(open64)(path, flags, mode));
}
API int openat(int dirfd, const char *path, int flags, ...) {
  va_list ap;
  va_start(ap, flags);
  mode_t mode = mode_argument(flags, ap);
  va_end(ap);
  return opened(REAL(openat)(dirfd, path, flags, mode));
}
API int openat64(int dirfd, const char *path, int flags, ...) {
  va_list ap;
  va_start(ap, flags);
  mode_t mode = mode_argument(flags, ap);
  va_end(ap);
  return opened(REAL(openat64)(dirfd, path, flags, mode));
}
API int creat(const char *path, mode_t mode) { return opened(REAL(creat)(path, mode)); }
API int creat64(const char *path, mode_t mode) { return opened(REAL(creat64)(path, mode)); }
API int __open_2(const char *path, int flags) { return opened(REAL(__open_2)(path, flags)); }
API int __open64_2(const char *path, int flags) { return opened(REAL(__open64_2)(path, flags)); }
API int __openat_2(int dirfd, const char *path, int flags) {
  return opened(REAL(__openat_2)(dirfd, path, flags));
}
API int __openat64_2(int dirfd, const char *path, int flags) {
  return opened(REAL(__openat64_2)(dirfd, path, flags));
}

/* Close (or replace) fd with `operation` while its stripe is held, so that no other thread can
 * map the number between our drop and the kernel's close. */
static int closing(int fd, int (*operation)(void *), void *argument) {
  if (!active() || !in_table(fd)) return operation(argument);
  int saved = errno;
  pthread_rwlock_wrlock(stripe(fd));
  drop_entry(fd);
  forget_conn_fd(fd);
  errno = saved;
  int rc = operation(argument);
  saved = errno;
  pthread_rwlock_unlock(stripe(fd));
  errno = saved;
  return rc;
}

static int do_close(void *fd) { return REAL(close)(*(int *)fd); }
API int close(int fd) { return closing(fd, do_close, &fd); }

struct dup_args {
  int old_fd, new_fd, flags, three;
};
static int do_dup2(void *p) {
  struct dup_args *a = p;
  return a->three ? REAL(dup3)(a->old_fd, a->new_fd, a->flags) : REAL(dup2)(a->old_fd, a->new_fd);
}
API int dup2(int old_fd, int new_fd) {
  if (old_fd == new_fd) return REAL(dup2)(old_fd, new_fd); /* closes nothing */
  struct dup_args a = {old_fd, new_fd, 0, 0};
  return closing(new_fd, do_dup2, &a);
}
API int dup3(int old_fd, int new_fd, int flags) {
  struct dup_args a = {old_fd, new_fd, flags, 1};
  if (old_fd == new_fd) return REAL(dup3)(old_fd, new_fd, flags); /* EINVAL */
  return closing(new_fd, do_dup2, &a);
}
API int dup(int fd) { return opened(REAL(dup)(fd)); }

static void drop_range(unsigned first, unsigned last) {
  int high = atomic_load(&highest_fd);
  if (high < 0 || first > (unsigned)high) return;
  if (last > (unsigned)high) last = (unsigned)high;
  int saved = errno;
  for (unsigned fd = first; fd <= last; fd++) {
    if (atomic_load(&table[fd].state) == FD_UNKNOWN) continue;
    pthread_rwlock_wrlock(stripe((int)fd));
    drop_entry((int)fd);
    pthread_rwlock_unlock(stripe((int)fd));
  }
  for (int i = 0; i < mount_count; i++) {
    if (mounts[i].conn >= (int)first && (unsigned)mounts[i].conn <= last) forget_conn_fd(mounts[i].conn);
  }
  errno = saved;
}

API int close_range(unsigned first, unsigned last, int flags) {
  if (active() && !(flags & CLOSE_RANGE_CLOEXEC)) drop_range(first, last);
  return REAL(close_range)(first, last, flags);
}
API void closefrom(int lowfd) {
  if (active() && lowfd >= 0) drop_range((unsigned)lowfd, ~0u);
  REAL(closefrom)(lowfd);
}

/* fcntl's third argument is an int or a pointer; glibc reads it as a pointer-sized value too. */
static int fcntl_common(int fd, int cmd, void *arg, int (*real)(int, int, ...)) {
  int rc = real(fd, cmd, arg);
  if (rc < 0 || !active()) return rc;
  if (cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC) return opened(rc);
  if (cmd == F_SETFL) {
    /* O_APPEND and O_DIRECT follow the FUSE fd (the kernel applied them there already). */
    struct fd_entry *e = acquire(fd, 1);
    if (e) {
      int saved = errno;
      long now = syscall(SYS_fcntl, fd, F_GETFL);
      if (now >= 0) {
        uint32_t keep = (uint32_t)now & (O_APPEND | O_DIRECT | O_NOATIME);
        if (syscall(SYS_fcntl, e->local_fd, F_SETFL, (long)keep) == 0) {
          e->flags = (e->flags & ~(uint32_t)(O_APPEND | O_DIRECT | O_NOATIME)) | keep;
        }
      }
      release(fd);
      errno = saved;
    }
  }
  return rc;
}
API int fcntl(int fd, int cmd, ...) {
  va_list ap;
  va_start(ap, cmd);
  void *arg = va_arg(ap, void *);
  va_end(ap);
  return fcntl_common(fd, cmd, arg, REAL(fcntl));
}
API int fcntl64(int fd, int cmd, ...) {
  va_list ap;
  va_start(ap, cmd);
  void *arg = va_arg(ap, void *);
  va_end(ap);
  return fcntl_common(fd, cmd, arg, REAL(fcntl64));
}

/* ---- durability and attributes ---- */

/* Before the kernel is asked about a file, make sure the daemon knows what we wrote, through
 * this fd or any other (several fds may share the inode). A no-op while nothing is dirty. */
static void publish(int fd) {
  (void)fd;
  flush_all_dirty();
}

API int fsync(int fd) {
  if (active()) publish(fd);
  return REAL(fsync)(fd);
}
API int fdatasync(int fd) {
  if (active()) publish(fd);
  return REAL(fdatasync)(fd);
}
API int ftruncate(int fd, off_t length) {
  if (active()) publish(fd);
  return REAL(ftruncate)(fd, length);
}
API int ftruncate64(int fd, off_t length) {
  if (active()) publish(fd);
  return REAL(ftruncate64)(fd, length);
}

/* A stat by path may name a file we wrote through another fd: publish every dirty fd first. The
 * scan runs only while some fd is dirty. */
#define STAT_PATH(call) \
  do {                  \
    if (active()) flush_all_dirty(); \
    return call;        \
  } while (0)

API int fstat(int fd, struct stat *st) {
  if (active()) publish(fd);
  return REAL(fstat)(fd, st);
}
API int fstat64(int fd, struct stat64 *st) {
  if (active()) publish(fd);
  return REAL(fstat64)(fd, st);
}
API int __fxstat(int version, int fd, struct stat *st) {
  if (active()) publish(fd);
  return REAL(__fxstat)(version, fd, st);
}
API int __fxstat64(int version, int fd, struct stat64 *st) {
  if (active()) publish(fd);
  return REAL(__fxstat64)(version, fd, st);
}
API int stat(const char *path, struct stat *st) { STAT_PATH(REAL(stat)(path, st)); }
API int stat64(const char *path, struct stat64 *st) { STAT_PATH(REAL(stat64)(path, st)); }
API int lstat(const char *path, struct stat *st) { STAT_PATH(REAL(lstat)(path, st)); }
API int lstat64(const char *path, struct stat64 *st) { STAT_PATH(REAL(lstat64)(path, st)); }
API int fstatat(int dirfd, const char *path, struct stat *st, int flags) {
  STAT_PATH(REAL(fstatat)(dirfd, path, st, flags));
}
API int fstatat64(int dirfd, const char *path, struct stat64 *st, int flags) {
  STAT_PATH(REAL(fstatat64)(dirfd, path, st, flags));
}
API int statx(int dirfd, const char *path, int flags, unsigned mask, struct statx *st) {
  STAT_PATH(REAL(statx)(dirfd, path, flags, mask, st));
}
API int __xstat(int version, const char *path, struct stat *st) {
  STAT_PATH(REAL(__xstat)(version, path, st));
}
API int __xstat64(int version, const char *path, struct stat64 *st) {
  STAT_PATH(REAL(__xstat64)(version, path, st));
}
API int __lxstat(int version, const char *path, struct stat *st) {
  STAT_PATH(REAL(__lxstat)(version, path, st));
}
API int __lxstat64(int version, const char *path, struct stat64 *st) {
  STAT_PATH(REAL(__lxstat64)(version, path, st));
}
API int __fxstatat(int version, int dirfd, const char *path, struct stat *st, int flags) {
  STAT_PATH(REAL(__fxstatat)(version, dirfd, path, st, flags));
}
API int __fxstatat64(int version, int dirfd, const char *path, struct stat64 *st, int flags) {
  STAT_PATH(REAL(__fxstatat64)(version, dirfd, path, st, flags));
}

/* ---- stdio: its reads and writes call libc internally (not interposable) and so go through
 * the kernel (FUSE passthrough); what must be seen is its opening and closing of fd numbers. ---- */

static FILE *stream_opened(FILE *stream) {
  if (stream) opened(fileno(stream));
  return stream;
}
API FILE *fopen(const char *path, const char *mode) { return stream_opened(REAL(fopen)(path, mode)); }
API FILE *fopen64(const char *path, const char *mode) {
  return stream_opened(REAL(fopen64)(path, mode));
}
API FILE *fdopen(int fd, const char *mode) {
  /* The stream's reads bypass us: publish, and drop the mapping so both paths see one state. */
  if (active() && in_table(fd) && atomic_load(&table[fd].state) == FD_LOCAL) publish(fd);
  return REAL(fdopen)(fd, mode);
}

static int do_fclose(void *stream) { return REAL(fclose)((FILE *)stream); }
API int fclose(FILE *stream) {
  int fd = stream ? fileno(stream) : -1;
  if (fd < 0) return REAL(fclose)(stream);
  return closing(fd, do_fclose, stream);
}
struct reopen_args {
  const char *path, *mode;
  FILE *stream, *result;
  int large;
};
static int do_freopen(void *p) {
  struct reopen_args *a = p;
  a->result = a->large ? REAL(freopen64)(a->path, a->mode, a->stream)
                       : REAL(freopen)(a->path, a->mode, a->stream);
  return 0;
}
static FILE *reopen(const char *path, const char *mode, FILE *stream, int large) {
  struct reopen_args a = {path, mode, stream, NULL, large};
  int fd = stream ? fileno(stream) : -1;
  if (fd >= 0) closing(fd, do_freopen, &a);
  else do_freopen(&a);
  return stream_opened(a.result);
}
API FILE *freopen(const char *path, const char *mode, FILE *stream) {
  return reopen(path, mode, stream, 0);
}
API FILE *freopen64(const char *path, const char *mode, FILE *stream) {
  return reopen(path, mode, stream, 1);
}
API int fcloseall(void) {
  /* Which fds are streams is not known here: drop every mapping; later I/O re-adopts. */
  if (active()) drop_range(0, ~0u);
  return REAL(fcloseall)();
}
