//! The library behind the `neuronlab` command line.
//!
//! Only this crate picks a backend, reads experiment files, touches the file system for runs or
//! prints. The house, imports running downwards:
//!
//! - [`commands`]: one module per subcommand (`grid run | list | export`, `report`, `embed`,
//!   `inspect`, `bench`).
//! - [`registry`]: the one place that lists the kinds of cell and the TOML sections they own.
//! - The kinds, one folder each, never importing each other: [`encoder`] (fine-tuning an
//!   encoder, baseline or comparative: sentence classification and regression, extractive QA,
//!   re-ranking), [`study`] (neuron studies of a decoder), [`lora`] (neuron-specific LoRA on a
//!   decoder, cross-lingual classification and generative QA) and [`prf`] (dense
//!   pseudo-relevance feedback with LoL's comparative regularisation).
//! - Shared pieces the kinds use: [`training`] (optimiser, schedule, objective, seeds),
//!   [`data`] (dataset readers), [`metrics`], [`plot`], [`retrieval`] (TREC files and metrics,
//!   passage-vector matrices, exact search).
//! - [`handoff`]: the files a study run leaves for the LoRA cells that take its neuron sets,
//!   named once for both kinds.
//! - [`harness`]: what every cell has in common and no kind in particular: the experiment file
//!   and `${VAR}`s, cell identity and run ids, the results layout and run logs.
//! - [`backend`]: the backend this build has, and the device chosen at run time.

pub mod backend;
pub mod commands;
pub mod data;
pub mod encoder;
pub mod handoff;
pub mod harness;
pub mod lora;
pub mod metrics;
pub mod plot;
pub mod prf;
pub mod registry;
pub mod retrieval;
pub mod study;
pub mod training;
