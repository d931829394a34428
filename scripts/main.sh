#!/usr/bin/env bash
# The main job: fetch the real artefacts, build neuronlab, and run it on them.
# (For now a real embedding demo on all-MiniLM-L6-v2; the quickstart grid replaces it.)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/fetch-artefacts.sh
cargo build --release -p runner
MODEL=.cache/artefacts/all-MiniLM-L6-v2
./target/release/neuronlab inspect "$MODEL" | head -4
echo "embeddings (first 4 of 384 dimensions each), and cosine similarities:"
./target/release/neuronlab embed --normalize --model "$MODEL" \
    "A man is eating food." \
    "A man is eating a piece of bread." \
    "The stock market fell sharply today." |
python3 -c '
import json, sys
v = json.load(sys.stdin)
for row in v:
    print("  [" + ", ".join(f"{x:+.4f}" for x in row[:4]) + ", ...]")
dot = lambda a, b: sum(x * y for x, y in zip(a, b))
print(f"  cos(food, bread) = {dot(v[0], v[1]):.3f}   cos(food, stocks) = {dot(v[0], v[2]):.3f}")
'
