#!/usr/bin/env bash
# The main job: fetch the real artefacts, build neuronlab on the fastest backend this machine
# can have, run the quickstart grid (MiniLM on Rotten Tomatoes sentences, baseline vs
# comparative loss, 3 seeds of one epoch; 9.3 minutes on 2 CPU cores with LibTorch, about three
# times that with ndarray) and write its report.
# Results: runs/quickstart/ (results.csv, report.md, plots). Running it again skips the cells
# that finished.
#
# The backend is LibTorch (PyTorch 2.9.0's, installed from the package registry into
# .venv-libtorch by scripts/libtorch.sh; ~3x faster training steps here, BENCHMARKS.md); when
# that install fails, it says so and builds the portable ndarray backend instead.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/fetch-artefacts.sh
if bash scripts/libtorch.sh >/dev/null; then
    bash scripts/libtorch.sh cargo build --release -p runner --features tch
else
    echo "main: LibTorch could not be installed (see above); building the ndarray backend instead" >&2
    cargo build --release -p runner
fi
./target/release/neuronlab grid run experiments/quickstart.toml
./target/release/neuronlab report runs/quickstart
echo "results: runs/quickstart/ (results.csv, results.parquet, report.md, learning_curves.svg, ablation.svg)"
