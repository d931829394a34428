//! LoL: the comparative regularisation over query-reformulation losses for dense
//! pseudo-relevance feedback.
//!
//! Zhu et al., "LoL: A Comparative Regularization Loss over Query Reformulation Losses for
//! Pseudo-Relevance Feedback" (SIGIR 2022, arXiv 2204.11545), as the official code computes it
//! (zycdev/LoL: `trainer.py` `DqrTrainer.compute_loss`, `util.py` `pairwise_hinge`).
//!
//! A batch holds `G` training queries, each as `1 + n_compare` revisions with nested feedback
//! (row `g·(1 + n_compare)` has the most feedback passages, each later row of the group fewer).
//! With query vectors `q` and the candidate passages' vectors `P` (the official "matrix"), the
//! similarities are `s = q·Pᵀ`, and:
//!
//! - **passage ranking** (`loss_pr`): per revision, cross-entropy over *every* passage of the
//!   matrix given (the official trainer's training matrix: each training query's top
//!   candidates and positives, not only the batch's passages), the label being the revision's
//!   positive with the lowest similarity (the official `argmin`, computed before masking) and
//!   its other positives masked out (−∞);
//! - **query ranking** (`loss_qr`): for each positive of each group's first revision,
//!   cross-entropy over every revision in the batch, labelled by that first revision; the
//!   revisions of *other* groups that share the positive are masked out, the group's own
//!   revisions are not;
//! - **comparative regularisation** (`loss_cr`, training only, `n_compare > 0`): the pairwise
//!   hinge with margin 0 over each group's effects `−loss_pr`, labelled `1 + n_compare, …, 1`
//!   (more feedback must not lose), averaged over every pair of the batch;
//!
//! `loss = λ_pr · mean(loss_pr) + λ_qr · loss_qr + λ_cr · loss_cr`. The official defaults are
//! `λ_pr = 1`, `λ_qr = 0`, `λ_cr = 0` (the README's runs set `λ_cr = 1`); as in the official
//! arguments, `λ_cr` counts only when `n_compare > 0`. The hinge's gradient passes at an exact
//! tie, as under the official torch 1.11 (see [`crate::comparative`]).
//!
//! The official code also has a feedback re-ranking loss (`lambda_rr`) and a sparse
//! regulariser (`lambda_sr`) for its sparse models; the dense model of the paper trains with
//! neither, and they are not here.
//!
//! ```
//! use burn::backend::NdArray;
//! use burn::tensor::Tensor;
//! use losses::ReformulationLoss;
//!
//! let device = Default::default();
//! // One training query as two revisions (5 and 2 feedback passages, say), 3 passages.
//! let queries = Tensor::<NdArray, 2>::from_floats([[1.0, 0.0], [0.5, 0.5]], &device);
//! let passages = Tensor::<NdArray, 2>::from_floats([[1.0, 0.0], [0.0, 1.0], [0.3, 0.3]], &device);
//! let positives = vec![vec![0], vec![0]];
//! let loss = ReformulationLoss::new(1).with_lambda_cr(1.0);
//! let terms = loss.forward(queries, passages, &positives, true);
//! // The first revision ranks passage 0 better than the second does: no comparative penalty.
//! assert_eq!(terms.comparative.unwrap().into_scalar(), 0.0);
//! ```

use burn::prelude::*;
use burn::tensor::IndexingUpdateOp;

use crate::comparative::pairwise_hinge;
use crate::task::cross_entropy;

/// The LoL training objective with its weights (official `--n_compare`, `--lambda_pr`,
/// `--lambda_qr`, `--lambda_cr`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReformulationLoss {
    /// Revisions with less feedback per training query (0: no comparison).
    pub n_compare: usize,
    /// Weight of the passage-ranking loss (official default 1).
    pub lambda_pr: f64,
    /// Weight of the query-ranking loss (official default 0).
    pub lambda_qr: f64,
    /// Weight of the comparative regularisation (official default 0; 1 in the README's runs).
    pub lambda_cr: f64,
}

/// The terms of one batch, each a one-element tensor except `per_revision`.
#[derive(Debug, Clone)]
pub struct ReformulationTerms<B: Backend> {
    /// The weighted objective.
    pub loss: Tensor<B, 1>,
    /// The passage-ranking loss of each revision, `[queries]`.
    pub per_revision: Tensor<B, 1>,
    /// Its mean (`loss_pr`).
    pub passage_ranking: Tensor<B, 1>,
    /// `loss_qr` (computed and reported whatever its weight, as the official code logs it).
    pub query_ranking: Tensor<B, 1>,
    /// `loss_cr`: present in training with `n_compare > 0`.
    pub comparative: Option<Tensor<B, 1>>,
}

impl ReformulationLoss {
    /// The official defaults with `n_compare` revisions per query: `λ_pr = 1`, `λ_qr = 0`,
    /// `λ_cr = 0`.
    pub fn new(n_compare: usize) -> Self {
        Self {
            n_compare,
            lambda_pr: 1.0,
            lambda_qr: 0.0,
            lambda_cr: 0.0,
        }
    }

    /// With the passage-ranking weight `lambda` (must be positive: the official code's
    /// `lambda_pr = 0` trains a re-ranker instead, which is not implemented).
    pub fn with_lambda_pr(mut self, lambda: f64) -> Self {
        assert!(lambda > 0.0, "lambda_pr must be positive, got {lambda}");
        self.lambda_pr = lambda;
        self
    }

    /// With the query-ranking weight `lambda`.
    pub fn with_lambda_qr(mut self, lambda: f64) -> Self {
        self.lambda_qr = lambda.max(0.0);
        self
    }

    /// With the comparative weight `lambda` (ignored when `n_compare = 0`, as officially).
    pub fn with_lambda_cr(mut self, lambda: f64) -> Self {
        self.lambda_cr = lambda.max(0.0);
        self
    }

    /// Revisions per training query, `1 + n_compare`.
    pub fn group(&self) -> usize {
        1 + self.n_compare
    }

    /// The loss terms of a batch. `positives[q]` lists the rows of `passages` relevant to
    /// revision `q` (every revision of a group has its group's positives). With
    /// `training = false` there is no comparative term, as in the official evaluation.
    ///
    /// # Shapes
    /// - `queries`: `[G · (1 + n_compare), hidden]`
    /// - `passages`: `[P, hidden]` (constants: the official matrix is not trained)
    ///
    /// # Panics
    /// When the batch is not a whole number of groups, a revision has no positive, or a
    /// positive is not a row of `passages`.
    pub fn forward<B: Backend>(
        &self,
        queries: Tensor<B, 2>,
        passages: Tensor<B, 2>,
        positives: &[Vec<usize>],
        training: bool,
    ) -> ReformulationTerms<B> {
        let [n_queries, _] = queries.dims();
        let [n_passages, _] = passages.dims();
        let group = self.group();
        assert_eq!(positives.len(), n_queries, "one positive list per query");
        assert!(
            n_queries % group == 0,
            "{n_queries} queries are not whole groups of 1 + n_compare = {group} revisions"
        );
        for (q, pos) in positives.iter().enumerate() {
            assert!(!pos.is_empty(), "query {q} has no positive passage");
            assert!(
                pos.iter().all(|&p| p < n_passages),
                "query {q} has a positive outside the {n_passages} passages"
            );
        }
        let device = queries.device();
        let sims = queries.clone().matmul(passages.clone().transpose()); // [Q, P]

        let query_ranking = self.query_ranking(&queries, &passages, positives);
        let per_revision = passage_ranking(sims, positives, &device);
        let passage_ranking = per_revision.clone().mean();

        let comparative = (training && self.n_compare > 0).then(|| {
            let groups = n_queries / group;
            // The effects are −loss; hinge(e_i, e_j) for i < j is max(0, loss_i − loss_j).
            pairwise_hinge(per_revision.clone().reshape([groups, group]), 1.0).mean()
        });
        let mut loss = passage_ranking.clone().mul_scalar(self.lambda_pr)
            + query_ranking.clone().mul_scalar(self.lambda_qr);
        if let Some(cr) = &comparative {
            loss = loss + cr.clone().mul_scalar(self.lambda_cr);
        }
        ReformulationTerms {
            loss,
            per_revision,
            passage_ranking,
            query_ranking,
            comparative,
        }
    }

    /// `loss_qr`: each positive of each group's first revision ranks the revisions.
    fn query_ranking<B: Backend>(
        &self,
        queries: &Tensor<B, 2>,
        passages: &Tensor<B, 2>,
        positives: &[Vec<usize>],
    ) -> Tensor<B, 1> {
        let group = self.group();
        let n_queries = positives.len();
        let device = queries.device();
        let mut rows: Vec<usize> = Vec::new(); // passage of each CE row
        let mut labels: Vec<usize> = Vec::new(); // its first revision
        for q in (0..n_queries).step_by(group) {
            for &p in &positives[q] {
                rows.push(p);
                labels.push(q);
            }
        }
        // −∞ for the revisions of other groups that share the row's passage.
        let mut penalty = vec![0f32; rows.len() * n_queries];
        for (r, (&p, &label)) in rows.iter().zip(&labels).enumerate() {
            for q in 0..n_queries {
                if q / group != label / group && positives[q].contains(&p) {
                    penalty[r * n_queries + q] = f32::NEG_INFINITY;
                }
            }
        }
        let index = int_tensor(&rows, &device);
        let sims = passages
            .clone()
            .select(0, index)
            .matmul(queries.clone().transpose()); // [rows, Q]
        let penalty =
            Tensor::<B, 2>::from_data(TensorData::new(penalty, [rows.len(), n_queries]), &device);
        cross_entropy(sims + penalty, int_tensor(&labels, &device)).mean()
    }
}

/// `loss_pr` per revision: cross-entropy over all passages, labelled by the revision's
/// least similar positive, its other positives masked out.
fn passage_ranking<B: Backend>(
    sims: Tensor<B, 2>,
    positives: &[Vec<usize>],
    device: &B::Device,
) -> Tensor<B, 1> {
    let n_queries = positives.len();
    let width = positives.iter().map(Vec::len).max().unwrap_or(1);
    // Each row's positives, padded by repeating its first one (the values at a repeat are
    // never read for the label and get a 0 penalty).
    let mut index = Vec::with_capacity(n_queries * width);
    for pos in positives {
        index.extend((0..width).map(|k| pos.get(k).copied().unwrap_or(pos[0])));
    }
    let index_tensor = Tensor::<B, 2, Int>::from_data(
        TensorData::new(
            index.iter().map(|&i| i as i64).collect::<Vec<_>>(),
            [n_queries, width],
        ),
        device,
    );
    let at_positives: Vec<f32> = sims
        .clone()
        .detach()
        .gather(1, index_tensor.clone())
        .into_data()
        .convert::<f32>()
        .into_vec()
        .expect("float similarities");
    let mut labels = Vec::with_capacity(n_queries);
    let mut penalty = vec![0f32; n_queries * width];
    for (q, pos) in positives.iter().enumerate() {
        // torch's argmin: the first of equal minima.
        let row = &at_positives[q * width..q * width + pos.len()];
        let best = (0..pos.len()).fold(0, |b, k| if row[k] < row[b] { k } else { b });
        labels.push(pos[best]);
        for k in 0..pos.len() {
            if k != best && pos[k] != pos[best] {
                penalty[q * width + k] = f32::NEG_INFINITY;
            }
        }
    }
    let penalty = Tensor::<B, 2>::from_data(TensorData::new(penalty, [n_queries, width]), device);
    let masked = sims.scatter(1, index_tensor, penalty, IndexingUpdateOp::Add);
    cross_entropy(masked, int_tensor(&labels, device))
}

fn int_tensor<B: Backend>(values: &[usize], device: &B::Device) -> Tensor<B, 1, Int> {
    let data: Vec<i64> = values.iter().map(|&v| v as i64).collect();
    Tensor::from_data(TensorData::new(data, [values.len()]), device)
}
