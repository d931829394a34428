//! What every cell has in common, naming no kind of cell: the experiment file (its schema,
//! `${VAR}`s and `file, line N: key K` locations), grid expansion's shared pieces and cell
//! identity (run ids), the results layout, the run log and progress.

pub mod atomic;
pub mod cell;
pub mod experiment;
pub mod grid;
pub mod ids;
pub mod lock;
pub mod log;
pub mod progress;
pub mod results;
pub mod run;
pub mod signals;
pub mod slurm;
pub mod tensorboard;
