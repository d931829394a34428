//! Loading decoders from HF safetensors checkpoints and GGUF files, and saving them back.
//!
//! | HF key | field |
//! |---|---|
//! | `model.embed_tokens.weight` | `embed_tokens.weight` |
//! | `model.layers.{i}.self_attn.{q,k,v,o}_proj.{weight,bias}` | `layers[i].self_attn.*` |
//! | `model.layers.{i}.mlp.{gate,up,down}_proj.{weight,bias}` | `layers[i].mlp.*` |
//! | `model.layers.{i}.{input,post_attention}_layernorm.weight` | `layers[i].*.gamma` |
//! | `model.norm.weight` | `norm.gamma` |
//! | `lm_head.weight` | `lm_head.weight` (absent when tied) |
//! | `score.weight` | [`DecoderClassifier`]'s `score` |
//!
//! Loading is strict ([`TensorMap::finish`]). Keys dropped on purpose, and listed in the
//! [`LoadReport`]: `lm_head.weight` of a tied model (a copy of the embeddings) and the
//! `rotary_emb.inv_freq` buffers of old Llama checkpoints (recomputed from the config).
//!
//! GGUF files are read with [`GgufFile::hf_tensors`] (dequantised to f32, q/k rows un-permuted
//! from llama.cpp's interleaved RoPE order) and [`DecoderConfig::from_gguf`].

use std::path::{Path, PathBuf};

use burn::module::Param;
use burn::nn::{Linear, RmsNorm, RmsNormConfig};
use burn::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;

use super::text::DecoderTokenizer;
use super::{
    DecoderClassifier, DecoderConfig, LlamaAttention, LlamaLayer, LlamaMlp, LlamaModel, ScoreHead,
    TokenPosition,
};
use crate::error::{ModelError, Result};
use crate::gguf::GgufFile;
use crate::params::{
    LoadReport, embedding, fresh_linear, save_linear, tensor, to_host, torch_linear,
};
use crate::weights::TensorMap;

/// A decoder read from disk: its config, tensors and tokenizer.
#[derive(Debug)]
pub struct DecoderCheckpoint {
    /// The config (from `config.json` or the GGUF metadata).
    pub config: DecoderConfig,
    /// The tensors, by HF key.
    pub tensors: TensorMap,
    /// The tokenizer (`tokenizer.json`, or rebuilt from the GGUF metadata); `None` for an HF
    /// directory without `tokenizer.json`.
    pub tokenizer: Option<DecoderTokenizer>,
    /// The file or directory it was read from.
    pub path: PathBuf,
}

impl DecoderCheckpoint {
    /// Read a decoder from a `.gguf` file, a directory holding exactly one `.gguf` file and no
    /// `config.json`, or an HF checkpoint directory (`config.json`, `model.safetensors` or its
    /// sharded index, and `tokenizer.json` when there is one).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        if let Some(gguf) = gguf_file(path)? {
            let file = GgufFile::open(&gguf)?;
            let config = DecoderConfig::from_gguf(&file)?;
            let tokenizer = Some(DecoderTokenizer::from_gguf(&file)?);
            let mut tensors = TensorMap::new(&gguf);
            for (name, t) in file.hf_tensors()? {
                tensors.insert(name, t);
            }
            return Ok(Self {
                config,
                tensors,
                tokenizer,
                path: gguf,
            });
        }
        if !path.is_dir() {
            return Err(ModelError::not_found(
                path,
                "a .gguf file or a decoder checkpoint folder",
            ));
        }
        let config = DecoderConfig::from_file(path)?;
        let tokenizer = if path.join("tokenizer.json").is_file() {
            Some(DecoderTokenizer::from_dir(path, &config)?)
        } else {
            None
        };
        Ok(Self {
            config,
            tensors: TensorMap::open(path)?,
            tokenizer,
            path: path.to_path_buf(),
        })
    }

    /// [`Self::open`], for a checkpoint that must carry its tokenizer (studies and fine-tuning
    /// tokenize text): a checkpoint without one is a [`ModelError::Tokenizer`] naming its path.
    pub fn open_with_tokenizer(path: impl AsRef<Path>) -> Result<(Self, DecoderTokenizer)> {
        let checkpoint = Self::open(path)?;
        let tokenizer = checkpoint
            .tokenizer
            .clone()
            .ok_or_else(|| ModelError::Tokenizer {
                path: checkpoint.path.clone(),
                message: "the checkpoint has no tokenizer (no tokenizer.json)".into(),
            })?;
        Ok((checkpoint, tokenizer))
    }

    /// Load the causal LM (every tensor must be used).
    pub fn load<B: Backend>(mut self, device: &B::Device) -> Result<(LlamaModel<B>, LoadReport)> {
        let mut report = LoadReport::default();
        let model = load_llama(&self.config, &mut self.tensors, &mut report, device)?;
        self.tensors.finish()?;
        Ok((model, report))
    }

    /// Load a classifier: the decoder plus `score.weight` `[num_labels, hidden]` (and, for
    /// [`ScoreHead::TorchLinear`], `score.bias` `[num_labels]`) from the checkpoint, or a fresh
    /// head as `head` draws it (seeded) when the checkpoint has none. The LM head, if any, is
    /// dropped and reported.
    pub fn load_classifier<B: Backend>(
        mut self,
        num_labels: usize,
        position: TokenPosition,
        head: ScoreHead,
        seed: u64,
        device: &B::Device,
    ) -> Result<(DecoderClassifier<B>, LoadReport)> {
        let mut report = LoadReport::default();
        let hidden = self.config.hidden_size;
        let score = match self
            .tensors
            .take_optional("score.weight", &[num_labels, hidden])?
        {
            Some(w) => Linear {
                weight: Param::from_tensor(tensor(w.transposed(), device)),
                bias: match head {
                    ScoreHead::Hf => None,
                    ScoreHead::TorchLinear => Some(Param::from_tensor(tensor(
                        self.tensors.take("score.bias", &[num_labels])?,
                        device,
                    ))),
                },
            },
            None => {
                report.initialised.push("score".into());
                let mut rng = StdRng::seed_from_u64(seed);
                match head {
                    ScoreHead::Hf => {
                        let mut fresh = fresh_linear(hidden, num_labels, &mut rng, device);
                        fresh.bias = None;
                        fresh
                    }
                    ScoreHead::TorchLinear => torch_linear(hidden, num_labels, &mut rng, device),
                }
            }
        };
        if !self.config.tie_word_embeddings {
            report
                .dropped
                .extend(self.tensors.discard_prefix("lm_head."));
            self.config.tie_word_embeddings = true; // no head to build
        }
        let mut model = load_llama(&self.config, &mut self.tensors, &mut report, device)?;
        model.lm_head = None;
        self.tensors.finish()?;
        Ok((DecoderClassifier::new(model, score, position), report))
    }
}

/// Whether `path` holds a decoder that [`DecoderCheckpoint::open`] reads: a `.gguf` file, a
/// directory with one `.gguf` file and no `config.json`, or a `config.json` of a decoder family.
pub fn is_decoder(path: &Path) -> bool {
    if path.join("config.json").is_file() {
        return DecoderConfig::from_file(path).is_ok();
    }
    matches!(gguf_file(path), Ok(Some(_)))
}

/// The GGUF file `path` names, if it names one.
pub(crate) fn gguf_file(path: &Path) -> Result<Option<PathBuf>> {
    if path.is_file() || path.extension().is_some_and(|e| e == "gguf") {
        return Ok(path
            .extension()
            .is_some_and(|e| e == "gguf")
            .then(|| path.to_path_buf()));
    }
    if !path.is_dir() || path.join("config.json").is_file() {
        return Ok(None);
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(crate::error::io_err(path))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "gguf"))
        .collect();
    found.sort();
    match found.len() {
        0 => Ok(None),
        1 => Ok(found.pop()),
        _ => Err(ModelError::Format {
            path: path.to_path_buf(),
            message: format!(
                "{} .gguf files and no config.json; name the file to load",
                found.len()
            ),
        }),
    }
}

/// Build a decoder from the HF-named tensors in `map` (taking them out).
pub fn load_llama<B: Backend>(
    config: &DecoderConfig,
    map: &mut TensorMap,
    report: &mut LoadReport,
    device: &B::Device,
) -> Result<LlamaModel<B>> {
    let (h, ffn) = (config.hidden_size, config.intermediate_size);
    let q_out = config.num_attention_heads * config.head_dim;
    let kv_out = config.num_key_value_heads * config.head_dim;
    let inv_freq: Vec<String> = map
        .keys()
        .filter(|k| k.ends_with("rotary_emb.inv_freq"))
        .map(str::to_string)
        .collect();
    for k in inv_freq {
        report.dropped.extend(map.discard_prefix(&k));
    }
    let eps = config.rms_norm_eps;
    let mut layers = Vec::with_capacity(config.num_hidden_layers);
    for i in 0..config.num_hidden_layers {
        let l = |k: &str| format!("model.layers.{i}.{k}");
        let ab = config.attention_bias;
        let mb = config.mlp_bias;
        layers.push(LlamaLayer {
            self_attn: LlamaAttention {
                q_proj: linear(map, &l("self_attn.q_proj"), h, q_out, ab, device)?,
                k_proj: linear(map, &l("self_attn.k_proj"), h, kv_out, ab, device)?,
                v_proj: linear(map, &l("self_attn.v_proj"), h, kv_out, ab, device)?,
                o_proj: linear(map, &l("self_attn.o_proj"), q_out, h, ab, device)?,
            },
            mlp: LlamaMlp {
                gate_proj: linear(map, &l("mlp.gate_proj"), h, ffn, mb, device)?,
                up_proj: linear(map, &l("mlp.up_proj"), h, ffn, mb, device)?,
                down_proj: linear(map, &l("mlp.down_proj"), ffn, h, mb, device)?,
            },
            lora: super::LayerLora::none(),
            input_layernorm: rms_norm(map, &l("input_layernorm"), h, eps, device)?,
            post_attention_layernorm: rms_norm(
                map,
                &l("post_attention_layernorm"),
                h,
                eps,
                device,
            )?,
        });
    }
    let embed_tokens = embedding(map, "model.embed_tokens", config.vocab_size, h, device)?;
    let norm = rms_norm(map, "model.norm", h, eps, device)?;
    let lm_head = if config.tie_word_embeddings {
        if map.contains("lm_head.weight") {
            report.dropped.extend(map.discard_prefix("lm_head.weight"));
        }
        None
    } else {
        Some(linear(map, "lm_head", h, config.vocab_size, false, device)?)
    };
    Ok(LlamaModel::from_parts(
        embed_tokens,
        layers,
        norm,
        lm_head,
        config,
    ))
}

/// Write the decoder's tensors into `map` in HF layout (no `lm_head.weight` when tied).
pub fn save_llama<B: Backend>(model: &LlamaModel<B>, map: &mut TensorMap) {
    map.insert(
        "model.embed_tokens.weight",
        to_host(model.embed_tokens.weight.val()),
    );
    for (i, layer) in model.layers.iter().enumerate() {
        let l = |k: &str| format!("model.layers.{i}.{k}");
        let a = &layer.self_attn;
        save_linear(&a.q_proj, &l("self_attn.q_proj"), map);
        save_linear(&a.k_proj, &l("self_attn.k_proj"), map);
        save_linear(&a.v_proj, &l("self_attn.v_proj"), map);
        save_linear(&a.o_proj, &l("self_attn.o_proj"), map);
        let m = &layer.mlp;
        save_linear(&m.gate_proj, &l("mlp.gate_proj"), map);
        save_linear(&m.up_proj, &l("mlp.up_proj"), map);
        save_linear(&m.down_proj, &l("mlp.down_proj"), map);
        map.insert(
            l("input_layernorm.weight"),
            to_host(layer.input_layernorm.gamma.val()),
        );
        map.insert(
            l("post_attention_layernorm.weight"),
            to_host(layer.post_attention_layernorm.gamma.val()),
        );
    }
    map.insert("model.norm.weight", to_host(model.norm.gamma.val()));
    if let Some(head) = &model.lm_head {
        save_linear(head, "lm_head", map);
    }
}

fn linear<B: Backend>(
    map: &mut TensorMap,
    key: &str,
    d_in: usize,
    d_out: usize,
    bias: bool,
    device: &B::Device,
) -> Result<Linear<B>> {
    let weight = map
        .take(&format!("{key}.weight"), &[d_out, d_in])?
        .transposed();
    let bias = if bias {
        let b = map.take(&format!("{key}.bias"), &[d_out])?;
        Some(Param::from_tensor(tensor(b, device)))
    } else {
        None
    };
    Ok(Linear {
        weight: Param::from_tensor(tensor(weight, device)),
        bias,
    })
}

fn rms_norm<B: Backend>(
    map: &mut TensorMap,
    key: &str,
    d: usize,
    eps: f64,
    device: &B::Device,
) -> Result<RmsNorm<B>> {
    let gamma = map.take(&format!("{key}.weight"), &[d])?;
    let mut norm = RmsNormConfig::new(d).with_epsilon(eps).init(device);
    norm.gamma = Param::from_tensor(tensor(gamma, device));
    Ok(norm)
}
