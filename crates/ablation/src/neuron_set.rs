//! The one neuron-set type of the workspace: FFN neurons as `(layer, neuron)` rows, with an
//! optional language and score.
//!
//! Language-specific neurons (LAPE and friends), CmpLoss ablations, random controls and LoRA
//! targets are all neuron sets. Indices follow the HF checkpoint: `layer` is the index in
//! `layers.{i}` / `encoder.layer.{i}`, `neuron` the row of `mlp.gate_proj` / `intermediate.dense`.
//!
//! Set algebra compares `(layer, neuron)` only; a union keeps the first row seen for a neuron.

use std::collections::{BTreeMap, BTreeSet};

use burn::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::index::sample;
use serde::{Deserialize, Serialize};

/// One neuron of a set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NeuronRow {
    /// Layer index.
    pub layer: usize,
    /// Neuron index within the layer's FFN intermediate.
    pub neuron: usize,
    /// The language the neuron is specific to, if any (ISO code as the study names it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// A score (entropy, activation probability, …), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
}

/// A set of FFN neurons, kept sorted by `(layer, neuron)` without duplicates.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NeuronSet {
    rows: Vec<NeuronRow>,
}

impl From<serde_json::Error> for NeuronSetError {
    fn from(e: serde_json::Error) -> Self {
        Self::Json(e)
    }
}

/// Why a neuron set could not be read or used.
#[derive(Debug, thiserror::Error)]
pub enum NeuronSetError {
    /// Invalid JSON (the parser's message is in the text, not a source, so chains print it once).
    #[error("neuron set JSON: {0}")]
    Json(serde_json::Error),
    /// A Parquet file that could not be read or written, or lacks a column.
    #[error("neuron set Parquet {path}: {message}")]
    Parquet {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// A file that could not be read.
    #[error("cannot read {path}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A problem inside a file.
    #[error("{path}")]
    InFile {
        /// The file.
        path: String,
        /// The problem.
        #[source]
        source: Box<NeuronSetError>,
    },
    /// A row of a multi-language file without a language.
    #[error("row {row} has no language (a file of language sets needs one on every row)")]
    MissingLanguage {
        /// 0-based row index.
        row: usize,
    },
    /// A row outside the model's shape.
    #[error(
        "neuron ({layer}, {neuron}) is outside a model with {n_layers} layers of {width} neurons"
    )]
    OutOfRange {
        /// Layer of the row.
        layer: usize,
        /// Neuron of the row.
        neuron: usize,
        /// Layers of the model.
        n_layers: usize,
        /// Neurons per layer.
        width: usize,
    },
}

impl NeuronSet {
    /// A set from rows; duplicates of a `(layer, neuron)` keep the first row.
    pub fn from_rows(rows: impl IntoIterator<Item = NeuronRow>) -> Self {
        let mut seen = BTreeMap::new();
        for row in rows {
            seen.entry((row.layer, row.neuron)).or_insert(row);
        }
        Self {
            rows: seen.into_values().collect(),
        }
    }

    /// A set of plain `(layer, neuron)` pairs.
    pub fn from_pairs(pairs: impl IntoIterator<Item = (usize, usize)>) -> Self {
        Self::from_rows(pairs.into_iter().map(|(layer, neuron)| NeuronRow {
            layer,
            neuron,
            language: None,
            score: None,
        }))
    }

    /// The rows, sorted by `(layer, neuron)`.
    pub fn rows(&self) -> &[NeuronRow] {
        &self.rows
    }

    /// Number of neurons.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Whether `(layer, neuron)` is in the set.
    pub fn contains(&self, layer: usize, neuron: usize) -> bool {
        self.rows
            .binary_search_by_key(&(layer, neuron), |r| (r.layer, r.neuron))
            .is_ok()
    }

    fn keys(&self) -> BTreeSet<(usize, usize)> {
        self.rows.iter().map(|r| (r.layer, r.neuron)).collect()
    }

    /// Neurons in either set (rows of `self` first).
    pub fn union(&self, other: &Self) -> Self {
        Self::from_rows(self.rows.iter().chain(&other.rows).cloned())
    }

    /// Neurons in both sets (rows of `self`).
    pub fn intersection(&self, other: &Self) -> Self {
        let keep = other.keys();
        Self {
            rows: self
                .rows
                .iter()
                .filter(|r| keep.contains(&(r.layer, r.neuron)))
                .cloned()
                .collect(),
        }
    }

    /// Neurons of `self` not in `other`.
    pub fn difference(&self, other: &Self) -> Self {
        let drop = other.keys();
        Self {
            rows: self
                .rows
                .iter()
                .filter(|r| !drop.contains(&(r.layer, r.neuron)))
                .cloned()
                .collect(),
        }
    }

    /// The rows of one language.
    pub fn language(&self, language: &str) -> Self {
        Self {
            rows: self
                .rows
                .iter()
                .filter(|r| r.language.as_deref() == Some(language))
                .cloned()
                .collect(),
        }
    }

    /// Neurons per layer, for layers `0..n_layers`.
    pub fn counts_per_layer(&self, n_layers: usize) -> Vec<usize> {
        let mut counts = vec![0; n_layers];
        for r in &self.rows {
            counts[r.layer] += 1;
        }
        counts
    }

    /// The control set: in every layer, as many neurons as this set has there, drawn uniformly
    /// without replacement from that layer's `width` neurons with a seeded RNG.
    pub fn random_like(
        &self,
        n_layers: usize,
        width: usize,
        seed: u64,
    ) -> Result<Self, NeuronSetError> {
        self.check(n_layers, width)?;
        let mut rng = StdRng::seed_from_u64(seed);
        let counts = self.counts_per_layer(n_layers);
        Ok(Self::from_pairs(counts.iter().enumerate().flat_map(
            |(layer, &count)| {
                sample(&mut rng, width, count)
                    .into_iter()
                    .map(move |neuron| (layer, neuron))
                    .collect::<Vec<_>>()
            },
        )))
    }

    /// Check every row against a model with `n_layers` layers of `width` FFN neurons.
    pub fn check(&self, n_layers: usize, width: usize) -> Result<(), NeuronSetError> {
        match self
            .rows
            .iter()
            .find(|r| r.layer >= n_layers || r.neuron >= width)
        {
            Some(r) => Err(NeuronSetError::OutOfRange {
                layer: r.layer,
                neuron: r.neuron,
                n_layers,
                width,
            }),
            None => Ok(()),
        }
    }

    /// Per-layer keep masks for the forward context: 0 at the set's neurons, 1 elsewhere
    /// (`[width]` each; `None` for a layer the set does not touch).
    pub fn ablation_masks<B: Backend>(
        &self,
        n_layers: usize,
        width: usize,
        device: &B::Device,
    ) -> Result<Vec<Option<Tensor<B, 1>>>, NeuronSetError> {
        self.check(n_layers, width)?;
        let mut keep: Vec<Option<Vec<f32>>> = vec![None; n_layers];
        for r in &self.rows {
            keep[r.layer].get_or_insert_with(|| vec![1.0; width])[r.neuron] = 0.0;
        }
        Ok(keep
            .into_iter()
            .map(|m| m.map(|v| Tensor::from_data(TensorData::new(v, [width]), device)))
            .collect())
    }

    /// The set as JSON (`{"rows": [{"layer", "neuron", "language"?, "score"?}, …]}`).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a neuron set always serializes")
    }

    /// Read a set from JSON written by [`Self::to_json`]; rows are re-sorted and deduplicated.
    pub fn from_json(text: &str) -> Result<Self, NeuronSetError> {
        let raw: NeuronSet = serde_json::from_str(text)?;
        Ok(Self::from_rows(raw.rows))
    }

    /// Write the set as Parquet with columns `language` (string, nullable), `layer` and `neuron`
    /// (Int64) and `score` (Float64, nullable), one row per neuron, in `(layer, neuron)` order.
    #[cfg(feature = "parquet")]
    pub fn write_parquet(&self, path: &std::path::Path) -> Result<(), NeuronSetError> {
        write_rows(&self.rows, path)
    }

    /// Read a set from Parquet: integer columns `layer` and `neuron` are required, `language`
    /// (string) and `score` (float) are optional; other columns are ignored. Rows are re-sorted
    /// and deduplicated.
    #[cfg(feature = "parquet")]
    pub fn read_parquet(path: &std::path::Path) -> Result<Self, NeuronSetError> {
        Ok(Self::from_rows(read_rows(path)?))
    }
}

#[cfg(feature = "parquet")]
fn write_rows(rows: &[NeuronRow], path: &std::path::Path) -> Result<(), NeuronSetError> {
    use polars::prelude::*;
    let error = |e: &dyn std::fmt::Display| NeuronSetError::Parquet {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let language: Vec<Option<&str>> = rows.iter().map(|r| r.language.as_deref()).collect();
    let layer: Vec<i64> = rows.iter().map(|r| r.layer as i64).collect();
    let neuron: Vec<i64> = rows.iter().map(|r| r.neuron as i64).collect();
    let score: Vec<Option<f64>> = rows.iter().map(|r| r.score).collect();
    let mut frame = DataFrame::new(
        rows.len(),
        vec![
            Column::new("language".into(), language),
            Column::new("layer".into(), layer),
            Column::new("neuron".into(), neuron),
            Column::new("score".into(), score),
        ],
    )
    .map_err(|e| error(&e))?;
    let file = std::fs::File::create(path).map_err(|e| error(&e))?;
    ParquetWriter::new(file)
        .finish(&mut frame)
        .map_err(|e| error(&e))?;
    Ok(())
}

#[cfg(feature = "parquet")]
fn read_rows(path: &std::path::Path) -> Result<Vec<NeuronRow>, NeuronSetError> {
    use polars::prelude::*;
    let error = |message: String| NeuronSetError::Parquet {
        path: path.display().to_string(),
        message,
    };
    let file = std::fs::File::open(path).map_err(|e| error(e.to_string()))?;
    let frame = ParquetReader::new(file)
        .finish()
        .map_err(|e| error(e.to_string()))?;
    let column = |name: &str, dtype: DataType| -> Result<Option<Column>, NeuronSetError> {
        match frame.column(name) {
            Err(_) => Ok(None),
            Ok(c) => c
                .cast(&dtype)
                .map(Some)
                .map_err(|e| error(format!("column `{name}` is not {dtype}: {e}"))),
        }
    };
    let required = |name: &str| -> Result<Vec<usize>, NeuronSetError> {
        let c = column(name, DataType::Int64)?
            .ok_or_else(|| error(format!("missing column `{name}`")))?;
        let values = c.i64().map_err(|e| error(e.to_string()))?;
        values
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Some(v) if v >= 0 => Ok(v as usize),
                Some(v) => Err(error(format!("row {i}: `{name}` is negative ({v})"))),
                None => Err(error(format!("row {i}: `{name}` is null"))),
            })
            .collect()
    };
    let layers = required("layer")?;
    let neurons = required("neuron")?;
    let languages: Vec<Option<String>> = match column("language", DataType::String)? {
        Some(c) => c
            .str()
            .map_err(|e| error(e.to_string()))?
            .iter()
            .map(|v| v.map(str::to_owned))
            .collect(),
        None => vec![None; layers.len()],
    };
    let scores: Vec<Option<f64>> = match column("score", DataType::Float64)? {
        Some(c) => c.f64().map_err(|e| error(e.to_string()))?.iter().collect(),
        None => vec![None; layers.len()],
    };
    Ok(layers
        .into_iter()
        .zip(neurons)
        .zip(languages.into_iter().zip(scores))
        .map(|((layer, neuron), (language, score))| NeuronRow {
            layer,
            neuron,
            language,
            score,
        })
        .collect())
}

/// Neuron sets of several languages, one [`NeuronSet`] per language. A neuron may belong to
/// several languages (LAPE assigns a selected neuron to every language above the threshold), so
/// the files hold one row per (language, neuron): JSON `{"rows": [...]}` in the same row shape as
/// [`NeuronSet::to_json`], and Parquet with the columns of [`NeuronSet::write_parquet`], rows in
/// language order, then `(layer, neuron)`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LanguageSets {
    /// The set of each language; its rows carry the language.
    pub sets: BTreeMap<String, NeuronSet>,
}

impl LanguageSets {
    /// Sets by language; each row's `language` is set to its set's language.
    pub fn new(sets: BTreeMap<String, NeuronSet>) -> Self {
        let sets = sets
            .into_iter()
            .map(|(lang, set)| {
                let set = NeuronSet::from_rows(set.rows.into_iter().map(|r| NeuronRow {
                    language: Some(lang.clone()),
                    ..r
                }));
                (lang, set)
            })
            .collect();
        Self { sets }
    }

    /// Every row, in language order, then `(layer, neuron)`.
    pub fn rows(&self) -> impl Iterator<Item = &NeuronRow> {
        self.sets.values().flat_map(|s| s.rows.iter())
    }

    /// Group rows by their language; a row without one is an error naming its index.
    pub fn from_rows(rows: Vec<NeuronRow>) -> Result<Self, NeuronSetError> {
        let mut by_language: BTreeMap<String, Vec<NeuronRow>> = BTreeMap::new();
        for (i, row) in rows.into_iter().enumerate() {
            let Some(lang) = row.language.clone() else {
                return Err(NeuronSetError::MissingLanguage { row: i });
            };
            by_language.entry(lang).or_default().push(row);
        }
        Ok(Self {
            sets: by_language
                .into_iter()
                .map(|(l, rows)| (l, NeuronSet::from_rows(rows)))
                .collect(),
        })
    }

    /// Check every set against a model with `n_layers` layers of `width` FFN neurons.
    pub fn check(&self, n_layers: usize, width: usize) -> Result<(), NeuronSetError> {
        self.sets
            .values()
            .try_for_each(|s| s.check(n_layers, width))
    }

    /// The sets as JSON (`{"rows": [...]}`, every row with its language).
    pub fn to_json(&self) -> String {
        let rows: Vec<&NeuronRow> = self.rows().collect();
        serde_json::to_string_pretty(&serde_json::json!({ "rows": rows }))
            .expect("neuron rows always serialize")
    }

    /// Read sets written by [`Self::to_json`].
    pub fn from_json(text: &str) -> Result<Self, NeuronSetError> {
        let raw: NeuronSet = serde_json::from_str(text)?;
        Self::from_rows(raw.rows)
    }

    /// Read sets from a file: Parquet when its extension is `.parquet` ([`Self::read_parquet`]),
    /// JSON ([`Self::to_json`]'s layout) otherwise. Errors name the file.
    pub fn read(path: &std::path::Path) -> Result<Self, NeuronSetError> {
        #[cfg(feature = "parquet")]
        if path.extension().is_some_and(|e| e == "parquet") {
            return Self::read_parquet(path);
        }
        let text = std::fs::read_to_string(path).map_err(|source| NeuronSetError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_json(&text).map_err(|e| NeuronSetError::InFile {
            path: path.display().to_string(),
            source: Box::new(e),
        })
    }

    /// Write the sets as Parquet (one row per language and neuron).
    #[cfg(feature = "parquet")]
    pub fn write_parquet(&self, path: &std::path::Path) -> Result<(), NeuronSetError> {
        let rows: Vec<NeuronRow> = self.rows().cloned().collect();
        write_rows(&rows, path)
    }

    /// Read sets from Parquet (see [`NeuronSet::read_parquet`]); every row needs a language.
    #[cfg(feature = "parquet")]
    pub fn read_parquet(path: &std::path::Path) -> Result<Self, NeuronSetError> {
        Self::from_rows(read_rows(path)?).map_err(|e| NeuronSetError::Parquet {
            path: path.display().to_string(),
            message: e.to_string(),
        })
    }
}

/// Per-layer head masks for the forward context: 0 at the given `(layer, head)` pairs.
pub fn head_masks<B: Backend>(
    heads: &[(usize, usize)],
    n_layers: usize,
    n_heads: usize,
    device: &B::Device,
) -> Vec<Option<Tensor<B, 1>>> {
    let mut keep: Vec<Option<Vec<f32>>> = vec![None; n_layers];
    for &(layer, head) in heads {
        assert!(
            layer < n_layers && head < n_heads,
            "head ({layer}, {head}) outside {n_layers} layers x {n_heads} heads"
        );
        keep[layer].get_or_insert_with(|| vec![1.0; n_heads])[head] = 0.0;
    }
    keep.into_iter()
        .map(|m| m.map(|v| Tensor::from_data(TensorData::new(v, [n_heads]), device)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;

    fn set(pairs: &[(usize, usize)]) -> NeuronSet {
        NeuronSet::from_pairs(pairs.iter().copied())
    }

    #[test]
    fn algebra_on_layer_neuron_pairs() {
        let a = set(&[(0, 1), (0, 3), (2, 5)]);
        let b = set(&[(0, 3), (1, 0), (2, 5), (2, 6)]);
        assert_eq!(a.union(&b), set(&[(0, 1), (0, 3), (1, 0), (2, 5), (2, 6)]));
        assert_eq!(a.intersection(&b), set(&[(0, 3), (2, 5)]));
        assert_eq!(a.difference(&b), set(&[(0, 1)]));
        assert!(a.contains(2, 5) && !a.contains(2, 6));
        assert_eq!(set(&[(1, 1), (0, 2), (1, 1)]).rows().len(), 2);
    }

    #[test]
    fn random_control_keeps_per_layer_counts_and_seed() {
        let a = set(&[(0, 1), (0, 3), (2, 5), (2, 7), (2, 9)]);
        let r1 = a.random_like(3, 50, 11).unwrap();
        assert_eq!(r1.counts_per_layer(3), vec![2, 0, 3]);
        assert_eq!(r1, a.random_like(3, 50, 11).unwrap());
        assert_ne!(r1, a.random_like(3, 50, 12).unwrap());
        assert!(
            a.random_like(2, 50, 0)
                .unwrap_err()
                .to_string()
                .contains("outside a model with 2 layers")
        );
    }

    #[test]
    fn json_round_trip_with_language_and_score() {
        let rows = vec![
            NeuronRow {
                layer: 3,
                neuron: 7,
                language: Some("fr".into()),
                score: Some(0.25),
            },
            NeuronRow {
                layer: 0,
                neuron: 2,
                language: None,
                score: None,
            },
        ];
        let s = NeuronSet::from_rows(rows);
        let back = NeuronSet::from_json(&s.to_json()).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.rows()[0].layer, 0);
        assert_eq!(back.language("fr").len(), 1);
        assert!(
            NeuronSet::from_json("{\"rows\": [{\"layer\": 1}]}")
                .unwrap_err()
                .to_string()
                .contains("neuron")
        );
    }

    #[cfg(feature = "parquet")]
    #[test]
    fn parquet_round_trip_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let s = NeuronSet::from_rows(vec![
            NeuronRow {
                layer: 3,
                neuron: 7,
                language: Some("fr".into()),
                score: Some(0.25),
            },
            NeuronRow {
                layer: 0,
                neuron: 2,
                language: None,
                score: None,
            },
            NeuronRow {
                layer: 29,
                neuron: 8191,
                language: Some("zh".into()),
                score: Some(-1.5),
            },
        ]);
        let path = dir.path().join("neurons.parquet");
        s.write_parquet(&path).unwrap();
        assert_eq!(NeuronSet::read_parquet(&path).unwrap(), s);
        // An empty set round-trips too.
        NeuronSet::default().write_parquet(&path).unwrap();
        assert!(NeuronSet::read_parquet(&path).unwrap().is_empty());
        // Not a Parquet file: the error names the file.
        let bad = dir.path().join("bad.parquet");
        std::fs::write(&bad, b"layer,neuron\n1,2\n").unwrap();
        let err = NeuronSet::read_parquet(&bad).unwrap_err().to_string();
        assert!(err.contains("bad.parquet"), "{err}");
    }

    #[cfg(feature = "parquet")]
    #[test]
    fn language_sets_keep_shared_neurons_per_language() {
        let dir = tempfile::tempdir().unwrap();
        let sets = LanguageSets::new(BTreeMap::from([
            ("fr".to_string(), set(&[(1, 4), (0, 2)])),
            ("es".to_string(), set(&[(1, 4)])),
        ]));
        // (1, 4) is in both languages: two rows, es first.
        let rows: Vec<(Option<&str>, usize, usize)> = sets
            .rows()
            .map(|r| (r.language.as_deref(), r.layer, r.neuron))
            .collect();
        assert_eq!(
            rows,
            vec![(Some("es"), 1, 4), (Some("fr"), 0, 2), (Some("fr"), 1, 4)]
        );
        assert_eq!(LanguageSets::from_json(&sets.to_json()).unwrap(), sets);
        let path = dir.path().join("neurons.parquet");
        sets.write_parquet(&path).unwrap();
        assert_eq!(LanguageSets::read_parquet(&path).unwrap(), sets);
        // A single-set reader sees the union.
        assert_eq!(NeuronSet::read_parquet(&path).unwrap().len(), 2);
        let err = LanguageSets::from_json("{\"rows\": [{\"layer\": 0, \"neuron\": 1}]}")
            .unwrap_err()
            .to_string();
        assert!(err.contains("row 0 has no language"), "{err}");
        let err = sets.check(2, 4).unwrap_err().to_string();
        assert!(
            err.contains("neuron (1, 4) is outside a model with 2 layers of 4"),
            "{err}"
        );
    }

    #[test]
    fn masks_zero_the_set() {
        let device = Default::default();
        let masks = set(&[(1, 0), (1, 2)])
            .ablation_masks::<NdArray>(2, 4, &device)
            .unwrap();
        assert!(masks[0].is_none());
        assert_eq!(
            masks[1].clone().unwrap().to_data().to_vec::<f32>().unwrap(),
            vec![0.0, 1.0, 0.0, 1.0]
        );
        let heads = head_masks::<NdArray>(&[(0, 1)], 2, 3, &device);
        assert_eq!(
            heads[0].clone().unwrap().to_data().to_vec::<f32>().unwrap(),
            vec![1.0, 0.0, 1.0]
        );
        assert!(heads[1].is_none());
    }
}
