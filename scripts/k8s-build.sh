#!/usr/bin/env bash
# Builds the Kubernetes server binaries (and kubectl, etcd) of one release from the Go module
# proxy into a cache outside the repo, once; later calls reuse it. Prints the bin dir.
# Used by the Kubernetes end-to-end setup (issue: real Kubernetes e2e).
#
# K8S_VERSION (default 1.37.2) selects the release. Each supported minor has its helper module
# pinned in scripts/k8s-build/<major.minor>/go.mod (+ go.sum); the shared tools.go names the
# commands. A patch release without a pinned module gets one generated at build time (the
# staging modules replaced by the same patch, resolved by `go mod tidy`). The module is built
# in a copy under the cache ($CACHE/build-v<version>), so the repo is never modified.
set -euo pipefail
HERE="$(cd "$(dirname "$0")/k8s-build" && pwd)"

K8S_VERSION=${K8S_VERSION:-1.37.2}
K8S_VERSION=${K8S_VERSION#v}
CACHE=${K8S_BIN_CACHE:-/var/cache/containerd-shim-wasmedge/k8s}
OUT="$CACHE/v$K8S_VERSION"
WORK="$CACHE/build-v$K8S_VERSION"
COMMANDS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)
minor=$(echo "$K8S_VERSION" | cut -d. -f2)
PINNED="$HERE/$(echo "$K8S_VERSION" | cut -d. -f1-2)"

# The helper module of this release, in $WORK.
module() {
  mkdir -p "$WORK"
  cp "$HERE/tools.go" "$WORK/tools.go"
  if [ -f "$PINNED/go.mod" ] && grep -qx "require k8s.io/kubernetes v$K8S_VERSION" "$PINNED/go.mod"; then
    cmp -s "$PINNED/go.mod" "$WORK/go.mod.pinned" 2>/dev/null || {
      cp "$PINNED/go.mod" "$WORK/go.mod"; cp "$PINNED/go.sum" "$WORK/go.sum"; cp "$PINNED/go.mod" "$WORK/go.mod.pinned"
    }
    return
  fi
  [ -f "$WORK/go.mod" ] && grep -qx "require k8s.io/kubernetes v$K8S_VERSION" "$WORK/go.mod" && return
  echo "[k8s-build] no pinned module for v$K8S_VERSION in $PINNED: generating one" >&2
  local mod
  mod=$(cd "$WORK" && GOFLAGS= go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" | sed -n 's/^\s*"GoMod": "\(.*\)",$/\1/p')
  [ -f "$mod" ] || { echo "[k8s-build] k8s.io/kubernetes v$K8S_VERSION not found on the module proxy" >&2; exit 1; }
  {
    echo "module csw-k8s-build"; echo
    echo "go $(sed -n 's/^go //p' "$mod")"; echo
    echo "require k8s.io/kubernetes v$K8S_VERSION"; echo
    echo "replace ("
    # Kubernetes' own go.mod replaces its staging modules by local dirs; here they are the
    # published modules of the same patch release (v0.<minor>.<patch>).
    sed -n 's|^\s*\(k8s.io/[a-z0-9-]*\) => \./staging/src/.*|\1|p' "$mod" | while read -r m; do
      echo "	$m => $m v0.${K8S_VERSION#*.}"
    done
    echo ")"
  } > "$WORK/go.mod"
  rm -f "$WORK/go.sum"
  (cd "$WORK" && go mod tidy)
}

missing=()
for c in "${COMMANDS[@]}"; do [ -x "$OUT/$c" ] || missing+=("k8s.io/kubernetes/cmd/$c"); done
if [ ${#missing[@]} -gt 0 ] || [ ! -x "$OUT/etcd" ]; then
  module
  mkdir -p "$OUT"
fi
if [ ${#missing[@]} -gt 0 ]; then
  ld="-s -w -X k8s.io/component-base/version.gitVersion=v$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
  echo "[k8s-build] building ${missing[*]##*/} v$K8S_VERSION into $OUT (once; 15+ minutes on 2 cores)" >&2
  # Into a temp dir first: a half-built command is never taken for a cached one.
  rm -rf "$OUT/.partial"; mkdir -p "$OUT/.partial"
  (cd "$WORK" && GOFLAGS=-mod=mod go build -trimpath -ldflags "$ld" -o "$OUT/.partial/" "${missing[@]}")
  mv "$OUT"/.partial/* "$OUT/"; rmdir "$OUT/.partial"
fi
if [ ! -x "$OUT/etcd" ]; then
  # etcd's own module has replace directives, so `go install pkg@version` refuses it; it builds
  # as a dependency of the helper module (the version Kubernetes' module graph selects).
  echo "[k8s-build] building etcd" >&2
  (cd "$WORK" && GOFLAGS=-mod=mod go build -trimpath -ldflags "-s -w" -o "$OUT/etcd.partial" go.etcd.io/etcd/server/v3)
  mv "$OUT/etcd.partial" "$OUT/etcd"
fi
echo "$OUT"
