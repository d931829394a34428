"""Write a randomly initialised Longformer of allenai/longformer-base-4096's shapes (12 layers,
hidden 768, 12 heads, FFN 3072, attention window 512, 4,096 positions, RoBERTa's vocabulary
size) for `neuronlab bench forward` and `bench/forward_pytorch.py` to load the same weights:

    python bench/make_longformer.py --out .cache/bench/longformer-base-random [--layers 12]

The real checkpoint is not reachable offline; speed and memory do not depend on the weights'
values. Seeded (torch.manual_seed(0)), saved as safetensors (about 600 MB at 12 layers).
"""

import argparse

import torch
from transformers import LongformerConfig, LongformerModel


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=".cache/bench/longformer-base-random")
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--window", type=int, default=512)
    args = ap.parse_args()
    torch.manual_seed(0)
    config = LongformerConfig(
        vocab_size=50265,
        hidden_size=768,
        num_hidden_layers=args.layers,
        num_attention_heads=12,
        intermediate_size=3072,
        max_position_embeddings=4098,
        attention_window=[args.window] * args.layers,
        type_vocab_size=1,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        sep_token_id=2,
    )
    LongformerModel(config).eval().save_pretrained(args.out)
    print(args.out)


if __name__ == "__main__":
    main()
