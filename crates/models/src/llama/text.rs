//! Text in and out of a decoder: its tokenizer and chat template, perplexity, and greedy
//! generation.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use serde_json::Value;
use tokenizers::Tokenizer;

use super::{DecoderConfig, KvCache, LlamaModel};
use crate::context::ForwardContext;
use crate::error::{ModelError, Result, io_err};
use crate::gguf::{GgufFile, MetaValue};

/// A decoder's tokenizer: the `tokenizers` pipeline, whether a BOS token is prepended, the
/// tokens that end generation, and the chat template.
#[derive(Clone)]
pub struct DecoderTokenizer {
    inner: Tokenizer,
    /// Prepended by [`Self::encode`] when the pipeline does not add it itself (GGUF files with
    /// `tokenizer.ggml.add_bos_token = true`).
    prepend_bos: Option<u32>,
    /// Generation stops at any of these.
    pub eos_ids: Vec<u32>,
    /// The Jinja chat template, if the checkpoint has one.
    pub chat_template: Option<String>,
    bos_token: String,
    eos_token: String,
    path: PathBuf,
}

impl std::fmt::Debug for DecoderTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecoderTokenizer")
            .field("path", &self.path)
            .field("vocab_size", &self.inner.get_vocab_size(true))
            .field("prepend_bos", &self.prepend_bos)
            .field("eos_ids", &self.eos_ids)
            .finish()
    }
}

impl DecoderTokenizer {
    /// The tokenizer of an HF checkpoint directory: `tokenizer.json` (its post-processor decides
    /// whether a BOS is added), the chat template from `chat_template.jinja` or
    /// `tokenizer_config.json`, and the end-of-sequence ids of `generation_config.json` (else
    /// `config.json`'s).
    pub fn from_dir(dir: &Path, config: &DecoderConfig) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        let inner = Tokenizer::from_file(&path).map_err(|e| ModelError::Tokenizer {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let read_json = |name: &str| -> Result<Option<Value>> {
            let p = dir.join(name);
            if !p.is_file() {
                return Ok(None);
            }
            let text = std::fs::read_to_string(&p).map_err(io_err(&p))?;
            serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| ModelError::Format {
                    path: p,
                    message: format!("invalid JSON: {e}"),
                })
        };
        let tok_config = read_json("tokenizer_config.json")?.unwrap_or(Value::Null);
        let jinja = dir.join("chat_template.jinja");
        let chat_template = if jinja.is_file() {
            Some(std::fs::read_to_string(&jinja).map_err(io_err(&jinja))?)
        } else {
            tok_config
                .get("chat_template")
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        let token_str = |key: &str| match tok_config.get(key) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Object(o)) => o
                .get("content")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            _ => String::new(),
        };
        let mut eos_ids = config.eos_token_ids.clone();
        if let Some(generation) = read_json("generation_config.json")? {
            match generation.get("eos_token_id") {
                Some(Value::Number(n)) => {
                    eos_ids = n.as_u64().map(|v| v as u32).into_iter().collect()
                }
                Some(Value::Array(items)) => {
                    eos_ids = items
                        .iter()
                        .filter_map(Value::as_u64)
                        .map(|v| v as u32)
                        .collect()
                }
                _ => {}
            }
        }
        // Without `tokenizer_config.json`'s `eos_token`, the vocabulary's token of the first EOS id.
        let mut eos_token = token_str("eos_token");
        if eos_token.is_empty()
            && let Some(token) = eos_ids.first().and_then(|&id| inner.id_to_token(id))
        {
            eos_token = token;
        }
        Ok(Self {
            inner,
            prepend_bos: None,
            eos_ids,
            chat_template,
            bos_token: token_str("bos_token"),
            eos_token,
            path,
        })
    }

    /// The tokenizer stored in a GGUF file ([`GgufFile::tokenizer`]), with BOS prepended when
    /// `tokenizer.ggml.add_bos_token` is true (absent counts as false for byte-level BPE, as in
    /// llama.cpp), and the chat template of `tokenizer.chat_template`.
    pub fn from_gguf(file: &GgufFile) -> Result<Self> {
        let inner = file.tokenizer()?;
        let id = |key: &str| file.meta(key).and_then(MetaValue::as_u64).map(|v| v as u32);
        let add_bos = matches!(
            file.meta("tokenizer.ggml.add_bos_token"),
            Some(MetaValue::Bool(true))
        );
        let bos = id("tokenizer.ggml.bos_token_id");
        let eos = id("tokenizer.ggml.eos_token_id");
        let token = |i: Option<u32>| i.and_then(|i| inner.id_to_token(i)).unwrap_or_default();
        Ok(Self {
            prepend_bos: if add_bos { bos } else { None },
            eos_ids: eos.into_iter().collect(),
            chat_template: file
                .meta("tokenizer.chat_template")
                .and_then(MetaValue::as_str)
                .map(str::to_string),
            bos_token: token(bos),
            eos_token: token(eos),
            path: file.path().to_path_buf(),
            inner,
        })
    }

    /// The end-of-sequence token as text (joins segments the way Mondal et al.'s
    /// `premise {eos} hypothesis` does): `tokenizer_config.json`'s `eos_token`, else the
    /// vocabulary's token of the first EOS id; empty when neither exists.
    pub fn eos_token(&self) -> &str {
        &self.eos_token
    }

    /// The `tokenizers` pipeline.
    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }

    /// Token ids of `text`, with the special tokens the tokenizer adds (a BOS only if it adds
    /// one).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = self.ids(text, true)?;
        if let Some(bos) = self.prepend_bos
            && ids.first() != Some(&bos)
        {
            ids.insert(0, bos);
        }
        Ok(ids)
    }

    /// Token ids of `text` without special tokens (`add_special_tokens=False`).
    pub fn encode_plain(&self, text: &str) -> Result<Vec<u32>> {
        self.ids(text, false)
    }

    /// The pipeline's ids of `text`, with or without its post-processor's special tokens.
    fn ids(&self, text: &str, special: bool) -> Result<Vec<u32>> {
        let encoding = self
            .inner
            .encode(text, special)
            .map_err(|e| ModelError::Tokenizer {
                path: self.path.clone(),
                message: e.to_string(),
            })?;
        Ok(encoding.get_ids().to_vec())
    }

    /// The id of the end-of-sequence token, if the vocabulary has it.
    pub fn eos_id(&self) -> Option<u32> {
        self.inner.token_to_id(&self.eos_token)
    }

    /// Text of `ids`, special tokens skipped.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, true)
            .map_err(|e| ModelError::Tokenizer {
                path: self.path.clone(),
                message: e.to_string(),
            })
    }

    /// A one-turn conversation (`user: prompt`) rendered with the chat template and the
    /// generation prompt, as `apply_chat_template(..., add_generation_prompt=True)` does.
    pub fn apply_chat_template(&self, prompt: &str) -> Result<String> {
        let template = self
            .chat_template
            .as_deref()
            .ok_or_else(|| ModelError::Tokenizer {
                path: self.path.clone(),
                message: "the checkpoint has no chat template".into(),
            })?;
        let err = |e: minijinja::Error| ModelError::Tokenizer {
            path: self.path.clone(),
            message: format!("chat template: {e:#}"),
        };
        let mut env = minijinja::Environment::new();
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> std::result::Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    msg,
                ))
            },
        );
        env.add_template("chat", template).map_err(err)?;
        env.get_template("chat")
            .map_err(err)?
            .render(minijinja::context! {
                messages => vec![minijinja::context! { role => "user", content => prompt }],
                add_generation_prompt => true,
                bos_token => self.bos_token.clone(),
                eos_token => self.eos_token.clone(),
            })
            .map_err(err)
    }
}

/// The result of [`perplexity`].
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Perplexity {
    /// Tokens in the encoded text.
    pub n_tokens: usize,
    /// Mean negative log-likelihood (natural log) over the `n_tokens − 1` predicted tokens.
    pub mean_nll: f64,
    /// `exp(mean_nll)`.
    pub perplexity: f64,
}

/// Perplexity of `ids` under `model`, predicting every token but the first exactly once.
///
/// Sequences longer than `window` are split into windows of `window` tokens that overlap by one
/// token: window `k` starts at `k · (window − 1)` and predicts the `window − 1` tokens after its
/// first, so no token is predicted twice and none is skipped (each window starts without the
/// earlier context). Interventions of `ctx` apply in every window.
///
/// # Errors
/// Fewer than two tokens, or a window shorter than two.
pub fn perplexity<B: Backend>(
    model: &LlamaModel<B>,
    ids: &[u32],
    window: usize,
    ctx: &mut ForwardContext<B>,
    device: &B::Device,
) -> std::result::Result<Perplexity, String> {
    if ids.len() < 2 {
        return Err(format!(
            "the text has {} token(s); perplexity needs at least 2",
            ids.len()
        ));
    }
    if window < 2 {
        return Err(format!("window of {window} token(s); it needs at least 2"));
    }
    let mut total = 0f64;
    let mut start = 0;
    while start + 1 < ids.len() {
        let end = (start + window).min(ids.len());
        total += windows_nll(model, &[&ids[start..end]], ctx, device).0;
        start = end - 1;
    }
    let mean_nll = total / (ids.len() - 1) as f64;
    Ok(Perplexity {
        n_tokens: ids.len(),
        mean_nll,
        perplexity: mean_nll.exp(),
    })
}

/// Token ids as a `[rows, len]` tensor.
///
/// # Panics
/// If the rows have different lengths.
pub fn token_ids<B: Backend, W: AsRef<[u32]>>(rows: &[W], device: &B::Device) -> Tensor<B, 2, Int> {
    let len = rows.first().map_or(0, |r| r.as_ref().len());
    assert!(
        rows.iter().all(|r| r.as_ref().len() == len),
        "rows of one length"
    );
    let ids: Vec<i64> = rows
        .iter()
        .flat_map(|r| r.as_ref().iter().map(|&i| i as i64))
        .collect();
    Tensor::from_data(TensorData::new(ids, [rows.len(), len]), device)
}

/// Summed NLL (natural log) of windows of equal length, batched: for each window the tokens after
/// its first given the ones before; returns the sum and the number of predicted tokens
/// (`windows · (len − 1)`). Interventions of `ctx` apply.
///
/// # Panics
/// If the windows are empty, shorter than 2 tokens, or of different lengths.
pub fn windows_nll<B: Backend, W: AsRef<[u32]>>(
    model: &LlamaModel<B>,
    windows: &[W],
    ctx: &mut ForwardContext<B>,
    device: &B::Device,
) -> (f64, usize) {
    let n = windows.first().map_or(0, |w| w.as_ref().len());
    assert!(n >= 2, "windows of at least 2 tokens");
    let batch = windows.len();
    let input = token_ids(windows, device);
    let hidden = model.hidden(input, None, None, ctx);
    let width = hidden.dims()[2];
    let hidden = hidden.slice([0..batch, 0..n - 1, 0..width]);
    let log_probs = crate::fused::log_softmax(model.logits(hidden), 2);
    let targets: Vec<i64> = windows
        .iter()
        .flat_map(|w| w.as_ref()[1..].iter().map(|&i| i as i64))
        .collect();
    let targets =
        Tensor::<B, 3, Int>::from_data(TensorData::new(targets, [batch, n - 1, 1]), device);
    let picked: Vec<f32> = log_probs
        .gather(2, targets)
        .into_data()
        .convert::<f32>()
        .into_vec()
        .expect("f32 log-probabilities");
    (
        -picked.iter().map(|&v| v as f64).sum::<f64>(),
        batch * (n - 1),
    )
}

/// The causal LM loss of right-padded rows, differentiable: the mean cross-entropy of every
/// real token after the first given the ones before it (HF's `labels` with padding set to
/// −100, mean over the batch's predicted tokens). `attention_mask` is 1 for real tokens.
/// Interventions of `ctx` apply.
///
/// # Panics
/// If the rows are shorter than 2 positions or no row has 2 real tokens.
pub fn lm_loss<B: Backend>(
    model: &LlamaModel<B>,
    input_ids: Tensor<B, 2, Int>,
    attention_mask: Tensor<B, 2>,
    ctx: &mut ForwardContext<B>,
) -> Tensor<B, 1> {
    let [batch, n] = input_ids.dims();
    assert!(n >= 2, "rows of at least 2 positions");
    let hidden = model.hidden(input_ids.clone(), Some(attention_mask.clone()), None, ctx);
    let width = hidden.dims()[2];
    let logits = model.logits(hidden.slice([0..batch, 0..n - 1, 0..width]));
    let log_probs = crate::fused::log_softmax(logits, 2);
    let targets = input_ids.slice([0..batch, 1..n]).reshape([batch, n - 1, 1]);
    let picked = log_probs.gather(2, targets).reshape([batch, n - 1]);
    let weights = attention_mask.slice([0..batch, 1..n]);
    let count = weights.clone().sum();
    -(picked * weights).sum() / count
}

/// Greedy decoding: up to `max_new_tokens` tokens after `prompt`, stopping after a token of
/// `stop` (which is included) or at the model's context length. Keys and values are cached, and
/// interventions of `ctx` apply at every step.
pub fn generate_greedy<B: Backend>(
    model: &LlamaModel<B>,
    prompt: &[u32],
    max_new_tokens: usize,
    stop: &[u32],
    ctx: &mut ForwardContext<B>,
    device: &B::Device,
) -> Vec<u32> {
    let mut cache = KvCache::new();
    let mut out = Vec::with_capacity(max_new_tokens);
    let mut next: Vec<u32> = prompt.to_vec();
    while out.len() < max_new_tokens
        && !next.is_empty()
        && cache.len() + next.len() <= model.max_positions()
    {
        let n = next.len();
        let input = token_ids(&[&next], device);
        let hidden = model.hidden(input, None, Some(&mut cache), ctx);
        let width = hidden.dims()[2];
        let last = hidden.slice([0..1, n - 1..n, 0..width]);
        let token = model.logits(last).argmax(2).into_scalar().elem::<i64>() as u32;
        out.push(token);
        if stop.contains(&token) {
            break;
        }
        next = vec![token];
    }
    out
}
