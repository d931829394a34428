//! The models crate against independent references (fixtures in the workspace's
//! `tests/fixtures`, written by the committed Python scripts beside them): `cargo test -p models`
//! proves the models without building the runner.

#[path = "../../../tests/support.rs"]
mod util;

// BERT, RoBERTa and ELECTRA against tiny HF models (fixtures from make_encoder_fixtures.py).
mod encoders;
// Llama and Mistral decoders against tiny HF models (fixtures from make_decoder_fixtures.py).
mod decoders;
// The real SmolLM2-135M-Instruct GGUF against transformers: perplexity, chat, generation.
mod smollm2;
// LoRA adapters (with Mondal's neuron mask) against PyTorch.
mod lora;
// The GGUF reader against llama.cpp's Python writer.
mod gguf;
// The fused ops (layer and RMS norm, softmax, log-softmax) against PyTorch, on both paths.
mod fused;
// Bad checkpoints, configs, tokenizers and inputs: each a clear error.
mod errors;
