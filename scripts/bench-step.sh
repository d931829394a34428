#!/usr/bin/env bash
# Benchmark one training step (MiniLM sequence classifier, batch 32 x 64, CPU) for c = 0..4 nested
# dropout views, batched and sequential, beside the official algorithm in PyTorch on the same
# batch shape, and print a Markdown table for BENCHMARKS.md.
#
#   PYTHON_REF=/path/to/venv/bin/python bash scripts/bench-step.sh
#
# TASK=span times a span extractor (extractive QA, start/end losses) instead of the classifier.
#
# PYTHON_REF must have torch and transformers (../shared/research/pytorch-reference.md). Run it
# on an idle machine: a concurrent build slows both sides.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON_REF="${PYTHON_REF:-python3}"
ITERS="${ITERS:-3}"
CS="${CS:-0 1 2 3 4}"
TASK="${TASK:-classification}"
SPAN=()
if [ "$TASK" = span ]; then SPAN=(--span); fi
MODEL=.cache/artefacts/all-MiniLM-L6-v2
bash scripts/fetch-artefacts.sh >/dev/null
cargo build --release -q -p runner
OUT=target/bench-step-$TASK.jsonl
: > "$OUT"
for c in $CS; do
    target/release/neuronlab bench step --model "$MODEL" --n-drop "$c" --iters "$ITERS" "${SPAN[@]}" | tee -a "$OUT"
    if [ "$c" -gt 0 ]; then
        target/release/neuronlab bench step --model "$MODEL" --n-drop "$c" --iters "$ITERS" --sequential "${SPAN[@]}" | tee -a "$OUT"
    fi
    "$PYTHON_REF" bench/step_pytorch.py --model "$MODEL" --n-drop "$c" --iters "$ITERS" --task "$TASK" | tee -a "$OUT"
done

"$PYTHON_REF" - "$OUT" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def find(c, impl, execution=None):
    for r in rows:
        if r["n_drop"] == c and r["implementation"].startswith(impl) and (execution is None or r["execution"] == execution):
            return r
base = {impl: find(0, impl) for impl in ("neuronlab", "pytorch")}
print(f"\ntask: {rows[0]['task']}")
print("\n| c | implementation | views | ms / step | forward | backward | clip + AdamW | vs own baseline (bound c+1) | vs PyTorch |")
print("|---:|---|---|---:|---:|---:|---:|---:|---:|")
for r in rows:
    c = r["n_drop"]
    impl = "pytorch" if r["implementation"].startswith("pytorch") else "neuronlab"
    torch = find(c, "pytorch")
    if base[impl] is None or torch is None:
        continue
    print(f"| {c} | {r['implementation']} | {r['execution']} | {r['median_ms']:.0f} | {r['forward_ms']:.0f} | "
          f"{r['backward_ms']:.0f} | {r['optimizer_ms']:.0f} | {r['median_ms'] / base[impl]['median_ms']:.2f}x (≤{c + 1}) | "
          f"{torch['median_ms'] / r['median_ms']:.2f}x |")
PY
