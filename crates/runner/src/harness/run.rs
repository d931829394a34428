//! The resumable loop over a grid's cells: a cell whose `result.json` says `finished` is
//! skipped; any other runs (continuing from its checkpoint where its kind keeps one), and its
//! result, failed or not, is written before the next cell starts. A failing or panicking cell
//! is recorded as failed and the grid goes on.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::tensor::backend::Backend;

use crate::backend::BackendJob;
use crate::harness::grid::{Cell, Expand, Grid, RunContext, Shared};
use crate::harness::log::RunLog;
use crate::harness::results::{
    RunResult, read_result, run_dir, source_commit, utc_now, write_atomic, write_tables,
};

/// `neuronlab grid run`.
#[derive(Debug, Clone)]
pub struct GridRun<C> {
    /// The experiment file.
    pub file: PathBuf,
    /// Results root.
    pub output: PathBuf,
    /// Only this cell.
    pub cell: Option<usize>,
    /// Device label for result.json.
    pub device_label: String,
    /// Where `${ARTEFACTS}` points.
    pub artefacts: PathBuf,
    /// The kinds of cell.
    pub kinds: std::marker::PhantomData<C>,
}

/// What a grid run did.
#[derive(Debug, Default)]
pub struct GridSummary {
    /// Cells that finished in this run.
    pub finished: usize,
    /// Cells skipped because they had finished before.
    pub skipped: usize,
    /// Cells that failed, with their errors.
    pub failed: Vec<(usize, String)>,
}

impl<C: Expand> BackendJob for GridRun<C> {
    type Output = GridSummary;

    fn run<B: Backend>(self, device: B::Device) -> Result<GridSummary> {
        let grid = Grid::<C>::open(&self.file, &self.output, &self.artefacts)?;
        let selected: Vec<&Cell<C>> = match self.cell {
            Some(n) => vec![grid.cells.get(n).with_context(|| {
                format!(
                    "--cell {n}: the grid has {} cells (0..{})",
                    grid.cells.len(),
                    grid.cells.len().saturating_sub(1)
                )
            })?],
            None => grid.cells.iter().collect(),
        };
        let problems = grid.validate();
        if !problems.is_empty() {
            bail!(
                "{}: {} problem(s) before any cell ran:\n  {}",
                self.file.display(),
                problems.len(),
                problems.join("\n  ")
            );
        }
        std::fs::create_dir_all(&grid.dir)
            .with_context(|| format!("cannot create {}", grid.dir.display()))?;
        let device_name = format!("{} / {}", self.device_label, B::name(&device));
        let commit = source_commit();
        let mut shared = Shared::default();
        let mut summary = GridSummary::default();
        let total = grid.cells.len();
        for cell in selected {
            if read_result(&grid.dir, cell).is_some_and(|r| r.finished()) {
                eprintln!(
                    "[{}/{total}] {} finished before; skipped",
                    cell.index + 1,
                    cell.run_id
                );
                summary.skipped += 1;
                continue;
            }
            let dir = run_dir(&grid.dir, cell);
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            // A run with a checkpoint continues from it; any other starts clean.
            let _ = std::fs::remove_file(dir.join("result.json"));
            let resumed = cell.config.resume(&dir)?;
            if !resumed {
                for stale in ["log.txt", "metrics.jsonl"] {
                    let _ = std::fs::remove_file(dir.join(stale));
                }
            }
            write_atomic(
                &dir.join("config.toml"),
                toml::to_string(&cell.config)?.as_bytes(),
            )?;
            let params: Vec<String> = cell
                .params
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            let mut log = RunLog::open(&dir, format!("[{}/{total}]", cell.index + 1))?;
            log.line(&format!("{} {}", cell.run_id, params.join(" ")));
            let started = utc_now();
            let clock = Instant::now();
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                cell.config.run::<B>(&mut RunContext {
                    grid_dir: &grid.dir,
                    dir: &dir,
                    output: &self.output,
                    log: &mut log,
                    device: &device,
                    shared: &mut shared,
                })
            }))
            .unwrap_or_else(|panic| {
                let msg = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "unknown panic".into());
                Err(anyhow::anyhow!("panicked: {msg}"))
            });
            let mut result = RunResult {
                run_id: cell.run_id.clone(),
                cell: cell.index,
                status: "finished".into(),
                error: None,
                params: cell.params.clone(),
                main_metric: None,
                metrics: Default::default(),
                best_step: None,
                final_metrics: Default::default(),
                steps: None,
                ablation: Vec::new(),
                seconds: clock.elapsed().as_secs_f64(),
                started,
                commit: commit.clone(),
                versions: [
                    (
                        "neuronlab".to_string(),
                        env!("CARGO_PKG_VERSION").to_string(),
                    ),
                    ("burn".to_string(), "0.21.0".to_string()),
                ]
                .into(),
                device: device_name.clone(),
            };
            match outcome {
                Ok(o) => {
                    let value = o.metrics.get(&o.main_metric).copied().unwrap_or(f64::NAN);
                    match o.steps {
                        Some(_) => log.line(&format!(
                            "finished in {:.0}s: {} {value:.4} (best, step {})",
                            result.seconds,
                            o.main_metric,
                            o.best_step.unwrap_or(0)
                        )),
                        None => log.line(&format!(
                            "finished in {:.0}s: {} {value:.4}",
                            result.seconds, o.main_metric
                        )),
                    }
                    result.main_metric = Some(o.main_metric);
                    result.metrics = o.metrics;
                    result.best_step = o.best_step;
                    result.final_metrics = o.final_metrics;
                    result.steps = o.steps;
                    result.ablation = o.ablation;
                    summary.finished += 1;
                }
                Err(e) => {
                    let msg = format!("{e:#}");
                    log.line(&format!("FAILED: {msg}"));
                    result.status = "failed".into();
                    result.error = Some(msg.clone());
                    summary.failed.push((cell.index, msg));
                }
            }
            write_atomic(
                &dir.join("result.json"),
                serde_json::to_string_pretty(&result)?.as_bytes(),
            )?;
            write_tables(&grid.dir, &grid.cells)?;
        }
        write_tables(&grid.dir, &grid.cells)?;
        Ok(summary)
    }
}
