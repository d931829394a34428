//! PEFT adapter folders: `adapter_config.json` and `adapter_model.safetensors`, as
//! `PeftModel.save_pretrained` writes them and `PeftModel.from_pretrained` reads them.
//!
//! [`save_peft`] writes a decoder's adapters (with PEFT's tensor names, see [`super::lora`]) and,
//! for a classifier, its `score` head as PEFT keeps a `modules_to_save` module
//! (`base_model.model.score.weight`); [`load_peft`] reads such a folder, whether written here
//! or by PEFT, back onto a decoder.
//!
//! What PEFT cannot say: a neuron-specific adapter (Mondal et al.) is stored as its effective
//! update (`B ⊙ M`), so PEFT computes the same outputs, but PEFT knows no mask and would train
//! every gate row if training went on there. Reading back, the mask comes from the neuron set
//! the caller passes. A `ScoreHead::TorchLinear` head has a bias that HF's
//! `LlamaForSequenceClassification.score` has no slot for: the folder keeps it
//! (`base_model.model.score.bias`), and PEFT reports it as an unexpected key and leaves it out.
//!
//! Only what this crate's adapters can express is read: plain LoRA (`peft_type` `LORA`) on
//! [`LORA_TARGETS`], one rank and α for every adapter, rsLoRA's `α / √r` scale included. DoRA,
//! per-module rank or α patterns, `layers_to_transform`, LoRA biases, `fan_in_fan_out` and
//! trainable token indices are refused, naming the key.
//!
//! Checked both ways: `tests/fixtures/lora/make_peft_fixtures.py` has PEFT 0.21.2 write folders
//! that [`load_peft`] reproduces to 1e-4 (the parity tests); by hand on 2026-12-04, a folder from
//! `cargo run -p models --example peft_adapter` (neuron-specific gate adapters, a `score` head)
//! opened with `PeftModel.from_pretrained` in PEFT 0.21.2 / transformers 5.25.0 gave logits within
//! 1.5e-7 of ours (`tests/fixtures/lora/check_peft_folder.py`).

use std::path::{Path, PathBuf};

use ablation::NeuronSet;
use burn::module::Param;
use burn::nn::Linear;
use burn::prelude::*;
use serde_json::{Value, json};

use super::LlamaModel;
use super::lora::{LORA_TARGETS, load_adapters};
use crate::error::{ModelError, Result};
use crate::lora::{LoraConfig, LoraInit};
use crate::params::save_linear;
use crate::weights::TensorMap;

/// The config file of an adapter folder.
pub const ADAPTER_CONFIG: &str = "adapter_config.json";
/// The weights file of an adapter folder.
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";
/// The classifier head's key prefix in the weights file.
const SCORE: &str = "base_model.model.score";

/// PEFT's `task_type`: which `transformers` class the adapters sit on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeftTask {
    /// `CAUSAL_LM`: `LlamaForCausalLM`.
    CausalLm,
    /// `SEQ_CLS`: `LlamaForSequenceClassification`, its `score` head in `modules_to_save`.
    SeqCls,
}

impl PeftTask {
    /// The name in `adapter_config.json`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::CausalLm => "CAUSAL_LM",
            Self::SeqCls => "SEQ_CLS",
        }
    }
}

/// What an adapter folder's `adapter_config.json` says (the parts this crate uses).
#[derive(Debug, Clone, PartialEq)]
pub struct PeftConfig {
    /// `task_type` (`None`: the file has none).
    pub task: Option<PeftTask>,
    /// `base_model_name_or_path`: the HF id or folder of the base model.
    pub base_model: Option<String>,
    /// `r`.
    pub rank: usize,
    /// `lora_alpha`.
    pub alpha: f64,
    /// `lora_dropout` (training only).
    pub dropout: f64,
    /// `use_rslora`: the update is scaled by `α / √r` instead of `α / r`.
    pub rslora: bool,
    /// `target_modules`, as [`LORA_TARGETS`] names, in that order.
    pub targets: Vec<String>,
    /// `modules_to_save` (`["score"]` for a classifier).
    pub modules_to_save: Vec<String>,
}

impl PeftConfig {
    /// The config of `model`'s adapters (rank, α and targets read off the adapters).
    ///
    /// # Errors
    /// If the model has no adapters, or its adapters differ in rank or scale, or a target is
    /// adapted in some layers only.
    pub fn of<B: Backend>(
        model: &LlamaModel<B>,
        task: PeftTask,
        base_model: Option<&str>,
        dropout: f64,
    ) -> Result<Self> {
        let mut targets = Vec::new();
        let mut shape: Option<(usize, f64)> = None;
        for target in LORA_TARGETS {
            let present: Vec<bool> = model
                .layers
                .iter()
                .map(|l| l.lora.get(target).is_some())
                .collect();
            if !present.iter().any(|p| *p) {
                continue;
            }
            if !present.iter().all(|p| *p) {
                return Err(ModelError::Lora(format!(
                    "{target} has adapters in some layers only; PEFT's target_modules cannot say so"
                )));
            }
            for layer in &model.layers {
                let a = layer.lora.get(target).expect("present");
                let (_, r, _) = a.dims();
                match shape {
                    None => shape = Some((r, a.scale)),
                    Some((r0, s0)) if r0 == r && (s0 - a.scale).abs() <= 1e-12 * s0.abs() => {}
                    Some((r0, s0)) => {
                        return Err(ModelError::Lora(format!(
                            "adapters of rank {r0} (scale {s0}) and rank {r} (scale {}) in one \
                             model; a PEFT folder has one r and lora_alpha",
                            a.scale
                        )));
                    }
                }
            }
            targets.push(target.to_string());
        }
        let (rank, scale) =
            shape.ok_or_else(|| ModelError::Lora("the model has no adapters to save".into()))?;
        Ok(Self {
            task: Some(task),
            base_model: base_model.map(str::to_string),
            rank,
            alpha: scale * rank as f64,
            dropout,
            rslora: false,
            targets,
            modules_to_save: match task {
                PeftTask::SeqCls => vec!["score".into()],
                PeftTask::CausalLm => Vec::new(),
            },
        })
    }

    /// The adapters' shape and scale for [`LoraAdapter`](crate::LoraAdapter) (`init` draws
    /// fresh ones; it does not matter for loading). rsLoRA's `α / √r` is expressed as an α of
    /// `α √r`.
    pub fn lora(&self, init: LoraInit) -> LoraConfig {
        let alpha = if self.rslora {
            self.alpha * (self.rank as f64).sqrt()
        } else {
            self.alpha
        };
        LoraConfig {
            rank: self.rank,
            alpha,
            init,
        }
    }

    /// The JSON PEFT writes (the keys it needs; PEFT fills in its defaults for the others).
    pub fn to_json(&self) -> Value {
        let alpha = if self.alpha.fract() == 0.0 && self.alpha.abs() < 1e15 {
            json!(self.alpha as i64)
        } else {
            json!(self.alpha)
        };
        json!({
            "peft_type": "LORA",
            "task_type": self.task.map(|t| t.as_str()),
            "base_model_name_or_path": self.base_model,
            "r": self.rank,
            "lora_alpha": alpha,
            "lora_dropout": self.dropout,
            "target_modules": self.targets,
            "modules_to_save": if self.modules_to_save.is_empty() {
                Value::Null
            } else {
                json!(self.modules_to_save)
            },
            "bias": "none",
            "fan_in_fan_out": false,
            "inference_mode": true,
            "init_lora_weights": true,
            "use_rslora": self.rslora,
            "use_dora": false,
            "layers_to_transform": null,
            "rank_pattern": {},
            "alpha_pattern": {},
        })
    }

    /// Read `dir/adapter_config.json`.
    ///
    /// # Errors
    /// A missing or malformed file, or a key this crate's adapters cannot honour (named, with
    /// the value found).
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(ADAPTER_CONFIG);
        if !path.is_file() {
            return Err(ModelError::not_found(
                &path,
                "a PEFT adapter config (adapter_config.json beside adapter_model.safetensors)",
            ));
        }
        let text = std::fs::read_to_string(&path).map_err(crate::error::io_err(&path))?;
        let v: Value = serde_json::from_str(&text).map_err(|e| ModelError::Format {
            path: path.clone(),
            message: format!("not JSON: {e}"),
        })?;
        Self::from_json(&v, &path)
    }

    fn from_json(v: &Value, path: &Path) -> Result<Self> {
        let bad = |key: &str, message: String| ModelError::Config {
            path: path.to_path_buf(),
            key: key.into(),
            message,
        };
        let get = |key: &str| v.get(key).filter(|x| !x.is_null());
        match get("peft_type").and_then(Value::as_str) {
            Some("LORA") => {}
            other => {
                return Err(bad(
                    "peft_type",
                    format!("{other:?}: only LoRA adapters (\"LORA\") are read"),
                ));
            }
        }
        let task = match get("task_type").map(|t| t.as_str()) {
            None => None,
            Some(Some("CAUSAL_LM")) => Some(PeftTask::CausalLm),
            Some(Some("SEQ_CLS")) => Some(PeftTask::SeqCls),
            Some(other) => {
                return Err(bad(
                    "task_type",
                    format!("{other:?}: expected \"CAUSAL_LM\" or \"SEQ_CLS\""),
                ));
            }
        };
        let rank = get("r")
            .and_then(Value::as_u64)
            .filter(|r| *r > 0)
            .ok_or_else(|| bad("r", format!("{:?}: expected a positive integer", get("r"))))?
            as usize;
        let alpha = get("lora_alpha")
            .and_then(Value::as_f64)
            .ok_or_else(|| bad("lora_alpha", "missing or not a number".into()))?;
        let dropout = get("lora_dropout").and_then(Value::as_f64).unwrap_or(0.0);
        let flag = |key: &str| get(key).and_then(Value::as_bool).unwrap_or(false);
        for key in ["use_dora", "fan_in_fan_out", "lora_bias"] {
            if flag(key) {
                return Err(bad(key, "true is not supported (plain LoRA only)".into()));
            }
        }
        if let Some(b) = get("bias").and_then(Value::as_str).filter(|b| *b != "none") {
            return Err(bad(
                "bias",
                format!("{b:?}: trained biases are not supported; expected \"none\""),
            ));
        }
        for key in ["rank_pattern", "alpha_pattern"] {
            if get(key)
                .and_then(Value::as_object)
                .is_some_and(|m| !m.is_empty())
            {
                return Err(bad(
                    key,
                    "per-module ranks or alphas are not supported (one r and lora_alpha)".into(),
                ));
            }
        }
        for key in [
            "layers_to_transform",
            "exclude_modules",
            "trainable_token_indices",
            "target_parameters",
        ] {
            if get(key).is_some_and(|x| !x.as_array().is_some_and(|a| a.is_empty())) {
                return Err(bad(
                    key,
                    format!("{}: not supported", get(key).expect("present")),
                ));
            }
        }
        let names: Vec<String> = match get("target_modules") {
            Some(Value::String(s)) if s == "all-linear" => {
                LORA_TARGETS.iter().map(|t| t.to_string()).collect()
            }
            Some(Value::Array(items)) => items
                .iter()
                .map(|i| {
                    i.as_str().map(str::to_string).ok_or_else(|| {
                        bad("target_modules", format!("{i}: expected a module name"))
                    })
                })
                .collect::<Result<_>>()?,
            other => {
                return Err(bad(
                    "target_modules",
                    format!(
                        "{other:?}: expected a list of module names (a regex is not supported)"
                    ),
                ));
            }
        };
        let mut targets = Vec::new();
        for name in &names {
            let last = name.rsplit('.').next().unwrap_or(name);
            let prefix = name.strip_suffix(last).unwrap_or("");
            if !LORA_TARGETS.contains(&last) || !matches!(prefix, "" | "self_attn." | "mlp.") {
                return Err(bad(
                    "target_modules",
                    format!(
                        "{name:?} is not a Llama layer linear; expected some of {}",
                        LORA_TARGETS.join(", ")
                    ),
                ));
            }
            targets.push(last.to_string());
        }
        targets.sort_by_key(|t| LORA_TARGETS.iter().position(|x| x == t));
        targets.dedup();
        let modules_to_save = match get("modules_to_save") {
            None => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect(),
            Some(other) => {
                return Err(bad(
                    "modules_to_save",
                    format!("{other}: expected a list of module names"),
                ));
            }
        };
        Ok(Self {
            task,
            base_model: get("base_model_name_or_path")
                .and_then(Value::as_str)
                .map(str::to_string),
            rank,
            alpha,
            dropout,
            rslora: flag("use_rslora"),
            targets,
            modules_to_save,
        })
    }
}

/// Write `model`'s adapters (and a classifier's `head`) as a PEFT adapter folder `dir`
/// (created if missing). Each file is written beside its final name and renamed into place.
///
/// # Errors
/// If `config` does not describe the model's adapters, a head is given for a `CAUSAL_LM`
/// folder (or none for `SEQ_CLS`), or a file cannot be written.
pub fn save_peft<B: Backend>(
    model: &LlamaModel<B>,
    head: Option<&Linear<B>>,
    config: &PeftConfig,
    dir: &Path,
) -> Result<()> {
    let found = PeftConfig::of(model, config.task.unwrap_or(PeftTask::CausalLm), None, 0.0)?;
    if found.targets != config.targets || found.rank != config.rank {
        return Err(ModelError::Lora(format!(
            "the config names targets {:?} of rank {}, the model has {:?} of rank {}",
            config.targets, config.rank, found.targets, found.rank
        )));
    }
    match (config.task, head) {
        (Some(PeftTask::SeqCls), None) => {
            return Err(ModelError::Lora(
                "a SEQ_CLS folder needs the classifier head".into(),
            ));
        }
        (Some(PeftTask::CausalLm) | None, Some(_)) => {
            return Err(ModelError::Lora(
                "a head is saved only in a SEQ_CLS folder".into(),
            ));
        }
        _ => {}
    }
    std::fs::create_dir_all(dir).map_err(crate::error::io_err(dir))?;
    let weights = dir.join(ADAPTER_WEIGHTS);
    let mut map = TensorMap::new(&weights);
    super::lora::adapters_to_map(model, &mut map);
    if let Some(head) = head {
        save_linear(head, SCORE, &mut map);
    }
    let partial = partial_path(&weights);
    map.write_safetensors(&partial)?;
    std::fs::rename(&partial, &weights).map_err(crate::error::io_err(&weights))?;
    let path = dir.join(ADAPTER_CONFIG);
    let partial = partial_path(&path);
    let text = serde_json::to_string_pretty(&config.to_json()).expect("JSON") + "\n";
    std::fs::write(&partial, text).map_err(crate::error::io_err(&partial))?;
    std::fs::rename(&partial, &path).map_err(crate::error::io_err(&path))?;
    Ok(())
}

fn partial_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    path.with_file_name(name)
}

/// A PEFT adapter folder read onto a decoder.
#[derive(Debug)]
pub struct PeftAdapter<B: Backend> {
    /// The frozen decoder with the folder's adapters.
    pub model: LlamaModel<B>,
    /// The folder's config.
    pub config: PeftConfig,
    /// The `score` head of a `SEQ_CLS` folder (Burn layout; a bias if the folder has one).
    pub head: Option<Linear<B>>,
}

/// Read the adapter folder `dir` (written by [`save_peft`] or by PEFT) onto `model`; `neurons`
/// restricts the `gate_proj` adapters again, as when they were trained. Strict: a missing,
/// mis-shaped or unexpected tensor is an error naming the key.
///
/// # Errors
/// See [`PeftConfig::read`]; also a missing weights file or a tensor that does not fit.
pub fn load_peft<B: Backend>(
    model: LlamaModel<B>,
    dir: &Path,
    neurons: Option<&NeuronSet>,
    device: &B::Device,
) -> Result<PeftAdapter<B>> {
    let config = PeftConfig::read(dir)?;
    let weights = dir.join(ADAPTER_WEIGHTS);
    if !weights.is_file() {
        return Err(ModelError::not_found(
            &weights,
            "the adapters' weights (adapter_model.safetensors)",
        ));
    }
    let mut map = TensorMap::open(&weights)?;
    let targets: Vec<&str> = config.targets.iter().map(String::as_str).collect();
    let lora = config.lora(LoraInit::Kaiming);
    let hidden = model.hidden_size();
    let model = load_adapters(model, &mut map, &targets, &lora, neurons, device)?;
    let head = if config.modules_to_save.iter().any(|m| m == "score") {
        let key = format!("{SCORE}.weight");
        let shape = map
            .shapes()
            .into_iter()
            .find(|(k, _, _)| *k == key)
            .map(|(_, _, s)| s);
        match shape {
            None => None,
            Some(s) => {
                let labels = match s.as_slice() {
                    [n, h] if *h == hidden => *n,
                    _ => {
                        return Err(ModelError::ShapeMismatch {
                            source_file: weights.clone(),
                            key,
                            expected: vec![0, hidden],
                            found: s,
                        });
                    }
                };
                let weight = map.take(&key, &[labels, hidden])?.transposed();
                let bias = map.take_optional(&format!("{SCORE}.bias"), &[labels])?;
                Some(Linear {
                    weight: Param::from_tensor(crate::params::tensor(weight, device)),
                    bias: bias.map(|b| Param::from_tensor(crate::params::tensor(b, device))),
                })
            }
        }
    } else {
        None
    };
    map.finish()?;
    Ok(PeftAdapter {
        model,
        config,
        head,
    })
}
