//! `neuronlab inspect`: what a checkpoint holds.

use std::fmt::Write;
use std::path::Path;

use anyhow::{Context, Result};
use models::{EncoderConfig, TensorMap};

/// A text report of a checkpoint directory or file: architecture (when `config.json` is there),
/// parameter count, and every tensor with its dtype and shape.
pub fn inspect(path: &Path) -> Result<String> {
    let mut out = String::new();
    let config_path = if path.is_dir() {
        path.join("config.json")
    } else {
        path.with_file_name("config.json")
    };
    if config_path.is_file() {
        let config = EncoderConfig::from_file(&config_path)?;
        writeln!(
            out,
            "architecture: {:?} ({} layers, hidden {}, {} heads, intermediate {}, vocab {}, max positions {})",
            config.family,
            config.num_hidden_layers,
            config.hidden_size,
            config.num_attention_heads,
            config.intermediate_size,
            config.vocab_size,
            config.max_position_embeddings
        )?;
    }
    let tensors = TensorMap::open(path).with_context(|| format!("reading {}", path.display()))?;
    let shapes = tensors.shapes();
    let n_params: usize = shapes
        .iter()
        .filter(|(_, dtype, _)| dtype == "F32")
        .map(|(_, _, s)| s.iter().product::<usize>())
        .sum();
    writeln!(out, "file: {}", tensors.source().display())?;
    writeln!(
        out,
        "parameters: {n_params} ({:.1} M) in {} tensors",
        n_params as f64 / 1e6,
        shapes.len()
    )?;
    for (key, dtype, shape) in shapes {
        let stored = if dtype == "F32" {
            "float"
        } else {
            dtype.as_str()
        };
        writeln!(out, "  {key:<60} {stored:<6} {shape:?}")?;
    }
    Ok(out)
}
