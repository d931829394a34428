//! The neuron-study cell ([`StudyCell`]): its expansion from `[grid]`, its checks (its run is
//! in [`super::kind`]).

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use super::spec::{Sections, StudyMethod, StudySpec, TextFileFormat, TextSpec};
use crate::harness::experiment::{ExperimentFile, ModelSpec};
use crate::harness::grid::{Cell, check_decoder_models, names};

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
    pub model_dir: PathBuf,
    /// Each language's files in text order, resolved (not part of the run id).
    pub files: BTreeMap<String, Vec<(String, PathBuf)>>,
    /// The neuron-set file of `method = "file"`, resolved (not part of the run id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub neurons_file: Option<PathBuf>,
    /// The study's statistics files, resolved (not part of the run id).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub statistics_files: Vec<PathBuf>,
    /// The model (path as written).
    pub model: ModelSpec,
    /// The study.
    pub study: StudySpec,
    /// The texts it reads (paths as written).
    pub texts: BTreeMap<String, TextSpec>,
}

/// The cells of a neuron-study grid: every model of `grid.model` × every study of
/// `grid.study` × every seed, in that order (outermost first). `with_tasks`: the grid also
/// fine-tunes (its training axes belong to those cells).
pub fn expand(
    file: &ExperimentFile,
    own: &Sections,
    with_tasks: bool,
) -> Result<Vec<Cell<StudyCell>>> {
    let e = &file.experiment;
    let g = &e.grid;
    check_decoder_models(file, "neuron studies")?;
    for (i, name) in own.grid.study.iter().enumerate() {
        let Some(study) = own.studies.get(name) else {
            bail!(
                "{}: unknown study `{name}`; the file defines {}",
                file.locate(&["grid", "study", &i.to_string()]),
                names(own.studies.keys())
            );
        };
        check_study(file, own, name, study)?;
    }
    // Beside fine-tuning cells a study runs once, with the first seed: the seeds are the
    // fine-tuning cells' (a study's seed only draws its random control).
    let seeds = g.seeds(file)?;
    let seeds = if with_tasks { vec![seeds[0]] } else { seeds };
    let mut cells = Vec::new();
    for model_name in &g.model {
        for study_name in &own.grid.study {
            let study = &own.studies[study_name];
            let texts: BTreeMap<String, TextSpec> = study
                .texts
                .iter()
                .map(|t| (t.clone(), own.texts[t].clone()))
                .collect();
            let mut files: BTreeMap<String, Vec<(String, std::path::PathBuf)>> = BTreeMap::new();
            for t in &study.texts {
                for (lang, path) in &own.texts[t].files {
                    if study.languages.is_empty() || study.languages.contains(lang) {
                        files
                            .entry(lang.clone())
                            .or_default()
                            .push((t.clone(), file.resolve(path)));
                    }
                }
            }
            for &seed in &seeds {
                let config = StudyCell {
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
                };
                let params = BTreeMap::from([
                    ("model".to_string(), model_name.clone()),
                    ("study".to_string(), study_name.clone()),
                    ("seed".to_string(), seed.to_string()),
                ]);
                cells.push(Cell::new(cells.len(), params, config));
            }
        }
    }
    Ok(cells)
}

/// Check a study's settings against its method, naming the file, line and key.
fn check_study(file: &ExperimentFile, own: &Sections, name: &str, s: &StudySpec) -> Result<()> {
    let at = |key: &str| file.locate(&["studies", name, key]);
    if s.texts.is_empty() && s.method != StudyMethod::File {
        bail!("{}: a study needs at least one text", at("texts"));
    }
    let mut languages = std::collections::BTreeSet::new();
    for (i, t) in s.texts.iter().enumerate() {
        let Some(text) = own.texts.get(t) else {
            bail!(
                "{}: unknown text `{t}`; the file defines {}",
                file.locate(&["studies", name, "texts", &i.to_string()]),
                names(own.texts.keys())
            );
        };
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
                super::spec::method_name(s.method)
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
    if s.intervention.value().is_some() && s.held_out_fraction == 0.0 {
        bail!(
            "{}: the perplexity matrices need held-out text (held_out_fraction > 0), or set \
             intervention = \"none\"",
            at("held_out_fraction")
        );
    }
    Ok(())
}

/// The files a study reads exist, and the model is a decoder with a tokenizer.
pub(crate) fn check_study_inputs(s: &StudyCell) -> Result<()> {
    for (lang, files) in &s.files {
        for (text, path) in files {
            if !path.is_file() {
                bail!(
                    "text `{text}`, language {lang}: no such file {}",
                    path.display()
                );
            }
        }
    }
    if let Some(p) = &s.neurons_file
        && !p.is_file()
    {
        bail!(
            "study `{}`: no such neuron-set file {}",
            s.study_name,
            p.display()
        );
    }
    if let Some(p) = s.statistics_files.iter().find(|p| !p.is_file()) {
        bail!(
            "study `{}`: no such statistics file {}",
            s.study_name,
            p.display()
        );
    }
    let checkpoint = models::DecoderCheckpoint::open(&s.model_dir)
        .with_context(|| format!("model `{}`", s.model_name))?;
    if checkpoint.tokenizer.is_none() {
        bail!(
            "model `{}`: no tokenizer in {} (a study tokenizes its texts)",
            s.model_name,
            s.model_dir.display()
        );
    }
    if let Some(p) = &s.neurons_file {
        let config = &checkpoint.config;
        ablation::LanguageSets::read(p)?
            .check(config.num_hidden_layers, config.intermediate_size)
            .with_context(|| {
                format!(
                    "study `{}`: {}: the neuron sets do not fit model `{}`",
                    s.study_name,
                    p.display(),
                    s.model_name
                )
            })?;
    }
    Ok(())
}
