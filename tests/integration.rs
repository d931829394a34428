//! Integration tests of the workspace, one module per topic.

mod util;

// BERT, RoBERTa and ELECTRA against tiny HF models (fixtures from make_encoder_fixtures.py).
mod encoders;
// Bad checkpoints, configs, tokenizers and inputs: each a clear error.
mod errors;
// The real all-MiniLM-L6-v2 checkpoint against transformers, and the CLI on it.
mod minilm;
// The same parity checks on a CUDA GPU (only in builds with `--features cuda`).
#[cfg(feature = "cuda")]
mod cuda;
