//! A run's log: `log.txt` (lines, echoed on stderr with the cell's prefix), `metrics.jsonl`
//! (one [`EvalRecord`] per evaluation), and what a finished run reports ([`Outcome`]).

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use serde::Serialize;

/// One evaluation, a line of `metrics.jsonl`.
#[derive(Debug, Clone, Serialize)]
pub struct EvalRecord {
    /// Optimiser steps done.
    pub step: usize,
    /// Epochs done (fractional).
    pub epoch: f64,
    /// Mean training loss since the previous evaluation.
    pub train_loss: f64,
    /// Learning rate of the last step.
    pub learning_rate: f64,
    /// Evaluation metrics.
    pub metrics: BTreeMap<String, f64>,
    /// Seconds since the run started.
    pub seconds: f64,
}

/// What a finished run reports.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// The main metric's name.
    pub main_metric: String,
    /// Metrics of the best evaluation (a study: its summary numbers).
    pub metrics: BTreeMap<String, f64>,
    /// Step of the best evaluation (training runs).
    pub best_step: Option<usize>,
    /// Metrics of the last evaluation.
    pub final_metrics: BTreeMap<String, f64>,
    /// Optimiser steps run (training runs).
    pub steps: Option<usize>,
    /// `(rate, main metric)` of the best model with that fraction of FFN neurons ablated.
    pub ablation: Vec<(f64, f64)>,
}

/// Where a run writes its log lines and evaluations.
pub struct RunLog {
    log: std::fs::File,
    metrics: std::fs::File,
    terminal: bool,
    prefix: String,
}

impl RunLog {
    /// Append to `log.txt` and `metrics.jsonl` in `dir`; lines are prefixed by `prefix` on stderr.
    pub fn open(dir: &Path, prefix: String) -> Result<Self> {
        let open = |name: &str| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join(name))
                .with_context(|| format!("cannot open {}", dir.join(name).display()))
        };
        Ok(Self {
            log: open("log.txt")?,
            metrics: open("metrics.jsonl")?,
            terminal: std::io::stderr().is_terminal(),
            prefix,
        })
    }

    /// A line for the log file and stderr.
    pub fn line(&mut self, text: &str) {
        let _ = writeln!(self.log, "{text}");
        if self.terminal {
            eprint!("\r\x1b[2K");
        }
        eprintln!("{} {text}", self.prefix);
    }

    /// Name the modules a model initialised from scratch (a head the checkpoint lacks), if any.
    pub fn initialised(&mut self, report: &models::LoadReport) {
        if !report.initialised.is_empty() {
            self.line(&format!("initialised: {}", report.initialised.join(", ")));
        }
    }

    /// Progress: a redrawn line on a terminal, nothing otherwise (evaluations are logged).
    pub(crate) fn progress(&mut self, step: usize, total: usize, loss: f64, started: Instant) {
        if self.terminal {
            let width = 30;
            let done = width * step / total.max(1);
            let secs = started.elapsed().as_secs_f64();
            let eta = secs / step.max(1) as f64 * (total - step) as f64;
            eprint!(
                "\r\x1b[2K{} [{}{}] {step}/{total} loss {loss:.4} {secs:.0}s (eta {eta:.0}s)",
                self.prefix,
                "#".repeat(done),
                ".".repeat(width - done),
            );
            let _ = std::io::stderr().flush();
        }
    }

    pub(crate) fn record(&mut self, r: &EvalRecord) -> Result<()> {
        writeln!(self.metrics, "{}", serde_json::to_string(r)?)?;
        self.metrics.flush()?;
        Ok(())
    }
}
