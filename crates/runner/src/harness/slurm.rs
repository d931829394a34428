//! `grid export --slurm`: a grid as a Slurm job array, one task per cell.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::harness::grid::Grid;
use crate::harness::results::write_atomic;

/// `neuronlab grid export --slurm`: a job array with one task per cell, written to
/// `DIR/<grid>/slurm.sbatch`.
pub fn export_slurm<C>(grid: &Grid<C>, file: &Path, output: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(&grid.dir)
        .with_context(|| format!("cannot create {}", grid.dir.display()))?;
    let exe = std::env::current_exe()
        .ok()
        .and_then(|p| p.canonicalize().ok())
        .unwrap_or_else(|| PathBuf::from("neuronlab"));
    let abs = |p: &Path| p.canonicalize().unwrap_or_else(|_| p.to_owned());
    let name = &grid.file.experiment.name;
    let script = format!(
        "#!/bin/bash\n\
         # Slurm job array for grid `{name}`: one task per cell ({n} cells).\n\
         # Submit with: sbatch {sbatch}\n\
         # Each task runs one cell; finished cells are skipped, so resubmitting is safe.\n\
         #SBATCH --job-name=neuronlab-{name}\n\
         #SBATCH --array=0-{last}\n\
         #SBATCH --output={dir}/slurm-%A_%a.out\n\
         #SBATCH --cpus-per-task=4\n\
         #SBATCH --time=24:00:00\n\
         # Add your cluster's partition / GPU lines here, e.g. #SBATCH --gres=gpu:1, and pass\n\
         # DEVICE=cuda:0 to sbatch (--export=ALL,DEVICE=cuda:0).\n\
         set -euo pipefail\n\
         cd {cwd}\n\
         exec {exe} grid run {file} --output {output} --cell \"$SLURM_ARRAY_TASK_ID\" --device \"${{DEVICE:-cpu}}\"\n",
        n = grid.cells.len(),
        last = grid.cells.len().saturating_sub(1),
        sbatch = grid.dir.join("slurm.sbatch").display(),
        dir = abs(&grid.dir).display(),
        cwd = abs(Path::new(".")).display(),
        exe = exe.display(),
        file = abs(file).display(),
        output = abs(output).display(),
    );
    let path = grid.dir.join("slurm.sbatch");
    write_atomic(&path, script.as_bytes())?;
    Ok(path)
}
