//! The library behind the `neuronlab` command line.
//!
//! Only this crate picks a backend, reads experiment files, touches the file system for runs or
//! prints. The commands: `embed` (sentence embeddings), `inspect` (what a checkpoint holds) and
//! `bench` (throughput of the model forward on this build's backends).

pub mod backend;
pub mod commands;
pub mod data;
pub mod experiment;
pub mod grid;
pub mod metrics;
pub mod train;
