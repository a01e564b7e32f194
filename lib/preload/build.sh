#!/usr/bin/env bash
# Builds lib/preload/build/libskyfs_preload.so, the LD_PRELOAD shim (see src/intercept/README.md).
# scripts/setup.sh runs this when the output is missing or a file under lib/preload/ is newer.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$here/build"
mkdir -p "$out"
gcc -O2 -g -fPIC -shared -fvisibility=hidden -Wall -Wextra -Werror -pthread \
  -Wl,--version-script="$here/skyfs_preload.map" -Wl,-z,defs \
  -o "$out/libskyfs_preload.so.tmp" "$here/skyfs_preload.c" -ldl
mv "$out/libskyfs_preload.so.tmp" "$out/libskyfs_preload.so"
