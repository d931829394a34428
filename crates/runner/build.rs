//! With the `tch` feature, give every binary and test of this crate an rpath to LibTorch's
//! libraries, so that `neuronlab` runs without `LD_LIBRARY_PATH`. The folder is `$LIBTORCH/lib`,
//! or, with `LIBTORCH_USE_PYTORCH`, the `torch/lib` of the Python that torch-sys uses
//! (`PYTHON_SYS_EXECUTABLE`, else `python3`), as torch-sys finds it.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    for var in ["LIBTORCH", "LIBTORCH_USE_PYTORCH", "PYTHON_SYS_EXECUTABLE"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    if std::env::var_os("CARGO_FEATURE_TCH").is_none() {
        return;
    }
    let lib = if let Some(root) = std::env::var_os("LIBTORCH") {
        PathBuf::from(root).join("lib")
    } else {
        let python = std::env::var("PYTHON_SYS_EXECUTABLE").unwrap_or_else(|_| "python3".into());
        let out = Command::new(&python)
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
                "the tch feature needs LibTorch: run `bash scripts/libtorch.sh` and build with \
                 LIBTORCH_USE_PYTORCH=1 PYTHON_SYS_EXECUTABLE=<its python> (or set LIBTORCH); \
                 `{python} -c 'import torch'` failed"
            ),
        }
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
}
