#!/usr/bin/env bash
# Dense pseudo-relevance feedback on a real, offline corpus: the English Wikipedia leads
# (10,033 passages; each article's title is a query, its lead the one relevant passage),
# all-MiniLM-L6-v2 as the first-pass encoder, then experiments/prf-wiki.toml: PRF trained
# without (n_compare = 0) and with (n_compare = 1) LoL's comparative term, 3 seeds each, each
# cell also scoring the first pass. Results: runs/prf-wiki/ (results.csv, report.md).
#
#   bash scripts/prf-wiki.sh            # fetch, build, prepare the corpus, run the grid
#
# The corpus goes to .cache/artefacts/prf-wiki/ (git-ignored): collection.tsv, queries and qrels
# of the leads' train / validation / test splits (titles, in the splits fetch-artefacts.sh
# made), the MiniLM passage matrix (`corpus embed`), and the first-pass runs (`corpus search`:
# top 20 for training, 1000 for evaluation). Running it again reuses them.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/fetch-artefacts.sh
CACHE="${NEURONLAB_CACHE:-.cache/artefacts}"
if bash scripts/libtorch.sh >/dev/null; then
    bash scripts/libtorch.sh cargo build --release -p runner --features tch
else
    echo "prf-wiki: LibTorch could not be installed (see above); building the ndarray backend instead" >&2
    cargo build --release -p runner
fi
BIN=./target/release/neuronlab
MINILM="$CACHE/all-MiniLM-L6-v2"
OUT="$CACHE/prf-wiki"
mkdir -p "$OUT"

if [ ! -f "$OUT/qrels.test.txt" ]; then
    python3 - "$CACHE/wiki-leads/en" "$OUT" <<'PY'
import json, pathlib, sys
src, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
passages, splits = [], {}
for split, name in [("train", "train"), ("validation", "dev"), ("test", "test")]:
    rows = [json.loads(l) for l in (src / f"{split}.jsonl").read_text().splitlines() if l.strip()]
    splits[name] = []
    for row in rows:
        pid = f"p{len(passages)}"
        text = " ".join(row["text"].split())
        title = " ".join(row["title"].split())
        passages.append((pid, text))
        splits[name].append((f"q{pid[1:]}", title, pid))
(out / "collection.tsv").write_text("".join(f"{p}\t{t}\n" for p, t in passages))
for name, rows in splits.items():
    (out / f"queries.{name}.tsv").write_text("".join(f"{q}\t{t}\n" for q, t, _ in rows))
    (out / f"qrels.{name}.txt").write_text("".join(f"{q} 0 {p} 1\n" for q, _, p in rows))
print(f"prf-wiki: {len(passages)} passages; " + ", ".join(f"{k} {len(v)} queries" for k, v in splits.items()))
PY
fi
ENC=(--model "$MINILM" --normalize --max-len 128)
"$BIN" corpus embed "${ENC[@]}" --collection "$OUT/collection.tsv" --output "$OUT/matrix"
for split in train dev test; do
    depth=1000
    [ "$split" = train ] && depth=20
    if [ ! -f "$OUT/run.$split.trec" ]; then
        "$BIN" corpus search "${ENC[@]}" --matrix "$OUT/matrix" --queries "$OUT/queries.$split.tsv" \
            --output "$OUT/run.$split.trec.tmp" --k "$depth" --qrels "$OUT/qrels.$split.txt"
        mv "$OUT/run.$split.trec.tmp" "$OUT/run.$split.trec"
    fi
done
"$BIN" grid run experiments/prf-wiki.toml
"$BIN" report runs/prf-wiki
echo "results: runs/prf-wiki/ (results.csv, report.md)"
