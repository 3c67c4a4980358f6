#!/usr/bin/env bash
# make bench: start latency and memory against runc, measured in the same run.
set -euo pipefail
cd "$(dirname "$0")/.."
target/release/wasmedge-devnode bench "$@"
# Kubernetes pod start to Ready, when the e2e cluster (scripts/k8s-up.sh) is up.
source scripts/k8s-lib.sh
if k8s_pid_alive kubelet >/dev/null; then
  bash scripts/k8s-bench.sh
else
  echo
  echo "(Kubernetes pod start to Ready: \`make bench-k8s\`, or start scripts/k8s-up.sh before \`make bench\`)"
fi
