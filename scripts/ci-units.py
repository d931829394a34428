#!/usr/bin/env python3
"""What each of CI's cargo invocations compiles anew, given the ones before it.

    python3 scripts/ci-units.py            # the table, in .ci/run's order
    python3 scripts/ci-units.py --verbose  # and the names of the new units' packages

Reads cargo's unit graph (`--unit-graph`, which needs cargo's unstable flags: this sets the
override cargo's own test suite uses; nothing is built) for the invocations below, which follow
.ci/run, and counts the units (a package's library, build script or test at one feature set and
profile) that no earlier invocation built. Two invocations share a unit only when its package,
features, profile and the same of all its dependencies agree, as cargo's own hash of a unit.
A rise in the LibTorch row's count (about 110 today) means a dependency's features now differ
between the ndarray and LibTorch builds, and Burn is compiled twice: see the feature-unification
dependencies in crates/runner/Cargo.toml.
"""
import hashlib
import json
import os
import subprocess
import sys

TCH = ["--workspace", "--features", "runner/tch,models/tch,neurons/tch"]
INVOCATIONS = [
    ("ndarray suite (scripts/test.sh)", ["test", "--workspace", "--no-run"]),
    ("Slurm test", ["test", "-p", "runner", "--test", "integration", "--no-run"]),
    ("LibTorch CLI tests", ["test", *TCH, "--test", "integration", "--no-run"]),
    ("LibTorch parity tests", ["test", *TCH, "--test", "parity", "--no-run"]),
    ("CUDA type check", ["check", "-p", "runner", "-p", "models", "--features",
                         "runner/cuda,models/cuda-parity", "--all-targets"]),
]


def units(args):
    env = dict(os.environ, __CARGO_TEST_CHANNEL_OVERRIDE_DO_NOT_USE_THIS="nightly",
               LIBTORCH_USE_PYTORCH="1")
    out = subprocess.run(["cargo", *args, "-Z", "unstable-options", "--unit-graph"], env=env,
                         check=True, capture_output=True, text=True).stdout
    graph = json.loads(out)["units"]
    keys = {}

    def key(i):
        if i not in keys:
            u, p = graph[i], graph[i]["profile"]
            # As cargo's Profile hash: the profile's settings, not its name.
            profile = (p["opt_level"], str(p.get("debuginfo")), p.get("codegen_units"), p.get("lto"),
                       p.get("debug_assertions"), p.get("overflow_checks"), p.get("incremental"))
            deps = tuple(sorted(key(d["index"]) for d in u["dependencies"]))
            ident = (u["pkg_id"], u["target"]["name"], tuple(u["target"]["kind"]), u["mode"],
                     tuple(sorted(u["features"])), profile, u.get("platform"), deps)
            keys[i] = hashlib.sha1(repr(ident).encode()).hexdigest()
        return keys[i]

    return {key(i): u for i, u in enumerate(graph)}


def pkg_name(pkg_id):
    """`serde@1.0.229` for a registry package, `runner@0.1.0` for a workspace one."""
    source, _, version = pkg_id.partition("#")
    return version if "@" in version else f"{source.rstrip('/').rsplit('/', 1)[-1]}@{version}"


def main():
    verbose = "--verbose" in sys.argv
    seen = {}
    print(f"| {'invocation':<32} | units | new | new compiles |")
    print(f"|{'-' * 34}|------:|----:|-------------:|")
    for name, args in INVOCATIONS:
        graph = units(args)
        new = {k: u for k, u in graph.items() if k not in seen}
        compiles = [u for u in new.values() if u["mode"] != "run-custom-build"]
        print(f"| {name:<32} | {len(graph):>5} | {len(new):>3} | {len(compiles):>12} |")
        if verbose:
            names = {pkg_name(u["pkg_id"]) for u in compiles}
            print("    " + " ".join(sorted(names)))
        seen.update(new)


if __name__ == "__main__":
    main()
