//! The LoRA fine-tuning cell ([`LoraCell`]): its expansion from `[grid]` (with `grid.neurons`,
//! [`super::spec::NeuronChoice`]), its checks (its run is in
//! [`super::kind`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ablation::LanguageSets;
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use super::spec::{LoraSpec, NeuronChoice, Sections, TaskFormat, TaskSpec};
use crate::harness::experiment::{ExperimentFile, ModelSpec, TrainConfig, refuse_unread};
use crate::harness::grid::{Cell, check_decoder_models, names, train_axes, train_settings};

/// A LoRA fine-tuning cell, resolved: train on the task's training language, evaluate on
/// `eval_files`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraCell {
    /// The grid's name.
    pub grid: String,
    /// Model name.
    pub model_name: String,
    /// Task name.
    pub task_name: String,
    /// The neuron sets, as `grid.neurons` gives them.
    pub neurons: NeuronChoice,
    /// For a spec with `target`: the one evaluation language it stands for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Seed of the head, the adapters, the data order and a random set.
    pub seed: u64,
    /// The run id of the study cell whose sets are used (`lora.neurons_from`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub neurons_study: Option<String>,
    /// The model's checkpoint, resolved (not part of the run id).
    pub model_dir: PathBuf,
    /// The training language and file, resolved (not part of the run id).
    pub train_file: (String, PathBuf),
    /// The evaluation languages of this cell and their files, resolved (not part of the run id).
    pub eval_files: BTreeMap<String, PathBuf>,
    /// `lora.neurons_file`, resolved (not part of the run id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub neurons_file: Option<PathBuf>,
    /// The model (path as written).
    pub model: ModelSpec,
    /// The task (paths as written).
    pub task: TaskSpec,
    /// The adapter, with the model's rank and α.
    pub lora: LoraSpec,
    /// Training settings.
    pub train: TrainConfig,
}

/// The grid's neuron studies, as the LoRA cells see them (the registry expands them first).
pub struct GridStudies<'a> {
    /// How many cells come before the LoRA cells (the studies'): the first LoRA cell's number.
    pub first: usize,
    /// `grid.study`.
    pub in_grid: &'a [String],
    /// The studies the file defines.
    pub defined: Vec<String>,
    /// `run(model, study)`: the run id of the grid's cell of that study of that model.
    pub run: &'a dyn Fn(&str, &str) -> Option<String>,
}

/// The training settings a LoRA cell does not read: the encoder's (length grouping, the view
/// budget, ablation and dropout evaluations) and `eval_every` (a LoRA cell evaluates every
/// language once, after training).
pub const UNREAD_TRAIN: [&str; 5] = [
    "group_by_length",
    "view_budget_tokens",
    "ablation_rates",
    "eval_dropout_powers",
    "eval_every",
];

/// A training setting that LoRA cells do not read, set where only they read it (a LoRA grid's
/// `[train]`, its models' and tasks' settings, its `train` axes), is an error naming its line.
fn refuse_unread_settings(file: &ExperimentFile, own: &Sections) -> Result<()> {
    let e = &file.experiment;
    let cells = "LoRA cells";
    refuse_unread(file, &["train"], &e.train.set_keys(), &UNREAD_TRAIN, cells)?;
    let axes: Vec<&str> = e.grid.train.keys().map(String::as_str).collect();
    refuse_unread(file, &["grid", "train"], &axes, &UNREAD_TRAIN, cells)?;
    for name in &e.grid.model {
        if let Some(m) = e.models.get(name) {
            let at = ["models", name.as_str(), "train"];
            refuse_unread(file, &at, &m.train.set_keys(), &UNREAD_TRAIN, cells)?;
        }
    }
    for name in &own.grid.task {
        if let Some(t) = own.tasks.get(name) {
            let at = ["tasks", name.as_str(), "settings"];
            refuse_unread(file, &at, &t.settings.set_keys(), &UNREAD_TRAIN, cells)?;
        }
    }
    Ok(())
}

/// The fine-tuning cells of `file`: every model × task × `grid.neurons` value (a value with
/// `target` once per evaluation language) × training-axis combination × seed, in that order
/// (outermost first), numbered from `studies.first` (the grid's studies come before them: their
/// sets feed these cells). `studies.run(model, study)` is the run id of the grid's study cell that
/// `lora.neurons_from` names for that model.
pub fn expand(
    file: &ExperimentFile,
    own: &Sections,
    studies: &GridStudies<'_>,
) -> Result<Vec<Cell<LoraCell>>> {
    let e = &file.experiment;
    let g = &e.grid;
    let mut cells = Vec::new();
    check_decoder_models(file, "LoRA fine-tuning tasks")?;
    for (i, name) in own.grid.task.iter().enumerate() {
        let Some(task) = own.tasks.get(name) else {
            bail!(
                "{}: unknown task `{name}`; the file defines {}",
                file.locate(&["grid", "task", &i.to_string()]),
                names(own.tasks.keys())
            );
        };
        check_task(file, name, task)?;
    }
    check_lora(file, own, studies)?;
    let choices: Vec<NeuronChoice> = if own.grid.neurons.is_empty() {
        vec![NeuronChoice::none()]
    } else {
        own.grid.neurons.clone()
    };
    for (i, choice) in choices.iter().enumerate() {
        if !choice.languages.is_empty()
            && own.lora.neurons_from.is_none()
            && own.lora.neurons_file.is_none()
        {
            bail!(
                "{}: {:?} needs neuron sets: set `neurons_from` (a study) or `neurons_file` in \
                 [lora]",
                file.locate(&["grid", "neurons", &i.to_string()]),
                choice.as_str()
            );
        }
    }
    refuse_unread_settings(file, own)?;
    let axes = train_axes(file)?;
    let seeds = g.seeds(file)?;
    for model_name in &g.model {
        let model = &e.models[model_name];
        // The sets of `neurons_from`: that study's cell for this model, first seed.
        let neurons_study = match &own.lora.neurons_from {
            Some(study) => Some((studies.run)(model_name, study).with_context(|| {
                format!(
                    "{}: the grid runs no study {study:?} of model `{model_name}`",
                    file.locate(&["lora", "neurons_from"])
                )
            })?),
            None => None,
        };
        for task_name in &own.grid.task {
            let task = &own.tasks[task_name];
            let mut base = TrainConfig::default();
            base.apply(&e.train);
            base.apply(&model.train);
            base.apply(&task.settings);
            base.reset(&UNREAD_TRAIN);
            let mut lora = own.lora.clone();
            if let Some(m) = own.models.get(model_name) {
                m.lora.apply_to(&mut lora);
            }
            task.lora.apply_to(&mut lora);
            lora.alpha = Some(lora.alpha());
            let Some((train_lang, train_path)) = task.train.iter().next() else {
                bail!(
                    "{}: a task trains on one language",
                    file.locate(&["tasks", task_name, "train"])
                );
            };
            for choice in &choices {
                let targets: Vec<Option<&String>> = if choice.has_target() {
                    task.eval.keys().map(Some).collect()
                } else {
                    vec![None]
                };
                for target in targets {
                    for (train, params) in
                        train_settings(file, &axes, &base, &format!("{model_name} × {task_name}"))?
                    {
                        let eval_files: BTreeMap<String, std::path::PathBuf> = task
                            .eval
                            .iter()
                            .filter(|(lang, _)| target.is_none_or(|t| t == *lang))
                            .map(|(lang, p)| (lang.clone(), file.resolve(p)))
                            .collect();
                        for &seed in &seeds {
                            let config = LoraCell {
                                grid: e.name.clone(),
                                model_name: model_name.clone(),
                                task_name: task_name.clone(),
                                neurons: choice.clone(),
                                target: target.cloned(),
                                seed,
                                neurons_study: neurons_study.clone(),
                                model_dir: file.resolve(&model.path),
                                train_file: (train_lang.clone(), file.resolve(train_path)),
                                eval_files: eval_files.clone(),
                                neurons_file: lora.neurons_file.as_ref().map(|p| file.resolve(p)),
                                model: model.clone(),
                                task: task.clone(),
                                lora: lora.clone(),
                                train: train.clone(),
                            };
                            let mut params = params.clone();
                            params.insert("model".into(), model_name.clone());
                            params.insert("task".into(), task_name.clone());
                            params.insert("neurons".into(), choice.as_str().to_owned());
                            params.insert(
                                "eval".into(),
                                target.cloned().unwrap_or_else(|| "all".into()),
                            );
                            params.insert("seed".into(), seed.to_string());
                            cells.push(Cell::new(studies.first + cells.len(), params, config));
                        }
                    }
                }
            }
        }
    }
    Ok(cells)
}

/// Check a task's fields against its format, naming the file, line and key.
fn check_task(file: &ExperimentFile, name: &str, t: &TaskSpec) -> Result<()> {
    let at = |key: &str| file.locate(&["tasks", name, key]);
    if t.train.len() != 1 {
        bail!(
            "{}: the zero-shot protocol trains on one language: give exactly one language → \
             file, found {}",
            at("train"),
            t.train.len()
        );
    }
    if t.eval.is_empty() {
        bail!(
            "{}: a task needs at least one evaluation language → file",
            at("eval")
        );
    }
    match t.format {
        TaskFormat::Jsonl => {
            for (key, v) in [("text", &t.text), ("label", &t.label)] {
                if v.is_none() {
                    bail!(
                        "{}: format = \"jsonl\" needs `{key}` (the field's name)",
                        at("format")
                    );
                }
            }
            if t.classes.len() < 2 {
                bail!(
                    "{}: a classification task needs at least 2 classes, found {}",
                    at("classes"),
                    t.classes.len()
                );
            }
        }
        TaskFormat::Xnli | TaskFormat::Xquad => {
            let own = match t.format {
                TaskFormat::Xnli => "format = \"xnli\" (premise, hypothesis and label are XNLI's)",
                _ => "format = \"xquad\" (context, question and answers are SQuAD's)",
            };
            for (key, set) in [
                ("text", t.text.is_some()),
                ("text_pair", t.text_pair.is_some()),
                ("label", t.label.is_some()),
                ("label_map", !t.label_map.is_empty()),
                ("drop_labels", !t.drop_labels.is_empty()),
                (
                    "classes",
                    t.format == TaskFormat::Xquad && !t.classes.is_empty(),
                ),
            ] {
                if set {
                    bail!("{}: `{key}` does not apply to {own}", at(key));
                }
            }
            let xnli: Vec<String> = crate::data::crosslingual::XNLI_LABELS
                .map(String::from)
                .to_vec();
            if !t.classes.is_empty() && t.classes != xnli {
                bail!("{}: XNLI's classes are {}", at("classes"), xnli.join(", "));
            }
        }
    }
    if t.max_new_tokens.is_some() && t.format != TaskFormat::Xquad {
        bail!(
            "{}: `max_new_tokens` applies to format = \"xquad\" only",
            at("max_new_tokens")
        );
    }
    if t.max_new_tokens == Some(0) {
        bail!("{}: generate at least 1 token", at("max_new_tokens"));
    }
    if let Some(f) = t.split
        && !(f > 0.0 && f < 1.0)
    {
        bail!(
            "{}: expected a fraction strictly between 0 and 1 (the training part), got {f}",
            at("split")
        );
    }
    if let Some(targets) = &t.lora.targets {
        check_targets(file, &["tasks", name, "lora", "targets"], targets)?;
    }
    if t.lora.rank == Some(0) {
        bail!(
            "{}: the rank must be at least 1",
            file.locate(&["tasks", name, "lora", "rank"])
        );
    }
    let mut seen = std::collections::BTreeSet::new();
    for (i, c) in t.classes.iter().enumerate() {
        if !seen.insert(c) {
            bail!(
                "{}: class {c:?} appears twice",
                file.locate(&["tasks", name, "classes", &i.to_string()])
            );
        }
    }
    for (lang, map) in &t.label_map {
        for (raw, class) in map {
            if !t.classes.contains(class) {
                bail!(
                    "{}: {raw:?} maps to {class:?}, which is not one of the classes ({})",
                    file.locate(&["tasks", name, "label_map", lang, raw]),
                    t.classes.join(", ")
                );
            }
        }
    }
    Ok(())
}

/// Check LoRA target names at `key`.
fn check_targets(file: &ExperimentFile, key: &[&str], targets: &[String]) -> Result<()> {
    for (i, t) in targets.iter().enumerate() {
        if !models::LORA_TARGETS.contains(&t.as_str()) {
            let index = i.to_string();
            let mut at = key.to_vec();
            at.push(&index);
            bail!(
                "{}: {t:?} names no linear of a Llama layer; expected one of {}",
                file.locate(&at),
                models::LORA_TARGETS.join(", ")
            );
        }
    }
    Ok(())
}

/// Check `[lora]`, naming the file, line and key.
fn check_lora(file: &ExperimentFile, own: &Sections, studies: &GridStudies<'_>) -> Result<()> {
    let l = &own.lora;
    let at = |key: &str| file.locate(&["lora", key]);
    check_targets(file, &["lora", "targets"], &l.targets)?;
    if l.rank == 0 {
        bail!("{}: the rank must be at least 1", at("rank"));
    }
    if let Some(a) = l.alpha
        && !(a > 0.0 && a.is_finite())
    {
        bail!("{}: alpha must be a positive number, got {a}", at("alpha"));
    }
    for (m, spec) in &own.models {
        if let Some(targets) = &spec.lora.targets {
            check_targets(file, &["models", m, "lora", "targets"], targets)?;
        }
        if spec.lora.rank == Some(0) {
            bail!(
                "{}: the rank must be at least 1",
                file.locate(&["models", m, "lora", "rank"])
            );
        }
    }
    if l.neurons_from.is_some() && l.neurons_file.is_some() {
        bail!(
            "{}: give `neurons_from` or `neurons_file`, not both",
            at("neurons_file")
        );
    }
    if let Some(study) = &l.neurons_from
        && !studies.in_grid.contains(study)
    {
        bail!(
            "{}: {study:?} is not a study of this grid; add it to grid.study (defined: {})",
            at("neurons_from"),
            names(studies.defined.iter())
        );
    }
    match l.intervention.value() {
        None => {}
        Some(neurons::InterventionValue::OnMedian) => bail!(
            "{}: on_p50 is a study's intervention (Kojima et al. force units at the gate of a \
             model they do not fine-tune); use mean, mean_p<NN>, zero or a number here",
            at("intervention")
        ),
        Some(v) if v.needs_statistics() && l.neurons_from.is_none() => bail!(
            "{}: a mean or mean_p<NN> intervention needs the study's statistics: set \
             `neurons_from`",
            at("intervention")
        ),
        Some(_) if l.neurons_from.is_none() && l.neurons_file.is_none() => bail!(
            "{}: an intervention acts on the evaluation language's neurons: set `neurons_from` \
             or `neurons_file`",
            at("intervention")
        ),
        Some(_) => {}
    }
    Ok(())
}

/// The files a fine-tuning cell reads exist, and the model is a decoder with a tokenizer.
pub(crate) fn check_lora_inputs(a: &LoraCell) -> Result<()> {
    let (lang, path) = &a.train_file;
    if !path.is_file() {
        bail!(
            "task `{}`: no training file for language {lang}: {}",
            a.task_name,
            path.display()
        );
    }
    for (lang, path) in &a.eval_files {
        if !path.is_file() {
            bail!(
                "task `{}`: no evaluation file for language {lang}: {}",
                a.task_name,
                path.display()
            );
        }
    }
    if let Some(p) = &a.neurons_file
        && !p.is_file()
    {
        bail!("[lora]: no such neuron-set file {}", p.display());
    }
    let checkpoint = models::DecoderCheckpoint::open(&a.model_dir)
        .with_context(|| format!("model `{}`", a.model_name))?;
    if checkpoint.tokenizer.is_none() {
        bail!(
            "model `{}`: no tokenizer in {} (fine-tuning tokenizes the task's text)",
            a.model_name,
            a.model_dir.display()
        );
    }
    if let Some(p) = &a.neurons_file {
        let sets = LanguageSets::read(p)?;
        let config = &checkpoint.config;
        check_sets(
            a,
            &sets,
            p,
            (config.num_hidden_layers, config.intermediate_size),
        )
        .with_context(|| format!("[lora] neurons_file, model `{}`", a.model_name))?;
    }
    Ok(())
}

/// The languages whose sets a cell uses: those of its `neurons` (with `target` resolved) and,
/// with a test-time intervention, every evaluation language.
fn languages_used(a: &LoraCell) -> Vec<String> {
    let mut used = a.neurons.resolve(a.target.as_deref());
    if a.lora.intervention.value().is_some() {
        used.extend(a.eval_files.keys().cloned());
    }
    used.sort();
    used.dedup();
    used
}

/// The neuron sets of `source` fit the model (every layer below its `n_layers`, every neuron
/// below its FFN `width`) and hold every language the cell uses: checked before a cell trains,
/// so a set that cannot apply fails in the dry run, not after hours of training.
pub(crate) fn check_sets(
    a: &LoraCell,
    sets: &LanguageSets,
    source: &Path,
    (n_layers, width): (usize, usize),
) -> Result<()> {
    for (lang, set) in &sets.sets {
        set.check(n_layers, width).with_context(|| {
            format!(
                "{}: the neuron set of language {lang} does not fit the model",
                source.display()
            )
        })?;
    }
    let missing: Vec<String> = languages_used(a)
        .into_iter()
        .filter(|l| !sets.sets.contains_key(l))
        .collect();
    if !missing.is_empty() {
        bail!(
            "{}: no neuron set for {} (neurons = {:?}{}); it has {}",
            source.display(),
            missing.join(", "),
            a.neurons.as_str(),
            if a.lora.intervention.value().is_some() {
                ", and an intervention on every evaluation language"
            } else {
                ""
            },
            sets.sets.keys().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    Ok(())
}
