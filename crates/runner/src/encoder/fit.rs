//! The training of every encoder cell ([`fit`]), over what an [`EncoderLearner`] says the
//! cell's task family learns: its model, the loss of a batch and the evaluation. Training is the
//! one loop of [`crate::training::fit`] (HF `Trainer`'s conventions, what the CmpLoss code runs
//! on); here each batch gets its dropout uniforms and its view generator from seeds derived from
//! the cell's seed and the batch's index, and each epoch's order is a seeded shuffle (grouped
//! by length with `group_by_length`), so a run is identical for the same seed on the same
//! backend.
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
use std::path::Path;

use ablation::DropoutMasks;
use anyhow::{Context, Result, bail};
use burn::module::AutodiffModule;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use models::{BertModel, Checkpoint, ForwardContext};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::encoder::cell::TrainCell;
use crate::encoder::objective::Objective;
use crate::encoder::spec::LossSpec;
use crate::harness::log::{Outcome, RunLog};
pub use crate::training::fit::{Evaluation, Inner};
use crate::training::fit::{Learner, Plan};
use crate::training::seeds::{Purpose, derive_seed};

/// What an encoder task family learns: its model, the loss of a batch and the evaluation, with
/// what an evaluation ablates. [`fit`] runs every family (sentence classification, span
/// extraction, re-ranking) through the one training loop ([`crate::training::fit`]).
pub trait EncoderLearner<B: AutodiffBackend> {
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

/// An encoder family's learner as the training loop sees it: batches through the cell's
/// objective with the step's dropout masks and view generator.
struct Training<'a, L> {
    cell: &'a TrainCell,
    learner: &'a L,
    objective: &'a Objective,
    lens: Vec<usize>,
}

impl<B: AutodiffBackend, L: EncoderLearner<B>> Learner<B> for Training<'_, L> {
    type Model = L::Model;

    fn train_len(&self) -> usize {
        self.lens.len()
    }

    fn describe(&self, plan: &Plan) -> String {
        format!(
            "{}, {} steps ({} per epoch), warmup {}",
            self.learner.sizes(),
            plan.total,
            plan.steps_per_epoch,
            plan.warmup
        )
    }

    fn epoch_order(&self, epoch: usize) -> Vec<usize> {
        let t = &self.cell.train;
        epoch_order(
            &self.lens,
            self.cell.seed,
            epoch,
            t.batch_size,
            t.group_by_length,
        )
    }

    fn batch_loss(
        &self,
        model: &L::Model,
        batch: &[usize],
        index: u64,
        device: &B::Device,
    ) -> Result<Tensor<B, 1>> {
        let seed = |purpose| derive_seed(self.cell.seed, purpose, index);
        let mut masks = Some(DropoutMasks::new(seed(Purpose::EncoderDropout)));
        let mut rng = StdRng::seed_from_u64(seed(Purpose::EncoderViews));
        self.learner
            .batch_loss(model, batch, self.objective, &mut masks, &mut rng, device)
    }

    fn evaluate(
        &self,
        model: &Inner<B, L::Model>,
        log: &mut RunLog,
        device: &B::Device,
    ) -> Result<Evaluation> {
        let mut shown = |done, total| log.evaluating("examples", done, total, "evaluation");
        self.learner
            .evaluate(model, &EvalAblation::none(), &mut shown, device)
    }
}

/// Train an encoder cell (see the module docs): `model` with `objective` on `learner`'s units
/// through the one training loop, then save the best model and evaluate it under FFN ablation
/// and forced dropout.
pub fn fit<B: AutodiffBackend, L: EncoderLearner<B>>(
    cell: &TrainCell,
    learner: &L,
    model: L::Model,
    objective: &Objective,
    dir: &Path,
    log: &mut RunLog,
    device: &B::Device,
) -> Result<Outcome> {
    if learner.train_len() == 0 {
        bail!("the training split of `{}` is empty", cell.dataset_name);
    }
    let training = Training {
        cell,
        learner,
        objective,
        lens: (0..learner.train_len())
            .map(|i| learner.unit_len(i))
            .collect(),
    };
    let trained = crate::training::fit::fit(&training, model, &cell.train, dir, log, device)?;
    let t = &cell.train;
    let best_model = &trained.model;
    if t.save_model {
        let out = dir.join("model");
        learner
            .save(best_model, &out)
            .with_context(|| format!("saving the best model to {}", out.display()))?;
        models::copy_tokenizer_files(&cell.model_dir, &out)?;
        log.line(&format!(
            "best model (step {}) saved to {}",
            trained.best_step,
            out.display()
        ));
    }
    let mut ablation = Vec::new();
    for &rate in &t.ablation_rates {
        let encoder = learner.encoder(best_model);
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
        let evaluation = learner.evaluate(best_model, &ablated, &mut shown, device)?;
        log.line(&format!(
            "ablation rate {rate}: {} {:.4}",
            evaluation.main,
            evaluation.main_value()
        ));
        ablation.push((rate, evaluation.main_value()));
    }
    let mut best_metrics = trained.best_metrics;
    for &power in &t.eval_dropout_powers {
        let dropped = EvalAblation {
            neuron_masks: Vec::new(),
            dropout: Some((
                derive_seed(cell.seed, Purpose::EncoderEvalDropout, u64::from(power)),
                power,
            )),
        };
        let mut shown = |done, total| log.evaluating("examples", done, total, "dropout");
        let evaluation = learner.evaluate(best_model, &dropped, &mut shown, device)?;
        log.line(&format!(
            "dropout power {power}: {} {:.4}",
            evaluation.main,
            evaluation.main_value()
        ));
        best_metrics.insert(
            format!("{}@dropout{power}", evaluation.main),
            evaluation.main_value(),
        );
    }
    Ok(Outcome {
        main_metric: trained.main_metric,
        metrics: best_metrics,
        best_step: Some(trained.best_step),
        final_metrics: trained.last_metrics,
        steps: Some(trained.plan.total),
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
