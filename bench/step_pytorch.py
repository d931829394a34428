"""PyTorch side of `neuronlab bench step`: one training step of the official CmpLoss algorithm.

    python bench/step_pytorch.py --model .cache/artefacts/all-MiniLM-L6-v2 --batch 32 --seq 64 --n-drop 2

Written from the algorithm as zycdev/CmpLoss runs it (modeling.py `CmpCls.forward`, the
`close_dropout` / `power_dropout` switches and the RNG save/restore; see
../shared/research/cmploss.md section 2.1), not copied from it:

- baseline (--n-drop 0): one forward with the config's dropout, cross-entropy, backward;
- comparative (c = --n-drop > 0): the full model with every dropout closed (p = 0), then views
  k = 1..c one after another, each with every dropout at p_k = 1 - (1 - p)^k and the CPU RNG
  restored to its state before the first ablated pass, so the kept units are nested; per-example
  losses l_0..l_c, dummy b = 0 (`ultra`), pairwise hinge over all pairs averaged over the
  (c+1)(c+2)/2 pairs and the batch; backward;
- then clip_grad_norm_(1.0) and AdamW (lr 2e-5, weight decay 0.01 on matrices only, eps 1e-8).

With --task span the model is `AutoModelForQuestionAnswering` and the task loss is the start and
end cross-entropy (`CmpQA`): the comparative loss is computed separately over the start losses
and the end losses and averaged; the baseline is HF's `(start + end) / 2`. Answer positions are
`(7 i + 1) mod seq` and `(7 i + 3) mod seq` for example i, as on the Rust side.

Random token ids >= 1000 without padding, alternating labels; one warm-up step, the median of
--iters timed ones; forward / backward / optimizer phases timed separately. Prints one JSON line
in the format of the Rust command.
"""

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F
from transformers import AutoModelForQuestionAnswering, AutoModelForSequenceClassification


def set_dropout(model, p):
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = p


def comparative_loss(losses):
    """losses: [c+1, B] per-example task losses; dummy b = 0 appended (ultra)."""
    entries = torch.cat([losses, torch.zeros_like(losses[:1])], dim=0)
    n = entries.shape[0]
    total = 0.0
    pairs = 0
    for i in range(n):
        for j in range(i + 1, n):
            total = total + (entries[i] - entries[j]).clamp_min(0)
            pairs += 1
    return (total / pairs).mean()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=".cache/artefacts/all-MiniLM-L6-v2")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--n-drop", type=int, default=0)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--p", type=float, default=0.1)
    ap.add_argument("--task", choices=["classification", "span"], default="classification")
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    args = ap.parse_args()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    # The phases are timed after the device has finished their kernels; on CUDA the views
    # replay the CUDA generator's state, as the official code does on a GPU.
    sync = (lambda: torch.cuda.synchronize(device)) if cuda else (lambda: None)
    get_rng = (lambda: torch.cuda.get_rng_state(device)) if cuda else torch.get_rng_state
    set_rng = (lambda s: torch.cuda.set_rng_state(s, device)) if cuda else torch.set_rng_state

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    span = args.task == "span"
    if span:
        model = AutoModelForQuestionAnswering.from_pretrained(
            args.model, attn_implementation="eager"
        ).train()
    else:
        model = AutoModelForSequenceClassification.from_pretrained(
            args.model, num_labels=2, attn_implementation="eager"
        ).train()
    model = model.to(device)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
        lr=2e-5,
        eps=1e-8,
    )
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, model.config.vocab_size, (args.batch, args.seq), generator=gen)
    mask = torch.ones_like(ids)
    labels = torch.arange(args.batch) % 2
    starts = (torch.arange(args.batch) * 7 + 1) % args.seq
    ends = (torch.arange(args.batch) * 7 + 3) % args.seq
    ids, mask, labels = ids.to(device), mask.to(device), labels.to(device)
    starts, ends = starts.to(device), ends.to(device)

    def task_losses(reduction):
        """Per-example losses of one forward: [B] (classification) or ([B], [B]) (span)."""
        out = model(input_ids=ids, attention_mask=mask)
        if span:
            return (
                F.cross_entropy(out.start_logits, starts, reduction=reduction),
                F.cross_entropy(out.end_logits, ends, reduction=reduction),
            )
        return F.cross_entropy(out.logits, labels, reduction=reduction)

    c = args.n_drop
    phases = {"total": [], "forward": [], "backward": [], "optimizer": []}
    for it in range(args.iters + 1):
        start = time.perf_counter()
        if c == 0:
            set_dropout(model, args.p)
            loss = task_losses("mean")
            if span:
                loss = (loss[0] + loss[1]) / 2
        else:
            set_dropout(model, 0.0)
            rng = get_rng()
            view_losses = [task_losses("none")]
            for k in range(1, c + 1):
                set_dropout(model, 1.0 - (1.0 - args.p) ** k)
                set_rng(rng)
                view_losses.append(task_losses("none"))
            set_dropout(model, args.p)
            if span:
                loss = (
                    comparative_loss(torch.stack([v[0] for v in view_losses]))
                    + comparative_loss(torch.stack([v[1] for v in view_losses]))
                ) / 2
            else:
                loss = comparative_loss(torch.stack(view_losses))
        loss.item()
        t_forward = time.perf_counter()
        loss.backward()
        sync()
        t_backward = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()
        t_end = time.perf_counter()
        if it >= 1:
            phases["total"].append((t_end - start) * 1e3)
            phases["forward"].append((t_forward - start) * 1e3)
            phases["backward"].append((t_backward - t_forward) * 1e3)
            phases["optimizer"].append((t_end - t_backward) * 1e3)
    med = {k: statistics.median(v) for k, v in phases.items()}
    print(json.dumps({
        "implementation": f"pytorch {torch.__version__} (official algorithm, {args.device}, {args.threads} threads)",
        "device": args.device,
        "task": args.task,
        "batch": args.batch,
        "seq": args.seq,
        "n_drop": c,
        "execution": "sequential",
        "iters": args.iters,
        "median_ms": med["total"],
        "forward_ms": med["forward"],
        "backward_ms": med["backward"],
        "optimizer_ms": med["optimizer"],
    }))


if __name__ == "__main__":
    main()
