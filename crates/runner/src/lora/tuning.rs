//! What every LoRA task shares: attaching the cell's adapters (with the neuron set's masked
//! `gate_proj` adapter), the training loop, test-time interventions, batching, the split of
//! parallel files and writing the cell's per-language results.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ablation::{LanguageSets, NeuronSet};
use anyhow::{Context, Result, bail};
use burn::module::AutodiffModule;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use models::{ForwardContext, LoraConfig, LoraInit};
use neurons::{ActivationStats, InterventionValue, intervention_context};

use crate::handoff::StudyOutputs;
use crate::harness::log::{EvalRecord, Outcome, RunLog};
use crate::harness::results::{RunResult, write_atomic};
use crate::lora::cell::LoraCell;
use crate::lora::spec::{LoraInitSpec, NeuronChoice};
use crate::training::fit::{Evaluation, Learner, Plan};
use crate::training::seeds::{Purpose, derive_seed, shuffled};

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
fn source_sets(
    cell: &LoraCell,
    grid_dir: &Path,
    log: &mut RunLog,
) -> Result<Option<(LanguageSets, PathBuf)>> {
    let path = match (&cell.neurons_study, &cell.neurons_file) {
        (Some(id), _) => {
            let outputs = StudyOutputs::of(grid_dir, id);
            let dir = outputs.dir();
            let study = cell.lora.neurons_from.as_deref().unwrap_or("?");
            // Another process may be running the study (two `grid run` on one grid, or a
            // `--cell` of each).
            if crate::harness::lock::is_held(dir) {
                log.line(&format!(
                    "waiting for study `{study}` (run {id}), which another process is running; \
                     its progress: {}",
                    dir.join("log.txt").display()
                ));
            }
            crate::harness::lock::wait_for(dir)?;
            let finished = RunResult::read(dir).is_some_and(|r| r.finished());
            if !finished {
                bail!(
                    "the neuron sets come from study `{study}` (run {id}), which has not \
                     finished; see {}",
                    dir.join("log.txt").display()
                );
            }
            outputs.neurons()
        }
        (None, Some(file)) => file.clone(),
        (None, None) => return Ok(None),
    };
    let sets = LanguageSets::read(&path)?;
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
pub struct Adapters {
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
    cell: &LoraCell,
    grid_dir: &Path,
    log: &mut RunLog,
    device: &B::Device,
) -> Result<(models::LlamaModel<B>, Adapters)> {
    let (n_layers, width) = (model.num_layers(), model.intermediate_size());
    let choice = &cell.neurons;
    let sets = source_sets(cell, grid_dir, log)?;
    if let Some((sets, source)) = &sets {
        crate::lora::cell::check_sets(cell, sets, source, (n_layers, width))?;
    }
    let trained_set = match (&sets, choice.languages.is_empty()) {
        (_, true) => None,
        (Some((sets, source)), false) => Some(choose_set(
            choice,
            cell.target.as_deref(),
            sets,
            source,
            (
                n_layers,
                width,
                derive_seed(cell.seed, Purpose::LoraRandomSet, 0),
            ),
        )?),
        (None, false) => bail!("neurons = {:?} needs neuron sets", choice.as_str()),
    };
    let mut targets: Vec<&str> = cell.lora.targets.iter().map(String::as_str).collect();
    if trained_set.is_some() && !targets.contains(&"gate_proj") {
        targets.push("gate_proj");
    }
    let config = LoraConfig {
        rank: cell.lora.rank,
        alpha: cell.lora.alpha(),
        init: match cell.lora.init {
            LoraInitSpec::Kaiming => LoraInit::Kaiming,
            LoraInitSpec::Normal => LoraInit::Normal { std: 0.01 },
        },
    };
    let model = model
        .with_lora(
            &targets,
            &config,
            trained_set.as_ref(),
            derive_seed(cell.seed, Purpose::LoraAdapters, 0),
            device,
        )
        .with_context(|| format!("neurons = {:?}", choice.as_str()))?;
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

/// A LoRA cell's training as the loop sees it: `n` examples in a seeded order per epoch, the
/// batch loss from the task family, no evaluation during training (every language is evaluated
/// once, after it).
struct AdapterLearner<'a, M, F> {
    n: usize,
    cell: &'a LoraCell,
    loss_of: F,
    model: std::marker::PhantomData<M>,
}

impl<B, M, F> Learner<B> for AdapterLearner<'_, M, F>
where
    B: AutodiffBackend,
    M: AutodiffModule<B> + Clone,
    F: Fn(&M, &[usize]) -> Tensor<B, 1>,
{
    type Model = M;

    fn train_len(&self) -> usize {
        self.n
    }

    fn describe(&self, plan: &Plan) -> String {
        let t = &self.cell.train;
        format!(
            "{} steps ({} per epoch) of {} x {}, warmup {}",
            plan.total,
            plan.steps_per_epoch,
            t.batch_size,
            t.grad_accum_steps.max(1),
            plan.warmup
        )
    }

    fn epoch_order(&self, epoch: usize) -> Vec<usize> {
        shuffled(self.n, self.cell.seed, Purpose::LoraDataOrder, epoch as u64)
    }

    fn batch_loss(
        &self,
        model: &M,
        batch: &[usize],
        _index: u64,
        _device: &B::Device,
    ) -> Result<Tensor<B, 1>> {
        Ok((self.loss_of)(model, batch))
    }

    fn evaluates(&self) -> bool {
        false
    }

    fn evaluate(
        &self,
        _model: &M::InnerModule,
        _log: &mut RunLog,
        _device: &B::Device,
    ) -> Result<Evaluation> {
        bail!("a LoRA cell is evaluated after training, not during it")
    }
}

/// Train `model` on `n` examples under the cell's settings through the one training loop
/// ([`crate::training::fit`]: AdamW with β₁ = `adam_beta1`, the linear warmup/decay schedule,
/// global-norm clipping, `grad_accum_steps`, a seeded shuffle per epoch, checkpoints in `dir`
/// and resumption from them). `loss_of` gives the mean loss of a batch of example indices; a
/// non-finite loss stops the run with an error. Returns the trained model for evaluation.
pub(crate) fn train_adapters<B: AutodiffBackend, M: AutodiffModule<B> + Clone>(
    model: M,
    n: usize,
    cell: &LoraCell,
    (dir, log, device): (&Path, &mut RunLog, &B::Device),
    loss_of: impl Fn(&M, &[usize]) -> Tensor<B, 1>,
) -> Result<(M::InnerModule, Trained)> {
    let learner = AdapterLearner {
        n,
        cell,
        loss_of,
        model: std::marker::PhantomData,
    };
    let done = crate::training::fit::fit(&learner, model, &cell.train, dir, log, device)?;
    let trained = Trained {
        steps: done.plan.total,
        steps_per_epoch: done.plan.steps_per_epoch,
        mean_loss: done.mean_loss,
        last_lr: done.last_lr,
        seconds: done.seconds,
    };
    log.line(&format!(
        "trained in {:.0}s, mean loss {:.4}",
        trained.seconds, trained.mean_loss
    ));
    Ok((done.model, trained))
}

/// The cell's test-time intervention (`lora.intervention`), with the study's statistics for
/// `mean`.
pub(crate) struct Intervention {
    value: InterventionValue,
    stats: Option<ActivationStats>,
}

impl Intervention {
    /// The cell's intervention, or `None` for `intervention = "none"`.
    pub(crate) fn of(cell: &LoraCell, grid_dir: &Path) -> Result<Option<Self>> {
        let Some(value) = cell.lora.intervention.value().cloned() else {
            return Ok(None);
        };
        let stats = match (&value, &cell.neurons_study) {
            (v, Some(id)) if v.needs_statistics() => Some(study_statistics(grid_dir, id)?),
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
        resolved: BTreeMap::new(),
    })
}

/// The cell's part of one file's parallel examples: with `task.split`, the training part (the
/// first `split` fraction, rounded down as Mondal et al.'s `int(len · 0.8)`) or the evaluation
/// part (the rest); then at most `max_train_examples` / `max_eval_examples` (0: all).
pub(crate) fn cell_part<T>(examples: &mut Vec<T>, cell: &LoraCell, train: bool) {
    if let Some(f) = cell.task.split {
        let cut = (examples.len() as f64 * f) as usize;
        if train {
            examples.truncate(cut);
        } else {
            examples.drain(..cut);
        }
    }
    let t = &cell.train;
    let max = if train {
        t.max_train_examples
    } else {
        t.max_eval_examples
    };
    if max > 0 {
        examples.truncate(max);
    }
}

/// The statistics a study cell used (for mean interventions): the file of the grid's
/// `statistics/` that its `statistics.name` names.
fn study_statistics(grid_dir: &Path, study_run: &str) -> Result<ActivationStats> {
    let path = StudyOutputs::of(grid_dir, study_run)
        .statistics(grid_dir)
        .context("a mean intervention needs the study's statistics")?;
    Ok(ActivationStats::load(&path)?)
}
