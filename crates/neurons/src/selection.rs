//! Choosing language-specific neurons from per-language activation statistics: LAPE as Tang et
//! al. and as Mondal et al. compute it, Mondal et al.'s per-language top-k by activation
//! probability, and Kojima et al.'s average-precision ranking.
//!
//! Each follows its official code (`../shared/research/lape.md` §1.3, §2.2–2.4), checked against
//! a NumPy re-implementation (`tests/fixtures/lape/make_lape_fixture.py`). Counts such as
//! `round(0.01 · L · I)` use Python's `round` (half to even), as the official scripts do.

use std::collections::BTreeMap;

use ablation::{NeuronRow, NeuronSet};

/// Why a selection could not be made.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SelectionError {
    /// The inputs do not fit together.
    #[error("{0}")]
    Shape(String),
    /// A parameter is out of range.
    #[error("{name} = {value}: {expected}")]
    Parameter {
        /// The parameter.
        name: &'static str,
        /// Its value.
        value: f64,
        /// What it must be.
        expected: &'static str,
    },
}

/// Per-language values over every FFN neuron: `values[k][l · width + j]` for language `k`,
/// layer `l`, neuron `j` (activation probabilities, or any per-neuron score).
#[derive(Debug, Clone, PartialEq)]
pub struct LanguageTable {
    /// Language codes, in the order of `values`.
    pub languages: Vec<String>,
    /// Layers.
    pub n_layers: usize,
    /// Neurons per layer.
    pub width: usize,
    /// One row of `n_layers · width` values per language.
    pub values: Vec<Vec<f32>>,
}

impl LanguageTable {
    /// A table, checking that every language has `n_layers · width` values.
    pub fn new(
        languages: Vec<String>,
        n_layers: usize,
        width: usize,
        values: Vec<Vec<f32>>,
    ) -> Result<Self, SelectionError> {
        if languages.len() != values.len() || languages.is_empty() {
            return Err(SelectionError::Shape(format!(
                "{} languages but {} rows of values",
                languages.len(),
                values.len()
            )));
        }
        for (lang, row) in languages.iter().zip(&values) {
            if row.len() != n_layers * width {
                return Err(SelectionError::Shape(format!(
                    "language {lang}: {} values, expected {n_layers} layers × {width} neurons",
                    row.len()
                )));
            }
        }
        Ok(Self {
            languages,
            n_layers,
            width,
            values,
        })
    }

    /// Activation probabilities `count / n_tokens` in f32, as `over_zero / n` in Tang et al.'s
    /// `identify.py`. `counts[k]` holds language `k`'s counts of positive activations per neuron.
    pub fn probabilities(
        languages: Vec<String>,
        n_layers: usize,
        width: usize,
        counts: &[Vec<u64>],
        n_tokens: &[u64],
    ) -> Result<Self, SelectionError> {
        if counts.len() != n_tokens.len() {
            return Err(SelectionError::Shape(format!(
                "{} count rows but {} token totals",
                counts.len(),
                n_tokens.len()
            )));
        }
        let mut values = Vec::with_capacity(counts.len());
        for (k, (row, &n)) in counts.iter().zip(n_tokens).enumerate() {
            if n == 0 {
                return Err(SelectionError::Shape(format!(
                    "language {}: no tokens counted",
                    languages.get(k).map_or("?", String::as_str)
                )));
            }
            values.push(row.iter().map(|&c| c as f32 / n as f32).collect());
        }
        Self::new(languages, n_layers, width, values)
    }

    fn neurons(&self) -> usize {
        self.n_layers * self.width
    }
}

/// Python's `round` (half to even) of a non-negative float, as a count: 2.5 → 2, 3.5 → 4.
pub fn py_round(x: f64) -> usize {
    let floor = x.floor();
    let v = if x - floor == 0.5 {
        if floor % 2.0 == 0.0 {
            floor
        } else {
            floor + 1.0
        }
    } else {
        x.round()
    };
    v.max(0.0) as usize
}

/// Which official code a LAPE selection follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LapeVariant {
    /// Tang et al. (`identify.py`): threshold = the k-th smallest probability, k =
    /// round(filter_rate · N); entropy of the normalised probabilities with 0 where all are 0;
    /// exactly round(top_rate · L · I) neurons, ties broken by flat index (layer, then neuron).
    #[default]
    Tang,
    /// Mondal et al. (`_get_lape_neurons`): threshold = the linearly interpolated
    /// filter_rate quantile; ε-smoothed normalisation and entropy (ε = 1e-10); every neuron with
    /// entropy ≤ the m-th smallest is kept (ties can give more than m).
    Mondal,
}

/// LAPE parameters (defaults: the released sets' 0.01 / 0.95 / 0.95).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LapeConfig {
    /// Which official code to follow.
    pub variant: LapeVariant,
    /// Fraction of all FFN neurons kept (lowest entropy).
    pub top_rate: f64,
    /// Quantile of all probabilities a neuron must exceed in some language to be considered.
    pub filter_rate: f64,
    /// Quantile a kept neuron's probability must exceed for a language to get it (Tang's
    /// `activation_bar_ratio`; Mondal uses the filter threshold).
    pub activation_bar_ratio: f64,
}

impl Default for LapeConfig {
    fn default() -> Self {
        Self {
            variant: LapeVariant::Tang,
            top_rate: 0.01,
            filter_rate: 0.95,
            activation_bar_ratio: 0.95,
        }
    }
}

/// The result of [`lape`].
#[derive(Debug, Clone, PartialEq)]
pub struct LapeSelection {
    /// The probability a neuron must exceed in some language to be considered.
    pub threshold: f64,
    /// The probability a kept neuron must exceed for a language to get it.
    pub activation_bar: f64,
    /// The number of neurons asked for, round(top_rate · L · I).
    pub m: usize,
    /// LAPE (entropy) per neuron, `[layer · width + neuron]`; +inf for neurons filtered out.
    pub entropy: Vec<f64>,
    /// The kept neurons `(layer, neuron)`, sorted.
    pub selected: Vec<(usize, usize)>,
    /// Per language, its neurons with their entropy as score; a neuron can belong to several
    /// languages. Every language is present, possibly empty.
    pub sets: BTreeMap<String, NeuronSet>,
}

/// Language activation probability entropy (Tang et al. 2024), as `config.variant`'s official
/// code computes it from activation probabilities.
pub fn lape(probs: &LanguageTable, config: &LapeConfig) -> Result<LapeSelection, SelectionError> {
    for (name, value) in [
        ("top_rate", config.top_rate),
        ("filter_rate", config.filter_rate),
        ("activation_bar_ratio", config.activation_bar_ratio),
    ] {
        if !(value > 0.0 && value <= 1.0) {
            return Err(SelectionError::Parameter {
                name,
                value,
                expected: "must be in (0, 1]",
            });
        }
    }
    let n = probs.neurons();
    let k = probs.languages.len();
    let mut pooled: Vec<f32> = probs.values.iter().flatten().copied().collect();
    pooled.sort_by(f32::total_cmp);
    let kth = |ratio: f64| -> f64 {
        let idx = py_round(pooled.len() as f64 * ratio).clamp(1, pooled.len());
        pooled[idx - 1] as f64
    };
    let (threshold, activation_bar) = match config.variant {
        LapeVariant::Tang => (kth(config.filter_rate), kth(config.activation_bar_ratio)),
        LapeVariant::Mondal => {
            let t = quantile_linear(&pooled, config.filter_rate);
            (t, t)
        }
    };
    let mut entropy = vec![0f64; n];
    for (i, e) in entropy.iter_mut().enumerate() {
        let p: Vec<f64> = (0..k).map(|lang| probs.values[lang][i] as f64).collect();
        let sum: f64 = p.iter().sum();
        *e = match config.variant {
            LapeVariant::Tang => {
                if sum > 0.0 {
                    -p.iter()
                        .map(|&x| x / sum)
                        .filter(|&q| q > 0.0)
                        .map(|q| q * q.ln())
                        .sum::<f64>()
                } else {
                    0.0
                }
            }
            LapeVariant::Mondal => {
                let eps = 1e-10;
                -p.iter()
                    .map(|&x| {
                        let q = x / (sum + eps);
                        q * (q + eps).ln()
                    })
                    .sum::<f64>()
            }
        };
        if !p.iter().any(|&x| x > threshold) {
            *e = f64::INFINITY;
        }
    }
    let m = py_round(config.top_rate * n as f64).min(n);
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| entropy[a].total_cmp(&entropy[b]).then(a.cmp(&b)));
    let mut kept: Vec<usize> = match config.variant {
        LapeVariant::Tang => order[..m].to_vec(),
        LapeVariant::Mondal => match m.checked_sub(1).map(|i| entropy[order[i]]) {
            Some(cutoff) => (0..n).filter(|&i| entropy[i] <= cutoff).collect(),
            None => Vec::new(),
        },
    };
    kept.sort_unstable();
    let mut sets = BTreeMap::new();
    for (lang, name) in probs.languages.iter().enumerate() {
        let rows = kept
            .iter()
            .filter(|&&i| (probs.values[lang][i] as f64) > activation_bar)
            .map(|&i| NeuronRow {
                layer: i / probs.width,
                neuron: i % probs.width,
                language: Some(name.clone()),
                score: Some(entropy[i]),
            });
        sets.insert(name.clone(), NeuronSet::from_rows(rows));
    }
    Ok(LapeSelection {
        threshold,
        activation_bar,
        m,
        selected: kept
            .iter()
            .map(|&i| (i / probs.width, i % probs.width))
            .collect(),
        entropy,
        sets,
    })
}

/// The `q` quantile of sorted values with linear interpolation (NumPy's and `torch.quantile`'s
/// default).
pub fn quantile_linear(sorted: &[f32], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = q * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    let frac = pos - lo as f64;
    sorted[lo] as f64 + frac * (sorted[hi] as f64 - sorted[lo] as f64)
}

/// Mondal et al.'s per-language selection (`_get_set_indep_neurons`): for each language the
/// round(rate · L · I) neurons with the highest score (ties broken by flat index), with the
/// score kept. Languages are independent, so sets may overlap. Mondal et al. use rate 0.00125
/// and the score P(gate > the language's mean per-batch 90th percentile).
pub fn top_per_language(
    scores: &LanguageTable,
    rate: f64,
) -> Result<BTreeMap<String, NeuronSet>, SelectionError> {
    if !(rate > 0.0 && rate <= 1.0) {
        return Err(SelectionError::Parameter {
            name: "rate",
            value: rate,
            expected: "must be in (0, 1]",
        });
    }
    let n = scores.neurons();
    let m = py_round(rate * n as f64).min(n);
    let mut out = BTreeMap::new();
    for (lang, name) in scores.languages.iter().enumerate() {
        let s = &scores.values[lang];
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| s[b].total_cmp(&s[a]).then(a.cmp(&b)));
        let rows = order[..m].iter().map(|&i| NeuronRow {
            layer: i / scores.width,
            neuron: i % scores.width,
            language: Some(name.clone()),
            score: Some(s[i] as f64),
        });
        out.insert(name.clone(), NeuronSet::from_rows(rows));
    }
    Ok(out)
}

/// Average precision of `scores` for the positives in `labels`, as
/// `sklearn.metrics.average_precision_score`: `Σ_n (R_n − R_{n−1}) P_n` over the distinct score
/// thresholds in decreasing order (tied scores enter together). `None` without positives.
pub fn average_precision(labels: &[bool], scores: &[f64]) -> Option<f64> {
    assert_eq!(labels.len(), scores.len(), "one label per score");
    let positives = labels.iter().filter(|&&l| l).count();
    if positives == 0 {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let (mut tp, mut fp) = (0usize, 0usize);
    let mut ap = 0.0;
    let mut prev_recall = 0.0;
    let mut i = 0;
    while i < order.len() {
        let s = scores[order[i]];
        while i < order.len() && scores[order[i]] == s {
            if labels[order[i]] {
                tp += 1;
            } else {
                fp += 1;
            }
            i += 1;
        }
        let recall = tp as f64 / positives as f64;
        let precision = tp as f64 / (tp + fp) as f64;
        ap += (recall - prev_recall) * precision;
        prev_recall = recall;
    }
    Some(ap)
}

/// Kojima et al.'s expert units: the `n` units with the highest average precision and the `n`
/// with the lowest (`make_limited_expert.py`, N = 1000 each in the paper), ties broken by index.
/// Returns `(top, bottom)`, each in rank order.
pub fn top_and_bottom(ap: &[f64], n: usize) -> (Vec<usize>, Vec<usize>) {
    let mut order: Vec<usize> = (0..ap.len()).collect();
    order.sort_by(|&a, &b| ap[b].total_cmp(&ap[a]).then(a.cmp(&b)));
    let top = order[..n.min(order.len())].to_vec();
    order.sort_by(|&a, &b| ap[a].total_cmp(&ap[b]).then(a.cmp(&b)));
    let bottom = order[..n.min(order.len())].to_vec();
    (top, bottom)
}

/// Kojima et al.'s expert units for every language: each text's response per unit (the mean
/// of the unit's output over the text's tokens), the average precision of those responses at
/// telling the language's texts from the others', and the `n` units with the highest and the
/// `n` with the lowest AP (both, as `expertise_limited_2000_both`), with the AP as score.
///
/// `responses[k]` holds language `k`'s texts, each `n_layers · width` responses. Kojima et al.
/// score every linear layer's outputs on single sentences; a study here scores the FFN gate
/// neurons (the units the other methods choose among) on the texts it is given.
pub fn average_precision_sets(
    languages: &[String],
    responses: &[Vec<Vec<f32>>],
    n_layers: usize,
    width: usize,
    n: usize,
) -> Result<BTreeMap<String, NeuronSet>, SelectionError> {
    let units = n_layers * width;
    if languages.len() != responses.len() || languages.len() < 2 {
        return Err(SelectionError::Shape(format!(
            "average precision needs texts of at least 2 languages ({} names, {} groups of texts)",
            languages.len(),
            responses.len()
        )));
    }
    for (lang, texts) in languages.iter().zip(responses) {
        if texts.is_empty() || texts.iter().any(|t| t.len() != units) {
            return Err(SelectionError::Shape(format!(
                "language {lang}: every text needs {units} responses, and there must be one text"
            )));
        }
    }
    let owner: Vec<usize> = responses
        .iter()
        .enumerate()
        .flat_map(|(k, texts)| std::iter::repeat_n(k, texts.len()))
        .collect();
    let all: Vec<&Vec<f32>> = responses.iter().flatten().collect();
    // ap[k][u]
    let mut ap = vec![vec![0.0; units]; languages.len()];
    let mut scores = vec![0.0; all.len()];
    for u in 0..units {
        for (s, text) in scores.iter_mut().zip(&all) {
            *s = text[u] as f64;
        }
        for (k, row) in ap.iter_mut().enumerate() {
            let labels: Vec<bool> = owner.iter().map(|&o| o == k).collect();
            row[u] = average_precision(&labels, &scores).expect("every language has a text");
        }
    }
    let mut out = BTreeMap::new();
    for (k, lang) in languages.iter().enumerate() {
        let (top, bottom) = top_and_bottom(&ap[k], n);
        let rows = top.iter().chain(&bottom).map(|&i| NeuronRow {
            layer: i / width,
            neuron: i % width,
            language: Some(lang.clone()),
            score: Some(ap[k][i]),
        });
        out.insert(lang.clone(), NeuronSet::from_rows(rows));
    }
    Ok(out)
}
