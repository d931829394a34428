//! The neurons crate against independent references (fixtures in the workspace's
//! `tests/fixtures`): `cargo test -p neurons` proves the selection and statistics without
//! building the runner.

#[path = "../../../tests/support.rs"]
mod util;

// Language-specific neuron selection against NumPy re-implementations of the official scripts.
mod lape;
// Activation statistics, packing and merging on the tiny decoders.
mod neuron_stats;
