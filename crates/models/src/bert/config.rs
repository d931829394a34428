//! Encoder configuration read from a Hugging Face `config.json`.
//!
//! Field names are HF's, so the file deserializes directly; `model_type` picks the family.

use std::path::Path;

use serde::Deserialize;

use crate::error::{ModelError, Result, io_err};

/// The encoder families this crate implements; they share one transformer stack and differ in
/// their embeddings (see [`crate::bert`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncoderFamily {
    /// BERT (`model_type = "bert"`), including the `google/bert_uncased_L-*` sizes and MiniLM.
    Bert,
    /// RoBERTa (`"roberta"`, `"xlm-roberta"`): position ids start after the padding index.
    Roberta,
    /// ELECTRA discriminator (`"electra"`): embeddings may be narrower than the hidden size.
    Electra,
    /// Longformer (`"longformer"`): RoBERTa's embeddings and stack with sliding-window attention
    /// and global attention on chosen tokens ([`crate::bert::longformer`]).
    Longformer,
}

impl EncoderFamily {
    /// The `model_type` values accepted, for error messages.
    pub const SUPPORTED: &'static str = "bert, roberta, xlm-roberta, electra, longformer";

    /// Parse HF's `model_type`.
    pub fn from_model_type(model_type: &str) -> Option<Self> {
        match model_type {
            "bert" => Some(Self::Bert),
            "roberta" | "xlm-roberta" => Some(Self::Roberta),
            "electra" => Some(Self::Electra),
            "longformer" => Some(Self::Longformer),
            _ => None,
        }
    }

    /// The prefix HF task models put before the encoder's keys (`bert.`, `roberta.`, `electra.`).
    pub fn hf_prefix(self) -> &'static str {
        match self {
            Self::Bert => "bert.",
            Self::Roberta => "roberta.",
            Self::Electra => "electra.",
            Self::Longformer => "longformer.",
        }
    }

    /// The `model_type` written when saving.
    pub fn model_type(self) -> &'static str {
        match self {
            Self::Bert => "bert",
            Self::Roberta => "roberta",
            Self::Electra => "electra",
            Self::Longformer => "longformer",
        }
    }

    /// Whether position ids count non-padding tokens from `pad_token_id + 1` (RoBERTa's
    /// embeddings, which Longformer shares).
    pub fn roberta_positions(self) -> bool {
        matches!(self, Self::Roberta | Self::Longformer)
    }
}

/// Activation of the feed-forward block (`hidden_act`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// Exact GELU, `x * Φ(x)` (HF `"gelu"`).
    Gelu,
    /// Tanh approximation of GELU (HF `"gelu_new"`, `"gelu_pytorch_tanh"`).
    GeluTanh,
    /// ReLU.
    Relu,
    /// SiLU / swish.
    Silu,
}

impl Activation {
    fn parse(name: &str) -> Option<Self> {
        match name {
            "gelu" => Some(Self::Gelu),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Some(Self::GeluTanh),
            "relu" => Some(Self::Relu),
            "silu" | "swish" => Some(Self::Silu),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Gelu => "gelu",
            Self::GeluTanh => "gelu_new",
            Self::Relu => "relu",
            Self::Silu => "silu",
        }
    }
}

/// An encoder's hyperparameters, as in HF `config.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct EncoderConfig {
    /// Which family (`model_type`).
    pub family: EncoderFamily,
    /// Vocabulary size (rows of the word embedding).
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the token embeddings; differs from `hidden_size` only for ELECTRA.
    pub embedding_size: usize,
    /// Number of transformer layers.
    pub num_hidden_layers: usize,
    /// Attention heads per layer.
    pub num_attention_heads: usize,
    /// Width of the FFN intermediate layer (the "neurons").
    pub intermediate_size: usize,
    /// FFN activation.
    pub hidden_act: Activation,
    /// Dropout after embeddings and after each sublayer's output projection.
    pub hidden_dropout_prob: f64,
    /// Dropout on attention probabilities.
    pub attention_probs_dropout_prob: f64,
    /// Dropout before a classification head (`classifier_dropout`, else `hidden_dropout_prob`).
    pub classifier_dropout: f64,
    /// Rows of the position embedding.
    pub max_position_embeddings: usize,
    /// Rows of the token-type embedding.
    pub type_vocab_size: usize,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f64,
    /// Padding token id (RoBERTa derives position ids from it).
    pub pad_token_id: usize,
    /// Longformer only: each layer's attention window (`attention_window`, the full width, even;
    /// a token attends to `window / 2` tokens on each side). Empty for the other families.
    pub attention_window: Vec<usize>,
    /// Labels of a classification head (`id2label`), in id order; when the file has no
    /// `id2label`, `num_labels` (default 2) labels named `LABEL_i`, as HF does.
    pub labels: Vec<String>,
}

#[derive(Deserialize)]
struct RawConfig {
    model_type: Option<String>,
    vocab_size: Option<usize>,
    hidden_size: Option<usize>,
    embedding_size: Option<usize>,
    num_hidden_layers: Option<usize>,
    num_attention_heads: Option<usize>,
    intermediate_size: Option<usize>,
    hidden_act: Option<String>,
    hidden_dropout_prob: Option<f64>,
    attention_probs_dropout_prob: Option<f64>,
    classifier_dropout: Option<f64>,
    max_position_embeddings: Option<usize>,
    type_vocab_size: Option<usize>,
    layer_norm_eps: Option<f64>,
    pad_token_id: Option<usize>,
    position_embedding_type: Option<String>,
    num_labels: Option<usize>,
    attention_window: Option<serde_json::Value>,
    id2label: Option<std::collections::BTreeMap<String, String>>,
}

impl EncoderConfig {
    /// Read `config.json` (a file, or a directory containing one).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let (text, path) = read_config_json(path.as_ref())?;
        Self::from_json(&text, &path)
    }

    /// Parse the text of a `config.json`; `path` is only used in error messages.
    pub fn from_json(text: &str, path: &Path) -> Result<Self> {
        let raw: RawConfig = serde_json::from_str(text).map_err(|e| ModelError::Format {
            path: path.to_path_buf(),
            message: format!("invalid JSON config: {e}"),
        })?;
        let path = path.to_path_buf();
        let cfg_err = |key: &str, message: String| ModelError::Config {
            path: path.clone(),
            key: key.to_string(),
            message,
        };
        let model_type = raw
            .model_type
            .ok_or_else(|| cfg_err("model_type", "missing".into()))?;
        let family =
            EncoderFamily::from_model_type(&model_type).ok_or(ModelError::UnknownModelType {
                path: path.clone(),
                model_type: model_type.clone(),
                supported: EncoderFamily::SUPPORTED.to_string(),
            })?;
        let need = |v: Option<usize>, key: &str| v.ok_or_else(|| cfg_err(key, "missing".into()));
        let hidden_size = need(raw.hidden_size, "hidden_size")?;
        let num_attention_heads = need(raw.num_attention_heads, "num_attention_heads")?;
        if num_attention_heads == 0 || hidden_size % num_attention_heads != 0 {
            return Err(cfg_err(
                "num_attention_heads",
                format!("{num_attention_heads} does not divide hidden_size {hidden_size}"),
            ));
        }
        let act_name = raw.hidden_act.unwrap_or_else(|| "gelu".into());
        let hidden_act = Activation::parse(&act_name).ok_or_else(|| {
            cfg_err(
                "hidden_act",
                format!(
                    "unsupported activation {act_name:?}; supported: gelu, gelu_new, relu, silu"
                ),
            )
        })?;
        if let Some(kind) = raw.position_embedding_type.as_deref()
            && kind != "absolute"
        {
            return Err(cfg_err(
                "position_embedding_type",
                format!("only \"absolute\" is implemented, found {kind:?}"),
            ));
        }
        let hidden_dropout_prob = raw.hidden_dropout_prob.unwrap_or(0.1);
        // As HF's PretrainedConfig: `id2label` if present, else `num_labels` (default 2) labels
        // named LABEL_i.
        let labels = match raw.id2label {
            None => (0..raw.num_labels.unwrap_or(2))
                .map(|i| format!("LABEL_{i}"))
                .collect(),
            Some(map) => {
                let mut pairs = Vec::with_capacity(map.len());
                for (k, v) in map {
                    let id: usize = k
                        .parse()
                        .map_err(|_| cfg_err("id2label", format!("key {k:?} is not an integer")))?;
                    pairs.push((id, v));
                }
                pairs.sort();
                if pairs.iter().enumerate().any(|(i, (id, _))| *id != i) {
                    return Err(cfg_err("id2label", "ids must be 0..n without gaps".into()));
                }
                pairs.into_iter().map(|(_, v)| v).collect()
            }
        };
        let pad_default = if family.roberta_positions() { 1 } else { 0 };
        let num_hidden_layers = need(raw.num_hidden_layers, "num_hidden_layers")?;
        let attention_window = match family {
            EncoderFamily::Longformer => {
                attention_windows(raw.attention_window.as_ref(), num_hidden_layers)
                    .map_err(|m| cfg_err("attention_window", m))?
            }
            _ => Vec::new(),
        };
        Ok(Self {
            family,
            vocab_size: need(raw.vocab_size, "vocab_size")?,
            hidden_size,
            embedding_size: raw.embedding_size.unwrap_or(hidden_size),
            num_hidden_layers,
            num_attention_heads,
            intermediate_size: need(raw.intermediate_size, "intermediate_size")?,
            hidden_act,
            hidden_dropout_prob,
            attention_probs_dropout_prob: raw.attention_probs_dropout_prob.unwrap_or(0.1),
            classifier_dropout: raw.classifier_dropout.unwrap_or(hidden_dropout_prob),
            max_position_embeddings: need(raw.max_position_embeddings, "max_position_embeddings")?,
            type_vocab_size: raw.type_vocab_size.unwrap_or(2),
            layer_norm_eps: raw.layer_norm_eps.unwrap_or(1e-12),
            pad_token_id: raw.pad_token_id.unwrap_or(pad_default),
            attention_window,
            labels,
        })
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// The longest input the position embeddings allow (RoBERTa reserves `pad_token_id + 1` rows).
    pub fn max_input_len(&self) -> usize {
        if self.family.roberta_positions() {
            self.max_position_embeddings - self.pad_token_id - 1
        } else {
            self.max_position_embeddings
        }
    }

    /// This config as HF `config.json` text (for saving a fine-tuned model).
    pub fn to_json(&self) -> String {
        let mut v = serde_json::json!({
            "model_type": self.family.model_type(),
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "intermediate_size": self.intermediate_size,
            "hidden_act": self.hidden_act.name(),
            "hidden_dropout_prob": self.hidden_dropout_prob,
            "attention_probs_dropout_prob": self.attention_probs_dropout_prob,
            "classifier_dropout": self.classifier_dropout,
            "max_position_embeddings": self.max_position_embeddings,
            "type_vocab_size": self.type_vocab_size,
            "layer_norm_eps": self.layer_norm_eps,
            "pad_token_id": self.pad_token_id,
            "position_embedding_type": "absolute",
        });
        if self.family == EncoderFamily::Electra {
            v["embedding_size"] = self.embedding_size.into();
        }
        if self.family == EncoderFamily::Longformer {
            v["attention_window"] = self.attention_window.clone().into();
        }
        {
            let id2label: serde_json::Map<_, _> = self
                .labels
                .iter()
                .enumerate()
                .map(|(i, l)| (i.to_string(), l.clone().into()))
                .collect();
            let label2id: serde_json::Map<_, _> = self
                .labels
                .iter()
                .enumerate()
                .map(|(i, l)| (l.clone(), i.into()))
                .collect();
            v["id2label"] = id2label.into();
            v["label2id"] = label2id.into();
        }
        serde_json::to_string_pretty(&v).expect("a JSON value always serializes")
    }
}

/// Longformer's `attention_window`: one even width for every layer, or a list with one per layer
/// (as HF's `LongformerConfig` accepts).
fn attention_windows(
    raw: Option<&serde_json::Value>,
    layers: usize,
) -> std::result::Result<Vec<usize>, String> {
    let width = |v: &serde_json::Value| -> std::result::Result<usize, String> {
        let w = v
            .as_u64()
            .ok_or_else(|| format!("expected a positive even integer, found {v}"))?;
        if w == 0 || w % 2 != 0 {
            return Err(format!("each window must be positive and even, found {w}"));
        }
        Ok(w as usize)
    };
    match raw {
        None => Err("missing (Longformer needs its window width)".into()),
        Some(serde_json::Value::Array(list)) => {
            if list.len() != layers {
                return Err(format!(
                    "{} windows for {layers} layers (one per layer expected)",
                    list.len()
                ));
            }
            list.iter().map(width).collect()
        }
        Some(v) => Ok(vec![width(v)?; layers]),
    }
}

/// The text of `config.json` (`path` is the file, or a directory holding it) and the file's path.
pub(crate) fn read_config_json(path: &Path) -> Result<(String, std::path::PathBuf)> {
    let mut path = path.to_path_buf();
    if path.is_dir() {
        path.push("config.json");
    }
    let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
    Ok((text, path))
}
