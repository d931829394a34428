//! Masks over neurons and inputs, generic over the Burn backend.
//!
//! This crate is the bottom of the workspace (`ablation` → `models` → `neurons` → `runner`): it
//! knows nothing of model architectures, only of the masks a forward pass applies.
//!
//! - [`DropoutMasks`]: dropout masks drawn from a seeded RNG owned by the caller, with the nested
//!   views of CmpDrop (Zhu et al., "Cross-Model Comparative Loss", arXiv 2301.03765): view `k`
//!   drops units at rate `p_k = 1 - (1 - p)^k` from the *same* uniform draw, so the units kept by
//!   view `k + 1` are a subset of those kept by view `k`.
//! - [`NeuronSet`]: the one neuron-set type (rows `(layer, neuron)` with optional language and
//!   score), its set algebra, random controls with the same per-layer counts, JSON IO, and the
//!   per-layer masks the models' forward context takes; [`head_masks`] for attention heads.
//! - [`crop`]: input ablation (CmpCrop): nested views over segments (HotpotQA paragraphs),
//!   nested prefixes (ranking feedback passages) and nested random token deletion.
//! - [`official`]: the official codes' neuron-set files (Tang et al.'s `activation_mask`,
//!   Mondal et al.'s `lang_neuron_data.pkl`, Kojima et al.'s expertise tables) read into
//!   [`LanguageSets`] and written back where the format can hold a set.
//! - [`ViewSchedule`]: the passes of one comparative step (full model, then dropout and crop
//!   ablations alternating as the official code does).

pub mod crop;
mod dropout;
mod neuron_set;
pub mod official;
mod views;

pub use dropout::{DropoutMasks, MaskDraw, nested_rate};
pub use neuron_set::{LanguageSets, NeuronRow, NeuronSet, NeuronSetError, head_masks};
pub use views::{CropOnlyDropout, View, ViewSchedule};
