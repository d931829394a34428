//! Masks over neurons and inputs, generic over the Burn backend.
//!
//! This crate is the bottom of the workspace (`ablation` → `models` → `neurons` → `runner`): it
//! knows nothing of model architectures, only of the masks a forward pass applies.
//!
//! - [`DropoutMasks`]: dropout masks drawn from a seeded RNG owned by the caller, with the nested
//!   views of CmpDrop (Zhu et al., "Cross-Model Comparative Loss", arXiv 2301.03765): view `k`
//!   drops units at rate `p_k = 1 - (1 - p)^k` from the *same* uniform draw, so the units kept by
//!   view `k + 1` are a subset of those kept by view `k`.
//!
//! Neuron sets, head masks and input cropping (CmpCrop) arrive with the comparative-loss issue.

mod dropout;

pub use dropout::{DropoutMasks, nested_rate};
