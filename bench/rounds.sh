#!/usr/bin/env bash
# Interleaved rounds of the LibTorch benchmarks beside PyTorch (BENCHMARKS.md, third session):
# bash bench/rounds.sh > rounds.jsonl, after the release build with --features tch.
cd "$(dirname "${BASH_SOURCE[0]}")/.."
N=./target/release/neuronlab; P=.venv-libtorch/bin/python
G=.cache/artefacts/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf; M=.cache/artefacts/all-MiniLM-L6-v2
j() { "$@" 2>/dev/null | grep '^{' | tail -1 | sed "s/^{/{\"what\":\"$W\",/"; }
for r in 1 2 3; do
  W=step0 j $N bench step --iters 3; W=step0 j $P bench/step_pytorch.py --model $M --iters 3
  W=step2seq j $N bench step --iters 3 --n-drop 2 --sequential; W=step2seq j $P bench/step_pytorch.py --model $M --iters 3 --n-drop 2
done
W=step2bat j $N bench step --iters 3 --n-drop 2
for r in 1 2; do
  W=forward j $N bench forward --iters 5; W=forward j $P bench/forward_pytorch.py --model $M --iters 5
  W=forward_sdpa j $P bench/forward_pytorch.py --model $M --iters 5 --attn sdpa
  W=collect j $N bench collect --iters 3; W=collect j $P bench/forward_pytorch.py --collect --model $G --batch 8 --seq 256 --iters 3
  W=lora j $N bench lora-step --iters 3; W=lora j $P bench/lora_step_pytorch.py --model $G --iters 3
done
echo DONE
