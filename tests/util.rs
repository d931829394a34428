//! Helpers shared by the workspace's integration tests: the fixture helpers of [`support`]
//! and the `neuronlab` binary.

use std::path::{Path, PathBuf};

#[path = "support.rs"]
mod support;
pub use support::*;

/// Run the `neuronlab` binary in `cwd`.
pub fn neuronlab(args: &[&str], cwd: &Path) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_neuronlab"))
        .args(args)
        .current_dir(cwd)
        .env("NO_COLOR", "1")
        .output()
        .expect("neuronlab runs")
}

/// Standard output, then standard error.
pub fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The cells of a comma-separated file (no quoting), header included.
pub fn csv_rows(path: &Path) -> Vec<Vec<String>> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| l.split(',').map(str::to_owned).collect())
        .collect()
}

/// `neuronlab grid run EXP --output runs --dry-run` in `root`.
pub fn dry_run(exp: &Path, root: &Path) -> std::process::Output {
    neuronlab(
        &[
            "grid",
            "run",
            exp.to_str().unwrap(),
            "--output",
            "runs",
            "--dry-run",
        ],
        root,
    )
}

/// The paths of the files in `dir` whose names start with `prefix`.
pub fn files_starting_with(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix))
        .collect()
}
