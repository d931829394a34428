//! The encoder fine-tuning cell ([`TrainCell`]): its expansion from `[grid]`, its checks (its
//! run, one learner per task family in one loop, is in [`super::kind`]).
//!
//! Order (outermost first): the (model, dataset) pairs — `grid.pairs` in file order, or every
//! model of `grid.model` (in order) with every dataset of `grid.dataset` (in order) —, then the
//! losses of `grid.loss` (or the pair's own `loss` list), then the training-setting axes of
//! `grid.train` (keys in alphabetical order, values in file order, the first key outermost),
//! then the seeds.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use super::spec::{
    CmpMode, DatasetFormat, DatasetSpec, LossSpec, RankingFiles, Sections, StepDropout, Task,
};
use crate::harness::experiment::{ExperimentFile, ModelKind, ModelSpec, TrainConfig};
use crate::harness::grid::{Cell, check_unique, kebab, names, train_axes, train_settings};

/// A training cell, resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainCell {
    /// The grid's name.
    pub grid: String,
    /// Model name.
    pub model_name: String,
    /// Dataset name.
    pub dataset_name: String,
    /// Loss name.
    pub loss_name: String,
    /// Seed of every random choice in the run.
    pub seed: u64,
    /// The model's checkpoint folder, resolved (not part of the run id, so a moved checkout
    /// keeps its results).
    pub model_dir: std::path::PathBuf,
    /// The dataset's folder, resolved (not part of the run id).
    pub dataset_dir: std::path::PathBuf,
    /// The model (path as written).
    pub model: ModelSpec,
    /// The dataset (path as written).
    pub dataset: DatasetSpec,
    /// The loss.
    pub loss: LossSpec,
    /// Training settings.
    pub train: TrainConfig,
    /// The ranking dataset's files, resolved (not part of the run id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ranking_files: Option<RankingFiles>,
}

/// The grid's (model, dataset, own losses) pairs: `pairs`, or `model` × `dataset`, each name
/// defined.
fn grid_pairs(file: &ExperimentFile, own: &Sections) -> Result<Vec<(String, String, Vec<String>)>> {
    let e = &file.experiment;
    let (g, a) = (&e.grid, &own.grid);
    let pairs: Vec<(String, String, Vec<String>)> = if !a.pairs.is_empty() {
        if !g.model.is_empty() || !a.dataset.is_empty() {
            bail!(
                "{}: use either `pairs` or `model` × `dataset`, not both",
                file.locate(&["grid", "pairs"])
            );
        }
        a.pairs
            .iter()
            .map(|p| (p.model.clone(), p.dataset.clone(), p.loss.clone()))
            .collect()
    } else {
        for (axis, values) in [("model", &g.model), ("dataset", &a.dataset)] {
            if values.is_empty() {
                bail!(
                    "{}: the grid needs at least one {axis} (or `pairs`)",
                    file.locate(&["grid"])
                );
            }
        }
        g.model
            .iter()
            .flat_map(|m| {
                a.dataset
                    .iter()
                    .map(move |d| (m.clone(), d.clone(), Vec::new()))
            })
            .collect()
    };
    for (i, (m, d, _)) in pairs.iter().enumerate() {
        let (mkey, dkey) = if a.pairs.is_empty() {
            (
                vec!["grid".to_owned(), "model".to_owned()],
                vec!["grid".to_owned(), "dataset".to_owned()],
            )
        } else {
            let p = vec!["grid".to_owned(), "pairs".to_owned(), i.to_string()];
            (p.clone(), p)
        };
        if !e.models.contains_key(m) {
            bail!(
                "{}: unknown model `{m}`; the file defines {}",
                file.locate(&mkey.iter().map(String::as_str).collect::<Vec<_>>()),
                names(e.models.keys())
            );
        }
        if !own.datasets.contains_key(d) {
            bail!(
                "{}: unknown dataset `{d}`; the file defines {}",
                file.locate(&dkey.iter().map(String::as_str).collect::<Vec<_>>()),
                names(own.datasets.keys())
            );
        }
    }

    Ok(pairs)
}

/// The settings of every dataset the pairs use: its own checks and its `labels`.
fn check_datasets(
    file: &ExperimentFile,
    own: &Sections,
    pairs: &[(String, String, Vec<String>)],
) -> Result<()> {
    let mut used: Vec<&String> = pairs.iter().map(|p| &p.1).collect();
    used.dedup();
    for name in used {
        let d = &own.datasets[name];
        check_dataset_spec(d)
            .map_err(|msg| anyhow::anyhow!("{}: {msg}", file.locate(&["datasets", name])))?;
        if let Some(labels) = &d.labels {
            let problem = match (d.task, labels.len()) {
                (Task::Regression, _) => {
                    Some("a regression dataset has no classes; leave `labels` out".to_owned())
                }
                (_, 0 | 1) => Some(format!(
                    "labels = {labels:?} names {} class(es); a classification dataset needs at \
                     least 2, in label order",
                    labels.len()
                )),
                _ => labels
                    .iter()
                    .enumerate()
                    .find(|(i, l)| labels[..*i].contains(l))
                    .map(|(_, l)| format!("labels names class {l:?} twice")),
            };
            if let Some(problem) = problem {
                bail!("{}: {problem}", file.locate(&["datasets", name, "labels"]));
            }
        }
    }

    Ok(())
}

/// The losses (`baseline` predefined), each checked, and the grid's loss names, each defined
/// (the pairs' own too).
fn grid_losses(
    file: &ExperimentFile,
    own: &Sections,
    pairs: &[(String, String, Vec<String>)],
) -> Result<(BTreeMap<String, LossSpec>, Vec<String>)> {
    let a = &own.grid;
    let mut losses = own.losses.clone();
    if let Some(spec) = losses.get("baseline")
        && !matches!(spec, LossSpec::Baseline { dropout: None })
    {
        bail!(
            "{}: `baseline` is predefined as the plain task loss; name this loss otherwise",
            file.locate(&["losses", "baseline"])
        );
    }
    losses.insert("baseline".into(), LossSpec::Baseline { dropout: None });
    for (name, spec) in &losses {
        check_loss(spec)
            .map_err(|msg| anyhow::anyhow!("{}: {msg}", file.locate(&["losses", name])))?;
    }
    let loss_names: Vec<String> = if a.loss.is_empty() {
        vec!["baseline".into()]
    } else {
        a.loss.clone()
    };
    let check_names = |names_: &[String], key: &[&str]| -> Result<()> {
        for name in names_ {
            if !losses.contains_key(name) {
                bail!(
                    "{}: unknown loss `{name}`; defined: {}",
                    file.locate(key),
                    names(losses.keys())
                );
            }
        }
        Ok(())
    };
    check_names(&loss_names, &["grid", "loss"])?;
    for (i, (_, _, own)) in pairs.iter().enumerate() {
        check_names(own, &["grid", "pairs", &i.to_string(), "loss"])?;
    }
    Ok((losses, loss_names))
}

/// A loss that the dataset cannot take (view comparison in evaluation without labels, crops of
/// inputs without segments) is an error naming the loss.
fn check_loss_fits(
    file: &ExperimentFile,
    (loss_name, loss): (&str, &LossSpec),
    (dataset_name, dataset): (&str, &DatasetSpec),
) -> Result<()> {
    if let LossSpec::Comparative {
        cmp_in_eval: true, ..
    } = loss
        && !matches!(dataset.task, Task::Classification | Task::Regression)
    {
        bail!(
            "{}: cmp_in_eval compares the views' losses on labelled evaluation examples, \
             which classification and regression have; dataset `{dataset_name}` is {}",
            file.locate(&["losses", loss_name]),
            kebab(&dataset.task)
        );
    }
    if let LossSpec::Comparative { n_crop, .. } = loss
        && *n_crop > 0
        && !matches!(
            dataset.format,
            DatasetFormat::Hotpot | DatasetFormat::Ranking
        )
    {
        bail!(
            "{}: n_crop = {n_crop} drops input segments, but dataset `{dataset_name}` \
             ({}) has none; crops apply to HotpotQA paragraphs and ranking candidates",
            file.locate(&["losses", loss_name]),
            kebab(&dataset.format)
        );
    }
    Ok(())
}

/// The loss as its cells record it: a loss without dropout views records the dropout its steps
/// run with (the file's, or the task's official one).
fn recorded_loss(loss: &LossSpec, dataset: &DatasetSpec) -> LossSpec {
    // A loss without dropout views records the dropout its steps run with: the
    // file's, or the task's official one.
    let mut loss = loss.clone();
    match &mut loss {
        LossSpec::Baseline { dropout: d @ None } => {
            *d = StepDropout::baseline_default(dataset.format);
        }
        LossSpec::Comparative {
            n_drop: 0,
            n_crop: 1..,
            dropout: d @ None,
            ..
        } => *d = StepDropout::crop_only_default(dataset.format),
        _ => {}
    }
    loss
}

/// The training cells of `file`, in the order of the module docs. Names that the grid uses but
/// the file does not define, empty axes, unknown settings and out-of-range values are errors
/// naming file, line and key.
pub fn expand(file: &ExperimentFile, own: &Sections) -> Result<Vec<Cell<TrainCell>>> {
    let e = &file.experiment;
    let g = &e.grid;
    let pairs = grid_pairs(file, own)?;
    check_datasets(file, own, &pairs)?;
    let (losses, loss_names) = grid_losses(file, own, &pairs)?;
    let seeds = g.seeds(file)?;

    let axes = train_axes(file)?;

    let mut cells = Vec::new();
    // max_seq_len above what a model's positions allow is capped (and said once).
    let mut limits = BTreeMap::new();
    let mut warned = std::collections::BTreeSet::new();
    for (model_name, dataset_name, own_losses) in &pairs {
        let model = &e.models[model_name];
        if model.kind != ModelKind::Encoder {
            bail!(
                "{}: model `{model_name}` has kind = \"{}\", but a grid of datasets fine-tunes \
                 encoders (kind = \"encoder\"); decoders go in grids of `study` or `task`",
                file.locate(&["models", model_name, "kind"]),
                kebab(&model.kind)
            );
        }
        let dataset = &own.datasets[dataset_name];
        let mut base = TrainConfig::default();
        base.apply(&e.train);
        base.apply(&dataset.train);
        base.apply(&model.train);
        let pair_losses = if own_losses.is_empty() {
            &loss_names
        } else {
            own_losses
        };
        for loss_name in pair_losses {
            check_loss_fits(
                file,
                (loss_name, &losses[loss_name]),
                (dataset_name, dataset),
            )?;
            let mut with_loss = base.clone();
            if let LossSpec::Comparative { train, .. } = &losses[loss_name] {
                with_loss.apply(train);
            }
            let loss = recorded_loss(&losses[loss_name], dataset);
            for (mut train, params) in train_settings(
                file,
                &axes,
                &with_loss,
                &format!("{model_name} × {dataset_name}"),
            )? {
                let model_dir = file.resolve(&model.path);
                let limit = *limits
                    .entry(model_dir.clone())
                    .or_insert_with(|| input_limit(&model_dir));
                if let Some((cap, positions)) = limit
                    && train.max_seq_len > cap
                {
                    if warned.insert((model_name.clone(), train.max_seq_len)) {
                        eprintln!(
                            "warning: {}: model `{model_name}` reads at most {cap} tokens \
                             (max_position_embeddings = {positions} in its config.json); \
                             max_seq_len = {} is capped at {cap}, and its runs record {cap}",
                            file.path.display(),
                            train.max_seq_len
                        );
                    }
                    train.max_seq_len = cap;
                }
                for &seed in &seeds {
                    let config = TrainCell {
                        grid: e.name.clone(),
                        model_name: model_name.clone(),
                        dataset_name: dataset_name.clone(),
                        loss_name: loss_name.clone(),
                        seed,
                        model_dir: model_dir.clone(),
                        dataset_dir: file.resolve(&dataset.path),
                        model: model.clone(),
                        dataset: dataset.clone(),
                        loss: loss.clone(),
                        train: train.clone(),
                        ranking_files: dataset
                            .ranking
                            .as_ref()
                            .map(|r| r.resolve(&file.resolve(&dataset.path), &file.artefacts)),
                    };
                    let mut params = params.clone();
                    params.insert("model".into(), model_name.clone());
                    params.insert("dataset".into(), dataset_name.clone());
                    params.insert("loss".into(), loss_name.clone());
                    params.insert("seed".into(), seed.to_string());
                    cells.push(Cell::new(cells.len(), params, config));
                }
            }
        }
    }
    check_unique(file, &cells)?;
    Ok(cells)
}

/// The longest input of the encoder in `dir` and its `max_position_embeddings`, when its
/// `config.json` reads (validation names the problem otherwise).
fn input_limit(dir: &Path) -> Option<(usize, usize)> {
    let config = models::EncoderConfig::from_file(dir.join("config.json")).ok()?;
    Some((config.max_input_len(), config.max_position_embeddings))
}

/// A dataset's format, task and task settings agree.
fn check_dataset_spec(d: &DatasetSpec) -> Result<(), String> {
    use {DatasetFormat as F, Task as T};
    let expected: &[T] = match d.format {
        F::Squad | F::Hotpot => &[T::ExtractiveQa],
        F::Ranking => &[T::Ranking],
        F::Glue | F::Jsonl | F::Csv | F::Parquet => &[T::Classification, T::Regression],
    };
    if !expected.contains(&d.task) {
        return Err(format!(
            "format = \"{}\" holds task = {}, not \"{}\"",
            kebab(&d.format),
            expected
                .iter()
                .map(|t| format!("\"{}\"", kebab(t)))
                .collect::<Vec<_>>()
                .join(" or "),
            kebab(&d.task)
        ));
    }
    if d.qa.is_some() && d.task != T::ExtractiveQa {
        return Err("`qa = { … }` belongs to extractive-QA datasets (squad, hotpot)".into());
    }
    if let Some(qa) = &d.qa
        && (qa.n_best == 0 || qa.max_answer_length == 0)
    {
        return Err("qa.n_best and qa.max_answer_length must be at least 1".into());
    }
    if let Some(qa) = &d.qa
        && d.format != F::Hotpot
    {
        for (key, set) in [
            ("max_p_num", qa.max_p_num.is_some()),
            ("max_q_len", qa.max_q_len.is_some()),
            ("max_p_len", qa.max_p_len.is_some()),
            ("layout", qa.layout.is_some()),
        ] {
            if set {
                return Err(format!(
                    "qa.{key} belongs to HotpotQA's questions and paragraphs (format = \"hotpot\")"
                ));
            }
        }
    }
    if let Some(qa) = &d.qa
        && (qa.max_q_len == Some(0) || qa.max_p_len == Some(0) || qa.max_p_num == Some(0))
    {
        return Err("qa.max_q_len, qa.max_p_len and qa.max_p_num must be at least 1".into());
    }
    match (&d.ranking, d.format) {
        (None, F::Ranking) => Err(
            "format = \"ranking\" needs `ranking = { eval_qrels = …, eval_candidates = … }`".into(),
        ),
        (Some(_), f) if f != F::Ranking => {
            Err("`ranking = { … }` belongs to format = \"ranking\"".into())
        }
        (Some(r), _) => {
            if r.group_size < 2 {
                return Err(format!(
                    "ranking.group_size must be at least 2 (a relevant passage and a negative), \
                     got {}",
                    r.group_size
                ));
            }
            if r.max_candidates == 0 {
                return Err("ranking.max_candidates must be at least 1".into());
            }
            match (&r.train_triples, &r.train_candidates, &r.train_qrels) {
                (Some(_), None, None) | (None, Some(_), Some(_)) => Ok(()),
                _ => Err("ranking: name `train_triples`, or `train_candidates` with \
                          `train_qrels`"
                    .into()),
            }
        }
        _ => Ok(()),
    }
}

fn check_loss(spec: &LossSpec) -> Result<(), String> {
    let LossSpec::Comparative {
        n_drop,
        n_crop,
        p,
        mode,
        primary,
        weight,
        temperature,
        dropout,
        cr_schedule,
        ..
    } = spec
    else {
        return Ok(());
    };
    if *cr_schedule && *mode != CmpMode::Weighted {
        return Err(
            "cr_schedule belongs to mode = \"weighted\" (it schedules the regulariser \
                    added to the primary loss)"
                .into(),
        );
    }
    if dropout.is_some() && *n_drop > 0 {
        return Err(format!(
            "dropout = \"off\" | \"ordinary\" belongs to losses without dropout views (the \
             baseline, or a crop-only loss with n_drop = 0); this one has n_drop = {n_drop}"
        ));
    }
    if *n_drop == 0 && *n_crop == 0 {
        return Err("a comparative loss needs n_drop > 0 or n_crop > 0".into());
    }
    if let Some(p) = p
        && !(0.0..1.0).contains(p)
    {
        return Err(format!("p must be in [0, 1), got {p}"));
    }
    if temperature.is_nan() || *temperature <= 0.0 {
        return Err(format!("temperature must be > 0, got {temperature}"));
    }
    match mode {
        CmpMode::Weighted if primary.is_none() || weight.is_none() => {
            Err("mode = \"weighted\" needs `primary` and `weight`".into())
        }
        CmpMode::Comparative if primary.is_some() || weight.is_some() => Err(
            "`primary` and `weight` belong to mode = \"weighted\" (the comparative mode has none)"
                .into(),
        ),
        _ => Ok(()),
    }
}

pub(crate) fn check_encoder(c: &TrainCell) -> Result<()> {
    models::check_encoder_dir(&c.model_dir).with_context(|| format!("model `{}`", c.model_name))?;
    // The weights' headers, once per model: a truncated or corrupt file stops the grid here.
    models::weights::header_shapes(&c.model_dir)
        .with_context(|| format!("model `{}`", c.model_name))?;
    let config = models::EncoderConfig::from_file(c.model_dir.join("config.json"))
        .with_context(|| format!("model `{}`", c.model_name))?;
    models::TextTokenizer::from_dir(&c.model_dir, &config)
        .with_context(|| format!("model `{}`: tokenizer", c.model_name))?;
    Ok(())
}

/// `path`, a file of the cell's dataset, exists.
pub(crate) fn dataset_file(c: &TrainCell, path: &Path) -> Result<()> {
    crate::data::expect_file("file", path).with_context(|| format!("dataset `{}`", c.dataset_name))
}
