//! The kinds of cell, and the only place that lists them with the `[grid]` axes that choose
//! them:
//!
//! | kind | folder | chosen by | its TOML sections |
//! |---|---|---|---|
//! | encoder fine-tuning | [`crate::encoder`] | `grid.model` × `grid.dataset` or `grid.pairs` | `[datasets.*]`, `[losses.*]` |
//! | neuron study | [`crate::study`] | `grid.study` (without `grid.task`) | `[texts.*]`, `[studies.*]` |
//! | LoRA fine-tuning | [`crate::lora`] | `grid.task` (its `grid.study` cells run first and feed it) | `[tasks.*]`, `[lora]`, `[texts.*]`, `[studies.*]` |
//!
//! `[models.*]`, `[train]` and `grid.seed` / `grid.train` are shared. A new kind is a folder with
//! a type implementing [`CellKind`] and a line here.

use std::path::Path;

use anyhow::Result;
use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};

use crate::encoder::cell::TrainCell;
use crate::harness::experiment::ExperimentFile;
use crate::harness::grid::{self, CellKind, Expand, Input, RunContext};
use crate::harness::log::Outcome;
use crate::lora::cell::LoraCell;
use crate::study::cell::StudyCell;

/// A cell of one of the registry's kinds.
pub type Cell = grid::Cell<CellConfig>;

/// The resolved configuration of a cell, written as the run's `config.toml` (untagged: the
/// file holds the kind's own fields, and the run id hashes them alone).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
// One value per grid cell: boxing the larger variant would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum CellConfig {
    /// Fine-tuning an encoder on a dataset with a loss.
    Train(TrainCell),
    /// A neuron study of a decoder over multilingual text.
    Study(StudyCell),
    /// LoRA fine-tuning of a decoder on a cross-lingual task, evaluated per language.
    Lora(LoraCell),
}

impl CellConfig {
    /// The training cell, if this is one.
    pub fn as_train(&self) -> Option<&TrainCell> {
        match self {
            Self::Train(t) => Some(t),
            _ => None,
        }
    }

    /// The study cell, if this is one.
    pub fn as_study(&self) -> Option<&StudyCell> {
        match self {
            Self::Study(s) => Some(s),
            _ => None,
        }
    }

    /// The fine-tuning cell, if this is one.
    pub fn as_lora(&self) -> Option<&LoraCell> {
        match self {
            Self::Lora(a) => Some(a),
            _ => None,
        }
    }
}

/// `$call` on the kind's own cell.
macro_rules! each_kind {
    ($self:expr, $c:ident => $call:expr) => {
        match $self {
            CellConfig::Train($c) => $call,
            CellConfig::Study($c) => $call,
            CellConfig::Lora($c) => $call,
        }
    };
}

impl CellKind for CellConfig {
    fn identity(&self) -> Self {
        match self {
            Self::Train(c) => Self::Train(c.identity()),
            Self::Study(c) => Self::Study(c.identity()),
            Self::Lora(c) => Self::Lora(c.identity()),
        }
    }

    fn model_name(&self) -> &str {
        each_kind!(self, c => c.model_name())
    }

    fn model_dir(&self) -> &Path {
        each_kind!(self, c => c.model_dir())
    }

    fn subject(&self) -> String {
        each_kind!(self, c => c.subject())
    }

    fn inputs(&self) -> Vec<Input<'_>> {
        each_kind!(self, c => c.inputs())
    }

    fn check(&self) -> Vec<anyhow::Error> {
        each_kind!(self, c => c.check())
    }

    fn resume(&self, dir: &Path) -> Result<bool> {
        each_kind!(self, c => c.resume(dir))
    }

    fn run<B: Backend>(&self, ctx: &mut RunContext<'_, B>) -> Result<Outcome> {
        each_kind!(self, c => c.run(ctx))
    }
}

impl Expand for CellConfig {
    /// A grid with `task` fine-tunes decoders with LoRA (its studies first), one with `study`
    /// studies neurons, any other fine-tunes encoders.
    fn expand(file: &ExperimentFile) -> Result<Vec<Cell>> {
        let g = &file.experiment.grid;
        fn wrap<K>(cells: Vec<grid::Cell<K>>, kind: fn(K) -> CellConfig) -> Vec<Cell> {
            cells.into_iter().map(|c| c.map(kind)).collect()
        }
        if !g.task.is_empty() {
            crate::lora::cell::check_axes(file)?;
            let studies = if g.study.is_empty() {
                Vec::new()
            } else {
                crate::study::cell::expand(file, true)?
            };
            let study_run = |model: &str, study: &str| {
                studies
                    .iter()
                    .find(|c| c.config.model_name == model && c.config.study_name == study)
                    .map(|c| c.run_id.clone())
            };
            let tuned = crate::lora::cell::expand(file, studies.len(), &study_run)?;
            let mut cells = wrap(studies, CellConfig::Study);
            cells.extend(wrap(tuned, CellConfig::Lora));
            grid::check_unique(file, &cells)?;
            return Ok(cells);
        }
        if !g.study.is_empty() {
            let studies = crate::study::cell::expand(file, false)?;
            return Ok(wrap(studies, CellConfig::Study));
        }
        let trained = crate::encoder::cell::expand(file)?;
        Ok(wrap(trained, CellConfig::Train))
    }
}

/// The cells of `file` in order (see [`Expand::expand`]).
pub fn expand(file: &ExperimentFile) -> Result<Vec<Cell>> {
    CellConfig::expand(file)
}
