//! [`Objective`]: the loss of one encoder training step: the task loss with ordinary dropout, or
//! none where the task's official code trains so (baseline), or the comparative loss over the step's nested views
//! ([`ablation::ViewSchedule`]), as the dataset's `[losses.*]` entry says.

use ablation::{DropoutMasks, View, ViewSchedule};
use anyhow::{Result, bail};
use burn::prelude::*;
use losses::{ComparativeLoss, DummyTarget, Primary, cross_entropy, mse};
use models::{
    EncoderInput, ForwardContext, RowBatch, SequenceClassifier, ViewExecution, view_losses,
};

use crate::encoder::spec::{CmpMode, LossSpec, PrimarySpec, StepDropout, Target};

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
            LossSpec::Baseline { dropout } => Ok(Self {
                views: match dropout {
                    Some(StepDropout::Off) => vec![View { crop: 0, power: 0 }],
                    Some(StepDropout::Ordinary) | None => ViewSchedule::new(0, 0).views(),
                },
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
                dropout,
                listwise,
                cr_schedule,
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
                let mut loss = loss.with_temperature(*temperature);
                if *listwise {
                    loss = loss.listwise();
                }
                if *cr_schedule {
                    loss = loss.with_schedule();
                }
                let schedule = ViewSchedule::new(*n_drop, *n_crop)
                    .with_crop_only_dropout(dropout.map(Into::into).unwrap_or_default());
                Ok(Self {
                    views: schedule.views(),
                    comparative: Some(loss),
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

    /// Per-example task losses of every view, `[batch, c + 1]`, of a sequence classifier on one
    /// batch (the training step's, and evaluation's `cmp_in_eval`). Draws the dropout uniforms
    /// from `masks`.
    pub fn view_losses<B: Backend>(
        &self,
        model: &SequenceClassifier<B>,
        input: &EncoderInput<B>,
        targets: &Targets<B>,
        masks: &mut Option<DropoutMasks<B>>,
    ) -> Tensor<B, 2> {
        let seq = input.input_ids.dims()[1];
        let per_view = self.run_views(std::slice::from_ref(input), seq, masks, |input, ctx, n| {
            targets
                .losses(model.forward(input, ctx), n)
                .unsqueeze_dim(1)
        });
        let [b, v, _] = per_view.dims();
        per_view.reshape([b, v])
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
        self.combine(
            self.view_losses(model, input, targets, masks)
                .unsqueeze_dim(2),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            listwise: false,
            cr_schedule: false,
            cmp_in_eval: false,
            dropout: None,
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
        let baseline = Objective::new(&LossSpec::Baseline { dropout: None }, 0).unwrap();
        let mean = values.iter().sum::<f32>() / values.len() as f32;
        let got = baseline.combine(per_view).into_scalar();
        assert!((got - mean).abs() < 1e-6, "{got} vs {mean}");
    }

    #[test]
    fn listwise_and_cr_schedule_reach_the_loss() {
        use burn::backend::NdArray;
        use losses::Comparison;
        type B = NdArray<f32>;
        let toml = "kind = \"comparative\"\nn_drop = 1\nmode = \"weighted\"\nprimary = \"max\"\n\
                    weight = 0.5\nlistwise = true\ncr_schedule = true\n";
        let spec: LossSpec = toml::from_str(toml).unwrap();
        let cmp = Objective::new(&spec, 0).unwrap().comparative.unwrap();
        assert_eq!(cmp.comparison, Comparison::ListMle);
        assert!(matches!(
            cmp.mode,
            losses::Mode::Weighted { schedule: true, .. }
        ));
        // Below the schedule's 1.1 the regulariser counts; above it the loss is the primary.
        let device = Default::default();
        let step = |l: [[f32; 2]; 1]| {
            cmp.forward(Tensor::<B, 2>::from_data(TensorData::from(l), &device))
                .into_scalar()
        };
        let list_mle = |a: f32, b: f32| ((-a).exp() + (-b).exp()).ln() + a; // effects −l, m cancels
        assert!((step([[0.9, 0.4]]) - (0.9 + 0.5 * list_mle(0.9, 0.4))).abs() < 1e-6);
        assert!((step([[1.5, 0.4]]) - 1.5).abs() < 1e-6);
        // Without the keys: the pairwise hinge, every batch.
        let plain: LossSpec =
            toml::from_str(&toml.replace("listwise = true\ncr_schedule = true\n", "")).unwrap();
        let cmp = Objective::new(&plain, 0).unwrap().comparative.unwrap();
        assert_eq!(cmp.comparison, Comparison::Pairwise);
        assert!(matches!(
            cmp.mode,
            losses::Mode::Weighted {
                schedule: false,
                ..
            }
        ));
    }
}
