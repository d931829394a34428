//! The training loop of every training cell ([`fit`]) with its checkpoints ([`checkpoint`]),
//! and its pieces with PyTorch / HF `Trainer` conventions, where Burn 0.21 differs:
//!
//! - [`AdamW`]: `torch.optim.AdamW` (eps 1e-8, decoupled decay `p ← p·(1 − lr·wd)`), with HF's
//!   parameter groups: no decay for biases and LayerNorm weights. Burn's `AdamW` decays every
//!   parameter and has no groups; here every tensor of rank < 2 (biases, norm weights and biases)
//!   is not decayed, which for the encoders is exactly HF's `["bias", "LayerNorm.weight"]` rule.
//!   On LibTorch each parameter's update is torch's in-place `_single_tensor_adamw` arithmetic
//!   ([`models::fused::adamw_step`], half the passes of Burn's); elsewhere Burn's `AdamW`.
//! - [`clip_global_norm`]: `torch.nn.utils.clip_grad_norm_` over all parameters at once (Burn's
//!   clipping is per tensor).
//! - [`linear_schedule`]: `get_linear_schedule_with_warmup` (the learning rate of optimiser step
//!   `t`, 0-based: `t / warmup` during warmup, then a linear decay to 0 at the last step).

pub mod checkpoint;
pub mod fit;
pub mod seeds;

use anyhow::{Result, bail};
use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{
    AdamWConfig, AdamWState, AdaptiveMomentumState, GradientsAccumulator, GradientsParams,
    Optimizer, SimpleOptimizer,
};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use models::fused::{AdamWStep, AdamWTensors};

/// AdamW as `torch.optim.AdamW`, with no decay on tensors of rank < 2 (see the module docs).
#[derive(Clone)]
pub struct AdamW {
    decay: burn::optim::AdamW,
    no_decay: burn::optim::AdamW,
    weight_decay: f32,
    beta_1: f32,
}

/// β₂ and ε of [`AdamW`] (PyTorch's defaults).
const BETA_2: f32 = 0.999;
const EPSILON: f32 = 1e-8;

impl AdamW {
    /// β = (0.9, 0.999), eps = 1e-8 (PyTorch's and HF's defaults), decay `weight_decay`.
    pub fn new(weight_decay: f64) -> Self {
        Self::with_beta1(weight_decay, 0.9)
    }

    /// As [`Self::new`] with β₁ = `beta1` (Mondal et al.: 0.95).
    pub fn with_beta1(weight_decay: f64, beta1: f64) -> Self {
        let config = AdamWConfig::new()
            .with_epsilon(EPSILON)
            .with_beta_1(beta1 as f32)
            .with_beta_2(BETA_2);
        Self {
            decay: config
                .clone()
                .with_weight_decay(weight_decay as f32)
                .build(),
            no_decay: config.with_weight_decay(0.0).build(),
            weight_decay: weight_decay as f32,
            beta_1: beta1 as f32,
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
        // LibTorch: torch's in-place update (models::fused::adamw_step); elsewhere Burn's.
        let (time, moments) = match state {
            Some(s) => (
                s.momentum.time + 1,
                Some((s.momentum.moment_1, s.momentum.moment_2)),
            ),
            None => (1, None),
        };
        let step = AdamWStep {
            lr,
            beta_1: self.beta_1,
            beta_2: BETA_2,
            epsilon: EPSILON,
            weight_decay: if D >= 2 { self.weight_decay } else { 0.0 },
            time,
        };
        let tensors = AdamWTensors {
            param: tensor,
            grad,
            moments,
        };
        match models::fused::adamw_step(tensors, step) {
            Ok((tensor, moment_1, moment_2)) => {
                let momentum = AdaptiveMomentumState::new(time, moment_1, moment_2);
                (tensor, Some(AdamWState { momentum }))
            }
            Err(AdamWTensors {
                param,
                grad,
                moments,
            }) => {
                let state = moments.map(|(moment_1, moment_2)| AdamWState {
                    momentum: AdaptiveMomentumState::new(time - 1, moment_1, moment_2),
                });
                let optimizer = if D >= 2 { &self.decay } else { &self.no_decay };
                optimizer.step(lr, param, grad, state)
            }
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
            let s = models::fused::squared_sum(g);
            self.total = Some(match self.total.take() {
                Some(t) => t + s,
                None => s,
            });
        }
    }
}

/// Multiply every gradient by a one-element factor that stays on the device.
struct Scale<'a, B: AutodiffBackend> {
    grads: &'a mut GradientsParams,
    factor: Tensor<B::InnerBackend, 1>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Scale<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.remove::<B::InnerBackend, D>(param.id) {
            let factor = self.factor.clone().reshape([1; D]);
            self.grads.register(param.id, g.mul(factor));
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

/// Clip the gradients of `model` to global norm `max_norm` as `clip_grad_norm_` does: every
/// gradient times `min(1, max_norm / (norm + 1e-6))`, computed on the device (no read-back, so a
/// GPU step does not wait here). `max_norm <= 0` leaves the gradients alone.
pub fn clip_global_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &M,
    grads: &mut GradientsParams,
    max_norm: f64,
) {
    if max_norm <= 0.0 {
        return;
    }
    let mut visitor = SquaredNorm::<B> { grads, total: None };
    model.visit(&mut visitor);
    let Some(total) = visitor.total else {
        return;
    };
    let factor = total
        .sqrt()
        .add_scalar(1e-6)
        .recip()
        .mul_scalar(max_norm)
        .clamp_max(1.0);
    model.visit(&mut Scale::<B> { grads, factor });
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
}
