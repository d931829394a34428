#!/usr/bin/env bash
# Run every test of the workspace, after fetching the real artefacts the tests need.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/fetch-artefacts.sh
cargo test --workspace
