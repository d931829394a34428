//! The one training loop ([`fit`]) of every training cell (encoders, PRF reformulators, LoRA
//! adapters), over what a [`Learner`] says the cell learns: its model, the loss of a batch, the
//! order of its training units and its evaluation.
//!
//! The loop follows HF `Trainer`'s conventions: a seeded order of the training units per epoch,
//! batches of `batch_size` (an epoch's last one smaller), `grad_accum_steps` batches per
//! optimiser step, global-norm clipping, AdamW ([`super::AdamW`], β₁ = `adam_beta1`) under the
//! linear warmup/decay schedule. The learner draws every random choice of a batch from the
//! batch's index (`step · grad_accum_steps + micro-batch`), so a run is identical for the same
//! seed on the same backend, resumed or not.
//!
//! A learner that evaluates during training is evaluated every `eval_every` optimiser steps (0:
//! at the end of each epoch) and at the last step; each evaluation is a line of `metrics.jsonl`,
//! and the best one by its main metric is kept (its model, and its prediction files in the run
//! folder). A learner that does not evaluate (LoRA cells, evaluated once after training) ends
//! with its last model. Checkpoints ([`super::checkpoint`]) are written at an evaluation, or
//! after a step for a learner that does not evaluate, once `checkpoint_every_s` seconds have
//! passed since the last; a run folder with one continues from it.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::module::{AutodiffModule, Module};
use burn::optim::Optimizer;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;

use super::checkpoint::{self, ResumeState};
use super::{AdamW, EpochCursor, accumulated_step, linear_schedule};
use crate::harness::experiment::TrainConfig;
use crate::harness::log::{EvalRecord, RunLog};
use crate::harness::results::write_atomic;
use crate::harness::signals::{self, Interrupted};
use crate::metrics::Scores;

/// The inference-time module of a trainable model.
pub type Inner<B, M> = <M as AutodiffModule<B>>::InnerModule;

/// A model's evaluation: its metrics, which of them is the main one (higher is better), and the
/// prediction files to keep in the run folder when it is the best so far (name → contents;
/// e.g. `predictions.json`, `run.trec`).
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// The main metric's name.
    pub main: String,
    /// Every metric.
    pub metrics: BTreeMap<String, f64>,
    /// Prediction files.
    pub files: Vec<(String, String)>,
}

impl Evaluation {
    /// The evaluation of a task's scores.
    pub fn new(scores: Scores, files: Vec<(String, String)>) -> Self {
        Self {
            main: scores.main.to_string(),
            metrics: scores
                .values
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
            files,
        }
    }

    /// The main metric's value.
    pub fn main_value(&self) -> f64 {
        self.metrics.get(&self.main).copied().unwrap_or(f64::NAN)
    }
}

/// The run's length, for the learner's opening line of the log.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Optimiser steps per epoch.
    pub steps_per_epoch: usize,
    /// Optimiser steps.
    pub total: usize,
    /// Warmup steps.
    pub warmup: usize,
    /// Optimiser steps between evaluations.
    pub eval_every: usize,
}

/// What a training cell learns.
pub trait Learner<B: AutodiffBackend> {
    /// The model.
    type Model: AutodiffModule<B> + Clone;
    /// Training units (examples, windows, query groups).
    fn train_len(&self) -> usize;
    /// The log's opening line for the run (sizes, steps).
    fn describe(&self, plan: &Plan) -> String;
    /// The seeded order of the training units in `epoch`.
    fn epoch_order(&self, epoch: usize) -> Vec<usize>;
    /// The loss (one element) of a batch of training units; `index` is the batch's index in
    /// the run (`step · grad_accum_steps + micro-batch`), the seed of its random choices.
    fn batch_loss(
        &self,
        model: &Self::Model,
        batch: &[usize],
        index: u64,
        device: &B::Device,
    ) -> Result<Tensor<B, 1>>;
    /// Whether the loop evaluates the model during training (and keeps the best one).
    fn evaluates(&self) -> bool {
        true
    }
    /// Evaluate the model during training; `log` shows the evaluation's progress.
    fn evaluate(
        &self,
        model: &Inner<B, Self::Model>,
        log: &mut RunLog,
        device: &B::Device,
    ) -> Result<Evaluation>;
}

/// What the loop ends with.
pub struct Trained<M> {
    /// The best evaluated model, or the last one when the learner does not evaluate.
    pub model: M,
    /// Its step.
    pub best_step: usize,
    /// The main metric's name (empty when the learner does not evaluate).
    pub main_metric: String,
    /// The best evaluation's metrics.
    pub best_metrics: BTreeMap<String, f64>,
    /// The last evaluation's metrics.
    pub last_metrics: BTreeMap<String, f64>,
    /// The run's length.
    pub plan: Plan,
    /// The mean step loss over the run.
    pub mean_loss: f64,
    /// The last step's learning rate.
    pub last_lr: f64,
    /// Seconds of training (a resumed run's included).
    pub seconds: f64,
}

/// The best evaluation so far: (main metric, step, metrics, model).
type Best<M> = (f64, usize, BTreeMap<String, f64>, M);

impl Plan {
    /// The plan of a run of `n` training examples under the settings `t` (evaluations every
    /// `eval_every` steps, or once an epoch).
    fn of(t: &TrainConfig, n: usize) -> Self {
        let (steps_per_epoch, total, warmup) = t.steps(n);
        let eval_every = if t.eval_every > 0 {
            t.eval_every
        } else {
            steps_per_epoch
        };
        Self {
            steps_per_epoch,
            total,
            warmup,
            eval_every,
        }
    }
}

/// Load the run folder's checkpoint, if it has one, into `model` and `optimizer`: where the run
/// stands (a run that has not started without one) and its best model so far.
#[allow(clippy::type_complexity)]
fn resume<B: AutodiffBackend, M: AutodiffModule<B>, O: Optimizer<M, B>>(
    model: M,
    optimizer: O,
    dir: &Path,
    log: &mut RunLog,
    device: &B::Device,
) -> Result<(M, O, ResumeState, Option<Best<M::InnerModule>>)> {
    let Some((state, ckpt)) = ResumeState::find(dir)? else {
        return Ok((model, optimizer, ResumeState::default(), None));
    };
    let recorder = checkpoint::recorder();
    let resuming = || format!("resuming from {}", ckpt.display());
    let model = checkpoint::load_model(model, &ckpt).with_context(resuming)?;
    let record = burn::record::Recorder::<B>::load(&recorder, ckpt.join("optimizer"), device)
        .with_context(resuming)?;
    let optimizer = optimizer.load_record(record);
    let best = match state.best.clone() {
        Some((value, step, metrics)) => {
            let best_model = model
                .valid()
                .load_file(ckpt.join("best"), &recorder, device)
                .with_context(resuming)?;
            Some((value, step, metrics, best_model))
        }
        None => None,
    };
    log.line(&format!(
        "resumed from the checkpoint at step {}",
        state.step
    ));
    Ok((model, optimizer, state, best))
}

/// Train `model` as `learner` says under the settings `t` (see the module docs), with its
/// checkpoint in the run folder `dir` and its progress in `log`.
pub fn fit<B: AutodiffBackend, L: Learner<B>>(
    learner: &L,
    model: L::Model,
    t: &TrainConfig,
    dir: &Path,
    log: &mut RunLog,
    device: &B::Device,
) -> Result<Trained<Inner<B, L::Model>>> {
    let n = learner.train_len();
    if n == 0 {
        bail!("the training set is empty");
    }
    let optimizer = AdamW::with_beta1(t.weight_decay, t.adam_beta1).init::<B, L::Model>();
    let accum = t.grad_accum_steps.max(1);
    let plan = Plan::of(t, n);
    let Plan {
        steps_per_epoch,
        total,
        warmup,
        eval_every,
    } = plan;
    log.line(&learner.describe(&plan));
    if warmup > total {
        log.line(&format!(
            "warning: warmup_steps = {warmup} is more than the run's {total} steps: the learning \
             rate never reaches learning_rate = {}",
            t.learning_rate
        ));
    }
    if t.tensorboard {
        log.tensorboard()?;
    }
    let evaluates = learner.evaluates();
    let started = Instant::now();
    let (mut model, mut optimizer, state, mut best) = resume(model, optimizer, dir, log, device)?;
    let (first_step, seconds_before) = (state.step, state.seconds);
    let (mut loss_since_eval, mut loss_total) = (state.loss_since_eval, state.loss_total);
    let mut last_metrics = state.last_metrics;
    // When the last checkpoint was written (or the cell started), and whether the best model
    // changed since (a checkpoint without it carries the previous one's best model over).
    let mut last_checkpoint = Instant::now();
    let mut best_unsaved = false;
    let mut main_metric = String::new();
    let mut data = EpochCursor::new(|e| learner.epoch_order(e), state.epoch, state.cursor);
    let mut lr = 0.0;
    for step in first_step..total {
        lr = linear_schedule(t.learning_rate, step, warmup, total);
        let step_loss;
        (model, step_loss) = accumulated_step(
            model,
            &mut optimizer,
            (step, lr),
            accum,
            t.max_grad_norm,
            |model, micro| {
                let batch = data.next_batch(t.batch_size);
                learner.batch_loss(model, batch, (step * accum + micro) as u64, device)
            },
        )?;
        loss_since_eval = (loss_since_eval.0 + step_loss, loss_since_eval.1 + 1);
        loss_total += step_loss;
        log.progress(step + 1, total, step_loss, lr, started)?;
        let done = step + 1;
        let seconds = seconds_before + started.elapsed().as_secs_f64();
        let evaluation_due = evaluates && (done % eval_every == 0 || done == total);
        if evaluation_due {
            let valid = model.valid();
            let evaluation = learner.evaluate(&valid, log, device)?;
            main_metric = evaluation.main.clone();
            let record = EvalRecord {
                step: done,
                epoch: done as f64 / steps_per_epoch as f64,
                train_loss: loss_since_eval.0 / loss_since_eval.1.max(1) as f64,
                learning_rate: lr,
                metrics: evaluation.metrics.clone(),
                seconds,
            };
            log.record(&record)?;
            let value = evaluation.main_value();
            log.line(&format!(
                "step {done}/{total} epoch {:.2} train loss {:.4} {main_metric} {value:.4} \
                 ({seconds:.0}s)",
                record.epoch, record.train_loss,
            ));
            loss_since_eval = (0.0, 0);
            if best.as_ref().is_none_or(|b| value > b.0) {
                for (name, contents) in &evaluation.files {
                    write_atomic(&dir.join(name), contents.as_bytes())?;
                }
                best = Some((value, done, evaluation.metrics.clone(), valid));
                best_unsaved = true;
            }
            last_metrics = evaluation.metrics;
        }
        // A stopping signal (harness::signals) ends the cell after this step, with a
        // checkpoint: the state holds the loss since the last evaluation, so resuming between
        // evaluations gives the uninterrupted run's numbers.
        let interrupted = signals::received().filter(|_| done < total);
        let due = last_checkpoint.elapsed().as_secs_f64() >= t.checkpoint_every_s
            && (evaluation_due || !evaluates);
        if t.checkpoints && done < total && (due || interrupted.is_some()) {
            let state = ResumeState {
                step: done,
                epoch: data.epoch,
                cursor: data.cursor,
                seconds,
                best: best.as_ref().map(|b| (b.0, b.1, b.2.clone())),
                last_metrics: last_metrics.clone(),
                loss_since_eval,
                loss_total,
            };
            let best_model = best.as_ref().filter(|_| best_unsaved).map(|b| &b.3);
            checkpoint::save(dir, &state, &model, &optimizer, best_model)?;
            (last_checkpoint, best_unsaved) = (Instant::now(), false);
        }
        if let Some(signal) = interrupted {
            return Err(Interrupted {
                signal,
                step: done,
                checkpointed: t.checkpoints,
            }
            .into());
        }
    }
    let seconds = seconds_before + started.elapsed().as_secs_f64();
    let (best_step, best_metrics, model) = match best {
        Some((_, step, metrics, model)) => (step, metrics, model),
        None => (total, BTreeMap::new(), model.valid()),
    };
    Ok(Trained {
        model,
        best_step,
        main_metric,
        best_metrics,
        last_metrics,
        plan,
        mean_loss: loss_total / total as f64,
        last_lr: lr,
        seconds,
    })
}
