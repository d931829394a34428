#!/usr/bin/env bash
# Before a commit: formatting, clippy, and the tests of the crates a change touches, on ndarray.
#
#   bash scripts/check.sh                      fmt, clippy, every test (as scripts/test.sh, with doc tests)
#   bash scripts/check.sh models losses        fmt, clippy, the tests of those crates
#   bash scripts/check.sh runner -- cli_grid   ... and only the tests whose names hold a filter
#                                              (arguments after -- go to every test binary)
#   bash scripts/check.sh --no-clippy models   skip clippy (fmt and the tests only)
#
# The tests always build the whole workspace, once, at the workspace's one feature set: a
# `cargo test -p models` on its own resolves other features for Burn's dependencies and compiles
# Burn again beside the workspace build (scripts/ci-units.py shows such counts). The named
# crates' test binaries are then run from the crate's folder, as cargo runs them; their doc
# tests run only in the full check (no crate named). The full `.ci/run` (LibTorch, Slurm, the
# CUDA check) is CI's job.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

clippy=yes
crates=()
filters=()
while [ "$#" -gt 0 ]; do
    case "$1" in
        --no-clippy) clippy="" ;;
        --) shift; filters=("$@"); break ;;
        -h | --help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) echo "check: unknown option $1 (see bash scripts/check.sh --help)" >&2; exit 2 ;;
        *)
            if [ ! -f "crates/$1/Cargo.toml" ]; then
                echo "check: no crate named '$1' (crates: $(ls crates | tr '\n' ' '))" >&2
                exit 2
            fi
            crates+=("$1")
            ;;
    esac
    shift
done

step() { echo "== $*" >&2; }
started=$(date +%s)

step "cargo fmt --check"
cargo fmt --all -- --check

if [ -n "$clippy" ]; then
    step "cargo clippy --workspace --all-targets (warnings are errors)"
    cargo clippy --workspace --all-targets --quiet -- -D warnings
fi

bash scripts/fetch-artefacts.sh > /dev/null

if [ "${#crates[@]}" -eq 0 ]; then
    step "every test (cargo test --workspace)"
    cargo test --workspace -- "${filters[@]}"
else
    step "building the workspace's tests"
    # One line per test binary of the named crates: its crate's folder, then the executable.
    list=$(cargo test --workspace --no-run --message-format=json-render-diagnostics |
        python3 -c '
import json, os, sys
wanted = set(sys.argv[1:])
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") != "compiler-artifact" or not m.get("executable") or not m["profile"]["test"]:
        continue
    folder = os.path.dirname(m["manifest_path"])
    if os.path.basename(folder) in wanted:
        print(folder + "\t" + m["executable"])' "${crates[@]}")
    failed=()
    while IFS=$'\t' read -r folder exe; do
        step "$(basename "$folder"): $(basename "$exe")"
        (cd "$folder" && "$exe" "${filters[@]}") || failed+=("$(basename "$exe")")
    done <<< "$list"
    if [ "${#failed[@]}" -gt 0 ]; then
        echo "check: failed: ${failed[*]}" >&2
        exit 1
    fi
fi
step "check passed in $(($(date +%s) - started)) s"
