#!/usr/bin/env bash
# Builds containerd, ctr and containerd-shim-runc-v2 of the pinned 2.3 LTS patch release from the Go module proxy into a
# cache outside the repo, once; later calls reuse it. Static (CGO off), so the same binaries
# run on a foreign distribution's root file system too. runc's shim comes from the same release:
# 2.3 writes its bootstrap parameters to a shim's stdin, which 1.7's runc shim takes for runtime
# options and fails on. Prints the bin dir. Nothing is put on
# PATH: the caller selects these binaries explicitly.
set -euo pipefail

CONTAINERD_VERSION=${CONTAINERD_VERSION:-2.3.7}
CACHE=${CSW_CACHE:-/var/cache/containerd-shim-wasmedge}
OUT="$CACHE/containerd/v$CONTAINERD_VERSION"

COMMANDS=(containerd ctr containerd-shim-runc-v2)
missing=()
for c in "${COMMANDS[@]}"; do [ -x "$OUT/$c" ] || missing+=("github.com/containerd/containerd/v2/cmd/$c"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "[containerd-build] building ${missing[*]##*/} v$CONTAINERD_VERSION into $OUT (a few minutes, once)" >&2
  mod=$(mktemp -d)
  trap 'rm -rf "$mod"' EXIT
  mkdir -p "$OUT"
  (
    cd "$mod"
    go mod init csw-containerd-build >/dev/null 2>&1
    GOFLAGS=-mod=mod go get "github.com/containerd/containerd/v2@v$CONTAINERD_VERSION" >/dev/null 2>&1
    ld="-s -w -X github.com/containerd/containerd/v2/version.Version=v$CONTAINERD_VERSION"
    CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -tags "no_btrfs no_devmapper no_zfs" \
      -ldflags "$ld" -o "$OUT.tmp/" \
      "${missing[@]}"
  )
  for c in "${missing[@]}"; do mv "$OUT.tmp/${c##*/}" "$OUT/"; done
  rmdir "$OUT.tmp"
fi
echo "$OUT"
