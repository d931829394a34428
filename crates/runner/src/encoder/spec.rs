//! The TOML sections of encoder fine-tuning: `[datasets.*]`, `[losses.*]` and the grid's
//! `dataset`, `pairs` and `loss` axes ([`Sections`]).
//!
//! ```toml
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
//! ```
//!
//! Settings resolve in this order, later wins: built-in defaults, `[train]`, the dataset's
//! `train`, the model's `train`, the loss's `train` (comparative losses), the grid axis.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::harness::experiment::{TrainOverrides, expand_vars, set_axes};

/// The sections encoder fine-tuning reads from an experiment file.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Sections {
    /// Named datasets.
    #[serde(default)]
    pub datasets: BTreeMap<String, DatasetSpec>,
    /// Named losses (`baseline` is predefined).
    #[serde(default)]
    pub losses: BTreeMap<String, LossSpec>,
    /// Its grid axes.
    #[serde(default)]
    pub grid: Axes,
}

/// Encoder fine-tuning's axes of `[grid]` (crossed with `grid.model`, `grid.train` and
/// `grid.seed`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Axes {
    /// Datasets (crossed with `model`).
    #[serde(default)]
    pub dataset: Vec<String>,
    /// Explicit (model, dataset) pairs, instead of `model` × `dataset`.
    #[serde(default)]
    pub pairs: Vec<Pair>,
    /// Losses (default: `["baseline"]`).
    #[serde(default)]
    pub loss: Vec<String>,
}

impl Axes {
    /// The axes that are set.
    pub fn used(&self) -> Vec<&'static str> {
        set_axes(&[
            ("dataset", !self.dataset.is_empty()),
            ("pairs", !self.pairs.is_empty()),
            ("loss", !self.loss.is_empty()),
        ])
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
    /// HotpotQA: read at most this many paragraphs per question, dropping distractors first in
    /// file order (the official `--max_p_num`, the paper's "effect of context size" study;
    /// [`crate::encoder::extractive::HotpotItem::keep_at_most`]). Unset: all ten.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_p_num: Option<usize>,
    /// HotpotQA: keep the question's first this many tokens (the official `--max_q_len`, 160
    /// in the paper's commands). Unset: the whole question.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_q_len: Option<usize>,
    /// HotpotQA: keep each paragraph text's first this many tokens, titles whole (the official
    /// `--max_p_len`, 256; [`crate::encoder::extractive::HotpotItem::truncate`]). Unset: whole
    /// paragraphs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_p_len: Option<usize>,
    /// HotpotQA: the input layout, `"official"` (the CmpLoss reader's tokens and markers; needs
    /// RoBERTa-BPE's `ĠYES ĠNO ???????? madeupword0000 madeupword0001`) or `"pair"` (the
    /// tokenizer's question–context pair, any tokenizer). Unset: `official` where the tokenizer
    /// has the markers, else `pair` ([`crate::encoder::extractive::hotpot`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layout: Option<HotpotLayoutKind>,
}

/// The HotpotQA input layouts a grid can ask for (see [`QaSettings::layout`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HotpotLayoutKind {
    /// The official reader's layout.
    Official,
    /// The tokenizer's pair layout.
    Pair,
}

impl Default for QaSettings {
    fn default() -> Self {
        Self {
            doc_stride: default_doc_stride(),
            max_answer_length: default_max_answer_length(),
            n_best: default_n_best(),
            max_p_num: None,
            max_q_len: None,
            max_p_len: None,
            layout: None,
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
    Baseline {
        /// `"off"` trains without dropout, as the official HotpotQA baseline (CmpQA's
        /// `self.eval()` quirk); unset, the task's official behaviour, which expansion records
        /// ([`StepDropout::baseline_default`]): `off` on HotpotQA, ordinary elsewhere.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        dropout: Option<StepDropout>,
    },
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
        /// Rank the views with ListMLE instead of the pairwise hinge (the official
        /// `--listwise`; [`losses::Comparison::ListMle`]).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        listwise: bool,
        /// Weighted mode: add the regulariser only on batches whose mean primary loss is at
        /// most 1.1 (the official `--cr_schedule`; [`losses::ComparativeLoss::with_schedule`]).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        cr_schedule: bool,
        /// Classification: run the views at every evaluation too and report each view's mean
        /// loss and how often the full model beats each ablated view (the official
        /// `cmp_in_eval`, on by default there; off here, as it costs c + 1 passes per
        /// evaluation batch).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        cmp_in_eval: bool,
        /// Dropout of a crop-only loss (`n_drop = 0`, `n_crop > 0`): `"off"` or `"ordinary"`.
        /// Unset, the task's official behaviour: `off` on HotpotQA (CmpQA's quirk), `ordinary`
        /// on ranking (LoL's trainer); expansion records the value used
        /// ([`StepDropout::crop_only_default`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        dropout: Option<StepDropout>,
        /// Training settings of this loss's cells (the paper tunes the comparative runs
        /// separately from the baselines); they override the dataset's and the model's.
        #[serde(default, skip_serializing_if = "TrainOverrides::is_empty")]
        train: Box<TrainOverrides>,
    },
}

/// Dropout of a training step that has no dropout views: the baseline, or a crop-only
/// comparative loss (see [`ablation::CropOnlyDropout`]). The official `CmpQA.forward` calls
/// `self.eval()` whenever `n_drop = 0`, so its HotpotQA baseline and crop-only runs trained
/// without dropout; `CmpCls` (GLUE) and LoL's trainer (ranking) keep ordinary dropout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepDropout {
    /// No dropout in any view: the official HotpotQA runs, through CmpQA's `self.eval()` quirk.
    Off,
    /// Ordinary dropout in every view (the views share one draw of the step's masks).
    Ordinary,
}

impl StepDropout {
    /// What the official code of a task does for a crop-only loss: HotpotQA (CmpLoss's
    /// `CmpQA`) trains without dropout, ranking (LoL's trainer, `model.train()`) with ordinary
    /// dropout. `None` for a format without segments to crop.
    pub fn crop_only_default(format: DatasetFormat) -> Option<Self> {
        match format {
            DatasetFormat::Hotpot => Some(Self::Off),
            DatasetFormat::Ranking => Some(Self::Ordinary),
            _ => None,
        }
    }

    /// What the official code of a task does for the baseline: HotpotQA trains without dropout
    /// (`CmpQA`), every other task with ordinary dropout (`None`: nothing to record).
    pub fn baseline_default(format: DatasetFormat) -> Option<Self> {
        (format == DatasetFormat::Hotpot).then_some(Self::Off)
    }
}

impl From<StepDropout> for ablation::CropOnlyDropout {
    fn from(d: StepDropout) -> Self {
        match d {
            StepDropout::Off => Self::Off,
            StepDropout::Ordinary => Self::Ordinary,
        }
    }
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
