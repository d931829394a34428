//! Interventions on language-specific neurons and the perplexity-change matrices.
//!
//! A language's neurons are set, after SiLU and at every position, to zero, a constant, or a
//! per-neuron statistic of that language (its mean gate pre-activation, or the mean over batches
//! of a per-batch percentile of it; Mondal et al. write these pre-activation statistics into the
//! post-SiLU tensor, and so does this module). Then each
//! language's held-out windows are scored:
//!
//! - `nll_change[i][j]` = mean NLL of language `j` with language `i`'s neurons replaced − the clean
//!   mean NLL (Tang et al.'s `ppl.py` prints the mean NLL);
//! - `ppl_change[i][j]` = the same in perplexity, `exp(mean NLL)` (Mondal et al.'s PPXC).
//!
//! The mean NLL is over every predicted token of the held-out windows (windows of one length, so
//! this is also the mean of the per-window means that Tang et al. take).

use std::collections::BTreeMap;

use ablation::NeuronSet;
use burn::prelude::*;
use models::{ForwardContext, LlamaModel, ReplaceAt, ReplaceWith, windows_nll};

use crate::stats::{ActivationStats, StatsError};

/// What replaced neurons become.
#[derive(Debug, Clone, PartialEq)]
pub enum InterventionValue {
    /// 0 (deactivation, as Tang et al.).
    Zero,
    /// A constant (Mondal et al. try ±1 and ±10).
    Constant(f32),
    /// The language's mean gate pre-activation per neuron (Mondal et al.'s `mean_mu_act`).
    Mean,
    /// The language's mean over batches of the per-batch `q` quantile of each neuron's gate
    /// pre-activation (Mondal et al.'s `mean_p75_act`, `mean_p90_act`, `mean_p95_act`;
    /// [`ActivationStats::mean_percentile`]).
    MeanPercentile(f64),
    /// Kojima et al.'s `on_p50`: the median over the language's windows of each neuron's
    /// response, its gate pre-activation averaged over the window's tokens
    /// ([`ActivationStats::collect_response_median`]). Kojima et al. force it at the gate's
    /// linear output ([`ReplaceAt::Gate`]).
    OnMedian,
}

impl InterventionValue {
    /// Parse `zero`, `mean`, `mean_p<NN>` (NN a percent from 1 to 99: `mean_p90` is q = 0.9),
    /// `on_p50` or a number.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "zero" => Some(Self::Zero),
            "mean" => Some(Self::Mean),
            "on_p50" => Some(Self::OnMedian),
            _ => match text.strip_prefix("mean_p") {
                Some(pct) if pct.bytes().all(|b| b.is_ascii_digit()) => match pct.parse::<u32>() {
                    Ok(p @ 1..=99) => Some(Self::MeanPercentile(f64::from(p) / 100.0)),
                    _ => None,
                },
                Some(_) => None,
                None => text.parse().ok().map(Self::Constant),
            },
        }
    }

    /// Whether the value is a statistic of the language's activations (needs statistics).
    pub fn needs_statistics(&self) -> bool {
        matches!(self, Self::Mean | Self::MeanPercentile(_) | Self::OnMedian)
    }
}

/// A forward context that replaces the neurons of `set` (every layer) with `value`; `stats` and
/// `language` supply per-neuron values for [`InterventionValue::Mean`] and
/// [`InterventionValue::MeanPercentile`].
pub fn intervention_context<B: Backend>(
    set: &NeuronSet,
    n_layers: usize,
    width: usize,
    value: &InterventionValue,
    stats: Option<(&ActivationStats, &str)>,
    device: &B::Device,
) -> Result<ForwardContext<B>, StatsError> {
    intervention_context_at(
        set,
        n_layers,
        width,
        value,
        stats,
        ReplaceAt::Activation,
        device,
    )
}

/// As [`intervention_context`], replacing the neurons at `at`: after the activation (Tang et
/// al., Mondal et al.) or at the gate's linear output (Kojima et al.).
pub fn intervention_context_at<B: Backend>(
    set: &NeuronSet,
    n_layers: usize,
    width: usize,
    value: &InterventionValue,
    stats: Option<(&ActivationStats, &str)>,
    at: ReplaceAt,
    device: &B::Device,
) -> Result<ForwardContext<B>, StatsError> {
    let mean = match (value, stats) {
        (InterventionValue::Mean, Some((stats, language))) => Some(stats.mean_std(language)?.0),
        (InterventionValue::MeanPercentile(q), Some((stats, language))) => {
            Some(stats.mean_percentile(language, *q)?)
        }
        (InterventionValue::OnMedian, Some((stats, language))) => {
            Some(stats.response_median(language)?)
        }
        (v, None) if v.needs_statistics() => {
            return Err(StatsError::UnknownLanguage(
                "(none given for a statistic-valued intervention)".into(),
            ));
        }
        _ => None,
    };
    let mut ctx = ForwardContext::eval();
    for layer in 0..n_layers {
        let neurons: Vec<usize> = set
            .rows()
            .iter()
            .filter(|r| r.layer == layer)
            .map(|r| r.neuron)
            .collect();
        if neurons.is_empty() {
            continue;
        }
        let with = match value {
            InterventionValue::Zero => ReplaceWith::Zero,
            InterventionValue::Constant(c) => ReplaceWith::Constant(*c),
            InterventionValue::Mean
            | InterventionValue::MeanPercentile(_)
            | InterventionValue::OnMedian => {
                let mean = mean.as_ref().expect("computed above");
                ReplaceWith::PerNeuron(
                    neurons
                        .iter()
                        .map(|&j| mean[layer * width + j] as f32)
                        .collect(),
                )
            }
        };
        ctx.replace_neurons_at(layer, width, &neurons, &with, at, device);
    }
    Ok(ctx)
}

/// Mean NLL of `windows` under `model` with `ctx`'s interventions, in batches.
pub fn mean_nll<B: Backend>(
    model: &LlamaModel<B>,
    windows: &[Vec<u32>],
    batch_size: usize,
    ctx: &mut ForwardContext<B>,
    device: &B::Device,
) -> f64 {
    let (mut total, mut count) = (0.0, 0usize);
    for batch in windows.chunks(batch_size.max(1)) {
        let (nll, n) = windows_nll(model, batch, ctx, device);
        total += nll;
        count += n;
    }
    total / count.max(1) as f64
}

/// The perplexity-change study: clean and intervened mean NLL per (ablated, evaluated) language.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeMatrix {
    /// Languages, in row and column order.
    pub languages: Vec<String>,
    /// Clean mean NLL per evaluated language.
    pub clean_nll: Vec<f64>,
    /// `nll[i][j]`: mean NLL of language `j` with language `i`'s neurons replaced.
    pub nll: Vec<Vec<f64>>,
}

impl ChangeMatrix {
    /// Run the study: `held_out[j]` are language `j`'s windows, `sets` each language's neurons
    /// (a language without a set is a row of no change).
    #[allow(clippy::too_many_arguments)]
    pub fn compute<B: Backend>(
        model: &LlamaModel<B>,
        held_out: &[(String, Vec<Vec<u32>>)],
        sets: &BTreeMap<String, NeuronSet>,
        value: &InterventionValue,
        stats: Option<&ActivationStats>,
        batch_size: usize,
        device: &B::Device,
        mut progress: impl FnMut(&str),
    ) -> Result<Self, StatsError> {
        let clean = Self::clean(model, held_out, batch_size, device);
        progress("clean");
        Self::with_clean(
            model, held_out, clean, sets, value, stats, batch_size, device, progress,
        )
    }

    /// The clean mean NLL of each language's windows.
    pub fn clean<B: Backend>(
        model: &LlamaModel<B>,
        held_out: &[(String, Vec<Vec<u32>>)],
        batch_size: usize,
        device: &B::Device,
    ) -> Vec<f64> {
        held_out
            .iter()
            .map(|(_, w)| mean_nll(model, w, batch_size, &mut ForwardContext::eval(), device))
            .collect()
    }

    /// As [`Self::compute`], with the clean NLLs already known (a control study on the same
    /// windows need not score them again).
    #[allow(clippy::too_many_arguments)]
    pub fn with_clean<B: Backend>(
        model: &LlamaModel<B>,
        held_out: &[(String, Vec<Vec<u32>>)],
        clean_nll: Vec<f64>,
        sets: &BTreeMap<String, NeuronSet>,
        value: &InterventionValue,
        stats: Option<&ActivationStats>,
        batch_size: usize,
        device: &B::Device,
        progress: impl FnMut(&str),
    ) -> Result<Self, StatsError> {
        Self::with_clean_at(
            model,
            held_out,
            clean_nll,
            sets,
            value,
            stats,
            ReplaceAt::Activation,
            batch_size,
            device,
            progress,
        )
    }

    /// As [`Self::with_clean`], replacing the neurons at `at` ([`intervention_context_at`]).
    #[allow(clippy::too_many_arguments)]
    pub fn with_clean_at<B: Backend>(
        model: &LlamaModel<B>,
        held_out: &[(String, Vec<Vec<u32>>)],
        clean_nll: Vec<f64>,
        sets: &BTreeMap<String, NeuronSet>,
        value: &InterventionValue,
        stats: Option<&ActivationStats>,
        at: ReplaceAt,
        batch_size: usize,
        device: &B::Device,
        mut progress: impl FnMut(&str),
    ) -> Result<Self, StatsError> {
        let (n_layers, width) = (model.num_layers(), model.intermediate_size());
        let languages: Vec<String> = held_out.iter().map(|(l, _)| l.clone()).collect();
        let mut nll = Vec::with_capacity(languages.len());
        for ablated in &languages {
            let row = match sets.get(ablated) {
                Some(set) if !set.is_empty() => {
                    // One context serves every evaluated language (it only replaces neurons).
                    let mut ctx = intervention_context_at::<B>(
                        set,
                        n_layers,
                        width,
                        value,
                        stats.map(|s| (s, ablated.as_str())),
                        at,
                        device,
                    )?;
                    held_out
                        .iter()
                        .map(|(_, windows)| mean_nll(model, windows, batch_size, &mut ctx, device))
                        .collect()
                }
                _ => clean_nll.clone(),
            };
            nll.push(row);
            progress(ablated);
        }
        Ok(Self {
            languages,
            clean_nll,
            nll,
        })
    }

    /// `nll[i][j] − clean_nll[j]`.
    pub fn nll_change(&self) -> Vec<Vec<f64>> {
        self.nll
            .iter()
            .map(|row| {
                row.iter()
                    .zip(&self.clean_nll)
                    .map(|(a, c)| a - c)
                    .collect()
            })
            .collect()
    }

    /// `exp(nll[i][j]) − exp(clean_nll[j])`.
    pub fn ppl_change(&self) -> Vec<Vec<f64>> {
        self.nll
            .iter()
            .map(|row| {
                row.iter()
                    .zip(&self.clean_nll)
                    .map(|(a, c)| a.exp() - c.exp())
                    .collect()
            })
            .collect()
    }

    /// A matrix as CSV: a header `ablated,<languages…>`, then one row per ablated language.
    pub fn to_csv(&self, matrix: &[Vec<f64>]) -> String {
        let mut out = format!("ablated,{}\n", self.languages.join(","));
        for (lang, row) in self.languages.iter().zip(matrix) {
            let cells: Vec<String> = row.iter().map(|v| format!("{v:.6}")).collect();
            out.push_str(&format!("{lang},{}\n", cells.join(",")));
        }
        out
    }
}
