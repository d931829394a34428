//! LoRA on a decoder's linears, with Mondal et al.'s neuron-specific variant on `gate_proj`
//! (see [`crate::lora`] for the adapter itself).
//!
//! [`LlamaModel::with_lora`] freezes every base parameter (Burn has no freezing of its own: the
//! parameters stop requiring gradients, so the optimiser sees only the adapters) and adds a fresh
//! adapter to each named linear of every layer. With a neuron set, the `gate_proj` adapters may
//! change only that set's neurons of each layer; a layer without any of them still gets an
//! adapter whose mask is all zero, as in `soumenkm/LSN`. [`LlamaModel::merge_lora`] folds the
//! adapters into the weights; [`save_lora`] / [`load_lora`] write and read them with PEFT's
//! names (`base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight`, …).

use std::path::Path;

use ablation::NeuronSet;
use burn::module::Module;
use burn::nn::Linear;
use burn::prelude::*;

use super::LlamaModel;
use crate::error::{ModelError, Result};
use crate::lora::{LoraAdapter, LoraConfig};
use crate::weights::TensorMap;

/// The linears LoRA can target, by their HF names.
pub const LORA_TARGETS: [&str; 7] = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
];

/// The adapters of one layer (each `None` unless targeted).
#[derive(Module, Debug)]
pub struct LayerLora<B: Backend> {
    /// On `self_attn.q_proj`.
    pub q_proj: Option<LoraAdapter<B>>,
    /// On `self_attn.k_proj`.
    pub k_proj: Option<LoraAdapter<B>>,
    /// On `self_attn.v_proj`.
    pub v_proj: Option<LoraAdapter<B>>,
    /// On `self_attn.o_proj`.
    pub o_proj: Option<LoraAdapter<B>>,
    /// On `mlp.gate_proj` (the neuron-specific one).
    pub gate_proj: Option<LoraAdapter<B>>,
    /// On `mlp.up_proj`.
    pub up_proj: Option<LoraAdapter<B>>,
    /// On `mlp.down_proj`.
    pub down_proj: Option<LoraAdapter<B>>,
}

/// `linear(x)`, plus the adapter's update when there is one.
pub(crate) fn apply<B: Backend>(
    adapter: &Option<LoraAdapter<B>>,
    linear: &Linear<B>,
    x: Tensor<B, 3>,
) -> Tensor<B, 3> {
    match adapter {
        Some(a) => a.forward(linear, x),
        None => crate::fused::linear(linear, x),
    }
}

impl<B: Backend> LayerLora<B> {
    /// No adapters.
    pub fn none() -> Self {
        Self {
            q_proj: None,
            k_proj: None,
            v_proj: None,
            o_proj: None,
            gate_proj: None,
            up_proj: None,
            down_proj: None,
        }
    }

    /// The adapter on `target` (one of [`LORA_TARGETS`]).
    pub fn get(&self, target: &str) -> Option<&LoraAdapter<B>> {
        match target {
            "q_proj" => self.q_proj.as_ref(),
            "k_proj" => self.k_proj.as_ref(),
            "v_proj" => self.v_proj.as_ref(),
            "o_proj" => self.o_proj.as_ref(),
            "gate_proj" => self.gate_proj.as_ref(),
            "up_proj" => self.up_proj.as_ref(),
            _ => self.down_proj.as_ref(),
        }
    }

    pub(super) fn slot(&mut self, target: &str) -> &mut Option<LoraAdapter<B>> {
        match target {
            "q_proj" => &mut self.q_proj,
            "k_proj" => &mut self.k_proj,
            "v_proj" => &mut self.v_proj,
            "o_proj" => &mut self.o_proj,
            "gate_proj" => &mut self.gate_proj,
            "up_proj" => &mut self.up_proj,
            _ => &mut self.down_proj,
        }
    }
}

/// `(HF key within the layer, d_in, d_out)` of a target's linear.
pub(super) fn target_linear<B: Backend>(
    layer: &super::LlamaLayer<B>,
    target: &str,
) -> (String, usize, usize) {
    let (group, linear) = match target {
        "q_proj" => ("self_attn", &layer.self_attn.q_proj),
        "k_proj" => ("self_attn", &layer.self_attn.k_proj),
        "v_proj" => ("self_attn", &layer.self_attn.v_proj),
        "o_proj" => ("self_attn", &layer.self_attn.o_proj),
        "gate_proj" => ("mlp", &layer.mlp.gate_proj),
        "up_proj" => ("mlp", &layer.mlp.up_proj),
        _ => ("mlp", &layer.mlp.down_proj),
    };
    let [d_in, d_out] = linear.weight.dims();
    (format!("{group}.{target}"), d_in, d_out)
}

pub(super) fn check_targets(targets: &[&str], neurons: Option<&NeuronSet>) -> Result<()> {
    if targets.is_empty() {
        return Err(ModelError::Lora("no target linears given".into()));
    }
    for t in targets {
        if !LORA_TARGETS.contains(t) {
            return Err(ModelError::Lora(format!(
                "target {t:?} names no linear of a Llama layer; the targets are {}",
                LORA_TARGETS.join(", ")
            )));
        }
    }
    if let Some(set) = neurons {
        if set.is_empty() {
            return Err(ModelError::Lora(
                "the neuron set is empty: no gate neuron could change (use no set for plain LoRA)"
                    .into(),
            ));
        }
        if !targets.contains(&"gate_proj") {
            return Err(ModelError::Lora(
                "a neuron set restricts the gate_proj adapters, but gate_proj is not a target"
                    .into(),
            ));
        }
    }
    Ok(())
}

/// The trainable gate neurons of `layer`.
fn layer_neurons(set: &NeuronSet, layer: usize) -> Vec<usize> {
    set.rows()
        .iter()
        .filter(|r| r.layer == layer)
        .map(|r| r.neuron)
        .collect()
}

impl<B: Backend> LlamaModel<B> {
    /// Freeze the model and add a fresh adapter to each `targets` linear of every layer (adapter
    /// `k` of layer `l` seeded from `seed`, `l` and `k`); `neurons` restricts the `gate_proj`
    /// adapters to those neurons (Mondal et al.'s neuron-specific LoRA).
    ///
    /// # Errors
    /// An unknown target, an empty neuron set, a set without `gate_proj` among the targets, a
    /// neuron outside the model, or a zero rank.
    pub fn with_lora(
        self,
        targets: &[&str],
        config: &LoraConfig,
        neurons: Option<&NeuronSet>,
        seed: u64,
        device: &B::Device,
    ) -> Result<Self> {
        check_targets(targets, neurons)?;
        if let Some(set) = neurons {
            set.check(self.num_layers(), self.intermediate_size())
                .map_err(|e| ModelError::Lora(e.to_string()))?;
        }
        let mut model = self.no_grad();
        for (l, layer) in model.layers.iter_mut().enumerate() {
            for (k, target) in targets.iter().enumerate() {
                let (_, d_in, d_out) = target_linear(layer, target);
                let trainable = match (*target, neurons) {
                    ("gate_proj", Some(set)) => Some(layer_neurons(set, l)),
                    _ => None,
                };
                let adapter_seed = seed
                    .wrapping_mul(1_000_003)
                    .wrapping_add((l * LORA_TARGETS.len() + k) as u64);
                let adapter = LoraAdapter::new(
                    d_in,
                    d_out,
                    config,
                    trainable.as_deref(),
                    adapter_seed,
                    device,
                )?;
                *layer.lora.slot(target) = Some(adapter);
            }
        }
        Ok(model)
    }

    /// Fold every adapter into its linear and drop the adapters (for inference).
    pub fn merge_lora(mut self) -> Self {
        for layer in &mut self.layers {
            let lora = std::mem::replace(&mut layer.lora, LayerLora::none());
            let attn = &mut layer.self_attn;
            let mlp = &mut layer.mlp;
            for (adapter, linear) in [
                (lora.q_proj, &mut attn.q_proj),
                (lora.k_proj, &mut attn.k_proj),
                (lora.v_proj, &mut attn.v_proj),
                (lora.o_proj, &mut attn.o_proj),
                (lora.gate_proj, &mut mlp.gate_proj),
                (lora.up_proj, &mut mlp.up_proj),
                (lora.down_proj, &mut mlp.down_proj),
            ] {
                if let Some(a) = adapter {
                    *linear = a.merge(linear.clone());
                }
            }
        }
        self
    }
}

/// Write the model's adapters to a safetensors file with PEFT's names.
pub fn save_lora<B: Backend>(model: &LlamaModel<B>, path: &Path) -> Result<()> {
    let mut map = TensorMap::new(path);
    adapters_to_map(model, &mut map);
    map.write_safetensors(path)
}

/// Put the model's adapters into `map` with PEFT's names.
pub(super) fn adapters_to_map<B: Backend>(model: &LlamaModel<B>, map: &mut TensorMap) {
    for (l, layer) in model.layers.iter().enumerate() {
        for target in LORA_TARGETS {
            if let Some(a) = layer.lora.get(target) {
                let (key, _, _) = target_linear(layer, target);
                a.to_map(&format!("base_model.model.model.layers.{l}.{key}"), map);
            }
        }
    }
}

/// Freeze `model` and load adapters for `targets` from a file written by [`save_lora`] (or PEFT);
/// a missing, mis-shaped or unexpected tensor is an error naming the key.
pub fn load_lora<B: Backend>(
    model: LlamaModel<B>,
    path: &Path,
    targets: &[&str],
    config: &LoraConfig,
    neurons: Option<&NeuronSet>,
    device: &B::Device,
) -> Result<LlamaModel<B>> {
    let mut map = TensorMap::open(path)?;
    let model = load_adapters(model, &mut map, targets, config, neurons, device)?;
    map.finish()?;
    Ok(model)
}

/// Freeze `model` and take adapters for `targets` out of `map` (PEFT's names); what else `map`
/// holds is left there for the caller.
pub(super) fn load_adapters<B: Backend>(
    model: LlamaModel<B>,
    map: &mut TensorMap,
    targets: &[&str],
    config: &LoraConfig,
    neurons: Option<&NeuronSet>,
    device: &B::Device,
) -> Result<LlamaModel<B>> {
    check_targets(targets, neurons)?;
    if let Some(set) = neurons {
        set.check(model.num_layers(), model.intermediate_size())
            .map_err(|e| ModelError::Lora(e.to_string()))?;
    }
    let mut model = model.no_grad();
    for (l, layer) in model.layers.iter_mut().enumerate() {
        for target in targets {
            let (key, d_in, d_out) = target_linear(layer, target);
            let trainable = match (*target, neurons) {
                ("gate_proj", Some(set)) => Some(layer_neurons(set, l)),
                _ => None,
            };
            let adapter = LoraAdapter::from_map(
                &format!("base_model.model.model.layers.{l}.{key}"),
                map,
                d_in,
                d_out,
                config,
                trainable.as_deref(),
                device,
            )?;
            *layer.lora.slot(target) = Some(adapter);
        }
    }
    Ok(model)
}
