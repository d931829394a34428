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
    DatasetSpec, ExperimentFile, LossSpec, ModelKind, ModelSpec, StudyMethod, StudySpec, TextSpec,
    TrainConfig, TrainOverrides, setting_from_value,
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
}

impl CellConfig {
    /// The training cell, if this is one.
    pub fn as_train(&self) -> Option<&TrainCell> {
        match self {
            Self::Train(t) => Some(t),
            Self::Study(_) => None,
        }
    }

    /// The study cell, if this is one.
    pub fn as_study(&self) -> Option<&StudyCell> {
        match self {
            Self::Study(s) => Some(s),
            Self::Train(_) => None,
        }
    }

    /// The model's name.
    pub fn model_name(&self) -> &str {
        match self {
            Self::Train(t) => &t.model_name,
            Self::Study(s) => &s.model_name,
        }
    }

    /// The model's checkpoint, resolved.
    pub fn model_dir(&self) -> &std::path::Path {
        match self {
            Self::Train(t) => &t.model_dir,
            Self::Study(s) => &s.model_dir,
        }
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
    if !g.study.is_empty() {
        return expand_studies(file);
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

    // Training-setting axes: each value checked as a setting on its own.
    let mut axes: Vec<(String, Vec<(String, TrainOverrides)>)> = Vec::new();
    for (key, values) in &g.train {
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
    let mut seen = BTreeMap::new();
    for c in &cells {
        if let Some(other) = seen.insert(c.run_id.clone(), c.index) {
            bail!(
                "{}: cells {other} and {} are the same run (an axis repeats a value)",
                file.path.display(),
                c.index
            );
        }
    }
    Ok(cells)
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
    }
    let text = toml::to_string(&config).expect("a cell config serialises");
    format!("{:012x}", crate::results::Fnv1a::of(text.as_bytes()) >> 16)
}

/// The cells of a neuron-study grid: every model of `grid.model` × every study of
/// `grid.study` × every seed, in that order (outermost first).
fn expand_studies(file: &ExperimentFile) -> Result<Vec<Cell>> {
    let e = &file.experiment;
    let g = &e.grid;
    for (axis, empty) in [
        ("dataset", g.dataset.is_empty()),
        ("pairs", g.pairs.is_empty()),
        ("loss", g.loss.is_empty()),
        ("train", g.train.is_empty()),
    ] {
        if !empty {
            bail!(
                "{}: a grid of neuron studies (`study`) has no `{axis}` axis; put training runs \
                 in another file",
                file.locate(&["grid", axis])
            );
        }
    }
    if g.model.is_empty() {
        bail!(
            "{}: the grid needs at least one model",
            file.locate(&["grid"])
        );
    }
    for (i, m) in g.model.iter().enumerate() {
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
                "{}: model `{m}` is an encoder; neuron studies need kind = \"decoder\"",
                file.locate(&key)
            );
        }
    }
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
    let seeds = if g.seed.is_empty() {
        vec![1]
    } else {
        g.seed.clone()
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
