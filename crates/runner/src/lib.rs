//! The library behind the `neuronlab` command line.
//!
//! Only this crate picks a backend, reads experiment files, touches the file system for runs or
//! prints. The commands: `grid run | list | export` (experiment grids: [`experiment`] files,
//! [`grid`] expansion, [`data`] readers, [`run`] training with [`train`]'s pieces (sentence tasks; [`extractive`] QA; [`rerank`] passage ranking), [`study`] neuron
//! studies, [`adapt`] LoRA fine-tuning on [`crosslingual`] tasks, [`metrics`],
//! and the [`results`] layout), `report` (Markdown and [`plot`]s of a grid's results), `embed` (sentence embeddings), `inspect` (what a checkpoint
//! holds) and `bench` (forward throughput and training-step time on this build's backends).

pub mod adapt;
pub mod backend;
pub mod commands;
pub mod crosslingual;
pub mod data;
pub mod experiment;
pub mod extractive;
pub mod generative;
pub mod grid;
pub mod metrics;
pub mod plot;
pub mod ranking;
pub mod rerank;
pub mod results;
pub mod run;
pub mod squad;
pub mod study;
pub mod train;
