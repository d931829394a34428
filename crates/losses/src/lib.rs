//! Losses for neuron-level fine-tuning, generic over the Burn backend.
//!
//! - [`comparative`]: the cross-model comparative loss of Zhu et al., "Cross-Model Comparative
//!   Loss for Enhancing Neuronal Utility in Language Understanding" (arXiv 2301.03765), as the
//!   official code (zycdev/CmpLoss) computes it.
//! - [`reformulation`]: LoL's objective for dense pseudo-relevance feedback (passage and query
//!   ranking over the candidates' vectors, and the comparative regularisation over revisions
//!   with nested feedback), as the official code (zycdev/LoL) computes it.
//! - [`task`]: per-example task losses: cross-entropy, span cross-entropy, listwise
//!   cross-entropy, MSE. The comparative loss ranks these across models, so they are returned
//!   per example (`reduction='none'`), not averaged.
//!
//! ```
//! use burn::backend::NdArray;
//! use burn::tensor::Tensor;
//! use losses::{ComparativeLoss, DummyTarget};
//!
//! // Per-example task losses of the full model (column 0) and c = 1 ablated model.
//! let device = Default::default();
//! let l = Tensor::<NdArray, 2>::from_floats([[0.5, 0.8], [0.8, 0.5]], &device);
//! let loss = ComparativeLoss::new(DummyTarget::Ultra).forward(l);
//! // (0.5 + 0.8) / 3 and (0.8 + 0.5 + 0.3) / 3, averaged over the batch.
//! assert!((loss.into_scalar() - (1.3 / 3.0 + 1.6 / 3.0) / 2.0).abs() < 1e-6);
//! ```

pub mod comparative;
pub mod reformulation;
pub mod task;

pub use comparative::{ComparativeLoss, Comparison, DummyTarget, Mode, Primary};
pub use reformulation::{ReformulationLoss, ReformulationTerms};
pub use task::{cross_entropy, listwise_cross_entropy, mse, span_cross_entropy};
