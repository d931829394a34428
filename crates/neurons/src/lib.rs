//! Language-specific neurons: choosing them from per-language activation statistics.
//!
//! - [`corpus`]: per-language documents (lines, whole files, JSONL) tokenised, concatenated and
//!   packed into windows without padding, with a token budget and held-out windows.
//! - [`stats`]: streaming statistics per (language, layer, neuron) collected from a decoder's
//!   gate pre-activations (the forward context's [`models::GateStatistics`]): positive counts,
//!   mean and standard deviation; saved, merged across shards, reloaded.
//! - [`selection`]: LAPE as Tang et al. and as Mondal et al. compute it, Mondal et al.'s
//!   per-language top-k by activation probability, and Kojima et al.'s average-precision
//!   ranking, each checked against a NumPy re-implementation of the official script.
//!
//! - [`intervene`]: replacing a language's neurons (zero, a constant, the language's mean) and the
//!   NLL- and perplexity-change matrices over held-out text.
//!
//! `neuronlab grid run` runs whole studies from TOML (the runner's `study` module); this crate
//! is what it calls, usable from any Burn code.
//!
//! ```
//! use neurons::selection::{LanguageTable, LapeConfig, lape};
//!
//! // Two languages, one layer of four neurons: counts of positive activations over 100 tokens.
//! let probs = LanguageTable::probabilities(
//!     vec!["en".into(), "fr".into()], 1, 4,
//!     &[vec![90, 10, 50, 0], vec![5, 80, 50, 0]], &[100, 100],
//! ).unwrap();
//! let config = LapeConfig { top_rate: 0.5, filter_rate: 0.5, activation_bar_ratio: 0.5, ..Default::default() };
//! let chosen = lape(&probs, &config).unwrap();
//! assert!(chosen.sets["en"].contains(0, 0) && chosen.sets["fr"].contains(0, 1));
//! ```

pub mod corpus;
pub mod intervene;
pub mod selection;
pub mod stats;

pub use corpus::{CorpusError, PackedText, Packing, TextFormat, pack, read_documents};
pub use intervene::{
    ChangeMatrix, InterventionValue, intervention_context, intervention_context_at, mean_nll,
};
pub use selection::{
    LanguageTable, LapeConfig, LapeSelection, LapeVariant, SelectionError, average_precision,
    average_precision_sets, lape, top_and_bottom, top_per_language,
};
pub use stats::{
    ActivationStats, BatchPercentile, Exceedance, LanguageStats, StatsError, model_fingerprint,
    quantile_unsorted, window_responses,
};
