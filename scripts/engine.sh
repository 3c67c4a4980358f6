#!/usr/bin/env bash
# The engine the shim builds and runs against: WasmEdge 0.17.1 with every shared library it
# loads, glibc and its dynamic loader included, unpacked from Debian forky's packages into a
# cache outside the repo. Nothing is installed on the machine: apt runs with a private state
# directory (its own sources, lists and no dpkg status), so no package of this machine moves.
# The shim and its tests are linked with this root's loader and libraries (build.rs), and
# `make bundle` ships the same files to nodes. Idempotent; prints the engine root.
set -euo pipefail

WASMEDGE_VERSION=0.17.1
CACHE=${CSW_CACHE:-/var/cache/containerd-shim-wasmedge}
ROOT="$CACHE/engine/wasmedge-$WASMEDGE_VERSION"
SUITE=forky
ENGINE_PKGS=(libwasmedge0 libwasmedge-dev wasmedge)
# Loaded by the shim beside the engine (youki's seccomp filters).
EXTRA_PKGS=(libseccomp2)
log() { echo "[engine] $*" >&2; }

if [ -f "$ROOT/packages.txt" ] && [ -e "$ROOT/link/libwasmedge.so" ] && [ -d "$ROOT/share/doc" ]; then echo "$ROOT"; exit 0; fi
command -v patchelf >/dev/null || { log "patchelf is missing (scripts/setup.sh installs it)"; exit 1; }

work="$ROOT.tmp.$$"
trap 'rm -rf "$work"' EXIT
rm -rf "$work"
mkdir -p "$work/apt/lists/partial" "$work/apt/cache/archives/partial" "$work/apt/sources" \
  "$work/debs" "$work/x"
cat > "$work/apt/sources/$SUITE.sources" <<SRC
Types: deb
URIs: http://deb.debian.org/debian
Suites: $SUITE
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
APT=(-o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$work/apt/sources"
  -o "Dir::State::Lists=$work/apt/lists" -o "Dir::Cache=$work/apt/cache"
  -o "Dir::State::status=/dev/null" -o "Dir::Etc::Preferences=/dev/null"
  -o "Dir::Etc::PreferencesParts=/dev/null" -o "APT::Sandbox::User=root")
log "reading Debian $SUITE's package lists (private apt state, nothing is installed)"
apt-get "${APT[@]}" -qq update

for p in "${ENGINE_PKGS[@]}"; do
  v=$(apt-cache "${APT[@]}" show --no-all-versions "$p" | awk '/^Version:/ { print $2 }')
  case "$v" in
    "$WASMEDGE_VERSION"-*) ;;
    *) log "Debian $SUITE has $p ${v:-nothing}, not $WASMEDGE_VERSION: update scripts/engine.sh"; exit 1 ;;
  esac
done
# The runtime closure: every package the engine's packages depend on (virtual names dropped).
mapfile -t pkgs < <(apt-cache "${APT[@]}" depends --recurse --no-recommends --no-suggests \
  --no-conflicts --no-breaks --no-replaces --no-enhances "${ENGINE_PKGS[@]}" "${EXTRA_PKGS[@]}" \
  | grep -v '^ ' | grep -v '^<' | sort -u)
log "downloading ${#pkgs[@]} packages: ${pkgs[*]}"
(cd "$work/debs" && apt-get "${APT[@]}" -qq download "${pkgs[@]}")
for d in "$work"/debs/*.deb; do dpkg-deb -x "$d" "$work/x"; done

mkdir -p "$work/root/lib" "$work/root/include" "$work/root/bin"
for dir in "$work/x/lib/x86_64-linux-gnu" "$work/x/usr/lib/x86_64-linux-gnu" "$work/x/lib64"; do
  [ -d "$dir" ] || continue
  find "$dir" -maxdepth 1 \( -name '*.so' -o -name '*.so.*' \) -exec cp -a {} "$work/root/lib/" \;
done
cp -a "$work/x/usr/include/wasmedge" "$work/root/include/"
# The link-time directory holds libwasmedge alone: cargo puts it on the LD_LIBRARY_PATH of
# rustc and build scripts, which must not pick up this root's glibc.
mkdir -p "$work/root/link"
ln -s ../lib/libwasmedge.so.0 "$work/root/link/libwasmedge.so"
# The CLI, for the comparisons of tests and bench: the same engine, through the same loader.
cp "$work/x/usr/bin/wasmedge" "$work/root/bin/wasmedge"
patchelf --set-interpreter "$ROOT/lib/ld-linux-x86-64.so.2" --force-rpath --set-rpath "$ROOT/lib" \
  "$work/root/bin/wasmedge"
# Their licences travel with the libraries (the bundle ships them).
for c in "$work"/x/usr/share/doc/*/copyright; do
  pkg=$(basename "$(dirname "$c")")
  mkdir -p "$work/root/share/doc/$pkg"
  cp "$c" "$work/root/share/doc/$pkg/"
done
for d in "$work"/debs/*.deb; do dpkg-deb -f "$d" Package Version | paste -sd' '; done \
  | sed 's/^Package: //; s/ Version: / /' > "$work/root/packages.txt"

rm -rf "$ROOT"
mkdir -p "$(dirname "$ROOT")"
mv "$work/root" "$ROOT"
"$ROOT/bin/wasmedge" --version | head -1 >&2
echo "$ROOT"
