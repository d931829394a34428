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

/// Wait until a run folder of `grid_dir` reports optimiser step `at` or later, in its
/// `progress.json` (written every 2 s) or its checkpoint; fails after 2 minutes.
pub fn wait_until_step(grid_dir: &Path, at: u64) {
    let started = std::time::Instant::now();
    loop {
        let step = std::fs::read_dir(grid_dir)
            .ok()
            .into_iter()
            .flatten()
            .flat_map(|e| {
                let run = e.unwrap().path();
                let read = |name: &str| -> Option<serde_json::Value> {
                    serde_json::from_str(&std::fs::read_to_string(run.join(name)).ok()?).ok()
                };
                let progress = read("progress.json")
                    .filter(|v| v["unit"] == "steps")
                    .and_then(|v| v["done"].as_u64());
                let checkpoint = read("checkpoint/state.json").and_then(|v| v["step"].as_u64());
                [progress, checkpoint]
            })
            .flatten()
            .max();
        if step.is_some_and(|s| s >= at) {
            return;
        }
        assert!(
            started.elapsed().as_secs() < 120,
            "no step {at} in 2 minutes"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}
