#!/usr/bin/env bash
# Pod start to Ready in the e2e cluster (scripts/k8s-up.sh must be up): a command-mode wasm pod
# (hello.wasm `sleep`, RuntimeClass wasmedge) against a runc pod (busybox `sleep`), the same
# pod spec otherwise, interleaved rounds. Time = from `kubectl create` to `kubectl wait
# --for=condition=Ready` returning (both include one kubectl start and the API round trips).
# The wasm module is AOT-compiled by a first, unmeasured pod.  K8S_BENCH_ROUNDS=5
# K8S_BENCH_UP=1 (make bench-k8s) starts a cluster first when none is up, and removes it.
set -euo pipefail
# shellcheck source=k8s-lib.sh
source "$(dirname "$0")/k8s-lib.sh"
ROUNDS=${K8S_BENCH_ROUNDS:-5}
if ! k8s_pid_alive kubelet >/dev/null; then
  # make bench-k8s: a cluster of its own, removed afterwards.
  [ "${K8S_BENCH_UP:-0}" = 1 ] || { echo "k8s-bench: the e2e cluster is not up (scripts/k8s-up.sh, or make bench-k8s)" >&2; exit 1; }
  trap 'bash "$(dirname "$0")/k8s-down.sh"' EXIT
  bash "$(dirname "$0")/k8s-up.sh"
fi

pod() { # NAME RUNTIME_CLASS(or "") IMAGE ARGS...
  local name=$1 rc=$2 image=$3; shift 3
  local args; args=$(printf '"%s",' "$@"); args="[${args%,}]"
  cat <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: $name
  labels: {e2e: csw-bench}
  annotations: {wasmedge.io/execution-timeout-ms: "30000"}
spec:
  ${rc:+runtimeClassName: $rc}
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  containers:
    - name: main
      image: $image
      imagePullPolicy: Never
      args: $args
EOF
}

start_to_ready() { # NAME RUNTIME_CLASS IMAGE ARGS... -> prints milliseconds
  local name=$1 t0 t1
  t0=$(date +%s%N)
  pod "$@" | kc create -f - >/dev/null
  kc wait --for=condition=Ready "pod/$name" --timeout=120s >/dev/null
  t1=$(date +%s%N)
  echo $(((t1 - t0) / 1000000))
  kc delete pod "$name" --wait=false >/dev/null
}

stats() { # label values... -> "label | min | median | max"
  local label=$1; shift
  printf '%s\n' "$@" | sort -n | awk -v l="$label" '{ v[NR] = $1 } END { printf "| %s | %d | %d | %d |\n", l, v[1], v[int((NR + 1) / 2)], v[NR] }'
}

kc apply -f "$(dirname "$0")/../k8s/runtimeclass.yaml" >/dev/null
# Warm-up: compiles hello.wasm into the node's AOT cache; not measured.
start_to_ready bench-warm wasmedge localhost/hello:v1 sleep 20 >/dev/null
wasm=() runc=()
for i in $(seq "$ROUNDS"); do
  wasm+=("$(start_to_ready "bench-wasm-$i" wasmedge localhost/hello:v1 sleep 20)")
  runc+=("$(start_to_ready "bench-runc-$i" "" localhost/busybox:host sleep 20)")
done
kc delete pods -l e2e=csw-bench --wait=true >/dev/null
echo
echo "Kubernetes pod start to Ready ($(date -u '+%Y-%m-%d %H:%M UTC'), $ROUNDS interleaved rounds, one node, $(nproc) cores)"
echo
echo "| pod | min ms | median ms | max ms |"
echo "|---|---|---|---|"
stats "runc, busybox sleep" "${runc[@]}"
stats "wasmedge, hello.wasm sleep (AOT cached)" "${wasm[@]}"
