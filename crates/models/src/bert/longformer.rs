//! Longformer's self-attention: a sliding window on every token, and global attention on chosen
//! tokens.
//!
//! Beltagy et al., "Longformer: The Long-Document Transformer" (arXiv 2004.05150). Ported from
//! HF `transformers`' `modeling_longformer.py` (`LongformerSelfAttention`); the rest of the model
//! (embeddings, the post-norm stack, the heads) is RoBERTa's, so Longformer is one more
//! [`crate::EncoderFamily`] of [`crate::BertModel`].
//!
//! With `w` a layer's `attention_window` and `s = w / 2`, HF computes, for a token `i` that is
//! not global, softmax over
//! - the *local* keys `j` with `|i − j| ≤ s` that are neither padding nor global, and
//! - *every* global key,
//!
//! both with the ordinary `query` / `key` / `value` projections. A global token's row is then
//! replaced by attention with the `query_global` / `key_global` / `value_global` projections
//! over every non-padding key. Padding rows get zero attention, as HF's.
//!
//! Memory stays linear in the sequence: queries are cut into blocks of `s`, and each block
//! attends to the three key blocks around it (`3s` keys, a superset of its band, the rest
//! masked), plus the `g` global keys; HF's "sliding chunks" compute the same band in chunks of
//! `2s`. Global rows attend to all `L` keys (`g × L` scores). Scores are `O(L · (3s + g))` per
//! head instead of dense attention's `O(L²)`. The sequence is padded internally to a multiple of
//! `s` (HF pads the input to a multiple of `w`); the padding is masked and cut off again, so it
//! changes no output.

use burn::prelude::*;
use burn::tensor::IndexingUpdateOp;

use crate::bert::SelfAttention;
use crate::context::ForwardContext;
use crate::fused;

/// The masks one forward pass of Longformer shares across its layers, derived from the input's
/// attention and global attention masks.
#[derive(Debug, Clone)]
pub(crate) struct AttentionMasks<B: Backend> {
    /// 1 for real tokens, `[batch, seq]`.
    key_valid: Tensor<B, 2>,
    /// 1 for real tokens that are global, `[batch, seq]`.
    global: Tensor<B, 2>,
    /// The global tokens as row indices of the flattened `[batch × seq]` states, `[batch ×
    /// g]`: row `r`'s global tokens in order, padded with the row's first token.
    global_index: Tensor<B, 1, Int>,
    /// 1 where a slot of `global_index` is a global token, 0 where it pads, `[batch, g]`.
    slot_valid: Tensor<B, 2>,
    /// The most global tokens of any row (0: no global attention).
    max_global: usize,
}

impl<B: Backend> AttentionMasks<B> {
    /// From the attention mask (1 real, 0 padding) and the global attention mask (1 global),
    /// both `[batch, seq]`. A padding token is never global (HF's `_merge_to_attention_mask`).
    pub(crate) fn new(attention_mask: &Tensor<B, 2>, global_mask: Option<&Tensor<B, 2>>) -> Self {
        let [batch, seq] = attention_mask.dims();
        let device = attention_mask.device();
        let key_valid = attention_mask.clone().greater_elem(0.5).float();
        let global = match global_mask {
            Some(g) => {
                assert_eq!(g.dims(), [batch, seq], "global attention mask shape");
                g.clone().greater_elem(0.5).float() * key_valid.clone()
            }
            None => key_valid.zeros_like(),
        };
        let flags = global.clone().into_data().convert::<f32>();
        let flags = flags.as_slice::<f32>().expect("f32 data");
        let rows: Vec<Vec<usize>> = (0..batch)
            .map(|r| (0..seq).filter(|&t| flags[r * seq + t] > 0.5).collect())
            .collect();
        let max_global = rows.iter().map(Vec::len).max().unwrap_or(0);
        let mut index = Vec::with_capacity(batch * max_global);
        let mut valid = Vec::with_capacity(batch * max_global);
        for (r, positions) in rows.iter().enumerate() {
            for k in 0..max_global {
                let t = positions.get(k);
                index.push((r * seq + t.copied().unwrap_or(0)) as i64);
                valid.push(f32::from(u8::from(t.is_some())));
            }
        }
        Self {
            key_valid,
            global,
            global_index: Tensor::from_data(TensorData::new(index, [batch * max_global]), &device),
            slot_valid: Tensor::from_data(TensorData::new(valid, [batch, max_global]), &device),
            max_global,
        }
    }
}

/// `t` with `front` and `back` zero rows added along its third dimension.
fn pad_seq<B: Backend>(t: Tensor<B, 4>, front: usize, back: usize) -> Tensor<B, 4> {
    let [d0, d1, _, d3] = t.dims();
    let device = t.device();
    let mut parts = Vec::with_capacity(3);
    if front > 0 {
        parts.push(Tensor::zeros([d0, d1, front, d3], &device));
    }
    parts.push(t);
    if back > 0 {
        parts.push(Tensor::zeros([d0, d1, back, d3], &device));
    }
    Tensor::cat(parts, 2)
}

/// `[batch, heads, seq, d]` padded to `(blocks + 2) · s` positions (one block of zeros in front)
/// and cut into each query block's three key blocks: `[batch · heads, blocks, 3s, d]`.
fn key_windows<B: Backend>(t: Tensor<B, 4>, s: usize, blocks: usize) -> Tensor<B, 4> {
    let [batch, heads, seq, d] = t.dims();
    let padded = pad_seq(t, s, (blocks + 1) * s - seq).reshape([batch * heads, blocks + 2, s, d]);
    let block = |k: usize| {
        padded
            .clone()
            .slice([0..batch * heads, k..k + blocks, 0..s, 0..d])
    };
    Tensor::cat(vec![block(0), block(1), block(2)], 2)
}

/// `[batch, seq]` flags padded and windowed as [`key_windows`]: `[batch, blocks, 3s]`.
fn flag_windows<B: Backend>(t: Tensor<B, 2>, s: usize, blocks: usize) -> Tensor<B, 3> {
    let [batch, seq] = t.dims();
    let t = t.reshape([batch, 1, seq, 1]);
    key_windows(t, s, blocks).reshape([batch, blocks, 3 * s])
}

/// 1 where query offset `q` of a block may see key offset `k` of its three-block window
/// (`|i − j| ≤ s`, i.e. `q ≤ k ≤ q + 2s`), `[s, 3s]`.
fn band<B: Backend>(s: usize, device: &B::Device) -> Tensor<B, 2> {
    let values: Vec<f32> = (0..s)
        .flat_map(|q| (0..3 * s).map(move |k| f32::from(u8::from(q <= k && k <= q + 2 * s))))
        .collect();
    Tensor::from_data(TensorData::new(values, [s, 3 * s]), device)
}

/// An additive bias from 1/0 flags: 0 where allowed, the most negative float elsewhere.
fn bias<B: Backend, const D: usize>(allowed: Tensor<B, D>) -> Tensor<B, D> {
    (allowed - 1.0).mul_scalar(f32::MAX)
}

/// What the attention of one layer needs besides its weights.
pub(crate) struct LayerShape {
    /// Attention heads.
    pub n_heads: usize,
    /// The layer's `attention_window` (full width, even).
    pub window: usize,
    /// Dropout on attention probabilities.
    pub dropout: f64,
}

/// One layer's attention context (before the output projection), `[batch, seq, hidden]`.
pub(crate) fn attention<B: Backend>(
    attn: &SelfAttention<B>,
    x: Tensor<B, 3>,
    masks: &AttentionMasks<B>,
    shape: &LayerShape,
    head_mask: Option<Tensor<B, 1>>,
    ctx: &mut ForwardContext<B>,
) -> Tensor<B, 3> {
    let [batch, seq, hidden] = x.dims();
    let device = x.device();
    let n_heads = shape.n_heads;
    let d = hidden / n_heads;
    let s = shape.window / 2;
    let blocks = seq.div_ceil(s);
    let padded = blocks * s;
    let scale = (d as f64).sqrt();
    let heads = |t: Tensor<B, 3>| t.reshape([batch, seq, n_heads, d]).swap_dims(1, 2);
    let q = heads(fused::linear(&attn.query, x.clone())).div_scalar(scale);
    let k_flat = fused::linear(&attn.key, x.clone());
    let v_flat = fused::linear(&attn.value, x.clone());
    let (k, v) = (heads(k_flat.clone()), heads(v_flat.clone()));

    // Local band: each block of s queries against its three key blocks.
    let q_pad = pad_seq(q, 0, padded - seq); // [b, h, padded, d]
    let q_blocks = q_pad.clone().reshape([batch * n_heads, blocks, s, d]);
    let local = q_blocks
        .matmul(key_windows(k, s, blocks).swap_dims(2, 3))
        .reshape([batch, n_heads, blocks, s, 3 * s]);
    let local_keys = masks.key_valid.clone() * (masks.global.clone().neg() + 1.0);
    let allowed = band::<B>(s, &device).reshape([1, 1, s, 3 * s])
        * flag_windows(local_keys, s, blocks).reshape([batch, blocks, 1, 3 * s]);
    let local = local + bias(allowed).reshape([batch, 1, blocks, s, 3 * s]);

    // Every query also sees the global keys (with the local key projection).
    let g = masks.max_global;
    let gather = |t: Tensor<B, 3>| {
        t.reshape([batch * seq, hidden])
            .select(0, masks.global_index.clone())
            .reshape([batch, g, n_heads, d])
            .swap_dims(1, 2)
    };
    let to_global = (g > 0).then(|| {
        q_pad
            .matmul(gather(k_flat).swap_dims(2, 3))
            .reshape([batch, n_heads, blocks, s, g])
            + bias(masks.slot_valid.clone()).reshape([batch, 1, 1, 1, g])
    });
    let query_valid = pad_seq(
        masks.key_valid.clone().reshape([batch, 1, seq, 1]),
        0,
        padded - seq,
    )
    .reshape([batch, 1, blocks, s, 1]);
    // One softmax over the band and the global keys, computed in its two parts (no
    // concatenated `[.., 3s + g]` scores to copy and slice again): the shared row maximum, the
    // exponentials of each part, one denominator. Padding queries get zero probabilities, and
    // the head mask scales whole heads, both through the per-row factor.
    let mut row_max = local.clone().max_dim(4);
    if let Some(t) = &to_global {
        row_max = row_max.max_pair(t.clone().max_dim(4));
    }
    let local_exp = (local - row_max.clone()).exp();
    let global_exp = to_global.map(|t| (t - row_max).exp());
    let mut denominator = local_exp.clone().sum_dim(4);
    if let Some(e) = &global_exp {
        denominator = denominator + e.clone().sum_dim(4);
    }
    let mut factor = query_valid / denominator; // [b, h, blocks, s, 1]
    if let Some(mask) = head_mask.clone() {
        factor = factor * mask.reshape([1, n_heads, 1, 1, 1]);
    }
    let local_probs = ctx.dropout(local_exp * factor.clone(), shape.dropout);
    let mut out = local_probs
        .reshape([batch * n_heads, blocks, s, 3 * s])
        .matmul(key_windows(v, s, blocks))
        .reshape([batch, n_heads, padded, d]);
    if let Some(e) = global_exp {
        let global_probs = ctx
            .dropout(e * factor, shape.dropout)
            .reshape([batch, n_heads, padded, g]);
        out = out + global_probs.matmul(gather(v_flat));
    }
    let local_out = out
        .slice([0..batch, 0..n_heads, 0..seq, 0..d])
        .swap_dims(1, 2)
        .reshape([batch * seq, hidden]);
    if g == 0 {
        return local_out.reshape([batch, seq, hidden]);
    }

    // Global rows: their own projections, over every real key.
    let globals = attn
        .global
        .as_ref()
        .expect("a Longformer layer has global projections");
    let x_flat = x.clone().reshape([batch * seq, hidden]);
    let q_global = fused::linear(
        &globals.query_global,
        x_flat.select(0, masks.global_index.clone()),
    )
    .div_scalar(scale)
    .reshape([batch, g, n_heads, d])
    .swap_dims(1, 2); // [b, h, g, d]
    let k_global = heads(fused::linear(&globals.key_global, x.clone()));
    let v_global = heads(fused::linear(&globals.value_global, x));
    let scores = q_global.matmul(k_global.swap_dims(2, 3))
        + bias(masks.key_valid.clone()).reshape([batch, 1, 1, seq]);
    let mut probs = ctx.dropout(fused::softmax(scores, 3), shape.dropout);
    if let Some(mask) = head_mask {
        probs = probs * mask.reshape([1, n_heads, 1, 1]);
    }
    let global_out = probs
        .matmul(v_global)
        .swap_dims(1, 2)
        .reshape([batch, g, hidden])
        * masks.slot_valid.clone().reshape([batch, g, 1]);
    let keep_local = (masks.global.clone().neg() + 1.0).reshape([batch * seq, 1]);
    let replaced = Tensor::zeros([batch * seq, hidden], &device).select_assign(
        0,
        masks.global_index.clone(),
        global_out.reshape([batch * g, hidden]),
        IndexingUpdateOp::Add,
    );
    (local_out * keep_local + replaced).reshape([batch, seq, hidden])
}
