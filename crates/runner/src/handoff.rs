//! The study → fine-tuning hand-off: the files a study run leaves for the LoRA cells that take
//! its neuron sets (`lora.neurons_from`), named here once for both sides, since the kinds never
//! import each other.
//!
//! ```text
//! DIR/<grid>/
//!   statistics/<hash>.json    the activation statistics of a study's windows, shared by cells
//!   <study run>/
//!     result.json             `finished` once the sets are written
//!     neurons.json            the language-specific sets (`ablation::LanguageSets`)
//!     statistics.name         which file of `statistics/` the study used (mean interventions)
//! ```

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::harness::results::write_atomic;

/// The grid's folder of activation statistics, shared by the study cells that read the same
/// windows.
pub fn statistics_dir(grid_dir: &Path) -> PathBuf {
    grid_dir.join("statistics")
}

/// The outputs of one study run.
#[derive(Debug, Clone)]
pub struct StudyOutputs {
    dir: PathBuf,
}

impl StudyOutputs {
    /// The outputs in a study's run folder.
    pub fn in_run(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
        }
    }

    /// The outputs of study run `run_id` of the grid in `grid_dir`.
    pub fn of(grid_dir: &Path, run_id: &str) -> Self {
        Self::in_run(&grid_dir.join(run_id))
    }

    /// The run folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The language-specific neuron sets.
    pub fn neurons(&self) -> PathBuf {
        self.dir.join("neurons.json")
    }

    /// Record which file of the grid's [`statistics_dir`] the study used.
    pub fn record_statistics(&self, file: &Path) -> Result<()> {
        let name = file
            .file_name()
            .with_context(|| format!("{}: a statistics file has a name", file.display()))?;
        write_atomic(
            &self.dir.join("statistics.name"),
            name.to_string_lossy().as_bytes(),
        )
    }

    /// The statistics file the study used, in the grid's [`statistics_dir`].
    pub fn statistics(&self, grid_dir: &Path) -> Result<PathBuf> {
        let pointer = self.dir.join("statistics.name");
        let name = std::fs::read_to_string(&pointer)
            .with_context(|| format!("cannot read {}", pointer.display()))?;
        Ok(statistics_dir(grid_dir).join(name.trim()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_statistics_a_study_records_are_the_ones_read_back() {
        let grid = tempfile::tempdir().unwrap();
        let study = StudyOutputs::of(grid.path(), "abc");
        std::fs::create_dir_all(study.dir()).unwrap();
        let file = statistics_dir(grid.path()).join("00ff.json");
        study.record_statistics(&file).unwrap();
        assert_eq!(study.statistics(grid.path()).unwrap(), file);
        assert_eq!(study.neurons(), grid.path().join("abc/neurons.json"));
        let missing = StudyOutputs::of(grid.path(), "none").statistics(grid.path());
        let msg = format!("{:#}", missing.unwrap_err());
        assert!(msg.contains("none/statistics.name"), "{msg}");
    }
}
