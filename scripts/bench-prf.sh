#!/usr/bin/env bash
# Benchmark dense PRF beside PyTorch: one LoL training step (MiniLM reformulator, 8 queries x
# (1 + n_compare) revisions x 256 tokens, a 4,096-row passage matrix; n_compare 0 and 1), exact
# search (256 queries over 200,000 x 768 random vectors, top 1,000), and the encoder forward
# that `corpus embed` runs (MiniLM, 64 passages x 128 tokens). Prints a Markdown table for
# BENCHMARKS.md.
#
#   PYTHON_REF=/path/to/venv/bin/python BIN=target/release/neuronlab bash scripts/bench-prf.sh
#
# BIN is a release build (on LibTorch: bash scripts/libtorch.sh cargo build --release -p runner
# --features tch). PYTHON_REF must have torch and transformers. Run it on an idle machine.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON_REF="${PYTHON_REF:-python3}"
BIN="${BIN:-target/release/neuronlab}"
ITERS="${ITERS:-3}"
MODEL=.cache/artefacts/all-MiniLM-L6-v2
OUT=target/bench-prf.jsonl
mkdir -p target
: > "$OUT"
for nc in 0 1; do
    "$BIN" bench prf-step --model "$MODEL" --n-compare "$nc" --iters "$ITERS" | tee -a "$OUT"
    "$PYTHON_REF" bench/prf_step_pytorch.py --model "$MODEL" --n-compare "$nc" --iters "$ITERS" | tee -a "$OUT"
done
"$BIN" bench search --iters "$ITERS" | tee -a "$OUT"
"$PYTHON_REF" bench/search_pytorch.py --iters "$ITERS" | tee -a "$OUT"
"$BIN" bench forward --model "$MODEL" --batch 64 --seq 128 --iters "$ITERS" | tee -a "$OUT"
"$PYTHON_REF" bench/forward_pytorch.py --model "$MODEL" --batch 64 --seq 128 --iters "$ITERS" | tee -a "$OUT"

"$PYTHON_REF" - "$OUT" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
ours = lambda r: r["implementation"].startswith("neuronlab")
print("\n| workload | neuronlab (ms) | PyTorch (ms) | PyTorch / ours | rate, ours / PyTorch |")
print("|---|---:|---:|---:|---|")
pairs = []
for nc in (0, 1):
    sel = [r for r in rows if r.get("n_compare") == nc]
    pairs.append((f"PRF step, n_compare {nc} ({sel[0]['queries']} queries x {1 + nc} revisions x {sel[0]['seq']} tokens)", sel, None))
pairs.append(("search, 256 queries over 200k x 768, top 1000", [r for r in rows if "queries_per_s" in r], "queries_per_s"))
pairs.append(("encoder forward, 64 passages x 128 tokens", [r for r in rows if "tokens_per_s" in r], "tokens_per_s"))
for name, sel, rate in pairs:
    a = next(r for r in sel if ours(r)); b = next(r for r in sel if not ours(r))
    extra = ""
    if rate == "queries_per_s":
        extra = f"{a[rate]:.0f} / {b[rate]:.0f} queries/s"
    elif rate == "tokens_per_s":
        extra = f"{a[rate] / 128:.0f} / {b[rate] / 128:.0f} passages/s"
    print(f"| {name} | {a['median_ms']:.0f} | {b['median_ms']:.0f} | {b['median_ms'] / a['median_ms']:.2f}x | {extra} |")
PY
