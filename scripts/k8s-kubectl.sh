#!/usr/bin/env bash
# kubectl against the e2e cluster (scripts/k8s-up.sh), run inside its network namespace with
# its admin credentials: scripts/k8s-kubectl.sh get pods -o wide
set -euo pipefail
# shellcheck source=k8s-lib.sh
source "$(dirname "$0")/k8s-lib.sh"
kc "$@"
