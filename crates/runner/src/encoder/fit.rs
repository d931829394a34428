//! The training loop of every encoder cell ([`fit`]), over what a [`Learner`] says the cell
//! learns: its model, the loss of a batch and the evaluation.
//!
//! The loop follows HF `Trainer`'s conventions (what the CmpLoss code runs on): the training set
//! is shuffled once per epoch, batches of `batch_size` (the last one smaller), `grad_accum_steps`
//! batches per optimiser step, global-norm clipping, AdamW ([`crate::training::AdamW`]) under the
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
//! `1 / (1 - r)`. Each `eval_dropout_powers` entry `k` evaluates the best model once more with
//! dropout on at rate `1 − (1 − p)^k` (the official `--force_dropout k`, the paper's "effect of
//! dropout rate"), recorded as the metric `<main>@dropout<k>`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use ablation::DropoutMasks;
use anyhow::{Context, Result, bail};
use burn::module::AutodiffModule;
use burn::optim::Optimizer;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use models::{BertModel, Checkpoint, ForwardContext};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::encoder::cell::TrainCell;
use crate::encoder::objective::Objective;
use crate::encoder::spec::LossSpec;
use crate::harness::log::{EvalRecord, Outcome, RunLog};
use crate::metrics::Scores;
use crate::training::seeds::{Purpose, derive_seed};
use crate::training::{AdamW, EpochCursor, accumulated_step, linear_schedule};

/// The checkpoint folder inside a run folder.
pub const CHECKPOINT: &str = "checkpoint";

fn recorder() -> burn::record::NamedMpkFileRecorder<burn::record::FullPrecisionSettings> {
    burn::record::NamedMpkFileRecorder::new()
}

/// Write `record` to `path.mpk` in the format of Burn's `NamedMpkFileRecorder` (named
/// MessagePack, full precision), which [`recorder`] reads back. Written here rather than by the
/// recorder, whose error drops the I/O cause (a full disk reads "error while writing multi-byte
/// MessagePack value"); this one names the file and the cause.
fn write_record<B: Backend, R: burn::record::Record<B>>(record: R, path: &Path) -> Result<()> {
    use std::io::Write;
    let path = path.with_extension("mpk");
    let ctx = || format!("cannot write the checkpoint file {}", path.display());
    let file = std::fs::File::create(&path).with_context(ctx)?;
    let mut writer = std::io::BufWriter::new(file);
    let item = record.into_item::<burn::record::FullPrecisionSettings>();
    let record = burn::record::BurnRecord::<_, B>::new::<
        burn::record::NamedMpkFileRecorder<burn::record::FullPrecisionSettings>,
    >(item);
    rmp_serde::encode::write_named(&mut writer, &record)
        .map_err(|e| match io_cause(&e) {
            Some(io) => anyhow::anyhow!("{io}"),
            None => anyhow::anyhow!("{e}"),
        })
        .with_context(ctx)?;
    writer.flush().with_context(ctx)?;
    Ok(())
}

/// The I/O error behind `e`, if any.
fn io_cause<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a std::io::Error> {
    let mut cause = Some(e);
    while let Some(err) = cause {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return Some(io);
        }
        cause = err.source();
    }
    None
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
        crate::harness::results::write_atomic(&path, kept.as_bytes())?;
        Ok(Some(state.step))
    }
}

/// Write a checkpoint into `dir/checkpoint/`: the model, the optimiser state, the best model
/// when it changed (carried over from the previous checkpoint otherwise), and `state.json`.
/// It is written into `checkpoint.PID.tmp/` and swapped in by renames, so a kill at any moment
/// leaves a complete checkpoint ([`ResumeState::find`]); a killed writer's staging folder is
/// removed when the cell starts again.
pub fn save_checkpoint<B: AutodiffBackend, M: AutodiffModule<B>>(
    dir: &Path,
    state: &ResumeState,
    model: &M,
    optimizer: &impl Optimizer<M, B>,
    best_model: Option<&M::InnerModule>,
) -> Result<()> {
    let tmp = dir.join(format!("checkpoint.{}.tmp", std::process::id()));
    let current = dir.join(CHECKPOINT);
    let old = dir.join("checkpoint.old");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    write_record::<B, _>(model.clone().into_record(), &tmp.join("model"))?;
    write_record::<B, _>(optimizer.to_record(), &tmp.join("optimizer"))?;
    let ctx = || format!("writing a checkpoint into {}", tmp.display());
    match best_model {
        Some(best) => {
            write_record::<B::InnerBackend, _>(best.clone().into_record(), &tmp.join("best"))?
        }
        None if state.best.is_some() => {
            // The previous checkpoint's file, linked rather than copied where the file system
            // allows (the old folder is removed below; the link keeps the data).
            let (from, to) = (current.join("best.mpk"), tmp.join("best.mpk"));
            std::fs::hard_link(&from, &to)
                .or_else(|_| std::fs::copy(&from, &to).map(drop))
                .with_context(ctx)?;
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
    /// Evaluate the full model, with what `ablation` ablates (nothing: dropout off); the
    /// `i`-th forward pass runs in `ablation.context(i)`. `progress(done, total)` follows the
    /// evaluation set's units (examples, windows, candidates).
    fn evaluate(
        &self,
        model: &Inner<B, Self::Model>,
        ablation: &EvalAblation<B::InnerBackend>,
        progress: &mut dyn FnMut(usize, usize),
        device: &B::Device,
    ) -> Result<Evaluation>;
    /// The encoder of a model (for the neuron-ablation masks).
    fn encoder<'a>(&self, model: &'a Inner<B, Self::Model>) -> &'a BertModel<B::InnerBackend>;
    /// Write the model as an HF checkpoint into `out`.
    fn save(&self, model: &Inner<B, Self::Model>, out: &Path) -> Result<()>;
    /// Settings the learner resolved from its data and tokenizer, for `result.json`
    /// ([`Outcome::resolved`]); none by default.
    fn resolved(&self) -> BTreeMap<String, String> {
        BTreeMap::new()
    }
}

/// What an evaluation ablates: FFN neurons (fixed masks), dropout, or nothing.
#[derive(Debug, Clone)]
pub struct EvalAblation<B: Backend> {
    /// `neuron_masks[l]` scales layer `l`'s FFN neurons (empty: none).
    pub neuron_masks: Vec<Tensor<B, 1>>,
    /// `(seed, power)`: dropout on at every site at rate `1 − (1 − p)^power`, with fresh masks
    /// for each forward pass drawn from the seed (as the official `--force_dropout`).
    pub dropout: Option<(u64, u32)>,
}

impl<B: Backend> EvalAblation<B> {
    /// The full model, dropout off.
    pub fn none() -> Self {
        Self {
            neuron_masks: Vec::new(),
            dropout: None,
        }
    }

    /// The forward context of the evaluation's `pass`-th forward pass.
    pub fn context(&self, pass: usize) -> ForwardContext<B> {
        let mut ctx = match self.dropout {
            Some((seed, power)) => {
                let seed = derive_seed(seed, Purpose::EncoderEvalDropout, pass as u64);
                let mut masks = DropoutMasks::new(seed);
                masks.set_power(power);
                ForwardContext::with_dropout(masks)
            }
            None => ForwardContext::eval(),
        };
        for (l, m) in self.neuron_masks.iter().enumerate() {
            ctx.set_neuron_mask(l, m.clone());
        }
        ctx
    }
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

/// The training order of one epoch over `lens.len()` units: a seeded shuffle; with
/// `group_by_length`, HF's length-grouped sampler idea: the shuffled order is cut into
/// mega-batches of 50 batches, each sorted by length (longest first), so batches hold similar
/// lengths and padding shrinks, while the order of the batches stays random.
fn epoch_order(lens: &[usize], seed: u64, epoch: usize, batch: usize, grouped: bool) -> Vec<usize> {
    let mut rng = StdRng::seed_from_u64(derive_seed(seed, Purpose::EncoderDataOrder, epoch as u64));
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

    if t.tensorboard {
        log.tensorboard()?;
    }
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
    // When the last checkpoint was written (or the cell started), and whether the best model
    // changed since (a checkpoint without it carries the previous one's best model over).
    let mut last_checkpoint = Instant::now();
    let mut best_unsaved = false;
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
    let order_of = |epoch| epoch_order(&lens, cell.seed, epoch, t.batch_size, t.group_by_length);
    let mut data = EpochCursor::new(order_of, epoch, cursor);
    for step in first_step..total {
        let lr = linear_schedule(t.learning_rate, step, warmup, total);
        let step_loss;
        (model, step_loss) = accumulated_step(
            model,
            &mut optimizer,
            (step, lr),
            accum,
            t.max_grad_norm,
            |model, micro| {
                let batch = data.next_batch(t.batch_size);
                let index = (step * accum + micro) as u64;
                let seed = |purpose| derive_seed(cell.seed, purpose, index);
                let mut masks = Some(DropoutMasks::new(seed(Purpose::EncoderDropout)));
                let mut rng = StdRng::seed_from_u64(seed(Purpose::EncoderViews));
                learner.batch_loss(model, batch, objective, &mut masks, &mut rng, device)
            },
        )?;
        loss_sum += step_loss;
        loss_count += 1;
        log.progress(step + 1, total, step_loss, lr, started)?;

        let done = step + 1;
        if done % eval_every == 0 || done == total {
            let valid = model.valid();
            let mut shown = |done, total| log.evaluating("examples", done, total, "evaluation");
            let evaluation = learner.evaluate(&valid, &EvalAblation::none(), &mut shown, device)?;
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
                    crate::harness::results::write_atomic(&dir.join(name), contents.as_bytes())?;
                }
                best = Some((value, done, metrics.clone(), valid));
                best_unsaved = true;
            }
            last_metrics = metrics;
            let due = last_checkpoint.elapsed().as_secs_f64() >= t.checkpoint_every_s;
            if t.checkpoints && done < total && due {
                let state = ResumeState {
                    step: done,
                    epoch: data.epoch,
                    cursor: data.cursor,
                    seconds: record.seconds,
                    best: best.as_ref().map(|b| (b.0, b.1, b.2.clone())),
                    last_metrics: last_metrics.clone(),
                };
                let best_model = best.as_ref().filter(|_| best_unsaved).map(|b| &b.3);
                save_checkpoint(dir, &state, &model, &optimizer, best_model)?;
                (last_checkpoint, best_unsaved) = (Instant::now(), false);
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
                derive_seed(cell.seed, Purpose::EncoderAblation, (rate * 1e6) as u64),
                device,
            )
        } else {
            Vec::new()
        };
        let ablated = EvalAblation {
            neuron_masks: masks,
            dropout: None,
        };
        let mut shown = |done, total| log.evaluating("examples", done, total, "ablated");
        let scores = learner
            .evaluate(&best_model, &ablated, &mut shown, device)?
            .scores;
        log.line(&format!(
            "ablation rate {rate}: {} {:.4}",
            scores.main,
            scores.main_value()
        ));
        main_metric = scores.main.to_string();
        ablation.push((rate, scores.main_value()));
    }
    let mut best_metrics = best_metrics;
    for &power in &t.eval_dropout_powers {
        let dropped = EvalAblation {
            neuron_masks: Vec::new(),
            dropout: Some((
                derive_seed(cell.seed, Purpose::EncoderEvalDropout, u64::from(power)),
                power,
            )),
        };
        let mut shown = |done, total| log.evaluating("examples", done, total, "dropout");
        let scores = learner
            .evaluate(&best_model, &dropped, &mut shown, device)?
            .scores;
        log.line(&format!(
            "dropout power {power}: {} {:.4}",
            scores.main,
            scores.main_value()
        ));
        best_metrics.insert(
            format!("{}@dropout{power}", scores.main),
            scores.main_value(),
        );
    }
    let _ = std::fs::remove_dir_all(dir.join(CHECKPOINT));
    Ok(Outcome {
        main_metric,
        metrics: best_metrics,
        best_step: Some(best_step),
        final_metrics: last_metrics,
        steps: Some(total),
        ablation,
        resolved: learner.resolved(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;

    #[test]
    fn eval_dropout_drops_at_the_nested_rate_with_fresh_masks_per_pass() {
        type B = NdArray<f32>;
        let device = Default::default();
        let dropped_fraction = |ablation: &EvalAblation<B>, pass: usize| {
            let mut ctx = ablation.context(pass);
            let mask = ctx
                .dropout
                .as_mut()
                .expect("dropout is on")
                .mask::<1>(0.1, [20_000], &device)
                .expect("a mask at rate > 0");
            let kept: Vec<f32> = mask.into_data().to_vec().unwrap();
            (
                kept.iter().filter(|&&v| v == 0.0).count() as f64 / kept.len() as f64,
                kept,
            )
        };
        for power in [1u32, 3] {
            let ablation = EvalAblation::<B> {
                neuron_masks: Vec::new(),
                dropout: Some((7, power)),
            };
            let want = ablation::nested_rate(0.1, power);
            let (rate, first) = dropped_fraction(&ablation, 0);
            assert!(
                (rate - want).abs() < 0.01,
                "power {power}: {rate} vs {want}"
            );
            let (_, again) = dropped_fraction(&ablation, 0);
            let (_, second) = dropped_fraction(&ablation, 1);
            assert_eq!(first, again, "a pass's masks are seeded");
            assert_ne!(first, second, "each pass draws its own masks");
        }
        assert!(EvalAblation::<B>::none().context(0).dropout.is_none());
    }
}
