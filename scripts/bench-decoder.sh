#!/usr/bin/env bash
# Benchmark the decoder forward (SmolLM2-135M-Instruct, causal-LM logits, batch 8 x 256) and the
# activation-statistics collection of the language-neuron studies (same batch, no LM head) with
# the default CPU backend, each beside PyTorch on the same batch (plain forward / forward hooks),
# and print Markdown tables for BENCHMARKS.md.
#
#   PYTHON_REF=/path/to/venv/bin/python bash scripts/bench-decoder.sh
#
# PYTHON_REF needs torch, transformers and gguf (../shared/research/pytorch-reference.md).
# Run it on an idle machine: a concurrent build slows both sides.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON_REF="${PYTHON_REF:-python3}"
ITERS="${ITERS:-5}"
BATCH="${BATCH:-8}"
SEQ="${SEQ:-256}"
MODEL=.cache/artefacts/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf
bash scripts/fetch-artefacts.sh >/dev/null
OUT=target/bench-decoder.jsonl
cargo build --release -q -p runner
: > "$OUT"
target/release/neuronlab bench forward --model "$MODEL" --batch "$BATCH" --seq "$SEQ" --iters "$ITERS" | tee -a "$OUT"
"$PYTHON_REF" bench/forward_pytorch.py --model "$MODEL" --batch "$BATCH" --seq "$SEQ" --iters "$ITERS" 2>/dev/null | tee -a "$OUT"
COLLECT=target/bench-collect.jsonl
: > "$COLLECT"
target/release/neuronlab bench collect --model "$MODEL" --batch "$BATCH" --seq "$SEQ" --iters "$ITERS" | tee -a "$COLLECT"
"$PYTHON_REF" bench/forward_pytorch.py --collect --model "$MODEL" --batch "$BATCH" --seq "$SEQ" --iters "$ITERS" 2>/dev/null | tee -a "$COLLECT"

for f in "$OUT" "$COLLECT"; do
"$PYTHON_REF" - "$f" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
torch = next(r for r in rows if r["implementation"].startswith("pytorch"))
print("\n| implementation | median ms / batch | tokens/s | vs PyTorch |")
print("|---|---:|---:|---:|")
for r in rows:
    print(f"| {r['implementation']} | {r['median_ms']:.1f} | {r['tokens_per_s']:.0f} | {r['tokens_per_s'] / torch['tokens_per_s']:.2f}x |")
PY
done
