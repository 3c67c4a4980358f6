#!/usr/bin/env bash
# make bench: start latency and memory against runc, measured in the same run.
set -euo pipefail
cd "$(dirname "$0")/.."
exec target/release/wasmedge-devnode bench "$@"
