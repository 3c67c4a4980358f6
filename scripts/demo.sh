#!/usr/bin/env bash
# make demo: the example edge function under the shim on a private containerd.
set -euo pipefail
cd "$(dirname "$0")/.."
exec target/release/wasmedge-devnode demo
