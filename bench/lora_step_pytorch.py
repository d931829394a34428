"""PyTorch + PEFT side of `neuronlab bench lora-step`: one LoRA training step of a decoder
classifier with a frozen base.

    python bench/lora_step_pytorch.py --model .cache/artefacts/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf --batch 8 --seq 64

The model is transformers' LlamaForSequenceClassification (the GGUF dequantised to f32, a fresh
2-class `score` head trained beside the adapters) wrapped by PEFT's LoRA (r, alpha = 2r,
dropout 0) on --targets in every layer; with --gate-neurons k, also `gate_proj`, whose lora_B
is multiplied by a fixed 0/1 mask of k random neurons per layer in the forward pass (Mondal et
al.'s neuron-specific LoRA; PEFT has no such option, so the mask is a forward pre-hook on the
adapter's lora_B module output). One step: forward on random token ids >= 1000 (no padding),
cross-entropy on alternating labels, backward, clip_grad_norm_(10), AdamW (lr 1e-4, betas
(0.95, 0.999), weight decay 0.1). One warm-up step, the median of --iters timed ones, phases
timed separately. Prints one JSON line in the format of the Rust command.
"""

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForSequenceClassification


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=".cache/artefacts/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--targets", default="q_proj,k_proj,v_proj,o_proj")
    ap.add_argument("--gate-neurons", type=int, default=None)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    args = ap.parse_args()
    device = torch.device(args.device)
    # The phases are timed after the device has finished their kernels.
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    path = Path(args.model)
    kwargs = dict(num_labels=2, dtype=torch.float32)
    if path.suffix == ".gguf":
        model = AutoModelForSequenceClassification.from_pretrained(path.parent, gguf_file=path.name, **kwargs)
    else:
        model = AutoModelForSequenceClassification.from_pretrained(path, **kwargs)
    model.config.pad_token_id = model.config.eos_token_id
    targets = [t for t in args.targets.split(",") if t]
    if args.gate_neurons is not None and "gate_proj" not in targets:
        targets.append("gate_proj")
    config = LoraConfig(r=args.rank, lora_alpha=2 * args.rank, lora_dropout=0.0,
                        target_modules=targets, modules_to_save=["score"])
    model = get_peft_model(model, config)
    if args.gate_neurons is not None:
        for name, module in model.named_modules():
            if name.endswith("mlp.gate_proj") and hasattr(module, "lora_B"):
                width = module.lora_B["default"].out_features
                mask = torch.zeros(width)
                mask[torch.randperm(width)[: args.gate_neurons]] = 1.0
                # lora_B's output [.., width] times the mask: only those neurons change.
                module.lora_B["default"].register_forward_hook(lambda m, i, o, mask=mask: o * mask)
    model = model.to(device).train()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-4, betas=(0.95, 0.999), eps=1e-8)
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, vocab, (args.batch, args.seq), generator=g)
    mask = torch.ones_like(ids)
    labels = torch.arange(args.batch) % 2
    ids, mask, labels = ids.to(device), mask.to(device), labels.to(device)

    phases = {"total": [], "forward": [], "backward": [], "optimizer": []}
    for i in range(args.iters + 1):
        t0 = time.perf_counter()
        logits = model(input_ids=ids, attention_mask=mask).logits
        loss = F.cross_entropy(logits, labels)
        loss.item()
        t1 = time.perf_counter()
        loss.backward()
        sync()
        t2 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(params, 10.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()
        t3 = time.perf_counter()
        if i >= 1:
            phases["total"].append((t3 - t0) * 1e3)
            phases["forward"].append((t1 - t0) * 1e3)
            phases["backward"].append((t2 - t1) * 1e3)
            phases["optimizer"].append((t3 - t2) * 1e3)
    names = [t for t in targets if t != "gate_proj" or args.gate_neurons is None]
    if args.gate_neurons is not None:
        names.append(f"gate_proj[{args.gate_neurons}]")
    print(json.dumps({
        "implementation": f"pytorch {torch.__version__} + peft ({args.device}, {args.threads} threads)",
        "device": args.device,
        "batch": args.batch,
        "seq": args.seq,
        "rank": args.rank,
        "targets": ",".join(names),
        "trainable": trainable,
        "iters": args.iters,
        "median_ms": statistics.median(phases["total"]),
        "forward_ms": statistics.median(phases["forward"]),
        "backward_ms": statistics.median(phases["backward"]),
        "optimizer_ms": statistics.median(phases["optimizer"]),
    }))


if __name__ == "__main__":
    main()
