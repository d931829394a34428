//! Cross-lingual classification cells (XNLI, JSONL topic tasks): a decoder with a linear head
//! on one token, its adapters from [`super::tuning`]; see [`crate::lora`] for the protocol.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::module::AutodiffModule;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use models::{DecoderTokenizer, ForwardContext, TokenPosition};

use crate::harness::experiment::{ClassifierPosition, TaskFormat, TaskSpec};
use crate::harness::log::{Outcome, RunLog};
use crate::lora::cell::LoraCell;
use crate::training::seeds::{Purpose, derive_seed};

use super::tuning::{
    Intervention, attach_lora, batch, finish_cell, pad_id, split_part, train_adapters,
};

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
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
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

/// Fine-tune and evaluate one classification cell into `dir` (see [`crate::lora`]).
pub fn run_classifier<B: AutodiffBackend>(
    cell: &LoraCell,
    grid_dir: &Path,
    dir: &Path,
    log: &mut RunLog,
    device: &B::Device,
) -> Result<Outcome> {
    let t = &cell.train;
    let classes = task_classes(&cell.task);
    let (checkpoint, tokenizer) = models::DecoderCheckpoint::open_with_tokenizer(&cell.model_dir)
        .with_context(|| format!("model `{}`", cell.model_name))?;
    let pad = pad_id(&checkpoint.config);

    // Data.
    let (train_lang, train_path) = &cell.train_file;
    let (mut train, dropped) = read_task(&cell.task, train_lang, train_path)?;
    split_part(&mut train, cell.task.split, true);
    if t.max_train_examples > 0 {
        train.truncate(t.max_train_examples);
    }
    let train_ids = encode_examples(&tokenizer, &train, t.max_seq_len)?;
    log.line(&format!(
        "train {train_lang}: {} examples ({dropped} left out by drop_labels), {} classes",
        train.len(),
        classes.len()
    ));
    let mut evals = Vec::new();
    for (lang, path) in &cell.eval_files {
        let (mut examples, dropped) = read_task(&cell.task, lang, path)?;
        split_part(&mut examples, cell.task.split, false);
        if t.max_eval_examples > 0 {
            examples.truncate(t.max_eval_examples);
        }
        let ids = encode_examples(&tokenizer, &examples, t.max_seq_len)?;
        log.line(&format!(
            "eval {lang}: {} examples ({dropped} left out)",
            examples.len()
        ));
        evals.push((lang.clone(), examples, ids));
    }

    // Model and adapters.
    let position = match cell.lora.position {
        ClassifierPosition::Last => TokenPosition::Last,
        ClassifierPosition::LastNonPadding => TokenPosition::LastNonPadding,
    };
    let (mut model, _) = checkpoint
        .load_classifier::<B>(
            classes.len(),
            position,
            derive_seed(cell.seed, Purpose::Head, 0),
            device,
        )
        .with_context(|| format!("model `{}`", cell.model_name))?;
    let adapters;
    (model.model, adapters) = attach_lora(model.model, cell, grid_dir, log, device)?;

    // Training.
    let (model, trained) = train_adapters(model, train.len(), cell, log, |model, indices| {
        let rows: Vec<&[u32]> = indices.iter().map(|&i| train_ids[i].as_slice()).collect();
        let labels: Vec<i64> = indices.iter().map(|&i| train[i].label as i64).collect();
        let (ids, mask) = batch::<B>(&rows, pad, device);
        let labels = Tensor::<B, 1, Int>::from_ints(labels.as_slice(), device);
        let logits = model.forward(ids, mask, &mut ForwardContext::eval());
        losses::cross_entropy(logits, labels).mean()
    })?;
    if t.save_model {
        models::save_lora(&model.model, &dir.join("adapter.safetensors"))?;
    }

    // Evaluation, adapters merged.
    let mut valid = model.valid();
    valid.model = valid.model.merge_lora();
    let intervention = Intervention::of(cell, grid_dir)?;
    let eval_batch = t.batch_size * 2;
    let mut metrics = BTreeMap::new();
    let mut table = String::from("language,examples,accuracy");
    if intervention.is_some() {
        table.push_str(",accuracy_intervened");
    }
    table.push('\n');
    let mut predictions = String::from("language,index,label,prediction,intervened\n");
    let mut accuracies = Vec::new();
    for (lang, examples, ids) in &evals {
        let clock = Instant::now();
        // One context per evaluation (an intervention's replacement tensors are built once).
        let predict = |ctx: &mut ForwardContext<B::InnerBackend>| -> Vec<usize> {
            let mut out = Vec::with_capacity(ids.len());
            for chunk in ids.chunks(eval_batch) {
                let rows: Vec<&[u32]> = chunk.iter().map(Vec::as_slice).collect();
                let (x, mask) = batch::<B::InnerBackend>(&rows, pad, device);
                let logits = valid.forward(x, mask, ctx);
                let argmax = logits.argmax(1).into_data();
                out.extend(argmax.iter::<i64>().map(|k| k as usize));
            }
            out
        };
        let accuracy = |pred: &[usize]| {
            pred.iter()
                .zip(examples)
                .filter(|(p, e)| **p == e.label)
                .count() as f64
                / examples.len() as f64
        };
        let pred = predict(&mut ForwardContext::eval());
        let acc = accuracy(&pred);
        accuracies.push(acc);
        metrics.insert(format!("accuracy/{lang}"), acc);
        for (i, (p, e)) in pred.iter().zip(examples).enumerate() {
            predictions.push_str(&format!("{lang},{i},{},{},false\n", e.label, p));
        }
        table.push_str(&format!("{lang},{},{acc:.6}", examples.len()));
        let mut line = format!("{lang}: accuracy {acc:.4}");
        if let Some(intervention) = &intervention {
            let (mut ctx, size) = intervention.context(&adapters, lang, device)?;
            let pred_i = predict(&mut ctx);
            let acc_i = accuracy(&pred_i);
            metrics.insert(format!("accuracy_intervened/{lang}"), acc_i);
            for (i, (p, e)) in pred_i.iter().zip(examples).enumerate() {
                predictions.push_str(&format!("{lang},{i},{},{},true\n", e.label, p));
            }
            table.push_str(&format!(",{acc_i:.6}"));
            line.push_str(&format!(
                ", with {size} neurons {:?}: {acc_i:.4}",
                cell.lora.intervention.as_str()
            ));
        }
        table.push('\n');
        log.line(&format!(
            "{line} ({} examples, {:.0}s)",
            examples.len(),
            clock.elapsed().as_secs_f64()
        ));
    }
    let mean = accuracies.iter().sum::<f64>() / accuracies.len().max(1) as f64;
    metrics.insert("accuracy".into(), mean);
    finish_cell(
        dir,
        log,
        (&table, &predictions),
        &adapters,
        &trained,
        "accuracy",
        metrics,
    )
}
