"""AdamW over MiniLM-shaped parameters (22.6 M), 2 threads: torch.optim.AdamW (single-tensor on
CPU) against the in-place sequence that neuronlab's LibTorch AdamW runs
(models::fused::adamw_step), to separate the arithmetic from the rest of a training step.

    .venv-libtorch/bin/python bench/adamw_pytorch.py
"""

import json
import time

import torch

torch.set_num_threads(2)
shapes = (
    [(30522, 384), (512, 384), (2, 384)]
    + [(384, 384)] * 24
    + [(1536, 384), (384, 1536)] * 6
    + [(384,)] * 60
    + [(1536,)] * 6
)
params = [torch.randn(*s, requires_grad=True) for s in shapes]
for p in params:
    p.grad = torch.randn_like(p)


def median(f, iters=5):
    times = []
    for _ in range(iters + 1):
        start = time.perf_counter()
        f()
        times.append((time.perf_counter() - start) * 1e3)
    return sorted(times[1:])[iters // 2]


opt = torch.optim.AdamW(params, lr=2e-5, eps=1e-8, weight_decay=0.01)
ms = [torch.zeros_like(p) for p in params]
vs = [torch.zeros_like(p) for p in params]


@torch.no_grad()
def ours():
    for p, m, v in zip(params, ms, vs):
        g = p.grad
        m.lerp_(g, 0.1)
        v.mul_(0.999)
        v.addcmul_(g, g * 0.001)
        d = v.sqrt()
        d.div_(0.5)
        d.add_(1e-8)
        p.mul_(1 - 2e-7)
        p.addcdiv_(m * -1e-5, d)


print(json.dumps({
    "parameters": sum(p.numel() for p in params),
    "torch_optim_adamw_ms": median(opt.step),
    "neuronlab_sequence_ms": median(ours),
}))
