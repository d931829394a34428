//! Loading BERT-family encoders from HF checkpoints, and saving them back.
//!
//! | HF key (after the `bert.` / `roberta.` / `electra.` prefix) | field |
//! |---|---|
//! | `embeddings.{word,position,token_type}_embeddings.weight` | `embeddings.*.weight` |
//! | `embeddings.LayerNorm.{weight,bias}` | `embeddings.layer_norm.{gamma,beta}` |
//! | `embeddings_project.{weight,bias}` (ELECTRA) | `embeddings_project` |
//! | `encoder.layer.{i}.attention.self.{query,key,value}` | `encoder.layer[i].attention.self_attn.*` |
//! | `encoder.layer.{i}.attention.output.{dense,LayerNorm}` | `….attention.output.{dense,layer_norm}` |
//! | `encoder.layer.{i}.intermediate.dense` | `….intermediate.dense` |
//! | `encoder.layer.{i}.output.{dense,LayerNorm}` | `….output.{dense,layer_norm}` |
//! | `pooler.dense` | `pooler.dense` |
//!
//! HF stores linear weights as `[out, in]`; Burn's `Linear` holds `[in, out]`, so weights are
//! transposed on the way in and out. Loading is strict (see [`crate::weights`]); the only keys
//! dropped on purpose are pretraining heads (`cls.*`, `lm_head.*`, `discriminator_predictions.*`,
//! `generator_*`), which a fine-tuning run replaces, and the integer buffers
//! `embeddings.position_ids` / `embeddings.token_type_ids`.

use burn::module::Param;
use burn::nn::{Embedding, LayerNorm, LayerNormConfig, Linear};
use burn::prelude::*;
use rand::Rng;
use rand::rngs::StdRng;

use crate::bert::{
    Attention, BertModel, DenseNorm, Embeddings, Encoder, Intermediate, Layer, Pooler,
    SelfAttention,
};
use crate::config::{EncoderConfig, EncoderFamily};
use crate::error::Result;
use crate::weights::{HostTensor, TensorMap};

/// Key prefixes of pretraining heads, which task models do not use.
pub const PRETRAINING_HEADS: [&str; 5] = [
    "cls.",
    "lm_head.",
    "discriminator_predictions.",
    "generator_predictions.",
    "generator_lm_head.",
];

/// What loading did beyond taking tensors: which keys it dropped and which parameters it
/// initialised because the checkpoint had none (a new task head).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct LoadReport {
    /// Pretraining-head keys that were dropped.
    pub dropped: Vec<String>,
    /// Modules initialised from scratch.
    pub initialised: Vec<String>,
}

/// The prefix before the encoder's keys in this checkpoint (`""` for a bare encoder).
pub fn encoder_prefix(map: &TensorMap, family: EncoderFamily) -> &'static str {
    let prefix = family.hf_prefix();
    if map.keys().any(|k| k.starts_with(prefix)) {
        prefix
    } else {
        ""
    }
}

/// Drop pretraining heads and integer buffers that no task model uses.
pub fn drop_unused(map: &mut TensorMap, prefix: &str, report: &mut LoadReport) {
    for head in PRETRAINING_HEADS {
        report.dropped.extend(map.discard_prefix(head));
    }
    for buffer in ["embeddings.position_ids", "embeddings.token_type_ids"] {
        if map.take_buffer(&format!("{prefix}{buffer}")).is_some() {
            report.dropped.push(format!("{prefix}{buffer}"));
        }
    }
}

/// Build the encoder from `map`, taking its tensors under `prefix`.
pub fn load_encoder<B: Backend>(
    config: &EncoderConfig,
    map: &mut TensorMap,
    prefix: &str,
    device: &B::Device,
) -> Result<BertModel<B>> {
    let (h, e) = (config.hidden_size, config.embedding_size);
    let eps = config.layer_norm_eps;
    let p = |k: &str| format!("{prefix}{k}");
    let embeddings = Embeddings {
        word_embeddings: embedding(
            map,
            &p("embeddings.word_embeddings"),
            config.vocab_size,
            e,
            device,
        )?,
        position_embeddings: embedding(
            map,
            &p("embeddings.position_embeddings"),
            config.max_position_embeddings,
            e,
            device,
        )?,
        token_type_embeddings: embedding(
            map,
            &p("embeddings.token_type_embeddings"),
            config.type_vocab_size,
            e,
            device,
        )?,
        layer_norm: layer_norm(map, &p("embeddings.LayerNorm"), e, eps, device)?,
    };
    let embeddings_project = if config.family == EncoderFamily::Electra && e != h {
        Some(linear(map, &p("embeddings_project"), e, h, device)?)
    } else {
        None
    };
    let mut layers = Vec::with_capacity(config.num_hidden_layers);
    for i in 0..config.num_hidden_layers {
        let l = |k: &str| p(&format!("encoder.layer.{i}.{k}"));
        let ffn = config.intermediate_size;
        layers.push(Layer {
            attention: Attention {
                self_attn: SelfAttention {
                    query: linear(map, &l("attention.self.query"), h, h, device)?,
                    key: linear(map, &l("attention.self.key"), h, h, device)?,
                    value: linear(map, &l("attention.self.value"), h, h, device)?,
                },
                output: DenseNorm {
                    dense: linear(map, &l("attention.output.dense"), h, h, device)?,
                    layer_norm: layer_norm(map, &l("attention.output.LayerNorm"), h, eps, device)?,
                },
            },
            intermediate: Intermediate {
                dense: linear(map, &l("intermediate.dense"), h, ffn, device)?,
            },
            output: DenseNorm {
                dense: linear(map, &l("output.dense"), ffn, h, device)?,
                layer_norm: layer_norm(map, &l("output.LayerNorm"), h, eps, device)?,
            },
        });
    }
    let pooler = if map.contains(&p("pooler.dense.weight")) {
        Some(Pooler {
            dense: linear(map, &p("pooler.dense"), h, h, device)?,
        })
    } else {
        None
    };
    Ok(BertModel::from_parts(
        embeddings,
        embeddings_project,
        Encoder { layer: layers },
        pooler,
        config,
    ))
}

/// Write the encoder's tensors into `map` under `prefix`, in HF layout.
pub fn save_encoder<B: Backend>(model: &BertModel<B>, prefix: &str, map: &mut TensorMap) {
    let p = |k: &str| format!("{prefix}{k}");
    let emb = &model.embeddings;
    save_embedding(&emb.word_embeddings, &p("embeddings.word_embeddings"), map);
    save_embedding(
        &emb.position_embeddings,
        &p("embeddings.position_embeddings"),
        map,
    );
    save_embedding(
        &emb.token_type_embeddings,
        &p("embeddings.token_type_embeddings"),
        map,
    );
    save_layer_norm(&emb.layer_norm, &p("embeddings.LayerNorm"), map);
    if let Some(project) = &model.embeddings_project {
        save_linear(project, &p("embeddings_project"), map);
    }
    for (i, layer) in model.encoder.layer.iter().enumerate() {
        let l = |k: &str| p(&format!("encoder.layer.{i}.{k}"));
        let qkv = &layer.attention.self_attn;
        save_linear(&qkv.query, &l("attention.self.query"), map);
        save_linear(&qkv.key, &l("attention.self.key"), map);
        save_linear(&qkv.value, &l("attention.self.value"), map);
        save_linear(
            &layer.attention.output.dense,
            &l("attention.output.dense"),
            map,
        );
        save_layer_norm(
            &layer.attention.output.layer_norm,
            &l("attention.output.LayerNorm"),
            map,
        );
        save_linear(&layer.intermediate.dense, &l("intermediate.dense"), map);
        save_linear(&layer.output.dense, &l("output.dense"), map);
        save_layer_norm(&layer.output.layer_norm, &l("output.LayerNorm"), map);
    }
    if let Some(pooler) = &model.pooler {
        save_linear(&pooler.dense, &p("pooler.dense"), map);
    }
}

pub(crate) fn tensor<B: Backend, const D: usize>(
    t: HostTensor,
    device: &B::Device,
) -> Tensor<B, D> {
    Tensor::from_data(TensorData::new(t.data, t.shape), device)
}

pub(crate) fn to_host<B: Backend, const D: usize>(t: Tensor<B, D>) -> HostTensor {
    let shape = t.dims().to_vec();
    let data = t
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .expect("a float tensor converts to f32");
    HostTensor::new(shape, data)
}

/// A `Linear` from HF `{key}.weight` `[d_out, d_in]` and `{key}.bias` `[d_out]`.
pub fn linear<B: Backend>(
    map: &mut TensorMap,
    key: &str,
    d_in: usize,
    d_out: usize,
    device: &B::Device,
) -> Result<Linear<B>> {
    let weight = map
        .take(&format!("{key}.weight"), &[d_out, d_in])?
        .transposed();
    let bias = map.take(&format!("{key}.bias"), &[d_out])?;
    Ok(Linear {
        weight: Param::from_tensor(tensor(weight, device)),
        bias: Some(Param::from_tensor(tensor(bias, device))),
    })
}

/// A `Linear` initialised as HF does for a new head: weights `N(0, 0.02²)`, bias 0.
pub fn fresh_linear<B: Backend>(
    d_in: usize,
    d_out: usize,
    rng: &mut StdRng,
    device: &B::Device,
) -> Linear<B> {
    let weight: Vec<f32> = (0..d_in * d_out)
        .map(|_| 0.02 * standard_normal(rng))
        .collect();
    Linear {
        weight: Param::from_tensor(tensor(HostTensor::new(vec![d_in, d_out], weight), device)),
        bias: Some(Param::from_tensor(Tensor::zeros([d_out], device))),
    }
}

fn standard_normal(rng: &mut StdRng) -> f32 {
    // Box–Muller; one draw per call keeps the stream easy to reason about.
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random();
    ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
}

fn layer_norm<B: Backend>(
    map: &mut TensorMap,
    key: &str,
    d: usize,
    eps: f64,
    device: &B::Device,
) -> Result<LayerNorm<B>> {
    let gamma = map.take(&format!("{key}.weight"), &[d])?;
    let beta = map.take(&format!("{key}.bias"), &[d])?;
    let mut norm = LayerNormConfig::new(d).with_epsilon(eps).init(device);
    norm.gamma = Param::from_tensor(tensor(gamma, device));
    norm.beta = Some(Param::from_tensor(tensor(beta, device)));
    Ok(norm)
}

pub(crate) fn embedding<B: Backend>(
    map: &mut TensorMap,
    key: &str,
    n: usize,
    d: usize,
    device: &B::Device,
) -> Result<Embedding<B>> {
    let weight = map.take(&format!("{key}.weight"), &[n, d])?;
    Ok(Embedding {
        weight: Param::from_tensor(tensor(weight, device)),
    })
}

/// Write a `Linear` as HF `{key}.weight` `[out, in]` and `{key}.bias`.
pub fn save_linear<B: Backend>(linear: &Linear<B>, key: &str, map: &mut TensorMap) {
    map.insert(
        format!("{key}.weight"),
        to_host(linear.weight.val()).transposed(),
    );
    if let Some(bias) = &linear.bias {
        map.insert(format!("{key}.bias"), to_host(bias.val()));
    }
}

fn save_layer_norm<B: Backend>(norm: &LayerNorm<B>, key: &str, map: &mut TensorMap) {
    map.insert(format!("{key}.weight"), to_host(norm.gamma.val()));
    if let Some(beta) = &norm.beta {
        map.insert(format!("{key}.bias"), to_host(beta.val()));
    }
}

fn save_embedding<B: Backend>(embedding: &Embedding<B>, key: &str, map: &mut TensorMap) {
    map.insert(format!("{key}.weight"), to_host(embedding.weight.val()));
}
