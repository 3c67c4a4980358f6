#!/usr/bin/env bash
# make bundle: the node bundle, one directory (target/bundle/containerd-shim-wasmedge) and its
# tarball, with the shim, the config tool and every shared library they load, glibc's dynamic
# loader included. The binaries' ELF interpreter and RPATH point at the bundle's place on a node,
# /opt/containerd-shim-wasmedge, so they load only the bundle's libraries whatever the node's
# distribution and libc. scripts/install.sh (make install, the node-installer image) installs it.
set -euo pipefail
cd "$(dirname "$0")/.."

NODE_DIR=/opt/containerd-shim-wasmedge
NAME=containerd-shim-wasmedge
OUT=target/bundle
BINARIES=(containerd-shim-wasmedge-v1 containerd-wasmedge-config)
# How each binary is asked to start and exit at once (the check below).
declare -A SMOKE=([containerd-shim-wasmedge-v1]=-v [containerd-wasmedge-config]=--help)
ENGINE=$(bash scripts/engine.sh)
LOADER="$ENGINE/lib/ld-linux-x86-64.so.2"
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
log() { echo "[bundle] $*" >&2; }

stage="$OUT/$NAME.tmp.$$"
trap 'rm -rf "$stage"' EXIT
rm -rf "$stage"
mkdir -p "$stage/bin" "$stage/lib" "$stage/config/policies" "$stage/share"

# The libraries each binary loads, as the engine's loader resolves them (the binaries are
# linked against the engine root, build.rs): all must come from there.
for bin in "${BINARIES[@]}"; do
  "$LOADER" --list "target/release/$bin" | awk '$2 == "=>" { print $3 } $1 ~ /^\// { print $1 }'
done | sort -u | while read -r lib; do
  case "$lib" in
    "$ENGINE"/lib/*) cp -L "$lib" "$stage/lib/$(basename "$lib")" ;;
    *) log "$lib is not from the engine root $ENGINE"; exit 1 ;;
  esac
done
for bin in "${BINARIES[@]}"; do
  cp "target/release/$bin" "$stage/bin/$bin"
  patchelf --set-interpreter "$NODE_DIR/lib/ld-linux-x86-64.so.2" --force-rpath \
    --set-rpath "$NODE_DIR/lib" "$stage/bin/$bin"
  # Runs through the bundle's own loader and libraries, as it will on a node.
  "$stage/lib/ld-linux-x86-64.so.2" --library-path "$stage/lib" "$stage/bin/$bin" "${SMOKE[$bin]}" >/dev/null \
    || { log "$bin does not start from the bundle"; exit 1; }
done
cp -r "$ENGINE/share/doc" "$stage/share/doc"
cp runtime-config/wasmedge-runtime.toml runtime-config/node-config.toml "$stage/config/"
cp runtime-config/policies/*.yaml "$stage/config/policies/"
cp scripts/install.sh "$stage/install.sh"
{
  echo "containerd-shim-wasmedge $VERSION ($(git rev-parse --short HEAD 2>/dev/null || echo unknown))"
  echo "installs at $NODE_DIR (binaries linked to $NODE_DIR/lib)"
  echo "engine and libraries from Debian packages:"
  sed 's/^/  /' "$ENGINE/packages.txt"
} > "$stage/BUNDLE.txt"

rm -rf "${OUT:?}/$NAME"
mv "$stage" "$OUT/$NAME"
tarball="$OUT/$NAME-$VERSION-x86_64-linux.tar.gz"
tar -C "$OUT" -czf "$tarball.tmp" "$NAME"
mv "$tarball.tmp" "$tarball"
log "$OUT/$NAME: $(du -sh "$OUT/$NAME" | cut -f1) in $(find "$OUT/$NAME" -type f | wc -l) files; $tarball: $(du -h "$tarball" | cut -f1)"
