//! The LoRA cell as the harness sees it: identity, inputs, checks, resumption and its run: the shared loop
//! ([`super::task::run`]) with the task format's family (classification or generative QA).

use std::path::Path;

use anyhow::Result;
use burn::backend::Autodiff;
use burn::tensor::backend::Backend;

use super::cell::{LoraCell, check_lora_inputs};
use super::classify::Classification;
use super::generative::GenerativeQa;
use super::task::run;
use crate::harness::grid::{CellKind, Input, RunContext};
use crate::harness::log::Outcome;
use crate::lora::spec::TaskFormat;
use crate::training::checkpoint::{self, ResumeState};

impl CellKind for LoraCell {
    fn identity(&self) -> Self {
        let mut a = self.clone();
        a.model_dir = Default::default();
        a.train_file.1 = Default::default();
        a.eval_files
            .values_mut()
            .for_each(|p| *p = Default::default());
        a.neurons_file = None;
        a
    }

    fn model_name(&self) -> &str {
        &self.model_name
    }

    fn model_dir(&self) -> &Path {
        &self.model_dir
    }

    fn subject(&self) -> String {
        // The neuron choice is part of it: each choice needs its own languages' sets.
        format!(
            "task {} neurons {} target {}",
            self.task_name,
            self.neurons.as_str(),
            self.target.as_deref().unwrap_or("-")
        )
    }

    fn needs(&self) -> Vec<&str> {
        self.neurons_study.as_deref().into_iter().collect()
    }

    fn inputs(&self) -> Vec<Input<'_>> {
        let mut inputs = vec![Input {
            what: "training file",
            name: &self.train_file.0,
            path: &self.train_file.1,
        }];
        inputs.extend(self.eval_files.iter().map(|(lang, path)| Input {
            what: "evaluation file",
            name: lang,
            path,
        }));
        if let Some(path) = &self.neurons_file {
            inputs.push(Input {
                what: "neurons",
                name: &self.task_name,
                path,
            });
        }
        inputs
    }

    fn check(&self) -> Vec<anyhow::Error> {
        check_lora_inputs(self).err().into_iter().collect()
    }

    fn resume(&self, dir: &Path) -> Result<bool> {
        Ok(ResumeState::prepare(dir)?.is_some())
    }

    fn recorded(&self, dir: &Path) {
        checkpoint::remove(dir);
    }

    fn run<B: Backend>(&self, ctx: &mut RunContext<'_, B>) -> Result<Outcome> {
        let (grid_dir, dir, log, device) = (ctx.grid_dir, ctx.dir, &mut *ctx.log, ctx.device);
        // The one list of which family serves which task format.
        match self.task.format {
            TaskFormat::Xquad => run::<GenerativeQa, Autodiff<B>>(self, grid_dir, dir, log, device),
            TaskFormat::Jsonl | TaskFormat::Xnli => {
                run::<Classification, Autodiff<B>>(self, grid_dir, dir, log, device)
            }
        }
    }
}
