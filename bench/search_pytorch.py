"""PyTorch side of `neuronlab bench search`: exact inner-product search, top k.

    python bench/search_pytorch.py --passages 200000 --dim 768 --queries 256 --k 1000

The official evaluation's search (zycdev/LoL trainer.py `infer`): `corpus_matrix @ queries.T`
then `topk(k, dim=0)`, here over the matrix in chunks of 16,384 rows (as the Rust side cuts it,
which bounds the memory of the score matrix) with the chunks' top k merged by a second topk.
The matrix is in memory (the Rust side reads its shards from disk inside the timing). Random
vectors from a seeded generator; one warm-up search, the median of --iters timed ones.
"""

import argparse
import json
import statistics
import time

import torch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--passages", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--queries", type=int, default=256)
    ap.add_argument("--k", type=int, default=1000)
    ap.add_argument("--chunk", type=int, default=16_384)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    matrix = (torch.rand(args.passages, args.dim, generator=gen) - 0.5).to(device)
    queries = (torch.rand(args.queries, args.dim, generator=gen) - 0.5).to(device)

    def search():
        best_s, best_i = None, None
        for start in range(0, args.passages, args.chunk):
            scores = queries @ matrix[start:start + args.chunk].t()  # (Q, n)
            s, i = scores.topk(min(args.k, scores.shape[1]), dim=1)
            i = i + start
            if best_s is not None:
                s, j = torch.cat([best_s, s], 1).topk(args.k, dim=1)
                i = torch.cat([best_i, i], 1).gather(1, j)
            best_s, best_i = s, i
        return best_i.cpu()

    times = []
    for it in range(args.iters + 1):
        start = time.perf_counter()
        found = search()
        assert found.shape == (args.queries, args.k)
        if it >= 1:
            times.append((time.perf_counter() - start) * 1e3)
    med = statistics.median(times)
    print(json.dumps({
        "implementation": f"pytorch {torch.__version__} (matmul + topk, {args.device}, {args.threads} threads)",
        "device": args.device,
        "passages": args.passages,
        "dim": args.dim,
        "queries": args.queries,
        "k": args.k,
        "iters": args.iters,
        "median_ms": med,
        "queries_per_s": args.queries / (med / 1e3),
    }))


if __name__ == "__main__":
    main()
