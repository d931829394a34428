//! With the `tch` feature, give every binary and test of this crate an rpath to LibTorch's
//! libraries, so that `neuronlab` runs without `LD_LIBRARY_PATH`. The folder is `$LIBTORCH/lib`,
//! or, with `LIBTORCH_USE_PYTORCH`, the `torch/lib` of the Python that torch-sys uses (`python`
//! in an active venv, else `python3`; `bash scripts/libtorch.sh cargo build --features tch`
//! sets that up).

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var_os("CARGO_FEATURE_TCH").is_none() {
        return;
    }
    for var in ["LIBTORCH", "LIBTORCH_USE_PYTORCH", "VIRTUAL_ENV"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let lib = if let Some(root) = std::env::var_os("LIBTORCH") {
        PathBuf::from(root).join("lib")
    } else {
        let python = if std::env::var_os("VIRTUAL_ENV").is_some() {
            "python"
        } else {
            "python3"
        };
        let out = Command::new(python)
            .args([
                "-c",
                "import os, torch; print(os.path.join(os.path.dirname(torch.__file__), 'lib'))",
            ])
            .output();
        match out {
            Ok(o) if o.status.success() => {
                PathBuf::from(String::from_utf8_lossy(&o.stdout).trim().to_owned())
            }
            _ => panic!(
                "the tch feature needs LibTorch: build through `bash scripts/libtorch.sh cargo \
                 build --features tch` (or set LIBTORCH); `{python} -c 'import torch'` failed"
            ),
        }
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
}
