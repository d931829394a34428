"""PyTorch side of `neuronlab bench prf-step`: one training step of LoL's dense reformulator.

    python bench/prf_step_pytorch.py --model .cache/artefacts/all-MiniLM-L6-v2 --queries 8 --n-compare 1 --seq 256

Written from the algorithm as zycdev/LoL runs it (modeling.py `DenseDqr.forward`, trainer.py
`compute_loss`), not copied from it: the encoder in train mode (dropout on) over
`queries × (1 + n_compare)` revisions of random token ids >= 1000 (no padding), the first token
through `dense_proj` and a LayerNorm; similarities against a fixed random passage matrix;
query ranking (masking other groups' shared positives), passage ranking (argmin label, other
positives masked), and the pairwise hinge over each group's `-loss_pr` with descending labels;
`loss_pr + 0 × loss_qr + 1 × loss_cr`; backward; clip_grad_norm_(1.0); AdamW (lr 1e-5, no decay).
Each query's positive is its own row of the matrix, as on the Rust side. One warm-up step, the
median of --iters timed ones; prints one JSON line in the format of the Rust command.
"""

import argparse
import itertools
import json
import statistics
import time

import torch
import torch.nn.functional as F
from transformers import AutoModel


def compute_loss(query_vector, corpus_matrix, poss_idx, n_compare, lambda_qr=0.0, lambda_cr=1.0):
    group = 1 + n_compare
    p_q_sim = corpus_matrix.matmul(query_vector.t())  # (P, Q)
    pos_index_list, qry_index_list, holders = [], [], {}
    for q, poss in enumerate(poss_idx):
        if q % group == 0:
            pos_index_list.extend(poss)
            qry_index_list.extend([q] * len(poss))
        for p in poss:
            holders.setdefault(p, []).append(q)
    pos_q_sim = torch.index_select(p_q_sim, 0, p_q_sim.new_tensor(pos_index_list, dtype=torch.long))
    for r, p in enumerate(pos_index_list):
        if len(holders[p]) <= group:
            continue
        for q in holders[p]:
            if q // group != qry_index_list[r] // group:
                pos_q_sim[r, q] = float("-inf")
    loss_qr = F.cross_entropy(pos_q_sim, p_q_sim.new_tensor(qry_index_list, dtype=torch.long))
    q_p_sim = p_q_sim.t()
    label = p_q_sim.new_empty(p_q_sim.size(1), dtype=torch.long)
    for q, poss in enumerate(poss_idx):
        label[q] = poss[q_p_sim[q, poss].argmin()]
        for p in poss:
            if p != label[q]:
                q_p_sim[q, p] = float("-inf")
    pr = F.cross_entropy(q_p_sim, label, reduction="none")
    loss = pr.mean() + lambda_qr * loss_qr
    if n_compare > 0:
        effects = -pr.view(-1, group)
        pairs = [(i, j) for i, j in itertools.product(range(group), repeat=2) if i < j]
        s1 = torch.stack([effects[:, i] for i, _ in pairs], 1).reshape(-1)
        s2 = torch.stack([effects[:, j] for _, j in pairs], 1).reshape(-1)
        loss = loss + lambda_cr * F.margin_ranking_loss(s1, s2, torch.ones_like(s1), margin=0.0)
    return loss


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=".cache/artefacts/all-MiniLM-L6-v2")
    ap.add_argument("--queries", type=int, default=8)
    ap.add_argument("--n-compare", type=int, default=1)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--passages", type=int, default=4096)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    device = torch.device(args.device)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    encoder = AutoModel.from_pretrained(args.model, attn_implementation="eager").train().to(device)
    h = encoder.config.hidden_size
    dense_proj = torch.nn.Linear(h, h).to(device)
    layer_norm = torch.nn.LayerNorm(h).to(device)
    params = list(encoder.parameters()) + list(dense_proj.parameters()) + list(layer_norm.parameters())
    opt = torch.optim.AdamW(params, lr=1e-5, eps=1e-8, weight_decay=0.0)
    group = 1 + args.n_compare
    rows = args.queries * group
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, encoder.config.vocab_size, (rows, args.seq), generator=gen).to(device)
    mask = torch.ones_like(ids)
    matrix = (torch.rand(args.passages, h, generator=gen) - 0.5).to(device)
    poss_idx = [[(r // group) % args.passages] for r in range(rows)]
    phases = {"total": [], "forward": [], "backward": [], "optimizer": []}
    for it in range(args.iters + 1):
        start = time.perf_counter()
        hidden = encoder(input_ids=ids, attention_mask=mask)[0]
        vectors = layer_norm(dense_proj(hidden[:, 0]))
        loss = compute_loss(vectors, matrix, poss_idx, args.n_compare)
        loss.item()
        t_forward = time.perf_counter()
        loss.backward()
        sync()
        t_backward = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
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
        "queries": args.queries,
        "n_compare": args.n_compare,
        "seq": args.seq,
        "passages": args.passages,
        "iters": args.iters,
        "median_ms": med["total"],
        "forward_ms": med["forward"],
        "backward_ms": med["backward"],
        "optimizer_ms": med["optimizer"],
    }))


if __name__ == "__main__":
    main()
