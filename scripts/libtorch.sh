#!/usr/bin/env bash
# Install LibTorch for the `tch` backend: PyTorch 2.9.0 (the version burn-tch 0.21's tch 0.22
# expects) from the package registry into a git-ignored venv, idempotently. The registry's
# Linux wheel is a CUDA build and needs its nvidia-* dependencies even on CPU (about 2.5 GB of
# downloads the first time).
#
#   bash scripts/libtorch.sh                 install (if needed) and print the venv's folder
#   bash scripts/libtorch.sh COMMAND ARGS... install (if needed), then run COMMAND with the venv
#                                            active and LIBTORCH_USE_PYTORCH=1, as torch-sys
#                                            (tch's build) needs to find LibTorch, e.g.
#   bash scripts/libtorch.sh cargo build --release -p runner --features tch
#
# The built binary carries an rpath to the venv's torch/lib (crates/runner/build.rs), so it runs
# without LD_LIBRARY_PATH as long as the venv stays where it is.
# Exit status 1, with one line saying why, when the registry or the install fails.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${NEURONLAB_LIBTORCH_VENV:-$ROOT/.venv-libtorch}"
VERSION="2.9.0"
PY="$VENV/bin/python"

installed() {
    [ -x "$PY" ] && "$PY" -c "import torch, sys; sys.exit(0 if torch.__version__.split('+')[0] == '$VERSION' else 1)" 2>/dev/null
}

if ! installed; then
    echo "libtorch: installing torch==$VERSION into $VENV (about 2.5 GB the first time)..." >&2
    python3 -m venv "$VENV" >&2
    if ! "$VENV/bin/pip" install --quiet --disable-pip-version-check "torch==$VERSION" >&2 2>"$VENV/pip.err"; then
        echo "libtorch: could not install torch==$VERSION with pip (is the package registry reachable?); see $VENV/pip.err" >&2
        exit 1
    fi
    installed || { echo "libtorch: torch==$VERSION installed but does not import; see $VENV/pip.err" >&2; exit 1; }
fi
if [ "$#" -eq 0 ]; then
    echo "$VENV"
    exit 0
fi
# neuronlab itself finds LibTorch by its rpath; LD_LIBRARY_PATH serves the test binaries of the
# library crates (`cargo test -p models --features tch`), which have none.
TORCH_LIB="$("$PY" -c "import os, torch; print(os.path.join(os.path.dirname(torch.__file__), 'lib'))")"
export VIRTUAL_ENV="$VENV" PATH="$VENV/bin:$PATH" LIBTORCH_USE_PYTORCH=1
export LD_LIBRARY_PATH="$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
exec "$@"
