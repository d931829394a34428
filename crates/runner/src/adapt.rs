//! One fine-tuning cell: neuron-specific LoRA on a decoder classifier, trained on one language
//! and evaluated on others (Mondal et al.'s zero-shot cross-lingual protocol). Generative QA
//! cells (`format = "xquad"`) share the adapters, the training loop and the interventions of
//! this module and are described in [`crate::generative`].
//!
//! 1. **Data.** The task's training file and this cell's evaluation files are read
//!    ([`read_task`]); each input is `text` or `text <eos> text_pair` (the tokenizer's EOS token
//!    as text, as Mondal et al.'s `premise {eos} hypothesis`), tokenised and cut to
//!    `max_seq_len` tokens. Mondal et al. drop the examples of 256 tokens or more instead of
//!    cutting them; cutting keeps every example of a small evaluation set.
//! 2. **Model.** The decoder with a fresh linear head (`score`, no bias, `N(0, 0.02²)`) on the
//!    last non-padding token (or, with `position = "last"`, the padded batch's last position
//!    as Mondal et al.'s XNLI code; the padding is the EOS token there too). The decoder is frozen;
//!    every `targets` linear of every layer gets an adapter, and a neuron set adds a `gate_proj`
//!    adapter whose update is masked to the set's neurons ([`models::LlamaModel::with_lora`]).
//!    The head and the adapters train.
//! 3. **Neuron sets** come from a study of the grid (its `neurons.json`) or a file. The cell's
//!    `neurons` value names one language, a union, `target` (the cell's evaluation language),
//!    or `random:` any of these: random neurons with the same per-layer counts.
//! 4. **Training.** AdamW ([`crate::train::AdamW`], β₁ = `adam_beta1`) under the linear
//!    warmup/decay schedule, global-norm clipping, `grad_accum_steps`, a seeded shuffle per
//!    epoch. There is no model selection: the zero-shot protocol has no target-language
//!    development set, so the model after the last step is evaluated.
//! 5. **Evaluation.** Accuracy per evaluation language, with the adapters merged into the
//!    weights. With `intervention`, each language is evaluated again with its own neurons set
//!    to zero, a constant or their mean (Mondal et al.'s test-time intervention, on the
//!    fine-tuned model). Accuracy is over all examples (Mondal et al. average per-batch
//!    accuracies with the last partial batch dropped).
//!
//! A killed cell starts again from its first step (the grid skips finished cells).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use ablation::{LanguageSets, NeuronSet};
use anyhow::{Context, Result, bail};
use burn::module::AutodiffModule;
use burn::optim::{GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use models::{DecoderTokenizer, ForwardContext, LoraConfig, LoraInit, TokenPosition};
use neurons::{ActivationStats, InterventionValue, intervention_context};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use crate::experiment::{TaskFormat, TaskSpec};
use crate::grid::{AdaptCell, NeuronChoice};
use crate::results::write_atomic;
use crate::run::{EvalRecord, Outcome, RunLog, derive_seed};
use crate::train::{AdamW, clip_global_norm, linear_schedule};

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
        TaskFormat::Xnli => crate::crosslingual::XNLI_LABELS.map(String::from).to_vec(),
        TaskFormat::Jsonl => task.classes.clone(),
        TaskFormat::Xquad => Vec::new(),
    }
}

/// Read `language`'s examples of a classification `task` from `path`, and how many were left
/// out by `drop_labels` (an `xquad` task is read by [`crate::crosslingual::read_squad_json`]).
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
        TaskFormat::Xnli => crate::crosslingual::read_xnli(path, Some(language))?
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
                let label_key = task.label.as_deref().expect("checked: jsonl has `label`");
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
                    text: field(task.text.as_deref().expect("checked: jsonl has `text`"))?,
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

/// Right-padded ids and the attention mask of some rows.
pub(crate) fn batch<B: Backend>(
    rows: &[&[u32]],
    pad: u32,
    device: &B::Device,
) -> (Tensor<B, 2, Int>, Tensor<B, 2>) {
    let width = rows.iter().map(|r| r.len()).max().unwrap_or(1).max(1);
    let mut ids = Vec::with_capacity(rows.len() * width);
    let mut mask = Vec::with_capacity(rows.len() * width);
    for r in rows {
        for k in 0..width {
            ids.push(r.get(k).copied().unwrap_or(pad) as i64);
            mask.push(if k < r.len() { 1.0f32 } else { 0.0 });
        }
    }
    (
        Tensor::<B, 1, Int>::from_ints(ids.as_slice(), device).reshape([rows.len(), width]),
        Tensor::<B, 1>::from_floats(mask.as_slice(), device).reshape([rows.len(), width]),
    )
}

/// The neuron sets of the cell's source: the study run's `neurons.json` or `lora.neurons_file`.
fn source_sets(cell: &AdaptCell, grid_dir: &Path) -> Result<Option<(LanguageSets, PathBuf)>> {
    let path = match (&cell.neurons_study, &cell.neurons_file) {
        (Some(id), _) => {
            let dir = grid_dir.join(id);
            let study = cell.lora.neurons_from.as_deref().unwrap_or("?");
            let finished = std::fs::read_to_string(dir.join("result.json"))
                .ok()
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                .is_some_and(|v| v["status"] == "finished");
            if !finished {
                bail!(
                    "the neuron sets come from study `{study}` (run {id}), which has not \
                     finished; see {}",
                    dir.join("log.txt").display()
                );
            }
            dir.join("neurons.json")
        }
        (None, Some(file)) => file.clone(),
        (None, None) => return Ok(None),
    };
    let sets = crate::study::read_language_sets(&path)?;
    Ok(Some((sets, path)))
}

/// The set a neuron choice stands for.
fn choose_set(
    choice: &NeuronChoice,
    target: Option<&str>,
    sets: &LanguageSets,
    source: &Path,
    (n_layers, width, seed): (usize, usize, u64),
) -> Result<NeuronSet> {
    let mut union = NeuronSet::default();
    for lang in choice.resolve(target) {
        let Some(set) = sets.sets.get(&lang) else {
            bail!(
                "{}: no neuron set for language {lang}; it has {}",
                source.display(),
                sets.sets.keys().cloned().collect::<Vec<_>>().join(", ")
            );
        };
        union = union.union(set);
    }
    if choice.random {
        union = union.random_like(n_layers, width, seed)?;
    }
    Ok(union)
}

/// The padding id of a decoder: its first EOS (Mondal et al. pad with EOS), else its
/// `pad_token_id`, else 0. Padded positions are masked, so only the attention mask matters.
pub(crate) fn pad_id(config: &models::DecoderConfig) -> u32 {
    config
        .eos_token_ids
        .first()
        .copied()
        .or(config.pad_token_id)
        .unwrap_or(0)
}

/// A cell's adapters: what was attached and the neuron sets they came from.
pub(crate) struct Adapters {
    /// The neurons the masked `gate_proj` adapter trains, if any.
    pub trained_set: Option<NeuronSet>,
    /// The language sets and their file, if the cell has a source.
    pub sets: Option<(LanguageSets, PathBuf)>,
    /// The decoder's layers.
    pub n_layers: usize,
    /// The decoder's FFN width.
    pub width: usize,
}

/// Freeze `model` and attach the cell's adapters: `lora.targets` in every layer, plus the
/// `gate_proj` adapter masked to the cell's neuron set.
pub(crate) fn attach_lora<B: Backend>(
    model: models::LlamaModel<B>,
    cell: &AdaptCell,
    grid_dir: &Path,
    log: &mut RunLog,
    device: &B::Device,
) -> Result<(models::LlamaModel<B>, Adapters)> {
    let (n_layers, width) = (model.num_layers(), model.intermediate_size());
    let choice = NeuronChoice::parse(&cell.neurons).map_err(anyhow::Error::msg)?;
    let sets = source_sets(cell, grid_dir)?;
    let trained_set = match (&sets, choice.languages.is_empty()) {
        (_, true) => None,
        (Some((sets, source)), false) => Some(choose_set(
            &choice,
            cell.target.as_deref(),
            sets,
            source,
            (n_layers, width, derive_seed(cell.seed, 7, 0)),
        )?),
        (None, false) => bail!("neurons = {:?} needs neuron sets", cell.neurons),
    };
    let mut targets: Vec<&str> = cell.lora.targets.iter().map(String::as_str).collect();
    if trained_set.is_some() && !targets.contains(&"gate_proj") {
        targets.push("gate_proj");
    }
    let config = LoraConfig {
        rank: cell.lora.rank,
        alpha: cell.lora.alpha(),
        init: match cell.lora.init.as_str() {
            "kaiming" => LoraInit::Kaiming,
            _ => LoraInit::Normal { std: 0.01 },
        },
    };
    let model = model
        .with_lora(
            &targets,
            &config,
            trained_set.as_ref(),
            derive_seed(cell.seed, 1, 0),
            device,
        )
        .with_context(|| format!("neurons = {:?}", cell.neurons))?;
    log.line(&format!(
        "LoRA r={} alpha={} on {}; {}",
        config.rank,
        config.alpha,
        targets.join(", "),
        match &trained_set {
            Some(s) => format!(
                "gate_proj restricted to {} neurons ({} layers with any)",
                s.len(),
                s.counts_per_layer(n_layers)
                    .iter()
                    .filter(|&&c| c > 0)
                    .count()
            ),
            None => "no neuron set".into(),
        }
    ));
    Ok((
        model,
        Adapters {
            trained_set,
            sets,
            n_layers,
            width,
        },
    ))
}

/// What a training loop did.
pub(crate) struct Trained {
    /// Optimiser steps.
    pub steps: usize,
    /// Optimiser steps per epoch.
    pub steps_per_epoch: usize,
    /// Mean training loss over the steps.
    pub mean_loss: f64,
    /// The last step's learning rate.
    pub last_lr: f64,
    /// Wall-clock seconds.
    pub seconds: f64,
}

/// Train `model` on `n` examples under the cell's settings: AdamW with β₁ = `adam_beta1`, the
/// linear warmup/decay schedule, global-norm clipping, `grad_accum_steps`, a seeded shuffle per
/// epoch. `loss_of` gives the mean loss of a batch of example indices; a non-finite loss stops
/// the run with an error.
pub(crate) fn train_adapters<B: AutodiffBackend, M: AutodiffModule<B>>(
    mut model: M,
    n: usize,
    cell: &AdaptCell,
    log: &mut RunLog,
    mut loss_of: impl FnMut(&M, &[usize]) -> Tensor<B, 1>,
) -> Result<(M, Trained)> {
    let t = &cell.train;
    let accum = t.grad_accum_steps.max(1);
    let (steps_per_epoch, total, warmup) = t.steps(n);
    log.line(&format!(
        "{total} steps ({steps_per_epoch} per epoch) of {} x {accum}, warmup {warmup}",
        t.batch_size
    ));
    let mut optimizer = AdamW::with_beta1(t.weight_decay, t.adam_beta1).init::<B, M>();
    let order_of = |epoch: usize| {
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut StdRng::seed_from_u64(derive_seed(
            cell.seed,
            3,
            epoch as u64,
        )));
        order
    };
    let started = Instant::now();
    let (mut epoch, mut cursor, mut order) = (0, 0, order_of(0));
    let mut loss_sum = 0.0;
    let mut lr = 0.0;
    for step in 0..total {
        lr = linear_schedule(t.learning_rate, step, warmup, total);
        let mut accumulator = burn::optim::GradientsAccumulator::<M>::new();
        let mut step_loss = 0.0;
        for _ in 0..accum {
            if cursor >= order.len() {
                epoch += 1;
                order = order_of(epoch);
                cursor = 0;
            }
            let end = (cursor + t.batch_size).min(order.len());
            let loss = loss_of(&model, &order[cursor..end]);
            cursor = end;
            let value = f64::from(loss.clone().into_scalar().elem::<f32>());
            if !value.is_finite() {
                bail!(
                    "step {step}: the training loss is {value} (learning rate {lr:.3e}); lower \
                     the learning rate"
                );
            }
            step_loss += value / accum as f64;
            let loss = if accum > 1 { loss / accum as f32 } else { loss };
            accumulator.accumulate(&model, GradientsParams::from_grads(loss.backward(), &model));
        }
        let mut grads = accumulator.grads();
        if t.max_grad_norm > 0.0 {
            clip_global_norm(&model, &mut grads, t.max_grad_norm);
        }
        model = optimizer.step(lr, model, grads);
        loss_sum += step_loss;
        log.progress(step + 1, total, step_loss, started);
    }
    let trained = Trained {
        steps: total,
        steps_per_epoch,
        mean_loss: loss_sum / total as f64,
        last_lr: lr,
        seconds: started.elapsed().as_secs_f64(),
    };
    log.line(&format!(
        "trained in {:.0}s, mean loss {:.4}",
        trained.seconds, trained.mean_loss
    ));
    Ok((model, trained))
}

/// The cell's test-time intervention (`lora.intervention`), with the study's statistics for
/// `mean`.
pub(crate) struct Intervention {
    value: InterventionValue,
    stats: Option<ActivationStats>,
}

impl Intervention {
    /// The cell's intervention, or `None` for `intervention = "none"`.
    pub(crate) fn of(cell: &AdaptCell, grid_dir: &Path) -> Result<Option<Self>> {
        let value = match cell.lora.intervention.as_str() {
            "none" => return Ok(None),
            v => InterventionValue::parse(v).context("checked when the grid was read")?,
        };
        let stats = match (&value, &cell.neurons_study) {
            (InterventionValue::Mean, Some(id)) => Some(study_statistics(grid_dir, id)?),
            _ => None,
        };
        Ok(Some(Self { value, stats }))
    }

    /// A forward context that replaces `lang`'s neurons, and how many there are.
    pub(crate) fn context<B: Backend>(
        &self,
        adapters: &Adapters,
        lang: &str,
        device: &B::Device,
    ) -> Result<(ForwardContext<B>, usize)> {
        let (sets, source) = adapters
            .sets
            .as_ref()
            .context("checked: an intervention has sets")?;
        let Some(set) = sets.sets.get(lang) else {
            bail!(
                "intervention on {lang}: {} has no neuron set for it; it has {}",
                source.display(),
                sets.sets.keys().cloned().collect::<Vec<_>>().join(", ")
            );
        };
        let ctx = intervention_context::<B>(
            set,
            adapters.n_layers,
            adapters.width,
            &self.value,
            self.stats.as_ref().map(|s| (s, lang)),
            device,
        )
        .with_context(|| format!("intervention on {lang}"))?;
        Ok((ctx, set.len()))
    }
}

/// Write the per-language table, the predictions and the trained set, record the final
/// evaluation and build the cell's outcome.
pub(crate) fn finish_cell(
    dir: &Path,
    log: &mut RunLog,
    (table, predictions): (&str, &str),
    adapters: &Adapters,
    trained: &Trained,
    main_metric: &str,
    mut metrics: BTreeMap<String, f64>,
) -> Result<Outcome> {
    metrics.insert("train_loss".into(), trained.mean_loss);
    metrics.insert(
        "trained_neurons".into(),
        adapters
            .trained_set
            .as_ref()
            .map_or(0.0, |s| s.len() as f64),
    );
    write_atomic(&dir.join("per_language.csv"), table.as_bytes())?;
    write_atomic(&dir.join("predictions.csv"), predictions.as_bytes())?;
    if let Some(set) = &adapters.trained_set {
        write_atomic(&dir.join("trained_neurons.json"), set.to_json().as_bytes())?;
    }
    log.record(&EvalRecord {
        step: trained.steps,
        epoch: trained.steps as f64 / trained.steps_per_epoch as f64,
        train_loss: trained.mean_loss,
        learning_rate: trained.last_lr,
        metrics: metrics.clone(),
        seconds: trained.seconds,
    })?;
    Ok(Outcome {
        main_metric: main_metric.into(),
        metrics: metrics.clone(),
        best_step: Some(trained.steps),
        final_metrics: metrics,
        steps: Some(trained.steps),
        ablation: Vec::new(),
    })
}

/// Fine-tune and evaluate one cell into `dir` (see the module docs); an `xquad` task runs
/// [`crate::generative::run_qa`].
pub fn run_adapt<B: AutodiffBackend>(
    cell: &AdaptCell,
    grid_dir: &Path,
    dir: &Path,
    log: &mut RunLog,
    device: &B::Device,
) -> Result<Outcome> {
    if cell.task.format == TaskFormat::Xquad {
        return crate::generative::run_qa::<B>(cell, grid_dir, dir, log, device);
    }
    let t = &cell.train;
    let classes = task_classes(&cell.task);
    let (checkpoint, tokenizer) = crate::study::open_decoder(&cell.model_dir, &cell.model_name)?;
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
    let position = match cell.lora.position.as_str() {
        "last" => TokenPosition::Last,
        _ => TokenPosition::LastNonPadding,
    };
    let (mut model, _) = checkpoint
        .load_classifier::<B>(
            classes.len(),
            position,
            derive_seed(cell.seed, 0, 0),
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
                cell.lora.intervention
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

/// Keep the training part (the first `split` fraction, rounded down as Mondal et al.'s
/// `int(len · 0.8)`) or the evaluation part (the rest) of parallel examples; `None` keeps all.
pub(crate) fn split_part<T>(examples: &mut Vec<T>, split: Option<f64>, train: bool) {
    if let Some(f) = split {
        let cut = (examples.len() as f64 * f) as usize;
        if train {
            examples.truncate(cut);
        } else {
            examples.drain(..cut);
        }
    }
}

/// The statistics a study cell used (for mean interventions): the file of the grid's
/// `statistics/` that its `statistics.name` names.
fn study_statistics(grid_dir: &Path, study_run: &str) -> Result<ActivationStats> {
    let pointer = grid_dir.join(study_run).join("statistics.name");
    let name = std::fs::read_to_string(&pointer).with_context(|| {
        format!(
            "a mean intervention needs the study's statistics; cannot read {}",
            pointer.display()
        )
    })?;
    Ok(ActivationStats::load(
        &grid_dir.join("statistics").join(name.trim()),
    )?)
}
