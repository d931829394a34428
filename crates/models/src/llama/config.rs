//! Decoder configuration: read from HF `config.json` (Llama, Mistral) or from GGUF metadata.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{ModelError, Result};
use crate::gguf::{GgufFile, MetaValue};

/// The decoder families this crate implements. They share one stack; Mistral adds a sliding
/// attention window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecoderFamily {
    /// Llama 2 / 3 / 3.1 / 3.2, SmolLM, TinyLlama (`model_type = "llama"`).
    Llama,
    /// Mistral 7B, Mistral Nemo (`model_type = "mistral"`).
    Mistral,
}

impl DecoderFamily {
    /// The `model_type` values understood, for error messages.
    pub const SUPPORTED: &'static str = "llama, mistral";

    /// The family of a `model_type`.
    pub fn from_model_type(model_type: &str) -> Option<Self> {
        match model_type {
            "llama" => Some(Self::Llama),
            "mistral" => Some(Self::Mistral),
            _ => None,
        }
    }

    /// The `model_type` written to `config.json`.
    pub fn model_type(self) -> &'static str {
        match self {
            Self::Llama => "llama",
            Self::Mistral => "mistral",
        }
    }
}

/// How RoPE frequencies are adjusted for long contexts (HF `rope_type`).
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    /// Plain RoPE (`"default"`).
    None,
    /// Positions divided by `factor` (`"linear"`).
    Linear {
        /// The divisor.
        factor: f64,
    },
    /// Llama 3.1's frequency-dependent scaling (`"llama3"`).
    Llama3 {
        /// Divisor of the low frequencies.
        factor: f64,
        /// Wavelengths above `original / low_freq_factor` are divided by `factor`.
        low_freq_factor: f64,
        /// Wavelengths below `original / high_freq_factor` are kept.
        high_freq_factor: f64,
        /// The context length the model was pretrained with.
        original_max_position_embeddings: f64,
    },
}

/// Everything a Llama-family decoder needs to be built.
#[derive(Debug, Clone, PartialEq)]
pub struct DecoderConfig {
    /// Llama or Mistral.
    pub family: DecoderFamily,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Model width.
    pub hidden_size: usize,
    /// FFN width: the number of "neurons" per layer.
    pub intermediate_size: usize,
    /// Number of layers.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (grouped-query attention when fewer than the query heads).
    pub num_key_value_heads: usize,
    /// Width of one head; `config.json`'s `head_dim` when present (Mistral Nemo's is 128, not
    /// hidden / heads), else `hidden_size / num_attention_heads`.
    pub head_dim: usize,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// RoPE base.
    pub rope_theta: f64,
    /// RoPE scaling.
    pub rope_scaling: RopeScaling,
    /// Context length.
    pub max_position_embeddings: usize,
    /// The LM head shares the embedding matrix.
    pub tie_word_embeddings: bool,
    /// Biases on q, k, v and o (Llama's `attention_bias`).
    pub attention_bias: bool,
    /// Biases on the FFN projections (Llama's `mlp_bias`).
    pub mlp_bias: bool,
    /// Attention dropout (0 in every released checkpoint).
    pub attention_dropout: f64,
    /// Mistral: each token attends to itself and the `sliding_window - 1` tokens before it.
    pub sliding_window: Option<usize>,
    /// Beginning-of-sequence token.
    pub bos_token_id: Option<u32>,
    /// End-of-sequence token(s); generation stops at any of them.
    pub eos_token_ids: Vec<u32>,
    /// Padding token.
    pub pad_token_id: Option<u32>,
}

impl DecoderConfig {
    /// Read `config.json` (a file, or a directory holding one).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let (text, path) = crate::bert::config::read_config_json(path.as_ref())?;
        Self::from_json(&text, &path)
    }

    /// Parse `config.json` text; `path` is used in error messages. Both the transformers 5
    /// layout (`rope_parameters`) and the older one (`rope_theta` + `rope_scaling`) are read.
    pub fn from_json(text: &str, path: &Path) -> Result<Self> {
        let raw: Value = serde_json::from_str(text).map_err(|e| ModelError::Format {
            path: path.to_path_buf(),
            message: format!("invalid JSON config: {e}"),
        })?;
        let c = Json {
            raw: &raw,
            path: path.to_path_buf(),
        };
        let model_type = c.str("model_type")?;
        let family =
            DecoderFamily::from_model_type(&model_type).ok_or(ModelError::UnknownModelType {
                path: path.to_path_buf(),
                model_type: model_type.clone(),
                supported: DecoderFamily::SUPPORTED.into(),
            })?;
        if let Some(act) = raw.get("hidden_act").and_then(Value::as_str)
            && act != "silu"
        {
            return Err(c.err(
                "hidden_act",
                format!("{act:?}: only \"silu\" (SwiGLU) is implemented"),
            ));
        }
        let hidden_size = c.usize("hidden_size")?;
        let num_attention_heads = c.usize("num_attention_heads")?;
        let num_key_value_heads = c
            .opt_usize("num_key_value_heads")?
            .unwrap_or(num_attention_heads);
        let head_dim = match c.opt_usize("head_dim")? {
            Some(d) => d,
            None if num_attention_heads > 0 && hidden_size % num_attention_heads == 0 => {
                hidden_size / num_attention_heads
            }
            None => {
                return Err(c.err(
                    "num_attention_heads",
                    format!("{num_attention_heads} does not divide hidden_size {hidden_size} and there is no head_dim"),
                ));
            }
        };
        // transformers 5 writes `rope_parameters`; older files `rope_theta` and `rope_scaling`.
        let rope = raw.get("rope_parameters").filter(|v| !v.is_null());
        let scaling = rope.or(raw.get("rope_scaling").filter(|v| !v.is_null()));
        let rope_key = if rope.is_some() {
            "rope_parameters"
        } else {
            "rope_scaling"
        };
        let rope_theta = rope
            .and_then(|r| r.get("rope_theta"))
            .or(raw.get("rope_theta"))
            .map(|v| {
                v.as_f64()
                    .ok_or_else(|| c.err("rope_theta", "not a number".into()))
            })
            .transpose()?
            .unwrap_or(10000.0);
        let rope_scaling = match scaling {
            None => RopeScaling::None,
            Some(s) => parse_scaling(s, &c, rope_key)?,
        };
        let token_ids = |key: &str| -> Result<Vec<u32>> {
            match raw.get(key) {
                None | Some(Value::Null) => Ok(Vec::new()),
                Some(Value::Number(n)) => Ok(vec![
                    n.as_u64()
                        .ok_or_else(|| c.err(key, "not a token id".into()))?
                        as u32,
                ]),
                Some(Value::Array(items)) => items
                    .iter()
                    .map(|v| {
                        v.as_u64()
                            .map(|v| v as u32)
                            .ok_or_else(|| c.err(key, "not a list of token ids".into()))
                    })
                    .collect(),
                Some(_) => Err(c.err(key, "expected a token id or a list of them".into())),
            }
        };
        let sliding_window = match family {
            DecoderFamily::Mistral => c.opt_usize("sliding_window")?,
            DecoderFamily::Llama => None,
        };
        let config = Self {
            family,
            vocab_size: c.usize("vocab_size")?,
            hidden_size,
            intermediate_size: c.usize("intermediate_size")?,
            num_hidden_layers: c.usize("num_hidden_layers")?,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            rms_norm_eps: c.opt_f64("rms_norm_eps")?.unwrap_or(1e-6),
            rope_theta,
            rope_scaling,
            max_position_embeddings: c.usize("max_position_embeddings")?,
            tie_word_embeddings: raw
                .get("tie_word_embeddings")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            attention_bias: raw
                .get("attention_bias")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            mlp_bias: raw
                .get("mlp_bias")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            attention_dropout: c.opt_f64("attention_dropout")?.unwrap_or(0.0),
            sliding_window,
            bos_token_id: token_ids("bos_token_id")?.first().copied(),
            eos_token_ids: token_ids("eos_token_id")?,
            pad_token_id: token_ids("pad_token_id")?.first().copied(),
        };
        config
            .check()
            .map_err(|(key, message)| c.err(key, message))?;
        Ok(config)
    }

    /// The config stored in a GGUF file's metadata (`<arch>.*` keys, llama.cpp's names):
    /// `block_count`, `embedding_length`, `feed_forward_length`, `attention.head_count(_kv)`,
    /// `attention.layer_norm_rms_epsilon`, `rope.freq_base`, `rope.dimension_count` (the head
    /// width), `context_length`; the vocabulary size is the tokenizer's; embeddings are tied
    /// when the file has no `output.weight`. llama.cpp stores Llama 3.1's RoPE scaling as a
    /// `rope_freqs.weight` tensor, which this reader rejects rather than ignore.
    pub fn from_gguf(file: &GgufFile) -> Result<Self> {
        let path = file.path().to_path_buf();
        let err = |key: &str, message: String| ModelError::Config {
            path: path.clone(),
            key: key.into(),
            message,
        };
        let arch = file
            .meta("general.architecture")
            .and_then(MetaValue::as_str)
            .ok_or_else(|| err("general.architecture", "missing".into()))?;
        if arch != "llama" {
            return Err(err(
                "general.architecture",
                format!("{arch:?}: only \"llama\" (Llama / Mistral / SmolLM layout) is supported"),
            ));
        }
        let get = |key: &str| file.arch_u64(key).map(|v| v as usize);
        let float = |key: &str| {
            file.meta(&format!("{arch}.{key}"))
                .map(|v| {
                    v.as_f64()
                        .ok_or_else(|| err(&format!("{arch}.{key}"), "not a number".into()))
                })
                .transpose()
        };
        if file.info("rope_freqs.weight").is_some() {
            return Err(err(
                "rope_freqs.weight",
                "Llama 3.1 RoPE frequency factors from GGUF are not supported; load the HF safetensors checkpoint".into(),
            ));
        }
        let rope_scaling = match file
            .meta(&format!("{arch}.rope.scaling.type"))
            .and_then(MetaValue::as_str)
        {
            None | Some("none") => RopeScaling::None,
            Some("linear") => RopeScaling::Linear {
                factor: float("rope.scaling.factor")?.unwrap_or(1.0),
            },
            Some(other) => {
                return Err(err(
                    &format!("{arch}.rope.scaling.type"),
                    format!("{other:?} is not supported (none, linear)"),
                ));
            }
        };
        let hidden_size = get("embedding_length")?;
        let num_attention_heads = get("attention.head_count")?;
        let vocab_size = match file
            .meta("tokenizer.ggml.tokens")
            .and_then(MetaValue::as_array)
        {
            Some(tokens) => tokens.len(),
            None => get("vocab_size")?,
        };
        let token = |key: &str| file.meta(key).and_then(MetaValue::as_u64).map(|v| v as u32);
        let config = Self {
            family: DecoderFamily::Llama,
            vocab_size,
            hidden_size,
            intermediate_size: get("feed_forward_length")?,
            num_hidden_layers: get("block_count")?,
            num_attention_heads,
            num_key_value_heads: get("attention.head_count_kv").unwrap_or(num_attention_heads),
            head_dim: get("rope.dimension_count")
                .unwrap_or(hidden_size / num_attention_heads.max(1)),
            rms_norm_eps: float("attention.layer_norm_rms_epsilon")?.unwrap_or(1e-5),
            rope_theta: float("rope.freq_base")?.unwrap_or(10000.0),
            rope_scaling,
            max_position_embeddings: get("context_length")?,
            tie_word_embeddings: file.info("output.weight").is_none(),
            attention_bias: false,
            mlp_bias: false,
            attention_dropout: 0.0,
            sliding_window: None,
            bos_token_id: token("tokenizer.ggml.bos_token_id"),
            eos_token_ids: token("tokenizer.ggml.eos_token_id").into_iter().collect(),
            pad_token_id: token("tokenizer.ggml.padding_token_id"),
        };
        config.check().map_err(|(key, message)| err(key, message))?;
        Ok(config)
    }

    fn check(&self) -> std::result::Result<(), (&'static str, String)> {
        let (h, kv) = (self.num_attention_heads, self.num_key_value_heads);
        if h == 0 || kv == 0 || h % kv != 0 {
            return Err((
                "num_key_value_heads",
                format!("{kv} key/value heads do not divide {h} attention heads"),
            ));
        }
        if self.head_dim == 0 || !self.head_dim.is_multiple_of(2) {
            return Err((
                "head_dim",
                format!(
                    "{} is not a positive even number (RoPE rotates pairs)",
                    self.head_dim
                ),
            ));
        }
        if let Some(0) = self.sliding_window {
            return Err(("sliding_window", "must be at least 1".into()));
        }
        Ok(())
    }

    /// The RoPE inverse frequencies, `[head_dim / 2]`, as transformers computes them in f32
    /// (`1 / theta^(2i/d)`, then the scaling of [`Self::rope_scaling`]).
    pub fn inv_freq(&self) -> Vec<f32> {
        let d = self.head_dim;
        let base: Vec<f64> = (0..d / 2)
            .map(|i| 1.0 / self.rope_theta.powf((2 * i) as f64 / d as f64))
            .collect();
        let scaled: Vec<f64> = match self.rope_scaling {
            RopeScaling::None => base,
            RopeScaling::Linear { factor } => base.iter().map(|f| f / factor).collect(),
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings: old,
            } => {
                // transformers' _compute_llama3_parameters.
                let low_wavelen = old / low_freq_factor;
                let high_wavelen = old / high_freq_factor;
                base.iter()
                    .map(|&f| {
                        let wavelen = 2.0 * std::f64::consts::PI / f;
                        if wavelen > low_wavelen {
                            f / factor
                        } else if wavelen < high_wavelen {
                            f
                        } else {
                            let smooth = (old / wavelen - low_freq_factor)
                                / (high_freq_factor - low_freq_factor);
                            (1.0 - smooth) * f / factor + smooth * f
                        }
                    })
                    .collect()
            }
        };
        scaled.into_iter().map(|f| f as f32).collect()
    }

    /// This config as HF `config.json` text (transformers 5 layout).
    pub fn to_json(&self) -> String {
        let mut rope = serde_json::json!({"rope_theta": self.rope_theta});
        match self.rope_scaling {
            RopeScaling::None => rope["rope_type"] = "default".into(),
            RopeScaling::Linear { factor } => {
                rope["rope_type"] = "linear".into();
                rope["factor"] = factor.into();
            }
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => {
                rope["rope_type"] = "llama3".into();
                rope["factor"] = factor.into();
                rope["low_freq_factor"] = low_freq_factor.into();
                rope["high_freq_factor"] = high_freq_factor.into();
                rope["original_max_position_embeddings"] =
                    (original_max_position_embeddings as u64).into();
            }
        }
        let mut v = serde_json::json!({
            "model_type": self.family.model_type(),
            "hidden_act": "silu",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_parameters": rope,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "attention_bias": self.attention_bias,
            "mlp_bias": self.mlp_bias,
            "attention_dropout": self.attention_dropout,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_ids,
            "pad_token_id": self.pad_token_id,
        });
        if let Some(w) = self.sliding_window {
            v["sliding_window"] = w.into();
        }
        serde_json::to_string_pretty(&v).expect("a JSON value always serializes")
    }
}

fn parse_scaling(s: &Value, c: &Json<'_>, key: &str) -> Result<RopeScaling> {
    let kind = s
        .get("rope_type")
        .or(s.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    let num = |k: &str| {
        s.get(k).and_then(Value::as_f64).ok_or_else(|| {
            c.err(
                &format!("{key}.{k}"),
                format!("missing or not a number (rope_type {kind:?})"),
            )
        })
    };
    Ok(match kind {
        "default" => RopeScaling::None,
        "linear" => RopeScaling::Linear {
            factor: num("factor")?,
        },
        "llama3" => RopeScaling::Llama3 {
            factor: num("factor")?,
            low_freq_factor: num("low_freq_factor")?,
            high_freq_factor: num("high_freq_factor")?,
            original_max_position_embeddings: num("original_max_position_embeddings")?,
        },
        other => {
            return Err(c.err(
                &format!("{key}.rope_type"),
                format!("{other:?} is not implemented (default, linear, llama3)"),
            ));
        }
    })
}

struct Json<'a> {
    raw: &'a Value,
    path: PathBuf,
}

impl Json<'_> {
    fn err(&self, key: &str, message: String) -> ModelError {
        ModelError::Config {
            path: self.path.clone(),
            key: key.into(),
            message,
        }
    }

    fn str(&self, key: &str) -> Result<String> {
        self.raw
            .get(key)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| self.err(key, "missing or not a string".into()))
    }

    fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
        match self.raw.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v.as_u64().map(|v| Some(v as usize)).ok_or_else(|| {
                self.err(key, format!("expected a non-negative integer, found {v}"))
            }),
        }
    }

    fn usize(&self, key: &str) -> Result<usize> {
        self.opt_usize(key)?
            .ok_or_else(|| self.err(key, "missing".into()))
    }

    fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        match self.raw.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| self.err(key, format!("expected a number, found {v}"))),
        }
    }
}
