//! Training pieces with PyTorch / HF `Trainer` conventions, where Burn 0.21 differs:
//!
//! - [`AdamW`]: `torch.optim.AdamW` (eps 1e-8, decoupled decay `p ← p·(1 − lr·wd)`), with HF's
//!   parameter groups: no decay for biases and LayerNorm weights. Burn's `AdamW` decays every
//!   parameter and has no groups; here every tensor of rank < 2 (biases, norm weights and biases)
//!   is not decayed, which for the encoders is exactly HF's `["bias", "LayerNorm.weight"]` rule.
//! - [`clip_global_norm`]: `torch.nn.utils.clip_grad_norm_` over all parameters at once (Burn's
//!   clipping is per tensor).
//! - [`linear_schedule`]: `get_linear_schedule_with_warmup` (the learning rate of optimiser step
//!   `t`, 0-based: `t / warmup` during warmup, then a linear decay to 0 at the last step).
//! - [`Objective`]: the loss of one step: the task loss with ordinary dropout (baseline), or the
//!   comparative loss over the step's nested views ([`ablation::ViewSchedule`]).

pub mod seeds;

use ablation::{DropoutMasks, View, ViewSchedule};
use anyhow::{Result, bail};
use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{
    AdamWConfig, AdamWState, GradientsAccumulator, GradientsParams, Optimizer, SimpleOptimizer,
};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use losses::{ComparativeLoss, DummyTarget, Primary, cross_entropy, mse};
use models::{
    EncoderInput, ForwardContext, RowBatch, SequenceClassifier, ViewExecution, view_losses,
};

use crate::harness::experiment::{CmpMode, LossSpec, PrimarySpec, Target};

/// AdamW as `torch.optim.AdamW`, with no decay on tensors of rank < 2 (see the module docs).
#[derive(Clone)]
pub struct AdamW {
    decay: burn::optim::AdamW,
    no_decay: burn::optim::AdamW,
}

impl AdamW {
    /// β = (0.9, 0.999), eps = 1e-8 (PyTorch's and HF's defaults), decay `weight_decay`.
    pub fn new(weight_decay: f64) -> Self {
        Self::with_beta1(weight_decay, 0.9)
    }

    /// As [`Self::new`] with β₁ = `beta1` (Mondal et al.: 0.95).
    pub fn with_beta1(weight_decay: f64, beta1: f64) -> Self {
        let config = AdamWConfig::new()
            .with_epsilon(1e-8)
            .with_beta_1(beta1 as f32);
        Self {
            decay: config
                .clone()
                .with_weight_decay(weight_decay as f32)
                .build(),
            no_decay: config.with_weight_decay(0.0).build(),
        }
    }

    /// The optimiser for a module.
    pub fn init<B: AutodiffBackend, M: AutodiffModule<B>>(self) -> OptimizerAdaptor<Self, M, B> {
        OptimizerAdaptor::from(self)
    }
}

impl<B: Backend> SimpleOptimizer<B> for AdamW {
    type State<const D: usize> = AdamWState<B, D>;

    fn step<const D: usize>(
        &self,
        lr: f64,
        tensor: Tensor<B, D>,
        grad: Tensor<B, D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<B, D>, Option<Self::State<D>>) {
        if D >= 2 {
            self.decay.step(lr, tensor, grad, state)
        } else {
            self.no_decay.step(lr, tensor, grad, state)
        }
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &B::Device) -> Self::State<D> {
        <burn::optim::AdamW as SimpleOptimizer<B>>::to_device(state, device)
    }
}

/// Sum of squared gradients of every parameter of a module.
struct SquaredNorm<'a, B: AutodiffBackend> {
    grads: &'a GradientsParams,
    total: Option<Tensor<B::InnerBackend, 1>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for SquaredNorm<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.get::<B::InnerBackend, D>(param.id) {
            let s = g.square().sum();
            self.total = Some(match self.total.take() {
                Some(t) => t + s,
                None => s,
            });
        }
    }
}

/// Multiply every gradient by a factor.
struct Scale<'a> {
    grads: &'a mut GradientsParams,
    factor: f64,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Scale<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.remove::<B::InnerBackend, D>(param.id) {
            self.grads.register(param.id, g.mul_scalar(self.factor));
        }
    }
}

/// The global L2 norm of all gradients of `model`.
pub fn global_grad_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &M,
    grads: &GradientsParams,
) -> f64 {
    let mut visitor = SquaredNorm::<B> { grads, total: None };
    model.visit(&mut visitor);
    visitor
        .total
        .map_or(0.0, |t| t.into_scalar().elem::<f64>().sqrt())
}

/// Where a training loop is in its data: a seeded order of the training units per epoch
/// (`order_of(epoch)`), read one batch after another; an epoch's last batch may be smaller, and
/// the next batch starts the next epoch's order.
pub struct EpochCursor<F: Fn(usize) -> Vec<usize>> {
    order_of: F,
    order: Vec<usize>,
    /// The epoch being read.
    pub epoch: usize,
    /// The position in its order.
    pub cursor: usize,
}

impl<F: Fn(usize) -> Vec<usize>> EpochCursor<F> {
    /// At `cursor` in epoch `epoch` (0, 0 for a fresh run; a checkpoint's for a resumed one).
    pub fn new(order_of: F, epoch: usize, cursor: usize) -> Self {
        Self {
            order: order_of(epoch),
            order_of,
            epoch,
            cursor,
        }
    }

    /// The next batch of at most `size` units.
    pub fn next_batch(&mut self, size: usize) -> &[usize] {
        if self.cursor >= self.order.len() {
            self.epoch += 1;
            self.order = (self.order_of)(self.epoch);
            self.cursor = 0;
        }
        let start = self.cursor;
        self.cursor = (start + size).min(self.order.len());
        &self.order[start..self.cursor]
    }
}

/// One optimiser step of every training loop (encoder cells and LoRA cells): `accum`
/// micro-batches, each `micro(model, k)`'s loss checked finite and its gradients accumulated at
/// weight `1 / accum`, then global-norm clipping to `max_grad_norm` (none at 0) and `optimizer`
/// at learning rate `lr`. Returns the model and the step's loss (the mean of the micro-batches').
/// A non-finite loss is an error naming the step and the learning rate.
pub fn accumulated_step<B, M, O>(
    model: M,
    optimizer: &mut O,
    (step, lr): (usize, f64),
    accum: usize,
    max_grad_norm: f64,
    mut micro: impl FnMut(&M, usize) -> Result<Tensor<B, 1>>,
) -> Result<(M, f64)>
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
    O: Optimizer<M, B>,
{
    let accum = accum.max(1);
    let mut accumulator = GradientsAccumulator::<M>::new();
    let mut step_loss = 0.0;
    for k in 0..accum {
        let loss = micro(&model, k)?;
        let value = f64::from(loss.clone().into_scalar().elem::<f32>());
        if !value.is_finite() {
            bail!(
                "step {step}: the training loss is {value} (learning rate {lr:.3e}); lower the \
                 learning rate or check the labels"
            );
        }
        step_loss += value / accum as f64;
        let loss = if accum > 1 { loss / accum as f32 } else { loss };
        accumulator.accumulate(&model, GradientsParams::from_grads(loss.backward(), &model));
    }
    let mut grads = accumulator.grads();
    if max_grad_norm > 0.0 {
        clip_global_norm(&model, &mut grads, max_grad_norm);
    }
    Ok((optimizer.step(lr, model, grads), step_loss))
}

/// Clip the gradients of `model` to global norm `max_norm` as `clip_grad_norm_` does (scale by
/// `max_norm / (norm + 1e-6)` when that is below 1); returns the norm before clipping.
/// `max_norm = 0` only measures.
pub fn clip_global_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &M,
    grads: &mut GradientsParams,
    max_norm: f64,
) -> f64 {
    let norm = global_grad_norm(model, grads);
    let factor = max_norm / (norm + 1e-6);
    if max_norm > 0.0 && factor < 1.0 {
        model.visit(&mut Scale { grads, factor });
    }
    norm
}

/// The learning rate of optimiser step `step` (0-based) of `total`, with `warmup` warmup steps
/// (HF `get_linear_schedule_with_warmup`: the first step of a warmup runs at lr 0).
pub fn linear_schedule(peak: f64, step: usize, warmup: usize, total: usize) -> f64 {
    if step < warmup {
        peak * step as f64 / warmup as f64
    } else {
        let left = total.saturating_sub(step) as f64;
        peak * (left / (total - warmup).max(1) as f64).max(0.0)
    }
}

/// Targets of a batch.
#[derive(Debug, Clone)]
pub enum Targets<B: Backend> {
    /// Class indices, `[batch]`.
    Classes(Tensor<B, 1, Int>),
    /// Regression values, `[batch]`.
    Values(Tensor<B, 1>),
}

impl<B: Backend> Targets<B> {
    /// Per-example task loss of `outputs` (`[n · batch, K]`) against the targets repeated `n`
    /// times: cross-entropy for classes, squared error for values (`K = 1`).
    pub fn losses(&self, outputs: Tensor<B, 2>, n: usize) -> Tensor<B, 1> {
        match self {
            Self::Classes(labels) => cross_entropy(outputs, labels.clone().repeat_dim(0, n)),
            Self::Values(values) => {
                let rows = outputs.dims()[0];
                mse(outputs.reshape([rows]), values.clone().repeat_dim(0, n))
            }
        }
    }
}

/// The loss of a training step.
#[derive(Debug, Clone)]
pub struct Objective {
    /// The step's views: `[(0, 1)]` (ordinary dropout) for the baseline.
    pub views: Vec<View>,
    /// The comparative loss, or `None` for the baseline (mean task loss).
    pub comparative: Option<ComparativeLoss>,
    /// Batched or sequential views.
    pub execution_budget: Option<usize>,
}

impl Objective {
    /// The objective of a loss spec. `view_budget_tokens` (0: none) caps the tokens of a batched
    /// step. Input views (`n_crop`) need segmented inputs, which classification has not: see
    /// [`Self::with_crops`].
    pub fn new(spec: &LossSpec, view_budget_tokens: usize) -> Result<Self> {
        Self::build(spec, view_budget_tokens, None)
    }

    /// As [`Self::new`] for a task whose inputs have nested views (`n_crop > 0` allowed);
    /// `what` names the task in the error of a loss that compares nothing.
    pub fn with_crops(spec: &LossSpec, view_budget_tokens: usize, what: &str) -> Result<Self> {
        Self::build(spec, view_budget_tokens, Some(what))
    }

    fn build(spec: &LossSpec, view_budget_tokens: usize, crops: Option<&str>) -> Result<Self> {
        let budget = (view_budget_tokens > 0).then_some(view_budget_tokens);
        match spec {
            LossSpec::Baseline => Ok(Self {
                views: ViewSchedule::new(0, 0).views(),
                comparative: None,
                execution_budget: budget,
            }),
            LossSpec::Comparative {
                n_drop,
                n_crop,
                target,
                mode,
                primary,
                weight,
                temperature,
                ..
            } => {
                if *n_crop > 0 && crops.is_none() {
                    bail!(
                        "n_crop = {n_crop}: input views need a task with segments to drop \
                         (HotpotQA paragraphs, ranking candidates); this task has none"
                    );
                }
                if *n_drop == 0 && *n_crop == 0 {
                    bail!(
                        "the comparative loss needs n_drop >= 1{} (c = 0 compares nothing)",
                        crops.map_or(String::new(), |w| format!(" or n_crop >= 1 ({w})"))
                    );
                }
                let loss = match mode {
                    CmpMode::Comparative => ComparativeLoss::new(match target {
                        Target::Ultra => DummyTarget::Ultra,
                        Target::Best => DummyTarget::Best,
                        Target::First => DummyTarget::First,
                    }),
                    CmpMode::Weighted => ComparativeLoss::weighted(
                        match primary.unwrap_or(PrimarySpec::Avg) {
                            PrimarySpec::Max => Primary::Max,
                            PrimarySpec::Avg => Primary::Avg,
                            PrimarySpec::First => Primary::First,
                            PrimarySpec::Last => Primary::Last,
                        },
                        weight.unwrap_or(1.0),
                    ),
                };
                Ok(Self {
                    views: ViewSchedule::new(*n_drop, *n_crop).views(),
                    comparative: Some(loss.with_temperature(*temperature)),
                    execution_budget: budget,
                })
            }
        }
    }

    /// The number of input views the step reads (1 + `n_crop`).
    pub fn input_views(&self) -> usize {
        self.views.iter().map(|v| v.crop).max().unwrap_or(0) + 1
    }

    /// Per-row outputs of every view of one step, `[B, c + 1, K]` ([`view_losses`]): `f(input,
    /// ctx, n)` runs the model on `n` views' rows stacked and returns `[n · B, K]`. Takes the
    /// step's dropout uniforms from `masks` (advanced by one step) and puts them back.
    pub fn run_views<B, I, F>(
        &self,
        inputs: &[I],
        seq_len: usize,
        masks: &mut Option<DropoutMasks<B>>,
        f: F,
    ) -> Tensor<B, 3>
    where
        B: Backend,
        I: RowBatch + Clone,
        F: FnMut(&I, &mut ForwardContext<B>, usize) -> Tensor<B, 2>,
    {
        self.run_views_of(&self.views, inputs, seq_len, masks, f)
    }

    /// As [`Self::run_views`] for other passes than the objective's views (e.g. one pass per
    /// dropout power when the input views are masks over the outputs).
    pub fn run_views_of<B, I, F>(
        &self,
        views: &[View],
        inputs: &[I],
        seq_len: usize,
        masks: &mut Option<DropoutMasks<B>>,
        f: F,
    ) -> Tensor<B, 3>
    where
        B: Backend,
        I: RowBatch + Clone,
        F: FnMut(&I, &mut ForwardContext<B>, usize) -> Tensor<B, 2>,
    {
        let batch = inputs[0].rows();
        let execution =
            ViewExecution::for_budget(views.len(), batch, seq_len, self.execution_budget);
        let mut step_masks = masks.take().expect("dropout masks are set");
        step_masks.next_step();
        let mut ctx = ForwardContext::with_dropout(step_masks);
        let out = view_losses(views, inputs, execution, &mut ctx, f);
        *masks = ctx.dropout.take();
        out
    }

    /// The step loss (a one-element tensor) from per-view task losses `[B, c + 1, K]`: `K = 1`
    /// one loss per example, `K = 2` the start and end losses of span extraction (the official
    /// `CmpQA` compares them separately and averages). The baseline is the mean task loss (for
    /// spans, HF's `(start + end) / 2`).
    pub fn combine<B: Backend>(&self, per_view: Tensor<B, 3>) -> Tensor<B, 1> {
        let [b, v, k] = per_view.dims();
        match (&self.comparative, k) {
            (None, _) => per_view.mean(),
            (Some(cmp), 1) => cmp.forward(per_view.reshape([b, v])),
            (Some(cmp), 2) => {
                let start = per_view.clone().slice([0..b, 0..v, 0..1]).reshape([b, v]);
                let end = per_view.slice([0..b, 0..v, 1..2]).reshape([b, v]);
                cmp.forward_span(start, end)
            }
            (Some(_), k) => panic!("per-view losses have 1 or 2 columns, got {k}"),
        }
    }

    /// The step loss (a one-element tensor) of a sequence classifier on one batch. Draws the
    /// step's dropout uniforms from `masks`.
    pub fn loss<B: Backend>(
        &self,
        model: &SequenceClassifier<B>,
        input: &EncoderInput<B>,
        targets: &Targets<B>,
        masks: &mut Option<DropoutMasks<B>>,
    ) -> Tensor<B, 1> {
        let seq = input.input_ids.dims()[1];
        let per_view = self.run_views(std::slice::from_ref(input), seq, masks, |input, ctx, n| {
            targets
                .losses(model.forward(input, ctx), n)
                .unsqueeze_dim(1)
        });
        self.combine(per_view)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_schedule_matches_hf() {
        // get_linear_schedule_with_warmup(opt, 2, 10) at lr 1: steps 0..10.
        let expected = [0.0, 0.5, 1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125];
        for (t, e) in expected.iter().enumerate() {
            assert!(
                (linear_schedule(1.0, t, 2, 10) - e).abs() < 1e-12,
                "step {t}"
            );
        }
        assert_eq!(linear_schedule(1.0, 0, 0, 4), 1.0);
        assert_eq!(linear_schedule(1.0, 3, 0, 4), 0.25);
    }

    #[test]
    fn span_losses_combine_as_the_official_start_end_average() {
        use burn::backend::NdArray;
        type B = NdArray<f32>;
        let device = Default::default();
        // [batch 2, views 3, (start, end)].
        let values = vec![
            0.5f32, 1.0, 0.8, 0.9, 0.7, 1.4, //
            0.2, 0.1, 0.3, 0.6, 0.9, 0.2,
        ];
        let per_view =
            Tensor::<B, 3>::from_data(TensorData::new(values.clone(), [2, 3, 2]), &device);
        let spec = LossSpec::Comparative {
            n_drop: 2,
            n_crop: 0,
            p: None,
            target: Target::Ultra,
            mode: CmpMode::Comparative,
            primary: None,
            weight: None,
            temperature: 1.0,
            train: Box::default(),
        };
        let objective = Objective::new(&spec, 0).unwrap();
        let got = objective.combine(per_view.clone()).into_scalar();
        let column = |k: usize| {
            let v: Vec<f32> = values.iter().skip(k).step_by(2).copied().collect();
            Tensor::<B, 2>::from_data(TensorData::new(v, [2, 3]), &device)
        };
        let want = ComparativeLoss::new(DummyTarget::Ultra)
            .forward_span(column(0), column(1))
            .into_scalar();
        assert!((got - want).abs() < 1e-7, "{got} vs {want}");
        let baseline = Objective::new(&LossSpec::Baseline, 0).unwrap();
        let mean = values.iter().sum::<f32>() / values.len() as f32;
        let got = baseline.combine(per_view).into_scalar();
        assert!((got - mean).abs() < 1e-6, "{got} vs {mean}");
    }
}
