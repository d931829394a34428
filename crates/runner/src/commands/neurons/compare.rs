//! `neuronlab neurons compare A B`: how two language-neuron sets overlap, per language and per
//! layer (for instance a study of this tool against another run, or against a published set once
//! it is converted to the workspace's layout, [`ablation::LanguageSets`]).
//!
//! Per language held by either file: the neurons of A, of B, of both, and the Jaccard index
//! |A ∩ B| / |A ∪ B| (1 when both are empty); then per layer the same counts. Printed as
//! Markdown; the numbers come from the sets' `(layer, neuron)` pairs only (scores are ignored).

use std::fmt::Write as _;
use std::path::Path;

use ablation::{LanguageSets, NeuronSet};
use anyhow::Result;

/// Overlap of one language's two sets.
#[derive(Debug, Clone, PartialEq)]
pub struct Overlap {
    /// The language.
    pub language: String,
    /// Neurons in A.
    pub a: usize,
    /// Neurons in B.
    pub b: usize,
    /// Neurons in both.
    pub both: usize,
    /// |A ∩ B| / |A ∪ B|; 1 when both are empty.
    pub jaccard: f64,
    /// Per layer (0 up to the highest layer either file names): A, B, both.
    pub per_layer: Vec<(usize, usize, usize)>,
}

/// The overlap of every language in `a` or `b` (a language one file lacks counts as empty).
pub fn overlaps(a: &LanguageSets, b: &LanguageSets) -> Vec<Overlap> {
    let n_layers = a
        .rows()
        .chain(b.rows())
        .map(|r| r.layer + 1)
        .max()
        .unwrap_or(0);
    let languages: std::collections::BTreeSet<&String> =
        a.sets.keys().chain(b.sets.keys()).collect();
    let empty = NeuronSet::default();
    languages
        .into_iter()
        .map(|lang| {
            let x = a.sets.get(lang).unwrap_or(&empty);
            let y = b.sets.get(lang).unwrap_or(&empty);
            let both = x.intersection(y);
            let union = x.len() + y.len() - both.len();
            let (cx, cy, cb) = (
                x.counts_per_layer(n_layers),
                y.counts_per_layer(n_layers),
                both.counts_per_layer(n_layers),
            );
            Overlap {
                language: lang.clone(),
                a: x.len(),
                b: y.len(),
                both: both.len(),
                jaccard: if union == 0 {
                    1.0
                } else {
                    both.len() as f64 / union as f64
                },
                per_layer: (0..n_layers).map(|l| (cx[l], cy[l], cb[l])).collect(),
            }
        })
        .collect()
}

/// Read two files of language sets (JSON or Parquet) and print their overlap as Markdown.
///
/// # Errors
/// If a file cannot be read (the error names it).
pub fn compare(a: &Path, b: &Path) -> Result<String> {
    // The workspace's reader names the file in every error.
    let (sa, sb) = (LanguageSets::read(a)?, LanguageSets::read(b)?);
    let rows = overlaps(&sa, &sb);
    let mut out = format!("A: {}\nB: {}\n\n", a.display(), b.display());
    out.push_str("| language | A | B | both | Jaccard |\n|---|---:|---:|---:|---:|\n");
    for o in &rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {:.3} |",
            o.language, o.a, o.b, o.both, o.jaccard
        );
    }
    for o in &rows {
        let _ = write!(
            out,
            "\n{}: per layer (A / B / both)\n\n| layer | A | B | both |\n|---:|---:|---:|---:|\n",
            o.language
        );
        for (l, (x, y, z)) in o.per_layer.iter().enumerate() {
            let _ = writeln!(out, "| {l} | {x} | {y} | {z} |");
        }
    }
    Ok(out)
}
