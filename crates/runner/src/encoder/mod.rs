//! Fine-tuning an encoder, with the plain task loss or the comparative loss over nested
//! ablations: one training loop ([`fit`]) and one learner per task family (sentence
//! classification and regression in [`classify`], extractive QA in [`extractive`], re-ranking in
//! [`rerank`]); [`tasks`] is the one list of which family serves which task.

pub mod cell;
pub mod classify;
pub mod data;
pub mod extractive;
pub mod fit;
pub mod kind;
pub mod objective;
pub mod rerank;
pub mod spec;
pub mod tasks;
