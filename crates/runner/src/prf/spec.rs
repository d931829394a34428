//! The TOML sections of dense pseudo-relevance feedback: `[corpora.*]` (a passage collection,
//! its first-pass vectors and query sets), `[prf.*]` (the reformulator's objective and inputs)
//! and the grid's `corpus` and `prf` axes ([`Sections`]).
//!
//! ```toml
//! [corpora.msmarco]
//! path = "${MSMARCO_DIR}"                  # the files below are relative to it
//! collection = "collection.tsv"            # pid<TAB>passage
//! matrix = "matrix/ance"                   # `neuronlab corpus embed` output: the passage vectors
//! train = { queries = "queries.train.tsv", qrels = "qrels.train.tsv", run = "run/ance.train.tsv" }
//! dev = { queries = "queries.dev.small.tsv", qrels = "qrels.dev.small.tsv", run = "run/ance.dev.small.tsv" }
//! test.dl19 = { queries = "queries.dl19.tsv", qrels = "qrels.dl19.txt", run = "run/ance.dl19.tsv", relevance_level = 2 }
//!
//! [prf.lol]
//! n_compare = 1                            # revisions with less feedback per training query
//! lambda_cr = 1.0                          # the comparative regularisation's weight
//!
//! [grid]
//! model = ["ance"]
//! corpus = ["msmarco"]
//! prf = ["plain", "lol"]                   # `plain`: predefined, n_compare = 0
//! ```
//!
//! Runs (`run`) are the first-pass retrieval the feedback passages come from: TREC runs (`qid
//! Q0 pid rank score tag`, as `neuronlab corpus search` writes) or MS MARCO's `qid<TAB>pid<TAB>rank`.
//! The defaults are the official dense (ANCE) training command's: `max_n_prf = 5`,
//! `shuffle_psgs = true`, `max_seq_len = 512`, `max_q_len = 128`, `max_p_len = 128`, no
//! normalisation of the query vector (`--norm_power nan`), learning rate 1e-5 with 10 %
//! warmup, 108 revisions per batch (36 per device on 3 GPUs) and 12 epochs, both divided by
//! `1 + n_compare`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::harness::experiment::{expand_vars, set_axes};

/// The sections dense PRF reads from an experiment file.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Sections {
    /// Named corpora.
    #[serde(default)]
    pub corpora: BTreeMap<String, CorpusSpec>,
    /// Named PRF objectives (`plain` is predefined).
    #[serde(default)]
    pub prf: BTreeMap<String, PrfSpec>,
    /// Its grid axes.
    #[serde(default)]
    pub grid: Axes,
}

/// Dense PRF's axes of `[grid]` (crossed with `grid.model`, `grid.train` and `grid.seed`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Axes {
    /// Corpora.
    #[serde(default)]
    pub corpus: Vec<String>,
    /// The reformulators' models, when they are not `grid.model` (a grid that also fine-tunes
    /// encoders over `pairs`, as the paper grid).
    #[serde(default)]
    pub prf_model: Vec<String>,
    /// PRF objectives (default: `["plain"]`).
    #[serde(default)]
    pub prf: Vec<String>,
}

impl Axes {
    /// The axes that are set.
    pub fn used(&self) -> Vec<&'static str> {
        set_axes(&[
            ("corpus", !self.corpus.is_empty()),
            ("prf_model", !self.prf_model.is_empty()),
            ("prf", !self.prf.is_empty()),
        ])
    }
}

/// One query set: its queries, judgements and first-pass run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuerySet {
    /// `qid<TAB>query`.
    pub queries: String,
    /// TREC qrels (`qid iter pid grade`).
    pub qrels: String,
    /// The first-pass run.
    pub run: String,
    /// The least grade that counts as relevant for MRR and recall (TREC DL: 2).
    #[serde(default = "one")]
    pub relevance_level: i32,
}

fn one() -> i32 {
    1
}

/// A named corpus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorpusSpec {
    /// The folder the file names are relative to.
    pub path: PathBuf,
    /// `pid<TAB>passage`.
    pub collection: String,
    /// The passage vectors (a `neuronlab corpus embed` folder).
    pub matrix: String,
    /// The training queries.
    pub train: QuerySet,
    /// The queries that select the best model (evaluated during training).
    pub dev: QuerySet,
    /// More query sets, evaluated with the best model at the end.
    #[serde(default)]
    pub test: BTreeMap<String, QuerySet>,
}

/// A query set's files, resolved.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct QueryFiles {
    /// `queries`.
    pub queries: PathBuf,
    /// `qrels`.
    pub qrels: PathBuf,
    /// `run`.
    pub run: PathBuf,
    /// `relevance_level`.
    pub relevance_level: i32,
}

/// A corpus's files, resolved at expansion (not part of the run id).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CorpusFiles {
    /// `collection`.
    pub collection: PathBuf,
    /// `matrix`.
    pub matrix: PathBuf,
    /// `train`.
    pub train: QueryFiles,
    /// `dev`.
    pub dev: QueryFiles,
    /// `test`.
    pub test: BTreeMap<String, QueryFiles>,
}

impl CorpusSpec {
    /// The files, resolved against `dir` (the corpus's `path`, resolved).
    pub fn resolve(&self, dir: &Path, artefacts: &Path) -> CorpusFiles {
        let file = |name: &str| dir.join(expand_vars(name, artefacts));
        let set = |s: &QuerySet| QueryFiles {
            queries: file(&s.queries),
            qrels: file(&s.qrels),
            run: file(&s.run),
            relevance_level: s.relevance_level,
        };
        CorpusFiles {
            collection: file(&self.collection),
            matrix: file(&self.matrix),
            train: set(&self.train),
            dev: set(&self.dev),
            test: self.test.iter().map(|(k, s)| (k.clone(), set(s))).collect(),
        }
    }
}

impl CorpusFiles {
    /// The query sets: `dev` first, then the test sets by name.
    pub fn eval_sets(&self) -> Vec<(&str, &QueryFiles)> {
        std::iter::once(("dev", &self.dev))
            .chain(self.test.iter().map(|(k, v)| (k.as_str(), v)))
            .collect()
    }
}

/// A named PRF objective and its inputs (official `DqrTrainingArguments` and `DataArguments`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrfSpec {
    /// Revisions with less feedback per training query (`--n_compare`; 0: no comparison).
    #[serde(default)]
    pub n_compare: usize,
    /// Passage-ranking weight (`--lambda_pr`, default 1).
    #[serde(default = "one_f")]
    pub lambda_pr: f64,
    /// Query-ranking weight (`--lambda_qr`, default 0).
    #[serde(default)]
    pub lambda_qr: f64,
    /// Comparative weight (`--lambda_cr`, default 0; counts only with `n_compare > 0`).
    #[serde(default)]
    pub lambda_cr: f64,
    /// Feedback passages at most (`--max_n_prf`, 5).
    #[serde(default = "five")]
    pub max_n_prf: usize,
    /// Draw a training query's feedback at random from its first-pass top `max_n_prf`
    /// (`--shuffle_psgs`, passed by the official training commands); otherwise the best ones.
    #[serde(default = "yes")]
    pub shuffle_psgs: bool,
    /// Query tokens (`--max_q_len`, 128).
    #[serde(default = "len128")]
    pub max_q_len: usize,
    /// Tokens per feedback passage (`--max_p_len`, 128).
    #[serde(default = "len128")]
    pub max_p_len: usize,
    /// How the encoder's states are pooled: `first` (the official code) or `mean` (with
    /// `projection = false` and `norm_power = 2`, a sentence-transformers encoder such as
    /// MiniLM starts as its own first-pass query encoder).
    #[serde(default)]
    pub pooling: QueryPooling,
    /// The official `dense_proj` + LayerNorm head on the pooled state (read from the checkpoint
    /// when it has one, ANCE's included; fresh otherwise).
    #[serde(default = "yes")]
    pub projection: bool,
    /// `p` of the query vector's normalisation (`--norm_power`); unset: none, as the official
    /// dense runs (`nan`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub norm_power: Option<f64>,
    /// The training passages: each training query's first `train_candidates` passages of its
    /// run, and its relevant ones (the official `train.ance-bf.top20` matrix).
    #[serde(default = "twenty")]
    pub train_candidates: usize,
    /// Divide `batch_size` (revisions per batch) and `epochs` by `1 + n_compare`, as the
    /// official commands do (`36/(1+NC)` queries per device, `12/(1+NC)` epochs), so every cell
    /// sees as many revisions.
    #[serde(default = "yes")]
    pub scale_by_revisions: bool,
}

/// How a reformulator pools its encoder's states.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum QueryPooling {
    /// The first token's state (the official code).
    #[default]
    First,
    /// The mean over non-padding tokens.
    Mean,
}

fn one_f() -> f64 {
    1.0
}
fn five() -> usize {
    5
}
fn yes() -> bool {
    true
}
fn len128() -> usize {
    128
}
fn twenty() -> usize {
    20
}

impl Default for PrfSpec {
    /// `plain`: the official defaults, without comparison.
    fn default() -> Self {
        Self {
            n_compare: 0,
            lambda_pr: 1.0,
            lambda_qr: 0.0,
            lambda_cr: 0.0,
            max_n_prf: five(),
            shuffle_psgs: true,
            max_q_len: len128(),
            max_p_len: len128(),
            pooling: QueryPooling::First,
            projection: true,
            norm_power: None,
            train_candidates: twenty(),
            scale_by_revisions: true,
        }
    }
}

impl PrfSpec {
    /// The reformulator these settings describe.
    pub fn reformulator(&self) -> models::ReformulatorConfig {
        models::ReformulatorConfig {
            mean_pooling: self.pooling == QueryPooling::Mean,
            projection: self.projection,
            norm_power: self.norm_power,
        }
    }

    /// Values the official code refuses or cannot run.
    pub fn check(&self) -> Result<(), String> {
        if self.lambda_pr.is_nan() || self.lambda_pr <= 0.0 || self.lambda_pr.is_infinite() {
            return Err(format!(
                "lambda_pr = {} must be positive (the official lambda_pr = 0 trains a feedback \
                 re-ranker instead, which is not implemented)",
                self.lambda_pr
            ));
        }
        for (key, v) in [("lambda_qr", self.lambda_qr), ("lambda_cr", self.lambda_cr)] {
            if v.is_nan() || v < 0.0 || v.is_infinite() {
                return Err(format!("{key} = {v} must be a non-negative number"));
            }
        }
        if self.n_compare > self.max_n_prf {
            return Err(format!(
                "n_compare = {} needs {} distinct feedback counts, but max_n_prf = {} gives {}",
                self.n_compare,
                self.n_compare + 1,
                self.max_n_prf,
                self.max_n_prf + 1
            ));
        }
        if let Some(p) = self.norm_power
            && (p.is_nan() || p <= 0.0 || p.is_infinite())
        {
            return Err(format!(
                "norm_power = {p} must be positive (leave it out for no normalisation)"
            ));
        }
        if self.max_q_len == 0 || self.max_p_len == 0 {
            return Err("max_q_len and max_p_len must be positive".into());
        }
        Ok(())
    }
}
