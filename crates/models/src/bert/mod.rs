//! BERT-family encoders: BERT, RoBERTa and the ELECTRA discriminator.
//!
//! Devlin et al., "BERT" (arXiv 1810.04805); Liu et al., "RoBERTa" (arXiv 1907.11692); Clark et
//! al., "ELECTRA" (arXiv 2003.10555). Ported from HF `transformers`' `modeling_bert.py`,
//! `modeling_roberta.py` and `modeling_electra.py` (eager attention). The three share the
//! post-norm transformer stack; they differ only in their embeddings:
//!
//! - RoBERTa's position ids count non-padding tokens and start at `pad_token_id + 1`
//!   (`create_position_ids_from_input_ids`), so padding never shifts a token's position.
//! - ELECTRA's embeddings may be narrower than the hidden size (`embedding_size`), followed by a
//!   linear `embeddings_project`; ELECTRA has no pooler.
//! - Longformer has RoBERTa's embeddings; its attention is a sliding window plus global
//!   attention ([`longformer`]), with three more projections per layer.
//!
//! Field names follow the checkpoint keys (`encoder.layer.{i}.attention.self.query`), except
//! `self` → `self_attn` and `LayerNorm` → `layer_norm`; [`crate::bert::load`] does the mapping.

pub mod config;
pub mod heads;
pub mod load;
pub mod longformer;
pub mod reformulator;
pub mod text;

use burn::nn::{Embedding, LayerNorm, Linear};
use burn::prelude::*;
use burn::tensor::activation;

use crate::bert::config::{Activation, EncoderConfig, EncoderFamily};
use crate::context::ForwardContext;
use crate::fused;

/// A tokenized batch, padded to its longest sequence.
#[derive(Debug, Clone)]
pub struct EncoderInput<B: Backend> {
    /// Token ids, `[batch, seq]`.
    pub input_ids: Tensor<B, 2, Int>,
    /// 1 for real tokens, 0 for padding, `[batch, seq]`.
    pub attention_mask: Tensor<B, 2>,
    /// Segment ids, `[batch, seq]`.
    pub token_type_ids: Tensor<B, 2, Int>,
    /// Longformer only: 1 for tokens with global attention, 0 elsewhere, `[batch, seq]` (HF's
    /// `global_attention_mask`). Other families ignore it; `None` is all zeros.
    pub global_attention_mask: Option<Tensor<B, 2>>,
}

impl<B: Backend> EncoderInput<B> {
    /// This input with global attention on each row's first token only (what HF's Longformer
    /// classifiers set when given no global mask).
    pub fn with_global_first_token(mut self) -> Self {
        let [batch, seq] = self.attention_mask.dims();
        let device = self.attention_mask.device();
        let mut flags = vec![0f32; batch * seq];
        for row in 0..batch {
            flags[row * seq] = 1.0;
        }
        self.global_attention_mask = Some(Tensor::from_data(
            TensorData::new(flags, [batch, seq]),
            &device,
        ));
        self
    }
}

/// Word, position and token-type embeddings, then LayerNorm and dropout.
#[derive(Module, Debug)]
pub struct Embeddings<B: Backend> {
    /// `[vocab_size, embedding_size]`.
    pub word_embeddings: Embedding<B>,
    /// `[max_position_embeddings, embedding_size]`.
    pub position_embeddings: Embedding<B>,
    /// `[type_vocab_size, embedding_size]`.
    pub token_type_embeddings: Embedding<B>,
    /// LayerNorm over `embedding_size`.
    pub layer_norm: LayerNorm<B>,
}

/// Query, key and value projections (HF `attention.self`).
#[derive(Module, Debug)]
pub struct SelfAttention<B: Backend> {
    /// `hidden → hidden`.
    pub query: Linear<B>,
    /// `hidden → hidden`.
    pub key: Linear<B>,
    /// `hidden → hidden`.
    pub value: Linear<B>,
    /// Longformer only: the projections of the global attention.
    pub global: Option<GlobalProjections<B>>,
}

/// Longformer's global-attention projections (HF `attention.self.{query,key,value}_global`).
#[derive(Module, Debug)]
pub struct GlobalProjections<B: Backend> {
    /// `hidden → hidden`.
    pub query_global: Linear<B>,
    /// `hidden → hidden`.
    pub key_global: Linear<B>,
    /// `hidden → hidden`.
    pub value_global: Linear<B>,
}

/// A projection followed by dropout, residual and LayerNorm (HF `*.output`).
#[derive(Module, Debug)]
pub struct DenseNorm<B: Backend> {
    /// The projection.
    pub dense: Linear<B>,
    /// Post-residual LayerNorm.
    pub layer_norm: LayerNorm<B>,
}

/// Multi-head self-attention with its output block (HF `attention`).
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    /// Q, K, V.
    pub self_attn: SelfAttention<B>,
    /// Output projection, residual, LayerNorm.
    pub output: DenseNorm<B>,
}

/// The FFN input projection (HF `intermediate`); its activated output holds the "neurons".
#[derive(Module, Debug)]
pub struct Intermediate<B: Backend> {
    /// `hidden → intermediate`.
    pub dense: Linear<B>,
}

/// One transformer layer (HF `encoder.layer.{i}`).
#[derive(Module, Debug)]
pub struct Layer<B: Backend> {
    /// Self-attention block.
    pub attention: Attention<B>,
    /// FFN input projection.
    pub intermediate: Intermediate<B>,
    /// FFN output projection, residual, LayerNorm.
    pub output: DenseNorm<B>,
}

/// The stack of layers (HF `encoder`).
#[derive(Module, Debug)]
pub struct Encoder<B: Backend> {
    /// Layers in order.
    pub layer: Vec<Layer<B>>,
}

/// `tanh(W h_[CLS] + b)` (HF `pooler`).
#[derive(Module, Debug)]
pub struct Pooler<B: Backend> {
    /// `hidden → hidden`.
    pub dense: Linear<B>,
}

/// A BERT-family encoder without task head.
#[derive(Module, Debug)]
pub struct BertModel<B: Backend> {
    /// Token embeddings.
    pub embeddings: Embeddings<B>,
    /// ELECTRA only, when `embedding_size != hidden_size`.
    pub embeddings_project: Option<Linear<B>>,
    /// The transformer layers.
    pub encoder: Encoder<B>,
    /// BERT and RoBERTa; absent for ELECTRA and for checkpoints saved without it.
    pub pooler: Option<Pooler<B>>,
    #[module(skip)]
    hp: Hyper,
}

/// The hyperparameters the forward pass needs, copied out of [`EncoderConfig`].
#[derive(Debug, Clone)]
pub(crate) struct Hyper {
    pub family: EncoderFamily,
    pub n_heads: usize,
    pub act: Activation,
    pub hidden_dropout: f64,
    pub attention_dropout: f64,
    pub pad_token_id: usize,
    pub max_input_len: usize,
    pub layer_norm_eps: f64,
    /// Longformer's window per layer (empty otherwise).
    pub attention_window: Vec<usize>,
}

impl Hyper {
    pub(crate) fn new(config: &EncoderConfig) -> Self {
        Self {
            family: config.family,
            n_heads: config.num_attention_heads,
            act: config.hidden_act,
            hidden_dropout: config.hidden_dropout_prob,
            attention_dropout: config.attention_probs_dropout_prob,
            pad_token_id: config.pad_token_id,
            max_input_len: config.max_input_len(),
            layer_norm_eps: config.layer_norm_eps,
            attention_window: config.attention_window.clone(),
        }
    }
}

impl<B: Backend> BertModel<B> {
    pub(crate) fn from_parts(
        embeddings: Embeddings<B>,
        embeddings_project: Option<Linear<B>>,
        encoder: Encoder<B>,
        pooler: Option<Pooler<B>>,
        config: &EncoderConfig,
    ) -> Self {
        Self {
            embeddings,
            embeddings_project,
            encoder,
            pooler,
            hp: Hyper::new(config),
        }
    }

    /// Number of transformer layers.
    pub fn num_layers(&self) -> usize {
        self.encoder.layer.len()
    }

    /// FFN neurons per layer (`intermediate_size`).
    pub fn intermediate_size(&self) -> usize {
        self.encoder.layer[0].intermediate.dense.weight.dims()[1]
    }

    /// The family this encoder was built as.
    pub fn family(&self) -> EncoderFamily {
        self.hp.family
    }

    /// Last hidden states.
    ///
    /// # Shapes
    /// - input ids, mask, token types: `[batch, seq]`
    /// - output: `[batch, seq, hidden]`
    pub fn forward(&self, input: &EncoderInput<B>, ctx: &mut ForwardContext<B>) -> Tensor<B, 3> {
        let [batch, seq] = input.input_ids.dims();
        assert!(
            seq <= self.hp.max_input_len,
            "input of {seq} tokens is longer than the {} positions this model has",
            self.hp.max_input_len
        );
        let device = input.input_ids.device();
        let position_ids = if self.hp.family.roberta_positions() {
            // HF create_position_ids_from_input_ids: pad + cumsum(not pad) on real tokens.
            let pad = self.hp.pad_token_id as i64;
            let not_pad = input.input_ids.clone().not_equal_elem(pad).int();
            not_pad.clone().cumsum(1) * not_pad + pad
        } else {
            Tensor::<B, 1, Int>::arange(0..seq as i64, &device)
                .reshape([1, seq])
                .expand([batch, seq])
        };
        let emb = &self.embeddings;
        // A model with one segment (RoBERTa, Longformer: `type_vocab_size = 1`) reads every token
        // as segment 0, as HF does when the caller passes no token types (the official CmpLoss
        // code passes none to these models); a WordPiece pair would otherwise index row 1.
        let token_types = if emb.token_type_embeddings.weight.dims()[0] == 1 {
            input.token_type_ids.zeros_like()
        } else {
            input.token_type_ids.clone()
        };
        let x = emb.word_embeddings.forward(input.input_ids.clone())
            + emb.position_embeddings.forward(position_ids)
            + emb.token_type_embeddings.forward(token_types);
        let x = fused::layer_norm(&emb.layer_norm, self.hp.layer_norm_eps, x);
        let mut x = ctx.dropout(x, self.hp.hidden_dropout);
        if let Some(project) = &self.embeddings_project {
            x = fused::linear(project, x);
        }

        // Additive mask as in HF: 0 where attended, the most negative float elsewhere.
        let masks = match self.hp.family {
            EncoderFamily::Longformer => Masks::Longformer(longformer::AttentionMasks::new(
                &input.attention_mask,
                input.global_attention_mask.as_ref(),
            )),
            _ => Masks::Dense(
                (input.attention_mask.clone().neg() + 1.0)
                    .mul_scalar(f32::MIN)
                    .reshape([batch, 1, 1, seq]),
            ),
        };
        for (layer_idx, layer) in self.encoder.layer.iter().enumerate() {
            x = self.layer_forward(layer, layer_idx, x, &masks, ctx);
        }
        x
    }

    /// Pooled output `tanh(W h_[CLS] + b)`, `[batch, hidden]`; `None` without a pooler.
    pub fn pool(&self, hidden: &Tensor<B, 3>) -> Option<Tensor<B, 2>> {
        let pooler = self.pooler.as_ref()?;
        Some(activation::tanh(pooler.dense.forward(first_token(hidden))))
    }

    fn layer_forward(
        &self,
        layer: &Layer<B>,
        layer_idx: usize,
        x: Tensor<B, 3>,
        masks: &Masks<B>,
        ctx: &mut ForwardContext<B>,
    ) -> Tensor<B, 3> {
        let n_heads = self.hp.n_heads;
        let head_mask = ctx.head_mask(layer_idx);
        if let Some(mask) = &head_mask {
            assert_eq!(mask.dims(), [n_heads], "head mask of layer {layer_idx}");
        }
        let qkv = &layer.attention.self_attn;
        let context = match masks {
            Masks::Dense(bias) => {
                self.dense_attention(qkv, x.clone(), bias.clone(), head_mask, ctx)
            }
            Masks::Longformer(masks) => {
                let shape = longformer::LayerShape {
                    n_heads,
                    window: self.hp.attention_window[layer_idx],
                    dropout: self.hp.attention_dropout,
                };
                longformer::attention(qkv, x.clone(), masks, &shape, head_mask, ctx)
            }
        };
        let out = &layer.attention.output;
        let attended = ctx.dropout(fused::linear(&out.dense, context), self.hp.hidden_dropout);
        let x = fused::layer_norm(&out.layer_norm, self.hp.layer_norm_eps, attended + x);

        let h = activate(
            self.hp.act,
            fused::linear(&layer.intermediate.dense, x.clone()),
        );
        let h = ctx.intervene(layer_idx, h);
        let out = &layer.output;
        let y = ctx.dropout(fused::linear(&out.dense, h), self.hp.hidden_dropout);
        fused::layer_norm(&out.layer_norm, self.hp.layer_norm_eps, y + x)
    }
}

/// How the layers of one forward pass mask their attention.
enum Masks<B: Backend> {
    /// Full attention with an additive padding bias, `[batch, 1, 1, seq]`.
    Dense(Tensor<B, 4>),
    /// Longformer's window and global attention.
    Longformer(longformer::AttentionMasks<B>),
}

impl<B: Backend> BertModel<B> {
    /// Full self-attention (BERT, RoBERTa, ELECTRA): the context before the output projection.
    fn dense_attention(
        &self,
        qkv: &SelfAttention<B>,
        x: Tensor<B, 3>,
        bias: Tensor<B, 4>,
        head_mask: Option<Tensor<B, 1>>,
        ctx: &mut ForwardContext<B>,
    ) -> Tensor<B, 3> {
        let [batch, seq, hidden] = x.dims();
        let n_heads = self.hp.n_heads;
        let head_dim = hidden / n_heads;
        let heads = |t: Tensor<B, 3>| t.reshape([batch, seq, n_heads, head_dim]).swap_dims(1, 2);
        let q = heads(fused::linear(&qkv.query, x.clone())); // [batch, heads, seq, head_dim]
        let k = heads(fused::linear(&qkv.key, x.clone()));
        let v = heads(fused::linear(&qkv.value, x));
        let scores = q.matmul(k.transpose()).div_scalar((head_dim as f64).sqrt()) + bias;
        let probs = fused::softmax(scores, 3); // [batch, heads, seq, seq]
        let mut probs = ctx.dropout(probs, self.hp.attention_dropout);
        if let Some(mask) = head_mask {
            probs = probs * mask.reshape([1, n_heads, 1, 1]);
        }
        probs
            .matmul(v)
            .swap_dims(1, 2)
            .reshape([batch, seq, hidden])
    }
}

/// The first token's hidden state, `[batch, seq, hidden]` → `[batch, hidden]`.
pub fn first_token<B: Backend>(hidden: &Tensor<B, 3>) -> Tensor<B, 2> {
    let [batch, _, width] = hidden.dims();
    hidden
        .clone()
        .slice([0..batch, 0..1, 0..width])
        .reshape([batch, width])
}

/// Mean over real (non-padding) tokens, `[batch, hidden]`: the sentence-transformers pooling,
/// which includes `[CLS]` and `[SEP]`.
pub fn mean_pool<B: Backend>(hidden: &Tensor<B, 3>, attention_mask: &Tensor<B, 2>) -> Tensor<B, 2> {
    let [batch, seq, width] = hidden.dims();
    let mask = attention_mask.clone().reshape([batch, seq, 1]);
    let summed = (hidden.clone() * mask.clone())
        .sum_dim(1)
        .reshape([batch, width]);
    let counts = mask.sum_dim(1).reshape([batch, 1]).clamp_min(1e-9);
    summed / counts
}

pub(crate) fn activate<B: Backend, const D: usize>(
    act: Activation,
    x: Tensor<B, D>,
) -> Tensor<B, D> {
    match act {
        Activation::Gelu => activation::gelu(x),
        Activation::GeluTanh => activation::gelu_approximate(x),
        Activation::Relu => activation::relu(x),
        Activation::Silu => crate::fused::silu(x),
    }
}
