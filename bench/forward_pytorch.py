"""PyTorch side of `neuronlab bench forward`: the same forward on the same batch shape.

    python bench/forward_pytorch.py --model .cache/artefacts/all-MiniLM-L6-v2 --batch 32 --seq 128
    python bench/forward_pytorch.py --model .cache/artefacts/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf --batch 8 --seq 256

An encoder directory runs AutoModel (last hidden states); a decoder (a .gguf file, dequantised to
f32 by transformers, or a directory whose config is llama / mistral) runs AutoModelForCausalLM
(logits at every position).

With --collect (decoders; the PyTorch side of `neuronlab bench collect`), the base model (no LM
head) runs with a forward hook on every layer's gate_proj that adds the count of positive values,
the sum and the sum of squares per neuron, as the official language-neuron codes collect them
(Mondal et al. hook gate_proj; Tang et al. count SiLU > 0, the same event); one warm-up batch.

A Longformer directory (`bench/make_longformer.py` writes a random base-size one) runs
LongformerModel, HF's sliding-chunks attention, with --global N: global attention on each
sequence's first N tokens (the Rust command's --global).

Both report the process's peak resident memory (`peak_rss_mib`, Linux ru_maxrss) and the
resident memory with the model loaded, before the first forward (`loaded_rss_mib`).

Eval mode, no_grad, f32, eager attention unless --attn sdpa, random token ids >= 1000 without padding, two warm-up iterations, the
median of --iters timed ones. Prints one JSON line in the format of the Rust command.
"""

import argparse
import json
import pathlib
import resource
import statistics
import time

import torch
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM


def add_counting_hooks(model):
    """Per layer and neuron: positive count, sum and sum of squares of gate_proj's output."""
    n_layers, width = len(model.layers), model.config.intermediate_size
    on = next(model.parameters()).device
    positive = torch.zeros(n_layers, width, dtype=torch.int64, device=on)
    total = torch.zeros(n_layers, width, dtype=torch.float64, device=on)
    total_sq = torch.zeros(n_layers, width, dtype=torch.float64, device=on)

    def hook(layer):
        def f(module, inputs, out):
            g = out.flatten(0, 1)
            positive[layer] += (g > 0).sum(0)
            total[layer] += g.sum(0).double()
            total_sq[layer] += (g * g).sum(0).double()
        return f

    for i, layer in enumerate(model.layers):
        layer.mlp.gate_proj.register_forward_hook(hook(i))


def rss_mib(key):
    """A memory line of /proc/self/status in MiB (VmRSS: resident now), None off Linux."""
    try:
        with open("/proc/self/status") as f:
            line = next(l for l in f if l.startswith(key))
    except (OSError, StopIteration):
        return None
    return int(line.split()[1]) / 1024


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=".cache/artefacts/all-MiniLM-L6-v2")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--collect", action="store_true", help="activation statistics with forward hooks")
    ap.add_argument("--global", dest="n_global", type=int, default=0,
                    help="Longformer: global attention on each sequence's first N tokens")
    ap.add_argument("--attn", default="eager", choices=["eager", "sdpa"],
                    help="transformers' attention implementation (sdpa: torch's fused attention)")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    path = pathlib.Path(args.model)
    if path.suffix == ".gguf":
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32,
                                                     attn_implementation=args.attn)
    elif AutoConfig.from_pretrained(path).model_type in ("llama", "mistral"):
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation=args.attn)
    else:
        model = AutoModel.from_pretrained(path, attn_implementation=args.attn)
    model = model.eval().to(args.device)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, model.config.vocab_size, (args.batch, args.seq), generator=gen)
    ids = ids.to(args.device)
    mask = torch.ones_like(ids)
    loaded_rss = rss_mib("VmRSS:")
    extra = {}
    if model.config.model_type == "longformer":
        glob = torch.zeros_like(ids)
        glob[:, : args.n_global] = 1
        extra["global_attention_mask"] = glob
    elif args.n_global:
        raise SystemExit(f"--global {args.n_global}: {path} is not a Longformer")
    warmup, label = 2, f"{args.attn} attention"
    if args.collect:
        model, warmup, label = model.model, 1, "forward hooks"
        add_counting_hooks(model)
    times = []
    with torch.no_grad():
        for i in range(args.iters + warmup):
            start = time.perf_counter()
            out = model(input_ids=ids, attention_mask=mask, **extra)
            (out.logits if hasattr(out, "logits") else out.last_hidden_state)[0, 0, 0].item()
            if i >= warmup:
                times.append((time.perf_counter() - start) * 1e3)
    median = statistics.median(sorted(times))
    print(json.dumps({
        "implementation": f"pytorch {torch.__version__} ({label}, {args.threads} threads)",
        "device": args.device,
        "model": pathlib.Path(args.model).name,
        "batch": args.batch,
        "seq": args.seq,
        "iters": args.iters,
        "median_ms": median,
        "tokens_per_s": args.batch * args.seq / (median / 1e3),
        **({"global": args.n_global} if args.n_global else {}),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "loaded_rss_mib": loaded_rss,
    }))


if __name__ == "__main__":
    main()
