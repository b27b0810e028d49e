#!/usr/bin/env bash
# The test command: installs the suite's real peers when missing, then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/test-deps.sh
cargo test --workspace "$@"
