#!/usr/bin/env bash
# The GPU check (issue #19, part 4): burn-cuda's parity tests and the benchmarks beside PyTorch
# on one lent GPU machine (H100/H200, no network there; its own PyTorch, transformers and PEFT).
#
#   bash scripts/gpu-check.sh prepare   # here: build and pack .gpu/ (cold: ~15 min on 2 cores)
#   bash scripts/gpu-check.sh run       # there, in the checkout, with .gpu carried:
#                                       # writes $OUT/gpu-check.jsonl and $OUT/parity.log
#
# With the workplace's device tool: run(command="bash scripts/gpu-check.sh run",
# carry=[".gpu"], timeout_s=540). Everything it runs is bounded (each command by `timeout`);
# the whole run is sized for about 6 minutes.
#
# What travels (.gpu/, git-ignored, under the 64 MiB a call carries): the release `neuronlab`
# built with `--features cuda` (burn-cuda) and the models crate's parity-test binary built with
# `--features cuda-parity`, both stripped and xz-compressed, and the small config and tokenizer
# files of MiniLM and SmolLM2. The weights do not fit: the run writes random-initialised
# checkpoints of the same shapes with transformers there (timing does not depend on the values;
# the parity tests use the committed tiny fixtures, not these). LibTorch on CUDA is not part of
# the check: this project's tch 0.22 links PyTorch 2.9.0's libtorch, which is 2.5 GB and cannot
# travel, and the machine's own PyTorch (2.11) is not ABI-compatible with it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

prepare() {
    local target=target/cuda-gpu
    export CARGO_TARGET_DIR=$target
    cargo build --release -p runner --features cuda --bin neuronlab
    local tests
    tests=$(cargo test --release -p models --features cuda-parity --test parity --no-run \
        --message-format=json | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "parity":
        print(m["executable"])')
    rm -rf .gpu && mkdir -p .gpu/minilm .gpu/smollm2
    strip -o .gpu/neuronlab "$target/release/neuronlab"
    strip -o .gpu/parity "$tests"
    xz -T2 -6 -f .gpu/neuronlab .gpu/parity
    local a=.cache/artefacts
    cp "$a"/all-MiniLM-L6-v2/config.json "$a"/all-MiniLM-L6-v2/tokenizer.json .gpu/minilm/
    du -sh .gpu/* | sed 's/^/gpu-check: /'
    echo "gpu-check: .gpu/ is ready; carry it and run: bash scripts/gpu-check.sh run"
}

run() {
    local out=${OUT:-/tmp/gpu-check-out} work=/tmp/gpu-check
    mkdir -p "$out" "$work"
    local jsonl=$out/gpu-check.jsonl log=$out/gpu-check.log
    : > "$jsonl"
    exec > >(tee -a "$log") 2>&1
    [ -f .gpu/neuronlab.xz ] || { echo "gpu-check: .gpu/ is missing: run 'bash scripts/gpu-check.sh prepare' here and carry .gpu"; exit 2; }
    xz -dc .gpu/neuronlab.xz > "$work/neuronlab" && xz -dc .gpu/parity.xz > "$work/parity"
    chmod +x "$work/neuronlab" "$work/parity"
    nvidia-smi -L || true
    python3 -c 'import torch, transformers, peft; print("torch", torch.__version__, "cuda", torch.version.cuda, "transformers", transformers.__version__, "peft", peft.__version__)'

    echo "== random-initialised checkpoints of the benchmarks' shapes"
    cp -r .gpu/minilm .gpu/smollm2 "$work"/
    timeout 120 python3 - "$work" <<'PY'
import sys, torch
from transformers import BertConfig, BertModel, LlamaConfig, LlamaForCausalLM
work = sys.argv[1]
torch.manual_seed(0)
BertModel(BertConfig.from_pretrained(f"{work}/minilm")).save_pretrained(f"{work}/minilm")
# SmolLM2-135M-Instruct's shape (the GGUF's metadata).
cfg = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                  num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192,
                  rope_theta=100000.0, rms_norm_eps=1e-5, tie_word_embeddings=True,
                  bos_token_id=1, eos_token_id=2, pad_token_id=2)
LlamaForCausalLM(cfg).save_pretrained(f"{work}/smollm2")
PY

    echo "== parity tests on burn-cuda (the SmolLM2 module needs the real GGUF, which stays behind)"
    NEURONLAB_ROOT=$PWD timeout 240 "$work/parity" --skip smollm2 2>&1 | tee "$out/parity.log" | tail -5 || true

    local nl=$work/neuronlab m=$work/minilm s=$work/smollm2
    bench() { # one JSON line per command into the file; failures are logged and skipped
        local line
        if line=$(timeout 150 "$@" 2>>"$log" | grep '^{' | tail -1) && [ -n "$line" ]; then
            echo "$line" | tee -a "$jsonl"
        else
            echo "gpu-check: failed or timed out: $*"
        fi
    }
    echo "== benchmarks: neuronlab (burn-cuda) and PyTorch on the same GPU"
    bench "$nl" bench step --model "$m" --device cuda:0 --iters 5
    bench python3 bench/step_pytorch.py --model "$m" --device cuda --iters 5
    bench "$nl" bench step --model "$m" --device cuda:0 --iters 5 --n-drop 2
    bench "$nl" bench step --model "$m" --device cuda:0 --iters 5 --n-drop 2 --sequential
    bench python3 bench/step_pytorch.py --model "$m" --device cuda --iters 5 --n-drop 2
    bench "$nl" bench forward --model "$m" --device cuda:0 --iters 10
    bench python3 bench/forward_pytorch.py --model "$m" --device cuda --iters 10
    bench "$nl" bench collect --model "$s" --device cuda:0 --iters 5
    bench python3 bench/forward_pytorch.py --collect --model "$s" --batch 8 --seq 256 --device cuda --iters 5
    bench "$nl" bench lora-step --model "$s" --device cuda:0 --iters 5
    bench python3 bench/lora_step_pytorch.py --model "$s" --device cuda --iters 5
    echo "gpu-check: $(wc -l < "$jsonl") benchmark lines in $jsonl"
}

case "${1:-}" in
    prepare) prepare ;;
    run) run ;;
    *) echo "usage: bash scripts/gpu-check.sh prepare|run" >&2; exit 2 ;;
esac
