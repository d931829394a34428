//! The encoder's task families, and the one list of which family serves which `task`: each
//! family (a folder or file of [`crate::encoder`]) gives its input checks and its run, and a new
//! family is a folder and an arm in each function here.

use anyhow::Result;
use burn::backend::Autodiff;
use burn::tensor::backend::Backend;

use super::cell::TrainCell;
use super::{classify, extractive, rerank};
use crate::encoder::spec::Task;
use crate::harness::grid::RunContext;
use crate::harness::log::Outcome;

/// The dataset's files exist and, where the family reads them before training, parse.
pub(crate) fn check_inputs(cell: &TrainCell) -> Result<()> {
    match cell.dataset.task {
        Task::Classification | Task::Regression => classify::check_inputs(cell),
        Task::ExtractiveQa => extractive::check_inputs(cell),
        Task::Ranking => rerank::check_inputs(cell),
    }
}

/// Train and evaluate the cell with its family's learner on backend `B` (with autodiff).
pub(crate) fn train<B: Backend>(cell: &TrainCell, ctx: &mut RunContext<'_, B>) -> Result<Outcome> {
    let (dir, log, device) = (ctx.dir, &mut *ctx.log, ctx.device);
    match cell.dataset.task {
        Task::Classification | Task::Regression => {
            let tokens = ctx.output.join(".tokens");
            let cache = ctx
                .shared
                .get_or_insert_with(|| classify::TokenCache::on_disk(tokens));
            let data = cache.get(cell)?;
            classify::train_cell::<Autodiff<B>>(cell, &data, dir, log, device)
        }
        Task::ExtractiveQa => extractive::train_span_cell::<Autodiff<B>>(cell, dir, log, device),
        Task::Ranking => rerank::train_rank_cell::<Autodiff<B>>(cell, dir, log, device),
    }
}
