/* A malloc that reads a file on first use (as jemalloc reads its config): preloaded before
 * libskyfs_preload.so, it calls into the shim while the shim may be initialising, so a shim that
 * allocated during its own initialisation would recurse or deadlock. Bump allocator, no free. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static _Alignas(64) char heap[256 << 20];
static size_t used;
static int configured;

static void configure(void) {
  configured = 1;
  const char *path = getenv("MALLOC_HOOK_FILE");
  if (!path) return;
  char buf[64];
  int fd = open(path, O_RDONLY);
  if (fd < 0) return;
  ssize_t n = read(fd, buf, sizeof buf);
  close(fd);
  if (n < 0) abort();
}

static void *take(size_t n, size_t align) {
  if (!configured) configure();
  size_t at;
  for (;;) {
    size_t old = __atomic_load_n(&used, __ATOMIC_RELAXED);
    at = (old + sizeof(size_t) + align - 1) & ~(align - 1);
    if (at + n > sizeof heap) return NULL;
    if (__atomic_compare_exchange_n(&used, &old, at + n, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) break;
  }
  ((size_t *)(heap + at))[-1] = n;
  return heap + at;
}

void *malloc(size_t n) { return take(n, 16); }
void free(void *p) { (void)p; }
void *calloc(size_t a, size_t b) { return take(a * b, 16); } /* the heap starts zeroed */
void *realloc(void *p, size_t n) {
  void *q = take(n, 16);
  if (p && q) {
    size_t old = ((size_t *)p)[-1];
    memcpy(q, p, old < n ? old : n);
  }
  return q;
}
void *memalign(size_t align, size_t n) { return take(n, align < 16 ? 16 : align); }
void *aligned_alloc(size_t align, size_t n) { return memalign(align, n); }
int posix_memalign(void **out, size_t align, size_t n) {
  *out = memalign(align, n);
  return *out ? 0 : 12;
}
void *valloc(size_t n) { return memalign(4096, n); }
void *pvalloc(size_t n) { return memalign(4096, (n + 4095) & ~(size_t)4095); }
size_t malloc_usable_size(void *p) { return p ? ((size_t *)p)[-1] : 0; }
