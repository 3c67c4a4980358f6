#!/usr/bin/env bash
# A foreign node's root file system for the bundle test (tests/foreign_node.rs): Debian 11
# bullseye (glibc 2.31), minbase, made with debootstrap from Debian packages once and cached as
# a tarball outside the repo. Prints the tarball's path.
set -euo pipefail
SUITE=${FOREIGN_SUITE:-bullseye}
CACHE=${CSW_CACHE:-/var/cache/containerd-shim-wasmedge}
TARBALL="$CACHE/rootfs/$SUITE.tar"
if [ ! -f "$TARBALL" ]; then
  command -v debootstrap >/dev/null || { echo "[foreign-rootfs] debootstrap is missing (scripts/setup.sh installs it)" >&2; exit 1; }
  mkdir -p "$CACHE/rootfs"
  work=$(mktemp -d "$CACHE/rootfs/$SUITE.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  echo "[foreign-rootfs] debootstrap $SUITE (minbase) into $work (a few minutes, once)" >&2
  debootstrap --variant=minbase "$SUITE" "$work/root" http://deb.debian.org/debian >"$work/log" 2>&1 \
    || { tail -20 "$work/log" >&2; exit 1; }
  tar -C "$work/root" -cf "$TARBALL.tmp" .
  mv "$TARBALL.tmp" "$TARBALL"
fi
echo "$TARBALL"
