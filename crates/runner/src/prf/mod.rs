//! Dense pseudo-relevance feedback with LoL's comparative regularisation (Zhu et al., "LoL: A
//! Comparative Regularization Loss over Query Reformulation Losses for Pseudo-Relevance
//! Feedback", SIGIR 2022), the ranking task of the CmpLoss paper, as the official code runs it
//! (zycdev/LoL: `qr_dataset.py`, `modeling.py` `DenseDqr`, `trainer.py` `compute_loss`): its
//! TOML sections ([`spec`]), the cell ([`cell`]), its inputs ([`data`]) and its run ([`fit`]).
//!
//! 1. **Inputs.** A corpus names a passage collection, its passage vectors (a matrix written by
//!    `neuronlab corpus embed` with the first-pass encoder) and query sets, each with queries,
//!    qrels and a first-pass run: `train`, `dev` (model selection) and any `test` sets.
//! 2. **Model.** [`models::QueryReformulator`]: the encoder reads `[CLS] query [SEP] p₁ [SEP] …`
//!    with up to `max_n_prf` feedback passages from the first-pass run; its first token through
//!    `dense_proj` and a LayerNorm is the new query vector.
//! 3. **Training.** Each training query appears as `1 + n_compare` revisions with nested
//!    feedback (distinct passage counts drawn from `0..=max_n_prf`, the passages drawn at random
//!    from the run's top `max_n_prf` with `shuffle_psgs`); [`losses::ReformulationLoss`] ranks
//!    the training passages (each query's top `train_candidates` and its positives, as the
//!    official training matrix) and, with `lambda_cr`, penalises a revision with more feedback
//!    that ranks the positive worse. AdamW under the linear warmup/decay schedule, global-norm
//!    clipping, ordinary dropout (the official trainer runs `model.train()`).
//! 4. **Evaluation.** Each `dev` query with its first `max_n_prf` passages is searched over the
//!    *whole* matrix (exact inner product, top 1,000): MRR@10, nDCG@10, recall@100 and
//!    recall@1000, at every `eval_every` steps (or epoch). The best model by MRR@10 is then
//!    evaluated on every set; its runs are written as `run.<set>.trec`, and each set's
//!    first-pass run is scored beside it (`first-pass mrr@10`, ...).
//!
//! Departures from the official code, each for a reason: during training the official code
//! evaluates against a candidate matrix (the dev queries' top 100), here the whole matrix (the
//! numbers the paper reports come from the whole one); a training query with fewer first-pass
//! passages than `n_compare` is an error before the run (the official sampler fails mid-run);
//! a killed cell starts again from its first step (no checkpoints yet).

pub mod cell;
pub mod data;
pub mod fit;
pub mod kind;
pub mod spec;
