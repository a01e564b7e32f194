// Metadata benchmark worker: times create, stat, open+close, readdir, rename and unlink of many
// small files with W threads, so the figures measure the file system and not the harness's runtime.
//
// Usage: meta_worker DIR FILES WORKERS flat|tree [--size BYTES] [--drop-caches] [--pause]
//   flat: every file in DIR/flat (one directory shared by all workers)
//   tree: files spread round-robin over TREE_FANOUT^2 leaf directories DIR/tree/dA/dB; its mkdir
//   and rmdir phases make and remove those leaves and FILES - TREE_FANOUT^2 more empty directories
//   DIR/tree/dA/xK (A = K % TREE_FANOUT), so that they time as many operations as the other phases
//   (64 operations took 3-60 ms: one stall of a few ms in the file system moved the rate 2-10x)
// Prints one JSON object per phase on stdout: {"phase":"create","ops":N,"seconds":S}.
// "stat-cold" runs only with --drop-caches (needs root): the page, dentry and inode caches are
// dropped first (not timed), so each stat has to reach the file system.
// --pause: before each phase, print {"next":"PHASE"} and wait for a line on stdin (untimed), so
// the harness can read the metadata store's counters between phases.
// Exits 1 with a one-line message quoting the path on the first failing call.
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define TREE_FANOUT 8
#define MAX_WORKERS 64
#define MAX_FILE_BYTES (1 << 20)

static const char *base_dir;
static long file_count;
static int worker_count;
static int tree_layout;
static long file_bytes;
static int drop_caches;
static int pause_between;
static pthread_barrier_t barrier;
static double phase_start;
static char *file_data;

static double now_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *what, const char *path) {
  fprintf(stderr, "meta_worker: %s \"%s\": %s\n", what, path, strerror(errno));
  exit(1);
}

static int leaf_count(void) { return tree_layout ? TREE_FANOUT * TREE_FANOUT : 1; }

// The tree's empty directories beside the leaves: the mkdir and rmdir phases time leaf_count() +
// extra_dir_count() operations, as many as there are files (at least the leaves).
static long extra_dir_count(void) {
  return tree_layout && file_count > leaf_count() ? file_count - leaf_count() : 0;
}

static void extra_dir_path(char *out, size_t size, long k) {
  snprintf(out, size, "%s/tree/d%ld/x%ld", base_dir, k % TREE_FANOUT, k);
}

static void leaf_path(char *out, size_t size, int leaf) {
  if (tree_layout) {
    snprintf(out, size, "%s/tree/d%d/d%d", base_dir, leaf / TREE_FANOUT, leaf % TREE_FANOUT);
  } else {
    snprintf(out, size, "%s/flat", base_dir);
  }
}

// File i lives in leaf i % leaves; after the rename phase it is named r<i> (in the next leaf for
// the tree layout, so rename crosses directories there).
static void file_path(char *out, size_t size, long i, int renamed) {
  char dir[3072];  // base_dir is at most 2048 bytes (checked in main), so names always fit
  int leaf = (int)(i % leaf_count());
  if (renamed && tree_layout) leaf = (leaf + 1) % leaf_count();
  leaf_path(dir, sizeof dir, leaf);
  snprintf(out, size, "%s/%c%ld", dir, renamed ? 'r' : 'f', i);
}

static void do_drop_caches(void) {
  sync();
  int fd = open("/proc/sys/vm/drop_caches", O_WRONLY);
  if (fd < 0 || write(fd, "3\n", 2) != 2) die("write", "/proc/sys/vm/drop_caches");
  close(fd);
}

// --pause: tells the harness which phase comes next and waits until it says go (one line).
static void wait_for_go(const char *phase_name) {
  char line[64];
  printf("{\"next\":\"%s\"}\n", phase_name);
  fflush(stdout);
  if (!fgets(line, sizeof line, stdin)) {
    fprintf(stderr, "meta_worker: stdin closed before phase \"%s\" (--pause)\n", phase_name);
    exit(1);
  }
}

enum phase { MKDIR, CREATE, STAT, STAT_COLD, OPEN_CLOSE, READDIR, RENAME, UNLINK, RMDIR };

// Runs one phase's share of work for worker w; returns the number of operations done.
static long run_phase(enum phase phase, int w) {
  char path[4096], other[4096];
  long ops = 0;
  struct stat st;
  if (phase == MKDIR || phase == RMDIR || phase == READDIR) {
    for (int leaf = w; leaf < leaf_count(); leaf += worker_count) {
      leaf_path(path, sizeof path, leaf);
      if (phase == MKDIR) {
        if (mkdir(path, 0755) != 0) die("mkdir", path);
      } else if (phase == RMDIR) {
        if (rmdir(path) != 0) die("rmdir", path);
      } else {
        DIR *dir = opendir(path);
        if (!dir) die("opendir", path);
        errno = 0;
        while (readdir(dir)) ops++;
        if (errno) die("readdir", path);
        closedir(dir);
        continue;
      }
      ops++;
    }
    if (phase == MKDIR || phase == RMDIR) {
      for (long k = w; k < extra_dir_count(); k += worker_count) {
        extra_dir_path(path, sizeof path, k);
        if (phase == MKDIR) {
          if (mkdir(path, 0755) != 0) die("mkdir", path);
        } else if (rmdir(path) != 0) {
          die("rmdir", path);
        }
        ops++;
      }
    }
    // flat: every worker reads the one shared directory (a single leaf would give workers 1..W-1
    // nothing to do).
    if (phase == READDIR && !tree_layout && w != 0) {
      leaf_path(path, sizeof path, 0);
      DIR *dir = opendir(path);
      if (!dir) die("opendir", path);
      while (readdir(dir)) ops++;
      closedir(dir);
    }
    return ops;
  }
  for (long i = w; i < file_count; i += worker_count) {
    switch (phase) {
      case CREATE: {
        file_path(path, sizeof path, i, 0);
        int fd = open(path, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0644);
        if (fd < 0) die("create", path);
        if (file_bytes > 0 && write(fd, file_data, file_bytes) != file_bytes) die("write", path);
        if (close(fd) != 0) die("close", path);
        break;
      }
      case STAT:
      case STAT_COLD:
        file_path(path, sizeof path, i, 0);
        if (stat(path, &st) != 0) die("stat", path);
        if (st.st_size != file_bytes) {
          errno = EIO;
          die("stat returned a wrong size for", path);
        }
        break;
      case OPEN_CLOSE: {
        file_path(path, sizeof path, i, 0);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) die("open", path);
        if (close(fd) != 0) die("close", path);
        break;
      }
      case RENAME:
        file_path(path, sizeof path, i, 0);
        file_path(other, sizeof other, i, 1);
        if (rename(path, other) != 0) die("rename", path);
        break;
      case UNLINK:
        file_path(path, sizeof path, i, 1);
        if (unlink(path) != 0) die("unlink", path);
        break;
      default:
        break;
    }
    ops++;
  }
  return ops;
}

static const char *phase_names[] = {"mkdir",   "create", "stat",   "stat-cold", "open-close",
                                    "readdir", "rename", "unlink", "rmdir"};
static long phase_ops[MAX_WORKERS];

static void *worker_main(void *arg) {
  int w = (int)(long)arg;
  enum phase phases[] = {MKDIR, CREATE, STAT, STAT_COLD, OPEN_CLOSE, READDIR, RENAME, UNLINK, RMDIR};
  for (size_t p = 0; p < sizeof phases / sizeof phases[0]; p++) {
    enum phase phase = phases[p];
    if ((phase == MKDIR || phase == RMDIR) && !tree_layout) continue;
    if (phase == STAT_COLD && !drop_caches) continue;
    if (w == 0 && phase == STAT_COLD) do_drop_caches();
    if (w == 0 && pause_between) wait_for_go(phase_names[phase]);
    pthread_barrier_wait(&barrier);
    if (w == 0) phase_start = now_seconds();
    pthread_barrier_wait(&barrier);
    phase_ops[w] = run_phase(phase, w);
    pthread_barrier_wait(&barrier);
    if (w == 0) {
      double seconds = now_seconds() - phase_start;
      long ops = 0;
      for (int i = 0; i < worker_count; i++) ops += phase_ops[i];
      printf("{\"phase\":\"%s\",\"ops\":%ld,\"seconds\":%.6f}\n", phase_names[phase], ops, seconds);
      fflush(stdout);
    }
  }
  return NULL;
}

static void make_dir(const char *path) {
  if (mkdir(path, 0755) != 0 && errno != EEXIST) die("mkdir", path);
}

int main(int argc, char **argv) {
  if (argc < 5) {
    fprintf(stderr,
            "usage: meta_worker DIR FILES WORKERS flat|tree [--size BYTES] [--drop-caches] "
            "[--pause]\n");
    return 2;
  }
  base_dir = argv[1];
  if (strlen(base_dir) > 2048) {
    fprintf(stderr, "meta_worker: DIR is longer than 2048 bytes\n");
    return 2;
  }
  file_count = atol(argv[2]);
  worker_count = atoi(argv[3]);
  tree_layout = strcmp(argv[4], "tree") == 0;
  if (!tree_layout && strcmp(argv[4], "flat") != 0) {
    fprintf(stderr, "meta_worker: layout \"%s\" is neither flat nor tree\n", argv[4]);
    return 2;
  }
  for (int i = 5; i < argc; i++) {
    if (strcmp(argv[i], "--size") == 0 && i + 1 < argc) {
      file_bytes = atol(argv[++i]);
    } else if (strcmp(argv[i], "--drop-caches") == 0) {
      drop_caches = 1;
    } else if (strcmp(argv[i], "--pause") == 0) {
      pause_between = 1;
    } else {
      fprintf(stderr, "meta_worker: unknown argument \"%s\"\n", argv[i]);
      return 2;
    }
  }
  if (file_count < 1 || worker_count < 1 || worker_count > MAX_WORKERS || file_bytes < 0 ||
      file_bytes > MAX_FILE_BYTES) {
    fprintf(stderr, "meta_worker: need FILES >= 1, 1 <= WORKERS <= %d, 0 <= BYTES <= %d\n",
            MAX_WORKERS, MAX_FILE_BYTES);
    return 2;
  }
  file_data = malloc(file_bytes > 0 ? file_bytes : 1);
  memset(file_data, 'x', file_bytes > 0 ? file_bytes : 1);

  char path[4096];
  if (tree_layout) {
    snprintf(path, sizeof path, "%s/tree", base_dir);
    make_dir(path);
    for (int a = 0; a < TREE_FANOUT; a++) {
      snprintf(path, sizeof path, "%s/tree/d%d", base_dir, a);
      make_dir(path);
    }
  } else {
    snprintf(path, sizeof path, "%s/flat", base_dir);
    make_dir(path);
  }

  pthread_barrier_init(&barrier, NULL, worker_count);
  pthread_t threads[MAX_WORKERS];
  for (int w = 0; w < worker_count; w++) {
    if (pthread_create(&threads[w], NULL, worker_main, (void *)(long)w) != 0) {
      fprintf(stderr, "meta_worker: pthread_create failed\n");
      return 1;
    }
  }
  for (int w = 0; w < worker_count; w++) pthread_join(threads[w], NULL);

  if (tree_layout) {
    for (int a = 0; a < TREE_FANOUT; a++) {
      snprintf(path, sizeof path, "%s/tree/d%d", base_dir, a);
      if (rmdir(path) != 0) die("rmdir", path);
    }
    snprintf(path, sizeof path, "%s/tree", base_dir);
  } else {
    snprintf(path, sizeof path, "%s/flat", base_dir);
  }
  if (rmdir(path) != 0) die("rmdir", path);
  return 0;
}
