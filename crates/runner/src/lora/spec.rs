//! The TOML sections of LoRA fine-tuning: `[tasks.*]`, `[lora]`, a model's `lora`, and the
//! grid's `task` and `neurons` axes ([`Sections`]). Studies of the same file (the
//! [`crate::study`] sections) run first and feed the cells their neuron sets.
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
//! Settings resolve in this order, later wins: built-in defaults, `[train]`, the model's
//! `train`, the task's `settings`, the grid axis; and for the adapter `[lora]`, the model's
//! `lora`, the task's `lora`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::harness::experiment::{InterventionSpec, TrainOverrides, set_axes};

/// The sections LoRA fine-tuning reads from an experiment file.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Sections {
    /// Named cross-lingual tasks.
    #[serde(default)]
    pub tasks: BTreeMap<String, TaskSpec>,
    /// The adapter of every cell.
    #[serde(default)]
    pub lora: LoraSpec,
    /// Per model, its adapter settings.
    #[serde(default)]
    pub models: BTreeMap<String, ModelLora>,
    /// Its grid axes.
    #[serde(default)]
    pub grid: Axes,
}

/// A model's `lora` key.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ModelLora {
    /// This model's LoRA rank and α, instead of `[lora]`'s (Mondal et al. use r = 8 for Llama
    /// 3.1 8B and r = 64 for Mistral Nemo).
    #[serde(default)]
    pub lora: LoraOverrides,
}

/// LoRA fine-tuning's axes of `[grid]` (crossed with `grid.model`, `grid.train` and
/// `grid.seed`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Axes {
    /// Cross-lingual fine-tuning tasks.
    #[serde(default)]
    pub task: Vec<String>,
    /// Neuron sets of the cells: `none` (plain LoRA), a language (`en`), a union (`en+vi`),
    /// `target` (the evaluation language: one cell per evaluation language), a union with it
    /// (`en+target`), or any of these prefixed by `random:` (random neurons with the same
    /// per-layer counts, drawn with the cell's seed). Default: `["none"]`.
    #[serde(default)]
    pub neurons: Vec<NeuronChoice>,
}

impl Axes {
    /// The axes that are set.
    pub fn used(&self) -> Vec<&'static str> {
        set_axes(&[
            ("task", !self.task.is_empty()),
            ("neurons", !self.neurons.is_empty()),
        ])
    }
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

/// The linear layer of a decoder classifier (see [`LoraSpec::head`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClassifierHead {
    /// HF's `score`: no bias, `N(0, 0.02²)`.
    #[default]
    Hf,
    /// PyTorch's `nn.Linear`: a bias, uniform in `±1/√hidden`.
    Linear,
}

impl ClassifierHead {
    fn is_hf(&self) -> bool {
        *self == Self::Hf
    }
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
    /// The classifier's linear layer: `hf` (default: HF `LlamaForSequenceClassification`'s
    /// `score`, no bias, a new one drawn `N(0, 0.02²)`) or `linear` (PyTorch's
    /// `nn.Linear(hidden, classes)`: a bias, drawn uniform in `±1/√hidden`, as Mondal et al.'s
    /// `ModelForCLS`). A saved adapter folder (`save_model`) keeps the `linear` head's bias as
    /// `score.bias`, which HF's `LlamaForSequenceClassification` has no slot for: PEFT reports
    /// it as unexpected and leaves it out.
    #[serde(default, skip_serializing_if = "ClassifierHead::is_hf")]
    pub head: ClassifierHead,
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
    InterventionSpec::none()
}
