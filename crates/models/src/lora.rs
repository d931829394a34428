//! Low-rank adapters (LoRA) for a frozen linear map, with Mondal et al.'s neuron restriction.
//!
//! An adapter adds `Δ(x) = x · A · (B ⊙ M) · α / r` to a frozen linear's output, with
//! `A ∈ R^{d_in × r}` drawn at random and `B ∈ R^{r × d_out}` zero, so training starts from the
//! base model (`soumenkm/LSN: code/models.py`, `LoRALayer`). `M` is an optional mask over the
//! output neurons (columns of `B`): on `mlp.gate_proj` with `M[j] = 1` only for a language's
//! neurons, only those neurons' gate rows change. Because the mask multiplies `B` in the
//! forward pass, the gradient of every masked column of `B` is exactly zero, so AdamW (whose decay
//! of a zero is zero) leaves those columns at their initial zero; `A` is shared and unmasked, as in
//! the official code.
//!
//! Burn has no freezing: the base linear simply lives outside the adapter (the caller keeps it
//! out of the optimiser, or builds it with `set_require_grad(false)`); only `A` and `B` are
//! parameters here. [`LoraAdapter::merge`] folds an adapter into the base weight for inference.
//! Adapters are written and read with PEFT's names and layouts (`{prefix}.lora_A.weight`
//! `[r, d_in]`, `{prefix}.lora_B.weight` `[d_out, r]`, `B ⊙ M` stored, so a PEFT model loads the
//! effective update).

use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::error::{ModelError, Result};
use crate::weights::{HostTensor, TensorMap};

/// How `A` is drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LoraInit {
    /// `N(0, std²)`; Mondal et al. use std 0.01.
    Normal {
        /// The standard deviation.
        std: f64,
    },
    /// PEFT's default: Kaiming-uniform with `a = √5` on `lora_A` (`U(−1/√d_in, 1/√d_in)`).
    Kaiming,
}

/// The shape and scale of adapters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoraConfig {
    /// The rank r.
    pub rank: usize,
    /// α; the update is scaled by α / r.
    pub alpha: f64,
    /// How `A` is drawn.
    pub init: LoraInit,
}

impl Default for LoraConfig {
    /// Mondal et al.'s XNLI setting for Llama 3.1 8B: r = 8, α = 2r, `A ~ N(0, 0.01²)`.
    fn default() -> Self {
        Self {
            rank: 8,
            alpha: 16.0,
            init: LoraInit::Normal { std: 0.01 },
        }
    }
}

/// One adapter: `x ↦ x · A · (B ⊙ M) · scale`.
#[derive(Module, Debug)]
pub struct LoraAdapter<B: Backend> {
    /// `[d_in, r]`.
    pub a: Param<Tensor<B, 2>>,
    /// `[r, d_out]`.
    pub b: Param<Tensor<B, 2>>,
    /// `[1, d_out]`: 1 for output neurons that may change, 0 for the others (`None`: all).
    pub mask: Option<Tensor<B, 2>>,
    /// α / r.
    pub scale: f64,
}

impl<B: Backend> LoraAdapter<B> {
    /// A fresh adapter for a `d_in → d_out` linear: `A` drawn with `seed`, `B = 0`; `trainable`
    /// lists the output neurons that may change (`None`: every one).
    ///
    /// # Errors
    /// A zero rank, or a trainable neuron not below `d_out`.
    pub fn new(
        d_in: usize,
        d_out: usize,
        config: &LoraConfig,
        trainable: Option<&[usize]>,
        seed: u64,
        device: &B::Device,
    ) -> Result<Self> {
        let r = config.rank;
        if r == 0 {
            return Err(ModelError::Lora("the rank must be at least 1".into()));
        }
        let mut rng = StdRng::seed_from_u64(seed);
        let a: Vec<f32> = match config.init {
            LoraInit::Normal { std } => (0..d_in * r)
                .map(|_| {
                    // Box–Muller.
                    let (u, v): (f64, f64) = (rng.random::<f64>().max(1e-300), rng.random());
                    (std * (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
                })
                .collect(),
            LoraInit::Kaiming => {
                let bound = 1.0 / (d_in as f64).sqrt();
                (0..d_in * r)
                    .map(|_| rng.random_range(-bound..bound) as f32)
                    .collect()
            }
        };
        let a = Tensor::from_data(TensorData::new(a, [d_in, r]), device);
        let b = Tensor::zeros([r, d_out], device);
        let mask = trainable
            .map(|t| neuron_mask::<B>(t, d_out, device))
            .transpose()?;
        Ok(Self {
            a: Param::from_tensor(a),
            b: Param::from_tensor(b),
            mask,
            scale: config.alpha / r as f64,
        })
    }

    /// `(d_in, rank, d_out)`.
    pub fn dims(&self) -> (usize, usize, usize) {
        let [d_in, r] = self.a.dims();
        let [_, d_out] = self.b.dims();
        (d_in, r, d_out)
    }

    /// `B ⊙ M`.
    pub fn masked_b(&self) -> Tensor<B, 2> {
        match &self.mask {
            Some(m) => self.b.val() * m.clone(),
            None => self.b.val(),
        }
    }

    /// The update of the linear's output for input `x` (`[…, d_in]` → `[…, d_out]`).
    pub fn delta<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let dims = x.dims();
        let (d_in, _, d_out) = self.dims();
        let rows: usize = dims[..D - 1].iter().product();
        let mut out_dims = dims;
        out_dims[D - 1] = d_out;
        x.reshape([rows, d_in])
            .matmul(self.a.val())
            .matmul(self.masked_b())
            .mul_scalar(self.scale)
            .reshape(out_dims)
    }

    /// `linear(x) + delta(x)`, the adapted linear's output.
    pub fn forward<const D: usize>(&self, linear: &Linear<B>, x: Tensor<B, D>) -> Tensor<B, D> {
        crate::fused::linear(linear, x.clone()) + self.delta(x)
    }

    /// The weight update `A · (B ⊙ M) · scale`, `[d_in, d_out]` (Burn's `Linear` layout).
    pub fn delta_weight(&self) -> Tensor<B, 2> {
        self.a.val().matmul(self.masked_b()).mul_scalar(self.scale)
    }

    /// `linear` with the update folded into its weight, for inference.
    pub fn merge(&self, linear: Linear<B>) -> Linear<B> {
        let weight = linear.weight.val() + self.delta_weight();
        Linear {
            weight: Param::from_tensor(weight),
            bias: linear.bias,
        }
    }

    /// Put the adapter into `map` as PEFT has it: `{prefix}.lora_A.weight` `[r, d_in]` and
    /// `{prefix}.lora_B.weight` `[d_out, r]` (the masked `B`).
    pub fn to_map(&self, prefix: &str, map: &mut TensorMap) {
        let host = |t: Tensor<B, 2>| {
            let [rows, cols] = t.dims();
            HostTensor::new(
                vec![rows, cols],
                t.into_data()
                    .convert::<f32>()
                    .into_vec()
                    .expect("f32 weights"),
            )
            .transposed()
        };
        map.insert(format!("{prefix}.lora_A.weight"), host(self.a.val()));
        map.insert(format!("{prefix}.lora_B.weight"), host(self.masked_b()));
    }

    /// Take the adapter for a `d_in → d_out` linear out of `map` (see [`Self::to_map`]); a
    /// missing or mis-shaped tensor is an error naming the key and the shapes.
    pub fn from_map(
        prefix: &str,
        map: &mut TensorMap,
        d_in: usize,
        d_out: usize,
        config: &LoraConfig,
        trainable: Option<&[usize]>,
        device: &B::Device,
    ) -> Result<Self> {
        let r = config.rank;
        let a = map
            .take(&format!("{prefix}.lora_A.weight"), &[r, d_in])?
            .transposed();
        let b = map
            .take(&format!("{prefix}.lora_B.weight"), &[d_out, r])?
            .transposed();
        let tensor = |t: HostTensor, shape: [usize; 2]| {
            Param::from_tensor(Tensor::from_data(TensorData::new(t.data, shape), device))
        };
        Ok(Self {
            a: tensor(a, [d_in, r]),
            b: tensor(b, [r, d_out]),
            mask: trainable
                .map(|t| neuron_mask::<B>(t, d_out, device))
                .transpose()?,
            scale: config.alpha / r as f64,
        })
    }
}

/// `[1, width]`: 1 at `neurons`, 0 elsewhere.
fn neuron_mask<B: Backend>(
    neurons: &[usize],
    width: usize,
    device: &B::Device,
) -> Result<Tensor<B, 2>> {
    let mut m = vec![0f32; width];
    for &j in neurons {
        if j >= width {
            return Err(ModelError::Lora(format!(
                "neuron {j} is outside a linear of {width} outputs"
            )));
        }
        m[j] = 1.0;
    }
    Ok(Tensor::from_data(TensorData::new(m, [1, width]), device))
}
