#!/usr/bin/env bash
# Builds the Kubernetes server binaries (and kubectl, etcd) of the pinned release from the Go
# module proxy into a cache outside the repo, once; later calls reuse it. Prints the bin dir.
# Used by the Kubernetes end-to-end setup (issue: real Kubernetes e2e).
set -euo pipefail
cd "$(dirname "$0")/k8s-build"

K8S_VERSION=${K8S_VERSION:-$(sed -n 's/^require k8s.io\/kubernetes v//p' go.mod)}
CACHE=${K8S_BIN_CACHE:-/var/cache/containerd-shim-wasmedge/k8s}
OUT="$CACHE/v$K8S_VERSION"
COMMANDS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)

missing=()
for c in "${COMMANDS[@]}"; do [ -x "$OUT/$c" ] || missing+=("k8s.io/kubernetes/cmd/$c"); done
if [ ${#missing[@]} -gt 0 ]; then
  mkdir -p "$OUT"
  minor=$(echo "$K8S_VERSION" | cut -d. -f2)
  ld="-s -w -X k8s.io/component-base/version.gitVersion=v$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
  echo "[k8s-build] building ${missing[*]##*/} v$K8S_VERSION into $OUT (a few minutes, once)" >&2
  GOFLAGS=-mod=mod go build -trimpath -ldflags "$ld" -o "$OUT/" "${missing[@]}"
fi
if [ ! -x "$OUT/etcd" ]; then
  # etcd's own module has replace directives, so `go install pkg@version` refuses it; it builds
  # as a dependency of this helper module (pinned in go.mod) instead.
  echo "[k8s-build] building etcd" >&2
  GOFLAGS=-mod=mod go build -trimpath -ldflags "-s -w" -o "$OUT/etcd" go.etcd.io/etcd/server/v3
fi
echo "$OUT"
