#!/usr/bin/env bash
# Idempotent set-up of a Debian 12 machine for skyfs: Deno, Debian packages, /dev/fuse, native builds.
#
# Usage: scripts/setup.sh [--quiet] [--build-only] [--force-build]
#   --quiet        print nothing when everything is already in place (actions are still printed)
#   --build-only   only (re)build the native parts under lib/
#   --force-build  rebuild every lib/*/build.sh even when its stamp says it is up to date
#
# `deno task mount` and `deno task bench` run this on every call, so the path where nothing is
# missing must stay well under a second: it only reads dpkg's database and file timestamps.
#
# Native parts: every lib/<name>/build.sh is run from lib/<name>/ when no stamp exists yet, when a
# file under lib/<name>/ is newer than the stamp, or when a file the last build produced is gone.
# Stamps live in .build/lib-<name>.stamp (outside git) and list the files the build produced.
set -euo pipefail

DENO_VERSION="2.9.6"
APT_PACKAGES=(fuse3 libfuse3-dev liburing-dev fio bindfs mergerfs attr acl sqlite3 rsync git make
  etcd-server etcd-client e2fsprogs prometheus chromium
  nfs-ganesha nfs-ganesha-vfs libnfs-utils)

quiet=0
build_only=0
force_build=0
for arg in "$@"; do
  case "$arg" in
    --quiet) quiet=1 ;;
    --build-only) build_only=1 ;;
    --force-build) force_build=1 ;;
    -h | --help)
      sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "setup: unknown option \"$arg\"; use --quiet, --build-only or --force-build" >&2
      exit 2
      ;;
  esac
done

repo_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
actions=0

# say prints one line per action taken; every action is announced, even with --quiet.
say() {
  echo "setup: $*"
  actions=$((actions + 1))
}

# as_root runs a command as root: directly, through password-less sudo, or not at all (returns 1).
as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo -n "$@"
  else
    return 1
  fi
}

can_be_root() {
  [ "$(id -u)" -eq 0 ] || { command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; }
}

ensure_deno() {
  local have=""
  if command -v deno >/dev/null 2>&1; then
    have="$(deno --version 2>/dev/null | head -n1 | awk '{print $2}')"
  fi
  if [ "$have" = "$DENO_VERSION" ]; then
    return 0
  fi
  if [ -n "$have" ]; then
    say "deno $have is on PATH, skyfs is pinned to $DENO_VERSION: npm install -g deno@$DENO_VERSION"
  else
    say "installing deno $DENO_VERSION: npm install -g deno@$DENO_VERSION"
  fi
  if ! command -v npm >/dev/null 2>&1; then
    echo "setup: npm is not on PATH; install Node.js and npm, then run: npm install -g deno@$DENO_VERSION" >&2
    exit 1
  fi
  if ! npm install -g --no-fund --no-audit "deno@$DENO_VERSION" >/dev/null 2>&1; then
    if can_be_root && [ "$(id -u)" -ne 0 ]; then
      sudo -n npm install -g --no-fund --no-audit "deno@$DENO_VERSION" >/dev/null
    else
      echo "setup: \"npm install -g deno@$DENO_VERSION\" failed; run it by hand to see why" >&2
      exit 1
    fi
  fi
  hash -r
  if ! command -v deno >/dev/null 2>&1; then
    echo "setup: deno was installed but is not on PATH; add \"$(npm prefix -g)/bin\" to PATH" >&2
    exit 1
  fi
}

ensure_packages() {
  local missing=() pkg status
  # One dpkg-query for all packages: a missing package prints nothing on stdout for its line.
  declare -A installed=()
  while read -r pkg status; do
    [ "$status" = "ii" ] && installed["$pkg"]=1
  done < <(dpkg-query -W -f='${Package} ${db:Status-Abbrev}\n' "${APT_PACKAGES[@]}" 2>/dev/null || true)
  for pkg in "${APT_PACKAGES[@]}"; do
    [ -n "${installed[$pkg]:-}" ] || missing+=("$pkg")
  done
  [ "${#missing[@]}" -eq 0 ] && return 0

  local cmd="apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${missing[*]}"
  if ! can_be_root; then
    echo "setup: missing Debian packages: ${missing[*]}" >&2
    echo "setup: run as root: $cmd" >&2
    exit 1
  fi
  local log
  log="$(mktemp "${TMPDIR:-/tmp}/skyfs-setup-apt-XXXXXX.log")"
  say "apt-get update"
  if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >"$log" 2>&1; then
    cat "$log" >&2
    echo "setup: apt-get update failed; run by hand to see why: $cmd" >&2
    exit 1
  fi
  say "apt-get install ${missing[*]}"
  # Packages that ship a daemon (etcd-server) would start it; the tests start their own instances,
  # so service starts are refused for the duration of the install (policy-rc.d exit code 101).
  local policy=/usr/sbin/policy-rc.d placed_policy=0
  if [ ! -e "$policy" ]; then
    as_root sh -c "printf '#!/bin/sh\nexit 101\n' > $policy && chmod 755 $policy" && placed_policy=1
  fi
  local rc=0
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >"$log" 2>&1 || rc=$?
  [ "$placed_policy" -eq 1 ] && as_root rm -f "$policy"
  if [ "$rc" -ne 0 ]; then
    cat "$log" >&2
    echo "setup: apt-get install failed (exit $rc); run by hand to see why: $cmd" >&2
    exit 1
  fi
  rm -f "$log"
}

ensure_dev_fuse() {
  [ -c /dev/fuse ] && return 0
  if ! can_be_root; then
    echo "setup: /dev/fuse is missing; as root run: modprobe fuse || mknod -m 666 /dev/fuse c 10 229" >&2
    exit 1
  fi
  say "loading the fuse kernel module: modprobe fuse"
  as_root modprobe fuse 2>/dev/null || true
  if [ ! -c /dev/fuse ]; then
    say "creating /dev/fuse: mknod -m 666 /dev/fuse c 10 229"
    as_root mknod -m 666 /dev/fuse c 10 229 || {
      echo "setup: cannot create /dev/fuse; the kernel needs FUSE (CONFIG_FUSE_FS) and a container needs --device /dev/fuse" >&2
      exit 1
    }
  fi
}

# build_is_stale NAME STAMP: true when lib/NAME must be rebuilt.
build_is_stale() {
  local name="$1" stamp="$2" produced
  [ "$force_build" -eq 1 ] && return 0
  [ -f "$stamp" ] || return 0
  if [ -n "$(find "lib/$name" -newer "$stamp" -type f -print -quit 2>/dev/null)" ]; then
    return 0
  fi
  while IFS= read -r produced; do
    [ -z "$produced" ] && continue
    [ -e "$produced" ] || return 0
  done <"$stamp"
  return 1
}

build_native() {
  local script name stamp marker
  shopt -s nullglob
  for script in lib/*/build.sh; do
    name="$(basename "$(dirname "$script")")"
    stamp=".build/lib-$name.stamp"
    build_is_stale "$name" "$stamp" || continue
    say "building lib/$name: bash $script"
    mkdir -p .build
    marker="$(mktemp .build/.start-XXXXXX)"
    if ! (cd "lib/$name" && bash ./build.sh); then
      rm -f "$marker"
      echo "setup: lib/$name/build.sh failed; fix it and run: deno task build" >&2
      exit 1
    fi
    # The stamp lists what the build produced, so a deleted output triggers a rebuild.
    find "lib/$name" -newer "$marker" -type f ! -name '*.stamp' >"$stamp.tmp" 2>/dev/null || true
    mv "$stamp.tmp" "$stamp"
    rm -f "$marker"
  done
  shopt -u nullglob
}

cd "$repo_dir"
if [ "$build_only" -eq 0 ]; then
  ensure_deno
  ensure_packages
  ensure_dev_fuse
fi
build_native

if [ "$actions" -eq 0 ] && [ "$quiet" -eq 0 ]; then
  echo "setup: everything is in place (deno $DENO_VERSION, Debian packages, /dev/fuse, lib/*/build.sh)"
fi
