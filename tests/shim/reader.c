/* Reads a file with read(2) and prints its length and a checksum: built static and setuid by
 * shim_test.ts, where the loader ignores LD_PRELOAD and the file must come through FUSE. */
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

int main(int argc, char **argv) {
  if (argc != 2) return 2;
  int fd = open(argv[1], O_RDONLY);
  if (fd < 0) return perror("open"), 1;
  static unsigned char buf[65536];
  unsigned long long total = 0, sum = 0;
  ssize_t n;
  while ((n = read(fd, buf, sizeof buf)) > 0) {
    for (ssize_t i = 0; i < n; i++) sum = sum * 31 + buf[i];
    total += (unsigned long long)n;
  }
  printf("%llu %llx\n", total, sum);
  return n < 0;
}
