//! Kojima et al. (2024), "On the Multilingual Ability of Decoder-based Pre-trained Language
//! Models: Finding and Controlling Language-Specific Neurons" (kojima-takeshi188/lang_neuron):
//! the expertise tables `selfcond/expertise.py` exports (`ExpertiseResult.export_as_pandas`) and
//! `scripts/make_limited_expert.py` cuts.
//!
//! One CSV per language (`…/sense/<lang>/expertise/expertise.csv`: every unit;
//! `expertise_limited_<N>_both.csv`: the N/2 units of highest and the N/2 of lowest AP, the sets
//! the paper intervenes on; `…_top.csv` / `…_bottom.csv`: one half), with the columns
//! `ap, off_mean, off_p50, on_p50, on_p90, layer, unit, uuid, concept, group` (the full table
//! may lead with pandas' unnamed index column). `layer` is the hooked module's name with a `:0`
//! suffix (`model.layers.3.mlp.gate_proj:0`), `unit` the output unit, `concept` the language.
//!
//! Kojima's units include attention projections; a neuron set of the workspace holds FFN
//! neurons, so only rows of the FFN's first projection are kept ([`FFN_MODULES`]) and the others
//! are counted in [`KojimaFile::skipped`]. Each row's `ap` becomes its score.
//!
//! Read only: the table's response statistics (`on_p50`, …) cannot be filled in from a neuron
//! set, so no Kojima file is written.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::OfficialError;
use crate::{LanguageSets, NeuronRow, NeuronSet};

/// Module-name endings of the FFN's first projection, whose output units are the workspace's
/// neurons: LLaMA / Mistral / Qwen (`mlp.gate_proj`), XGLM / OPT (`fc1`), BLOOM
/// (`mlp.dense_h_to_4h`), GPT-2 (`mlp.c_fc`), BERT (`intermediate.dense`).
pub const FFN_MODULES: [&str; 5] = [
    "mlp.gate_proj",
    "fc1",
    "mlp.dense_h_to_4h",
    "mlp.c_fc",
    "intermediate.dense",
];

/// Kojima tables read: the sets and what was left out.
#[derive(Debug, Clone, PartialEq)]
pub struct KojimaFile {
    /// The FFN units of each language (`concept`), scored by their AP.
    pub sets: LanguageSets,
    /// Rows of other modules left out, counted by module kind (the name with its layer number
    /// replaced by `*`).
    pub skipped: BTreeMap<String, usize>,
}

/// Read one or more expertise tables (one per language, or several languages in one).
///
/// # Errors
/// If a file cannot be read, lacks a column, or has a row whose `ap`, `layer` or `unit` cannot
/// be read (the error names the file and its line).
pub fn read(paths: &[PathBuf]) -> Result<KojimaFile, OfficialError> {
    let mut rows: BTreeMap<String, Vec<NeuronRow>> = BTreeMap::new();
    let mut skipped = BTreeMap::new();
    for path in paths {
        read_one(path, &mut rows, &mut skipped)?;
    }
    let sets = rows
        .into_iter()
        .map(|(lang, r)| (lang, NeuronSet::from_rows(r)))
        .collect();
    Ok(KojimaFile {
        sets: LanguageSets::new(sets),
        skipped,
    })
}

fn read_one(
    path: &Path,
    rows: &mut BTreeMap<String, Vec<NeuronRow>>,
    skipped: &mut BTreeMap<String, usize>,
) -> Result<(), OfficialError> {
    let mut reader = csv::Reader::from_path(path).map_err(|e| match e.into_kind() {
        csv::ErrorKind::Io(io) => OfficialError::io(path, io),
        other => OfficialError::layout(path, format!("{other:?}")),
    })?;
    let headers = reader
        .headers()
        .map_err(|e| OfficialError::layout(path, format!("header: {e}")))?
        .clone();
    let column = |name: &str| {
        headers.iter().position(|h| h == name).ok_or_else(|| {
            OfficialError::layout(
                path,
                format!(
                    "no column {name:?} (Kojima's expertise tables have ap, layer, unit, concept; \
                     this one has {})",
                    headers.iter().collect::<Vec<_>>().join(", ")
                ),
            )
        })
    };
    let (ap, layer, unit, concept) = (
        column("ap")?,
        column("layer")?,
        column("unit")?,
        column("concept")?,
    );
    for (i, record) in reader.records().enumerate() {
        let line = i + 2;
        let bad = |m: String| OfficialError::layout(path, format!("line {line}: {m}"));
        let record = record.map_err(|e| bad(e.to_string()))?;
        let field = |c: usize| record.get(c).unwrap_or("");
        let module = field(layer);
        let Some(layer_idx) = ffn_layer(module) else {
            *skipped.entry(module_kind(module)).or_default() += 1;
            continue;
        };
        let neuron: usize = field(unit)
            .parse()
            .map_err(|_| bad(format!("unit {:?} is not a unit index", field(unit))))?;
        let score: f64 = field(ap)
            .parse()
            .map_err(|_| bad(format!("ap {:?} is not a number", field(ap))))?;
        let lang = field(concept);
        if lang.is_empty() {
            return Err(bad("an empty concept (the language)".into()));
        }
        rows.entry(lang.to_string()).or_default().push(NeuronRow {
            layer: layer_idx,
            neuron,
            language: Some(lang.to_string()),
            score: Some(score),
        });
    }
    Ok(())
}

/// The layer index of an FFN module's name (`model.layers.3.mlp.gate_proj:0` → 3); `None` for
/// other modules.
fn ffn_layer(module: &str) -> Option<usize> {
    let name = module.split(':').next().unwrap_or(module);
    FFN_MODULES
        .iter()
        .find(|k| name.ends_with(&format!(".{k}")))?;
    name.split('.').find_map(|part| part.parse::<usize>().ok())
}

/// A module name with its numbers replaced by `*`, for counting skipped rows by kind.
fn module_kind(module: &str) -> String {
    let name = module.split(':').next().unwrap_or(module);
    name.split('.')
        .map(|p| if p.parse::<usize>().is_ok() { "*" } else { p })
        .collect::<Vec<_>>()
        .join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ffn_modules_give_their_layer_and_others_none() {
        assert_eq!(ffn_layer("model.layers.3.mlp.gate_proj:0"), Some(3));
        assert_eq!(ffn_layer("model.layers.11.fc1:0"), Some(11));
        assert_eq!(ffn_layer("transformer.h.0.mlp.dense_h_to_4h:0"), Some(0));
        assert_eq!(ffn_layer("model.layers.3.self_attn.q_proj:0"), None);
        assert_eq!(ffn_layer("model.layers.3.mlp.down_proj:0"), None);
        assert_eq!(
            module_kind("model.layers.3.self_attn.q_proj:0"),
            "model.layers.*.self_attn.q_proj"
        );
    }
}
