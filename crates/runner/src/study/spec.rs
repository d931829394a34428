//! The TOML sections of neuron studies: `[texts.*]`, `[studies.*]` and the grid's `study` axis
//! ([`Sections`]).
//!
//! ```toml
//! [texts.udhr]                             # language → file
//! format = "lines"                         # lines | whole | jsonl | parquet (+ `field`)
//! files = { en = "${ARTEFACTS}/udhr/eng.txt", fr = "${ARTEFACTS}/udhr/fra.txt" }
//!
//! [studies.lape]
//! texts = ["udhr"]
//! method = "lape"                          # lape | percentile | average-precision | file
//! variant = "tang"                         # or "mondal"
//! window = 128
//! budget_tokens = 2048                     # per language, for statistics
//! intervention = "zero"                    # zero | mean | a number | none
//!
//! [grid]
//! model = ["smollm2"]
//! study = ["lape"]
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::harness::experiment::{InterventionSpec, set_axes};

/// The sections neuron studies read from an experiment file.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Sections {
    /// Named multilingual texts.
    #[serde(default)]
    pub texts: BTreeMap<String, TextSpec>,
    /// Named neuron studies.
    #[serde(default)]
    pub studies: BTreeMap<String, StudySpec>,
    /// Its grid axis.
    #[serde(default)]
    pub grid: Axes,
}

/// Neuron studies' axis of `[grid]` (crossed with `grid.model` and `grid.seed`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Axes {
    /// Neuron studies.
    #[serde(default)]
    pub study: Vec<String>,
}

impl Axes {
    /// The axes that are set.
    pub fn used(&self) -> Vec<&'static str> {
        set_axes(&[("study", !self.study.is_empty())])
    }
}

/// How a text file holds its documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TextFileFormat {
    /// One document per non-empty line.
    Lines,
    /// The whole file is one document.
    Whole,
    /// JSON lines; `field` holds the text.
    Jsonl,
    /// Parquet; the string column `field` holds the text.
    Parquet,
}

/// Named multilingual text: one file per language, all in one format.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextSpec {
    /// The files' format.
    pub format: TextFileFormat,
    /// The text's key (JSONL) or column (Parquet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Language code → file.
    pub files: BTreeMap<String, PathBuf>,
}

/// How a study chooses its neurons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StudyMethod {
    /// Language activation probability entropy (Tang et al.; `variant = "mondal"` for Mondal et
    /// al.'s computation).
    Lape,
    /// Mondal et al.'s activation probability above the language's mean per-batch percentile,
    /// top `rate · L · I` per language.
    Percentile,
    /// Kojima et al.'s average-precision ranking, top and bottom `top_n` per language.
    AveragePrecision,
    /// Sets read from a file (`neurons`, JSON or Parquet with a language on every row), e.g. a
    /// released set or another run's `neurons.parquet`: only the interventions run.
    File,
}

/// Which LAPE computation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LapeVariantSpec {
    /// `RUCAIBox/Language-Specific-Neurons`.
    Tang,
    /// `soumenkm/LSN`.
    Mondal,
}

/// A neuron study: statistics over the texts, a selection, interventions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StudySpec {
    /// The texts to read (names of `[texts.*]`); a language's windows come from all of them.
    pub texts: Vec<String>,
    /// The languages, in table order (default: every language of the texts, alphabetically).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub languages: Vec<String>,
    /// How neurons are chosen.
    pub method: StudyMethod,
    /// LAPE: `tang` (default) or `mondal`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<LapeVariantSpec>,
    /// LAPE: the fraction of all neurons kept by entropy (default 0.01).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_rate: Option<f64>,
    /// LAPE: the quantile of all probabilities a language must exceed (default 0.95).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter_rate: Option<f64>,
    /// LAPE (Tang): the activation bar's quantile (default 0.95).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation_bar_ratio: Option<f64>,
    /// Percentile: the fraction of all neurons kept per language (default 0.00125).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    /// Average precision: units kept from each end of the ranking (default 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_n: Option<usize>,
    /// File: the neuron sets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub neurons: Option<PathBuf>,
    /// Statistics files to use instead of collecting them (shards of a corpus counted elsewhere,
    /// merged here); they must be of this model and cover every language.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub statistics: Vec<PathBuf>,
    /// The per-batch percentile collected with the statistics (default 0.9, Mondal's p90).
    #[serde(default = "default_quantile")]
    pub quantile: f64,
    /// Tokens per window (Tang: 4096, Mondal: 512).
    #[serde(default = "default_window")]
    pub window: usize,
    /// Windows per forward pass (Mondal: 4; the per-batch percentile depends on it).
    #[serde(default = "default_study_batch")]
    pub batch_size: usize,
    /// Fraction of each text's windows held out for the perplexity matrices.
    #[serde(default = "default_held_out")]
    pub held_out_fraction: f64,
    /// At most this many tokens per language for statistics (default: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_tokens: Option<usize>,
    /// At most this many held-out tokens per language for the matrices (default: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_tokens: Option<usize>,
    /// What a language's neurons are set to: `zero`, `mean`, `mean_p<NN>`, `on_p50` (Kojima et
    /// al.'s median response over the language's statistics windows), a number, or `none` (no
    /// matrices).
    #[serde(default = "default_intervention")]
    pub intervention: InterventionSpec,
    /// Where the neurons are set: `activation` (after SiLU, as Tang et al. and Mondal et al.)
    /// or `gate` (the gate's linear output before SiLU, where Kojima et al. force their units,
    /// with `on_p50`).
    #[serde(default, skip_serializing_if = "is_activation")]
    pub intervention_point: InterventionPoint,
    /// Also run the matrices with random neurons of the same per-layer counts.
    #[serde(default = "default_true")]
    pub random_control: bool,
}

/// Where a study's intervention replaces the neurons ([`models::ReplaceAt`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InterventionPoint {
    /// After the activation, `silu(gate_proj(x))`.
    #[default]
    Activation,
    /// The gate's linear output `gate_proj(x)`, before SiLU.
    Gate,
}

impl From<InterventionPoint> for models::ReplaceAt {
    fn from(p: InterventionPoint) -> Self {
        match p {
            InterventionPoint::Activation => Self::Activation,
            InterventionPoint::Gate => Self::Gate,
        }
    }
}

fn is_activation(p: &InterventionPoint) -> bool {
    *p == InterventionPoint::Activation
}

/// The method's name as written in TOML.
pub fn method_name(m: StudyMethod) -> &'static str {
    match m {
        StudyMethod::Lape => "lape",
        StudyMethod::Percentile => "percentile",
        StudyMethod::AveragePrecision => "average-precision",
        StudyMethod::File => "file",
    }
}

fn default_quantile() -> f64 {
    0.9
}
fn default_window() -> usize {
    512
}
fn default_study_batch() -> usize {
    4
}
fn default_held_out() -> f64 {
    0.2
}
fn default_intervention() -> InterventionSpec {
    InterventionSpec::zero()
}
fn default_true() -> bool {
    true
}
