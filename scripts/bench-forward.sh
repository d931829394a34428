#!/usr/bin/env bash
# Benchmark the encoder forward (MiniLM, batch 32 x 128) for every Burn CPU backend that builds
# offline, beside PyTorch on the same batch, and print a Markdown table for BENCHMARKS.md.
#
#   PYTHON_REF=/path/to/venv/bin/python bash scripts/bench-forward.sh
#
# PYTHON_REF must have torch and transformers (../shared/research/pytorch-reference.md); each
# backend variant is built in its own target dir (target/bench-<variant>) so features never churn.
# Run it on an idle machine: a concurrent build slows both sides.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON_REF="${PYTHON_REF:-python3}"
ITERS="${ITERS:-10}"
MODEL=.cache/artefacts/all-MiniLM-L6-v2
bash scripts/fetch-artefacts.sh >/dev/null
OUT=target/bench-results.jsonl
: > "$OUT"

variants=("ndarray:" "blas:--no-default-features --features blas" "flex:--no-default-features --features flex" "flex-x86-v4:--no-default-features --features x86-v4")
for v in "${variants[@]}"; do
    name="${v%%:*}"; flags="${v#*:}"
    echo "building $name ..." >&2
    # shellcheck disable=SC2086
    if CARGO_TARGET_DIR="target/bench-$name" cargo build --release -q -p runner $flags; then
        "target/bench-$name/release/neuronlab" bench forward --model "$MODEL" --iters "$ITERS" | tee -a "$OUT"
    else
        echo "{\"implementation\": \"neuronlab burn-$name\", \"error\": \"build failed\"}" | tee -a "$OUT"
    fi
done
"$PYTHON_REF" bench/forward_pytorch.py --model "$MODEL" --iters "$ITERS" | tee -a "$OUT"

"$PYTHON_REF" - "$OUT" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
torch = next(r for r in rows if r["implementation"].startswith("pytorch"))
print("\n| implementation | median ms / batch | tokens/s | vs PyTorch |")
print("|---|---:|---:|---:|")
for r in rows:
    if "error" in r:
        print(f"| {r['implementation']} | {r['error']} | | |")
        continue
    print(f"| {r['implementation']} | {r['median_ms']:.1f} | {r['tokens_per_s']:.0f} | {r['tokens_per_s'] / torch['tokens_per_s']:.2f}x |")
PY
