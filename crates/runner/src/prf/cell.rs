//! The dense PRF cell ([`PrfCell`]): its expansion from `[grid]` and its checks (its run is in
//! [`super::fit`]).
//!
//! Order (outermost first): the models (`grid.prf_model`, or `grid.model`), `grid.corpus`,
//! `grid.prf` (default `["plain"]`), the training-setting axes of `grid.train` (keys in
//! alphabetical order), then the seeds.

use std::collections::BTreeSet;
use std::path::PathBuf;

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

use super::spec::{CorpusFiles, CorpusSpec, PrfSpec, Sections};
use crate::harness::experiment::{
    ExperimentFile, ModelKind, ModelSpec, TrainConfig, refuse_unread,
};
use crate::harness::grid::{Cell, check_unique, kebab, names, train_axes, train_settings};

/// A PRF cell, resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrfCell {
    /// The grid's name.
    pub grid: String,
    /// Model name.
    pub model_name: String,
    /// Corpus name.
    pub corpus_name: String,
    /// PRF objective name.
    pub prf_name: String,
    /// Seed of every random choice in the run.
    pub seed: u64,
    /// The model's checkpoint folder, resolved (not part of the run id).
    pub model_dir: PathBuf,
    /// The model (path as written).
    pub model: ModelSpec,
    /// The corpus (paths as written).
    pub corpus: CorpusSpec,
    /// The objective and inputs.
    pub prf: PrfSpec,
    /// Training settings, with `batch_size` in training queries (each `1 + n_compare`
    /// revisions) and `epochs` already divided when `scale_by_revisions`.
    pub train: TrainConfig,
    /// The corpus's files, resolved (not part of the run id).
    pub files: CorpusFiles,
}

/// The official dense training command's settings: 108 revisions per batch (36 per device on
/// the 3 GPUs that reformulate: its trainer's `train_batch_size`), 12 epochs, learning rate
/// 1e-5 with 10 % warmup, inputs of 512 tokens; HF `Trainer`'s defaults otherwise (no weight
/// decay, clipping at 1.0).
fn prf_defaults() -> TrainConfig {
    TrainConfig {
        epochs: 12.0,
        batch_size: 108,
        learning_rate: 1e-5,
        warmup_ratio: 0.1,
        max_seq_len: 512,
        ..TrainConfig::default()
    }
}

/// The PRF cells of `file`, in the order of the module docs, numbered from `first` (after the
/// grid's other cells).
/// The training settings a PRF cell does not read: the encoder fine-tuning's (length grouping,
/// the view budget, ablation and dropout evaluations) and `save_model` (a PRF cell does not
/// save its reformulator yet).
pub const UNREAD_TRAIN: [&str; 5] = [
    "group_by_length",
    "view_budget_tokens",
    "ablation_rates",
    "eval_dropout_powers",
    "save_model",
];

/// A training setting that PRF cells do not read, set where only they read it, is an error
/// naming its line: `[train]` and the `train` axes when no encoder cell shares the grid
/// (`encoder_models` empty), and the PRF models' `train` tables unless an encoder cell of the
/// grid trains that model too. Where encoder cells share a setting, PRF cells leave it.
fn refuse_unread_settings(
    file: &ExperimentFile,
    model_names: &[String],
    encoder_models: &BTreeSet<String>,
) -> Result<()> {
    let e = &file.experiment;
    let cells = "PRF cells";
    if encoder_models.is_empty() {
        refuse_unread(file, &["train"], &e.train.set_keys(), &UNREAD_TRAIN, cells)?;
        let axes: Vec<&str> = e.grid.train.keys().map(String::as_str).collect();
        refuse_unread(file, &["grid", "train"], &axes, &UNREAD_TRAIN, cells)?;
    }
    for name in model_names {
        if let (Some(m), false) = (e.models.get(name), encoder_models.contains(name)) {
            let at = ["models", name.as_str(), "train"];
            refuse_unread(file, &at, &m.train.set_keys(), &UNREAD_TRAIN, cells)?;
        }
    }
    Ok(())
}

/// The grid's corpora are defined, and their test sets' names can name files.
fn check_corpora(file: &ExperimentFile, own: &Sections) -> Result<()> {
    for (i, c) in own.grid.corpus.iter().enumerate() {
        let Some(corpus) = own.corpora.get(c) else {
            bail!(
                "{}: unknown corpus `{c}`; the file defines {}",
                file.locate(&["grid", "corpus", &i.to_string()]),
                names(own.corpora.keys())
            );
        };
        // A test set's name names its files (`run.<name>.trec`, its metrics' prefix).
        for name in corpus.test.keys() {
            let plain = !name.is_empty()
                && !name.starts_with('.')
                && name
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch));
            if !plain || name == "dev" {
                bail!(
                    "{}: a test set's name names its run file (run.<name>.trec): use letters, \
                     digits, `-`, `_` and `.`, not a leading `.`, and not `dev` (the dev set's)",
                    file.locate(&["corpora", c, "test", name])
                );
            }
        }
    }
    Ok(())
}

/// Expand the PRF cells of `file`, numbered from `first`; `encoder_models` are the models the
/// grid's encoder cells train (none in a PRF grid).
pub fn expand(
    file: &ExperimentFile,
    own: &Sections,
    first: usize,
    encoder_models: &BTreeSet<String>,
) -> Result<Vec<Cell<PrfCell>>> {
    let e = &file.experiment;
    let (g, a) = (&e.grid, &own.grid);
    let (model_names, axis) = if a.prf_model.is_empty() {
        (&g.model, "model")
    } else {
        (&a.prf_model, "prf_model")
    };
    if model_names.is_empty() {
        bail!(
            "{}: PRF cells need at least one model (`model`, or `prf_model`)",
            file.locate(&["grid"])
        );
    }
    for (i, m) in model_names.iter().enumerate() {
        let Some(spec) = e.models.get(m) else {
            bail!(
                "{}: unknown model `{m}`; the file defines {}",
                file.locate(&["grid", axis, &i.to_string()]),
                names(e.models.keys())
            );
        };
        if spec.kind != ModelKind::Encoder {
            bail!(
                "{}: model `{m}` has kind = \"{}\", but PRF reformulates queries with an encoder \
                 (kind = \"encoder\")",
                file.locate(&["models", m, "kind"]),
                kebab(&spec.kind)
            );
        }
    }
    check_corpora(file, own)?;
    let mut objectives = own.prf.clone();
    if let Some(spec) = objectives.get("plain")
        && *spec != PrfSpec::default()
    {
        bail!(
            "{}: `plain` is predefined (the official defaults, n_compare = 0); name this one \
             otherwise",
            file.locate(&["prf", "plain"])
        );
    }
    objectives.insert("plain".into(), PrfSpec::default());
    for (name, spec) in &objectives {
        spec.check()
            .map_err(|msg| anyhow::anyhow!("{}: {msg}", file.locate(&["prf", name])))?;
    }
    let chosen: Vec<String> = if a.prf.is_empty() {
        vec!["plain".into()]
    } else {
        a.prf.clone()
    };
    for (i, name) in chosen.iter().enumerate() {
        if !objectives.contains_key(name) {
            bail!(
                "{}: unknown PRF objective `{name}`; defined: {}",
                file.locate(&["grid", "prf", &i.to_string()]),
                names(objectives.keys())
            );
        }
    }
    refuse_unread_settings(file, model_names, encoder_models)?;
    let seeds = g.seeds(file)?;
    let axes = train_axes(file)?;

    let mut cells = Vec::new();
    for model_name in model_names {
        let model = &e.models[model_name];
        for corpus_name in &a.corpus {
            let corpus = &own.corpora[corpus_name];
            let files = corpus.resolve(&file.resolve(&corpus.path), &file.artefacts);
            for prf_name in &chosen {
                let prf = &objectives[prf_name];
                let mut base = prf_defaults();
                base.apply(&e.train);
                base.apply(&model.train);
                for (mut train, params) in
                    train_settings(file, &axes, &base, &format!("{model_name} × {corpus_name}"))?
                {
                    train.reset(&UNREAD_TRAIN);
                    if prf.scale_by_revisions {
                        let group = 1 + prf.n_compare;
                        train.batch_size = (train.batch_size / group).max(1);
                        train.epochs /= group as f64;
                    }
                    for &seed in &seeds {
                        let config = PrfCell {
                            grid: e.name.clone(),
                            model_name: model_name.clone(),
                            corpus_name: corpus_name.clone(),
                            prf_name: prf_name.clone(),
                            seed,
                            model_dir: file.resolve(&model.path),
                            model: model.clone(),
                            corpus: corpus.clone(),
                            prf: prf.clone(),
                            train: train.clone(),
                            files: files.clone(),
                        };
                        let mut params = params.clone();
                        params.insert("model".into(), model_name.clone());
                        params.insert("corpus".into(), corpus_name.clone());
                        params.insert("prf".into(), prf_name.clone());
                        params.insert("seed".into(), seed.to_string());
                        cells.push(Cell::new(first + cells.len(), params, config));
                    }
                }
            }
        }
    }
    check_unique(file, &cells)?;
    Ok(cells)
}

/// Every input of `cell` parses, its model's vectors fit the matrix, and each training query
/// has enough first-pass passages for its revisions.
pub fn check_prf_inputs(cell: &PrfCell) -> Result<()> {
    let config = models::EncoderConfig::from_file(cell.model_dir.join("config.json"))?;
    models::check_encoder_dir(&cell.model_dir)?;
    if !cell.files.matrix.is_dir() {
        bail!(
            "corpus `{}`: no matrix folder {} (its `path` = {:?} and `matrix` = {:?}); write one \
             with `neuronlab corpus embed` or fix those keys",
            cell.corpus_name,
            cell.files.matrix.display(),
            cell.corpus.path,
            cell.corpus.matrix
        );
    }
    let matrix = crate::retrieval::matrix::Matrix::open(&cell.files.matrix)?;
    if matrix.dim() != config.hidden_size {
        bail!(
            "{}: the passage vectors have {} dimensions, but model `{}` makes query vectors of \
             hidden_size = {}",
            cell.files.matrix.display(),
            matrix.dim(),
            cell.model_name,
            config.hidden_size
        );
    }
    crate::data::expect_file("collection", &cell.files.collection)?;
    let train = super::data::QuerySetData::read(&cell.files.train)?;
    check_revisions(&train, &cell.prf, &cell.files.train.run)?;
    let mut ids = std::collections::HashSet::new();
    for i in 0..matrix.manifest.shards.len() {
        ids.extend(matrix.shard_ids(i)?);
    }
    super::data::check_positives(&train, |p| ids.contains(p), &cell.files)?;
    for (_, set) in cell.files.eval_sets() {
        super::data::QuerySetData::read(set)?;
    }
    Ok(())
}

/// Each training query has at least `n_compare` first-pass passages (its revisions need
/// `1 + n_compare` distinct feedback counts; the official sampler fails otherwise).
pub fn check_revisions(
    train: &super::data::QuerySetData,
    prf: &PrfSpec,
    run: &std::path::Path,
) -> Result<()> {
    for (qid, _) in &train.queries {
        let n = train.feedback(qid, prf.max_n_prf).len();
        if n < prf.n_compare {
            bail!(
                "{}: training query {qid} has {n} first-pass passages; n_compare = {} needs at \
                 least {}",
                run.display(),
                prf.n_compare,
                prf.n_compare
            );
        }
    }
    Ok(())
}
