//! Loading BERT-family encoders from HF checkpoints, and saving them back.
//!
//! | HF key (after the `bert.` / `roberta.` / `electra.` prefix) | field |
//! |---|---|
//! | `embeddings.{word,position,token_type}_embeddings.weight` | `embeddings.*.weight` |
//! | `embeddings.LayerNorm.{weight,bias}` | `embeddings.layer_norm.{gamma,beta}` |
//! | `embeddings_project.{weight,bias}` (ELECTRA) | `embeddings_project` |
//! | `encoder.layer.{i}.attention.self.{query,key,value}` | `encoder.layer[i].attention.self_attn.*` |
//! | `encoder.layer.{i}.attention.self.{query,key,value}_global` (Longformer) | `….self_attn.global.*` |
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

use burn::prelude::*;

use crate::bert::config::{EncoderConfig, EncoderFamily};
use crate::bert::{
    Attention, BertModel, DenseNorm, Embeddings, Encoder, GlobalProjections, Intermediate, Layer,
    Pooler, SelfAttention,
};
use crate::error::Result;
use crate::params::{
    LoadReport, embedding, layer_norm, linear, save_embedding, save_layer_norm, save_linear,
};
use crate::weights::TensorMap;

/// Key prefixes of pretraining heads, which task models do not use.
pub const PRETRAINING_HEADS: [&str; 5] = [
    "cls.",
    "lm_head.",
    "discriminator_predictions.",
    "generator_predictions.",
    "generator_lm_head.",
];

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
        let global = if config.family == EncoderFamily::Longformer {
            Some(GlobalProjections {
                query_global: linear(map, &l("attention.self.query_global"), h, h, device)?,
                key_global: linear(map, &l("attention.self.key_global"), h, h, device)?,
                value_global: linear(map, &l("attention.self.value_global"), h, h, device)?,
            })
        } else {
            None
        };
        layers.push(Layer {
            attention: Attention {
                self_attn: SelfAttention {
                    query: linear(map, &l("attention.self.query"), h, h, device)?,
                    key: linear(map, &l("attention.self.key"), h, h, device)?,
                    value: linear(map, &l("attention.self.value"), h, h, device)?,
                    global,
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
        if let Some(g) = &qkv.global {
            save_linear(&g.query_global, &l("attention.self.query_global"), map);
            save_linear(&g.key_global, &l("attention.self.key_global"), map);
            save_linear(&g.value_global, &l("attention.self.value_global"), map);
        }
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
