//! The kinds of cell, and the only place that lists them with the TOML sections they own and
//! the `[grid]` axes that choose them:
//!
//! | kind | folder | chosen by | its sections |
//! |---|---|---|---|
//! | encoder fine-tuning | [`crate::encoder`] | `grid.dataset` or `grid.pairs` | `[datasets.*]`, `[losses.*]`, `grid.loss` ([`crate::encoder::spec`]) |
//! | neuron study | [`crate::study`] | `grid.study` (without `grid.task`) | `[texts.*]`, `[studies.*]` ([`crate::study::spec`]) |
//! | LoRA fine-tuning | [`crate::lora`] | `grid.task` (its `grid.study` cells run first and feed it) | `[tasks.*]`, `[lora]`, a model's `lora`, `grid.neurons` ([`crate::lora::spec`]) |
//! | dense PRF | [`crate::prf`] | `grid.corpus` (beside encoder cells when the grid also has `dataset` or `pairs`) | `[corpora.*]`, `[prf.*]`, `grid.prf`, `grid.prf_model` ([`crate::prf::spec`]) |
//!
//! `name`, `description`, `[train]`, `[models.*]` and `grid.model` / `grid.seed` /
//! `grid.train` are shared ([`crate::harness::experiment`]). Each kind reads its sections as its
//! own view of the file; a key no view reads is an error naming its line. A new kind is a
//! folder with a type implementing [`CellKind`], its sections, and a line in each match here.
//!
//! An encoder grid:
//!
//! ```toml
//! name = "quickstart"                      # results go to DIR/<name>/
//!
//! [train]                                  # settings for every cell (defaults below)
//! epochs = 1
//! batch_size = 16
//!
//! [models.minilm]
//! path = "${ARTEFACTS}/all-MiniLM-L6-v2"   # ${ARTEFACTS}: the fetched-artefact cache
//! kind = "encoder"
//! train = { learning_rate = 5e-5 }        # per-model overrides
//!
//! [datasets.polarity]
//! path = "${ARTEFACTS}/rt-polarity"
//! format = "jsonl"
//! task = "classification"
//! columns = { text = "sentence", label = "label" }
//!
//! [losses.cmp2]
//! kind = "comparative"
//! n_drop = 2
//!
//! [grid]
//! model = ["minilm"]
//! dataset = ["polarity"]
//! loss = ["baseline", "cmp2"]
//! seed = [1, 2, 3]
//! train = { learning_rate = [2e-5, 5e-5] } # any training setting as an axis
//! ```
//!
//! Neuron studies, LoRA and PRF grids: see [`crate::study::spec`], [`crate::lora::spec`] and
//! [`crate::prf::spec`]. A pair
//! in `grid.pairs` may name its own losses (`{ model, dataset, loss = [...] }`).

use std::path::Path;

use anyhow::{Result, bail};
use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};

use crate::encoder::cell::TrainCell;
use crate::harness::experiment::{ExperimentFile, Views, set_axes};
use crate::harness::grid::{self, CellKind, Expand, Input, RunContext};
use crate::harness::log::Outcome;
use crate::lora::cell::LoraCell;
use crate::prf::cell::PrfCell;
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
    /// Training a dense query reformulator with pseudo-relevance feedback.
    Prf(PrfCell),
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

    /// The PRF cell, if this is one.
    pub fn as_prf(&self) -> Option<&PrfCell> {
        match self {
            Self::Prf(p) => Some(p),
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
            CellConfig::Prf($c) => $call,
        }
    };
}

impl CellKind for CellConfig {
    fn identity(&self) -> Self {
        match self {
            Self::Train(c) => Self::Train(c.identity()),
            Self::Study(c) => Self::Study(c.identity()),
            Self::Lora(c) => Self::Lora(c.identity()),
            Self::Prf(c) => Self::Prf(c.identity()),
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

    fn needs(&self) -> Vec<&str> {
        each_kind!(self, c => c.needs())
    }

    fn resume(&self, dir: &Path) -> Result<bool> {
        each_kind!(self, c => c.resume(dir))
    }

    fn recorded(&self, dir: &Path) {
        each_kind!(self, c => c.recorded(dir))
    }

    fn run<B: Backend>(&self, ctx: &mut RunContext<'_, B>) -> Result<Outcome> {
        each_kind!(self, c => c.run(ctx))
    }
}

/// The baseline arms of every kind (see [`grid::BaselineArm`]), for reports.
pub fn baseline_arms() -> Vec<grid::BaselineArm> {
    [
        TrainCell::BASELINE,
        StudyCell::BASELINE,
        LoraCell::BASELINE,
        PrfCell::BASELINE,
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// Which kind a grid expands to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum GridKind {
    Encoder,
    Study,
    Lora,
    Prf,
    EncoderAndPrf,
}

impl Expand for CellConfig {
    /// A grid with `task` fine-tunes decoders with LoRA (its studies first), one with `study`
    /// studies neurons, one with `corpus` trains PRF reformulators (after its encoder cells,
    /// when it also has `dataset` or `pairs`), any other fine-tunes encoders. An axis of
    /// another kind is an error.
    fn expand(file: &ExperimentFile) -> Result<Vec<Cell>> {
        let mut views = Views::new(file);
        let encoder: crate::encoder::spec::Sections = views.read()?;
        let study: crate::study::spec::Sections = views.read()?;
        let lora: crate::lora::spec::Sections = views.read()?;
        let prf: crate::prf::spec::Sections = views.read()?;
        views.finish()?;

        let kind = if !lora.grid.task.is_empty() {
            GridKind::Lora
        } else if !prf.grid.corpus.is_empty() {
            if encoder.grid.used().is_empty() {
                GridKind::Prf
            } else {
                GridKind::EncoderAndPrf
            }
        } else if !study.grid.study.is_empty() {
            GridKind::Study
        } else {
            GridKind::Encoder
        };
        let training = set_axes(&[("train", !file.experiment.grid.train.is_empty())]);
        let (what, elsewhere, foreign) = match kind {
            GridKind::Lora => (
                "fine-tuning tasks (`task`)",
                "encoder training runs",
                [encoder.grid.used(), prf.grid.used()].concat(),
            ),
            GridKind::Study => (
                "neuron studies (`study`)",
                "training runs",
                [
                    encoder.grid.used(),
                    lora.grid.used(),
                    prf.grid.used(),
                    training,
                ]
                .concat(),
            ),
            GridKind::Prf => (
                "PRF reformulators (`corpus`)",
                "other kinds of cell",
                [encoder.grid.used(), lora.grid.used(), study.grid.used()].concat(),
            ),
            GridKind::EncoderAndPrf => (
                "encoder fine-tuning and PRF reformulators",
                "decoder cells",
                [lora.grid.used(), study.grid.used()].concat(),
            ),
            GridKind::Encoder => (
                "encoder fine-tuning (`dataset` or `pairs`)",
                "LoRA fine-tuning (`task`) and PRF (`corpus`)",
                [lora.grid.used(), prf.grid.used()].concat(),
            ),
        };
        if let Some(axis) = foreign.first() {
            bail!(
                "{}: a grid of {what} has no `{axis}` axis; put {elsewhere} in another file",
                file.locate(&["grid", axis])
            );
        }

        fn wrap<K>(cells: Vec<grid::Cell<K>>, kind: fn(K) -> CellConfig) -> Vec<Cell> {
            cells.into_iter().map(|c| c.map(kind)).collect()
        }
        match kind {
            GridKind::Lora => {
                let studies = if study.grid.study.is_empty() {
                    Vec::new()
                } else {
                    crate::study::cell::expand(file, &study, true)?
                };
                let run = |model: &str, name: &str| {
                    studies
                        .iter()
                        .find(|c| c.config.model_name == model && c.config.study_name == name)
                        .map(|c| c.run_id.clone())
                };
                let grid_studies = crate::lora::cell::GridStudies {
                    first: studies.len(),
                    in_grid: &study.grid.study,
                    defined: study.studies.keys().cloned().collect(),
                    run: &run,
                };
                let tuned = crate::lora::cell::expand(file, &lora, &grid_studies)?;
                let mut cells = wrap(studies, CellConfig::Study);
                cells.extend(wrap(tuned, CellConfig::Lora));
                grid::check_unique(file, &cells)?;
                Ok(cells)
            }
            GridKind::Study => Ok(wrap(
                crate::study::cell::expand(file, &study, false)?,
                CellConfig::Study,
            )),
            GridKind::Prf => Ok(wrap(
                crate::prf::cell::expand(file, &prf, 0, &Default::default())?,
                CellConfig::Prf,
            )),
            GridKind::EncoderAndPrf => {
                let mut cells = wrap(
                    crate::encoder::cell::expand(file, &encoder)?,
                    CellConfig::Train,
                );
                let encoder_models = cells
                    .iter()
                    .map(|c| c.config.model_name().to_string())
                    .collect();
                let prf_cells = crate::prf::cell::expand(file, &prf, cells.len(), &encoder_models)?;
                cells.extend(wrap(prf_cells, CellConfig::Prf));
                grid::check_unique(file, &cells)?;
                Ok(cells)
            }
            GridKind::Encoder => Ok(wrap(
                crate::encoder::cell::expand(file, &encoder)?,
                CellConfig::Train,
            )),
        }
    }
}

/// The cells of `file` in order (see [`Expand::expand`]).
pub fn expand(file: &ExperimentFile) -> Result<Vec<Cell>> {
    CellConfig::expand(file)
}
