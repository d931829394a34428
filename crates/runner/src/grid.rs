//! Grid expansion: from an experiment file to its cells, in a stable, documented order.
//!
//! Order (outermost first): the (model, dataset) pairs — `grid.pairs` in file order, or every
//! model of `grid.model` (in order) with every dataset of `grid.dataset` (in order) —, then the
//! losses of `grid.loss` (or the pair's own `loss` list), then the training-setting axes of `grid.train` (keys in alphabetical
//! order, values in file order, the first key outermost), then the seeds. Cell numbers (for
//! `--cell N`) count from 0 in this order.

use std::collections::BTreeMap;

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

use crate::experiment::{
    DatasetSpec, ExperimentFile, LoraSpec, LossSpec, ModelKind, ModelSpec, StudyMethod, StudySpec,
    TaskFormat, TaskSpec, TextSpec, TrainConfig, TrainOverrides, setting_from_value,
};

/// One cell of a grid, fully resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cell {
    /// Position in the expansion order.
    pub index: usize,
    /// Short hash of [`Cell::config`]: the run folder's name.
    pub run_id: String,
    /// The axis values of this cell (`model`, `dataset`, `loss`, `seed`, and each training
    /// setting that is an axis), as text for the results table.
    pub params: BTreeMap<String, String>,
    /// Everything the run depends on.
    pub config: CellConfig,
}

/// The resolved configuration of a cell, written as the run's `config.toml`: a training cell
/// or a neuron study.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
// One value per grid cell: boxing the larger variant would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum CellConfig {
    /// Fine-tuning a model on a dataset with a loss.
    Train(TrainCell),
    /// A neuron study of a decoder over multilingual text.
    Study(StudyCell),
    /// LoRA fine-tuning of a decoder on a cross-lingual task, evaluated per language.
    Adapt(AdaptCell),
}

impl CellConfig {
    /// The training cell, if this is one.
    pub fn as_train(&self) -> Option<&TrainCell> {
        match self {
            Self::Train(t) => Some(t),
            _ => None,
        }
    }

    /// The study cell, if this is one.
    pub fn as_study(&self) -> Option<&StudyCell> {
        match self {
            Self::Study(s) => Some(s),
            _ => None,
        }
    }

    /// The fine-tuning cell, if this is one.
    pub fn as_adapt(&self) -> Option<&AdaptCell> {
        match self {
            Self::Adapt(a) => Some(a),
            _ => None,
        }
    }

    /// The model's name.
    pub fn model_name(&self) -> &str {
        match self {
            Self::Train(t) => &t.model_name,
            Self::Study(s) => &s.model_name,
            Self::Adapt(a) => &a.model_name,
        }
    }

    /// The model's checkpoint, resolved.
    pub fn model_dir(&self) -> &std::path::Path {
        match self {
            Self::Train(t) => &t.model_dir,
            Self::Study(s) => &s.model_dir,
            Self::Adapt(a) => &a.model_dir,
        }
    }
}

/// A LoRA fine-tuning cell, resolved: train on the task's training language, evaluate on
/// `eval_files`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdaptCell {
    /// The grid's name.
    pub grid: String,
    /// Model name.
    pub model_name: String,
    /// Task name.
    pub task_name: String,
    /// The neuron-set spec as written in `grid.neurons` (see [`NeuronChoice`]).
    pub neurons: String,
    /// For a spec with `target`: the one evaluation language it stands for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Seed of the head, the adapters, the data order and a random set.
    pub seed: u64,
    /// The run id of the study cell whose sets are used (`lora.neurons_from`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub neurons_study: Option<String>,
    /// The model's checkpoint, resolved (not part of the run id).
    pub model_dir: std::path::PathBuf,
    /// The training language and file, resolved (not part of the run id).
    pub train_file: (String, std::path::PathBuf),
    /// The evaluation languages of this cell and their files, resolved (not part of the run id).
    pub eval_files: BTreeMap<String, std::path::PathBuf>,
    /// `lora.neurons_file`, resolved (not part of the run id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub neurons_file: Option<std::path::PathBuf>,
    /// The model (path as written).
    pub model: ModelSpec,
    /// The task (paths as written).
    pub task: TaskSpec,
    /// The adapter, with the model's rank and α.
    pub lora: LoraSpec,
    /// Training settings.
    pub train: TrainConfig,
}

/// A parsed `grid.neurons` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeuronChoice {
    /// The union's languages (`target` included as written); empty for `none`.
    pub languages: Vec<String>,
    /// Random neurons with the union's per-layer counts.
    pub random: bool,
}

impl NeuronChoice {
    /// Parse `none`, `en`, `en+vi`, `target`, `en+target`, each optionally `random:`-prefixed.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (random, rest) = match text.strip_prefix("random:") {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        if rest == "none" {
            if random {
                return Err("`random:none` selects nothing; write `none`".into());
            }
            return Ok(Self {
                languages: Vec::new(),
                random: false,
            });
        }
        let languages: Vec<String> = rest.split('+').map(|l| l.trim().to_owned()).collect();
        if languages.iter().any(|l| {
            l.is_empty()
                || !l
                    .chars()
                    .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
        }) {
            return Err(format!(
                "{text:?}: expected none, a language, a union like en+vi, target, or one of \
                 these after `random:`"
            ));
        }
        Ok(Self { languages, random })
    }

    /// Whether the spec names the evaluation language.
    pub fn has_target(&self) -> bool {
        self.languages.iter().any(|l| l == "target")
    }

    /// The languages with `target` replaced.
    pub fn resolve(&self, target: Option<&str>) -> Vec<String> {
        self.languages
            .iter()
            .map(|l| match (l.as_str(), target) {
                ("target", Some(t)) => t.to_owned(),
                _ => l.clone(),
            })
            .collect()
    }
}

/// A neuron-study cell, resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StudyCell {
    /// The grid's name.
    pub grid: String,
    /// Model name.
    pub model_name: String,
    /// Study name.
    pub study_name: String,
    /// Seed of the random control.
    pub seed: u64,
    /// The model's checkpoint, resolved (not part of the run id).
    pub model_dir: std::path::PathBuf,
    /// Each language's files in text order, resolved (not part of the run id).
    pub files: BTreeMap<String, Vec<(String, std::path::PathBuf)>>,
    /// The neuron-set file of `method = "file"`, resolved (not part of the run id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub neurons_file: Option<std::path::PathBuf>,
    /// The study's statistics files, resolved (not part of the run id).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub statistics_files: Vec<std::path::PathBuf>,
    /// The model (path as written).
    pub model: ModelSpec,
    /// The study.
    pub study: StudySpec,
    /// The texts it reads (paths as written).
    pub texts: BTreeMap<String, TextSpec>,
}

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
}

/// Expand `file` into its cells. Names that the grid uses but the file does not define, empty
/// axes, unknown settings and out-of-range values are errors naming file, line and key.
pub fn expand(file: &ExperimentFile) -> Result<Vec<Cell>> {
    let e = &file.experiment;
    let g = &e.grid;
    if !g.task.is_empty() {
        return expand_adapt(file);
    }
    if !g.study.is_empty() {
        return expand_studies(file, false);
    }

    // (model, dataset) pairs.
    let pairs: Vec<(String, String, Vec<String>)> = if !g.pairs.is_empty() {
        if !g.model.is_empty() || !g.dataset.is_empty() {
            bail!(
                "{}: use either `pairs` or `model` × `dataset`, not both",
                file.locate(&["grid", "pairs"])
            );
        }
        g.pairs
            .iter()
            .map(|p| (p.model.clone(), p.dataset.clone(), p.loss.clone()))
            .collect()
    } else {
        for (axis, values) in [("model", &g.model), ("dataset", &g.dataset)] {
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
                g.dataset
                    .iter()
                    .map(move |d| (m.clone(), d.clone(), Vec::new()))
            })
            .collect()
    };
    for (i, (m, d, _)) in pairs.iter().enumerate() {
        let (mkey, dkey) = if g.pairs.is_empty() {
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
        if !e.datasets.contains_key(d) {
            bail!(
                "{}: unknown dataset `{d}`; the file defines {}",
                file.locate(&dkey.iter().map(String::as_str).collect::<Vec<_>>()),
                names(e.datasets.keys())
            );
        }
    }

    let mut used: Vec<&String> = pairs.iter().map(|p| &p.1).collect();
    used.dedup();
    for name in used {
        check_dataset_spec(&e.datasets[name])
            .map_err(|msg| anyhow::anyhow!("{}: {msg}", file.locate(&["datasets", name])))?;
    }

    // Losses.
    let mut losses = e.losses.clone();
    if let Some(spec) = losses.get("baseline")
        && *spec != LossSpec::Baseline
    {
        bail!(
            "{}: `baseline` is predefined as the plain task loss; name this loss otherwise",
            file.locate(&["losses", "baseline"])
        );
    }
    losses.insert("baseline".into(), LossSpec::Baseline);
    for (name, spec) in &losses {
        check_loss(spec)
            .map_err(|msg| anyhow::anyhow!("{}: {msg}", file.locate(&["losses", name])))?;
    }
    let loss_names: Vec<String> = if g.loss.is_empty() {
        vec!["baseline".into()]
    } else {
        g.loss.clone()
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
    let seeds = if g.seed.is_empty() {
        vec![1]
    } else {
        g.seed.clone()
    };

    let axes = train_axes(file)?;

    let mut cells = Vec::new();
    for (model_name, dataset_name, own_losses) in &pairs {
        let model = &e.models[model_name];
        let dataset = &e.datasets[dataset_name];
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
            if let LossSpec::Comparative { n_crop, .. } = &losses[loss_name]
                && *n_crop > 0
                && !matches!(
                    dataset.format,
                    crate::experiment::DatasetFormat::Hotpot
                        | crate::experiment::DatasetFormat::Ranking
                )
            {
                bail!(
                    "{}: n_crop = {n_crop} drops input segments, but dataset `{dataset_name}` \
                     ({}) has none; crops apply to HotpotQA paragraphs and ranking candidates",
                    file.locate(&["losses", loss_name]),
                    kebab(&dataset.format)
                );
            }
            let mut with_loss = base.clone();
            if let LossSpec::Comparative { train, .. } = &losses[loss_name] {
                with_loss.apply(train);
            }
            for combo in cartesian(&axes) {
                let mut train = with_loss.clone();
                let mut params = BTreeMap::new();
                for (key, (text, o)) in axes.iter().map(|a| &a.0).zip(&combo) {
                    train.apply(o);
                    params.insert(key.clone(), text.clone());
                }
                train.validate().map_err(|msg| {
                    anyhow::anyhow!(
                        "{}: cell {model_name} × {dataset_name}: {msg}",
                        file.path.display()
                    )
                })?;
                for &seed in &seeds {
                    let config = TrainCell {
                        grid: e.name.clone(),
                        model_name: model_name.clone(),
                        dataset_name: dataset_name.clone(),
                        loss_name: loss_name.clone(),
                        seed,
                        model_dir: file.resolve(&model.path),
                        dataset_dir: file.resolve(&dataset.path),
                        model: model.clone(),
                        dataset: dataset.clone(),
                        loss: losses[loss_name].clone(),
                        train: train.clone(),
                    };
                    let mut params = params.clone();
                    params.insert("model".into(), model_name.clone());
                    params.insert("dataset".into(), dataset_name.clone());
                    params.insert("loss".into(), loss_name.clone());
                    params.insert("seed".into(), seed.to_string());
                    let config = CellConfig::Train(config);
                    cells.push(Cell {
                        index: cells.len(),
                        run_id: run_id(&config),
                        params,
                        config,
                    });
                }
            }
        }
    }
    check_unique(file, &cells)?;
    Ok(cells)
}

/// Two cells with one run id: an axis repeats a value.
fn check_unique(file: &ExperimentFile, cells: &[Cell]) -> Result<()> {
    let mut seen = BTreeMap::new();
    for c in cells {
        if let Some(other) = seen.insert(c.run_id.clone(), c.index) {
            bail!(
                "{}: cells {other} and {} are the same run (an axis repeats a value)",
                file.path.display(),
                c.index
            );
        }
    }
    Ok(())
}

/// `grid.model` is not empty and names decoders of the file (`what` needs them).
fn check_decoder_models(file: &ExperimentFile, what: &str) -> Result<()> {
    let e = &file.experiment;
    if e.grid.model.is_empty() {
        bail!(
            "{}: the grid needs at least one model",
            file.locate(&["grid"])
        );
    }
    for (i, m) in e.grid.model.iter().enumerate() {
        let key = ["grid", "model", &i.to_string()];
        let Some(spec) = e.models.get(m) else {
            bail!(
                "{}: unknown model `{m}`; the file defines {}",
                file.locate(&key),
                names(e.models.keys())
            );
        };
        if spec.kind != ModelKind::Decoder {
            bail!(
                "{}: model `{m}` is an encoder; {what} need kind = \"decoder\"",
                file.locate(&key)
            );
        }
    }
    Ok(())
}

/// A training-setting axis: its key, and each value as text and as a setting.
type TrainAxis = (String, Vec<(String, TrainOverrides)>);

/// The training-setting axes of `grid.train`, each value checked as a setting on its own.
fn train_axes(file: &ExperimentFile) -> Result<Vec<TrainAxis>> {
    let mut axes = Vec::new();
    for (key, values) in &file.experiment.grid.train {
        let where_ = || file.locate(&["grid", "train", key]);
        let list = match values {
            toml::Value::Array(a) if !a.is_empty() => a,
            _ => bail!("{}: an axis is a non-empty list of values", where_()),
        };
        let mut parsed = Vec::new();
        for v in list {
            let o =
                setting_from_value(key, v).map_err(|err| anyhow::anyhow!("{}: {err}", where_()))?;
            parsed.push((v.to_string(), o));
        }
        axes.push((key.clone(), parsed));
    }
    Ok(axes)
}

/// Every combination of one value per axis, first axis outermost (one empty combination when
/// there are no axes).
fn cartesian<T: Clone>(axes: &[(String, Vec<T>)]) -> Vec<Vec<T>> {
    axes.iter().fold(vec![Vec::new()], |acc, (_, values)| {
        acc.iter()
            .flat_map(|prefix| {
                values.iter().map(move |v| {
                    let mut p = prefix.clone();
                    p.push(v.clone());
                    p
                })
            })
            .collect()
    })
}

/// A dataset's format, task and task settings agree.
fn check_dataset_spec(d: &DatasetSpec) -> Result<(), String> {
    use crate::experiment::{DatasetFormat as F, Task as T};
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
            if !crate::rerank::RANK_METRICS.contains(&r.metric.as_str()) {
                return Err(format!(
                    "ranking.metric = {:?}: expected one of {}",
                    r.metric,
                    crate::rerank::RANK_METRICS.join(", ")
                ));
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

/// The name an enum value has in experiment files.
fn kebab<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}

fn check_loss(spec: &LossSpec) -> Result<(), String> {
    use crate::experiment::CmpMode;
    let LossSpec::Comparative {
        n_drop,
        n_crop,
        p,
        mode,
        primary,
        weight,
        temperature,
        ..
    } = spec
    else {
        return Ok(());
    };
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

fn names<'a>(keys: impl Iterator<Item = &'a String>) -> String {
    let v: Vec<String> = keys.map(|k| format!("`{k}`")).collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// A 12-hex-digit FNV-1a hash of the cell's configuration (as TOML, paths as written; for
/// training cells without `checkpoints` and `save_model`).
pub fn run_id(config: &CellConfig) -> String {
    let mut config = config.clone();
    match &mut config {
        CellConfig::Train(t) => {
            t.model_dir = Default::default();
            t.dataset_dir = Default::default();
            // Settings that do not change the numbers do not change the run.
            t.train.checkpoints = true;
            t.train.save_model = false;
        }
        CellConfig::Study(s) => {
            s.model_dir = Default::default();
            s.files = Default::default();
            s.neurons_file = None;
            s.statistics_files = Vec::new();
        }
        CellConfig::Adapt(a) => {
            a.model_dir = Default::default();
            a.train_file.1 = Default::default();
            a.eval_files
                .values_mut()
                .for_each(|p| *p = Default::default());
            a.neurons_file = None;
        }
    }
    let text = toml::to_string(&config).expect("a cell config serialises");
    format!("{:012x}", crate::results::Fnv1a::of(text.as_bytes()) >> 16)
}

/// The cells of a neuron-study grid: every model of `grid.model` × every study of
/// `grid.study` × every seed, in that order (outermost first). `with_tasks`: the grid also
/// fine-tunes (its training axes belong to those cells).
fn expand_studies(file: &ExperimentFile, with_tasks: bool) -> Result<Vec<Cell>> {
    let e = &file.experiment;
    let g = &e.grid;
    for (axis, empty) in [
        ("dataset", g.dataset.is_empty()),
        ("pairs", g.pairs.is_empty()),
        ("loss", g.loss.is_empty()),
        ("train", g.train.is_empty() || with_tasks),
        ("neurons", g.neurons.is_empty() || with_tasks),
    ] {
        if !empty {
            bail!(
                "{}: a grid of neuron studies (`study`) has no `{axis}` axis; put training runs \
                 in another file",
                file.locate(&["grid", axis])
            );
        }
    }
    check_decoder_models(file, "neuron studies")?;
    for (i, name) in g.study.iter().enumerate() {
        let Some(study) = e.studies.get(name) else {
            bail!(
                "{}: unknown study `{name}`; the file defines {}",
                file.locate(&["grid", "study", &i.to_string()]),
                names(e.studies.keys())
            );
        };
        check_study(file, name, study)?;
    }
    // Beside fine-tuning cells a study runs once, with the first seed: the seeds are the
    // fine-tuning cells' (a study's seed only draws its random control).
    let seeds = match g.seed.first() {
        None => vec![1],
        Some(&first) if with_tasks => vec![first],
        Some(_) => g.seed.clone(),
    };
    let mut cells = Vec::new();
    for model_name in &g.model {
        for study_name in &g.study {
            let study = &e.studies[study_name];
            let texts: BTreeMap<String, TextSpec> = study
                .texts
                .iter()
                .map(|t| (t.clone(), e.texts[t].clone()))
                .collect();
            let mut files: BTreeMap<String, Vec<(String, std::path::PathBuf)>> = BTreeMap::new();
            for t in &study.texts {
                for (lang, path) in &e.texts[t].files {
                    if study.languages.is_empty() || study.languages.contains(lang) {
                        files
                            .entry(lang.clone())
                            .or_default()
                            .push((t.clone(), file.resolve(path)));
                    }
                }
            }
            for &seed in &seeds {
                let config = CellConfig::Study(StudyCell {
                    grid: e.name.clone(),
                    model_name: model_name.clone(),
                    study_name: study_name.clone(),
                    seed,
                    model_dir: file.resolve(&e.models[model_name].path),
                    files: files.clone(),
                    neurons_file: study.neurons.as_ref().map(|p| file.resolve(p)),
                    statistics_files: study.statistics.iter().map(|p| file.resolve(p)).collect(),
                    model: e.models[model_name].clone(),
                    study: study.clone(),
                    texts: texts.clone(),
                });
                let params = BTreeMap::from([
                    ("model".to_string(), model_name.clone()),
                    ("study".to_string(), study_name.clone()),
                    ("seed".to_string(), seed.to_string()),
                ]);
                cells.push(Cell {
                    index: cells.len(),
                    run_id: run_id(&config),
                    params,
                    config,
                });
            }
        }
    }
    Ok(cells)
}

/// Check a study's settings against its method, naming the file, line and key.
fn check_study(file: &ExperimentFile, name: &str, s: &StudySpec) -> Result<()> {
    let e = &file.experiment;
    let at = |key: &str| file.locate(&["studies", name, key]);
    if s.texts.is_empty() && s.method != StudyMethod::File {
        bail!("{}: a study needs at least one text", at("texts"));
    }
    let mut languages = std::collections::BTreeSet::new();
    for (i, t) in s.texts.iter().enumerate() {
        let Some(text) = e.texts.get(t) else {
            bail!(
                "{}: unknown text `{t}`; the file defines {}",
                file.locate(&["studies", name, "texts", &i.to_string()]),
                names(e.texts.keys())
            );
        };
        use crate::experiment::TextFileFormat;
        let needs_field = matches!(text.format, TextFileFormat::Jsonl | TextFileFormat::Parquet);
        if needs_field != text.field.is_some() {
            bail!(
                "{}: {}",
                file.locate(&["texts", t]),
                if needs_field {
                    "format jsonl and parquet need `field` (the text's key or column)"
                } else {
                    "`field` belongs to the jsonl and parquet formats"
                }
            );
        }
        if text.files.is_empty() {
            bail!(
                "{}: a text needs at least one language file",
                file.locate(&["texts", t, "files"])
            );
        }
        languages.extend(text.files.keys().cloned());
    }
    for (i, lang) in s.languages.iter().enumerate() {
        if !languages.contains(lang) && s.method != StudyMethod::File {
            bail!(
                "{}: no text has language `{lang}`; the texts have {}",
                file.locate(&["studies", name, "languages", &i.to_string()]),
                names(languages.iter())
            );
        }
    }
    let chosen = if s.languages.is_empty() {
        languages.len()
    } else {
        s.languages.len()
    };
    if chosen < 2 && s.method != StudyMethod::File {
        bail!(
            "{}: a study compares languages: it needs at least 2, found {chosen}",
            at("texts")
        );
    }
    let belongs: [(&str, bool, &[StudyMethod]); 7] = [
        ("variant", s.variant.is_some(), &[StudyMethod::Lape]),
        ("top_rate", s.top_rate.is_some(), &[StudyMethod::Lape]),
        ("filter_rate", s.filter_rate.is_some(), &[StudyMethod::Lape]),
        (
            "activation_bar_ratio",
            s.activation_bar_ratio.is_some(),
            &[StudyMethod::Lape],
        ),
        ("rate", s.rate.is_some(), &[StudyMethod::Percentile]),
        ("top_n", s.top_n.is_some(), &[StudyMethod::AveragePrecision]),
        ("neurons", s.neurons.is_some(), &[StudyMethod::File]),
    ];
    for (key, set, methods) in belongs {
        if set && !methods.contains(&s.method) {
            bail!(
                "{}: `{key}` does not apply to method = {:?}",
                at(key),
                crate::experiment::method_name(s.method)
            );
        }
    }
    if s.method == StudyMethod::File && s.neurons.is_none() {
        bail!(
            "{}: method = \"file\" needs `neurons` (a JSON or Parquet file)",
            at("method")
        );
    }
    let fraction = |key: &str, v: Option<f64>, closed: bool| -> Result<()> {
        match v {
            Some(v) if !(v > 0.0 && (v < 1.0 || closed && v == 1.0)) => {
                bail!(
                    "{}: must be in (0, 1{}, got {v}",
                    at(key),
                    if closed { "]" } else { ")" }
                )
            }
            _ => Ok(()),
        }
    };
    fraction("top_rate", s.top_rate, true)?;
    fraction("filter_rate", s.filter_rate, false)?;
    fraction("activation_bar_ratio", s.activation_bar_ratio, false)?;
    fraction("rate", s.rate, true)?;
    fraction("quantile", Some(s.quantile), false)?;
    if !(0.0..1.0).contains(&s.held_out_fraction) {
        bail!(
            "{}: must be in [0, 1), got {}",
            at("held_out_fraction"),
            s.held_out_fraction
        );
    }
    for (key, v) in [
        ("window", s.window),
        ("batch_size", s.batch_size),
        ("top_n", s.top_n.unwrap_or(1)),
    ] {
        if v == 0 {
            bail!("{}: must be at least 1", at(key));
        }
    }
    if s.intervention != "none" && neurons::InterventionValue::parse(&s.intervention).is_none() {
        bail!(
            "{}: expected \"zero\", \"mean\", a number or \"none\", got {:?}",
            at("intervention"),
            s.intervention
        );
    }
    if s.intervention != "none" && s.held_out_fraction == 0.0 {
        bail!(
            "{}: the perplexity matrices need held-out text (held_out_fraction > 0), or set \
             intervention = \"none\"",
            at("held_out_fraction")
        );
    }
    Ok(())
}

/// The cells of a fine-tuning grid: first the neuron studies of `grid.study` (their sets feed
/// the fine-tuning cells), then every model × task × `grid.neurons` value (a value with
/// `target` once per evaluation language) × training-axis combination × seed, in that order
/// (outermost first).
fn expand_adapt(file: &ExperimentFile) -> Result<Vec<Cell>> {
    let e = &file.experiment;
    let g = &e.grid;
    for (axis, empty) in [
        ("dataset", g.dataset.is_empty()),
        ("pairs", g.pairs.is_empty()),
        ("loss", g.loss.is_empty()),
    ] {
        if !empty {
            bail!(
                "{}: a grid of fine-tuning tasks (`task`) has no `{axis}` axis; put encoder \
                 training runs in another file",
                file.locate(&["grid", axis])
            );
        }
    }
    let mut cells = if g.study.is_empty() {
        Vec::new()
    } else {
        expand_studies(file, true)?
    };
    check_decoder_models(file, "LoRA fine-tuning tasks")?;
    for (i, name) in g.task.iter().enumerate() {
        let Some(task) = e.tasks.get(name) else {
            bail!(
                "{}: unknown task `{name}`; the file defines {}",
                file.locate(&["grid", "task", &i.to_string()]),
                names(e.tasks.keys())
            );
        };
        check_task(file, name, task)?;
    }
    check_lora(file, &e.lora)?;
    let neuron_values: Vec<String> = if g.neurons.is_empty() {
        vec!["none".into()]
    } else {
        g.neurons.clone()
    };
    let mut choices = Vec::new();
    for (i, value) in neuron_values.iter().enumerate() {
        let at = || file.locate(&["grid", "neurons", &i.to_string()]);
        let choice = NeuronChoice::parse(value).map_err(|m| anyhow::anyhow!("{}: {m}", at()))?;
        if !choice.languages.is_empty()
            && e.lora.neurons_from.is_none()
            && e.lora.neurons_file.is_none()
        {
            bail!(
                "{}: {value:?} needs neuron sets: set `neurons_from` (a study) or \
                 `neurons_file` in [lora]",
                at()
            );
        }
        choices.push((value.clone(), choice));
    }
    let axes = train_axes(file)?;
    let seeds = if g.seed.is_empty() {
        vec![1]
    } else {
        g.seed.clone()
    };
    for model_name in &g.model {
        let model = &e.models[model_name];
        // The sets of `neurons_from`: that study's cell for this model, first seed.
        let neurons_study = e.lora.neurons_from.as_ref().map(|study| {
            cells
                .iter()
                .find(|c| {
                    c.config
                        .as_study()
                        .is_some_and(|s| s.model_name == *model_name && s.study_name == *study)
                })
                .map(|c| c.run_id.clone())
                .expect("check_lora made sure the grid runs the study")
        });
        for task_name in &g.task {
            let task = &e.tasks[task_name];
            let mut base = TrainConfig::default();
            base.apply(&e.train);
            base.apply(&model.train);
            base.apply(&task.settings);
            let mut lora = e.lora.clone();
            model.lora.apply_to(&mut lora);
            task.lora.apply_to(&mut lora);
            lora.alpha = Some(lora.alpha());
            let (train_lang, train_path) = task.train.iter().next().expect("checked");
            for (value, choice) in &choices {
                let targets: Vec<Option<&String>> = if choice.has_target() {
                    task.eval.keys().map(Some).collect()
                } else {
                    vec![None]
                };
                for target in targets {
                    for combo in cartesian(&axes) {
                        let mut train = base.clone();
                        let mut params = BTreeMap::new();
                        for (key, (text, o)) in axes.iter().map(|a| &a.0).zip(&combo) {
                            train.apply(o);
                            params.insert(key.clone(), text.clone());
                        }
                        train.validate().map_err(|msg| {
                            anyhow::anyhow!(
                                "{}: cell {model_name} × {task_name}: {msg}",
                                file.path.display()
                            )
                        })?;
                        let eval_files: BTreeMap<String, std::path::PathBuf> = task
                            .eval
                            .iter()
                            .filter(|(lang, _)| target.is_none_or(|t| t == *lang))
                            .map(|(lang, p)| (lang.clone(), file.resolve(p)))
                            .collect();
                        for &seed in &seeds {
                            let config = CellConfig::Adapt(AdaptCell {
                                grid: e.name.clone(),
                                model_name: model_name.clone(),
                                task_name: task_name.clone(),
                                neurons: value.clone(),
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
                            });
                            let mut params = params.clone();
                            params.insert("model".into(), model_name.clone());
                            params.insert("task".into(), task_name.clone());
                            params.insert("neurons".into(), value.clone());
                            params.insert(
                                "eval".into(),
                                target.cloned().unwrap_or_else(|| "all".into()),
                            );
                            params.insert("seed".into(), seed.to_string());
                            cells.push(Cell {
                                index: cells.len(),
                                run_id: run_id(&config),
                                params,
                                config,
                            });
                        }
                    }
                }
            }
        }
    }
    check_unique(file, &cells)?;
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
            let xnli: Vec<String> = crate::crosslingual::XNLI_LABELS.map(String::from).to_vec();
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
fn check_lora(file: &ExperimentFile, l: &LoraSpec) -> Result<()> {
    let e = &file.experiment;
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
    for (m, spec) in &e.models {
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
    if !matches!(l.init.as_str(), "normal" | "kaiming") {
        bail!(
            "{}: expected \"normal\" or \"kaiming\", got {:?}",
            at("init"),
            l.init
        );
    }
    if !matches!(l.position.as_str(), "last-non-padding" | "last") {
        bail!(
            "{}: expected \"last-non-padding\" or \"last\", got {:?}",
            at("position"),
            l.position
        );
    }
    if l.neurons_from.is_some() && l.neurons_file.is_some() {
        bail!(
            "{}: give `neurons_from` or `neurons_file`, not both",
            at("neurons_file")
        );
    }
    if let Some(study) = &l.neurons_from
        && !e.grid.study.contains(study)
    {
        bail!(
            "{}: {study:?} is not a study of this grid; add it to grid.study (defined: {})",
            at("neurons_from"),
            names(e.studies.keys())
        );
    }
    match l.intervention.as_str() {
        "none" => {}
        "mean" if l.neurons_from.is_none() => bail!(
            "{}: a mean intervention needs the study's statistics: set `neurons_from`",
            at("intervention")
        ),
        v if neurons::InterventionValue::parse(v).is_none() => bail!(
            "{}: expected \"none\", \"zero\", \"mean\" or a number, got {v:?}",
            at("intervention")
        ),
        _ if l.neurons_from.is_none() && l.neurons_file.is_none() => bail!(
            "{}: an intervention acts on the evaluation language's neurons: set `neurons_from` \
             or `neurons_file`",
            at("intervention")
        ),
        _ => {}
    }
    Ok(())
}
