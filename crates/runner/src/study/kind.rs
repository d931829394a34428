//! The study cell as the harness sees it: identity, inputs, checks and its run.

use std::path::Path;

use anyhow::Result;
use burn::tensor::backend::Backend;

use super::cell::{StudyCell, check_study_inputs};
use crate::harness::grid::{CellKind, Input, RunContext};
use crate::harness::log::Outcome;

impl CellKind for StudyCell {
    fn identity(&self) -> Self {
        let mut s = self.clone();
        s.model_dir = Default::default();
        s.files = Default::default();
        s.neurons_file = None;
        s.statistics_files = Vec::new();
        s
    }

    fn model_name(&self) -> &str {
        &self.model_name
    }

    fn model_dir(&self) -> &Path {
        &self.model_dir
    }

    fn subject(&self) -> String {
        format!("study {}", self.study_name)
    }

    fn inputs(&self) -> Vec<Input<'_>> {
        let mut inputs = Vec::new();
        for (lang, files) in &self.files {
            inputs.extend(files.iter().map(|(_, path)| Input {
                what: "text",
                name: lang,
                path,
            }));
        }
        if let Some(path) = &self.neurons_file {
            inputs.push(Input {
                what: "neurons",
                name: &self.study_name,
                path,
            });
        }
        inputs.extend(self.statistics_files.iter().map(|path| Input {
            what: "statistics",
            name: &self.study_name,
            path,
        }));
        inputs
    }

    fn check(&self) -> Vec<anyhow::Error> {
        check_study_inputs(self).err().into_iter().collect()
    }

    fn run<B: Backend>(&self, ctx: &mut RunContext<'_, B>) -> Result<Outcome> {
        let stats_dir = crate::handoff::statistics_dir(ctx.grid_dir);
        super::run_study::<B>(self, ctx.dir, &stats_dir, ctx.log, ctx.device)
    }
}
