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
//! - **Neuron replacements** per layer: chosen neurons of the FFN activation (`silu(gate)` in a
//!   decoder) set to zero, a constant or a per-neuron value at every position
//!   ([`ForwardContext::replace_neurons`]), after the neuron mask; in a decoder they may instead
//!   replace the gate's linear output before SiLU ([`ReplaceAt::Gate`], where Kojima et al.
//!   force their expert units).
//! - **Recording** of the FFN intermediate activation per layer, `[batch, seq, intermediate]`,
//!   after masks and replacements; in decoders also the gate pre-activation
//!   ([`ForwardContext::record_gate`]), and, without storing anything per token, counts of positive
//!   gate pre-activations over the non-padding tokens ([`ForwardContext::counting`]).
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
    /// Per layer: neurons whose activation is replaced (see [`NeuronReplacement`]).
    pub replacements: Vec<Option<NeuronReplacement<B>>>,
    /// Decoders: record the gate pre-activation (`gate_proj(x)`) of each layer into
    /// [`Self::gate_preactivations`].
    pub record_gate: bool,
    /// Recorded gate pre-activations, one per layer in order, `[batch, seq, intermediate_size]`.
    pub gate_preactivations: Vec<Tensor<B, 3>>,
    /// Decoders: running statistics of the gate pre-activations (see [`GateStatistics`]).
    pub gate_statistics: Option<GateStatistics<B>>,
}

/// Replaces chosen neurons of one layer's FFN activation: `h ← h ⊙ keep + value`, where `keep`
/// is 0 at the chosen neurons and 1 elsewhere and `value` is the replacement at the chosen
/// neurons and 0 elsewhere; both `[intermediate_size]`, applied at every position.
#[derive(Debug, Clone)]
pub struct NeuronReplacement<B: Backend> {
    /// 0 at replaced neurons, 1 elsewhere.
    pub keep: Tensor<B, 1>,
    /// The replacement at replaced neurons, 0 elsewhere.
    pub value: Tensor<B, 1>,
    /// Where in the FFN the neurons are replaced.
    pub at: ReplaceAt,
}

/// Where a replacement acts in a layer's FFN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReplaceAt {
    /// The activation `act(W_in x)` (`silu(gate_proj(x))` in a decoder), after the neuron
    /// mask: where Tang et al. and Mondal et al. intervene.
    #[default]
    Activation,
    /// Decoders only: the gate's linear output `gate_proj(x)`, before SiLU (so the neuron's
    /// activation becomes `silu(value)`), where Kojima et al.'s forward hook on `mlp.gate_proj`
    /// forces a unit. Recording and counting see the replaced gate.
    Gate,
}

/// What a replaced neuron's activation becomes.
#[derive(Debug, Clone, PartialEq)]
pub enum ReplaceWith {
    /// 0 (ablation).
    Zero,
    /// The same constant for every chosen neuron.
    Constant(f32),
    /// One value per chosen neuron, in the order the neurons are given (for example a
    /// per-neuron mean activation).
    PerNeuron(Vec<f32>),
}

/// Running statistics of the gate pre-activation (`gate_proj(x)`, before SiLU) per layer and
/// neuron over the non-padding tokens of every forward pass made with the context: how often it
/// is positive (`silu(g) > 0 ⇔ g > 0`), its sum and its sum of squares, and the number of
/// tokens. They stay on the device as f32; read them back with [`GateStatistics::to_host`] after
/// each batch and accumulate in f64 (as `neurons::ActivationStats` does), since f32 counts are
/// exact only up to 2^24.
#[derive(Debug, Clone, Default)]
pub struct GateStatistics<B: Backend> {
    /// Per layer, `[intermediate_size]`: tokens with a positive gate pre-activation.
    pub positive: Vec<Tensor<B, 1>>,
    /// Per layer, `[intermediate_size]`: sum of the gate pre-activation.
    pub sum: Vec<Tensor<B, 1>>,
    /// Per layer, `[intermediate_size]`: sum of its square.
    pub sum_sq: Vec<Tensor<B, 1>>,
    /// Non-padding tokens seen, `[1]`.
    pub tokens: Option<Tensor<B, 1>>,
    /// Per layer, `[intermediate_size]`: thresholds for [`Self::above`] (none: not counted).
    pub thresholds: Vec<Tensor<B, 1>>,
    /// Per layer, `[intermediate_size]`: tokens whose gate pre-activation is above the
    /// neuron's threshold (Mondal et al.'s `act_prob_90p` numerator).
    pub above: Vec<Tensor<B, 1>>,
    /// The quantiles whose order statistics are kept (none: not kept).
    pub quantiles: Vec<f64>,
    /// Per layer, `[2 · quantiles, intermediate_size]`: for each of [`Self::quantiles`] in
    /// order, the two order statistics of each neuron's gate pre-activations over the batch's
    /// `n` positions (padding included) that `torch.quantile`'s linear interpolation reads: the
    /// values of rank `⌊q (n − 1)⌋` and of the next rank (the same at the last). They are sorted
    /// on the device (torch's sort on LibTorch) inside the layer, so no layer's activations are
    /// kept; [`quantile_from_order_statistics`] interpolates them.
    pub order_statistics: Vec<Tensor<B, 2>>,
}

/// The `q` quantile of `n` values (linear interpolation, as `torch.quantile`) from its two order
/// statistics ([`GateStatistics::order_statistics`]), in f64.
pub fn quantile_from_order_statistics(q: f64, n: usize, low: f32, high: f32) -> f64 {
    let pos = q * n.saturating_sub(1) as f64;
    let frac = pos - pos.floor();
    low as f64 + frac * (high as f64 - low as f64)
}

/// The ranks of the two order statistics of the `q` quantile of `n` values.
fn quantile_ranks(q: f64, n: usize) -> [usize; 2] {
    let lo = (q * n.saturating_sub(1) as f64).floor() as usize;
    [lo, (lo + 1).min(n.saturating_sub(1))]
}

/// [`GateStatistics`] read back to the host: per layer, per neuron.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostGateStatistics {
    /// Tokens with a positive gate pre-activation.
    pub positive: Vec<Vec<f32>>,
    /// Sum of the gate pre-activation.
    pub sum: Vec<Vec<f32>>,
    /// Sum of its square.
    pub sum_sq: Vec<Vec<f32>>,
    /// Tokens above the thresholds (empty when none were given).
    pub above: Vec<Vec<f32>>,
    /// The order statistics of the quantiles, `[2 · quantiles · intermediate_size]` per layer
    /// (empty when none were asked for).
    pub order_statistics: Vec<Vec<f32>>,
    /// Non-padding tokens seen.
    pub tokens: f64,
}

impl<B: Backend> GateStatistics<B> {
    /// The statistics on the host, read in one transfer (every tensor concatenated on the
    /// device first: one synchronisation per batch, not one per layer and statistic).
    pub fn to_host(&self) -> HostGateStatistics {
        let groups: [Vec<Tensor<B, 1>>; 5] = [
            self.positive.clone(),
            self.sum.clone(),
            self.sum_sq.clone(),
            self.above.clone(),
            self.order_statistics
                .iter()
                .map(|t| t.clone().flatten(0, 1))
                .collect(),
        ];
        let lengths: Vec<Vec<usize>> = groups
            .iter()
            .map(|g| g.iter().map(|t| t.dims()[0]).collect())
            .collect();
        let mut all: Vec<Tensor<B, 1>> = groups.into_iter().flatten().collect();
        all.extend(self.tokens.clone());
        if all.is_empty() {
            return HostGateStatistics::default();
        }
        let values: Vec<f32> = Tensor::cat(all, 0)
            .into_data()
            .convert::<f32>()
            .into_vec()
            .expect("f32 statistics");
        let mut at = 0;
        let mut take = |lens: &[usize]| -> Vec<Vec<f32>> {
            lens.iter()
                .map(|&n| {
                    at += n;
                    values[at - n..at].to_vec()
                })
                .collect()
        };
        let mut read: Vec<Vec<Vec<f32>>> = lengths.iter().map(|l| take(l)).collect();
        let tokens = self.tokens.as_ref().map_or(0.0, |_| f64::from(values[at]));
        HostGateStatistics {
            order_statistics: read.pop().unwrap_or_default(),
            above: read.pop().unwrap_or_default(),
            sum_sq: read.pop().unwrap_or_default(),
            sum: read.pop().unwrap_or_default(),
            positive: read.pop().unwrap_or_default(),
            tokens,
        }
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
            replacements: Vec::new(),
            record_gate: false,
            gate_preactivations: Vec::new(),
            gate_statistics: None,
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

    /// Also record gate pre-activations (decoders).
    pub fn recording_gate(mut self) -> Self {
        self.record_gate = true;
        self
    }

    /// Keep statistics of the gate pre-activations (decoders); see [`GateStatistics`].
    pub fn counting(mut self) -> Self {
        self.gate_statistics = Some(GateStatistics::default());
        self
    }

    /// Keep statistics as [`Self::counting`] does, and also the order statistics of each
    /// neuron's `quantiles` ([`GateStatistics::order_statistics`]).
    pub fn counting_quantiles(mut self, quantiles: Vec<f64>) -> Self {
        self.gate_statistics = Some(GateStatistics {
            quantiles,
            ..GateStatistics::default()
        });
        self
    }

    /// Keep statistics as [`Self::counting`] does, and also count, per neuron, the tokens whose
    /// gate pre-activation is strictly above `thresholds[layer][neuron]` (one `[intermediate_size]`
    /// tensor per layer).
    pub fn counting_above(mut self, thresholds: Vec<Tensor<B, 1>>) -> Self {
        self.gate_statistics = Some(GateStatistics {
            thresholds,
            ..GateStatistics::default()
        });
        self
    }

    /// Replace the activation of `neurons` of layer `layer_idx` (a layer of `width` FFN neurons)
    /// at every position; a later call for the same layer replaces the earlier one.
    ///
    /// # Panics
    /// If a neuron is not below `width`, or a per-neuron value list has another length than
    /// `neurons` (callers check neuron sets against the model first, with named errors).
    pub fn replace_neurons(
        &mut self,
        layer_idx: usize,
        width: usize,
        neurons: &[usize],
        with: &ReplaceWith,
        device: &B::Device,
    ) {
        self.replace_neurons_at(
            layer_idx,
            width,
            neurons,
            with,
            ReplaceAt::Activation,
            device,
        );
    }

    /// As [`Self::replace_neurons`], at `at` in the FFN.
    pub fn replace_neurons_at(
        &mut self,
        layer_idx: usize,
        width: usize,
        neurons: &[usize],
        with: &ReplaceWith,
        at: ReplaceAt,
        device: &B::Device,
    ) {
        let mut keep = vec![1f32; width];
        let mut value = vec![0f32; width];
        if let ReplaceWith::PerNeuron(values) = with {
            assert_eq!(values.len(), neurons.len(), "one value per replaced neuron");
        }
        for (i, &n) in neurons.iter().enumerate() {
            assert!(
                n < width,
                "neuron {n} of layer {layer_idx} is not below {width}"
            );
            keep[n] = 0.0;
            value[n] = match with {
                ReplaceWith::Zero => 0.0,
                ReplaceWith::Constant(c) => *c,
                ReplaceWith::PerNeuron(values) => values[i],
            };
        }
        if self.replacements.len() <= layer_idx {
            self.replacements.resize(layer_idx + 1, None);
        }
        self.replacements[layer_idx] = Some(NeuronReplacement {
            keep: Tensor::from_data(TensorData::new(keep, [width]), device),
            value: Tensor::from_data(TensorData::new(value, [width]), device),
            at,
        });
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

    /// Apply layer `layer_idx`'s neuron mask and replacement to its FFN activation `[batch, seq,
    /// width]`, and record the result when asked.
    pub(crate) fn intervene(&mut self, layer_idx: usize, mut h: Tensor<B, 3>) -> Tensor<B, 3> {
        let width = h.dims()[2];
        if let Some(mask) = self.neuron_mask(layer_idx) {
            assert_eq!(mask.dims(), [width], "neuron mask of layer {layer_idx}");
            h = h * mask.reshape([1, 1, width]);
        }
        h = self.replaced(layer_idx, h, ReplaceAt::Activation);
        self.record(&h);
        h
    }

    /// Decoders: apply layer `layer_idx`'s [`ReplaceAt::Gate`] replacement to its gate's linear
    /// output `[batch, seq, width]`.
    pub(crate) fn force_gate(&self, layer_idx: usize, gate: Tensor<B, 3>) -> Tensor<B, 3> {
        self.replaced(layer_idx, gate, ReplaceAt::Gate)
    }

    fn replaced(&self, layer_idx: usize, h: Tensor<B, 3>, at: ReplaceAt) -> Tensor<B, 3> {
        match self.replacements.get(layer_idx) {
            Some(Some(r)) if r.at == at => {
                let width = h.dims()[2];
                assert_eq!(
                    r.keep.dims(),
                    [width],
                    "neuron replacement of layer {layer_idx}"
                );
                h * r.keep.clone().reshape([1, 1, width]) + r.value.clone().reshape([1, 1, width])
            }
            _ => h,
        }
    }

    /// Record a gate pre-activation and count its positive values over the tokens where `mask`
    /// (`[batch, seq]`, 1 = real token) is 1.
    pub(crate) fn observe_gate(
        &mut self,
        layer_idx: usize,
        gate: &Tensor<B, 3>,
        mask: &Tensor<B, 2>,
    ) {
        if self.record_gate {
            self.gate_preactivations.push(gate.clone());
        }
        if let Some(stats) = self.gate_statistics.as_mut() {
            let [batch, seq, width] = gate.dims();
            if layer_idx == 0 {
                let tokens = mask.clone().sum();
                stats.tokens = Some(match stats.tokens.take() {
                    Some(t) => t + tokens,
                    None => tokens,
                });
            }
            let mask = mask.clone().reshape([batch, seq, 1]);
            let total = |t: Tensor<B, 3>| t.sum_dim(1).sum_dim(0).reshape([width]);
            let masked = gate.clone() * mask.clone();
            let positive = total(gate.clone().greater_elem(0.0).float() * mask.clone());
            let sum_sq = total(masked.clone().powi_scalar(2));
            let sum = total(masked);
            let add = |v: &mut Vec<Tensor<B, 1>>, t: Tensor<B, 1>| {
                if v.len() <= layer_idx {
                    v.push(t);
                } else {
                    v[layer_idx] = v[layer_idx].clone() + t;
                }
            };
            if let Some(threshold) = stats.thresholds.get(layer_idx) {
                let threshold = threshold.clone().reshape([1, 1, width]);
                let above = total(gate.clone().greater(threshold).float() * mask.clone());
                add(&mut stats.above, above);
            }
            add(&mut stats.positive, positive);
            add(&mut stats.sum, sum);
            add(&mut stats.sum_sq, sum_sq);
            if !stats.quantiles.is_empty() {
                let n = batch * seq;
                let ranks: Vec<i64> = stats
                    .quantiles
                    .iter()
                    .flat_map(|&q| quantile_ranks(q, n))
                    .map(|r| r as i64)
                    .collect();
                let ranks = Tensor::<B, 1, Int>::from_ints(ranks.as_slice(), &gate.device());
                let sorted = gate.clone().reshape([n, width]).sort(0);
                let order = sorted.select(0, ranks);
                if stats.order_statistics.len() <= layer_idx {
                    stats.order_statistics.push(order);
                } else {
                    stats.order_statistics[layer_idx] = order;
                }
            }
        }
    }

    pub(crate) fn record(&mut self, activation: &Tensor<B, 3>) {
        if self.record_ffn {
            self.ffn_activations.push(activation.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;

    /// `torch.quantile`'s linear interpolation over all values, on the host.
    fn host_quantile(values: &[f32], q: f64) -> f64 {
        let mut sorted = values.to_vec();
        sorted.sort_by(f32::total_cmp);
        let pos = q * (sorted.len() - 1) as f64;
        let lo = pos.floor() as usize;
        let hi = (lo + 1).min(sorted.len() - 1);
        sorted[lo] as f64 + (pos - lo as f64) * (sorted[hi] as f64 - sorted[lo] as f64)
    }

    #[test]
    fn quantiles_from_the_device_order_statistics_equal_the_host_sort_to_the_value() {
        type B = NdArray<f32>;
        let device = Default::default();
        let (batch, seq, width) = (3, 7, 6);
        // Values from a small set (many ties), and one neuron constant.
        let mut state = 12345u64;
        let values: Vec<f32> = (0..batch * seq * width)
            .map(|i| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                if i % width == 5 {
                    0.25
                } else {
                    ((state >> 33) % 9) as f32 * 0.5 - 2.0
                }
            })
            .collect();
        let gate =
            Tensor::<B, 1>::from_floats(values.as_slice(), &device).reshape([batch, seq, width]);
        let mask = Tensor::<B, 2>::ones([batch, seq], &device);
        let quantiles = vec![0.0, 0.5, 0.75, 0.9, 0.95, 1.0];
        let mut ctx = ForwardContext::<B>::eval().counting_quantiles(quantiles.clone());
        ctx.observe_gate(0, &gate, &mask);
        ctx.observe_gate(1, &gate.clone().neg(), &mask);
        let host = ctx.gate_statistics.expect("counting").to_host();
        assert_eq!(host.order_statistics.len(), 2);
        let n = batch * seq;
        for (layer, sign) in [(0, 1.0f32), (1, -1.0)] {
            let order = &host.order_statistics[layer];
            for (k, &q) in quantiles.iter().enumerate() {
                for j in 0..width {
                    let column: Vec<f32> = (0..n).map(|t| sign * values[t * width + j]).collect();
                    let got = quantile_from_order_statistics(
                        q,
                        n,
                        order[2 * k * width + j],
                        order[(2 * k + 1) * width + j],
                    );
                    assert_eq!(
                        got,
                        host_quantile(&column, q),
                        "layer {layer} q {q} neuron {j}"
                    );
                }
            }
        }
        // The other statistics come back from the same single read.
        assert_eq!(host.tokens, n as f64);
        assert_eq!(host.positive.len(), 2);
        assert_eq!(host.sum[0].len(), width);
    }
}
