#!/usr/bin/env bash
# Builds lib/uring/build/libskyfs_uring.so (io_uring batch layer for src/io/uring.ts) and
# lib/uring/build/deny_io_uring (test launcher that makes io_uring_setup fail with EPERM).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$here/build"
mkdir -p "$out"
if [ ! -e /usr/include/liburing.h ]; then
  echo "lib/uring/build.sh: /usr/include/liburing.h missing: apt-get install liburing-dev" >&2
  exit 1
fi
gcc -O2 -g -fPIC -shared -fvisibility=hidden -Wall -Wextra -Werror \
  -o "$out/libskyfs_uring.so.tmp" "$here/skyfs_uring.c" -luring
mv "$out/libskyfs_uring.so.tmp" "$out/libskyfs_uring.so"
gcc -O2 -Wall -Wextra -Werror -o "$out/deny_io_uring.tmp" "$here/deny_io_uring.c"
mv "$out/deny_io_uring.tmp" "$out/deny_io_uring"
