//! Integration tests of the workspace, one module per topic: the runner and the command line,
//! and what spans crates. The parity tests of `models` and `neurons` live in their crates
//! (`crates/<crate>/tests/parity.rs`).

mod util;

// `neuronlab perplexity` and `generate` on the real SmolLM2.
mod cli_decoder;
// The real all-MiniLM-L6-v2 checkpoint against transformers, and the CLI on it.
mod minilm;
// Experiment files and grid expansion.
mod grid;
// Dataset readers (GLUE, JSONL, CSV, Parquet).
mod data;
// Metrics against NumPy / scikit-learn.
mod metrics;
// TREC qrels / runs and ranking metrics against trec_eval.
mod ranking;
// Passage matrices and exact inner-product search against NumPy.
mod retrieval;
// `neuronlab corpus embed | search` on the real MiniLM.
mod cli_corpus;
// Dense PRF's reformulator, objective and inputs against the official code.
mod prf;
// Dense PRF cells through `neuronlab grid run` on the real MiniLM.
mod cli_prf;
// SQuAD training windows against run_qa.py preprocessing.
mod squad;
// Comparative steps: batched and sequential views agree.
mod views;
// AdamW, global-norm clipping and the schedule against PyTorch.
mod optim;
// Golden fingerprints of a grid of every kind of cell (behaviour pinned across refactors).
mod golden;
// `neuronlab grid` and `report` end to end on a tiny model.
mod cli_grid;
// Two processes on one grid, a full disk, a killed writer's leftovers.
mod cli_faults;
// `grid export --slurm`, and the exported grid on a real Slurm (scripts/slurm-test.sh).
mod cli_slurm;
// Bad input through the binary, said once and where it is; `inspect` of a GGUF file.
mod cli_errors;
// Extractive QA (SQuAD, HotpotQA) and re-ranking cells through `neuronlab grid run`.
mod cli_qa;
// Neuron studies through `neuronlab grid run` on the tiny Llama.
mod cli_study;
// Cross-lingual LoRA fine-tuning cells through `neuronlab grid run` on the tiny Llama.
mod cli_adapt;
// The generative XQuAD cell on the real SmolLM2 against the official code via transformers.
mod xquad;
// AdamW training on the real MiniLM with real sentences lowers the loss.
mod training;
// The same parity checks on a CUDA GPU (only in builds with `--features cuda`).
#[cfg(feature = "cuda")]
mod cuda;
