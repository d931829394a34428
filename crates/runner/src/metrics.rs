//! Evaluation metrics of the classification tasks, as GLUE (and HF `evaluate`'s `glue`) defines
//! them: accuracy, binary F1 of class 1, Matthews correlation (CoLA), Pearson and Spearman
//! correlation (STS-B). Checked against NumPy in `tests/fixtures/metrics.json`
//! (`tests/fixtures/make_metric_fixtures.py`).

use std::collections::BTreeMap;

/// Fraction of predictions equal to the labels (0 for no examples).
pub fn accuracy(pred: &[usize], gold: &[usize]) -> f64 {
    assert_eq!(pred.len(), gold.len());
    if pred.is_empty() {
        return 0.0;
    }
    pred.iter().zip(gold).filter(|(p, g)| p == g).count() as f64 / pred.len() as f64
}

/// F1 of class 1 (scikit-learn's `f1_score` with `average="binary"`; 0 when undefined).
pub fn binary_f1(pred: &[usize], gold: &[usize]) -> f64 {
    let tp = pred
        .iter()
        .zip(gold)
        .filter(|(p, g)| **p == 1 && **g == 1)
        .count() as f64;
    let fp = pred
        .iter()
        .zip(gold)
        .filter(|(p, g)| **p == 1 && **g != 1)
        .count() as f64;
    let fn_ = pred
        .iter()
        .zip(gold)
        .filter(|(p, g)| **p != 1 && **g == 1)
        .count() as f64;
    if tp == 0.0 {
        return 0.0;
    }
    2.0 * tp / (2.0 * tp + fp + fn_)
}

/// Matthews correlation coefficient over any number of classes (scikit-learn's
/// `matthews_corrcoef`; 0 when undefined).
pub fn matthews(pred: &[usize], gold: &[usize]) -> f64 {
    let n = pred.len() as f64;
    let k = pred.iter().chain(gold).copied().max().map_or(0, |m| m + 1);
    let mut t = vec![0f64; k];
    let mut p = vec![0f64; k];
    let mut c = 0f64;
    for (&pi, &gi) in pred.iter().zip(gold) {
        t[gi] += 1.0;
        p[pi] += 1.0;
        if pi == gi {
            c += 1.0;
        }
    }
    let tp: f64 = t.iter().zip(&p).map(|(a, b)| a * b).sum();
    let cov_ytyp = c * n - tp;
    let cov_ypyp = n * n - p.iter().map(|x| x * x).sum::<f64>();
    let cov_ytyt = n * n - t.iter().map(|x| x * x).sum::<f64>();
    if cov_ypyp == 0.0 || cov_ytyt == 0.0 {
        return 0.0;
    }
    cov_ytyp / (cov_ytyt * cov_ypyp).sqrt()
}

/// Pearson correlation (NaN when a side is constant, as SciPy).
pub fn pearson(x: &[f64], y: &[f64]) -> f64 {
    assert_eq!(x.len(), y.len());
    let n = x.len() as f64;
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx) * (a - mx);
        syy += (b - my) * (b - my);
    }
    sxy / (sxx * syy).sqrt()
}

/// Ranks from 1, ties sharing their average rank (SciPy's `rankdata`, method "average").
pub fn average_ranks(x: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..x.len()).collect();
    order.sort_by(|&a, &b| x[a].total_cmp(&x[b]));
    let mut ranks = vec![0.0; x.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && x[order[j + 1]] == x[order[i]] {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        for &o in &order[i..=j] {
            ranks[o] = rank;
        }
        i = j + 1;
    }
    ranks
}

/// Spearman correlation: Pearson of the average ranks.
pub fn spearman(x: &[f64], y: &[f64]) -> f64 {
    pearson(&average_ranks(x), &average_ranks(y))
}

/// The metrics GLUE reports for a task, keyed by name. `main` is the one model selection and
/// the report use: Matthews for CoLA, Pearson for STS-B, accuracy otherwise (the CmpLoss code's
/// `task2criterion`).
#[derive(Debug, Clone, PartialEq)]
pub struct Scores {
    /// Name of the main metric.
    pub main: &'static str,
    /// All metrics.
    pub values: BTreeMap<&'static str, f64>,
}

impl Scores {
    /// The main metric's value.
    pub fn main_value(&self) -> f64 {
        self.values[self.main]
    }
}

/// Classification scores; `glue` is the GLUE task name when the dataset is one.
pub fn classification_scores(pred: &[usize], gold: &[usize], glue: Option<&str>) -> Scores {
    let mut values = BTreeMap::new();
    values.insert("accuracy", accuracy(pred, gold));
    let task = glue.map(str::to_ascii_uppercase);
    let main = match task.as_deref() {
        Some("COLA") => {
            values.insert("matthews", matthews(pred, gold));
            "matthews"
        }
        Some("MRPC" | "QQP") => {
            values.insert("f1", binary_f1(pred, gold));
            "accuracy"
        }
        _ => "accuracy",
    };
    Scores { main, values }
}

/// Regression scores (STS-B): Pearson (main) and Spearman.
pub fn regression_scores(pred: &[f64], gold: &[f64]) -> Scores {
    let mut values = BTreeMap::new();
    values.insert("pearson", pearson(pred, gold));
    values.insert("spearman", spearman(pred, gold));
    Scores {
        main: "pearson",
        values,
    }
}

/// SQuAD v1.1's answer normalisation (`evaluate-v1.1.py`): lower case, ASCII punctuation
/// removed, the whole words `a`, `an`, `the` removed, whitespace collapsed.
pub fn squad_normalize(text: &str) -> String {
    let lowered: String = text
        .to_lowercase()
        .chars()
        .filter(|c| !c.is_ascii_punctuation())
        .collect();
    // `\b(a|an|the)\b` → " ": runs of word characters (Unicode alphanumerics and `_`, as
    // Python's `\w`) that are an article become a space.
    let is_word = |c: char| c.is_alphanumeric() || c == '_';
    let mut out = String::with_capacity(lowered.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if matches!(word.as_str(), "a" | "an" | "the") {
            out.push(' ');
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in lowered.chars() {
        if is_word(c) {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Precision, recall and F1 of the multiset overlap of two token lists (0 when nothing is
/// shared), as SQuAD's `f1_score` and Mondal et al.'s token-id F1 compute it.
pub fn overlap_scores<T: Ord + Clone>(pred: &[T], gold: &[T]) -> (f64, f64, f64) {
    let mut counts: std::collections::BTreeMap<T, i64> = std::collections::BTreeMap::new();
    for t in gold {
        *counts.entry(t.clone()).or_default() += 1;
    }
    let mut same = 0usize;
    for t in pred {
        if let Some(c) = counts.get_mut(t)
            && *c > 0
        {
            *c -= 1;
            same += 1;
        }
    }
    if same == 0 {
        return (0.0, 0.0, 0.0);
    }
    let precision = same as f64 / pred.len() as f64;
    let recall = same as f64 / gold.len() as f64;
    (
        precision,
        recall,
        2.0 * precision * recall / (precision + recall),
    )
}

/// SQuAD v1.1 exact match and F1 of one prediction: the best over the gold answers.
pub fn squad_em_f1(prediction: &str, golds: &[String]) -> (f64, f64) {
    let p = squad_normalize(prediction);
    let p_tokens: Vec<&str> = p.split_whitespace().collect();
    golds.iter().fold((0.0f64, 0.0f64), |(em, f1), g| {
        let g = squad_normalize(g);
        let g_tokens: Vec<&str> = g.split_whitespace().collect();
        let this_em = if p == g { 1.0 } else { 0.0 };
        (
            em.max(this_em),
            f1.max(overlap_scores(&p_tokens, &g_tokens).2),
        )
    })
}

/// Mondal et al.'s XQuAD scores on token ids: exact match of the id sequences, and the
/// precision, recall and F1 of their multiset overlap.
pub fn token_id_scores(pred: &[u32], gold: &[u32]) -> (f64, f64, f64, f64) {
    let (p, r, f1) = overlap_scores(pred, gold);
    (if pred == gold { 1.0 } else { 0.0 }, p, r, f1)
}
