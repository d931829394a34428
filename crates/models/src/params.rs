//! Burn modules from host tensors and back: the weight helpers every architecture's loader
//! shares (linear layers with HF's `[out, in]` weights transposed, layer norms, embeddings,
//! freshly initialised heads), and the [`LoadReport`] a load returns.

use burn::module::Param;
use burn::nn::{Embedding, LayerNorm, LayerNormConfig, Linear};
use burn::prelude::*;
use rand::Rng;
use rand::rngs::StdRng;

use crate::error::Result;
use crate::weights::{HostTensor, TensorMap};

/// What loading did beyond taking tensors: which keys it dropped and which parameters it
/// initialised because the checkpoint had none (a new task head).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct LoadReport {
    /// Pretraining-head keys that were dropped.
    pub dropped: Vec<String>,
    /// Modules initialised from scratch.
    pub initialised: Vec<String>,
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

/// A `Linear` initialised as PyTorch's `nn.Linear(d_in, d_out)` is by default: weight and bias
/// uniform in `±1/√d_in` (`kaiming_uniform_(a = √5)` gives that bound for the weight; the bias
/// uses `1/√fan_in`).
pub fn torch_linear<B: Backend>(
    d_in: usize,
    d_out: usize,
    rng: &mut StdRng,
    device: &B::Device,
) -> Linear<B> {
    let bound = 1.0 / (d_in as f64).sqrt();
    let mut uniform = |n: usize| -> Vec<f32> {
        (0..n)
            .map(|_| ((2.0 * rng.random::<f64>() - 1.0) * bound) as f32)
            .collect()
    };
    let weight = uniform(d_in * d_out);
    let bias = uniform(d_out);
    Linear {
        weight: Param::from_tensor(tensor(HostTensor::new(vec![d_in, d_out], weight), device)),
        bias: Some(Param::from_tensor(tensor(
            HostTensor::new(vec![d_out], bias),
            device,
        ))),
    }
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

pub(crate) fn standard_normal(rng: &mut StdRng) -> f32 {
    // Box–Muller; one draw per call keeps the stream easy to reason about.
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random();
    ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
}

pub(crate) fn layer_norm<B: Backend>(
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

pub(crate) fn save_layer_norm<B: Backend>(norm: &LayerNorm<B>, key: &str, map: &mut TensorMap) {
    map.insert(format!("{key}.weight"), to_host(norm.gamma.val()));
    if let Some(beta) = &norm.beta {
        map.insert(format!("{key}.bias"), to_host(beta.val()));
    }
}

pub(crate) fn save_embedding<B: Backend>(embedding: &Embedding<B>, key: &str, map: &mut TensorMap) {
    map.insert(format!("{key}.weight"), to_host(embedding.weight.val()));
}
