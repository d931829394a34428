#!/usr/bin/env bash
# The main job: fetch the real artefacts, build neuronlab, run the quickstart grid (MiniLM on
# Rotten Tomatoes sentences, baseline vs comparative loss, 2 seeds; ~15 minutes on 2 CPU cores)
# and write its report. Results: runs/quickstart/ (results.csv, report.md, plots). Running it
# again skips the cells that finished.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/fetch-artefacts.sh
cargo build --release -p runner
./target/release/neuronlab grid run experiments/quickstart.toml
./target/release/neuronlab report runs/quickstart
echo "results: runs/quickstart/ (results.csv, results.parquet, report.md, learning_curves.svg, ablation.svg)"
