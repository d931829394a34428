//! A cell of a grid, and what every kind of cell gives the harness ([`CellKind`]): its identity
//! (the run id), its inputs for validation, its deep checks before anything runs, and its run on
//! a backend and device.

use std::any::{Any, TypeId};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::Result;
use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};

use crate::harness::experiment::ExperimentFile;
use crate::harness::log::{Outcome, RunLog};

/// One cell of a grid, fully resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cell<C> {
    /// Position in the expansion order.
    pub index: usize,
    /// Short hash of the cell's identity ([`CellKind::identity`]): the run folder's name.
    pub run_id: String,
    /// The axis values of this cell (`model`, `dataset`, `loss`, `seed`, and each training
    /// setting that is an axis), as text for the results table.
    pub params: BTreeMap<String, String>,
    /// Everything the run depends on, written as the run's `config.toml`.
    pub config: C,
}

impl<C> Cell<C> {
    /// The same cell with its configuration wrapped (e.g. into the registry's enum).
    pub fn map<D>(self, wrap: impl FnOnce(C) -> D) -> Cell<D> {
        Cell {
            index: self.index,
            run_id: self.run_id,
            params: self.params,
            config: wrap(self.config),
        }
    }
}

impl<C: CellKind> Cell<C> {
    /// The cell at `index` with its run id.
    pub fn new(index: usize, params: BTreeMap<String, String>, config: C) -> Self {
        let identity = toml::to_string(&config.identity()).expect("a cell config serialises");
        Self {
            index,
            run_id: crate::harness::ids::run_id(&identity),
            params,
            config,
        }
    }
}

/// A file a cell reads, for the checks before anything runs.
#[derive(Debug, Clone)]
pub struct Input<'a> {
    /// What it is (`dataset`, `text`, `training file`, ...).
    pub what: &'static str,
    /// The name it has in the experiment file (a dataset, a language, ...).
    pub name: &'a str,
    /// The path, resolved.
    pub path: &'a Path,
}

/// What a run gets from the harness.
pub struct RunContext<'a, B: Backend> {
    /// `DIR/<grid>`: the grid's folder (other cells' run folders are in it).
    pub grid_dir: &'a Path,
    /// This cell's run folder: a run that finds a checkpoint there continues from it.
    pub dir: &'a Path,
    /// The results root (`--output`; caches shared by grids live there).
    pub output: &'a Path,
    /// The run's log.
    pub log: &'a mut RunLog,
    /// The device.
    pub device: &'a B::Device,
    /// State a kind keeps between the cells of one grid run.
    pub shared: &'a mut Shared,
}

/// State that a kind of cell keeps between the cells of one grid run (e.g. tokenised datasets),
/// one value per type.
#[derive(Default)]
pub struct Shared(HashMap<TypeId, Box<dyn Any>>);

impl Shared {
    /// The value of type `T`, made by `init` on first use.
    pub fn get_or_insert_with<T: Any>(&mut self, init: impl FnOnce() -> T) -> &mut T {
        self.0
            .entry(TypeId::of::<T>())
            .or_insert_with(|| Box::new(init()))
            .downcast_mut()
            .expect("one value per type")
    }
}

/// The arm of an axis that the others are compared with in a report (paired by seed): the
/// encoder's `loss = "baseline"`, PRF's `prf = "plain"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BaselineArm {
    /// The axis.
    pub axis: &'static str,
    /// The baseline's value on it.
    pub value: &'static str,
}

/// What every kind of cell gives the harness: its identity, its inputs, its checks and its run.
pub trait CellKind: Serialize + Clone {
    /// The arm its report compares the others with, if the kind has one.
    const BASELINE: Option<BaselineArm> = None;
    /// The configuration whose TOML text is hashed into the run id: this one without what does
    /// not change the numbers (resolved paths, checkpointing, saving the model).
    fn identity(&self) -> Self;
    /// The model's name.
    fn model_name(&self) -> &str;
    /// The model's checkpoint, resolved.
    fn model_dir(&self) -> &Path;
    /// What the cell works on besides the model (`dataset words`, `study lape`): cells with the
    /// same model and subject read the same inputs and are checked once.
    fn subject(&self) -> String;
    /// The files the cell reads besides the model.
    fn inputs(&self) -> Vec<Input<'_>>;
    /// Deep checks before any cell runs (the files exist and parse, the tokenizer fits the
    /// model, the task fits the head): every problem found, none when the cell can start.
    fn check(&self) -> Vec<anyhow::Error>;
    /// The run ids of the cells whose results this one reads (a study's neuron sets): they
    /// run first (the Slurm export submits them as an earlier job array).
    fn needs(&self) -> Vec<&str> {
        Vec::new()
    }
    /// Prepare the folder of an interrupted run to continue from its checkpoint, if the kind
    /// keeps one; `true` when the run will continue (its log and evaluations are kept).
    fn resume(&self, _dir: &Path) -> Result<bool> {
        Ok(false)
    }
    /// After the cell's finished result is recorded: remove what was kept only to resume it
    /// (a checkpoint). A kill before this leaves it behind, never a finished cell without its
    /// result.
    fn recorded(&self, _dir: &Path) {}
    /// Run the cell on backend `B`.
    fn run<B: Backend>(&self, ctx: &mut RunContext<'_, B>) -> Result<Outcome>;
}

/// A set of kinds that can expand an experiment file into its cells (the registry).
pub trait Expand: CellKind + Sized {
    /// Expand `file` into its cells. Names that the grid uses but the file does not define,
    /// empty axes, unknown settings and out-of-range values are errors naming file, line and key.
    fn expand(file: &ExperimentFile) -> Result<Vec<Cell<Self>>>;
}
