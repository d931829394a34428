//! Sentence classification and regression cells: a [`SequenceClassifier`] over a tokenised
//! GLUE / JSONL / CSV / Parquet dataset ([`super::data`]), trained by [`super::fit`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ablation::DropoutMasks;
use anyhow::{Context, Result, bail};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use models::{BertModel, EncodedBatch, SequenceClassifier, TextTokenizer};
use rand::rngs::StdRng;
use serde::Serialize;

use super::fit::{EncoderLearner, EvalAblation, Evaluation, Inner, fit, open_checkpoint};
use crate::encoder::cell::TrainCell;
use crate::encoder::data::{self, Label};
use crate::encoder::objective::{Objective, Targets};
use crate::encoder::spec::Task;
use crate::harness::log::{Outcome, RunLog};
use crate::metrics::{classification_scores, regression_scores};
use crate::training::seeds::{Purpose, derive_seed};

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
        let h = crate::harness::ids::Fnv1a::of(key.as_bytes());
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
                let _ = crate::harness::results::write_atomic(path, text.as_bytes());
            }
        }
        self.entries.insert(key, tokenized.clone());
        Ok(tokenized)
    }
}

/// Sentence classification and regression ([`SequenceClassifier`]) over a tokenised dataset.
pub struct Classifier<'a> {
    data: &'a Tokenized,
    task: Task,
    glue: Option<&'a str>,
    eval_batch: usize,
    config: models::EncoderConfig,
    /// `cmp_in_eval`: the loss's views, run at every evaluation.
    compare: Option<EvalComparison>,
}

/// The official `cmp_in_eval` (CmpCls computes every view whenever labels are given, so its
/// evaluations log each view's loss): at every evaluation the comparative loss's views run on
/// the evaluation set (the full model without dropout, then the nested ablations, with seeded
/// masks that are the same at every evaluation), and the evaluation reports each view's mean
/// task loss (`view_loss_<k>`, the official `eval_loss_cls_<k>`) and, for each ablated view,
/// the fraction of examples whose full-model loss is strictly lower (`full_beats_view_<k>`).
struct EvalComparison {
    objective: Objective,
    seed: u64,
    /// Metric names, one per view (`Scores` keys are static; a cell has a handful).
    loss_names: Vec<&'static str>,
    beat_names: Vec<&'static str>,
}

impl EvalComparison {
    fn new(objective: Objective, seed: u64) -> Self {
        let views = objective.views.len();
        let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
        Self {
            objective,
            seed,
            loss_names: (0..views).map(|k| leak(format!("view_loss_{k}"))).collect(),
            beat_names: (0..views)
                .map(|k| leak(format!("full_beats_view_{k}")))
                .collect(),
        }
    }
}

/// Per view, the mean of `losses` (`[examples][views]`), and per ablated view `k ≥ 1` the
/// fraction of examples with `losses[i][0] < losses[i][k]` (index 0 of the second list is 0).
pub fn compare_views(losses: &[Vec<f64>]) -> (Vec<f64>, Vec<f64>) {
    let n = losses.len().max(1) as f64;
    let views = losses.first().map_or(0, Vec::len);
    let means = (0..views)
        .map(|k| losses.iter().map(|l| l[k]).sum::<f64>() / n)
        .collect();
    let beats = (0..views)
        .map(|k| {
            if k == 0 {
                0.0
            } else {
                losses.iter().filter(|l| l[0] < l[k]).count() as f64 / n
            }
        })
        .collect();
    (means, beats)
}

impl<B: AutodiffBackend> EncoderLearner<B> for Classifier<'_> {
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
        ablation: &EvalAblation<B::InnerBackend>,
        progress: &mut dyn FnMut(usize, usize),
        device: &B::Device,
    ) -> Result<Evaluation> {
        let data = self.data;
        let n = data.eval.len();
        let mut done = 0;
        let (mut pred_classes, mut pred_values) = (vec![0usize; n], vec![0f64; n]);
        // Batches of similar length (longest first), so that little of each batch is padding;
        // the predictions go back to the examples' order. In evaluation padding changes nothing
        // but the work.
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(data.eval[i].ids.len()));
        // Only the regular evaluations compare views (not the ablated ones after training).
        let compare = self
            .compare
            .as_ref()
            .filter(|_| ablation.neuron_masks.is_empty() && ablation.dropout.is_none());
        let mut view_losses: Vec<Vec<f64>> = Vec::new();
        for (pass, chunk) in order.chunks(self.eval_batch).enumerate() {
            done += chunk.len();
            progress(done, n);
            let input = collate(chunk.iter().map(|&i| &data.eval[i]), data.pad_id).to_input(device);
            if let Some(c) = compare {
                let examples: Vec<&Encoded> = chunk.iter().map(|&i| &data.eval[i]).collect();
                let targets = targets::<B::InnerBackend>(&examples, self.task, device);
                let seed = derive_seed(c.seed, Purpose::EncoderEvalViews, pass as u64);
                let mut masks = Some(DropoutMasks::new(seed));
                let l = c.objective.view_losses(model, &input, &targets, &mut masks);
                let [rows, views] = l.dims();
                let flat: Vec<f64> = l
                    .into_data()
                    .convert::<f64>()
                    .into_vec()
                    .unwrap_or_default();
                view_losses.extend((0..rows).map(|r| flat[r * views..(r + 1) * views].to_vec()));
            }
            let out = model.forward(&input, &mut ablation.context(pass));
            match self.task {
                Task::Regression => {
                    for (&i, v) in chunk.iter().zip(out.into_data().iter::<f32>()) {
                        pred_values[i] = f64::from(v);
                    }
                }
                _ => {
                    let idx = out.argmax(1).into_data();
                    for (&i, v) in chunk.iter().zip(idx.iter::<i64>()) {
                        pred_classes[i] = v as usize;
                    }
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
        let mut scores = scores;
        if let Some(c) = compare {
            let (means, beats) = compare_views(&view_losses);
            for (k, (m, b)) in means.iter().zip(&beats).enumerate() {
                scores.values.insert(c.loss_names[k], *m);
                if k > 0 {
                    scores.values.insert(c.beat_names[k], *b);
                }
            }
        }
        Ok(Evaluation::new(scores, Vec::new()))
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

/// The dataset reads, and its labels fit the task (before any cell runs).
pub(crate) fn check_inputs(c: &TrainCell) -> Result<()> {
    let d = data::load(&c.dataset, &c.dataset_dir)
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
        _ => {
            let outputs = d.labels.len().max(1);
            models::check_classifier_head(&c.model_dir, outputs)
                .with_context(|| format!("model `{}`", c.model_name))?;
            Ok(())
        }
    }
}

/// Train and evaluate one classification or regression cell on backend `B`, writing progress
/// into `log`.
///
/// `dir` is the run folder: the checkpoint of [`crate::training::checkpoint::save`] lives there, and a run that
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
        derive_seed(cell.seed, Purpose::Head, 0),
        device,
    )?;
    log.initialised(&report);
    let objective = Objective::new(&cell.loss, cell.train.view_budget_tokens)?;
    let compare = matches!(
        cell.loss,
        crate::encoder::spec::LossSpec::Comparative {
            cmp_in_eval: true,
            ..
        }
    )
    .then(|| EvalComparison::new(objective.clone(), cell.seed));
    let learner = Classifier {
        data,
        task: cell.dataset.task,
        glue: cell.dataset.glue.as_deref(),
        eval_batch: cell.train.batch_size * 2,
        config,
        compare,
    };
    fit(cell, &learner, model, &objective, dir, log, device)
}

#[cfg(test)]
mod tests {
    use super::compare_views;

    #[test]
    fn view_comparison_by_hand() {
        // Three examples, the full model and two ablations; a tie is not a win.
        let losses = vec![
            vec![0.2, 0.5, 0.9],
            vec![0.7, 0.4, 0.7],
            vec![0.3, 0.6, 0.1],
        ];
        let (means, beats) = compare_views(&losses);
        let want = [0.4, 0.5, 1.7 / 3.0];
        for (m, w) in means.iter().zip(want) {
            assert!((m - w).abs() < 1e-12, "{means:?}");
        }
        assert_eq!(beats, [0.0, 2.0 / 3.0, 1.0 / 3.0]);
    }
}
