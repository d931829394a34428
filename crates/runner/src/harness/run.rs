//! The resumable loop over a grid's cells: a cell whose `result.json` says `finished` is
//! skipped; any other runs (continuing from its checkpoint where its kind keeps one), and its
//! result, failed or not, is written before the next cell starts. A failing or panicking cell
//! is recorded as failed and the grid goes on; so is one whose files cannot be written (a full
//! disk, a read-only folder). A cell that another process is running (it holds the run folder's
//! lock, [`crate::harness::lock`]) is skipped.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::tensor::backend::Backend;

use crate::backend::BackendJob;
use crate::harness::grid::{Cell, Expand, Grid, RunContext, Shared};
use crate::harness::lock::{RunLock, TablesLock, clean_staging};
use crate::harness::log::{Outcome, RunLog};
use crate::harness::results::{
    RunResult, RunStatus, read_result, run_dir, source_commit, utc_now, write_atomic, write_tables,
};
use crate::harness::signals::{self, Interrupted};

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
    /// Cells skipped because another process was running them.
    pub elsewhere: usize,
    /// Cells that failed, with their errors.
    pub failed: Vec<(usize, String)>,
    /// Errors outside any cell (the grid's tables could not be rewritten).
    pub problems: Vec<String>,
    /// The stopping signal that ended the run early (see [`crate::harness::signals`]).
    pub interrupted: Option<i32>,
}

impl<C: Expand> GridRun<C> {
    /// At the start and end of a run: remove what killed processes left behind (temporary
    /// files of the grid, its shared folders and the output root's caches, the dot-folders) and
    /// rewrite both tables from the run folders, under the tables' lock.
    fn refresh(&self, grid: &Grid<C>) -> Result<()> {
        let _tables = TablesLock::acquire(&grid.dir)?;
        let mut folders = vec![grid.dir.clone()];
        for root in [&grid.dir, &self.output] {
            let Ok(entries) = std::fs::read_dir(root) else {
                continue;
            };
            folders.extend(entries.flatten().map(|e| e.path()).filter(|p| {
                p.is_dir()
                    && (root == &grid.dir
                        || p.file_name()
                            .is_some_and(|n| n.to_string_lossy().starts_with('.')))
            }));
        }
        for folder in folders {
            clean_staging(&folder, false);
        }
        write_tables(&grid.dir, &grid.cells)?;
        Ok(())
    }

    /// Rewrite both tables after a cell, under the tables' lock.
    fn tables(&self, grid: &Grid<C>) -> Result<()> {
        let _tables = TablesLock::acquire(&grid.dir)?;
        write_tables(&grid.dir, &grid.cells)?;
        Ok(())
    }

    /// Prepare `dir` for `cell` and run it: every error, an I/O error of the harness's own files
    /// included, is the cell's.
    fn run_cell<B: Backend>(
        cell: &Cell<C>,
        dir: &Path,
        total: usize,
        log: &mut Option<RunLog>,
        ctx: (&Path, &Path, &B::Device, &mut Shared),
    ) -> Result<Outcome> {
        let (grid_dir, output, device, shared) = ctx;
        // A run with a checkpoint continues from it; any other starts clean.
        let _ = std::fs::remove_file(dir.join("result.json"));
        let resumed = cell.config.resume(dir)?;
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
        let log = log.insert(RunLog::open(dir, format!("[{}/{total}]", cell.index + 1))?);
        log.line(&format!("{} {}", cell.run_id, params.join(" ")));
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            cell.config.run::<B>(&mut RunContext {
                grid_dir,
                dir,
                output,
                log,
                device,
                shared,
            })
        }))
        .unwrap_or_else(|panic| {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            Err(anyhow::anyhow!("panicked: {msg}"))
        })
    }
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
        let mut summary = GridSummary::default();
        if let Err(e) = self.refresh(&grid) {
            summary.problems.push(format!("{e:#}"));
        }
        let device_name = format!("{} / {}", self.device_label, B::name(&device));
        let commit = source_commit();
        let mut shared = Shared::default();
        let total = grid.cells.len();
        for cell in selected {
            if let Some(signal) = signals::received() {
                summary.interrupted = Some(signal);
                break;
            }
            let at = format!("[{}/{total}] {}", cell.index + 1, cell.run_id);
            if read_result(&grid.dir, cell).is_some_and(|r| r.finished()) {
                eprintln!("{at} finished before; skipped");
                summary.skipped += 1;
                continue;
            }
            let dir = run_dir(&grid.dir, cell);
            let lock = std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))
                .and_then(|()| RunLock::try_acquire(&dir));
            let _lock = match lock {
                Ok(Some(lock)) => lock,
                Ok(None) => {
                    eprintln!("{at} is running in another process; skipped");
                    summary.elsewhere += 1;
                    continue;
                }
                Err(e) => {
                    let msg = format!("{e:#}");
                    eprintln!("{at} FAILED: {msg}");
                    summary.failed.push((cell.index, msg));
                    continue;
                }
            };
            // Another process may have finished it between the first look and the lock.
            if read_result(&grid.dir, cell).is_some_and(|r| r.finished()) {
                eprintln!("{at} finished by another process; skipped");
                summary.skipped += 1;
                continue;
            }
            clean_staging(&dir, true);
            let started = utc_now();
            let clock = Instant::now();
            let mut log = None;
            let outcome = Self::run_cell::<B>(
                cell,
                &dir,
                total,
                &mut log,
                (&grid.dir, &self.output, &device, &mut shared),
            );
            let mut line = |text: &str| match log.as_mut() {
                Some(log) => log.line(text),
                None => eprintln!("{at} {text}"),
            };
            let stamp = (started, clock.elapsed().as_secs_f64(), commit.as_str());
            let result = run_result(cell, outcome, stamp, &device_name, &mut line);
            if !result.finished() {
                // A failed write's staging (a checkpoint on a full disk) goes, to leave room
                // for the result.
                clean_staging(&dir, true);
            }
            let recorded = serde_json::to_string_pretty(&result)
                .map_err(anyhow::Error::from)
                .and_then(|json| write_atomic(&dir.join("result.json"), json.as_bytes()));
            match (&result.error, recorded) {
                (None, Ok(())) => {
                    cell.config.recorded(&dir);
                    summary.finished += 1;
                }
                (Some(_), Ok(())) if result.status == RunStatus::Interrupted => {
                    summary.interrupted = signals::received();
                }
                (Some(msg), Ok(())) => summary.failed.push((cell.index, msg.clone())),
                (error, Err(e)) => {
                    let msg = match error {
                        Some(msg) => format!("{msg}; its result was not recorded: {e:#}"),
                        None => format!("it finished, but its result was not recorded: {e:#}"),
                    };
                    line(&format!("FAILED: {msg}"));
                    summary.failed.push((cell.index, msg));
                }
            }
            if let Some(log) = log.as_mut() {
                log.finish();
            }
            if let Err(e) = self.tables(&grid) {
                summary.problems.push(format!("{e:#}"));
            }
            if summary.interrupted.is_some() {
                break;
            }
        }
        if let Err(e) = self.refresh(&grid) {
            summary.problems.push(format!("{e:#}"));
        }
        summary.problems.dedup();
        Ok(summary)
    }
}

/// What `result.json` records of `cell`'s run: `outcome` (a line for the log says how it ended)
/// with `(started, seconds, commit)` and the device.
fn run_result<C>(
    cell: &Cell<C>,
    outcome: Result<Outcome>,
    (started, seconds, commit): (String, f64, &str),
    device: &str,
    line: &mut dyn FnMut(&str),
) -> RunResult {
    let mut result = RunResult {
        run_id: cell.run_id.clone(),
        cell: cell.index,
        status: RunStatus::Finished,
        error: None,
        params: cell.params.clone(),
        main_metric: None,
        metrics: Default::default(),
        best_step: None,
        final_metrics: Default::default(),
        steps: None,
        ablation: Vec::new(),
        resolved: Default::default(),
        seconds,
        started,
        commit: commit.to_string(),
        versions: [
            (
                "neuronlab".to_string(),
                env!("CARGO_PKG_VERSION").to_string(),
            ),
            ("burn".to_string(), "0.21.0".to_string()),
        ]
        .into(),
        device: device.to_string(),
    };
    match outcome {
        Ok(o) => {
            let value = o.metrics.get(&o.main_metric).copied().unwrap_or(f64::NAN);
            match o.steps {
                Some(_) => line(&format!(
                    "finished in {seconds:.0}s: {} {value:.4} (best, step {})",
                    o.main_metric,
                    o.best_step.unwrap_or(0)
                )),
                None => line(&format!(
                    "finished in {seconds:.0}s: {} {value:.4}",
                    o.main_metric
                )),
            }
            result.main_metric = Some(o.main_metric);
            result.metrics = o.metrics;
            result.best_step = o.best_step;
            result.final_metrics = o.final_metrics;
            result.steps = o.steps;
            result.ablation = o.ablation;
            result.resolved = o.resolved;
        }
        Err(e) => {
            let msg = format!("{e:#}");
            if Interrupted::of(&e).is_some() {
                line(&format!("INTERRUPTED: {msg}"));
                result.status = RunStatus::Interrupted;
            } else {
                line(&format!("FAILED: {msg}"));
                result.status = RunStatus::Failed;
            }
            result.error = Some(msg);
        }
    }
    result
}
