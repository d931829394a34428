//! `neuronlab grid run | list | export`: run an experiment grid, resumably, into the results
//! layout of [`crate::results`].

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::backend::Autodiff;
use burn::tensor::backend::Backend;

use crate::backend::BackendTask;
use crate::experiment::{ExperimentFile, Task};
use crate::grid::{AdaptCell, Cell, CellConfig, StudyCell, TrainCell, expand};
use crate::results::{
    RunResult, read_result, run_dir, source_commit, status, utc_now, write_atomic, write_tables,
};
use crate::run::{ResumeState, RunLog, TokenCache, train_cell};

/// Where `${ARTEFACTS}` points: `$NEURONLAB_CACHE`, else `.cache/artefacts` in the current
/// folder (as the fetch script run from the checkout), made absolute.
pub fn artefacts_dir() -> PathBuf {
    let dir = std::env::var_os("NEURONLAB_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(".cache/artefacts"));
    std::path::absolute(&dir).unwrap_or(dir)
}

/// An experiment file, expanded.
pub struct Grid {
    /// The file.
    pub file: ExperimentFile,
    /// Its cells in order.
    pub cells: Vec<Cell>,
    /// `DIR/<grid>`.
    pub dir: PathBuf,
}

impl Grid {
    /// Read and expand `path`; results under `output/<name>`.
    pub fn open(path: &Path, output: &Path) -> Result<Self> {
        let file = ExperimentFile::read(path, &artefacts_dir())?;
        let cells = expand(&file)?;
        let dir = output.join(&file.experiment.name);
        Ok(Self { file, cells, dir })
    }

    /// Check that every cell can start: the model and dataset files exist and parse, the
    /// tokenizer matches the model, and the task fits the head. Returns one line per problem.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for cell in &self.cells {
            let key = match &cell.config {
                CellConfig::Train(c) => {
                    (c.model_name.clone(), format!("dataset {}", c.dataset_name))
                }
                CellConfig::Study(s) => (s.model_name.clone(), format!("study {}", s.study_name)),
                CellConfig::Adapt(a) => (a.model_name.clone(), format!("task {}", a.task_name)),
            };
            if !seen.insert(key) {
                continue;
            }
            let at = format!("cell {} ({})", cell.index, cell.run_id);
            let mut paths = vec![("model", cell.config.model_name(), cell.config.model_dir())];
            match &cell.config {
                CellConfig::Train(c) => {
                    paths.push(("dataset", c.dataset_name.as_str(), c.dataset_dir.as_path()))
                }
                CellConfig::Study(s) => {
                    for (lang, files) in &s.files {
                        paths.extend(
                            files
                                .iter()
                                .map(|(_, p)| ("text", lang.as_str(), p.as_path())),
                        );
                    }
                    if let Some(p) = &s.neurons_file {
                        paths.push(("neurons", s.study_name.as_str(), p.as_path()));
                    }
                    for p in &s.statistics_files {
                        paths.push(("statistics", s.study_name.as_str(), p.as_path()));
                    }
                }
                CellConfig::Adapt(a) => {
                    paths.push(("training file", a.train_file.0.as_str(), &a.train_file.1));
                    for (lang, p) in &a.eval_files {
                        paths.push(("evaluation file", lang.as_str(), p.as_path()));
                    }
                    if let Some(p) = &a.neurons_file {
                        paths.push(("neurons", a.task_name.as_str(), p.as_path()));
                    }
                }
            }
            let unset: Vec<String> = paths
                .iter()
                .filter_map(|(what, name, path)| {
                    let text = path.to_string_lossy();
                    let start = text.find("${")?;
                    let var = text[start + 2..].split('}').next().unwrap_or("");
                    Some(format!(
                        "{at}: {what} `{name}`: the environment variable {var} is not set (the \
                         path is {})",
                        path.display()
                    ))
                })
                .collect();
            if !unset.is_empty() {
                problems.extend(unset);
                continue;
            }
            let checks = match &cell.config {
                CellConfig::Train(c) => vec![check_encoder(c), check_dataset(c)],
                CellConfig::Study(s) => vec![check_study_inputs(s)],
                CellConfig::Adapt(a) => vec![check_adapt_inputs(a)],
            };
            problems.extend(
                checks
                    .into_iter()
                    .filter_map(Result::err)
                    .map(|e| format!("{at}: {e:#}")),
            );
        }
        problems
    }

    /// One line per cell: index, run id, status, axis values.
    pub fn plan(&self) -> String {
        let mut out = format!(
            "grid `{}`: {} cells, results in {}\n",
            self.file.experiment.name,
            self.cells.len(),
            self.dir.display()
        );
        for cell in &self.cells {
            let params: Vec<String> = cell
                .params
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            out.push_str(&format!(
                "{:>4}  {}  {:<8}  {}\n",
                cell.index,
                cell.run_id,
                status(&self.dir, cell),
                params.join(" ")
            ));
        }
        out
    }
}

fn check_encoder(c: &TrainCell) -> Result<()> {
    let config = models::EncoderConfig::from_file(c.model_dir.join("config.json"))
        .with_context(|| format!("model `{}`", c.model_name))?;
    models::TextTokenizer::from_dir(&c.model_dir, &config)
        .with_context(|| format!("model `{}`: tokenizer", c.model_name))?;
    Ok(())
}

fn check_dataset(c: &TrainCell) -> Result<()> {
    let exists = |p: PathBuf| -> Result<()> {
        if p.is_file() {
            Ok(())
        } else {
            bail!(
                "dataset `{}`: {} does not exist",
                c.dataset_name,
                p.display()
            )
        }
    };
    match (&c.dataset.task, &c.dataset.ranking) {
        (Task::ExtractiveQa, _) => {
            let (train, eval) = crate::data::split_files(&c.dataset, &c.dataset_dir)?;
            return exists(train).and(exists(eval));
        }
        (Task::Ranking, Some(r)) => {
            let named = [
                &r.collection,
                &r.train_queries,
                &r.train_qrels,
                &r.train_candidates,
                &r.train_triples,
                &r.eval_queries,
            ];
            let given = [&r.eval_qrels, &r.eval_candidates];
            for f in named.into_iter().flatten().chain(given) {
                exists(r.file(&c.dataset_dir, f))?;
            }
            return Ok(());
        }
        _ => {}
    }
    let d = crate::data::load(&c.dataset, &c.dataset_dir)
        .with_context(|| format!("dataset `{}`", c.dataset_name))?;
    match c.dataset.task {
        Task::Classification if d.labels.len() < 2 => bail!(
            "dataset `{}`: a classification task needs at least 2 labels, found {}",
            c.dataset_name,
            d.labels.len()
        ),
        Task::Regression if !d.labels.is_empty() => bail!(
            "dataset `{}`: task = \"regression\" but the labels are classes",
            c.dataset_name
        ),
        _ => Ok(()),
    }
}

/// The files a study reads exist, and the model is a decoder with a tokenizer.
fn check_study_inputs(s: &StudyCell) -> Result<()> {
    for (lang, files) in &s.files {
        for (text, path) in files {
            if !path.is_file() {
                bail!(
                    "text `{text}`, language {lang}: no such file {}",
                    path.display()
                );
            }
        }
    }
    if let Some(p) = &s.neurons_file
        && !p.is_file()
    {
        bail!(
            "study `{}`: no such neuron-set file {}",
            s.study_name,
            p.display()
        );
    }
    if let Some(p) = s.statistics_files.iter().find(|p| !p.is_file()) {
        bail!(
            "study `{}`: no such statistics file {}",
            s.study_name,
            p.display()
        );
    }
    let checkpoint = models::DecoderCheckpoint::open(&s.model_dir)
        .with_context(|| format!("model `{}`", s.model_name))?;
    if checkpoint.tokenizer.is_none() {
        bail!(
            "model `{}`: no tokenizer in {} (a study tokenizes its texts)",
            s.model_name,
            s.model_dir.display()
        );
    }
    Ok(())
}

/// The files a fine-tuning cell reads exist, and the model is a decoder with a tokenizer.
fn check_adapt_inputs(a: &AdaptCell) -> Result<()> {
    let (lang, path) = &a.train_file;
    if !path.is_file() {
        bail!(
            "task `{}`: no training file for language {lang}: {}",
            a.task_name,
            path.display()
        );
    }
    for (lang, path) in &a.eval_files {
        if !path.is_file() {
            bail!(
                "task `{}`: no evaluation file for language {lang}: {}",
                a.task_name,
                path.display()
            );
        }
    }
    if let Some(p) = &a.neurons_file
        && !p.is_file()
    {
        bail!("[lora]: no such neuron-set file {}", p.display());
    }
    let checkpoint = models::DecoderCheckpoint::open(&a.model_dir)
        .with_context(|| format!("model `{}`", a.model_name))?;
    if checkpoint.tokenizer.is_none() {
        bail!(
            "model `{}`: no tokenizer in {} (fine-tuning tokenizes the task's text)",
            a.model_name,
            a.model_dir.display()
        );
    }
    Ok(())
}

/// `neuronlab grid run`.
#[derive(Debug, Clone)]
pub struct GridRun {
    /// The experiment file.
    pub file: PathBuf,
    /// Results root.
    pub output: PathBuf,
    /// Only this cell.
    pub cell: Option<usize>,
    /// Device label for result.json.
    pub device_label: String,
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

impl BackendTask for GridRun {
    type Output = GridSummary;

    fn run<B: Backend>(self, device: B::Device) -> Result<GridSummary> {
        let grid = Grid::open(&self.file, &self.output)?;
        let selected: Vec<&Cell> = match self.cell {
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
        let mut cache = TokenCache::on_disk(self.output.join(".tokens"));
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
            let resumed = ResumeState::prepare(&dir)?;
            if resumed.is_none() {
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
            let stats_dir = grid.dir.join("statistics");
            let outcome =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match &cell.config {
                    CellConfig::Train(c) => match c.dataset.task {
                        Task::ExtractiveQa => crate::extractive::train_span_cell::<Autodiff<B>>(
                            c, &dir, &mut log, &device,
                        ),
                        Task::Ranking => crate::rerank::train_rank_cell::<Autodiff<B>>(
                            c, &dir, &mut log, &device,
                        ),
                        _ => {
                            let data = cache.get(c)?;
                            train_cell::<Autodiff<B>>(c, &data, &dir, &mut log, &device)
                        }
                    },
                    CellConfig::Study(s) => {
                        crate::study::run_study::<B>(s, &dir, &stats_dir, &mut log, &device)
                    }
                    CellConfig::Adapt(a) => crate::adapt::run_adapt::<Autodiff<B>>(
                        a, &grid.dir, &dir, &mut log, &device,
                    ),
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

/// `neuronlab grid export --slurm`: a job array with one task per cell, written to
/// `DIR/<grid>/slurm.sbatch`.
pub fn export_slurm(file: &Path, output: &Path) -> Result<PathBuf> {
    let grid = Grid::open(file, output)?;
    std::fs::create_dir_all(&grid.dir)
        .with_context(|| format!("cannot create {}", grid.dir.display()))?;
    let exe = std::env::current_exe()
        .ok()
        .and_then(|p| p.canonicalize().ok())
        .unwrap_or_else(|| PathBuf::from("neuronlab"));
    let abs = |p: &Path| p.canonicalize().unwrap_or_else(|_| p.to_owned());
    let name = &grid.file.experiment.name;
    let script = format!(
        "#!/bin/bash\n\
         # Slurm job array for grid `{name}`: one task per cell ({n} cells).\n\
         # Submit with: sbatch {sbatch}\n\
         # Each task runs one cell; finished cells are skipped, so resubmitting is safe.\n\
         #SBATCH --job-name=neuronlab-{name}\n\
         #SBATCH --array=0-{last}\n\
         #SBATCH --output={dir}/slurm-%A_%a.out\n\
         #SBATCH --cpus-per-task=4\n\
         #SBATCH --time=24:00:00\n\
         # Add your cluster's partition / GPU lines here, e.g. #SBATCH --gres=gpu:1, and pass\n\
         # DEVICE=cuda:0 to sbatch (--export=ALL,DEVICE=cuda:0).\n\
         set -euo pipefail\n\
         cd {cwd}\n\
         exec {exe} grid run {file} --output {output} --cell \"$SLURM_ARRAY_TASK_ID\" --device \"${{DEVICE:-cpu}}\"\n",
        n = grid.cells.len(),
        last = grid.cells.len().saturating_sub(1),
        sbatch = grid.dir.join("slurm.sbatch").display(),
        dir = abs(&grid.dir).display(),
        cwd = abs(Path::new(".")).display(),
        exe = exe.display(),
        file = abs(file).display(),
        output = abs(output).display(),
    );
    let path = grid.dir.join("slurm.sbatch");
    write_atomic(&path, script.as_bytes())?;
    Ok(path)
}
