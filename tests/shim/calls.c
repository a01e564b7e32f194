/* One section per call the shim interposes, run in a directory on the mount with and without
 * LD_PRELOAD; shim_test.ts requires identical output. Usage: calls DIR */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

int __open_2(const char *, int);
int __openat_2(int, const char *, int);
ssize_t __read_chk(int, void *, size_t, size_t);
ssize_t __pread_chk(int, void *, size_t, off_t, size_t);

static char path[4096];
static const char *at(const char *dir, const char *name) {
  snprintf(path, sizeof path, "%s/%s", dir, name);
  return path;
}
#define SHOW(label, expr)                                                       \
  do {                                                                          \
    errno = 0;                                                                  \
    long long r_ = (long long)(expr);                                           \
    printf("%-28s -> %lld%s%s\n", label, r_, r_ < 0 ? " errno " : "",            \
           r_ < 0 ? strerrorname_np(errno) : "");                               \
  } while (0)

static void show_text(const char *label, const char *buf, ssize_t n) {
  printf("%-28s == \"%.*s\"\n", label, (int)(n < 0 ? 0 : n), buf);
}

static long long size_of(int fd) {
  struct stat st;
  return fstat(fd, &st) < 0 ? -1 : (long long)st.st_size;
}

static void *thread_writer(void *arg) {
  int fd = *(int *)arg >> 8, t = *(int *)arg & 0xff;
  char block[512];
  memset(block, 'a' + t, sizeof block);
  for (int i = 0; i < 64; i++) pwrite(fd, block, sizeof block, (off_t)(i * 4 + t) * 512);
  return NULL;
}

int main(int argc, char **argv) {
  if (argc != 2) return 2;
  const char *dir = argv[1];
  char buf[256];
  setvbuf(stdout, NULL, _IONBF, 0);

  /* open, write, read, lseek */
  int fd = open(at(dir, "a"), O_CREAT | O_RDWR | O_TRUNC, 0644);
  SHOW("open", fd >= 0);
  SHOW("write", write(fd, "hello, world", 12));
  SHOW("lseek SEEK_CUR", lseek(fd, 0, SEEK_CUR));
  SHOW("lseek SEEK_SET", lseek(fd, 7, SEEK_SET));
  ssize_t n = read(fd, buf, sizeof buf);
  SHOW("read", n);
  show_text("read data", buf, n);
  SHOW("read at eof", read(fd, buf, sizeof buf));
  SHOW("lseek SEEK_END", lseek(fd, -5, SEEK_END));
  SHOW("__read_chk", n = __read_chk(fd, buf, 3, sizeof buf));
  show_text("__read_chk data", buf, n);

  /* positioned calls */
  SHOW("pwrite", pwrite(fd, "XYZ", 3, 20));
  SHOW("fstat size after pwrite", size_of(fd));
  SHOW("pread", n = pread(fd, buf, 30, 0));
  for (ssize_t i = 0; i < n; i++) if (!buf[i]) buf[i] = '0';
  show_text("pread data", buf, n);
  SHOW("__pread_chk", n = __pread_chk(fd, buf, 4, 8, sizeof buf));
  show_text("__pread_chk data", buf, n);
  SHOW("pread negative offset", pread(fd, buf, 1, -5));
  SHOW("pwrite negative offset", pwrite(fd, buf, 1, -5));
  SHOW("lseek after p-calls", lseek(fd, 0, SEEK_CUR));

  /* vectors */
  struct iovec two[2] = {{"ab", 2}, {"cdef", 4}};
  SHOW("lseek 0", lseek(fd, 0, SEEK_SET));
  SHOW("writev", writev(fd, two, 2));
  SHOW("pwritev", pwritev(fd, two, 2, 40));
  SHOW("pwritev2 at -1", pwritev2(fd, two, 2, -1, 0));
  SHOW("pwritev2 at 50", pwritev2(fd, two, 2, 50, 0));
  char x[3], y[5];
  struct iovec in[2] = {{x, 3}, {y, 5}};
  SHOW("lseek 0", lseek(fd, 0, SEEK_SET));
  SHOW("readv", readv(fd, in, 2));
  show_text("readv x", x, 3);
  show_text("readv y", y, 5);
  SHOW("preadv", preadv(fd, in, 2, 40));
  show_text("preadv x", x, 3);
  SHOW("preadv2 at -1", preadv2(fd, in, 2, -1, 0));
  show_text("preadv2 y", y, 5);
  SHOW("preadv2 at 50", preadv2(fd, in, 2, 50, 0));
  SHOW("offset now", lseek(fd, 0, SEEK_CUR));

  /* sizes seen by every stat call right after writes */
  struct stat st;
  struct statx sx;
  SHOW("stat size", (stat(at(dir, "a"), &st), st.st_size));
  SHOW("lstat size", (lstat(at(dir, "a"), &st), st.st_size));
  SHOW("fstatat size", (fstatat(AT_FDCWD, at(dir, "a"), &st, 0), st.st_size));
  SHOW("statx size", (statx(AT_FDCWD, at(dir, "a"), 0, STATX_SIZE, &sx), (long long)sx.stx_size));
  SHOW("fsync", fsync(fd));
  SHOW("fdatasync", fdatasync(fd));
  SHOW("ftruncate", ftruncate(fd, 8));
  SHOW("fstat after ftruncate", size_of(fd));
  SHOW("pread after ftruncate", n = pread(fd, buf, 100, 0));
  show_text("data after ftruncate", buf, n);
  SHOW("lseek SEEK_DATA", lseek(fd, 0, SEEK_DATA));
  SHOW("lseek SEEK_HOLE", lseek(fd, 0, SEEK_HOLE));

  /* dup family share the offset */
  SHOW("lseek 2", lseek(fd, 2, SEEK_SET));
  int d1 = dup(fd);
  SHOW("dup read", n = read(d1, buf, 2));
  show_text("dup data", buf, n);
  SHOW("offset via original", lseek(fd, 0, SEEK_CUR));
  int d2 = dup2(fd, 40);
  SHOW("dup2", d2);
  SHOW("dup2 read", n = read(40, buf, 2));
  show_text("dup2 data", buf, n);
  SHOW("dup3", dup3(fd, 41, O_CLOEXEC));
  SHOW("fcntl F_DUPFD", fcntl(fd, F_DUPFD, 50) >= 50);
  SHOW("fcntl F_DUPFD_CLOEXEC", fcntl(fd, F_DUPFD_CLOEXEC, 60) >= 60);
  SHOW("close dup", close(d1));
  SHOW("read closed fd", read(d1, buf, 1));
  SHOW("close_range 40-41", close_range(40, 41, 0));
  SHOW("read after close_range", read(40, buf, 1));
  SHOW("dup2 same fd", dup2(fd, fd) == fd);

  /* O_APPEND from open and from fcntl */
  int ap = open(at(dir, "a"), O_WRONLY | O_APPEND);
  SHOW("append write", write(ap, "++", 2));
  SHOW("append offset", lseek(ap, 0, SEEK_CUR));
  SHOW("append pwrite at 0", pwrite(ap, "--", 2, 0));
  SHOW("size after appends", size_of(fd));
  SHOW("read on O_WRONLY", read(ap, buf, 1));
  SHOW("close append", close(ap));
  /* F_SETFL adds O_APPEND to a plain fd. (Clearing it is not compared: with FUSE passthrough the
   * kernel keeps appending, as the backing file keeps the flags of the open.) */
  int wr = open(at(dir, "a"), O_WRONLY);
  SHOW("F_SETFL set append", fcntl(wr, F_SETFL, O_APPEND));
  SHOW("F_GETFL append bit", (fcntl(wr, F_GETFL) & O_APPEND) != 0);
  SHOW("write appends", write(wr, "!", 1));
  SHOW("offset after append", lseek(wr, 0, SEEK_CUR));
  SHOW("close plain", close(wr));
  SHOW("pread all", n = pread(fd, buf, sizeof buf, 0));
  show_text("all data", buf, n);
  /* a write of nothing moves no offset, O_APPEND or not */
  ap = open(at(dir, "a"), O_RDWR | O_APPEND);
  SHOW("lseek append fd", lseek(ap, 3, SEEK_SET));
  SHOW("append write of 0", write(ap, "", 0));
  SHOW("offset after write of 0", lseek(ap, 0, SEEK_CUR));
  SHOW("writev of 0", writev(ap, two, 0));
  SHOW("offset after writev of 0", lseek(ap, 0, SEEK_CUR));
  SHOW("close append", close(ap));
  /* set-id bits: root's write keeps them (CAP_FSETID); such files stay on the FUSE path */
  int sid = open(at(dir, "setid"), O_CREAT | O_RDWR | O_TRUNC, 0644);
  SHOW("chmod 02755", fchmod(sid, 02755));
  int sid2 = open(at(dir, "setid"), O_RDWR);
  SHOW("write set-id file", write(sid2, "x", 1));
  SHOW("mode after write", (fstat(sid2, &st), (long long)(st.st_mode & 07777)));
  SHOW("size after write", size_of(sid2));
  SHOW("close set-id", close(sid2) | close(sid));
  int ro = open(at(dir, "a"), O_RDONLY);
  SHOW("write on O_RDONLY", write(ro, "z", 1));
  SHOW("close O_RDONLY", close(ro));

  /* creat, openat, __open_2, __openat_2 */
  int c = creat(at(dir, "b"), 0600);
  SHOW("creat write", write(c, "bbbb", 4));
  SHOW("close creat", close(c));
  int dfd = open(dir, O_RDONLY | O_DIRECTORY);
  int o2 = openat(dfd, "b", O_RDONLY);
  SHOW("openat read", n = read(o2, buf, 10));
  show_text("openat data", buf, n);
  close(o2);
  o2 = __open_2(at(dir, "b"), O_RDONLY);
  SHOW("__open_2 read", read(o2, buf, 10));
  close(o2);
  o2 = __openat_2(dfd, "b", O_RDWR);
  SHOW("__openat_2 pwrite", pwrite(o2, "B", 1, 0));
  close(o2);
  close(dfd);
  SHOW("open missing", open(at(dir, "missing"), O_RDONLY));

  /* stdio: fopen, fwrite, fread, fseek, freopen, fdopen, fclose */
  FILE *f = fopen(at(dir, "s"), "w+");
  SHOW("fwrite", fwrite("stdio text\n", 1, 11, f));
  SHOW("fflush", fflush(f));
  SHOW("fseek", fseek(f, 6, SEEK_SET));
  SHOW("fread", n = (ssize_t)fread(buf, 1, 10, f));
  show_text("fread data", buf, n);
  f = freopen(at(dir, "b"), "r", f);
  SHOW("freopen fread", n = (ssize_t)fread(buf, 1, 10, f));
  show_text("freopen data", buf, n);
  SHOW("fclose", fclose(f));
  int sfd = open(at(dir, "s"), O_RDWR);
  SHOW("write before fdopen", write(sfd, "S", 1));
  f = fdopen(sfd, "r");
  SHOW("fdopen fread", n = (ssize_t)fread(buf, 1, 20, f));
  show_text("fdopen data", buf, n);
  SHOW("fclose fdopen", fclose(f));
  SHOW("read after fclose", read(sfd, buf, 1));

  /* fork: the child writes through the inherited fd, the parent sees data and offset */
  SHOW("lseek 0", lseek(fd, 0, SEEK_SET));
  pid_t child = fork();
  if (child == 0) {
    write(fd, "child", 5);
    _exit(0);
  }
  int status;
  waitpid(child, &status, 0);
  SHOW("offset after child", lseek(fd, 0, SEEK_CUR));
  SHOW("pread child data", n = pread(fd, buf, 5, 0));
  show_text("child data", buf, n);

  /* vfork + exec: a shell writes through the inherited fd; the offset is shared with us */
  SHOW("lseek 5", lseek(fd, 5, SEEK_SET));
  char script[64];
  snprintf(script, sizeof script, "printf VFORK >&%d", fd);
  child = vfork();
  if (child == 0) {
    execl("/bin/sh", "sh", "-c", script, (char *)NULL);
    _exit(127);
  }
  waitpid(child, &status, 0);
  SHOW("vfork+exec status", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
  SHOW("offset after exec child", lseek(fd, 0, SEEK_CUR));
  SHOW("pread exec child data", n = pread(fd, buf, 10, 0));
  show_text("exec child data", buf, n);

  /* errno: a call that succeeds leaves it alone, even when it is the first I/O on the fd (the
   * shim's fstat, socket and fd passing happen then) */
  int fresh = open(at(dir, "a"), O_RDWR);
  errno = EDOM;
  n = read(fresh, buf, 4);
  printf("%-28s -> %zd errno %s\n", "first read keeps errno", n, strerrorname_np(errno));
  errno = ERANGE;
  n = pwrite(fresh, "e", 1, 1);
  printf("%-28s -> %zd errno %s\n", "pwrite keeps errno", n, strerrorname_np(errno));
  errno = EDOM;
  int closed = close(fresh);
  printf("%-28s -> %d errno %s\n", "close keeps errno", closed, strerrorname_np(errno));

  /* the 64-bit names and glibc's legacy stat entry points (binaries built before glibc 2.33) */
  int f64 = open64(at(dir, "v64"), O_CREAT | O_RDWR | O_TRUNC, 0644);
  SHOW("open64 write", write(f64, "sixty-four", 10));
  SHOW("pwrite64", pwrite64(f64, "SIX", 3, 0));
  SHOW("pread64", n = pread64(f64, buf, 10, 0));
  show_text("pread64 data", buf, n);
  SHOW("lseek64 SEEK_END", lseek64(f64, 0, SEEK_END));
  struct iovec one64 = {buf, 4};
  SHOW("preadv64", preadv64(f64, &one64, 1, 3));
  SHOW("preadv64v2 at -1", preadv64v2(f64, &one64, 1, -1, 0));
  struct iovec w64 = {"++", 2};
  SHOW("pwritev64", pwritev64(f64, &w64, 1, 10));
  SHOW("pwritev64v2 at -1", pwritev64v2(f64, &w64, 1, -1, 0));
  struct stat64 st64;
  SHOW("fstat64 size", (fstat64(f64, &st64), (long long)st64.st_size));
  SHOW("stat64 size", (stat64(at(dir, "v64"), &st64), (long long)st64.st_size));
  SHOW("lstat64 size", (lstat64(at(dir, "v64"), &st64), (long long)st64.st_size));
  SHOW("fstatat64 size",
       (fstatat64(AT_FDCWD, at(dir, "v64"), &st64, 0), (long long)st64.st_size));
  SHOW("ftruncate64", ftruncate64(f64, 6));
  SHOW("fcntl64 F_DUPFD", fcntl64(f64, F_DUPFD, 70) >= 70);
  typedef int (*xstat_fn)(int, const char *, struct stat *);
  typedef int (*fxstat_fn)(int, int, struct stat *);
  xstat_fn xstat = (xstat_fn)dlvsym(RTLD_DEFAULT, "__xstat", "GLIBC_2.2.5");
  fxstat_fn fxstat = (fxstat_fn)dlvsym(RTLD_DEFAULT, "__fxstat", "GLIBC_2.2.5");
  SHOW("__xstat size", xstat ? (xstat(1, at(dir, "v64"), &st), st.st_size) : -2);
  SHOW("__fxstat size", fxstat ? (fxstat(1, f64, &st), st.st_size) : -2);
  int c64 = creat64(at(dir, "c64"), 0644);
  SHOW("creat64 write", write(c64, "c", 1));
  SHOW("close creat64", close(c64));
  int o64 = openat64(AT_FDCWD, at(dir, "c64"), O_RDONLY);
  SHOW("openat64 read", read(o64, buf, 10));
  close(o64);
  FILE *s64 = fopen64(at(dir, "v64"), "r");
  SHOW("fopen64 fread", n = (ssize_t)fread(buf, 1, 20, s64));
  show_text("fopen64 data", buf, n);
  s64 = freopen64(at(dir, "c64"), "r", s64);
  SHOW("freopen64 fread", (ssize_t)fread(buf, 1, 20, s64));
  SHOW("fclose 64", fclose(s64));
  SHOW("close f64", close(f64));

  /* closefrom; fcloseall in a child (glibc's flushes and frees every stream but closes no fd) */
  int keep = open(at(dir, "cf"), O_CREAT | O_RDWR | O_TRUNC, 0644);
  SHOW("dup2 to 80", dup2(keep, 80));
  SHOW("read 80 (adopt)", read(80, buf, 1));
  SHOW("closefrom 80", (closefrom(80), 0));
  SHOW("read after closefrom", read(80, buf, 1));
  child = fork();
  if (child == 0) {
    FILE *old = fopen(at(dir, "cf"), "r+");
    int number = fileno(old);
    fputs("old", old);
    fflush(old);
    write(number, "!", 1); /* adopts the number for "cf" */
    int all = fcloseall();
    _exit(all == 0 && write(number, "+", 1) == 1 ? 0 : 1);
  }
  waitpid(child, &status, 0);
  SHOW("fcloseall child status", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
  SHOW("cf", n = pread(keep, buf, 10, 0));
  show_text("cf data", buf, n);
  close(keep);

  /* threads: four writers on one fd */
  int t = open(at(dir, "threads"), O_CREAT | O_RDWR | O_TRUNC, 0644);
  pthread_t threads[4];
  int args[4];
  for (int i = 0; i < 4; i++) {
    args[i] = t << 8 | i;
    pthread_create(&threads[i], NULL, thread_writer, &args[i]);
  }
  for (int i = 0; i < 4; i++) pthread_join(threads[i], NULL);
  SHOW("threads size", size_of(t));
  long long sum = 0;
  while ((n = read(t, buf, sizeof buf)) > 0) for (ssize_t i = 0; i < n; i++) sum += buf[i];
  SHOW("threads checksum", sum);
  SHOW("close threads", close(t));
  SHOW("close", close(fd));
  SHOW("close again", close(fd));
  return 0;
}
