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
# The installer image mirrors the repo's layout under /installer, so install.sh runs unchanged.
shared_libs() { # BINARY -> --file arguments for the shared libraries it loads
  local lib
  for lib in $(ldd "$1" | awk '$3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'); do
    echo "--file $lib:$lib"
  done
}
# shellcheck disable=SC2207
libs=($(shared_libs target/release/containerd-wasmedge-config))
$W rootfs --name localhost/containerd-shim-wasmedge-installer:dev --out "$OUT/installer.tar" \
  --file /bin/busybox:/bin/busybox \
  --file scripts/node-installer.sh:/installer/scripts/node-installer.sh:0755 \
  --file scripts/install.sh:/installer/scripts/install.sh:0755 \
  --file target/release/containerd-shim-wasmedge-v1:/installer/target/release/containerd-shim-wasmedge-v1 \
  --file target/release/containerd-wasmedge-config:/installer/target/release/containerd-wasmedge-config \
  --file runtime-config/wasmedge-runtime.toml:/installer/runtime-config/wasmedge-runtime.toml \
  --file runtime-config/node-config.toml:/installer/runtime-config/node-config.toml \
  "${libs[@]}" \
  --entrypoint /bin/busybox --entrypoint sh --entrypoint /installer/scripts/node-installer.sh
# The controller: its binary and the libraries it loads, nothing else (it runs as uid 65532
# on a read-only root filesystem; the in-cluster config comes from the ServiceAccount).
# shellcheck disable=SC2207
libs=($(shared_libs target/release/wasm-weight-controller))
$W rootfs --name localhost/wasm-weight-controller:dev --out "$OUT/wasm-weight-controller.tar" \
  --file target/release/wasm-weight-controller:/usr/local/bin/wasm-weight-controller:0755 \
  "${libs[@]}" \
  --entrypoint /usr/local/bin/wasm-weight-controller
