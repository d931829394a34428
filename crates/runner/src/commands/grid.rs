//! `neuronlab grid run | list | export`: an experiment grid of the registry's kinds, run
//! resumably into the results layout of [`crate::harness::results`].

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::harness::run::GridRun;
use crate::registry::CellConfig;

/// A grid of the registry's kinds of cell.
pub type Grid = crate::harness::grid::Grid<CellConfig>;

/// Where `${ARTEFACTS}` points: `$NEURONLAB_CACHE`, else `.cache/artefacts` in the current
/// folder (as the fetch script run from the checkout), made absolute.
pub fn artefacts_dir() -> PathBuf {
    let dir = std::env::var_os("NEURONLAB_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(".cache/artefacts"));
    std::path::absolute(&dir).unwrap_or(dir)
}

/// Read and expand the experiment file `path`; results under `output/<name>`.
pub fn open(path: &Path, output: &Path) -> Result<Grid> {
    Grid::open(path, output, &artefacts_dir())
}

/// The loop of `neuronlab grid run` over `file` (only cell `cell` when given).
pub fn grid_run(
    file: PathBuf,
    output: PathBuf,
    cell: Option<usize>,
    device_label: String,
) -> GridRun<CellConfig> {
    GridRun {
        file,
        output,
        cell,
        device_label,
        artefacts: artefacts_dir(),
        kinds: std::marker::PhantomData,
    }
}

/// `neuronlab grid export --slurm`: the grid's job arrays and `DIR/<grid>/submit.sh`
/// ([`crate::harness::slurm`]); returns the path of `submit.sh`.
pub fn export_slurm(
    file: &Path,
    output: &Path,
    opts: &crate::harness::slurm::SlurmOptions,
) -> Result<PathBuf> {
    crate::harness::slurm::export_slurm(&open(file, output)?, file, output, opts)
}
