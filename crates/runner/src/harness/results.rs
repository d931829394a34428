//! The results layout of a grid, and its tables.
//!
//! ```text
//! DIR/<grid>/                 <grid>: the experiment's `name`
//!   results.csv               one row per cell (failed ones included), rewritten atomically
//!   results.parquet           the same table
//!   <run-id>/                 <run-id>: a short hash of the cell's resolved config
//!     config.toml             the resolved config
//!     log.txt                 log lines
//!     metrics.jsonl           one line per evaluation
//!     result.json             final metrics, status, error, seconds, commit, versions, device,
//!                             settings the cell resolved itself (`resolved`)
//!     progress.json           while it runs: how far it is (what `grid list` shows)
//!     events.out.tfevents.*   with `tensorboard = true`: loss, metrics, learning rate per step
//!     .lock                   held while a process runs the cell (crate::harness::lock)
//!   .results.lock             held while a process rewrites the tables
//! ```
//!
//! Every file that is replaced is written to a temporary file in the same folder and renamed
//! over the old one, so a killed run (even `kill -9`) leaves either the old or the new file,
//! never a torn one. A cell whose `result.json` says `finished` is skipped when the grid runs
//! again; one that failed, was interrupted or never finished runs again, from its checkpoint
//! when it has one.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::Result;
use polars::prelude::*;
use serde::{Deserialize, Serialize};

use crate::harness::cell::Cell;

/// `result.json` of a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunResult {
    /// The run folder's name.
    pub run_id: String,
    /// The cell's position in the grid.
    pub cell: usize,
    /// How the run ended.
    pub status: RunStatus,
    /// Why it failed (with its causes).
    pub error: Option<String>,
    /// The cell's axis values.
    pub params: BTreeMap<String, String>,
    /// The task's main metric (model selection).
    pub main_metric: Option<String>,
    /// Metrics of the best evaluation.
    pub metrics: BTreeMap<String, f64>,
    /// Step of the best evaluation.
    pub best_step: Option<usize>,
    /// Metrics of the last evaluation.
    pub final_metrics: BTreeMap<String, f64>,
    /// Optimiser steps run.
    pub steps: Option<usize>,
    /// `(rate, main metric)` with a random fraction of FFN neurons ablated.
    pub ablation: Vec<(f64, f64)>,
    /// Settings resolved when the cell ran (see [`crate::harness::log::Outcome::resolved`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub resolved: BTreeMap<String, String>,
    /// Wall-clock seconds of the run.
    pub seconds: f64,
    /// When it started (UTC, RFC 3339).
    pub started: String,
    /// The git commit of the neuronlab source the binary was built from.
    pub commit: String,
    /// Versions of neuronlab and Burn.
    pub versions: BTreeMap<String, String>,
    /// Backend and device.
    pub device: String,
}

/// How a run ended, as `result.json` and `results.csv` write it (`finished`, `failed`,
/// `interrupted`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// It ran to the end and recorded its metrics.
    Finished,
    /// It stopped on an error (`error` says which); the next `grid run` runs it again.
    Failed,
    /// A signal stopped it (`error` says which and where, see
    /// [`crate::harness::signals`]); the next `grid run` resumes it from its checkpoint.
    Interrupted,
}

impl RunStatus {
    /// The status as written.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Finished => "finished",
            Self::Failed => "failed",
            Self::Interrupted => "interrupted",
        }
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl RunResult {
    /// Whether the run finished.
    pub fn finished(&self) -> bool {
        self.status == RunStatus::Finished
    }

    /// The `result.json` in `dir`, if it has one that parses.
    pub fn read(dir: &Path) -> Option<Self> {
        let text = std::fs::read_to_string(dir.join("result.json")).ok()?;
        serde_json::from_str(&text).ok()
    }
}

/// The folder of a cell.
pub fn run_dir<C>(grid_dir: &Path, cell: &Cell<C>) -> PathBuf {
    grid_dir.join(&cell.run_id)
}

/// The cell's `result.json`, if it has one that parses.
pub fn read_result<C>(grid_dir: &Path, cell: &Cell<C>) -> Option<RunResult> {
    RunResult::read(&run_dir(grid_dir, cell))
}

pub use super::atomic::write_atomic;

/// Rewrite `results.csv` and `results.parquet` from the `result.json` files of `cells` (cells
/// without one are left out). Columns: `run_id, status, error, param_<axis>…, <metric>…,
/// ablation_<rate>…, resolved_<setting>…, seconds, started, commit, device`.
pub fn write_tables<C>(grid_dir: &Path, cells: &[Cell<C>]) -> Result<usize> {
    let rows: Vec<RunResult> = cells
        .iter()
        .filter_map(|c| read_result(grid_dir, c))
        .collect();
    let axes: BTreeSet<&String> = cells.iter().flat_map(|c| c.params.keys()).collect();
    let metrics: BTreeSet<&String> = rows.iter().flat_map(|r| r.metrics.keys()).collect();
    let rates: BTreeSet<String> = rows
        .iter()
        .flat_map(|r| r.ablation.iter().map(|(rate, _)| format!("{rate}")))
        .collect();
    let text = |name: &str, f: &dyn Fn(&RunResult) -> Option<String>| {
        Column::new(name.into(), rows.iter().map(f).collect::<Vec<_>>())
    };
    let number = |name: &str, f: &dyn Fn(&RunResult) -> Option<f64>| {
        Column::new(name.into(), rows.iter().map(f).collect::<Vec<_>>())
    };
    let mut columns = vec![
        text("run_id", &|r| Some(r.run_id.clone())),
        text("status", &|r| Some(r.status.to_string())),
        text("error", &|r| r.error.clone()),
    ];
    for axis in &axes {
        columns.push(text(&format!("param_{axis}"), &|r| {
            r.params.get(*axis).cloned()
        }));
    }
    for m in &metrics {
        columns.push(number(m, &|r| r.metrics.get(*m).copied()));
    }
    for rate in &rates {
        columns.push(number(&format!("ablation_{rate}"), &|r| {
            r.ablation
                .iter()
                .find(|(x, _)| format!("{x}") == *rate)
                .map(|p| p.1)
        }));
    }
    let resolved: BTreeSet<&String> = rows.iter().flat_map(|r| r.resolved.keys()).collect();
    for key in &resolved {
        columns.push(text(&format!("resolved_{key}"), &|r| {
            r.resolved.get(*key).cloned()
        }));
    }
    columns.push(number("seconds", &|r| Some(r.seconds)));
    columns.push(text("started", &|r| Some(r.started.clone())));
    columns.push(text("commit", &|r| Some(r.commit.clone())));
    columns.push(text("device", &|r| Some(r.device.clone())));
    let mut df = DataFrame::new(rows.len(), columns)?;

    let mut csv = Vec::new();
    CsvWriter::new(&mut csv).finish(&mut df)?;
    write_atomic(&grid_dir.join("results.csv"), &csv)?;
    let mut parquet = Vec::new();
    ParquetWriter::new(&mut parquet).finish(&mut df)?;
    write_atomic(&grid_dir.join("results.parquet"), &parquet)?;
    Ok(rows.len())
}

/// The commit of the source tree this binary was built from (`unknown` outside a git checkout),
/// with `-dirty` when it has uncommitted changes.
pub fn source_commit() -> String {
    let dir = env!("CARGO_MANIFEST_DIR");
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    match git(&["rev-parse", "--short=12", "HEAD"]) {
        Some(commit) => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            if dirty {
                format!("{commit}-dirty")
            } else {
                commit
            }
        }
        None => "unknown".into(),
    }
}

/// Now, as UTC RFC 3339 (seconds).
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
