//! Per-example task losses (`reduction='none'` in PyTorch terms), generic over the backend.
//!
//! Inputs are assumed valid: class indices in range, relevance labels non-negative with at
//! least one positive per query. The dataset readers check these and report the file and line;
//! here a violation would only surface as a backend panic or a NaN.

use burn::prelude::*;
use burn::tensor::activation::log_softmax;

/// Cross-entropy per example: `−log softmax(z)_y`.
///
/// PyTorch: `F.cross_entropy(logits, labels, reduction='none')`.
///
/// # Shapes
/// - `logits`: `[batch, classes]`, `labels`: `[batch]`
/// - output: `[batch]`
pub fn cross_entropy<B: Backend>(logits: Tensor<B, 2>, labels: Tensor<B, 1, Int>) -> Tensor<B, 1> {
    let [batch, _] = logits.dims();
    assert_eq!(labels.dims(), [batch], "one label per row of logits");
    log_softmax(logits, 1)
        .gather(1, labels.reshape([batch, 1]))
        .reshape([batch])
        .neg()
}

/// Span cross-entropy for extractive QA: the start and end losses per example.
///
/// A gold position outside `0..seq` is ignored and gives loss 0, as the official CmpLoss code
/// does by setting it to −100 with `ignore_index=-100`. Windows that do not contain the answer
/// are labelled with the `[CLS]` index (0) by the data pipeline, as in HF's preprocessing, and
/// are *not* ignored. PyTorch: `F.cross_entropy(start_logits, start_positions,
/// ignore_index=-100, reduction='none')`, and the same for the end.
///
/// # Shapes
/// - `start_logits`, `end_logits`: `[batch, seq]`; positions: `[batch]`
/// - output: (`[batch]`, `[batch]`)
pub fn span_cross_entropy<B: Backend>(
    start_logits: Tensor<B, 2>,
    end_logits: Tensor<B, 2>,
    start_positions: Tensor<B, 1, Int>,
    end_positions: Tensor<B, 1, Int>,
) -> (Tensor<B, 1>, Tensor<B, 1>) {
    let one = |logits: Tensor<B, 2>, positions: Tensor<B, 1, Int>| {
        let [_, seq] = logits.dims();
        let valid = positions
            .clone()
            .greater_equal_elem(0)
            .bool_and(positions.clone().lower_elem(seq as i64));
        let clamped = positions.clamp(0, seq as i64 - 1);
        cross_entropy(logits, clamped) * valid.float()
    };
    (
        one(start_logits, start_positions),
        one(end_logits, end_positions),
    )
}

/// Listwise cross-entropy over each query's candidates: the cross-entropy between the
/// softmax of the scores and the relevance labels normalised to sum to 1,
/// `−Σ_k (y_k / Σ y) · log softmax(s)_k`. With one relevant candidate this is the usual
/// "positive among negatives" cross-entropy of cross-encoder rerankers.
///
/// PyTorch: `-(F.log_softmax(scores, -1) * (labels / labels.sum(-1, keepdim=True))).sum(-1)`.
///
/// # Shapes
/// - `scores`, `labels`: `[queries, candidates]`
/// - output: `[queries]`
pub fn listwise_cross_entropy<B: Backend>(
    scores: Tensor<B, 2>,
    labels: Tensor<B, 2>,
) -> Tensor<B, 1> {
    let [queries, candidates] = scores.dims();
    assert_eq!(
        labels.dims(),
        [queries, candidates],
        "one label per candidate score"
    );
    let target = labels.clone() / labels.sum_dim(1);
    (log_softmax(scores, 1) * target)
        .sum_dim(1)
        .reshape([queries])
        .neg()
}

/// Squared error per example, `(ŷ − y)²` (regression, STS-B).
///
/// PyTorch: `F.mse_loss(pred, target, reduction='none')`.
///
/// # Shapes
/// - `predictions`, `targets`: `[batch]`
/// - output: `[batch]`
pub fn mse<B: Backend>(predictions: Tensor<B, 1>, targets: Tensor<B, 1>) -> Tensor<B, 1> {
    (predictions - targets).powi_scalar(2)
}
