"""PyTorch side of `neuronlab bench forward`: the same forward on the same batch shape.

    python bench/forward_pytorch.py --model .cache/artefacts/all-MiniLM-L6-v2 --batch 32 --seq 128
    python bench/forward_pytorch.py --model .cache/artefacts/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf --batch 8 --seq 256

An encoder directory runs AutoModel (last hidden states); a decoder (a .gguf file, dequantised to
f32 by transformers, or a directory whose config is llama / mistral) runs AutoModelForCausalLM
(logits at every position).

Eval mode, no_grad, f32, random token ids >= 1000 without padding, two warm-up iterations, the
median of --iters timed ones. Prints one JSON line in the format of the Rust command.
"""

import argparse
import json
import pathlib
import statistics
import time

import torch
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=".cache/artefacts/all-MiniLM-L6-v2")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    path = pathlib.Path(args.model)
    if path.suffix == ".gguf":
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32,
                                                     attn_implementation="eager")
    elif AutoConfig.from_pretrained(path).model_type in ("llama", "mistral"):
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager")
    else:
        model = AutoModel.from_pretrained(path, attn_implementation="eager")
    model = model.eval().to(args.device)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, model.config.vocab_size, (args.batch, args.seq), generator=gen)
    ids = ids.to(args.device)
    mask = torch.ones_like(ids)
    times = []
    with torch.no_grad():
        for i in range(args.iters + 2):
            start = time.perf_counter()
            out = model(input_ids=ids, attention_mask=mask)
            (out.logits if hasattr(out, "logits") else out.last_hidden_state)[0, 0, 0].item()
            if i >= 2:
                times.append((time.perf_counter() - start) * 1e3)
    median = statistics.median(sorted(times))
    print(json.dumps({
        "implementation": f"pytorch {torch.__version__} (eager attention, {args.threads} threads)",
        "device": args.device,
        "model": pathlib.Path(args.model).name,
        "batch": args.batch,
        "seq": args.seq,
        "iters": args.iters,
        "median_ms": median,
        "tokens_per_s": args.batch * args.seq / (median / 1e3),
    }))


if __name__ == "__main__":
    main()
