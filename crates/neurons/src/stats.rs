//! Streaming activation statistics per (language, layer, neuron), collected from a decoder's
//! gate pre-activations in batches, saved, merged across shards and reloaded.
//!
//! Per neuron and language: the number of tokens whose gate pre-activation `gate_proj(x)` is
//! positive (Tang et al. count `silu(g) > 0`, which is the same event), and the sum and sum of
//! squares of the pre-activation, from which the mean and the (population) standard deviation
//! follow. These are taken **before** SiLU, as Mondal et al.'s `act_stat`. Accumulation is in
//! f64 on the host after every batch, so a corpus of any length stays exact.

use std::collections::BTreeMap;
use std::path::Path;

use burn::prelude::*;
use models::{ForwardContext, LlamaModel};

use crate::selection::{LanguageTable, SelectionError};

/// Why statistics could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    /// Statistics of two different models (or shapes) were combined.
    #[error("statistics from another model: {found} does not match {expected}")]
    OtherModel {
        /// The model the statistics belong to.
        expected: String,
        /// The model of the other statistics.
        found: String,
    },
    /// A file could not be read or written, or is not a statistics file.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// A language has no statistics.
    #[error("no statistics for language {0:?}")]
    UnknownLanguage(String),
}

/// Accumulated statistics of one language.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LanguageStats {
    /// Tokens seen.
    pub tokens: u64,
    /// Per neuron (`layer · width + j`): tokens with a positive gate pre-activation.
    pub positive: Vec<u64>,
    /// Per neuron: sum of the gate pre-activation.
    pub sum: Vec<f64>,
    /// Per neuron: sum of its square.
    pub sum_sq: Vec<f64>,
}

/// Statistics of one model over several languages.
#[derive(Debug, Clone, PartialEq)]
pub struct ActivationStats {
    /// Identifies the model ([`model_fingerprint`]); merging or using statistics of another model
    /// is an error.
    pub model: String,
    /// Layers.
    pub n_layers: usize,
    /// Neurons per layer.
    pub width: usize,
    /// Per language.
    pub languages: BTreeMap<String, LanguageStats>,
}

/// A string that identifies a decoder: its shape and a checksum of some of its weights (the
/// first rows of the embedding and the first layer's gate projection), so that two models of the
/// same shape are told apart.
pub fn model_fingerprint<B: Backend>(model: &LlamaModel<B>) -> String {
    let sample = |t: Tensor<B, 2>| -> f64 {
        let [rows, cols] = t.dims();
        t.slice([0..rows.min(8), 0..cols])
            .into_data()
            .convert::<f64>()
            .into_vec::<f64>()
            .expect("f64 values")
            .iter()
            .enumerate()
            .map(|(i, v)| v * (1.0 + (i % 7) as f64))
            .sum()
    };
    let embed = sample(model.embed_tokens.weight.val());
    let gate = sample(model.layers[0].mlp.gate_proj.weight.val().transpose());
    format!(
        "llama L={} I={} H={} V={} checksum={:.6e}/{:.6e}",
        model.num_layers(),
        model.intermediate_size(),
        model.hidden_size(),
        model.vocab_size(),
        embed,
        gate
    )
}

impl ActivationStats {
    /// Empty statistics for `model`.
    pub fn new<B: Backend>(model: &LlamaModel<B>) -> Self {
        Self {
            model: model_fingerprint(model),
            n_layers: model.num_layers(),
            width: model.intermediate_size(),
            languages: BTreeMap::new(),
        }
    }

    /// Run `windows` (token ids, all the same length) through `model` in batches of
    /// `batch_size`, adding their statistics to `language`; `progress` is called after each
    /// batch with the windows done so far.
    pub fn collect<B: Backend>(
        &mut self,
        model: &LlamaModel<B>,
        language: &str,
        windows: &[Vec<u32>],
        batch_size: usize,
        device: &B::Device,
        mut progress: impl FnMut(usize),
    ) -> Result<(), StatsError> {
        let found = model_fingerprint(model);
        if found != self.model {
            return Err(StatsError::OtherModel {
                expected: self.model.clone(),
                found,
            });
        }
        let n = self.n_layers * self.width;
        let entry = self
            .languages
            .entry(language.to_string())
            .or_insert_with(|| LanguageStats {
                tokens: 0,
                positive: vec![0; n],
                sum: vec![0.0; n],
                sum_sq: vec![0.0; n],
            });
        let mut done = 0;
        for batch in windows.chunks(batch_size.max(1)) {
            let input = models::token_ids::<B, _>(batch, device);
            let mut ctx = ForwardContext::eval().counting();
            // Only the layers' statistics are needed: the final norm and LM head are skipped.
            let _ = model.hidden(input, None, None, &mut ctx);
            let stats = ctx.gate_statistics.expect("counting").to_host();
            entry.tokens += stats.tokens.round() as u64;
            for l in 0..self.n_layers {
                for j in 0..self.width {
                    let i = l * self.width + j;
                    entry.positive[i] += stats.positive[l][j].round() as u64;
                    entry.sum[i] += stats.sum[l][j] as f64;
                    entry.sum_sq[i] += stats.sum_sq[l][j] as f64;
                }
            }
            done += batch.len();
            progress(done);
        }
        Ok(())
    }

    /// Add `other`'s counts (another shard of the corpus) to these.
    pub fn merge(&mut self, other: &Self) -> Result<(), StatsError> {
        if other.model != self.model || (other.n_layers, other.width) != (self.n_layers, self.width)
        {
            return Err(StatsError::OtherModel {
                expected: self.model.clone(),
                found: other.model.clone(),
            });
        }
        for (lang, theirs) in &other.languages {
            match self.languages.get_mut(lang) {
                None => {
                    self.languages.insert(lang.clone(), theirs.clone());
                }
                Some(ours) => {
                    ours.tokens += theirs.tokens;
                    for i in 0..ours.positive.len() {
                        ours.positive[i] += theirs.positive[i];
                        ours.sum[i] += theirs.sum[i];
                        ours.sum_sq[i] += theirs.sum_sq[i];
                    }
                }
            }
        }
        Ok(())
    }

    /// Activation probabilities `positive / tokens` of `languages` (all, in name order, when
    /// empty), for [`crate::selection::lape`].
    pub fn probabilities(&self, languages: &[String]) -> Result<LanguageTable, StatsError> {
        let names: Vec<String> = if languages.is_empty() {
            self.languages.keys().cloned().collect()
        } else {
            languages.to_vec()
        };
        let mut counts = Vec::new();
        let mut tokens = Vec::new();
        for name in &names {
            let s = self
                .languages
                .get(name)
                .ok_or_else(|| StatsError::UnknownLanguage(name.clone()))?;
            counts.push(s.positive.clone());
            tokens.push(s.tokens);
        }
        LanguageTable::probabilities(names, self.n_layers, self.width, &counts, &tokens).map_err(
            |e: SelectionError| StatsError::File {
                path: "(statistics)".into(),
                message: e.to_string(),
            },
        )
    }

    /// Per-neuron mean and population standard deviation of the gate pre-activation for
    /// `language`.
    pub fn mean_std(&self, language: &str) -> Result<(Vec<f64>, Vec<f64>), StatsError> {
        let s = self
            .languages
            .get(language)
            .ok_or_else(|| StatsError::UnknownLanguage(language.into()))?;
        let n = s.tokens.max(1) as f64;
        let mean: Vec<f64> = s.sum.iter().map(|v| v / n).collect();
        let std = s
            .sum_sq
            .iter()
            .zip(&mean)
            .map(|(sq, m)| (sq / n - m * m).max(0.0).sqrt())
            .collect();
        Ok((mean, std))
    }

    /// Write to a JSON file (atomically: a temporary file, then a rename).
    pub fn save(&self, path: &Path) -> Result<(), StatsError> {
        let err = |message: String| StatsError::File {
            path: path.display().to_string(),
            message,
        };
        let languages: serde_json::Map<String, serde_json::Value> = self
            .languages
            .iter()
            .map(|(k, s)| {
                (
                    k.clone(),
                    serde_json::json!({
                        "tokens": s.tokens, "positive": s.positive, "sum": s.sum, "sum_sq": s.sum_sq,
                    }),
                )
            })
            .collect();
        let v = serde_json::json!({
            "format": "neuronlab activation statistics 1",
            "model": self.model, "n_layers": self.n_layers, "width": self.width,
            "languages": languages,
        });
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, v.to_string()).map_err(|e| err(e.to_string()))?;
        std::fs::rename(&tmp, path).map_err(|e| err(e.to_string()))
    }

    /// Read a file written by [`Self::save`].
    pub fn load(path: &Path) -> Result<Self, StatsError> {
        let err = |message: String| StatsError::File {
            path: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| err(format!("invalid JSON: {e}")))?;
        if v["format"] != "neuronlab activation statistics 1" {
            return Err(err("not a neuronlab activation statistics file".into()));
        }
        let get_usize = |k: &str| {
            v[k].as_u64()
                .map(|x| x as usize)
                .ok_or_else(|| err(format!("missing {k}")))
        };
        let (n_layers, width) = (get_usize("n_layers")?, get_usize("width")?);
        let mut languages = BTreeMap::new();
        for (lang, s) in v["languages"]
            .as_object()
            .ok_or_else(|| err("missing languages".into()))?
        {
            let field = |k: &str| -> Result<Vec<f64>, StatsError> {
                let values: Vec<f64> = serde_json::from_value(s[k].clone())
                    .map_err(|e| err(format!("language {lang}: {k}: {e}")))?;
                if values.len() != n_layers * width {
                    return Err(err(format!(
                        "language {lang}: {k} has {} values, expected {}",
                        values.len(),
                        n_layers * width
                    )));
                }
                Ok(values)
            };
            languages.insert(
                lang.clone(),
                LanguageStats {
                    tokens: s["tokens"]
                        .as_u64()
                        .ok_or_else(|| err(format!("language {lang}: missing tokens")))?,
                    positive: field("positive")?.iter().map(|&c| c as u64).collect(),
                    sum: field("sum")?,
                    sum_sq: field("sum_sq")?,
                },
            );
        }
        Ok(Self {
            model: v["model"]
                .as_str()
                .ok_or_else(|| err("missing model".into()))?
                .to_string(),
            n_layers,
            width,
            languages,
        })
    }
}
