//! Llama-family decoders: Llama 2 / 3 / 3.1, Mistral, SmolLM.
//!
//! Touvron et al., "Llama 2" (arXiv 2307.09288); Jiang et al., "Mistral 7B" (arXiv 2310.06825).
//! Ported from HF `transformers`' `modeling_llama.py` and `modeling_mistral.py` (eager
//! attention):
//!
//! - pre-norm layers with RMSNorm (`x / sqrt(mean(x²) + eps) · w`);
//! - rotate-half RoPE with `rope_theta` and Llama-3 / linear scaling ([`DecoderConfig::inv_freq`]);
//! - grouped-query attention (`num_key_value_heads` ≤ `num_attention_heads`; query head `h` reads
//!   key/value head `h / (heads / kv_heads)`, as HF's `repeat_kv`), `head_dim` from the config;
//! - a causal mask, key padding from the attention mask, and Mistral's sliding window (a token
//!   sees itself and the `sliding_window − 1` tokens before it);
//! - SwiGLU written out: `a = silu(gate_proj(x)); h = a ⊙ up_proj(x); y = down_proj(h)`. The
//!   "neurons" of neuron-level research are the columns of `a`: the [`ForwardContext`] records
//!   `gate_proj(x)` and `a`, counts positive gate values, and masks or replaces columns of `a`
//!   (before the product with `up_proj(x)`), in every pass, generation included;
//! - a causal LM head, tied to the embeddings or not.
//!
//! Position ids are `0..seq` (plus the cached length when generating), as HF computes them when
//! none are given; batches are padded on the right.
//!
//! Field names follow the checkpoint keys (`model.layers.{i}.self_attn.q_proj`); see
//! [`load`] for the mapping and strictness.

pub mod config;
pub mod load;
pub mod lora;
pub mod peft;
pub mod text;

use burn::nn::{Embedding, Linear, RmsNorm};
use burn::prelude::*;

pub use config::{DecoderConfig, DecoderFamily, RopeScaling};
use lora::apply;
pub use lora::{LORA_TARGETS, LayerLora, load_lora, save_lora};
pub use peft::{
    ADAPTER_CONFIG, ADAPTER_WEIGHTS, PeftAdapter, PeftConfig, PeftTask, load_peft, save_peft,
};

use crate::context::ForwardContext;
use crate::fused;

/// Query, key, value and output projections (HF `self_attn`).
#[derive(Module, Debug)]
pub struct LlamaAttention<B: Backend> {
    /// `hidden → heads · head_dim`.
    pub q_proj: Linear<B>,
    /// `hidden → kv_heads · head_dim`.
    pub k_proj: Linear<B>,
    /// `hidden → kv_heads · head_dim`.
    pub v_proj: Linear<B>,
    /// `heads · head_dim → hidden`.
    pub o_proj: Linear<B>,
}

/// The SwiGLU feed-forward block (HF `mlp`).
#[derive(Module, Debug)]
pub struct LlamaMlp<B: Backend> {
    /// `hidden → intermediate`; `silu` of its output is the neuron activation.
    pub gate_proj: Linear<B>,
    /// `hidden → intermediate`.
    pub up_proj: Linear<B>,
    /// `intermediate → hidden`.
    pub down_proj: Linear<B>,
}

/// One decoder layer (HF `model.layers.{i}`).
#[derive(Module, Debug)]
pub struct LlamaLayer<B: Backend> {
    /// Self-attention.
    pub self_attn: LlamaAttention<B>,
    /// Feed-forward block.
    pub mlp: LlamaMlp<B>,
    /// RMSNorm before attention.
    pub input_layernorm: RmsNorm<B>,
    /// RMSNorm before the feed-forward block.
    pub post_attention_layernorm: RmsNorm<B>,
    /// LoRA adapters on this layer's linears (none unless added with
    /// [`LlamaModel::with_lora`]).
    pub lora: LayerLora<B>,
}

/// A Llama-family causal language model (HF `LlamaForCausalLM` / `MistralForCausalLM`).
#[derive(Module, Debug)]
pub struct LlamaModel<B: Backend> {
    /// `[vocab, hidden]`.
    pub embed_tokens: Embedding<B>,
    /// The layers in order.
    pub layers: Vec<LlamaLayer<B>>,
    /// Final RMSNorm.
    pub norm: RmsNorm<B>,
    /// `hidden → vocab`; `None` when tied to [`Self::embed_tokens`].
    pub lm_head: Option<Linear<B>>,
    #[module(skip)]
    hp: DecoderHyper,
}

/// What the forward pass needs beyond the weights.
#[derive(Debug, Clone)]
pub(crate) struct DecoderHyper {
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub sliding_window: Option<usize>,
    pub attention_dropout: f64,
    pub inv_freq: Vec<f32>,
    pub max_positions: usize,
}

impl DecoderHyper {
    pub(crate) fn new(config: &DecoderConfig) -> Self {
        Self {
            n_heads: config.num_attention_heads,
            n_kv_heads: config.num_key_value_heads,
            head_dim: config.head_dim,
            sliding_window: config.sliding_window,
            attention_dropout: config.attention_dropout,
            inv_freq: config.inv_freq(),
            max_positions: config.max_position_embeddings,
        }
    }
}

/// Keys and values of the tokens seen so far, per layer, after RoPE: `[batch, kv_heads, past,
/// head_dim]`, with the attention mask of those tokens. Used by [`LlamaModel::forward_cached`]
/// so generation does not recompute the prefix.
#[derive(Debug, Clone, Default)]
pub struct KvCache<B: Backend> {
    layers: Vec<(Tensor<B, 4>, Tensor<B, 4>)>,
    mask: Option<Tensor<B, 2>>,
}

impl<B: Backend> KvCache<B> {
    /// An empty cache.
    pub fn new() -> Self {
        Self {
            layers: Vec::new(),
            mask: None,
        }
    }

    /// Number of cached positions.
    pub fn len(&self) -> usize {
        self.mask.as_ref().map_or(0, |m| m.dims()[1])
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<B: Backend> LlamaModel<B> {
    pub(crate) fn from_parts(
        embed_tokens: Embedding<B>,
        layers: Vec<LlamaLayer<B>>,
        norm: RmsNorm<B>,
        lm_head: Option<Linear<B>>,
        config: &DecoderConfig,
    ) -> Self {
        Self {
            embed_tokens,
            layers,
            norm,
            lm_head,
            hp: DecoderHyper::new(config),
        }
    }

    /// Number of layers.
    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// FFN neurons per layer (`intermediate_size`).
    pub fn intermediate_size(&self) -> usize {
        self.layers[0].mlp.gate_proj.weight.dims()[1]
    }

    /// Model width.
    pub fn hidden_size(&self) -> usize {
        self.embed_tokens.weight.dims()[1]
    }

    /// Vocabulary size.
    pub fn vocab_size(&self) -> usize {
        self.embed_tokens.weight.dims()[0]
    }

    /// The context length (`max_position_embeddings`).
    pub fn max_positions(&self) -> usize {
        self.hp.max_positions
    }

    /// Logits of every position, `[batch, seq, vocab]`; `attention_mask` (`[batch, seq]`, 1 for
    /// real tokens) defaults to all ones.
    pub fn forward(
        &self,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Option<Tensor<B, 2>>,
        ctx: &mut ForwardContext<B>,
    ) -> Tensor<B, 3> {
        let hidden = self.hidden(input_ids, attention_mask, None, ctx);
        self.logits(hidden)
    }

    /// Like [`Self::forward`], continuing from `cache` (which is extended with these tokens).
    pub fn forward_cached(
        &self,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Option<Tensor<B, 2>>,
        cache: &mut KvCache<B>,
        ctx: &mut ForwardContext<B>,
    ) -> Tensor<B, 3> {
        let hidden = self.hidden(input_ids, attention_mask, Some(cache), ctx);
        self.logits(hidden)
    }

    /// The LM head: `[batch, seq, hidden]` → `[batch, seq, vocab]`.
    pub fn logits(&self, hidden: Tensor<B, 3>) -> Tensor<B, 3> {
        match &self.lm_head {
            Some(head) => fused::linear(head, hidden),
            None => {
                let [batch, seq, width] = hidden.dims();
                let vocab = self.vocab_size();
                hidden
                    .reshape([batch * seq, width])
                    .matmul(self.embed_tokens.weight.val().transpose())
                    .reshape([batch, seq, vocab])
            }
        }
    }

    /// Final hidden states (after the last RMSNorm), `[batch, seq, hidden]`.
    ///
    /// # Panics
    /// If the positions run past `max_position_embeddings`.
    pub fn hidden(
        &self,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Option<Tensor<B, 2>>,
        mut cache: Option<&mut KvCache<B>>,
        ctx: &mut ForwardContext<B>,
    ) -> Tensor<B, 3> {
        let [batch, seq] = input_ids.dims();
        let device = input_ids.device();
        let past = cache.as_ref().map_or(0, |c| c.len());
        assert!(
            past + seq <= self.hp.max_positions,
            "{} positions exceed the model's context of {}",
            past + seq,
            self.hp.max_positions
        );
        let mask = attention_mask.unwrap_or_else(|| Tensor::ones([batch, seq], &device));
        let full_mask = match cache.as_ref().and_then(|c| c.mask.clone()) {
            Some(past_mask) => Tensor::cat(vec![past_mask, mask.clone()], 1),
            None => mask.clone(),
        };
        let bias = self.attention_bias(&full_mask, past, seq, &device);
        let (cos, sin) = self.rope_tables(past, seq, &device);

        let mut x = self.embed_tokens.forward(input_ids);
        for (i, layer) in self.layers.iter().enumerate() {
            let layer_cache = cache.as_deref_mut().map(|c| (c, i));
            x = self.layer_forward(layer, i, x, &bias, &cos, &sin, &mask, layer_cache, ctx);
        }
        if let Some(c) = cache {
            c.mask = Some(full_mask);
        }
        fused::rms_norm(&self.norm, x)
    }

    /// Additive attention bias `[batch, 1, seq, past + seq]`: 0 where a query may attend, the
    /// most negative f32 elsewhere (causal, key padding, sliding window).
    fn attention_bias(
        &self,
        key_mask: &Tensor<B, 2>,
        past: usize,
        seq: usize,
        device: &B::Device,
    ) -> Tensor<B, 4> {
        let [batch, total] = key_mask.dims();
        let mut allowed = vec![0f32; seq * total];
        for q in 0..seq {
            let pos = past + q;
            let first = self
                .hp
                .sliding_window
                .map_or(0, |w| (pos + 1).saturating_sub(w));
            for k in first..=pos {
                allowed[q * total + k] = 1.0;
            }
        }
        let structural: Tensor<B, 4> =
            Tensor::from_data(TensorData::new(allowed, [1, 1, seq, total]), device);
        let keys = key_mask.clone().reshape([batch, 1, 1, total]);
        // Allowed iff both are 1; the product is 1 or 0.
        ((structural * keys).neg() + 1.0).mul_scalar(f32::MIN)
    }

    /// `cos` and `sin` of `position · inv_freq` for positions `past..past + seq`, `[1, 1, seq,
    /// head_dim / 2]`; the angle is rounded to f32 before the cosine, as transformers computes it.
    fn rope_tables(
        &self,
        past: usize,
        seq: usize,
        device: &B::Device,
    ) -> (Tensor<B, 4>, Tensor<B, 4>) {
        let half = self.hp.inv_freq.len();
        let mut cos = Vec::with_capacity(seq * half);
        let mut sin = Vec::with_capacity(seq * half);
        for p in past..past + seq {
            for &f in &self.hp.inv_freq {
                let angle = (p as f32 * f) as f64;
                cos.push(angle.cos() as f32);
                sin.push(angle.sin() as f32);
            }
        }
        let t = |v: Vec<f32>| Tensor::from_data(TensorData::new(v, [1, 1, seq, half]), device);
        (t(cos), t(sin))
    }

    #[allow(clippy::too_many_arguments)]
    fn layer_forward(
        &self,
        layer: &LlamaLayer<B>,
        layer_idx: usize,
        x: Tensor<B, 3>,
        bias: &Tensor<B, 4>,
        cos: &Tensor<B, 4>,
        sin: &Tensor<B, 4>,
        mask: &Tensor<B, 2>,
        cache: Option<(&mut KvCache<B>, usize)>,
        ctx: &mut ForwardContext<B>,
    ) -> Tensor<B, 3> {
        let [batch, seq, _] = x.dims();
        let (h, kv, d) = (self.hp.n_heads, self.hp.n_kv_heads, self.hp.head_dim);
        let rep = h / kv;
        let attn = &layer.self_attn;

        let normed = fused::rms_norm(&layer.input_layernorm, x.clone());
        let split = |t: Tensor<B, 3>, n: usize| t.reshape([batch, seq, n, d]).swap_dims(1, 2);
        let lora = &layer.lora;
        let q = rope(
            split(apply(&lora.q_proj, &attn.q_proj, normed.clone()), h),
            cos,
            sin,
        );
        let mut k = rope(
            split(apply(&lora.k_proj, &attn.k_proj, normed.clone()), kv),
            cos,
            sin,
        );
        let mut v = split(apply(&lora.v_proj, &attn.v_proj, normed), kv);
        if let Some((cache, i)) = cache {
            if let Some((pk, pv)) = cache.layers.get(i) {
                k = Tensor::cat(vec![pk.clone(), k], 2);
                v = Tensor::cat(vec![pv.clone(), v], 2);
            }
            if cache.layers.len() <= i {
                cache.layers.push((k.clone(), v.clone()));
            } else {
                cache.layers[i] = (k.clone(), v.clone());
            }
        }
        let total = k.dims()[2];
        // Grouped-query attention without copying keys: the `rep` query heads that share a
        // key/value head are stacked along the sequence axis.
        let scores = q
            .reshape([batch, kv, rep * seq, d])
            .matmul(k.transpose())
            .div_scalar((d as f64).sqrt())
            .reshape([batch, h, seq, total])
            + bias.clone();
        let mut probs = ctx.dropout(fused::softmax(scores, 3), self.hp.attention_dropout);
        if let Some(head_mask) = ctx.head_mask(layer_idx) {
            assert_eq!(head_mask.dims(), [h], "head mask of layer {layer_idx}");
            probs = probs * head_mask.reshape([1, h, 1, 1]);
        }
        let context = probs
            .reshape([batch, kv, rep * seq, total])
            .matmul(v)
            .reshape([batch, h, seq, d])
            .swap_dims(1, 2)
            .reshape([batch, seq, h * d]);
        let x = x + apply(&lora.o_proj, &attn.o_proj, context);

        let mlp = &layer.mlp;
        let normed = fused::rms_norm(&layer.post_attention_layernorm, x.clone());
        let gate = ctx.force_gate(
            layer_idx,
            apply(&lora.gate_proj, &mlp.gate_proj, normed.clone()),
        );
        ctx.observe_gate(layer_idx, &gate, mask);
        let a = ctx.intervene(layer_idx, crate::fused::silu(gate));
        let y = apply(
            &lora.down_proj,
            &mlp.down_proj,
            a * apply(&lora.up_proj, &mlp.up_proj, normed),
        );
        x + y
    }
}

/// Rotate-half RoPE on `[batch, heads, seq, head_dim]` with `cos`/`sin` `[1, 1, seq, head_dim/2]`:
/// `(x₁, x₂) ↦ (x₁ cos − x₂ sin, x₂ cos + x₁ sin)` over the two halves of each head, which is HF's
/// `q * cos + rotate_half(q) * sin`.
fn rope<B: Backend>(x: Tensor<B, 4>, cos: &Tensor<B, 4>, sin: &Tensor<B, 4>) -> Tensor<B, 4> {
    let [batch, heads, seq, d] = x.dims();
    let half = d / 2;
    let x1 = x.clone().slice([0..batch, 0..heads, 0..seq, 0..half]);
    let x2 = x.slice([0..batch, 0..heads, 0..seq, half..d]);
    let (c, s) = (cos.clone(), sin.clone());
    Tensor::cat(
        vec![
            x1.clone() * c.clone() - x2.clone() * s.clone(),
            x2 * c + x1 * s,
        ],
        3,
    )
}

/// Per row, the index of the last position whose attention mask is 1 (0 for an all-padding
/// row), `[batch]`.
pub fn last_non_padding<B: Backend>(attention_mask: &Tensor<B, 2>) -> Tensor<B, 1, Int> {
    let [batch, seq] = attention_mask.dims();
    let positions = Tensor::<B, 1, Int>::arange(0..seq as i64, &attention_mask.device())
        .reshape([1, seq])
        .float();
    (attention_mask.clone() * positions)
        .argmax(1)
        .reshape([batch])
}

/// The hidden state at one position per row: `[batch, seq, hidden]`, `[batch]` → `[batch, hidden]`.
pub fn gather_positions<B: Backend>(
    hidden: Tensor<B, 3>,
    positions: Tensor<B, 1, Int>,
) -> Tensor<B, 2> {
    let [batch, _, width] = hidden.dims();
    let index = positions.reshape([batch, 1, 1]).expand([batch, 1, width]);
    hidden.gather(1, index).reshape([batch, width])
}

/// A linear classifier on the hidden state of one token per sequence (HF
/// `LlamaForSequenceClassification`: `score`, no bias; or with a bias, [`ScoreHead`]).
///
/// The token is the last non-padding one, found from the attention mask; HF finds it from
/// `pad_token_id` in the input ids, which gives the same position for right-padded batches whose
/// real tokens never equal the pad id. Mondal et al.'s XNLI code reads the last position even when
/// it is padding; pass [`TokenPosition::Last`] for that.
#[derive(Module, Debug)]
pub struct DecoderClassifier<B: Backend> {
    /// The decoder (its LM head is not used).
    pub model: LlamaModel<B>,
    /// `hidden → num_labels` (a bias with [`ScoreHead::TorchLinear`]).
    pub score: Linear<B>,
    #[module(skip)]
    position: TokenPosition,
}

/// The `score` layer of a [`DecoderClassifier`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ScoreHead {
    /// HF `LlamaForSequenceClassification`: no bias, a new head drawn `N(0, 0.02²)` (default).
    #[default]
    Hf,
    /// PyTorch's `nn.Linear(hidden, num_labels)`: with a bias, a new head drawn uniform in
    /// `±1/√hidden` (Mondal et al.'s `ModelForCLS`, soumenkm/LSN `code/models.py`).
    TorchLinear,
}

/// Which token a [`DecoderClassifier`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TokenPosition {
    /// The last token whose attention mask is 1 (default).
    #[default]
    LastNonPadding,
    /// The last position of the padded batch, padding or not (Mondal et al.'s XNLI code).
    Last,
}

impl<B: Backend> DecoderClassifier<B> {
    /// A classifier from a decoder and a `score` layer.
    pub fn new(model: LlamaModel<B>, score: Linear<B>, position: TokenPosition) -> Self {
        Self {
            model,
            score,
            position,
        }
    }

    /// Logits `[batch, num_labels]`.
    pub fn forward(
        &self,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Tensor<B, 2>,
        ctx: &mut ForwardContext<B>,
    ) -> Tensor<B, 2> {
        let [batch, seq] = input_ids.dims();
        let positions = match self.position {
            TokenPosition::LastNonPadding => last_non_padding(&attention_mask),
            TokenPosition::Last => {
                Tensor::<B, 1, Int>::full([batch], seq as i64 - 1, &input_ids.device())
            }
        };
        let hidden = self
            .model
            .hidden(input_ids, Some(attention_mask), None, ctx);
        self.score.forward(gather_positions(hidden, positions))
    }
}
