"""PyTorch side of `neuronlab bench collect`: the same statistics with forward hooks, as the
official codes collect them (Mondal et al. hook `mlp.gate_proj`; Tang et al. count SiLU > 0).

    python bench/collect_pytorch.py --model .cache/artefacts/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf

The base model (no LM head) in eval mode, no_grad, f32 (the GGUF dequantised by transformers),
random ids >= 1000 without padding; a forward hook on every layer's gate_proj adds the count of
positive values, the sum and the sum of squares per neuron. One warm-up batch, then the median
of --iters timed ones. Prints one JSON line in the format of the Rust command.
"""

import argparse
import json
import pathlib
import statistics
import time

import torch
from transformers import AutoModelForCausalLM


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=".cache/artefacts/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    path = pathlib.Path(args.model)
    if path.suffix == ".gguf":
        lm = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32,
                                                  attn_implementation="eager")
    else:
        lm = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager")
    model = lm.model.eval()
    n_layers, width = len(model.layers), model.config.intermediate_size
    positive = torch.zeros(n_layers, width, dtype=torch.int64)
    total = torch.zeros(n_layers, width, dtype=torch.float64)
    total_sq = torch.zeros(n_layers, width, dtype=torch.float64)

    def hook(layer):
        def f(module, inputs, out):
            g = out.flatten(0, 1)
            positive[layer] += (g > 0).sum(0)
            total[layer] += g.sum(0).double()
            total_sq[layer] += (g * g).sum(0).double()
        return f

    for i, layer in enumerate(model.layers):
        layer.mlp.gate_proj.register_forward_hook(hook(i))
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, lm.config.vocab_size, (args.batch, args.seq), generator=gen)
    times = []
    with torch.no_grad():
        for i in range(args.iters + 1):
            start = time.perf_counter()
            model(input_ids=ids)
            positive.sum().item()
            if i >= 1:
                times.append((time.perf_counter() - start) * 1e3)
    median = statistics.median(sorted(times))
    print(json.dumps({
        "implementation": f"pytorch {torch.__version__} forward hooks ({args.threads} threads)",
        "device": "cpu",
        "model": path.name,
        "batch": args.batch,
        "seq": args.seq,
        "iters": args.iters,
        "median_ms": median,
        "tokens_per_s": args.batch * args.seq / (median / 1e3),
    }))


if __name__ == "__main__":
    main()
