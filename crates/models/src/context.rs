//! The explicit forward context: dropout masks, FFN neuron masks, head masks and recording.
//!
//! Burn has no forward hooks, and neuron-level research needs them at every layer, so each
//! forward pass takes a `&mut ForwardContext`. It decides what a pass does beyond the plain
//! computation:
//!
//! - **Dropout.** Every dropout site that HF has (embeddings, attention probabilities, the output
//!   of each sublayer, the task head) asks the context for its mask. With no
//!   [`DropoutMasks`] the pass is deterministic (evaluation, or the full model of CmpDrop); with
//!   one, the masks come from the caller's seeded RNG, and nested views share their uniforms.
//! - **FFN neuron masks** per layer, `[intermediate_size]`, multiplied into the activation of the
//!   intermediate layer (`act(W_in x + b)`): 0 ablates a neuron, 1 keeps it.
//! - **Head masks** per layer, `[num_attention_heads]`, multiplied into the attention
//!   probabilities as HF's `head_mask` does.
//! - **Recording** of the FFN intermediate activation per layer, `[batch, seq, intermediate]`,
//!   after the neuron mask.
//!
//! Nothing here is global: two contexts with the same seed give the same masks.

use ablation::DropoutMasks;
use burn::prelude::*;

/// What one forward pass applies and records (see the module docs).
#[derive(Debug)]
pub struct ForwardContext<B: Backend> {
    /// Dropout masks; `None` means no dropout anywhere.
    pub dropout: Option<DropoutMasks<B>>,
    /// Per layer: a multiplicative mask over FFN neurons, `[intermediate_size]`.
    pub neuron_masks: Vec<Option<Tensor<B, 1>>>,
    /// Per layer: a multiplicative mask over attention heads, `[num_attention_heads]`.
    pub head_masks: Vec<Option<Tensor<B, 1>>>,
    /// Record the FFN intermediate activations of each layer into [`Self::ffn_activations`].
    pub record_ffn: bool,
    /// Recorded activations, one per layer in order, `[batch, seq, intermediate_size]`.
    pub ffn_activations: Vec<Tensor<B, 3>>,
}

impl<B: Backend> Default for ForwardContext<B> {
    fn default() -> Self {
        Self::eval()
    }
}

impl<B: Backend> ForwardContext<B> {
    /// A deterministic pass: no dropout, no masks, nothing recorded.
    pub fn eval() -> Self {
        Self {
            dropout: None,
            neuron_masks: Vec::new(),
            head_masks: Vec::new(),
            record_ffn: false,
            ffn_activations: Vec::new(),
        }
    }

    /// A pass with dropout masks drawn from `masks`.
    pub fn with_dropout(masks: DropoutMasks<B>) -> Self {
        Self {
            dropout: Some(masks),
            ..Self::eval()
        }
    }

    /// Also record FFN activations.
    pub fn recording(mut self) -> Self {
        self.record_ffn = true;
        self
    }

    /// Set the FFN neuron mask of layer `layer_idx`.
    pub fn set_neuron_mask(&mut self, layer_idx: usize, mask: Tensor<B, 1>) {
        if self.neuron_masks.len() <= layer_idx {
            self.neuron_masks.resize(layer_idx + 1, None);
        }
        self.neuron_masks[layer_idx] = Some(mask);
    }

    /// Set the attention-head mask of layer `layer_idx`.
    pub fn set_head_mask(&mut self, layer_idx: usize, mask: Tensor<B, 1>) {
        if self.head_masks.len() <= layer_idx {
            self.head_masks.resize(layer_idx + 1, None);
        }
        self.head_masks[layer_idx] = Some(mask);
    }

    /// Apply dropout with base rate `p` at the next dropout site.
    pub fn dropout<const D: usize>(&mut self, x: Tensor<B, D>, p: f64) -> Tensor<B, D> {
        match self.dropout.as_mut() {
            Some(masks) if p > 0.0 => {
                let shape: [usize; D] = x.dims();
                match masks.mask(p, shape, &x.device()) {
                    Some(mask) => x * mask,
                    None => x,
                }
            }
            _ => x,
        }
    }

    pub(crate) fn neuron_mask(&self, layer_idx: usize) -> Option<Tensor<B, 1>> {
        self.neuron_masks.get(layer_idx).cloned().flatten()
    }

    pub(crate) fn head_mask(&self, layer_idx: usize) -> Option<Tensor<B, 1>> {
        self.head_masks.get(layer_idx).cloned().flatten()
    }

    pub(crate) fn record(&mut self, activation: &Tensor<B, 3>) {
        if self.record_ffn {
            self.ffn_activations.push(activation.clone());
        }
    }
}
