//! Running the `c + 1` views of a comparative step, batched or one after another.
//!
//! A CmpLoss step runs the full model and `c` nested ablations on the same examples
//! ([`ablation::ViewSchedule`]). The official code runs them as `c + 1` sequential forward passes
//! and keeps every graph for one backward pass; running them as one batch of `(c + 1) · B` rows
//! is faster on most hardware but needs `c + 1` times the activation memory at once.
//! [`view_losses`] does either, with the same result: each view's rows get exactly the dropout
//! masks that view would get alone ([`ablation::DropoutMasks::set_view_powers`]), so the losses
//! and gradients of the two paths agree up to float summation order.
//!
//! **Padding (a departure from the official code).** The input views of a step (crops) are
//! padded to one length, the longest view's, so that a dropout site has the same shape in every
//! view and the views' masks come from one draw of uniforms. The official `CmpQA` pads each view
//! to its own length (HotpotQA: a multiple of 512). Padding positions are masked out of
//! attention, so the padding changes no output; it costs compute on the shorter views.

use ablation::View;
use burn::prelude::*;

use crate::bert::EncoderInput;
use crate::context::ForwardContext;

/// An input that can be stacked along its batch dimension (rows).
pub trait RowBatch: Sized {
    /// The number of rows.
    fn rows(&self) -> usize;
    /// The inputs stacked in order along the batch dimension.
    fn cat(parts: Vec<Self>) -> Self;
}

impl<B: Backend> RowBatch for EncoderInput<B> {
    fn rows(&self) -> usize {
        self.input_ids.dims()[0]
    }

    fn cat(parts: Vec<Self>) -> Self {
        let mut ids = Vec::with_capacity(parts.len());
        let mut mask = Vec::with_capacity(parts.len());
        let mut types = Vec::with_capacity(parts.len());
        // A part without a global attention mask has none (zeros) when another part has one.
        let any_global = parts.iter().any(|p| p.global_attention_mask.is_some());
        let mut global = Vec::with_capacity(parts.len());
        for p in parts {
            if any_global {
                global.push(
                    p.global_attention_mask
                        .unwrap_or_else(|| p.attention_mask.zeros_like()),
                );
            }
            ids.push(p.input_ids);
            mask.push(p.attention_mask);
            types.push(p.token_type_ids);
        }
        Self {
            input_ids: Tensor::cat(ids, 0),
            attention_mask: Tensor::cat(mask, 0),
            token_type_ids: Tensor::cat(types, 0),
            global_attention_mask: any_global.then(|| Tensor::cat(global, 0)),
        }
    }
}

/// How the views of a step run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViewExecution {
    /// One forward pass over all views' rows.
    Batched,
    /// One forward pass per view (the official code's way).
    Sequential,
}

impl ViewExecution {
    /// Batched when the stacked step, `views × batch × seq_len` tokens, fits in `max_tokens`
    /// (`None`: no limit); sequential otherwise. The activation memory of a forward pass grows
    /// with its token count, so a token budget is a simple memory budget.
    pub fn for_budget(
        views: usize,
        batch: usize,
        seq_len: usize,
        max_tokens: Option<usize>,
    ) -> Self {
        match max_tokens {
            Some(max) if views * batch * seq_len > max => Self::Sequential,
            _ => Self::Batched,
        }
    }
}

/// Per-example task losses of every view of one comparative step, `[B, c + 1, K]`.
///
/// - `views`: the step's passes ([`ablation::ViewSchedule::views`]); view `v` reads
///   `inputs[views[v].crop]` with dropout power `views[v].power`.
/// - `inputs`: the input views, all of `B` rows and **padded to one sequence length**, so the
///   nested dropout masks line up across views.
/// - `ctx`: the forward context of the step. Its dropout masks (if any) must already be on the
///   step's uniforms (call [`ablation::DropoutMasks::next_step`] once per step, before this);
///   the selected power is changed here. Neuron and head masks apply to every view.
/// - `losses(input, ctx, n_views)`: runs the model on `input` (`n_views × B` rows, the views in
///   order) and returns per-row losses `[n_views × B, K]` (`K = 1` for classification, 2 for the
///   start and end losses of span extraction); targets repeat `n_views` times.
///
/// # Panics
/// If an input does not have the rows of the first one, or a view names a missing input.
pub fn view_losses<B, I, F>(
    views: &[View],
    inputs: &[I],
    execution: ViewExecution,
    ctx: &mut ForwardContext<B>,
    mut losses: F,
) -> Tensor<B, 3>
where
    B: Backend,
    I: RowBatch + Clone,
    F: FnMut(&I, &mut ForwardContext<B>, usize) -> Tensor<B, 2>,
{
    let batch = inputs[0].rows();
    assert!(
        inputs.iter().all(|i| i.rows() == batch),
        "every input view must have the same {batch} rows"
    );
    let n = views.len();
    match execution {
        ViewExecution::Batched => {
            let powers: Vec<u32> = views.iter().map(|v| v.power).collect();
            if let Some(masks) = ctx.dropout.as_mut() {
                masks.set_view_powers(&powers);
            }
            let stacked = I::cat(views.iter().map(|v| inputs[v.crop].clone()).collect());
            let out = losses(&stacked, ctx, n);
            let k = out.dims()[1];
            out.reshape([n, batch, k]).swap_dims(0, 1)
        }
        ViewExecution::Sequential => {
            let per_view: Vec<Tensor<B, 2>> = views
                .iter()
                .map(|v| {
                    if let Some(masks) = ctx.dropout.as_mut() {
                        masks.set_power(v.power);
                    }
                    losses(&inputs[v.crop], ctx, 1)
                })
                .collect();
            Tensor::stack(per_view, 1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_picks_the_execution() {
        assert_eq!(
            ViewExecution::for_budget(3, 8, 128, None),
            ViewExecution::Batched
        );
        assert_eq!(
            ViewExecution::for_budget(3, 8, 128, Some(3 * 8 * 128)),
            ViewExecution::Batched
        );
        assert_eq!(
            ViewExecution::for_budget(3, 8, 128, Some(3 * 8 * 128 - 1)),
            ViewExecution::Sequential
        );
    }
}
