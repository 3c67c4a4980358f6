#!/usr/bin/env bash
# The images of the e2e cluster, as OCI archives for `ctr image import` (no registry here),
# built with the project's wasm-oci tool into OUT_DIR:
#   localhost/pause:3.10 (sandbox image), localhost/busybox:host (runc baseline),
#   localhost/hello:v1, localhost/edge-function:v1 (wasm rootfs images),
#   localhost/containerd-shim-wasmedge-installer:dev (the node-installer DaemonSet),
#   localhost/wasm-weight-controller:dev (the canary controller's Deployment).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?usage: k8s-images.sh OUT_DIR}
mkdir -p "$OUT"
W=target/release/wasm-oci
$W rootfs --name localhost/pause:3.10 --out "$OUT/pause.tar" --file target/images/pause:/pause --entrypoint /pause
$W rootfs --name localhost/busybox:host --out "$OUT/busybox.tar" --file /bin/busybox:/bin/busybox --entrypoint /bin/busybox
$W rootfs --name localhost/hello:v1 --out "$OUT/hello.tar" --module target/wasm/hello.wasm
$W rootfs --name localhost/edge-function:v1 --out "$OUT/edge-function.tar" --module target/wasm/edge-function.wasm
# The installer image: the node bundle (make bundle) at the place it has on nodes, so its config
# tool runs in the image as on a node, and the installer scripts.
BUNDLE=target/bundle/containerd-shim-wasmedge
[ -x "$BUNDLE/bin/containerd-shim-wasmedge-v1" ] || { echo "k8s-images.sh: run make bundle first" >&2; exit 1; }
bundle_files=()
while IFS= read -r f; do
  bundle_files+=(--file "$BUNDLE/$f:/opt/containerd-shim-wasmedge/$f:$(stat -c %a "$BUNDLE/$f")")
done < <(cd "$BUNDLE" && find . -type f | sed 's|^\./||' | sort)
$W rootfs --name localhost/containerd-shim-wasmedge-installer:dev --out "$OUT/installer.tar" \
  --file /bin/busybox:/bin/busybox \
  --file scripts/node-installer.sh:/installer/node-installer.sh:0755 \
  "${bundle_files[@]}" \
  --entrypoint /bin/busybox --entrypoint sh --entrypoint /installer/node-installer.sh
# The libraries a binary loads, as the engine's loader resolves them (the binaries are linked
# against the engine root, build.rs), each at its own path: the binary's loader path holds.
shared_libs() { # BINARY -> --file arguments
  local lib engine_loader
  engine_loader=$(readelf -l "$1" | sed -n 's/.*Requesting program interpreter: \(.*\)]/\1/p')
  for lib in $("$engine_loader" --list "$1" | awk '$2 == "=>" { print $3 } $1 ~ /^\// { print $1 }'); do
    echo "--file $lib:$lib"
  done
}
# The controller: its binary and the libraries it loads, nothing else (it runs as uid 65532
# on a read-only root filesystem; the in-cluster config comes from the ServiceAccount).
# shellcheck disable=SC2207
libs=($(shared_libs target/release/wasm-weight-controller))
$W rootfs --name localhost/wasm-weight-controller:dev --out "$OUT/wasm-weight-controller.tar" \
  --file target/release/wasm-weight-controller:/usr/local/bin/wasm-weight-controller:0755 \
  "${libs[@]}" \
  --entrypoint /usr/local/bin/wasm-weight-controller
