//! Streaming activation statistics per (language, layer, neuron), collected from a decoder's
//! gate pre-activations in batches, saved, merged across shards and reloaded.
//!
//! Per neuron and language: the number of tokens whose gate pre-activation `gate_proj(x)` is
//! positive (Tang et al. count `silu(g) > 0`, which is the same event), and the sum and sum of
//! squares of the pre-activation, from which the mean and the (population) standard deviation
//! follow. These are taken **before** SiLU, as Mondal et al.'s `act_stat`. Accumulation is in
//! f64 on the host after every batch, so a corpus of any length stays exact.
//!
//! Mondal et al.'s activation-probability-percentile method needs two more, both also on the
//! gate pre-activation (before SiLU), as `soumenkm/LSN: code/activation.py` takes them:
//!
//! - [`BatchPercentile`] ([`ActivationStats::collect_with_percentiles`]): per batch, the `q`
//!   quantile of each neuron over the batch's tokens (`torch.quantile`, linear interpolation),
//!   averaged over batches (`mean_p90_act` for q = 0.9), for as many `q` as asked in one pass
//!   (Mondal et al.'s `act_stat` pass takes p75, p90 and p95 together, which their
//!   `mean_p75_act` … `mean_p95_act` interventions use). It depends on the batch: Mondal et al.
//!   take batches of 4 windows of 512 tokens.
//! - [`Exceedance`] ([`ActivationStats::collect_exceedance`], a second pass): the tokens whose
//!   gate pre-activation is above the language's own mean per-batch percentile
//!   (`act_prob_90p`).
//!
//! Mondal et al. draw the two passes from different random samples of the windows (10 % and
//! 20 %); here both passes read the windows they are given, which the caller chooses. To shard a
//! corpus over machines, merge the first-pass files before the second pass, so every shard
//! counts against the same thresholds.

use std::collections::BTreeMap;
use std::path::Path;

use burn::prelude::*;
use models::{ForwardContext, LlamaModel, quantile_from_order_statistics};

use crate::selection::{LanguageTable, SelectionError, quantile_linear};

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
    /// A request that does not fit the statistics.
    #[error("{0}")]
    Parameter(String),
}

/// The `q` quantile of `values` with linear interpolation (as `torch.quantile`), reordering them.
pub fn quantile_unsorted(values: &mut [f32], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let pos = q * (values.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let (_, &mut low, upper) = values.select_nth_unstable_by(lo, f32::total_cmp);
    let high = upper.iter().copied().min_by(f32::total_cmp).unwrap_or(low);
    low as f64 + (pos - lo as f64) * (high as f64 - low as f64)
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
    /// Mean per-batch percentiles, one per collected `q`, in ascending `q` (empty: none).
    pub percentiles: Vec<BatchPercentile>,
    /// Tokens above that percentile, when counted.
    pub exceedance: Option<Exceedance>,
    /// Kojima et al.'s `on_p50` per neuron, when collected
    /// ([`ActivationStats::collect_response_median`]).
    pub response_median: Option<Vec<f64>>,
}

/// Per neuron, the sum over batches of the batch's `q` quantile of the gate pre-activation.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BatchPercentile {
    /// The quantile, in (0, 1).
    pub q: f64,
    /// Per neuron: the sum of the per-batch quantiles.
    pub sum: Vec<f64>,
    /// Batches seen.
    pub batches: u64,
}

impl LanguageStats {
    /// The collected per-batch percentile at `q`, if any.
    pub fn percentile(&self, q: f64) -> Option<&BatchPercentile> {
        self.percentiles.iter().find(|p| same_q(p.q, q))
    }

    fn quantiles(&self) -> Vec<f64> {
        self.percentiles.iter().map(|p| p.q).collect()
    }
}

/// Two quantiles are the same setting (they come from files and TOML as decimals).
fn same_q(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

fn list_q(qs: &[f64]) -> String {
    if qs.is_empty() {
        return "none".into();
    }
    qs.iter()
        .map(|q| q.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

impl BatchPercentile {
    /// The mean over batches, per neuron.
    pub fn mean(&self) -> Vec<f64> {
        let n = self.batches.max(1) as f64;
        self.sum.iter().map(|s| s / n).collect()
    }
}

/// Per neuron, tokens whose gate pre-activation is above the language's mean per-batch
/// `q` quantile.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Exceedance {
    /// The quantile of the threshold.
    pub q: f64,
    /// Per neuron: tokens above the threshold.
    pub count: Vec<u64>,
    /// Tokens seen in this pass.
    pub tokens: u64,
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
        progress: impl FnMut(usize),
    ) -> Result<(), StatsError> {
        self.collect_pass(model, language, windows, batch_size, &[], device, progress)
    }

    /// As [`Self::collect`], and also accumulate each batch's `q` quantile per neuron
    /// ([`BatchPercentile`]).
    #[allow(clippy::too_many_arguments)]
    pub fn collect_with_percentile<B: Backend>(
        &mut self,
        model: &LlamaModel<B>,
        language: &str,
        windows: &[Vec<u32>],
        batch_size: usize,
        q: f64,
        device: &B::Device,
        progress: impl FnMut(usize),
    ) -> Result<(), StatsError> {
        self.collect_with_percentiles(model, language, windows, batch_size, &[q], device, progress)
    }

    /// As [`Self::collect`], and also accumulate each batch's quantile per neuron for every `q`
    /// of `quantiles` (one sort of each neuron's values per batch serves them all). A language
    /// collected before must be collected again with the same quantiles.
    #[allow(clippy::too_many_arguments)]
    pub fn collect_with_percentiles<B: Backend>(
        &mut self,
        model: &LlamaModel<B>,
        language: &str,
        windows: &[Vec<u32>],
        batch_size: usize,
        quantiles: &[f64],
        device: &B::Device,
        progress: impl FnMut(usize),
    ) -> Result<(), StatsError> {
        if let Some(q) = quantiles.iter().find(|q| !(**q > 0.0 && **q < 1.0)) {
            return Err(StatsError::Parameter(format!(
                "the percentile's quantile must be in (0, 1), got {q}"
            )));
        }
        let mut qs = quantiles.to_vec();
        qs.sort_by(f64::total_cmp);
        qs.dedup_by(|a, b| same_q(*a, *b));
        self.collect_pass(model, language, windows, batch_size, &qs, device, progress)
    }

    fn check_model<B: Backend>(&self, model: &LlamaModel<B>) -> Result<(), StatsError> {
        let found = model_fingerprint(model);
        if found != self.model {
            return Err(StatsError::OtherModel {
                expected: self.model.clone(),
                found,
            });
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn collect_pass<B: Backend>(
        &mut self,
        model: &LlamaModel<B>,
        language: &str,
        windows: &[Vec<u32>],
        batch_size: usize,
        quantiles: &[f64],
        device: &B::Device,
        mut progress: impl FnMut(usize),
    ) -> Result<(), StatsError> {
        self.check_model(model)?;
        let (n_layers, width) = (self.n_layers, self.width);
        let n = n_layers * width;
        let entry = self
            .languages
            .entry(language.to_string())
            .or_insert_with(|| LanguageStats {
                positive: vec![0; n],
                sum: vec![0.0; n],
                sum_sq: vec![0.0; n],
                ..LanguageStats::default()
            });
        if !quantiles.is_empty() {
            if entry.percentiles.is_empty() {
                entry.percentiles = quantiles
                    .iter()
                    .map(|&q| BatchPercentile {
                        q,
                        sum: vec![0.0; n],
                        batches: 0,
                    })
                    .collect();
            }
            let have = entry.quantiles();
            if have.len() != quantiles.len()
                || !have.iter().zip(quantiles).all(|(a, b)| same_q(*a, *b))
            {
                return Err(StatsError::Parameter(format!(
                    "language {language}: percentile statistics of q = {} cannot take q = {}",
                    list_q(&have),
                    list_q(quantiles)
                )));
            }
        }
        let mut done = 0;
        for batch in windows.chunks(batch_size.max(1)) {
            let input = models::token_ids::<B, _>(batch, device);
            // The quantiles' order statistics are sorted out on the device, inside each layer.
            let [b, t] = input.dims();
            let mut ctx = ForwardContext::eval().counting_quantiles(quantiles.to_vec());
            // Only the layers' statistics are needed: the final norm and LM head are skipped.
            let _ = model.hidden(input, None, None, &mut ctx);
            let stats = ctx.gate_statistics.take().expect("counting").to_host();
            entry.tokens += stats.tokens.round() as u64;
            for l in 0..n_layers {
                for j in 0..width {
                    let i = l * width + j;
                    entry.positive[i] += stats.positive[l][j].round() as u64;
                    entry.sum[i] += stats.sum[l][j] as f64;
                    entry.sum_sq[i] += stats.sum_sq[l][j] as f64;
                }
            }
            if !quantiles.is_empty() {
                for (l, order) in stats.order_statistics.iter().enumerate() {
                    for (k, p) in entry.percentiles.iter_mut().enumerate() {
                        let (low, high) = (&order[2 * k * width..], &order[(2 * k + 1) * width..]);
                        for j in 0..width {
                            p.sum[l * width + j] +=
                                quantile_from_order_statistics(p.q, b * t, low[j], high[j]);
                        }
                    }
                }
                for p in &mut entry.percentiles {
                    p.batches += 1;
                }
            }
            done += batch.len();
            progress(done);
        }
        Ok(())
    }

    /// The second pass of the percentile method: run `windows` again and count, per neuron, the
    /// tokens whose gate pre-activation is above `language`'s mean per-batch `q` percentile
    /// (which [`Self::collect_with_percentiles`] must have collected).
    #[allow(clippy::too_many_arguments)]
    pub fn collect_exceedance<B: Backend>(
        &mut self,
        model: &LlamaModel<B>,
        language: &str,
        windows: &[Vec<u32>],
        batch_size: usize,
        q: f64,
        device: &B::Device,
        mut progress: impl FnMut(usize),
    ) -> Result<(), StatsError> {
        self.check_model(model)?;
        let (n_layers, width) = (self.n_layers, self.width);
        let entry = self
            .languages
            .get_mut(language)
            .ok_or_else(|| StatsError::UnknownLanguage(language.into()))?;
        let percentile = entry.percentile(q).ok_or_else(|| {
            StatsError::Parameter(format!(
                "language {language}: no percentile statistics at q = {q} to count against \
                 (collected: q = {}; collect them first with this percentile)",
                list_q(&entry.quantiles())
            ))
        })?;
        let mean = percentile.mean();
        let thresholds: Vec<Tensor<B, 1>> = mean
            .chunks_exact(width)
            .map(|row| {
                let row: Vec<f32> = row.iter().map(|&v| v as f32).collect();
                Tensor::from_data(TensorData::new(row, [width]), device)
            })
            .collect();
        let ex = entry.exceedance.get_or_insert_with(|| Exceedance {
            q,
            count: vec![0; n_layers * width],
            tokens: 0,
        });
        if !same_q(ex.q, q) {
            return Err(StatsError::Parameter(format!(
                "language {language}: exceedance counts of q = {} cannot take q = {q}",
                ex.q
            )));
        }
        let mut done = 0;
        for batch in windows.chunks(batch_size.max(1)) {
            let input = models::token_ids::<B, _>(batch, device);
            let mut ctx = ForwardContext::eval().counting_above(thresholds.clone());
            let _ = model.hidden(input, None, None, &mut ctx);
            let stats = ctx.gate_statistics.expect("counting").to_host();
            ex.tokens += stats.tokens.round() as u64;
            for l in 0..n_layers {
                for j in 0..width {
                    ex.count[l * width + j] += stats.above[l][j].round() as u64;
                }
            }
            done += batch.len();
            progress(done);
        }
        Ok(())
    }

    /// Kojima et al.'s `on_p50` for `language`: run `windows` (the language's own texts) and
    /// keep, per neuron, the median over windows of its response, the window's mean gate
    /// pre-activation ([`window_responses`]; `np.percentile(q=50)`, linear interpolation, as
    /// `ExpertiseResult.build`). Replaces an earlier median of the language.
    pub fn collect_response_median<B: Backend>(
        &mut self,
        model: &LlamaModel<B>,
        language: &str,
        windows: &[Vec<u32>],
        batch_size: usize,
        device: &B::Device,
        progress: impl FnMut(usize),
    ) -> Result<(), StatsError> {
        self.check_model(model)?;
        if windows.is_empty() {
            return Err(StatsError::Parameter(format!(
                "language {language}: no windows for the median response"
            )));
        }
        let n = self.n_layers * self.width;
        let responses = window_responses(model, windows, batch_size, device, progress);
        let mut column = vec![0f32; responses.len()];
        let median = (0..n)
            .map(|i| {
                for (c, r) in column.iter_mut().zip(&responses) {
                    *c = r[i];
                }
                column.sort_unstable_by(f32::total_cmp);
                quantile_linear(&column, 0.5)
            })
            .collect();
        let entry = self
            .languages
            .get_mut(language)
            .ok_or_else(|| StatsError::UnknownLanguage(language.into()))?;
        entry.response_median = Some(median);
        Ok(())
    }

    /// Kojima et al.'s `on_p50` of `language` (see [`Self::collect_response_median`]).
    pub fn response_median(&self, language: &str) -> Result<Vec<f64>, StatsError> {
        self.language(language)?
            .response_median
            .clone()
            .ok_or_else(|| {
                StatsError::Parameter(format!(
                    "language {language}: no median responses (on_p50); collect them first"
                ))
            })
    }

    /// Mondal et al.'s `act_prob_90p` (for q = 0.9) of `languages` (all, in name order, when
    /// empty): the fraction of tokens above the language's own mean per-batch percentile, for
    /// [`crate::selection::top_per_language`].
    pub fn exceedance_probabilities(
        &self,
        languages: &[String],
    ) -> Result<LanguageTable, StatsError> {
        let names = self.names(languages);
        let mut counts = Vec::new();
        let mut tokens = Vec::new();
        for name in &names {
            let ex = self.language(name)?.exceedance.as_ref().ok_or_else(|| {
                StatsError::Parameter(format!(
                    "language {name}: no exceedance counts (run the second pass)"
                ))
            })?;
            counts.push(ex.count.clone());
            tokens.push(ex.tokens);
        }
        self.table(names, &counts, &tokens)
    }

    fn names(&self, languages: &[String]) -> Vec<String> {
        if languages.is_empty() {
            self.languages.keys().cloned().collect()
        } else {
            languages.to_vec()
        }
    }

    fn language(&self, name: &str) -> Result<&LanguageStats, StatsError> {
        self.languages
            .get(name)
            .ok_or_else(|| StatsError::UnknownLanguage(name.to_string()))
    }

    fn table(
        &self,
        names: Vec<String>,
        counts: &[Vec<u64>],
        tokens: &[u64],
    ) -> Result<LanguageTable, StatsError> {
        LanguageTable::probabilities(names, self.n_layers, self.width, counts, tokens)
            .map_err(|e: SelectionError| StatsError::Parameter(e.to_string()))
    }

    /// Add `other`'s counts (another shard of the corpus) to these. Percentile sums of the same
    /// `q` add up (the mean over batches stays a mean over all batches); so do exceedance counts,
    /// which are only meaningful when both shards counted against the same (merged) thresholds.
    pub fn merge(&mut self, other: &Self) -> Result<(), StatsError> {
        if other.model != self.model || (other.n_layers, other.width) != (self.n_layers, self.width)
        {
            return Err(StatsError::OtherModel {
                expected: self.model.clone(),
                found: other.model.clone(),
            });
        }
        for (lang, theirs) in &other.languages {
            let Some(ours) = self.languages.get_mut(lang) else {
                self.languages.insert(lang.clone(), theirs.clone());
                continue;
            };
            let mismatch = |what: &str| {
                StatsError::Parameter(format!(
                    "language {lang}: cannot merge: the {what} statistics differ (one shard has \
                     none, or another quantile)"
                ))
            };
            let (a, b) = (ours.quantiles(), theirs.quantiles());
            if a.len() != b.len() || !a.iter().zip(&b).all(|(x, y)| same_q(*x, *y)) {
                return Err(mismatch("percentile"));
            }
            for (a, b) in ours.percentiles.iter_mut().zip(&theirs.percentiles) {
                add_all(&mut a.sum, &b.sum);
                a.batches += b.batches;
            }
            if ours.response_median.is_some() || theirs.response_median.is_some() {
                return Err(StatsError::Parameter(format!(
                    "language {lang}: cannot merge median responses (medians do not add up); \
                     merge the shards first, then collect them"
                )));
            }
            match (&mut ours.exceedance, &theirs.exceedance) {
                (None, None) => {}
                (Some(a), Some(b)) if a.q == b.q => {
                    add_all(&mut a.count, &b.count);
                    a.tokens += b.tokens;
                }
                _ => return Err(mismatch("exceedance")),
            }
            ours.tokens += theirs.tokens;
            add_all(&mut ours.positive, &theirs.positive);
            add_all(&mut ours.sum, &theirs.sum);
            add_all(&mut ours.sum_sq, &theirs.sum_sq);
        }
        Ok(())
    }

    /// Activation probabilities `positive / tokens` of `languages` (all, in name order, when
    /// empty), for [`crate::selection::lape`].
    pub fn probabilities(&self, languages: &[String]) -> Result<LanguageTable, StatsError> {
        let names = self.names(languages);
        let mut counts = Vec::new();
        let mut tokens = Vec::new();
        for name in &names {
            let s = self.language(name)?;
            counts.push(s.positive.clone());
            tokens.push(s.tokens);
        }
        self.table(names, &counts, &tokens)
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

    /// Per-neuron mean over batches of the per-batch `q` quantile of the gate pre-activation for
    /// `language` (Mondal et al.'s `mean_p90_act` for q = 0.9).
    pub fn mean_percentile(&self, language: &str, q: f64) -> Result<Vec<f64>, StatsError> {
        let s = self.language(language)?;
        let p = s.percentile(q).ok_or_else(|| {
            StatsError::Parameter(format!(
                "language {language}: no mean per-batch percentile at q = {q} (collected: q = {})",
                list_q(&s.quantiles())
            ))
        })?;
        Ok(p.mean())
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
                let mut v = serde_json::json!({
                    "tokens": s.tokens, "positive": s.positive, "sum": s.sum, "sum_sq": s.sum_sq,
                });
                if !s.percentiles.is_empty() {
                    v["percentiles"] = s
                        .percentiles
                        .iter()
                        .map(|p| serde_json::json!({"q": p.q, "sum": p.sum, "batches": p.batches}))
                        .collect();
                }
                if let Some(e) = &s.exceedance {
                    v["exceedance"] =
                        serde_json::json!({"q": e.q, "count": e.count, "tokens": e.tokens});
                }
                if let Some(m) = &s.response_median {
                    v["response_median"] = serde_json::json!(m);
                }
                (k.clone(), v)
            })
            .collect();
        let v = serde_json::json!({
            "format": "neuronlab activation statistics 1",
            "model": self.model, "n_layers": self.n_layers, "width": self.width,
            "languages": languages,
        });
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        let tmp = path.with_extension(format!("{ext}.{}.tmp", std::process::id()));
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
            let field = |value: &serde_json::Value, k: &str| -> Result<Vec<f64>, StatsError> {
                let values: Vec<f64> = serde_json::from_value(value[k].clone())
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
            let number = |value: &serde_json::Value, k: &str| {
                value[k]
                    .as_f64()
                    .ok_or_else(|| err(format!("language {lang}: missing {k}")))
            };
            let counts = |values: Vec<f64>| values.iter().map(|&c| c as u64).collect();
            // `percentiles` (a list); files written before several quantiles existed hold one
            // `percentile`.
            let listed: Vec<&serde_json::Value> = match (s.get("percentiles"), s.get("percentile"))
            {
                (Some(list), _) => list
                    .as_array()
                    .ok_or_else(|| err(format!("language {lang}: percentiles is not a list")))?
                    .iter()
                    .collect(),
                (None, Some(one)) => vec![one],
                (None, None) => Vec::new(),
            };
            let mut percentiles = listed
                .into_iter()
                .map(|p| {
                    Ok(BatchPercentile {
                        q: number(p, "q")?,
                        sum: field(p, "sum")?,
                        batches: number(p, "batches")? as u64,
                    })
                })
                .collect::<Result<Vec<_>, StatsError>>()?;
            percentiles.sort_by(|a, b| a.q.total_cmp(&b.q));
            let exceedance = match s.get("exceedance") {
                None => None,
                Some(e) => Some(Exceedance {
                    q: number(e, "q")?,
                    count: counts(field(e, "count")?),
                    tokens: number(e, "tokens")? as u64,
                }),
            };
            languages.insert(
                lang.clone(),
                LanguageStats {
                    tokens: number(s, "tokens")? as u64,
                    positive: counts(field(s, "positive")?),
                    sum: field(s, "sum")?,
                    sum_sq: field(s, "sum_sq")?,
                    percentiles,
                    exceedance,
                    response_median: match s.get("response_median") {
                        None => None,
                        Some(_) => Some(field(s, "response_median")?),
                    },
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

/// Kojima et al.'s responses: for each window, the mean of every gate pre-activation over the
/// window's tokens (`n_layers · width` values, layer-major), for
/// [`crate::selection::average_precision_sets`].
pub fn window_responses<B: Backend>(
    model: &LlamaModel<B>,
    windows: &[Vec<u32>],
    batch_size: usize,
    device: &B::Device,
    mut progress: impl FnMut(usize),
) -> Vec<Vec<f32>> {
    let (n_layers, width) = (model.num_layers(), model.intermediate_size());
    let mut out = Vec::with_capacity(windows.len());
    for batch in windows.chunks(batch_size.max(1)) {
        let input = models::token_ids::<B, _>(batch, device);
        let mut ctx = ForwardContext::eval().recording_gate();
        let _ = model.hidden(input, None, None, &mut ctx);
        let mut rows = vec![Vec::with_capacity(n_layers * width); batch.len()];
        for gate in ctx.gate_preactivations {
            let [b, _, w] = gate.dims();
            let means = gate
                .mean_dim(1)
                .reshape([b, w])
                .into_data()
                .convert::<f32>()
                .into_vec::<f32>()
                .expect("f32 activations");
            for (row, m) in rows.iter_mut().zip(means.chunks_exact(w)) {
                row.extend_from_slice(m);
            }
        }
        out.extend(rows);
        progress(out.len());
    }
    out
}

fn add_all<T: Copy + std::ops::AddAssign>(ours: &mut [T], theirs: &[T]) {
    for (a, &b) in ours.iter_mut().zip(theirs) {
        *a += b;
    }
}
