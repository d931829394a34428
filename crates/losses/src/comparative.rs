//! The cross-model comparative loss (CmpLoss).
//!
//! Zhu et al., arXiv 2301.03765, Algorithm 1; official code zycdev/CmpLoss (`modeling.py`
//! `get_objective`, `utils/ranking.py` `pairwise_hinge`). Per example, with task losses
//! `l_0` (full model) … `l_c` (nested ablations) and a detached dummy loss `b`:
//!
//! ```text
//! L = 1/P · Σ_{0 ≤ i < j ≤ c+1} max(0, (l_i − l_j) / T),   l_{c+1} = b,   P = (c+1)(c+2)/2
//! ```
//!
//! then the mean over the batch. This is PyTorch's `margin_ranking_loss` with margin 0 on the
//! effects `−l_i / T`, target +1 for every pair: the hinge is `clamp_min(0)`, whose gradient passes
//! at exactly 0 (with `best` / `first` the best view ties the dummy at every step, and that tie
//! must keep its gradient). This is the official code's behaviour under its torch 1.11; recent
//! PyTorch (2.15) changed `clamp_min`'s boundary subgradient to 0 (pytorch/pytorch#184572), so
//! running the official code today gives different gradients at ties. We follow the official runs.
//!
//! The dummy (`loss_target` in the official code): `ultra` b = 0 (the default; every task loss
//! then enters the objective through its pair with the dummy); `best` b = min_i l_i; `first`
//! b = (l_0 + min_{i≥1} l_i) / 2 if the full model is strictly best, else min_{i≥1} l_i. Only b is
//! detached. The official runs train on this loss alone (`--just_cmp`); the weighted mode adds the
//! hinge without dummy, normalised by c(c+1)/2, to a primary loss (`--cr_weight`,
//! `--loss_primary`), as in the paper's weighting-strategy ablation.
//!
//! Two official options change the comparison ([`Comparison`], [`ComparativeLoss::with_schedule`]):
//! `--listwise` ranks the effects with ListMLE (`utils/ranking.py` `list_mle`) instead of the
//! pairwise hinge, in both modes, and `--cr_schedule` adds the weighted mode's regulariser only
//! on batches whose mean primary loss is at most [`SCHEDULE_THRESHOLD`].

use burn::prelude::*;

/// How the dummy loss `b` is set (official `loss_target`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DummyTarget {
    /// b = 0.
    Ultra,
    /// b = min over all views (detached).
    Best,
    /// b = (l_0 + min_{i≥1} l_i) / 2 when the full model is strictly best, else min_{i≥1} l_i.
    First,
}

/// The primary loss of the weighted mode (official `loss_primary`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Primary {
    /// max_i l_i.
    Max,
    /// mean_i l_i.
    Avg,
    /// l_0 (the full model).
    First,
    /// l_c (the most ablated model).
    Last,
}

/// How the comparative term enters the training objective.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// The comparative loss alone, dummy included (the official runs' `--just_cmp`).
    ComparativeOnly,
    /// `primary + weight · hinge`, the hinge over the c + 1 views without the dummy.
    Weighted {
        /// Which task loss is primary.
        primary: Primary,
        /// Weight of the pairwise term.
        weight: f64,
        /// The official `--cr_schedule`: leave the regulariser out of a batch whose mean primary
        /// loss exceeds [`SCHEDULE_THRESHOLD`].
        schedule: bool,
    },
}

/// How the views' effects `−l_i / T` are ranked against their order (official `--listwise`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Comparison {
    /// Mean over pairs i < j of `max(0, (l_i − l_j) / T)` (`pairwise_hinge`, the default).
    #[default]
    Pairwise,
    /// ListMLE of the effects in view order (`list_mle`): with `x_i = −l_i / T` and
    /// `m = max_i x_i`, `Σ_{i < n−1} [ln(Σ_{j ≥ i} e^{x_j − m} + 1e-10) − (x_i − m)]`, summed
    /// over positions, not averaged. The official code shuffles the views before sorting them
    /// by label to break ties at random; its labels (n, n−1, …, 1) never tie, so the order is
    /// always the view order and nothing here is random.
    ListMle,
}

/// The batch mean primary loss above which `--cr_schedule` drops the regulariser: the official
/// code's constant (`loss['rc'].mean() > 1.1`, `loss['cls'].mean() > 1.1`).
pub const SCHEDULE_THRESHOLD: f64 = 1.1;

/// The comparative loss with its settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ComparativeLoss {
    /// Dummy target (used by [`Mode::ComparativeOnly`]).
    pub target: DummyTarget,
    /// Temperature T (official `cr_temp`, default 1).
    pub temperature: f64,
    /// Comparative alone or weighted.
    pub mode: Mode,
    /// Pairwise hinge or ListMLE.
    pub comparison: Comparison,
}

impl ComparativeLoss {
    /// Comparative loss alone with dummy `target` and T = 1.
    pub fn new(target: DummyTarget) -> Self {
        Self {
            target,
            temperature: 1.0,
            mode: Mode::ComparativeOnly,
            comparison: Comparison::Pairwise,
        }
    }

    /// The weighted mode: `primary + weight · hinge` without dummy.
    pub fn weighted(primary: Primary, weight: f64) -> Self {
        Self {
            target: DummyTarget::Ultra,
            temperature: 1.0,
            mode: Mode::Weighted {
                primary,
                weight,
                schedule: false,
            },
            comparison: Comparison::Pairwise,
        }
    }

    /// Set the temperature.
    pub fn with_temperature(mut self, temperature: f64) -> Self {
        assert!(
            temperature > 0.0,
            "temperature must be positive, got {temperature}"
        );
        self.temperature = temperature;
        self
    }

    /// Rank the views with ListMLE instead of the pairwise hinge (official `--listwise`).
    pub fn listwise(mut self) -> Self {
        self.comparison = Comparison::ListMle;
        self
    }

    /// The official `--cr_schedule` (weighted mode only): the regulariser is added to a batch
    /// only while the batch mean of the primary loss is at most [`SCHEDULE_THRESHOLD`]. This
    /// reads one number back from the device per step.
    pub fn with_schedule(mut self) -> Self {
        match &mut self.mode {
            Mode::Weighted { schedule, .. } => *schedule = true,
            Mode::ComparativeOnly => panic!("cr_schedule belongs to the weighted mode"),
        }
        self
    }

    /// The batch loss (a scalar tensor of one element).
    ///
    /// # Shapes
    /// - `losses`: `[batch, c + 1]`, per-example task losses, column 0 the full model, column k
    ///   the k-th nested ablation.
    /// - output: `[1]`
    pub fn forward<B: Backend>(&self, losses: Tensor<B, 2>) -> Tensor<B, 1> {
        match self.mode {
            Mode::Weighted {
                primary,
                weight,
                schedule: true,
            } => {
                let primary = primary_loss(losses.clone(), primary);
                weighted_batch(primary, || self.rank(losses), weight)
            }
            _ => self.per_example(losses).mean(),
        }
    }

    /// The loss of each example, before the batch mean. With `--cr_schedule` the regulariser
    /// depends on the whole batch, so this is the unscheduled loss: use [`Self::forward`].
    ///
    /// # Shapes
    /// - `losses`: `[batch, c + 1]`
    /// - output: `[batch]`
    pub fn per_example<B: Backend>(&self, losses: Tensor<B, 2>) -> Tensor<B, 1> {
        let [_, views] = losses.dims();
        assert!(
            views >= 2,
            "the comparative loss needs the full model and at least one ablation, got {views} view(s)"
        );
        match self.mode {
            Mode::ComparativeOnly => {
                let b = dummy(losses.clone(), self.target).detach();
                let with_dummy = Tensor::cat(vec![losses, b], 1); // [batch, c + 2]
                self.rank(with_dummy)
            }
            Mode::Weighted {
                primary, weight, ..
            } => primary_loss(losses.clone(), primary) + self.rank(losses).mul_scalar(weight),
        }
    }

    /// The comparison of each row's views, `[batch, n]` → `[batch]`.
    fn rank<B: Backend>(&self, losses: Tensor<B, 2>) -> Tensor<B, 1> {
        match self.comparison {
            Comparison::Pairwise => pairwise_hinge(losses, self.temperature),
            Comparison::ListMle => list_mle(losses.neg().div_scalar(self.temperature)),
        }
    }

    /// Span extraction from the start and end losses of each view, as the official `CmpQA`
    /// computes it:
    ///
    /// - comparative alone: the loss of start positions and of end positions, averaged,
    ///   `(L(start) + L(end)) / 2`;
    /// - weighted: the primary is taken over the per-view average `(s_i + e_i) / 2` (the
    ///   official `all_rc_losses`, then `get_primary`), and the pairwise term is
    ///   `(hinge(start) + hinge(end)) / 2`. With `Primary::Max` that is not the average of a
    ///   weighted loss on starts and one on ends (`(max s + max e) / 2`); the other primaries
    ///   agree either way.
    ///
    /// # Shapes
    /// - `start`, `end`: `[batch, c + 1]`
    /// - output: `[1]`
    pub fn forward_span<B: Backend>(&self, start: Tensor<B, 2>, end: Tensor<B, 2>) -> Tensor<B, 1> {
        match self.mode {
            Mode::ComparativeOnly => (self.forward(start) + self.forward(end)).div_scalar(2.0),
            Mode::Weighted {
                primary,
                weight,
                schedule,
            } => {
                assert_eq!(start.dims(), end.dims(), "start and end losses per view");
                let reading = primary_loss((start.clone() + end.clone()).div_scalar(2.0), primary);
                let regulariser = || (self.rank(start) + self.rank(end)).div_scalar(2.0);
                if schedule {
                    weighted_batch(reading, regulariser, weight)
                } else {
                    (reading + regulariser().mul_scalar(weight)).mean()
                }
            }
        }
    }
}

/// The scheduled weighted batch loss: `mean(primary)`, plus `weight · mean(regulariser)` unless
/// the mean primary exceeds [`SCHEDULE_THRESHOLD`] (then the regulariser is not computed).
fn weighted_batch<B: Backend>(
    primary: Tensor<B, 1>,
    regulariser: impl FnOnce() -> Tensor<B, 1>,
    weight: f64,
) -> Tensor<B, 1> {
    let mean = primary.mean();
    let value: f64 = mean.clone().into_scalar().elem();
    if value > SCHEDULE_THRESHOLD {
        mean
    } else {
        mean + regulariser().mean().mul_scalar(weight)
    }
}

/// ListMLE of each row in column order (official `list_mle` with labels n, n−1, …, 1 and no
/// mask): `[batch, n]` effects → `[batch]`.
fn list_mle<B: Backend>(effects: Tensor<B, 2>) -> Tensor<B, 1> {
    let [batch, n] = effects.dims();
    let shifted = effects.clone() - effects.max_dim(1); // [batch, n]
    let exp = shifted.clone().exp();
    let mut total: Option<Tensor<B, 1>> = None;
    for i in 0..n - 1 {
        let tail = exp.clone().slice([0..batch, i..n]).sum_dim(1); // Σ_{j ≥ i}
        let term = (tail.add_scalar(1e-10).log() - shifted.clone().slice([0..batch, i..i + 1]))
            .reshape([batch]);
        total = Some(match total {
            Some(t) => t + term,
            None => term,
        });
    }
    total.expect("at least two views")
}

/// The primary loss of each example over its views (official `get_primary`): `[batch, c + 1]`
/// → `[batch]`.
fn primary_loss<B: Backend>(losses: Tensor<B, 2>, primary: Primary) -> Tensor<B, 1> {
    let [batch, views] = losses.dims();
    let column = |k: usize| losses.clone().slice([0..batch, k..k + 1]).reshape([batch]);
    match primary {
        Primary::Max => losses.clone().max_dim(1).reshape([batch]),
        Primary::Avg => losses.clone().mean_dim(1).reshape([batch]),
        Primary::First => column(0),
        Primary::Last => column(views - 1),
    }
}

/// Mean over all pairs i < j of `max(0, (x_i − x_j) / T)`, per row: `[batch, n]` → `[batch]`.
pub(crate) fn pairwise_hinge<B: Backend>(x: Tensor<B, 2>, temperature: f64) -> Tensor<B, 1> {
    let [batch, n] = x.dims();
    let mut total: Option<Tensor<B, 1>> = None;
    for i in 0..n {
        for j in i + 1..n {
            let diff =
                x.clone().slice([0..batch, i..i + 1]) - x.clone().slice([0..batch, j..j + 1]);
            let hinge = diff.div_scalar(temperature).clamp_min(0.0).reshape([batch]);
            total = Some(match total {
                Some(t) => t + hinge,
                None => hinge,
            });
        }
    }
    let pairs = n * (n - 1) / 2;
    total.expect("at least one pair").div_scalar(pairs as f64)
}

/// The dummy loss per example, `[batch, c + 1]` → `[batch, 1]` (not yet detached).
fn dummy<B: Backend>(losses: Tensor<B, 2>, target: DummyTarget) -> Tensor<B, 2> {
    let [batch, views] = losses.dims();
    match target {
        DummyTarget::Ultra => Tensor::zeros([batch, 1], &losses.device()),
        DummyTarget::Best => losses.min_dim(1),
        DummyTarget::First => {
            let first = losses.clone().slice([0..batch, 0..1]);
            let best_rest = losses.slice([0..batch, 1..views]).min_dim(1);
            let first_best = first.clone().lower(best_rest.clone());
            let midpoint = (first + best_rest.clone()).div_scalar(2.0);
            best_rest.mask_where(first_best, midpoint)
        }
    }
}
