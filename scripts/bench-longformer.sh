#!/usr/bin/env bash
# Benchmark the Longformer forward (models::bert::longformer, banded sliding-window attention
# with global tokens) beside transformers' LongformerModel (sliding chunks) on the same random
# weights and batch, and print a Markdown table for BENCHMARKS.md: time and peak memory.
#
#   PYTHON_REF=/path/to/venv/bin/python bash scripts/bench-longformer.sh [path/to/neuronlab]
#
# PYTHON_REF must have torch and transformers (../shared/research/pytorch-reference.md). The
# models are random (bench/make_longformer.py; allenai/longformer-base-4096's shapes, window
# 512): the real checkpoint is not reachable offline and speed does not depend on the values.
# Rows: the base model at 2,048 tokens (the paper's HotpotQA inputs) with 64 global tokens, and a
# 2-layer model at 1,024 / 2,048 / 4,096 tokens, to show how time and memory grow with length.
# Each measurement is its own process, so peak memory is that run's alone.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON_REF="${PYTHON_REF:-python3}"
BIN="${1:-target/debug/neuronlab}"
ITERS="${ITERS:-3}"
OUT=target/bench-longformer.jsonl
: > "$OUT"
for layers in 12 2; do
    dir=".cache/bench/longformer-${layers}l"
    [ -f "$dir/model.safetensors" ] || "$PYTHON_REF" bench/make_longformer.py --out "$dir" --layers "$layers" >/dev/null
done
run() { # model seq iters
    "$BIN" bench forward --model "$1" --batch 1 --seq "$2" --global 64 --iters "$3" | tee -a "$OUT"
    "$PYTHON_REF" bench/forward_pytorch.py --model "$1" --batch 1 --seq "$2" --global 64 --iters "$3" 2>/dev/null | tee -a "$OUT"
}
run .cache/bench/longformer-12l 2048 "$ITERS"
for seq in 1024 2048 4096; do run .cache/bench/longformer-2l "$seq" 1; done

"$PYTHON_REF" - "$OUT" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print("\n| model | tokens (global) | neuronlab ms | PyTorch ms | PyTorch / ours | neuronlab peak − loaded MiB | PyTorch peak − loaded MiB |")
print("|---|---:|---:|---:|---:|---:|---:|")
mem = lambda r: f"{r['peak_rss_mib'] - r['loaded_rss_mib']:.0f} ({r['peak_rss_mib']:.0f} − {r['loaded_rss_mib']:.0f})"
for ours, torch in zip(rows[0::2], rows[1::2]):
    print(f"| {ours['model']} | {ours['seq']} ({ours.get('global', 0)}) | {ours['median_ms']:.0f} | {torch['median_ms']:.0f} "
          f"| {torch['median_ms'] / ours['median_ms']:.2f}x | {mem(ours)} | {mem(torch)} |")
print(f"\n{rows[0]['implementation']} · {rows[1]['implementation']}")
PY
