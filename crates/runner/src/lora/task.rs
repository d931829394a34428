//! One LoRA task family as the shared cell loop sees it ([`LoraTask`]), and that loop
//! ([`run`]): read and encode the training and evaluation files, load the decoder (with a head
//! or not), attach the adapters, train them, merge them, evaluate every language as trained
//! and, with `lora.intervention`, with the language's neurons intervened on, then write the
//! per-language table, the predictions and the result.
//!
//! A family gives what differs: its examples, its model, its batch loss and how one language
//! is scored. Classification ([`super::classify::Classification`]) and generative QA
//! ([`super::generative::GenerativeQa`]) are the two; [`super::kind`] picks one by the task's
//! format.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use burn::module::AutodiffModule;
use burn::nn::Linear;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use models::{
    DecoderCheckpoint, DecoderTokenizer, ForwardContext, LlamaModel, PeftConfig, PeftTask,
};

use super::cell::LoraCell;
use super::tuning::{Adapters, Intervention, attach_lora, finish_cell, train_adapters};
use crate::harness::log::{Outcome, RunLog};

/// What one language's evaluation writes to and runs under.
pub struct Evaluation<'a, B: Backend> {
    /// The language.
    pub language: &'a str,
    /// Whether the context intervenes on the language's neurons.
    pub intervened: bool,
    /// The forward context (with the intervention, if any).
    pub ctx: &'a mut ForwardContext<B>,
    /// The device.
    pub device: &'a B::Device,
    /// The predictions file's text, one line per prediction appended.
    pub predictions: &'a mut String,
    /// The run's folder (for a family's own prediction files).
    pub dir: &'a Path,
    /// `(done, total)` examples, as the evaluation goes.
    pub progress: &'a mut dyn FnMut(usize, usize),
}

/// A LoRA task family: see the module docs.
pub trait LoraTask: Sized {
    /// One example, read and encoded.
    type Example;
    /// The trained module on an autodiff backend.
    type Model<B: AutodiffBackend>: AutodiffModule<B, InnerModule = Self::Valid<B::InnerBackend>>;
    /// The evaluated module.
    type Valid<B: Backend>: Module<B>;
    /// The scores of a language, in table order; the first (its mean over the languages) is
    /// the cell's main metric.
    const SCORES: &'static [&'static str];
    /// What the examples are called (logs, and the table's count column).
    const NOUN: &'static str;
    /// The predictions file's header.
    fn predictions_header() -> String;

    /// The family for a cell, from the checkpoint (before its weights load) and tokenizer.
    fn new(cell: &LoraCell, checkpoint: &DecoderCheckpoint, tokenizer: DecoderTokenizer) -> Self;

    /// One language's examples (`train`: the training file's), read, split (`task.split`), cut
    /// to `max_train_examples` / `max_eval_examples` and encoded, with a line for the log.
    fn examples(
        &self,
        cell: &LoraCell,
        language: &str,
        path: &Path,
        train: bool,
    ) -> Result<(Vec<Self::Example>, String)>;

    /// The model with its weights (and, for a classifier, its seeded head).
    fn load<B: AutodiffBackend>(
        &self,
        checkpoint: DecoderCheckpoint,
        cell: &LoraCell,
        device: &B::Device,
    ) -> Result<Self::Model<B>>;

    /// `attach` applied to the model's decoder.
    fn with_decoder<B: AutodiffBackend>(
        model: Self::Model<B>,
        attach: impl FnOnce(LlamaModel<B>) -> Result<(LlamaModel<B>, Adapters)>,
    ) -> Result<(Self::Model<B>, Adapters)>;

    /// The model's decoder (its adapters are saved).
    fn decoder<B: Backend>(model: &Self::Valid<B>) -> &LlamaModel<B>;

    /// PEFT's `task_type` for the saved adapter folder (the `transformers` class it loads on).
    const PEFT_TASK: PeftTask;

    /// The head saved beside the adapters (PEFT's `modules_to_save`), if the family has one.
    fn head<B: Backend>(model: &Self::Valid<B>) -> Option<&Linear<B>>;

    /// The mean loss of a batch.
    fn loss<B: AutodiffBackend>(
        &self,
        model: &Self::Model<B>,
        batch: &[&Self::Example],
        device: &B::Device,
    ) -> Tensor<B, 1>;

    /// The model with its adapters merged into the weights.
    fn merged<B: Backend>(model: Self::Valid<B>) -> Self::Valid<B>;

    /// Score one language ([`Self::SCORES`]), appending its predictions.
    fn evaluate<B: Backend>(
        &self,
        model: &Self::Valid<B>,
        examples: &[Self::Example],
        eval: Evaluation<'_, B>,
    ) -> Result<Vec<f64>>;

    /// Scores for the log.
    fn describe(scores: &[f64]) -> String;
}

/// Fine-tune and evaluate one cell of family `T` into `dir` (see the module docs).
pub fn run<T: LoraTask, B: AutodiffBackend>(
    cell: &LoraCell,
    grid_dir: &Path,
    dir: &Path,
    log: &mut RunLog,
    device: &B::Device,
) -> Result<Outcome> {
    let (checkpoint, tokenizer) = DecoderCheckpoint::open_with_tokenizer(&cell.model_dir)
        .with_context(|| format!("model `{}`", cell.model_name))?;
    let task = T::new(cell, &checkpoint, tokenizer);

    // Data.
    let (train_lang, train_path) = &cell.train_file;
    let (train, line) = task.examples(cell, train_lang, train_path, true)?;
    log.line(&format!("train {train_lang}: {line}"));
    let mut evals = Vec::new();
    for (lang, path) in &cell.eval_files {
        let (examples, line) = task.examples(cell, lang, path, false)?;
        log.line(&format!("eval {lang}: {line}"));
        evals.push((lang.clone(), examples));
    }

    // Model, adapters, training.
    let model = task.load::<B>(checkpoint, cell, device)?;
    let (model, adapters) =
        T::with_decoder(model, |m| attach_lora(m, cell, grid_dir, log, device))?;
    let (model, trained) = train_adapters(
        model,
        train.len(),
        cell,
        (dir, log, device),
        |model, indices| {
            let batch: Vec<&T::Example> = indices.iter().map(|&i| &train[i]).collect();
            task.loss(model, &batch, device)
        },
    )?;
    if cell.train.save_model {
        // A PEFT adapter folder: `PeftModel.from_pretrained(base, "adapter")` opens it.
        let folder = dir.join("adapter");
        let base = cell.model_dir.display().to_string();
        let config = PeftConfig::of(T::decoder(&model), T::PEFT_TASK, Some(&base), 0.0)?;
        models::save_peft(T::decoder(&model), T::head(&model), &config, &folder)
            .with_context(|| format!("saving the adapters to {}", folder.display()))?;
        log.line(&format!("adapters saved to {} (PEFT)", folder.display()));
    }

    // Evaluation, adapters merged.
    let valid = T::merged(model);
    let intervention = Intervention::of(cell, grid_dir)?;
    let mut metrics = BTreeMap::new();
    let mut table = format!("language,{},{}", T::NOUN, T::SCORES.join(","));
    if intervention.is_some() {
        for s in T::SCORES {
            let _ = write!(table, ",{s}_intervened");
        }
    }
    table.push('\n');
    let mut predictions = format!("{}\n", T::predictions_header());
    let mut per_language = Vec::new();
    for (lang, examples) in &evals {
        let clock = Instant::now();
        let scores = task.evaluate(
            &valid,
            examples,
            Evaluation {
                language: lang,
                intervened: false,
                ctx: &mut ForwardContext::eval(),
                device,
                predictions: &mut predictions,
                dir,
                progress: &mut |done, total| log.evaluating(T::NOUN, done, total, lang),
            },
        )?;
        let _ = write!(table, "{lang},{}", examples.len());
        for (name, v) in T::SCORES.iter().zip(&scores) {
            metrics.insert(format!("{name}/{lang}"), *v);
            let _ = write!(table, ",{v:.6}");
        }
        let mut line = format!("{lang}: {}", T::describe(&scores));
        if let Some(intervention) = &intervention {
            let (mut ctx, size) = intervention.context(&adapters, lang, device)?;
            let scores_i = task.evaluate(
                &valid,
                examples,
                Evaluation {
                    language: lang,
                    intervened: true,
                    ctx: &mut ctx,
                    device,
                    predictions: &mut predictions,
                    dir,
                    progress: &mut |done, total| {
                        log.evaluating(T::NOUN, done, total, &format!("{lang} intervened"))
                    },
                },
            )?;
            for (name, v) in T::SCORES.iter().zip(&scores_i) {
                metrics.insert(format!("{name}_intervened/{lang}"), *v);
                let _ = write!(table, ",{v:.6}");
            }
            let _ = write!(
                line,
                "; with {size} neurons {:?}: {}",
                cell.lora.intervention.as_str(),
                T::describe(&scores_i)
            );
        }
        table.push('\n');
        log.line(&format!(
            "{line} ({} {}, {:.0}s)",
            examples.len(),
            T::NOUN,
            clock.elapsed().as_secs_f64()
        ));
        per_language.push(scores);
    }
    for (k, name) in T::SCORES.iter().enumerate() {
        let mean =
            per_language.iter().map(|s| s[k]).sum::<f64>() / per_language.len().max(1) as f64;
        metrics.insert((*name).into(), mean);
    }
    finish_cell(
        dir,
        log,
        (&table, &predictions),
        &adapters,
        &trained,
        T::SCORES[0],
        metrics,
    )
}
