//! The experiment file, naming no kind of cell: its text and path (for `file, line N: key K`
//! errors), `${VAR}` resolution, the sections every kind shares (`name`, `[train]`,
//! `[models.*]`, the `grid.model` / `grid.seed` / `grid.train` axes), and views: each kind reads
//! its own sections from the same text ([`Views`]); a key that no view reads is an error
//! naming its line. The whole schema, with an example of each kind, is documented in
//! the registry (`registry.rs`).
//!
//! Settings resolve in this order, later wins: built-in defaults, `[train]`, the kind's own
//! layers (see each kind), the model's `train`, the grid axis.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use neurons::InterventionValue;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The sections of an experiment file that every kind shares. Other top-level sections belong
/// to the kinds ([`Views`]).
#[derive(Debug, Clone, Deserialize)]
pub struct Experiment {
    /// The grid's name: results go to `DIR/<name>/`.
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// Training settings for every cell.
    #[serde(default)]
    pub train: TrainOverrides,
    /// Named models.
    pub models: BTreeMap<String, ModelSpec>,
    /// The shared grid axes.
    pub grid: SharedAxes,
}

/// The grid axes every kind shares (each kind reads its own axes of `[grid]`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SharedAxes {
    /// Models.
    #[serde(default)]
    pub model: Vec<String>,
    /// Seeds (default: `[1]`).
    #[serde(default)]
    pub seed: Option<Vec<u64>>,
    /// Training settings as axes: each key a setting, each value the list of its values.
    #[serde(default)]
    pub train: BTreeMap<String, toml::Value>,
}

impl SharedAxes {
    /// `grid.seed`, or `[1]` when it is not set; an empty list (no cell at all) is an error
    /// naming `file`'s line.
    pub fn seeds(&self, file: &ExperimentFile) -> anyhow::Result<Vec<u64>> {
        match &self.seed {
            None => Ok(vec![1]),
            Some(seeds) if seeds.is_empty() => anyhow::bail!(
                "{}: no seed, so no cell would run; give one or more (or leave `seed` out for \
                 seed 1)",
                file.locate(&["grid", "seed"])
            ),
            Some(seeds) => Ok(seeds.clone()),
        }
    }
}

/// What kind of model a path holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModelKind {
    /// A BERT-family encoder checkpoint (BERT, RoBERTa, ELECTRA).
    Encoder,
    /// A Llama-family decoder (a GGUF file, a folder with one, or an HF folder).
    Decoder,
}

/// A named model, as every kind reads it (a kind may read more keys of the table, e.g. the LoRA
/// cells' `lora`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    /// Checkpoint directory.
    pub path: PathBuf,
    /// What the checkpoint is.
    pub kind: ModelKind,
    /// Settings for this model's cells.
    #[serde(default)]
    pub train: TrainOverrides,
}

/// The names of the axes that are set, from `(name, is set)` pairs (for the registry's check
/// that a grid has no axis of another kind).
pub fn set_axes(axes: &[(&'static str, bool)]) -> Vec<&'static str> {
    axes.iter()
        .filter(|(_, set)| *set)
        .map(|(name, _)| *name)
        .collect()
}

/// `${ARTEFACTS}` and every set `${VAR}` of `text` replaced by their values (unset variables
/// stay as written, for the dry run to name).
pub fn expand_vars(text: &str, artefacts: &Path) -> String {
    let mut s = text.replace("${ARTEFACTS}", &artefacts.to_string_lossy());
    let mut from = 0;
    while let Some(start) = s[from..].find("${").map(|i| i + from) {
        let Some(len) = s[start..].find('}') else {
            break;
        };
        let name = &s[start + 2..start + len];
        match std::env::var(name) {
            Ok(value) if !name.is_empty() => {
                s.replace_range(start..start + len + 1, &value);
                from = start + value.len();
            }
            _ => from = start + len + 1,
        }
    }
    s
}

/// `$m!(every training setting's key)`.
macro_rules! with_train_keys {
    ($m:ident) => {
        $m!(
            epochs,
            max_steps,
            batch_size,
            grad_accum_steps,
            group_by_length,
            learning_rate,
            weight_decay,
            adam_beta1,
            warmup_ratio,
            warmup_steps,
            max_grad_norm,
            max_seq_len,
            eval_every,
            max_train_examples,
            max_eval_examples,
            view_budget_tokens,
            ablation_rates,
            eval_dropout_powers,
            checkpoints,
            checkpoint_every_s,
            save_model,
            tensorboard
        )
    };
}

/// Training settings as written: every field optional, merged in precedence order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainOverrides {
    /// Passes over the training set.
    pub epochs: Option<f64>,
    /// Optimiser steps; when set, overrides `epochs`.
    pub max_steps: Option<usize>,
    /// Examples per batch (per view).
    pub batch_size: Option<usize>,
    /// Batches per optimiser step (gradient accumulation).
    pub grad_accum_steps: Option<usize>,
    /// Batch examples of similar length together (HF's `group_by_length`): less padding.
    pub group_by_length: Option<bool>,
    /// Peak learning rate of AdamW.
    pub learning_rate: Option<f64>,
    /// AdamW weight decay.
    pub weight_decay: Option<f64>,
    /// AdamW's β₁ (default 0.9; Mondal et al. use 0.95).
    pub adam_beta1: Option<f64>,
    /// Linear warmup over this fraction of the steps, then linear decay to 0.
    pub warmup_ratio: Option<f64>,
    /// Warmup steps; when set, overrides `warmup_ratio`.
    pub warmup_steps: Option<usize>,
    /// Gradient clipping by global norm (0: off).
    pub max_grad_norm: Option<f64>,
    /// Tokens per sequence after truncation.
    pub max_seq_len: Option<usize>,
    /// Evaluate every this many steps (0: at the end of each epoch only).
    pub eval_every: Option<usize>,
    /// Use at most this many training examples (the first ones, before shuffling).
    pub max_train_examples: Option<usize>,
    /// Use at most this many evaluation examples.
    pub max_eval_examples: Option<usize>,
    /// Run the views of a comparative step as one batch when it has at most this many tokens,
    /// one after another otherwise (0: no limit).
    pub view_budget_tokens: Option<usize>,
    /// After training, evaluate with this fraction of FFN neurons ablated at random (the
    /// metric-versus-ablation-rate curve).
    pub ablation_rates: Option<Vec<f64>>,
    /// After training, evaluate the best model with dropout on at rate `1 − (1 − p)^k` for
    /// each power `k` here (`p` the model's dropout; fresh seeded masks per batch): the official
    /// `--force_dropout k`, the paper's "effect of dropout rate" study. Each adds a metric
    /// `<main metric>@dropout<k>` to the cell's results.
    pub eval_dropout_powers: Option<Vec<u32>>,
    /// Write checkpoints at evaluations, so that a killed run resumes from the last one.
    pub checkpoints: Option<bool>,
    /// Write a checkpoint at an evaluation only when at least this many seconds of the cell
    /// have passed since the last one (or since it started): a killed run loses at most about
    /// this much training. 0: at every evaluation. Default 60 (a MiniLM checkpoint is 360 MB
    /// with the optimiser's moments and the best model, about half a second to write here).
    pub checkpoint_every_s: Option<f64>,
    /// Save the best model as an HF checkpoint in the run folder (`model/`).
    pub save_model: Option<bool>,
    /// Write a TensorBoard event file in the run folder: the loss and learning rate of every
    /// step, the metrics of every evaluation (`tensorboard --logdir runs/` shows a whole grid).
    pub tensorboard: Option<bool>,
}

/// Training settings of one cell, fully resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// See [`TrainOverrides::epochs`].
    pub epochs: f64,
    /// See [`TrainOverrides::max_steps`] (0: from epochs).
    pub max_steps: usize,
    /// See [`TrainOverrides::batch_size`].
    pub batch_size: usize,
    /// See [`TrainOverrides::grad_accum_steps`].
    pub grad_accum_steps: usize,
    /// See [`TrainOverrides::group_by_length`].
    pub group_by_length: bool,
    /// See [`TrainOverrides::learning_rate`].
    pub learning_rate: f64,
    /// See [`TrainOverrides::weight_decay`].
    pub weight_decay: f64,
    /// See [`TrainOverrides::adam_beta1`].
    #[serde(default = "default_beta1", skip_serializing_if = "is_default_beta1")]
    pub adam_beta1: f64,
    /// See [`TrainOverrides::warmup_ratio`].
    pub warmup_ratio: f64,
    /// See [`TrainOverrides::warmup_steps`] (0: from the ratio).
    pub warmup_steps: usize,
    /// See [`TrainOverrides::max_grad_norm`].
    pub max_grad_norm: f64,
    /// See [`TrainOverrides::max_seq_len`].
    pub max_seq_len: usize,
    /// See [`TrainOverrides::eval_every`].
    pub eval_every: usize,
    /// See [`TrainOverrides::max_train_examples`] (0: all).
    pub max_train_examples: usize,
    /// See [`TrainOverrides::max_eval_examples`] (0: all).
    pub max_eval_examples: usize,
    /// See [`TrainOverrides::view_budget_tokens`].
    pub view_budget_tokens: usize,
    /// See [`TrainOverrides::ablation_rates`].
    pub ablation_rates: Vec<f64>,
    /// See [`TrainOverrides::eval_dropout_powers`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub eval_dropout_powers: Vec<u32>,
    /// See [`TrainOverrides::checkpoints`].
    pub checkpoints: bool,
    /// See [`TrainOverrides::checkpoint_every_s`].
    #[serde(
        default = "default_checkpoint_every_s",
        skip_serializing_if = "is_default_checkpoint_every_s"
    )]
    pub checkpoint_every_s: f64,
    /// See [`TrainOverrides::save_model`].
    pub save_model: bool,
    /// See [`TrainOverrides::tensorboard`].
    #[serde(default, skip_serializing_if = "is_false")]
    pub tensorboard: bool,
}

impl Default for TrainConfig {
    /// HF `Trainer`-like defaults (AdamW, linear schedule, clipping at 1.0) at GLUE scale.
    fn default() -> Self {
        Self {
            epochs: 3.0,
            max_steps: 0,
            batch_size: 32,
            grad_accum_steps: 1,
            group_by_length: false,
            learning_rate: 2e-5,
            weight_decay: 0.0,
            adam_beta1: 0.9,
            warmup_ratio: 0.0,
            warmup_steps: 0,
            max_grad_norm: 1.0,
            max_seq_len: 128,
            eval_every: 0,
            max_train_examples: 0,
            max_eval_examples: 0,
            view_budget_tokens: 0,
            ablation_rates: Vec::new(),
            eval_dropout_powers: Vec::new(),
            checkpoints: true,
            checkpoint_every_s: default_checkpoint_every_s(),
            save_model: false,
            tensorboard: false,
        }
    }
}

// Serde's `skip_serializing_if` passes a reference.
#[allow(clippy::trivially_copy_pass_by_ref)]
fn is_false(b: &bool) -> bool {
    !*b
}

fn default_checkpoint_every_s() -> f64 {
    60.0
}
// Serde's `skip_serializing_if` passes a reference.
#[allow(clippy::trivially_copy_pass_by_ref)]
fn is_default_checkpoint_every_s(s: &f64) -> bool {
    *s == default_checkpoint_every_s()
}

fn default_beta1() -> f64 {
    0.9
}
// Serde's `skip_serializing_if` passes a reference.
#[allow(clippy::trivially_copy_pass_by_ref)]
fn is_default_beta1(b: &f64) -> bool {
    *b == 0.9
}

impl TrainOverrides {
    /// Whether no setting is set.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// The keys of the settings that are set.
    pub fn set_keys(&self) -> Vec<&'static str> {
        let mut keys = Vec::new();
        macro_rules! collect {
            ($($f:ident),*) => { $( if self.$f.is_some() { keys.push(stringify!($f)); } )* };
        }
        with_train_keys!(collect);
        keys
    }
}

impl TrainConfig {
    /// These settings with those that do not change a run's numbers (checkpointing, saving the
    /// model, TensorBoard) at their defaults: what a cell's identity hashes.
    pub fn identity(&self) -> Self {
        Self {
            checkpoints: true,
            checkpoint_every_s: default_checkpoint_every_s(),
            save_model: false,
            tensorboard: false,
            ..self.clone()
        }
    }

    /// Apply the settings `o` sets.
    pub fn apply(&mut self, o: &TrainOverrides) {
        macro_rules! set {
            ($($f:ident),*) => { $( if let Some(v) = &o.$f { self.$f = v.clone(); } )* };
        }
        with_train_keys!(set);
    }

    /// These settings with the ones named in `keys` at their defaults (settings a kind of cell
    /// does not read, so that they neither show in its `config.toml` nor change its run id).
    pub fn reset(&mut self, keys: &[&str]) {
        let default = Self::default();
        macro_rules! reset {
            ($($f:ident),*) => {
                $( if keys.contains(&stringify!($f)) { self.$f = default.$f.clone(); } )*
            };
        }
        with_train_keys!(reset);
    }

    /// `(optimiser steps per epoch, total steps, warmup steps)` for `n_train` examples: batches
    /// of `batch_size` (the last one smaller), `grad_accum_steps` per step; `max_steps` or
    /// `epochs` (at least one step); `warmup_steps` or the ratio, rounded up.
    pub fn steps(&self, n_train: usize) -> (usize, usize, usize) {
        let per_epoch = n_train
            .div_ceil(self.batch_size)
            .div_ceil(self.grad_accum_steps.max(1));
        let total = if self.max_steps > 0 {
            self.max_steps
        } else {
            ((self.epochs * per_epoch as f64).ceil() as usize).max(1)
        };
        let warmup = if self.warmup_steps > 0 {
            self.warmup_steps
        } else {
            (self.warmup_ratio * total as f64).ceil() as usize
        };
        (per_epoch, total, warmup)
    }

    /// Check ranges; `what` names where the settings come from.
    pub fn validate(&self) -> Result<(), String> {
        let checks: [(bool, &str); 13] = [
            (
                self.epochs > 0.0 || self.max_steps > 0,
                "epochs must be > 0 (or max_steps set)",
            ),
            (self.batch_size > 0, "batch_size must be > 0"),
            (self.grad_accum_steps > 0, "grad_accum_steps must be > 0"),
            (
                self.learning_rate > 0.0 && self.learning_rate.is_finite(),
                "learning_rate must be a positive number",
            ),
            (self.weight_decay >= 0.0, "weight_decay must be >= 0"),
            (
                (0.0..1.0).contains(&self.adam_beta1),
                "adam_beta1 must be in [0, 1)",
            ),
            (
                (0.0..1.0).contains(&self.warmup_ratio),
                "warmup_ratio must be in [0, 1)",
            ),
            (self.max_grad_norm >= 0.0, "max_grad_norm must be >= 0"),
            (
                self.checkpoint_every_s >= 0.0 && self.checkpoint_every_s.is_finite(),
                "checkpoint_every_s must be a number of seconds >= 0 (0: at every chance)",
            ),
            (
                self.max_steps == 0 || self.warmup_steps <= self.max_steps,
                "warmup_steps must not exceed max_steps (the learning rate would never reach \
                 learning_rate)",
            ),
            (self.max_seq_len >= 2, "max_seq_len must be >= 2"),
            (
                self.ablation_rates.iter().all(|r| (0.0..1.0).contains(r)),
                "ablation_rates must lie in [0, 1)",
            ),
            (
                self.eval_dropout_powers.iter().all(|&k| k >= 1),
                "eval_dropout_powers must be at least 1 (power k drops at rate 1 - (1 - p)^k)",
            ),
        ];
        match checks.iter().find(|(ok, _)| !ok) {
            Some((_, msg)) => Err(msg.to_string()),
            None => Ok(()),
        }
    }
}

/// A test-time intervention on a language's neurons as written: `none`, `zero`, `mean`,
/// `mean_p<NN>` (Mondal et al.'s `mean_p75_act` … `mean_p95_act`: the mean per-batch NN-th
/// percentile) or a number; parsed when the file is read, kept with its text (results and run
/// ids show it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct InterventionSpec {
    text: String,
    value: Option<InterventionValue>,
}

impl InterventionSpec {
    /// `none`: no intervention.
    pub fn none() -> Self {
        Self {
            text: "none".into(),
            value: None,
        }
    }

    /// `zero`.
    pub fn zero() -> Self {
        Self {
            text: "zero".into(),
            value: Some(InterventionValue::Zero),
        }
    }

    /// What the neurons become; `None` for `none`.
    pub fn value(&self) -> Option<&InterventionValue> {
        self.value.as_ref()
    }

    /// The value as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl TryFrom<String> for InterventionSpec {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        let value = match text.as_str() {
            "none" => None,
            v => Some(InterventionValue::parse(v).ok_or_else(|| {
                format!(
                    "intervention: expected \"none\", \"zero\", \"mean\", \"mean_p<NN>\" \
                     (NN in 1..=99: mean_p75, mean_p90, mean_p95), \"on_p50\" or a number, \
                     got {v:?}"
                )
            })?),
        };
        Ok(Self { text, value })
    }
}

impl From<InterventionSpec> for String {
    fn from(i: InterventionSpec) -> Self {
        i.text
    }
}

/// An experiment file read from disk, with its text (for error locations).
#[derive(Debug, Clone)]
pub struct ExperimentFile {
    /// Where it was read from.
    pub path: PathBuf,
    /// The raw text.
    pub text: String,
    /// The shared sections (paths as written).
    pub experiment: Experiment,
    /// The keys the shared sections do not read.
    ignored: KeySet,
    /// What `${ARTEFACTS}` stands for.
    pub artefacts: PathBuf,
}

/// Why `name` cannot be a grid's folder name under the output root, if it cannot.
fn unsafe_name(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("is empty")
    } else if name.starts_with('.') {
        // `.` and `..` leave the folder; other dot-names are the output root's caches.
        Some("starts with `.`")
    } else if !name
        .chars()
        .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        Some("has a character other than letters, digits, `-`, `_` and `.`")
    } else {
        None
    }
}

impl ExperimentFile {
    /// Read `path` and parse its shared sections; `${ARTEFACTS}` in paths stands for
    /// `artefacts` (see [`Self::resolve`]). A malformed file is an error naming the file and
    /// line; unknown keys are found once the kinds have read theirs ([`Views::finish`]).
    pub fn read(path: &Path, artefacts: &Path) -> Result<Self> {
        crate::data::expect_file("experiment file", path)?;
        let text = crate::data::read_text(path)?;
        Self::parse(path, text, artefacts)
    }

    /// Parse `text` as if read from `path`.
    pub fn parse(path: &Path, text: String, artefacts: &Path) -> Result<Self> {
        let (experiment, ignored) = parse_view(path, &text)?;
        let file = Self {
            path: path.to_owned(),
            text,
            experiment,
            ignored,
            artefacts: artefacts.to_owned(),
        };
        if let Some(why) = unsafe_name(&file.experiment.name) {
            bail!(
                "{}: name = {:?} {why}; the grid's results go to OUTPUT/<name>, so a name is \
                 one folder name (letters, digits, `-`, `_`, `.`; not starting with `.`)",
                file.locate(&["name"]),
                file.experiment.name
            );
        }
        Ok(file)
    }

    /// A path as written in the file, resolved: `${ARTEFACTS}` replaced, every other `${NAME}`
    /// replaced by the environment variable `NAME` when it is set (left as written otherwise,
    /// so the missing file's error shows it), and relative paths taken from the file's folder.
    pub fn resolve(&self, written: &Path) -> PathBuf {
        let s = expand_vars(&written.to_string_lossy(), &self.artefacts);
        let p = PathBuf::from(s);
        if p.is_relative() {
            self.path.parent().unwrap_or(Path::new(".")).join(p)
        } else {
            p
        }
    }

    /// `"FILE, line N: key K"` for a key path like `["grid", "model", "1"]`, as far as the
    /// file has it.
    pub fn locate(&self, key_path: &[&str]) -> String {
        let line = key_line(&self.text, key_path)
            .map(|l| format!(", line {l}"))
            .unwrap_or_default();
        format!("{}{line}: {}", self.path.display(), key_path.join("."))
    }
}

/// The 1-based line of byte offset `at`.
pub fn line_of(text: &str, at: usize) -> usize {
    text[..at.min(text.len())].matches('\n').count() + 1
}

/// The line where the value at `key_path` starts (array indices as numbers).
fn key_line(text: &str, key_path: &[&str]) -> Option<usize> {
    use toml::de::{DeTable, DeValue};
    let root = DeTable::parse(text).ok()?;
    let mut span = root.span();
    let mut table = Some(root.get_ref());
    let mut array = None;
    for key in key_path {
        let value = if let Some(t) = table {
            let (_, v) = t.iter().find(|(k, _)| k.get_ref() == key)?;
            v
        } else {
            let a: &toml::de::DeArray = array?;
            a.get(key.parse::<usize>().ok()?)?
        };
        span = value.span();
        (table, array) = match value.get_ref() {
            DeValue::Table(t) => (Some(t), None),
            DeValue::Array(a) => (None, Some(a)),
            _ => (None, None),
        };
    }
    Some(line_of(text, span.start))
}

/// Refuse a training setting that the cells reading the settings at `at` (a key path of the
/// file: `["train"]`, `["models", "m", "train"]`, `["grid", "train"]`) do not read: `unread`
/// names them, `cells` the cells (`LoRA cells`). An unread setting would be accepted and
/// ignored, so it is an error naming its line.
pub fn refuse_unread(
    file: &ExperimentFile,
    at: &[&str],
    set: &[&str],
    unread: &[&str],
    cells: &str,
) -> Result<()> {
    if let Some(key) = set.iter().find(|k| unread.contains(k)) {
        let mut path = at.to_vec();
        path.push(key);
        bail!(
            "{}: {cells} do not read `{key}` (settings they do not read: {}); remove it, or \
             put it where only the cells that read it see it",
            file.locate(&path),
            unread.join(", ")
        );
    }
    Ok(())
}

/// Make sure a value has the shape of a setting, for axis values: `bail!` with the reason.
pub(crate) fn setting_from_value(name: &str, value: &toml::Value) -> Result<TrainOverrides> {
    let mut table = toml::Table::new();
    table.insert(name.to_owned(), value.clone());
    toml::Value::Table(table)
        .try_into::<TrainOverrides>()
        .map_err(|e| anyhow::anyhow!("{}", e.message().trim_end()))
        .and_then(|o| {
            if o == TrainOverrides::default() {
                bail!("`{name}` is not a training setting")
            }
            Ok(o)
        })
}

/// Key paths (array indices as numbers).
type KeySet = BTreeSet<Vec<String>>;

/// Parse one view of `text`: the value, and the key paths it did not read.
fn parse_view<T: DeserializeOwned>(path: &Path, text: &str) -> Result<(T, KeySet)> {
    let located = |e: toml::de::Error| {
        let line = e
            .span()
            .map(|s| format!(", line {}", line_of(text, s.start)))
            .unwrap_or_default();
        anyhow::anyhow!("{}{line}: {}", path.display(), e.message().trim_end())
    };
    let de = toml::Deserializer::parse(text).map_err(located)?;
    let mut ignored = KeySet::new();
    let value = serde_ignored::deserialize(de, |p| {
        ignored.insert(key_path(&p));
    })
    .map_err(located)?;
    Ok((value, ignored))
}

/// A `serde_ignored` path as keys.
fn key_path(p: &serde_ignored::Path<'_>) -> Vec<String> {
    use serde_ignored::Path as P;
    match p {
        P::Root => Vec::new(),
        P::Seq { parent, index } => {
            let mut v = key_path(parent);
            v.push(index.to_string());
            v
        }
        P::Map { parent, key } => {
            let mut v = key_path(parent);
            v.push(key.clone());
            v
        }
        P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => {
            key_path(parent)
        }
    }
}

/// The kinds' views of one experiment file: each kind's sections are a type that reads its
/// own keys of the shared text (its top-level sections, its `[grid]` axes, its keys of a model
/// table) and leaves the others. [`Self::finish`] reports a key that no view read, with its
/// line, so unknown keys are errors anywhere while no type lists another kind's keys.
pub struct Views<'a> {
    file: &'a ExperimentFile,
    ignored: Vec<KeySet>,
}

impl<'a> Views<'a> {
    /// Start with the shared sections' view.
    pub fn new(file: &'a ExperimentFile) -> Self {
        Self {
            file,
            ignored: vec![file.ignored.clone()],
        }
    }

    /// Read one kind's view.
    pub fn read<T: DeserializeOwned>(&mut self) -> Result<T> {
        let (value, ignored) = parse_view(&self.file.path, &self.file.text)?;
        self.ignored.push(ignored);
        Ok(value)
    }

    /// An error for the first key (in file order) that every view left unread.
    pub fn finish(self) -> Result<()> {
        let left =
            |view: &KeySet, key: &[String]| (0..=key.len()).any(|n| view.contains(&key[..n]));
        let mut unknown: Vec<(usize, &Vec<String>)> = self
            .ignored
            .iter()
            .flatten()
            .filter(|key| self.ignored.iter().all(|view| left(view, key)))
            .map(|key| {
                let refs: Vec<&str> = key.iter().map(String::as_str).collect();
                (key_line(&self.file.text, &refs).unwrap_or(0), key)
            })
            .collect();
        unknown.sort();
        if let Some((_, key)) = unknown.first() {
            let refs: Vec<&str> = key.iter().map(String::as_str).collect();
            let last = key.last().map_or("", String::as_str);
            let within = if key.len() > 1 {
                format!(" in `{}`", key[..key.len() - 1].join("."))
            } else {
                String::new()
            };
            bail!(
                "{}: unknown key `{last}`{within} (no kind of cell reads it)",
                self.file.locate(&refs)
            );
        }
        Ok(())
    }
}
