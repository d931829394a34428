//! Training and evaluating one grid cell: a sequence classifier (or regressor) fine-tuned with
//! the baseline or the comparative loss.
//!
//! The loop follows HF `Trainer`'s conventions (what the CmpLoss code runs on): the training set
//! is shuffled once per epoch, batches of `batch_size` (the last one smaller), `grad_accum_steps`
//! batches per optimiser step, global-norm clipping, AdamW ([`crate::train::AdamW`]) under the
//! linear warmup/decay schedule. Every random choice is drawn from a seed derived from the cell's
//! seed and the epoch (data order) or the step (dropout), so a run is identical for the same seed
//! on the same backend.
//!
//! Evaluation runs every `eval_every` optimiser steps (0: at the end of each epoch) and at the
//! last step, on the full model with all dropout off; the best evaluation (by the task's main
//! metric, [`crate::metrics::Scores`]) is kept and, after training, evaluated again with a random
//! fraction `r` of every layer's FFN neurons ablated for each `ablation_rates` entry (the paper's
//! robustness claim: a model trained with the comparative loss degrades more gracefully). The
//! ablation is dropout-style: a fixed random mask per rate (seeded), kept neurons scaled by
//! `1 / (1 - r)`.

use std::collections::{BTreeMap, HashMap};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use ablation::DropoutMasks;
use anyhow::{Context, Result, bail};
use burn::module::AutodiffModule;
use burn::optim::{GradientsAccumulator, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use models::{
    BertModel, Checkpoint, EncodedBatch, ForwardContext, SequenceClassifier, TextTokenizer,
};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::data::{self, Label};
use crate::experiment::{LossSpec, Task};
use crate::grid::TrainCell;
use crate::metrics::{Scores, classification_scores, regression_scores};
use crate::train::{AdamW, Objective, Targets, clip_global_norm, linear_schedule};

/// One tokenised example.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Encoded {
    ids: Vec<u32>,
    type_ids: Vec<u32>,
    label: Label,
}

/// A dataset tokenised for one model's tokenizer at one maximum length.
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct Tokenized {
    /// Class names (empty for regression).
    pub labels: Vec<String>,
    /// Training examples.
    pub train: Vec<Encoded>,
    /// Evaluation examples.
    pub eval: Vec<Encoded>,
    /// Padding id.
    pub pad_id: u32,
}

/// Tokenised datasets, shared by the cells of a grid that use the same dataset, tokenizer and
/// maximum length (and example caps): in memory, and on disk in `dir` when one is given (one
/// JSON file per key, named by a hash of the key and of the dataset and tokenizer files' sizes
/// and modification times, so an edited file is tokenised again). The disk copy serves later
/// runs and `--cell` array tasks.
#[derive(Debug, Default)]
pub struct TokenCache {
    entries: HashMap<(PathBuf, PathBuf, usize, usize, usize), Arc<Tokenized>>,
    dir: Option<PathBuf>,
}

/// `path|size|mtime` of a file, for cache keys.
fn file_stamp(path: &Path) -> String {
    let meta = std::fs::metadata(path).ok();
    let size = meta.as_ref().map_or(0, |m| m.len());
    let mtime = meta
        .and_then(|m| m.modified().ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    format!("{}|{size}|{mtime}", path.display())
}

impl TokenCache {
    /// A cache that also keeps its entries as files in `dir`.
    pub fn on_disk(dir: PathBuf) -> Self {
        Self {
            entries: HashMap::new(),
            dir: Some(dir),
        }
    }

    fn disk_path(&self, cell: &TrainCell) -> Option<PathBuf> {
        let dir = self.dir.as_ref()?;
        let t = &cell.train;
        let (train, eval) = data::split_files(&cell.dataset, &cell.dataset_dir).ok()?;
        let tokenizer = ["tokenizer.json", "vocab.txt"]
            .iter()
            .map(|f| cell.model_dir.join(f))
            .find(|p| p.is_file())?;
        let key = format!(
            "{}\n{}\n{}\n{}\n{}\n{}|{}|{}\n{}",
            file_stamp(&train),
            file_stamp(&eval),
            file_stamp(&tokenizer),
            file_stamp(&cell.model_dir.join("config.json")),
            toml::to_string(&cell.dataset).ok()?,
            t.max_seq_len,
            t.max_train_examples,
            t.max_eval_examples,
            env!("CARGO_PKG_VERSION"),
        );
        let h = crate::results::Fnv1a::of(key.as_bytes());
        Some(dir.join(format!("{h:016x}.json")))
    }

    /// The cell's dataset, tokenised (read and tokenised on first use).
    pub fn get(&mut self, cell: &TrainCell) -> Result<Arc<Tokenized>> {
        let t = &cell.train;
        let key = (
            cell.dataset_dir.clone(),
            cell.model_dir.clone(),
            t.max_seq_len,
            t.max_train_examples,
            t.max_eval_examples,
        );
        if let Some(hit) = self.entries.get(&key) {
            return Ok(hit.clone());
        }
        let disk = self.disk_path(cell);
        if let Some(path) = &disk
            && let Ok(text) = std::fs::read_to_string(path)
            && let Ok(tokenized) = serde_json::from_str::<Tokenized>(&text)
        {
            let tokenized = Arc::new(tokenized);
            self.entries.insert(key, tokenized.clone());
            return Ok(tokenized);
        }
        let dataset = data::load(&cell.dataset, &cell.dataset_dir)?;
        let checkpoint_config =
            models::EncoderConfig::from_file(cell.model_dir.join("config.json"))?;
        let tokenizer = TextTokenizer::from_dir(&cell.model_dir, &checkpoint_config)?
            .with_max_len(t.max_seq_len)?;
        let cap = |n: usize, cap: usize| if cap == 0 { n } else { n.min(cap) };
        let encode = |examples: &[data::Example]| -> Result<Vec<Encoded>> {
            let mut out = Vec::with_capacity(examples.len());
            for chunk in examples.chunks(256) {
                let batch = if chunk.iter().all(|e| e.text_pair.is_some()) {
                    let pairs: Vec<(&str, &str)> = chunk
                        .iter()
                        .map(|e| (e.text.as_str(), e.text_pair.as_deref().unwrap_or("")))
                        .collect();
                    tokenizer.encode_pairs(&pairs)?
                } else {
                    let texts: Vec<&str> = chunk.iter().map(|e| e.text.as_str()).collect();
                    tokenizer.encode_texts(&texts)?
                };
                for ((ids, type_ids), e) in batch.ids.into_iter().zip(batch.type_ids).zip(chunk) {
                    out.push(Encoded {
                        ids,
                        type_ids,
                        label: e.label,
                    });
                }
            }
            Ok(out)
        };
        let n_train = cap(dataset.train.len(), t.max_train_examples);
        let n_eval = cap(dataset.eval.len(), t.max_eval_examples);
        let pad_id = tokenizer.encode_texts(&["a"])?.pad_id;
        let tokenized = Arc::new(Tokenized {
            train: encode(&dataset.train[..n_train])?,
            eval: encode(&dataset.eval[..n_eval])?,
            labels: dataset.labels,
            pad_id,
        });
        if let Some(path) = &disk {
            // A cache that cannot be written only costs time later.
            let _ = std::fs::create_dir_all(path.parent().unwrap_or(Path::new(".")));
            if let Ok(text) = serde_json::to_string(&*tokenized) {
                let _ = crate::results::write_atomic(path, text.as_bytes());
            }
        }
        self.entries.insert(key, tokenized.clone());
        Ok(tokenized)
    }
}

/// The checkpoint folder inside a run folder.
pub const CHECKPOINT: &str = "checkpoint";

fn recorder() -> burn::record::NamedMpkFileRecorder<burn::record::FullPrecisionSettings> {
    burn::record::NamedMpkFileRecorder::new()
}

/// Where a run stands at a checkpoint (`checkpoint/state.json`, written last).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct ResumeState {
    /// Optimiser steps done.
    pub step: usize,
    /// The epoch being read and the position in its order.
    pub epoch: usize,
    /// Position in the epoch's order.
    pub cursor: usize,
    /// Seconds of training so far.
    pub seconds: f64,
    /// The best evaluation so far: (main metric, step, metrics).
    pub best: Option<(f64, usize, BTreeMap<String, f64>)>,
    /// The last evaluation's metrics.
    pub last_metrics: BTreeMap<String, f64>,
}

impl ResumeState {
    /// The newest complete checkpoint of a run folder and its folder: `checkpoint/`, or
    /// `checkpoint.old/` when a kill hit between the two renames of [`save_checkpoint`].
    pub fn find(dir: &Path) -> Option<(Self, PathBuf)> {
        [CHECKPOINT, "checkpoint.old"].iter().find_map(|name| {
            let folder = dir.join(name);
            let text = std::fs::read_to_string(folder.join("state.json")).ok()?;
            Some((serde_json::from_str(&text).ok()?, folder))
        })
    }

    /// Prepare a run folder for a resumed run: keep the evaluations up to the checkpoint's
    /// step in `metrics.jsonl` (later ones belong to the lost work). Returns the step, or `None`
    /// when there is no checkpoint.
    pub fn prepare(dir: &Path) -> Result<Option<usize>> {
        let Some((state, _)) = Self::find(dir) else {
            return Ok(None);
        };
        let path = dir.join("metrics.jsonl");
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let kept: String = text
            .lines()
            .filter(|l| {
                serde_json::from_str::<serde_json::Value>(l)
                    .ok()
                    .and_then(|v| v["step"].as_u64())
                    .is_some_and(|s| s as usize <= state.step)
            })
            .map(|l| format!("{l}\n"))
            .collect();
        crate::results::write_atomic(&path, kept.as_bytes())?;
        Ok(Some(state.step))
    }
}

/// Write a checkpoint into `dir/checkpoint/`: the model, the optimiser state, the best model
/// when it changed (carried over from the previous checkpoint otherwise), and `state.json`.
/// It is written into `checkpoint.tmp/` and swapped in by renames, so a kill at any moment
/// leaves a complete checkpoint ([`ResumeState::find`]).
pub fn save_checkpoint<B: AutodiffBackend, M: AutodiffModule<B>>(
    dir: &Path,
    state: &ResumeState,
    model: &M,
    optimizer: &impl Optimizer<M, B>,
    best_model: Option<&M::InnerModule>,
) -> Result<()> {
    let tmp = dir.join("checkpoint.tmp");
    let current = dir.join(CHECKPOINT);
    let old = dir.join("checkpoint.old");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let recorder = recorder();
    let ctx = || format!("writing a checkpoint into {}", tmp.display());
    model
        .clone()
        .save_file(tmp.join("model"), &recorder)
        .with_context(ctx)?;
    burn::record::Recorder::<B>::record(&recorder, optimizer.to_record(), tmp.join("optimizer"))
        .with_context(ctx)?;
    match best_model {
        Some(best) => best
            .clone()
            .save_file(tmp.join("best"), &recorder)
            .with_context(ctx)?,
        None if state.best.is_some() => {
            std::fs::copy(current.join("best.mpk"), tmp.join("best.mpk")).with_context(ctx)?;
        }
        None => {}
    }
    std::fs::write(tmp.join("state.json"), serde_json::to_string_pretty(state)?)
        .with_context(ctx)?;
    let _ = std::fs::remove_dir_all(&old);
    if current.exists() {
        std::fs::rename(&current, &old).with_context(ctx)?;
    }
    std::fs::rename(&tmp, &current).with_context(ctx)?;
    let _ = std::fs::remove_dir_all(&old);
    Ok(())
}

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

/// A model's evaluation: its scores and the prediction files to keep in the run folder when it
/// is the best so far (name → contents; e.g. `predictions.json`, `run.trec`).
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// The scores.
    pub scores: Scores,
    /// Prediction files.
    pub files: Vec<(String, String)>,
}

/// The inference-time module of a trainable model.
pub type Inner<B, M> = <M as AutodiffModule<B>>::InnerModule;

/// What a kind of training cell learns: its model, the loss of a batch and the evaluation. One
/// training loop ([`fit`]) runs every kind (sentence classification, span extraction,
/// re-ranking).
pub trait Learner<B: AutodiffBackend> {
    /// The model.
    type Model: AutodiffModule<B> + Clone;
    /// Training units (examples, windows, query groups).
    fn train_len(&self) -> usize;
    /// The sizes of the splits for the log, e.g. `48 train / 12 eval examples`.
    fn sizes(&self) -> String;
    /// The token length of training unit `i` (for `group_by_length`).
    fn unit_len(&self, i: usize) -> usize;
    /// The step loss (one element) of a batch of training units. `masks` holds the step's
    /// dropout uniforms; `rng` is the batch's own seeded generator (input views).
    fn batch_loss(
        &self,
        model: &Self::Model,
        batch: &[usize],
        objective: &Objective,
        masks: &mut Option<DropoutMasks<B>>,
        rng: &mut StdRng,
        device: &B::Device,
    ) -> Result<Tensor<B, 1>>;
    /// Evaluate the full model with dropout off; `neuron_masks[l]` (when given) scales layer
    /// `l`'s FFN neurons.
    fn evaluate(
        &self,
        model: &Inner<B, Self::Model>,
        neuron_masks: &[Tensor<B::InnerBackend, 1>],
        device: &B::Device,
    ) -> Result<Evaluation>;
    /// The encoder of a model (for the neuron-ablation masks).
    fn encoder<'a>(&self, model: &'a Inner<B, Self::Model>) -> &'a BertModel<B::InnerBackend>;
    /// Write the model as an HF checkpoint into `out`.
    fn save(&self, model: &Inner<B, Self::Model>, out: &Path) -> Result<()>;
}

/// A forward context for evaluation with the given FFN neuron masks.
pub fn eval_context<B: Backend>(neuron_masks: &[Tensor<B, 1>]) -> ForwardContext<B> {
    let mut ctx = ForwardContext::eval();
    for (l, m) in neuron_masks.iter().enumerate() {
        ctx.set_neuron_mask(l, m.clone());
    }
    ctx
}

/// Fixed random masks that ablate a fraction `rate` of every layer's `width` FFN neurons
/// (dropout-style: kept neurons scaled by `1 / (1 - rate)`), seeded.
fn ablation_masks<B: Backend>(
    layers: usize,
    width: usize,
    rate: f64,
    seed: u64,
    device: &B::Device,
) -> Vec<Tensor<B, 1>> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..layers)
        .map(|_| {
            let m: Vec<f32> = (0..width)
                .map(|_| {
                    if rng.random::<f64>() < rate {
                        0.0
                    } else {
                        (1.0 / (1.0 - rate)) as f32
                    }
                })
                .collect();
            Tensor::from_data(TensorData::new(m, [width]), device)
        })
        .collect()
}

/// Sentence classification and regression ([`SequenceClassifier`]) over a tokenised dataset.
pub struct Classifier<'a> {
    data: &'a Tokenized,
    task: Task,
    glue: Option<&'a str>,
    eval_batch: usize,
    config: models::EncoderConfig,
}

impl<B: AutodiffBackend> Learner<B> for Classifier<'_> {
    type Model = SequenceClassifier<B>;

    fn train_len(&self) -> usize {
        self.data.train.len()
    }

    fn sizes(&self) -> String {
        format!(
            "{} train / {} eval examples",
            self.data.train.len(),
            self.data.eval.len()
        )
    }

    fn unit_len(&self, i: usize) -> usize {
        self.data.train[i].ids.len()
    }

    fn batch_loss(
        &self,
        model: &Self::Model,
        batch: &[usize],
        objective: &Objective,
        masks: &mut Option<DropoutMasks<B>>,
        _rng: &mut StdRng,
        device: &B::Device,
    ) -> Result<Tensor<B, 1>> {
        let examples: Vec<&Encoded> = batch.iter().map(|&i| &self.data.train[i]).collect();
        let input = collate(examples.iter().copied(), self.data.pad_id).to_input::<B>(device);
        let targets = targets::<B>(&examples, self.task, device);
        Ok(objective.loss(model, &input, &targets, masks))
    }

    fn evaluate(
        &self,
        model: &Inner<B, Self::Model>,
        neuron_masks: &[Tensor<B::InnerBackend, 1>],
        device: &B::Device,
    ) -> Result<Evaluation> {
        let mut pred_classes = Vec::new();
        let mut pred_values = Vec::new();
        let data = self.data;
        for chunk in data.eval.chunks(self.eval_batch) {
            let input = collate(chunk.iter(), data.pad_id).to_input(device);
            let out = model.forward(&input, &mut eval_context(neuron_masks));
            match self.task {
                Task::Regression => {
                    pred_values.extend(out.into_data().iter::<f32>().map(f64::from));
                }
                _ => {
                    let idx = out.argmax(1).into_data();
                    pred_classes.extend(idx.iter::<i64>().map(|v| v as usize));
                }
            }
        }
        let scores = match self.task {
            Task::Regression => {
                let gold: Vec<f64> = data
                    .eval
                    .iter()
                    .map(|e| match e.label {
                        Label::Value(v) => f64::from(v),
                        Label::Class(c) => c as f64,
                    })
                    .collect();
                regression_scores(&pred_values, &gold)
            }
            _ => {
                let gold: Vec<usize> = data
                    .eval
                    .iter()
                    .map(|e| match e.label {
                        Label::Class(c) => c,
                        Label::Value(_) => unreachable!("classification labels are classes"),
                    })
                    .collect();
                classification_scores(&pred_classes, &gold, self.glue)
            }
        };
        Ok(Evaluation {
            scores,
            files: Vec::new(),
        })
    }

    fn encoder<'a>(&self, model: &'a Inner<B, Self::Model>) -> &'a BertModel<B::InnerBackend> {
        &model.encoder
    }

    fn save(&self, model: &Inner<B, Self::Model>, out: &Path) -> Result<()> {
        Ok(model.save_pretrained(&self.config, &self.data.labels, out)?)
    }
}

fn collate<'a>(examples: impl Iterator<Item = &'a Encoded>, pad_id: u32) -> EncodedBatch {
    let (ids, type_ids) = examples
        .map(|e| (e.ids.clone(), e.type_ids.clone()))
        .unzip();
    EncodedBatch {
        ids,
        type_ids,
        pad_id,
    }
}

fn targets<B: Backend>(examples: &[&Encoded], task: Task, device: &B::Device) -> Targets<B> {
    let n = examples.len();
    match task {
        Task::Regression => {
            let v: Vec<f32> = examples
                .iter()
                .map(|e| match e.label {
                    Label::Value(v) => v,
                    Label::Class(c) => c as f32,
                })
                .collect();
            Targets::Values(Tensor::from_data(TensorData::new(v, [n]), device))
        }
        _ => {
            let v: Vec<i64> = examples
                .iter()
                .map(|e| match e.label {
                    Label::Class(c) => c as i64,
                    Label::Value(v) => v as i64,
                })
                .collect();
            Targets::Classes(Tensor::from_data(TensorData::new(v, [n]), device))
        }
    }
}

/// A seed for one purpose of one run (SplitMix64 of the run seed, the purpose and an index).
pub(crate) fn derive_seed(seed: u64, purpose: u64, index: u64) -> u64 {
    let mut z = seed
        .wrapping_add(purpose.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_add(index.wrapping_mul(0xBF58_476D_1CE4_E5B9));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The training order of one epoch over `lens.len()` units: a seeded shuffle; with
/// `group_by_length`, HF's length-grouped sampler idea: the shuffled order is cut into
/// mega-batches of 50 batches, each sorted by length (longest first), so batches hold similar
/// lengths and padding shrinks, while the order of the batches stays random.
fn epoch_order(lens: &[usize], seed: u64, epoch: usize, batch: usize, grouped: bool) -> Vec<usize> {
    let mut rng = StdRng::seed_from_u64(derive_seed(seed, 1, epoch as u64));
    let mut order: Vec<usize> = (0..lens.len()).collect();
    order.shuffle(&mut rng);
    if grouped {
        for mega in order.chunks_mut(batch * 50) {
            mega.sort_by_key(|&i| std::cmp::Reverse(lens[i]));
        }
        let mut batches: Vec<Vec<usize>> = order.chunks(batch).map(<[usize]>::to_vec).collect();
        batches.shuffle(&mut rng);
        order = batches.concat();
    }
    order
}

/// The checkpoint's encoder config with every dropout rate set to the loss's `p`, when it sets
/// one (the official code sets every dropout module to p: hidden, attention, classifier).
pub(crate) fn open_checkpoint(cell: &TrainCell) -> Result<Checkpoint> {
    let mut checkpoint = Checkpoint::open(&cell.model_dir)
        .with_context(|| format!("loading model {}", cell.model_dir.display()))?;
    if let LossSpec::Comparative { p: Some(p), .. } = cell.loss {
        let c = &mut checkpoint.config;
        (
            c.hidden_dropout_prob,
            c.attention_probs_dropout_prob,
            c.classifier_dropout,
        ) = (p, p, p);
    }
    Ok(checkpoint)
}

/// Train and evaluate one classification or regression cell on backend `B`, writing progress
/// into `log`.
///
/// `dir` is the run folder: the checkpoint of [`save_checkpoint`] lives there, and a run that
/// finds one continues from it.
pub fn train_cell<B: AutodiffBackend>(
    cell: &TrainCell,
    data: &Tokenized,
    dir: &Path,
    log: &mut RunLog,
    device: &B::Device,
) -> Result<Outcome> {
    // (An empty training split is `fit`'s error, for every kind of cell.)
    if data.eval.is_empty() {
        bail!("the evaluation split of `{}` is empty", cell.dataset_name);
    }
    let checkpoint = open_checkpoint(cell)?;
    let config = checkpoint.config.clone();
    let (model, report) = SequenceClassifier::<B>::load(
        checkpoint,
        data.labels.len().max(1),
        None,
        derive_seed(cell.seed, 0, 0),
        device,
    )?;
    log.initialised(&report);
    let objective = Objective::new(&cell.loss, cell.train.view_budget_tokens)?;
    let learner = Classifier {
        data,
        task: cell.dataset.task,
        glue: cell.dataset.glue.as_deref(),
        eval_batch: cell.train.batch_size * 2,
        config,
    };
    fit(cell, &learner, model, &objective, dir, log, device)
}

/// The training loop of every training cell (see the module docs): train `model` with
/// `objective` on `learner`'s units, evaluate, keep the best, checkpoint and resume, then
/// evaluate the best model under FFN ablation.
pub fn fit<B: AutodiffBackend, L: Learner<B>>(
    cell: &TrainCell,
    learner: &L,
    mut model: L::Model,
    objective: &Objective,
    dir: &Path,
    log: &mut RunLog,
    device: &B::Device,
) -> Result<Outcome> {
    let t = &cell.train;
    if learner.train_len() == 0 {
        bail!("the training split of `{}` is empty", cell.dataset_name);
    }
    let mut optimizer = AdamW::with_beta1(t.weight_decay, t.adam_beta1).init::<B, L::Model>();
    let accum = t.grad_accum_steps.max(1);
    let lens: Vec<usize> = (0..learner.train_len())
        .map(|i| learner.unit_len(i))
        .collect();
    let (steps_per_epoch, total, warmup) = t.steps(lens.len());
    let eval_every = if t.eval_every > 0 {
        t.eval_every
    } else {
        steps_per_epoch
    };
    log.line(&format!(
        "{}, {total} steps ({steps_per_epoch} per epoch), warmup {warmup}",
        learner.sizes()
    ));

    let started = Instant::now();
    let mut first_step = 0;
    let mut epoch = 0;
    let mut cursor = 0;
    let mut seconds_before = 0.0;
    let mut loss_sum = 0.0;
    let mut loss_count = 0usize;
    // (main metric, step, metrics, model) of the best evaluation so far.
    type Best<M> = (f64, usize, BTreeMap<String, f64>, M);
    let mut best: Option<Best<Inner<B, L::Model>>> = None;
    let mut last_metrics = BTreeMap::new();
    let mut main_metric = String::new();
    if let Some((state, ckpt)) = ResumeState::find(dir) {
        let recorder = recorder();
        let resuming = || format!("resuming from {}", ckpt.display());
        model = model
            .load_file(ckpt.join("model"), &recorder, device)
            .with_context(resuming)?;
        let record = burn::record::Recorder::<B>::load(&recorder, ckpt.join("optimizer"), device)
            .with_context(resuming)?;
        optimizer = optimizer.load_record(record);
        if let Some((value, step, metrics)) = state.best.clone() {
            let best_model = model
                .valid()
                .load_file(ckpt.join("best"), &recorder, device)
                .with_context(resuming)?;
            best = Some((value, step, metrics, best_model));
        }
        (first_step, epoch, cursor, seconds_before) =
            (state.step, state.epoch, state.cursor, state.seconds);
        last_metrics = state.last_metrics;
        log.line(&format!("resumed from the checkpoint at step {first_step}"));
    }
    let mut order = epoch_order(&lens, cell.seed, epoch, t.batch_size, t.group_by_length);
    for step in first_step..total {
        let lr = linear_schedule(t.learning_rate, step, warmup, total);
        let mut accumulator = GradientsAccumulator::<L::Model>::new();
        let mut step_loss = 0.0;
        for micro in 0..accum {
            if cursor >= order.len() {
                epoch += 1;
                order = epoch_order(&lens, cell.seed, epoch, t.batch_size, t.group_by_length);
                cursor = 0;
            }
            let end = (cursor + t.batch_size).min(order.len());
            let batch = &order[cursor..end];
            cursor = end;
            let index = (step * accum + micro) as u64;
            let mut masks = Some(DropoutMasks::new(derive_seed(cell.seed, 2, index)));
            let mut rng = StdRng::seed_from_u64(derive_seed(cell.seed, 4, index));
            let loss =
                learner.batch_loss(&model, batch, objective, &mut masks, &mut rng, device)?;
            let value = f64::from(loss.clone().into_scalar().elem::<f32>());
            if !value.is_finite() {
                bail!(
                    "step {step}: the training loss is {value} (learning rate {lr:.3e}); \
                     lower the learning rate or check the labels"
                );
            }
            step_loss += value / accum as f64;
            let loss = if accum > 1 { loss / accum as f32 } else { loss };
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            accumulator.accumulate(&model, grads);
        }
        let mut grads = accumulator.grads();
        if t.max_grad_norm > 0.0 {
            clip_global_norm(&model, &mut grads, t.max_grad_norm);
        }
        model = optimizer.step(lr, model, grads);
        loss_sum += step_loss;
        loss_count += 1;
        log.progress(step + 1, total, step_loss, started);

        let done = step + 1;
        if done % eval_every == 0 || done == total {
            let valid = model.valid();
            let evaluation = learner.evaluate(&valid, &[], device)?;
            let scores = &evaluation.scores;
            main_metric = scores.main.to_string();
            let metrics: BTreeMap<String, f64> = scores
                .values
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect();
            let record = EvalRecord {
                step: done,
                epoch: done as f64 / steps_per_epoch as f64,
                train_loss: loss_sum / loss_count.max(1) as f64,
                learning_rate: lr,
                metrics: metrics.clone(),
                seconds: seconds_before + started.elapsed().as_secs_f64(),
            };
            log.record(&record)?;
            log.line(&format!(
                "step {done}/{total} epoch {:.2} train loss {:.4} {} {:.4} ({:.0}s)",
                record.epoch,
                record.train_loss,
                scores.main,
                scores.main_value(),
                record.seconds
            ));
            (loss_sum, loss_count) = (0.0, 0);
            let value = scores.main_value();
            let improved = best.as_ref().is_none_or(|b| value > b.0);
            if improved {
                for (name, contents) in &evaluation.files {
                    crate::results::write_atomic(&dir.join(name), contents.as_bytes())?;
                }
                best = Some((value, done, metrics.clone(), valid));
            }
            last_metrics = metrics;
            if t.checkpoints && done < total {
                let state = ResumeState {
                    step: done,
                    epoch,
                    cursor,
                    seconds: record.seconds,
                    best: best.as_ref().map(|b| (b.0, b.1, b.2.clone())),
                    last_metrics: last_metrics.clone(),
                };
                let best_model = best.as_ref().filter(|_| improved).map(|b| &b.3);
                save_checkpoint(dir, &state, &model, &optimizer, best_model)?;
            }
        }
    }
    let (_, best_step, best_metrics, best_model) = best.expect("the last step evaluates");
    if t.save_model {
        let out = dir.join("model");
        learner
            .save(&best_model, &out)
            .with_context(|| format!("saving the best model to {}", out.display()))?;
        models::copy_tokenizer_files(&cell.model_dir, &out)?;
        log.line(&format!(
            "best model (step {best_step}) saved to {}",
            out.display()
        ));
    }
    let mut ablation = Vec::new();
    for &rate in &t.ablation_rates {
        let encoder = learner.encoder(&best_model);
        let masks = if rate > 0.0 {
            ablation_masks(
                encoder.num_layers(),
                encoder.intermediate_size(),
                rate,
                derive_seed(cell.seed, 3, (rate * 1e6) as u64),
                device,
            )
        } else {
            Vec::new()
        };
        let scores = learner.evaluate(&best_model, &masks, device)?.scores;
        log.line(&format!(
            "ablation rate {rate}: {} {:.4}",
            scores.main,
            scores.main_value()
        ));
        main_metric = scores.main.to_string();
        ablation.push((rate, scores.main_value()));
    }
    let _ = std::fs::remove_dir_all(dir.join(CHECKPOINT));
    Ok(Outcome {
        main_metric,
        metrics: best_metrics,
        best_step: Some(best_step),
        final_metrics: last_metrics,
        steps: Some(total),
        ablation,
    })
}
