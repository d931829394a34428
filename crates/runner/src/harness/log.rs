//! A run's log: `log.txt` (lines, echoed on stderr with the cell's prefix), `metrics.jsonl`
//! (one [`EvalRecord`] per evaluation), `progress.json` while it runs ([`ProgressFile`], what
//! `grid list` shows), and what a finished run reports ([`Outcome`]).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use indicatif::MultiProgress;
use serde::{Deserialize, Serialize};

use super::atomic::write_atomic;
use super::progress::Progress;
use super::tensorboard::EventWriter;

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
    /// Settings the cell resolved when it ran, where the experiment file left them to it
    /// (`qa.layout`: which HotpotQA layout the tokenizer allowed).
    pub resolved: BTreeMap<String, String>,
}

/// The file a running cell keeps current (about every few seconds): how far it is.
pub const PROGRESS_FILE: &str = "progress.json";

/// How often `progress.json` is rewritten at most.
const PROGRESS_FILE_EVERY: Duration = Duration::from_secs(2);

/// `progress.json`: where a running cell is, for `grid list`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProgressFile {
    /// What is counted (`steps`, `windows`).
    pub unit: String,
    /// How many are done.
    pub done: u64,
    /// Out of.
    pub total: u64,
    /// Seconds left at the current rate, when known.
    pub seconds_left: Option<f64>,
    /// How it goes (`loss 0.5231 · accuracy 0.8120`).
    pub message: String,
}

/// Where a run writes its log lines and evaluations.
pub struct RunLog {
    log: std::fs::File,
    metrics: std::fs::File,
    dir: PathBuf,
    prefix: String,
    progress: Option<Progress>,
    /// The bar of an evaluation under way (a terminal only).
    evaluation: Option<Progress>,
    /// The bars of the run, drawn together.
    bars: MultiProgress,
    progress_written: Option<Instant>,
    /// The last evaluation's metrics, shown beside the loss.
    last_eval: String,
    /// The TensorBoard event file, when the cell asked for one.
    tensorboard: Option<EventWriter>,
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
            dir: dir.to_path_buf(),
            prefix,
            progress: None,
            evaluation: None,
            bars: MultiProgress::new(),
            progress_written: None,
            last_eval: String::new(),
            tensorboard: None,
        })
    }

    /// Also write the steps and evaluations as TensorBoard scalars, into a new event file in the
    /// run folder (`train/loss`, `train/learning_rate`, `eval/<metric>`).
    pub(crate) fn tensorboard(&mut self) -> Result<()> {
        let writer = EventWriter::create(&self.dir)?;
        self.line(&format!(
            "TensorBoard scalars in {}",
            writer
                .path()
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
        ));
        self.tensorboard = Some(writer);
        Ok(())
    }

    /// A line for the log file and stderr (above the progress bar, if one is shown).
    pub fn line(&mut self, text: &str) {
        let _ = writeln!(self.log, "{text}");
        let line = format!("{} {text}", self.prefix);
        match &self.progress {
            Some(p) => p.println(&line),
            None => eprintln!("{line}"),
        }
    }

    /// Name the modules a model initialised from scratch (a head the checkpoint lacks), if any.
    pub fn initialised(&mut self, report: &models::LoadReport) {
        if !report.initialised.is_empty() {
            self.line(&format!("initialised: {}", report.initialised.join(", ")));
        }
    }

    /// Training progress, called after each optimiser step: `step` of `total` are done, with
    /// this `loss` at learning rate `lr`, the loop (of this process) having started at `started`
    /// after step `step - 1` of a first call (a resumed run counts its rate from where it
    /// resumed). Shows the loss and the last evaluation's metrics.
    pub(crate) fn progress(
        &mut self,
        step: usize,
        total: usize,
        loss: f64,
        lr: f64,
        started: Instant,
    ) -> Result<()> {
        if let Some(tb) = self.tensorboard.as_mut() {
            tb.scalars(
                step as u64,
                &[("train/loss", loss), ("train/learning_rate", lr)],
            )?;
        }
        let message = if self.last_eval.is_empty() {
            format!("loss {loss:.4}")
        } else {
            format!("loss {loss:.4} · {}", self.last_eval)
        };
        self.count(
            "steps",
            step,
            total,
            (step.saturating_sub(1), started),
            &message,
        );
        Ok(())
    }

    /// Progress of any count (`windows` of a language's statistics, ...): `done` of `total`
    /// `unit`s, this process having started on them with `start.0` done at `start.1` (read at
    /// the first call of a count). A new unit or total, or a count going back, starts a new bar.
    pub(crate) fn count(
        &mut self,
        unit: &str,
        done: usize,
        total: usize,
        start: (usize, Instant),
        message: &str,
    ) {
        let (done, total) = (done as u64, total as u64);
        if !self
            .progress
            .as_ref()
            .is_some_and(|p| p.goes_on(unit, total, done))
        {
            self.progress = None;
            let (from, since) = ((start.0 as u64).min(done), start.1);
            self.progress =
                Some(Progress::new(&self.prefix, unit, total, from, since).within(&self.bars));
        }
        let progress = self.progress.as_mut().expect("set above");
        progress.update(done, message);
        let due = self
            .progress_written
            .is_none_or(|t| t.elapsed() >= PROGRESS_FILE_EVERY);
        if due || done >= total {
            self.progress_written = Some(Instant::now());
            if let Some(tb) = self.tensorboard.as_mut() {
                let _ = tb.flush();
            }
            let file = ProgressFile {
                unit: unit.into(),
                done,
                total,
                seconds_left: progress.seconds_left(),
                message: message.into(),
            };
            // Progress is for people watching; a failed write costs the run nothing.
            if let Ok(json) = serde_json::to_string(&file) {
                let _ = write_atomic(&self.dir.join(PROGRESS_FILE), json.as_bytes());
            }
        }
    }

    /// An evaluation's progress: `done` of `total` `unit`s (examples, questions, windows), as a
    /// second bar on a terminal and nothing elsewhere (the evaluation's result is logged). The
    /// bar goes when `done` reaches `total`.
    pub(crate) fn evaluating(&mut self, unit: &str, done: usize, total: usize, what: &str) {
        let (done, total) = (done as u64, total as u64);
        if !self
            .evaluation
            .as_ref()
            .is_some_and(|p| p.goes_on(unit, total, done))
        {
            let prefix = format!("{} {what}", self.prefix);
            let bar = Progress::new(&prefix, unit, total, 0, Instant::now());
            self.evaluation = Some(bar.terminal_only().within(&self.bars));
        }
        if let Some(bar) = self.evaluation.as_mut() {
            bar.update(done, "");
        }
        if done >= total {
            self.evaluation = None;
        }
    }

    pub(crate) fn record(&mut self, r: &EvalRecord) -> Result<()> {
        writeln!(self.metrics, "{}", serde_json::to_string(r)?)?;
        self.metrics.flush()?;
        if let Some(tb) = self.tensorboard.as_mut() {
            let tags: Vec<String> = r.metrics.keys().map(|k| format!("eval/{k}")).collect();
            let values: Vec<(&str, f64)> = tags
                .iter()
                .map(String::as_str)
                .zip(r.metrics.values().copied())
                .collect();
            tb.scalars(r.step as u64, &values)?;
            tb.flush()?;
        }
        let shown: Vec<String> = r
            .metrics
            .iter()
            .take(3)
            .map(|(k, v)| format!("{k} {v:.4}"))
            .collect();
        self.last_eval = shown.join(", ");
        Ok(())
    }

    /// The run is over: the bar goes, and so does `progress.json` (its result says the rest).
    pub(crate) fn finish(&mut self) {
        self.progress = None;
        self.evaluation = None;
        if let Some(mut tb) = self.tensorboard.take() {
            let _ = tb.flush();
        }
        let _ = std::fs::remove_file(self.dir.join(PROGRESS_FILE));
    }
}
