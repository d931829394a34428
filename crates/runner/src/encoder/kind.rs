//! The encoder cell as the harness sees it: identity, inputs, checks, resumption and its run
//! (one learner per task family, [`super::tasks`]).

use std::path::Path;

use anyhow::Result;
use burn::tensor::backend::Backend;

use super::cell::{TrainCell, check_encoder};
use crate::harness::grid::{BaselineArm, CellKind, Input, RunContext};
use crate::harness::log::Outcome;
use crate::training::checkpoint::{self, ResumeState};

impl CellKind for TrainCell {
    const BASELINE: Option<BaselineArm> = Some(BaselineArm {
        axis: "loss",
        value: "baseline",
    });

    fn identity(&self) -> Self {
        let mut t = self.clone();
        t.model_dir = Default::default();
        t.dataset_dir = Default::default();
        t.ranking_files = None;
        // Settings that do not change the numbers do not change the run.
        t.train = t.train.identity();
        t
    }

    fn model_name(&self) -> &str {
        &self.model_name
    }

    fn model_dir(&self) -> &Path {
        &self.model_dir
    }

    fn subject(&self) -> String {
        format!("dataset {}", self.dataset_name)
    }

    fn inputs(&self) -> Vec<Input<'_>> {
        vec![Input {
            what: "dataset",
            name: &self.dataset_name,
            path: &self.dataset_dir,
        }]
    }

    fn check(&self) -> Vec<anyhow::Error> {
        [check_encoder(self), super::tasks::check_inputs(self)]
            .into_iter()
            .filter_map(Result::err)
            .collect()
    }

    fn resume(&self, dir: &Path) -> Result<bool> {
        Ok(ResumeState::prepare(dir)?.is_some())
    }

    fn recorded(&self, dir: &Path) {
        checkpoint::remove(dir);
    }

    fn run<B: Backend>(&self, ctx: &mut RunContext<'_, B>) -> Result<Outcome> {
        super::tasks::train(self, ctx)
    }
}
