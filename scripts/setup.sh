#!/usr/bin/env bash
# Idempotent machine setup for building, demoing and testing the shim on Debian 12.
# containerd 1.7 comes from Debian trixie, pinned low so that nothing else on the machine is
# upgraded from trixie. The engine, WasmEdge 0.17.1 with its libraries, is unpacked into a
# cache by scripts/engine.sh without installing anything; containerd 2.3 is built into a cache
# by scripts/containerd-build.sh.
set -euo pipefail

need_root() { [ "$(id -u)" = 0 ] || { echo "setup.sh must run as root (it installs packages)" >&2; exit 1; }; }
log() { echo "[setup] $*"; }

have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

TRIXIE_PKGS=(containerd runc)
# iptables (kube-proxy) and containernetworking-plugins (bridge CNI): the e2e cluster (make e2e).
# patchelf: make bundle; debootstrap: the foreign node's root file system (tests/foreign_node.rs);
# qemu-system-x86: the cgroup v2 guest (make test-cgroup2) where KVM has hardware virtualization.
BOOKWORM_PKGS=(libclang-dev protobuf-compiler libseccomp-dev pkg-config busybox-static iproute2 wrk jq curl ca-certificates iptables containernetworking-plugins patchelf debootstrap qemu-system-x86)

missing=()
for p in "${TRIXIE_PKGS[@]}" "${BOOKWORM_PKGS[@]}"; do have_pkg "$p" || missing+=("$p"); done

if [ ${#missing[@]} -gt 0 ]; then
  need_root
  if [ ! -f /etc/apt/sources.list.d/trixie.sources ]; then
    log "adding Debian trixie source (pinned at priority 100)"
    cat > /etc/apt/sources.list.d/trixie.sources <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    cat > /etc/apt/preferences.d/trixie-low <<'PIN'
Package: *
Pin: release n=trixie
Pin-Priority: 100
PIN
  fi
  log "apt-get update"
  apt-get update -qq
  export DEBIAN_FRONTEND=noninteractive
  # --no-install-recommends: runc recommends criu, which would replace the system python3.
  log "installing from trixie: ${TRIXIE_PKGS[*]}"
  apt-get install -y -qq --no-install-recommends -t trixie "${TRIXIE_PKGS[@]}" >/dev/null
  log "installing from bookworm: ${BOOKWORM_PKGS[*]}"
  apt-get install -y -qq --no-install-recommends "${BOOKWORM_PKGS[@]}" >/dev/null
else
  log "apt packages present"
fi

ENGINE=$(bash "$(dirname "$0")/engine.sh")

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip1; then
  log "adding rust target wasm32-wasip1"
  rustup target add wasm32-wasip1
fi

# The system containerd service is not used by the project (tests start their own);
# make sure the package did not leave one running that could confuse an operator.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet containerd 2>/dev/null; then
  log "note: a system containerd is running; the project never touches it"
fi

log "engine: $("$ENGINE/bin/wasmedge" --version | head -1) in $ENGINE; containerd $(containerd --version | awk '{print $3}'), runc $(runc --version | head -1 | awk '{print $3}')"
