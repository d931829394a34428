//! The PRF cell as the harness sees it: identity, inputs, checks, resumption and its run.

use std::path::Path;

use anyhow::Result;
use burn::tensor::backend::Backend;

use super::cell::{PrfCell, check_prf_inputs};
use crate::harness::grid::{BaselineArm, CellKind, Input, RunContext};
use crate::harness::log::Outcome;
use crate::training::checkpoint::{self, ResumeState};

impl CellKind for PrfCell {
    const BASELINE: Option<BaselineArm> = Some(BaselineArm {
        axis: "prf",
        value: "plain",
    });

    fn identity(&self) -> Self {
        let mut c = self.clone();
        c.model_dir = Default::default();
        c.files = Default::default();
        c.train = c.train.identity();
        c
    }

    fn model_name(&self) -> &str {
        &self.model_name
    }

    fn model_dir(&self) -> &Path {
        &self.model_dir
    }

    fn subject(&self) -> String {
        format!("corpus {} prf {}", self.corpus_name, self.prf_name)
    }

    fn inputs(&self) -> Vec<Input<'_>> {
        let f = &self.files;
        let mut inputs = vec![
            Input {
                what: "collection",
                name: &self.corpus_name,
                path: &f.collection,
            },
            Input {
                what: "matrix",
                name: &self.corpus_name,
                path: &f.matrix,
            },
        ];
        for (name, set) in std::iter::once(("train", &f.train)).chain(f.eval_sets()) {
            for (what, path) in [
                ("queries", &set.queries),
                ("qrels", &set.qrels),
                ("first-pass run", &set.run),
            ] {
                inputs.push(Input { what, name, path });
            }
        }
        inputs
    }

    fn check(&self) -> Vec<anyhow::Error> {
        check_prf_inputs(self).err().into_iter().collect()
    }

    fn resume(&self, dir: &Path) -> Result<bool> {
        Ok(ResumeState::prepare(dir)?.is_some())
    }

    fn recorded(&self, dir: &Path) {
        checkpoint::remove(dir);
    }

    fn run<B: Backend>(&self, ctx: &mut RunContext<'_, B>) -> Result<Outcome> {
        super::fit::run_prf::<B>(self, ctx.dir, ctx.log, ctx.device)
    }
}
