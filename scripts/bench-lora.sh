#!/usr/bin/env bash
# Benchmark one LoRA training step of SmolLM2-135M as a 2-class decoder classifier (batch 8 x 64,
# CPU, frozen base): adapters on q, k, v, o (r 8), alone and with a gate_proj adapter masked to
# 64 random neurons per layer (neuron-specific LoRA), beside PyTorch + PEFT on the same shapes,
# and print a Markdown table for BENCHMARKS.md.
#
#   PYTHON_REF=/path/to/venv/bin/python bash scripts/bench-lora.sh
#
# PYTHON_REF must have torch, transformers, gguf and peft (../shared/research/pytorch-reference.md).
# Run it on an idle machine: a concurrent build slows both sides.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON_REF="${PYTHON_REF:-python3}"
ITERS="${ITERS:-5}"
MODEL=.cache/artefacts/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf
bash scripts/fetch-artefacts.sh >/dev/null
cargo build --release -q -p runner
OUT=target/bench-lora.jsonl
: > "$OUT"
for gate in "" "--gate-neurons 64"; do
    # shellcheck disable=SC2086
    target/release/neuronlab bench lora-step --model "$MODEL" --iters "$ITERS" $gate | tee -a "$OUT"
    # shellcheck disable=SC2086
    "$PYTHON_REF" bench/lora_step_pytorch.py --model "$MODEL" --iters "$ITERS" $gate | tee -a "$OUT"
done

"$PYTHON_REF" - "$OUT" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print("\n| adapters | implementation | trainable | ms / step | forward | backward | clip + AdamW | PyTorch / ours |")
print("|---|---|---:|---:|---:|---:|---:|---:|")
for r in rows:
    torch = next(t for t in rows if t["implementation"].startswith("pytorch") and t["targets"] == r["targets"])
    print(f"| {r['targets']} | {r['implementation']} | {r['trainable']:,} | {r['median_ms']:.0f} | {r['forward_ms']:.0f} | "
          f"{r['backward_ms']:.0f} | {r['optimizer_ms']:.0f} | {torch['median_ms'] / r['median_ms']:.2f}x |")
PY
