//! Experiment files (TOML): named models, datasets and losses, training settings, grid axes.
//!
//! ```toml
//! name = "quickstart"                      # results go to DIR/<name>/
//!
//! [train]                                  # settings for every cell (defaults below)
//! epochs = 1
//! batch_size = 16
//!
//! [models.minilm]
//! path = "${ARTEFACTS}/all-MiniLM-L6-v2"   # ${ARTEFACTS}: the fetched-artefact cache
//! kind = "encoder"
//! train = { learning_rate = 5e-5 }        # per-model overrides
//!
//! [datasets.polarity]
//! path = "${ARTEFACTS}/rt-polarity"
//! format = "jsonl"
//! task = "classification"
//! columns = { text = "sentence", label = "label" }
//! train = { epochs = 2 }                   # per-dataset overrides
//!
//! [losses.cmp2]
//! kind = "comparative"
//! n_drop = 2
//!
//! [grid]
//! model = ["minilm"]                       # or `pairs = [{ model = "minilm", dataset = "polarity" }]`
//! dataset = ["polarity"]
//! loss = ["baseline", "cmp2"]              # `baseline` is predefined
//! seed = [1, 2, 3]
//! train = { learning_rate = [2e-5, 5e-5] } # any training setting as an axis
//! ```
//!
//! A grid of neuron studies names texts and studies instead of datasets and losses:
//!
//! ```toml
//! name = "lape"
//!
//! [models.smollm2]
//! path = "${ARTEFACTS}/smollm2-135m-instruct"
//! kind = "decoder"
//!
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
//!
//! A grid of cross-lingual fine-tuning cells (LoRA on a decoder classifier; see
//! [`crate::lora`]) names tasks and neuron sets; studies of the same file run first and feed
//! them:
//!
//! ```toml
//! [tasks.xnli]
//! format = "xnli"                          # or "jsonl" with text / text_pair / label / classes
//! train = { en = "${XNLI_DIR}/multinli.train.en.tsv" }
//! eval = { vi = "${XNLI_DIR}/xnli.test.tsv", hi = "${XNLI_DIR}/xnli.test.tsv" }
//!
//! [tasks.xquad]                            # generative QA (crate::lora::generative)
//! format = "xquad"
//! train = { en = "${XQUAD_DIR}/xquad.en.json" }
//! eval = { hi = "${XQUAD_DIR}/xquad.hi.json" }
//! split = 0.8                              # train on the first 80 %, evaluate the last 20 %
//! settings = { epochs = 10, batch_size = 4, learning_rate = 5e-5 }
//! lora = { targets = ["q_proj", "k_proj", "v_proj"], rank = 64 }
//!
//! [lora]
//! targets = ["q_proj", "k_proj", "v_proj", "o_proj"]
//! rank = 8                                 # alpha = 2 rank unless set
//! neurons_from = "lape"                    # a study of this grid (or neurons_file = "...")
//!
//! [grid]
//! model = ["smollm2"]
//! study = ["lape"]
//! task = ["xnli", "xquad"]
//! neurons = ["none", "en", "target", "random:target"]
//! seed = [1, 2, 3]
//! ```
//!
//! Settings resolve in this order, later wins: built-in defaults, `[train]`, the dataset's
//! `train`, the model's `train`, the loss's `train` (comparative losses), the grid axis. In a
//! fine-tuning grid: defaults, `[train]`, the model's `train`, the task's `settings`, the grid
//! axis; and for the adapter `[lora]`, the model's `lora`, the task's `lora`. A pair
//! in `grid.pairs` may name its own losses (`{ model, dataset, loss = [...] }`). Unknown keys anywhere are errors naming the file,
//! line and key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use neurons::InterventionValue;
use serde::{Deserialize, Serialize};

/// An experiment file as written (before grid expansion).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
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
    /// Named datasets.
    #[serde(default)]
    pub datasets: BTreeMap<String, DatasetSpec>,
    /// Named multilingual texts (neuron studies).
    #[serde(default)]
    pub texts: BTreeMap<String, TextSpec>,
    /// Named neuron studies.
    #[serde(default)]
    pub studies: BTreeMap<String, StudySpec>,
    /// Named losses (`baseline` is predefined).
    #[serde(default)]
    pub losses: BTreeMap<String, LossSpec>,
    /// Named cross-lingual fine-tuning tasks (LoRA on a decoder).
    #[serde(default)]
    pub tasks: BTreeMap<String, TaskSpec>,
    /// The adapter of every fine-tuning cell.
    #[serde(default)]
    pub lora: LoraSpec,
    /// The grid axes.
    pub grid: GridSpec,
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

/// A named model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// Checkpoint directory.
    pub path: PathBuf,
    /// What the checkpoint is.
    pub kind: ModelKind,
    /// Settings for this model's cells.
    #[serde(default)]
    pub train: TrainOverrides,
    /// This model's LoRA rank and α, instead of `[lora]`'s (Mondal et al. use r = 8 for Llama
    /// 3.1 8B and r = 64 for Mistral Nemo).
    #[serde(default, skip_serializing_if = "LoraOverrides::is_empty")]
    pub lora: LoraOverrides,
}

/// Per-model or per-task LoRA settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoraOverrides {
    /// The linears with an ordinary adapter (Mondal et al.'s XQuAD model: q, k, v).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub targets: Option<Vec<String>>,
    /// The rank.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rank: Option<usize>,
    /// α.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpha: Option<f64>,
}

impl LoraOverrides {
    /// Whether nothing is set.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Apply the settings that are set to `spec`.
    pub fn apply_to(&self, spec: &mut LoraSpec) {
        if let Some(t) = &self.targets {
            spec.targets = t.clone();
        }
        if let Some(r) = self.rank {
            spec.rank = r;
        }
        if self.alpha.is_some() {
            spec.alpha = self.alpha;
        }
    }
}

/// The task a dataset trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Task {
    /// Single-label classification (cross-entropy).
    Classification,
    /// One real-valued target (MSE), e.g. STS-B.
    Regression,
    /// Answer spans in a context (SQuAD v1.1, HotpotQA): start/end cross-entropy, scored by
    /// SQuAD exact match and F1.
    ExtractiveQa,
    /// Re-ranking candidate passages with a cross-encoder: listwise cross-entropy, scored by
    /// MRR@10, nDCG@10 and recall@1000.
    Ranking,
}

/// The file format of a dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DatasetFormat {
    /// A GLUE task folder as distributed (`train.tsv`, `dev.tsv`, …); `glue` names the task.
    Glue,
    /// JSON lines.
    Jsonl,
    /// Comma-separated values with a header.
    Csv,
    /// Parquet.
    Parquet,
    /// SQuAD v1.1 JSON (`train-v1.1.json`, `dev-v1.1.json`): extractive QA.
    Squad,
    /// HotpotQA distractor JSON (`hotpot_train_v1.1.json`, `hotpot_dev_distractor_v1.json`):
    /// extractive QA over ten paragraphs, with yes/no answers.
    Hotpot,
    /// Passage ranking (MS MARCO, TREC DL): collection, queries, qrels and candidate runs, named
    /// in `ranking = { … }`.
    Ranking,
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

/// Extractive-QA settings of a dataset (defaults: the CmpLoss SQuAD scripts').
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QaSettings {
    /// Overlap of consecutive windows of a long context, in tokens.
    #[serde(default = "default_doc_stride")]
    pub doc_stride: usize,
    /// The longest answer span decoded, in tokens.
    #[serde(default = "default_max_answer_length")]
    pub max_answer_length: usize,
    /// Start and end candidates paired per window in decoding.
    #[serde(default = "default_n_best")]
    pub n_best: usize,
}

impl Default for QaSettings {
    fn default() -> Self {
        Self {
            doc_stride: default_doc_stride(),
            max_answer_length: default_max_answer_length(),
            n_best: default_n_best(),
        }
    }
}

fn default_doc_stride() -> usize {
    128
}
fn default_max_answer_length() -> usize {
    30
}
fn default_n_best() -> usize {
    20
}

/// The files and settings of a ranking dataset (paths relative to the dataset's `path`).
///
/// Candidate files are TREC runs (`qid Q0 pid rank score tag`) or MS MARCO's `top1000` TSV
/// (`qid pid query passage`, which carries its own texts). Training reads either `train_triples`
/// (MS MARCO's `query positive negative` texts) or `train_candidates` with `train_qrels`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RankingSpec {
    /// Passage texts, `pid<TAB>text` (MS MARCO's `collection.tsv`).
    #[serde(default)]
    pub collection: Option<String>,
    /// Training query texts, `qid<TAB>text`.
    #[serde(default)]
    pub train_queries: Option<String>,
    /// Training judgements (qrels).
    #[serde(default)]
    pub train_qrels: Option<String>,
    /// Training candidates (negatives are the candidates not judged relevant).
    #[serde(default)]
    pub train_candidates: Option<String>,
    /// Training triples, `query<TAB>positive<TAB>negative` texts.
    #[serde(default)]
    pub train_triples: Option<String>,
    /// Evaluation query texts, `qid<TAB>text`.
    #[serde(default)]
    pub eval_queries: Option<String>,
    /// Evaluation judgements (qrels).
    pub eval_qrels: String,
    /// Evaluation candidates to re-rank.
    pub eval_candidates: String,
    /// Candidates per training query: one relevant passage and `group_size - 1` negatives.
    #[serde(default = "default_group_size")]
    pub group_size: usize,
    /// Re-ranking depth: the first candidates of each evaluation query, in file order.
    #[serde(default = "default_max_candidates")]
    pub max_candidates: usize,
    /// The lowest grade that counts as relevant in evaluation (TREC DL: 2 for MRR and recall;
    /// training counts every grade ≥ 1).
    #[serde(default = "default_relevance_level")]
    pub relevance_level: i32,
    /// The metric that selects the best evaluation: `mrr@10` (MS MARCO) or `ndcg@10` (TREC DL).
    #[serde(default = "default_rank_metric")]
    pub metric: RankMetric,
}

impl RankingSpec {
    /// The dataset's files, resolved: each name with its variables expanded (`${ARTEFACTS}` is
    /// `artefacts`), relative to the dataset's folder `dir` (an absolute name, e.g.
    /// `${MSMARCO_DIR}/triples.train.small.tsv`, stands).
    pub fn resolve(&self, dir: &Path, artefacts: &Path) -> RankingFiles {
        let file = |name: &str| dir.join(expand_vars(name, artefacts));
        let named = |name: &Option<String>| name.as_deref().map(file);
        RankingFiles {
            collection: named(&self.collection),
            train_queries: named(&self.train_queries),
            train_qrels: named(&self.train_qrels),
            train_candidates: named(&self.train_candidates),
            train_triples: named(&self.train_triples),
            eval_queries: named(&self.eval_queries),
            eval_qrels: file(&self.eval_qrels),
            eval_candidates: file(&self.eval_candidates),
        }
    }
}

/// The files of a [`RankingSpec`], resolved at expansion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RankingFiles {
    /// `collection`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collection: Option<PathBuf>,
    /// `train_queries`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_queries: Option<PathBuf>,
    /// `train_qrels`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_qrels: Option<PathBuf>,
    /// `train_candidates`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_candidates: Option<PathBuf>,
    /// `train_triples`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_triples: Option<PathBuf>,
    /// `eval_queries`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_queries: Option<PathBuf>,
    /// `eval_qrels`.
    pub eval_qrels: PathBuf,
    /// `eval_candidates`.
    pub eval_candidates: PathBuf,
}

impl RankingFiles {
    /// Every file named, in the order of the fields.
    pub fn all(&self) -> impl Iterator<Item = &Path> {
        [
            &self.collection,
            &self.train_queries,
            &self.train_qrels,
            &self.train_candidates,
            &self.train_triples,
            &self.eval_queries,
        ]
        .into_iter()
        .flatten()
        .chain([&self.eval_qrels, &self.eval_candidates])
        .map(PathBuf::as_path)
    }
}

/// The metric that selects a ranking cell's best evaluation. In experiment files by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum RankMetric {
    /// `mrr@10` (MS MARCO).
    MrrAt10,
    /// `ndcg@10` (TREC DL).
    NdcgAt10,
    /// `recall@1000`.
    RecallAt1000,
}

impl RankMetric {
    /// Every metric a ranking cell reports, in report order.
    pub const ALL: [Self; 3] = [Self::MrrAt10, Self::NdcgAt10, Self::RecallAt1000];

    /// Its name in experiment files and results.
    pub const fn name(self) -> &'static str {
        match self {
            Self::MrrAt10 => "mrr@10",
            Self::NdcgAt10 => "ndcg@10",
            Self::RecallAt1000 => "recall@1000",
        }
    }
}

impl TryFrom<String> for RankMetric {
    type Error = String;

    fn try_from(name: String) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|m| m.name() == name)
            .ok_or_else(|| {
                let all: Vec<&str> = Self::ALL.iter().map(|m| m.name()).collect();
                format!(
                    "ranking.metric = {name:?}: expected one of {}",
                    all.join(", ")
                )
            })
    }
}

impl From<RankMetric> for String {
    fn from(m: RankMetric) -> Self {
        m.name().to_owned()
    }
}

fn default_group_size() -> usize {
    8
}
fn default_max_candidates() -> usize {
    1000
}
fn default_relevance_level() -> i32 {
    1
}
fn default_rank_metric() -> RankMetric {
    RankMetric::MrrAt10
}

/// Column names of a generic (JSONL / CSV / Parquet) dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Columns {
    /// The text (first segment).
    pub text: String,
    /// The second segment of a pair task, if any.
    #[serde(default)]
    pub text_pair: Option<String>,
    /// The label (an integer class, a class name, or a number for regression).
    pub label: String,
}

/// A named dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetSpec {
    /// The dataset folder.
    pub path: PathBuf,
    /// Its file format.
    pub format: DatasetFormat,
    /// The task.
    pub task: Task,
    /// For `format = "glue"`: the GLUE task (`CoLA`, `SST-2`, `MRPC`, `STS-B`, `QQP`, `MNLI`,
    /// `MNLI-mm`, `QNLI`, `RTE`).
    #[serde(default)]
    pub glue: Option<String>,
    /// For generic formats: the columns.
    #[serde(default)]
    pub columns: Option<Columns>,
    /// Class names, in label order (integer labels index them; string labels are looked up).
    #[serde(default)]
    pub labels: Option<Vec<String>>,
    /// The training split's file, relative to `path` (generic formats).
    #[serde(default)]
    pub train_file: Option<String>,
    /// The evaluation split's file, relative to `path` (generic formats).
    #[serde(default)]
    pub eval_file: Option<String>,
    /// Extractive-QA settings (`squad`, `hotpot`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qa: Option<QaSettings>,
    /// Ranking files and settings (`format = "ranking"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ranking: Option<RankingSpec>,
    /// Settings for this dataset's cells.
    #[serde(default)]
    pub train: TrainOverrides,
}

/// The dummy target of the comparative loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Target {
    /// b = 0.
    Ultra,
    /// b = min over views.
    Best,
    /// As the official code's `first`.
    First,
}

/// How the comparative loss is optimised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CmpMode {
    /// The comparative loss alone (`--just_cmp`, the official runs' default).
    Comparative,
    /// A primary task loss plus `weight` × the pairwise hinge without the dummy.
    Weighted,
}

/// The primary loss of weighted mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PrimarySpec {
    /// The largest view loss.
    Max,
    /// The mean of the view losses.
    Avg,
    /// The full model's loss.
    First,
    /// The most ablated view's loss.
    Last,
}

/// A named loss.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum LossSpec {
    /// The task loss of the full model with ordinary dropout.
    Baseline,
    /// The cross-model comparative loss (CmpLoss).
    Comparative {
        /// Nested dropout views.
        #[serde(default)]
        n_drop: u32,
        /// Nested input views (tasks with segmented inputs).
        #[serde(default)]
        n_crop: usize,
        /// Base dropout rate; default: the model's own (`hidden_dropout_prob`).
        #[serde(default)]
        p: Option<f64>,
        /// Dummy target.
        #[serde(default = "default_target")]
        target: Target,
        /// Optimisation mode.
        #[serde(default = "default_mode")]
        mode: CmpMode,
        /// Primary loss of weighted mode.
        #[serde(default)]
        primary: Option<PrimarySpec>,
        /// Weight of the hinge in weighted mode.
        #[serde(default)]
        weight: Option<f64>,
        /// Temperature T (the hinge acts on -l / T).
        #[serde(default = "default_temperature")]
        temperature: f64,
        /// Training settings of this loss's cells (the paper tunes the comparative runs
        /// separately from the baselines); they override the dataset's and the model's.
        #[serde(default, skip_serializing_if = "TrainOverrides::is_empty")]
        train: Box<TrainOverrides>,
    },
}

fn default_target() -> Target {
    Target::Ultra
}
fn default_mode() -> CmpMode {
    CmpMode::Comparative
}
fn default_temperature() -> f64 {
    1.0
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
    /// Write a checkpoint at every evaluation, so that a killed run resumes from it.
    pub checkpoints: Option<bool>,
    /// Save the best model as an HF checkpoint in the run folder (`model/`).
    pub save_model: Option<bool>,
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
    /// See [`TrainOverrides::checkpoints`].
    pub checkpoints: bool,
    /// See [`TrainOverrides::save_model`].
    pub save_model: bool,
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
            checkpoints: true,
            save_model: false,
        }
    }
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
}

impl TrainConfig {
    /// Apply the settings `o` sets.
    pub fn apply(&mut self, o: &TrainOverrides) {
        macro_rules! set {
            ($($f:ident),*) => { $( if let Some(v) = &o.$f { self.$f = v.clone(); } )* };
        }
        set!(
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
            checkpoints,
            save_model
        );
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
        let checks: [(bool, &str); 10] = [
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
            (self.max_seq_len >= 2, "max_seq_len must be >= 2"),
            (
                self.ablation_rates.iter().all(|r| (0.0..1.0).contains(r)),
                "ablation_rates must lie in [0, 1)",
            ),
        ];
        match checks.iter().find(|(ok, _)| !ok) {
            Some((_, msg)) => Err(msg.to_string()),
            None => Ok(()),
        }
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
    /// What a language's neurons are set to: `zero`, `mean`, a number, or `none` (no matrices).
    #[serde(default = "default_intervention")]
    pub intervention: InterventionSpec,
    /// Also run the matrices with random neurons of the same per-layer counts.
    #[serde(default = "default_true")]
    pub random_control: bool,
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
    InterventionSpec {
        text: "zero".into(),
        value: Some(InterventionValue::Zero),
    }
}
fn default_true() -> bool {
    true
}

/// The file format of a cross-lingual task's files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TaskFormat {
    /// JSON lines with the fields `text`, `text_pair` (optional) and `label` name.
    Jsonl,
    /// XNLI as distributed ([`crate::data::crosslingual::read_xnli`]): an XNLI-1.0 TSV with a
    /// `language` column (only the rows of the file's language key are read), an XNLI-MT TSV,
    /// or JSON lines with `premise`, `hypothesis`, `label`. The classes are XNLI's three.
    Xnli,
    /// Extractive QA as generation: SQuAD v1.1-format JSON (XQuAD's `xquad.<lang>.json`),
    /// Mondal et al.'s Alpaca instruction prompt, the LM loss over the whole sequence, greedy
    /// decoding, EM/F1 on token ids and on SQuAD-normalised strings ([`crate::lora::generative`]).
    Xquad,
}

/// A `grid.neurons` value, parsed when the file is read. It keeps its text as written, which is
/// what results and run ids show.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NeuronChoice {
    /// As written.
    text: String,
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
            return Ok(Self::none());
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
        Ok(Self {
            text: text.to_owned(),
            languages,
            random,
        })
    }

    /// `none`: plain LoRA, no neuron set.
    pub fn none() -> Self {
        Self {
            text: "none".into(),
            languages: Vec::new(),
            random: false,
        }
    }

    /// The value as written.
    pub fn as_str(&self) -> &str {
        &self.text
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

impl TryFrom<String> for NeuronChoice {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        Self::parse(&text).map_err(|m| format!("grid.neurons: {m}"))
    }
}

impl From<NeuronChoice> for String {
    fn from(c: NeuronChoice) -> Self {
        c.text
    }
}

/// A test-time intervention on a language's neurons as written: `none`, `zero`, `mean` or a
/// number; parsed when the file is read, kept with its text (results and run ids show it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct InterventionSpec {
    text: String,
    value: Option<InterventionValue>,
}

impl InterventionSpec {
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
                    "intervention: expected \"none\", \"zero\", \"mean\" or a number, got {v:?}"
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

/// How a LoRA adapter's `A` is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LoraInitSpec {
    /// `N(0, 0.01²)`, as Mondal et al.
    Normal,
    /// Kaiming-uniform, PEFT's default.
    Kaiming,
}

/// The token a decoder classifier reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClassifierPosition {
    /// The last non-padding token of each row.
    LastNonPadding,
    /// The padded batch's last position, as Mondal et al.'s XNLI code.
    Last,
}

/// A cross-lingual classification task: a decoder with a linear head on one token, fine-tuned
/// with LoRA on one language's training file and evaluated on every evaluation file (the
/// zero-shot cross-lingual protocol of Mondal et al.).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    /// The files' format.
    pub format: TaskFormat,
    /// JSONL: the text's key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// JSONL: the second segment's key; the input is `text <eos> text_pair` (as Mondal et al.'s
    /// `premise {eos} hypothesis`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_pair: Option<String>,
    /// JSONL: the label's key (a class name, or an integer class index).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// The shared classes, in label order (XNLI: its three, the default).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub classes: Vec<String>,
    /// Per language, each raw label → its shared class (languages without a map use the class
    /// names themselves).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub label_map: BTreeMap<String, BTreeMap<String, String>>,
    /// Per language, raw labels whose examples are left out (topics with no shared class); any
    /// other label outside the map is an error.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub drop_labels: BTreeMap<String, Vec<String>>,
    /// The training file: exactly one language → file.
    pub train: BTreeMap<String, PathBuf>,
    /// Evaluation files: language → file.
    pub eval: BTreeMap<String, PathBuf>,
    /// Split parallel files: the training file keeps its first `split` fraction of examples
    /// and every evaluation file its last `1 − split` (Mondal et al.'s XQuAD protocol, 0.8:
    /// XQuAD has only a validation split, the same questions in every language, so the
    /// evaluation questions are never trained on). Unset: whole files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<f64>,
    /// `xquad`: tokens generated at most per answer (default 100, as Mondal et al.).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_new_tokens: Option<usize>,
    /// Training settings of this task's cells, over `[train]` and the model's.
    #[serde(default, skip_serializing_if = "TrainOverrides::is_empty")]
    pub settings: TrainOverrides,
    /// LoRA settings of this task's cells (`targets`, `rank`, `alpha`), over `[lora]` and the
    /// model's.
    #[serde(default, skip_serializing_if = "LoraOverrides::is_empty")]
    pub lora: LoraOverrides,
}

/// The adapter of the fine-tuning cells (`[lora]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoraSpec {
    /// Linears with an ordinary (unmasked) adapter in every layer; a neuron set adds a masked
    /// `gate_proj` adapter. Default: `q_proj`, `k_proj`, `v_proj`, `o_proj` (Mondal et al.'s
    /// XNLI classifier).
    #[serde(default = "default_lora_targets")]
    pub targets: Vec<String>,
    /// The rank r (default 8).
    #[serde(default = "default_rank")]
    pub rank: usize,
    /// α (default 2r, as Mondal et al.).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpha: Option<f64>,
    /// How `A` is drawn: `normal` (N(0, 0.01²), Mondal et al.) or `kaiming` (PEFT's default).
    #[serde(default = "default_lora_init")]
    pub init: LoraInitSpec,
    /// The token the classifier reads: `last-non-padding` (default) or `last` (the padded
    /// batch's last position, as Mondal et al.'s XNLI code).
    #[serde(default = "default_position")]
    pub position: ClassifierPosition,
    /// Where language neuron sets come from: a study of this file (run in this grid, before
    /// the fine-tuning cells).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub neurons_from: Option<String>,
    /// Or a file of sets (JSON or Parquet with a language on every row, e.g. a study's
    /// `neurons.parquet`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub neurons_file: Option<PathBuf>,
    /// A test-time intervention on the evaluation language's neurons: `none` (default), `zero`,
    /// a number, or `mean` (needs `neurons_from`). Each language is then evaluated twice:
    /// as trained, and with the intervention.
    #[serde(default = "default_none")]
    pub intervention: InterventionSpec,
}

impl Default for LoraSpec {
    fn default() -> Self {
        toml::from_str("").expect("every field has a default")
    }
}

impl LoraSpec {
    /// α: as written, or 2r.
    pub fn alpha(&self) -> f64 {
        self.alpha.unwrap_or(2.0 * self.rank as f64)
    }
}

fn default_lora_targets() -> Vec<String> {
    ["q_proj", "k_proj", "v_proj", "o_proj"]
        .map(String::from)
        .to_vec()
}
fn default_rank() -> usize {
    8
}
fn default_lora_init() -> LoraInitSpec {
    LoraInitSpec::Normal
}
fn default_position() -> ClassifierPosition {
    ClassifierPosition::LastNonPadding
}
fn default_none() -> InterventionSpec {
    InterventionSpec {
        text: "none".into(),
        value: None,
    }
}

/// A model paired with a dataset (instead of the cross product).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pair {
    /// Model name.
    pub model: String,
    /// Dataset name.
    pub dataset: String,
    /// The losses of this pair, instead of `grid.loss` (the paper uses a different c and
    /// target per dataset).
    #[serde(default)]
    pub loss: Vec<String>,
}

/// The grid axes.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GridSpec {
    /// Models (crossed with `dataset`).
    #[serde(default)]
    pub model: Vec<String>,
    /// Datasets (crossed with `model`).
    #[serde(default)]
    pub dataset: Vec<String>,
    /// Explicit (model, dataset) pairs, instead of `model` × `dataset`.
    #[serde(default)]
    pub pairs: Vec<Pair>,
    /// Losses (default: `["baseline"]`).
    #[serde(default)]
    pub loss: Vec<String>,
    /// Seeds (default: `[1]`).
    #[serde(default)]
    pub seed: Vec<u64>,
    /// Neuron studies (crossed with `model` and `seed`), instead of datasets and losses.
    #[serde(default)]
    pub study: Vec<String>,
    /// Cross-lingual fine-tuning tasks (crossed with `model`, `neurons`, the training axes and
    /// `seed`).
    #[serde(default)]
    pub task: Vec<String>,
    /// Neuron sets of the fine-tuning cells: `none` (plain LoRA), a language (`en`), a union
    /// (`en+vi`), `target` (the evaluation language: one cell per evaluation language), a union
    /// with it (`en+target`), or any of these prefixed by `random:` (random neurons with the
    /// same per-layer counts, drawn with the cell's seed). Default: `["none"]`.
    #[serde(default)]
    pub neurons: Vec<NeuronChoice>,
    /// Training settings as axes: each key a setting, each value the list of its values.
    #[serde(default)]
    pub train: BTreeMap<String, toml::Value>,
}

/// An experiment file read from disk, with its text (for error locations).
#[derive(Debug, Clone)]
pub struct ExperimentFile {
    /// Where it was read from.
    pub path: PathBuf,
    /// The raw text.
    pub text: String,
    /// The parsed experiment (paths as written).
    pub experiment: Experiment,
    /// What `${ARTEFACTS}` stands for.
    pub artefacts: PathBuf,
}

impl ExperimentFile {
    /// Read and parse `path`; `${ARTEFACTS}` in paths stands for `artefacts` (see
    /// [`Self::resolve`]). A malformed file or an
    /// unknown key is an error naming the file, line and key.
    pub fn read(path: &Path, artefacts: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read experiment file {}", path.display()))?;
        Self::parse(path, text, artefacts)
    }

    /// Parse `text` as if read from `path`.
    pub fn parse(path: &Path, text: String, artefacts: &Path) -> Result<Self> {
        let experiment: Experiment = toml::from_str(&text).map_err(|e| {
            let line = e
                .span()
                .map(|s| format!(", line {}", line_of(&text, s.start)))
                .unwrap_or_default();
            anyhow::anyhow!("{}{line}: {}", path.display(), e.message().trim_end())
        })?;
        Ok(Self {
            path: path.to_owned(),
            text,
            experiment,
            artefacts: artefacts.to_owned(),
        })
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
