//! Cross-lingual classification cells (XNLI, JSONL topic tasks): a decoder with a linear head
//! on one token, its adapters from [`super::tuning`]; see [`crate::lora`] for the protocol.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result, bail};
use burn::nn::Linear;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use models::{
    DecoderCheckpoint, DecoderClassifier, DecoderTokenizer, ForwardContext, LlamaModel, PeftTask,
    ScoreHead, TokenPosition,
};

use super::cell::LoraCell;
use super::spec::{ClassifierHead, ClassifierPosition, TaskFormat, TaskSpec};
use super::task::{Evaluation, LoraTask};
use super::tuning::{Adapters, cell_part, pad_id};
use crate::training::seeds::{Purpose, derive_seed};

/// One labelled input of a cross-lingual classification task.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskExample {
    /// The first segment.
    pub text: String,
    /// The second segment, if the task has one.
    pub text_pair: Option<String>,
    /// Index into the task's classes.
    pub label: usize,
}

/// The task's classes (XNLI's three for `format = "xnli"`; none for the generative `xquad`).
pub fn task_classes(task: &TaskSpec) -> Vec<String> {
    match task.format {
        TaskFormat::Xnli => crate::data::crosslingual::XNLI_LABELS
            .map(String::from)
            .to_vec(),
        TaskFormat::Jsonl => task.classes.clone(),
        TaskFormat::Xquad => Vec::new(),
    }
}

/// Read `language`'s examples of a classification `task` from `path`, and how many were left
/// out by `drop_labels` (an `xquad` task is read by [`crate::data::crosslingual::read_squad_json`]).
/// A label that is neither a class, nor mapped, nor dropped, an integer label
/// out of range, or a missing field is an error naming the file and line; so is a file with no
/// example left.
pub fn read_task(
    task: &TaskSpec,
    language: &str,
    path: &Path,
) -> Result<(Vec<TaskExample>, usize)> {
    let classes = task_classes(task);
    let examples = match task.format {
        TaskFormat::Xquad => bail!(
            "{}: an xquad task has questions, not labelled examples (read_squad_json)",
            path.display()
        ),
        TaskFormat::Xnli => crate::data::crosslingual::read_xnli(path, Some(language))?
            .into_iter()
            .map(|e| TaskExample {
                text: e.premise,
                text_pair: Some(e.hypothesis),
                label: e.label,
            })
            .collect::<Vec<_>>(),
        TaskFormat::Jsonl => {
            let mut out = Vec::new();
            let text = crate::data::read_text(path)?;
            let map = task.label_map.get(language);
            let drop = task.drop_labels.get(language);
            let mut dropped = 0;
            for (i, line) in text.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                let at = || format!("{}, line {}", path.display(), i + 1);
                let v: serde_json::Value = serde_json::from_str(line)
                    .with_context(|| format!("{}: invalid JSON", at()))?;
                let field = |key: &str| -> Result<String> {
                    match v.get(key) {
                        Some(serde_json::Value::String(s)) => Ok(s.clone()),
                        Some(other) => bail!("{}: `{key}` is {other}, expected a string", at()),
                        None => bail!("{}: no field `{key}`", at()),
                    }
                };
                let label_key = task
                    .label
                    .as_deref()
                    .context("format = \"jsonl\" needs `label`")?;
                let raw = match v.get(label_key) {
                    Some(serde_json::Value::String(s)) => s.clone(),
                    Some(serde_json::Value::Number(n)) => n.to_string(),
                    Some(other) => bail!(
                        "{}: `{label_key}` is {other}, expected a class name or index",
                        at()
                    ),
                    None => bail!("{}: no field `{label_key}`", at()),
                };
                if drop.is_some_and(|d| d.contains(&raw)) {
                    dropped += 1;
                    continue;
                }
                let class = map.and_then(|m| m.get(&raw)).unwrap_or(&raw);
                let label = match classes.iter().position(|c| c == class) {
                    Some(k) => k,
                    None => match raw.parse::<usize>() {
                        Ok(k) if k < classes.len() => k,
                        Ok(k) => bail!(
                            "{}: label {k} is out of range for {} classes",
                            at(),
                            classes.len()
                        ),
                        Err(_) => bail!(
                            "{}: label {raw:?} is not a class ({}), not mapped in \
                             label_map.{language}, and not in drop_labels.{language}",
                            at(),
                            classes.join(", ")
                        ),
                    },
                };
                out.push(TaskExample {
                    text: field(
                        task.text
                            .as_deref()
                            .context("format = \"jsonl\" needs `text`")?,
                    )?,
                    text_pair: task.text_pair.as_deref().map(field).transpose()?,
                    label,
                });
            }
            if out.is_empty() {
                bail!(
                    "language {language}: no examples in {} ({dropped} left out by drop_labels)",
                    path.display()
                );
            }
            return Ok((out, dropped));
        }
    };
    if examples.is_empty() {
        bail!(
            "language {language}: no examples in {} (an XNLI-1.0 file keeps only the rows of \
             this language)",
            path.display()
        );
    }
    Ok((examples, 0))
}

/// Token ids of each example: `text` or `text <eos> text_pair`, cut to `max_len` tokens.
pub fn encode_examples(
    tokenizer: &DecoderTokenizer,
    examples: &[TaskExample],
    max_len: usize,
) -> Result<Vec<Vec<u32>>> {
    let eos = tokenizer.eos_token();
    examples
        .iter()
        .map(|e| {
            let text = match &e.text_pair {
                Some(pair) => format!("{} {eos} {pair}", e.text),
                None => e.text.clone(),
            };
            let mut ids = tokenizer.encode(&text)?;
            ids.truncate(max_len);
            Ok(ids)
        })
        .collect()
}

/// Classification: a linear head on one token of the decoder ([`ClassifierPosition`]), the
/// cross-entropy of the batch, accuracy per language.
pub struct Classification {
    tokenizer: DecoderTokenizer,
    classes: Vec<String>,
    pad: u32,
    /// Twice the training batch: no activations are kept for a backward pass.
    eval_batch: usize,
}

/// An example with its token ids.
pub struct Encoded {
    example: TaskExample,
    ids: Vec<u32>,
}

impl LoraTask for Classification {
    type Example = Encoded;
    type Model<B: AutodiffBackend> = DecoderClassifier<B>;
    type Valid<B: Backend> = DecoderClassifier<B>;
    const SCORES: &'static [&'static str] = &["accuracy"];
    const NOUN: &'static str = "examples";

    fn new(cell: &LoraCell, checkpoint: &DecoderCheckpoint, tokenizer: DecoderTokenizer) -> Self {
        Self {
            tokenizer,
            classes: task_classes(&cell.task),
            pad: pad_id(&checkpoint.config),
            eval_batch: cell.train.batch_size * 2,
        }
    }

    fn predictions_header() -> String {
        "language,index,label,prediction,intervened".into()
    }

    fn examples(
        &self,
        cell: &LoraCell,
        language: &str,
        path: &Path,
        train: bool,
    ) -> Result<(Vec<Encoded>, String)> {
        let t = &cell.train;
        let (mut examples, dropped) = read_task(&cell.task, language, path)?;
        cell_part(&mut examples, cell, train);
        let ids = encode_examples(&self.tokenizer, &examples, t.max_seq_len)?;
        let line = if train {
            format!(
                "{} examples ({dropped} left out by drop_labels), {} classes",
                examples.len(),
                self.classes.len()
            )
        } else {
            format!("{} examples ({dropped} left out)", examples.len())
        };
        let encoded = examples
            .into_iter()
            .zip(ids)
            .map(|(example, ids)| Encoded { example, ids })
            .collect();
        Ok((encoded, line))
    }

    fn load<B: AutodiffBackend>(
        &self,
        checkpoint: DecoderCheckpoint,
        cell: &LoraCell,
        device: &B::Device,
    ) -> Result<DecoderClassifier<B>> {
        let position = match cell.lora.position {
            ClassifierPosition::Last => TokenPosition::Last,
            ClassifierPosition::LastNonPadding => TokenPosition::LastNonPadding,
        };
        let (model, _) = checkpoint
            .load_classifier::<B>(
                self.classes.len(),
                position,
                match cell.lora.head {
                    ClassifierHead::Hf => ScoreHead::Hf,
                    ClassifierHead::Linear => ScoreHead::TorchLinear,
                },
                derive_seed(cell.seed, Purpose::Head, 0),
                device,
            )
            .with_context(|| format!("model `{}`", cell.model_name))?;
        Ok(model)
    }

    fn with_decoder<B: AutodiffBackend>(
        mut model: DecoderClassifier<B>,
        attach: impl FnOnce(LlamaModel<B>) -> Result<(LlamaModel<B>, Adapters)>,
    ) -> Result<(DecoderClassifier<B>, Adapters)> {
        let adapters;
        (model.model, adapters) = attach(model.model)?;
        Ok((model, adapters))
    }

    fn decoder<B: Backend>(model: &DecoderClassifier<B>) -> &LlamaModel<B> {
        &model.model
    }

    const PEFT_TASK: PeftTask = PeftTask::SeqCls;

    fn head<B: Backend>(model: &DecoderClassifier<B>) -> Option<&Linear<B>> {
        Some(&model.score)
    }

    fn loss<B: AutodiffBackend>(
        &self,
        model: &DecoderClassifier<B>,
        batch: &[&Encoded],
        device: &B::Device,
    ) -> Tensor<B, 1> {
        let rows: Vec<&[u32]> = batch.iter().map(|e| e.ids.as_slice()).collect();
        let labels: Vec<i64> = batch.iter().map(|e| e.example.label as i64).collect();
        let (ids, mask) = super::tuning::batch::<B>(&rows, self.pad, device);
        let labels = Tensor::<B, 1, Int>::from_ints(labels.as_slice(), device);
        let logits = model.forward(ids, mask, &mut ForwardContext::eval());
        losses::cross_entropy(logits, labels).mean()
    }

    fn merged<B: Backend>(mut model: DecoderClassifier<B>) -> DecoderClassifier<B> {
        model.model = model.model.merge_lora();
        model
    }

    fn evaluate<B: Backend>(
        &self,
        model: &DecoderClassifier<B>,
        examples: &[Encoded],
        eval: Evaluation<'_, B>,
    ) -> Result<Vec<f64>> {
        let eval_batch = self.eval_batch.max(1);
        let mut correct = 0;
        let mut index = 0;
        for chunk in examples.chunks(eval_batch) {
            (eval.progress)(index + chunk.len(), examples.len());
            let rows: Vec<&[u32]> = chunk.iter().map(|e| e.ids.as_slice()).collect();
            let (x, mask) = super::tuning::batch::<B>(&rows, self.pad, eval.device);
            let logits = model.forward(x, mask, eval.ctx);
            let argmax = logits.argmax(1).into_data();
            for (p, e) in argmax.iter::<i64>().zip(chunk) {
                let p = p as usize;
                correct += usize::from(p == e.example.label);
                let _ = writeln!(
                    eval.predictions,
                    "{},{index},{},{p},{}",
                    eval.language, e.example.label, eval.intervened
                );
                index += 1;
            }
        }
        Ok(vec![correct as f64 / examples.len() as f64])
    }

    fn describe(scores: &[f64]) -> String {
        format!("accuracy {:.4}", scores[0])
    }
}
