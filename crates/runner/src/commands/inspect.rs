//! `neuronlab inspect`: what a checkpoint holds.

use std::fmt::Write;
use std::path::Path;

use anyhow::{Context, Result};
use models::{EncoderConfig, TensorMap};

/// A text report of a checkpoint directory or file: architecture (when `config.json` is there),
/// parameter count, and every tensor with its dtype and shape. A GGUF file (or a folder with one
/// and no `config.json`) is reported by [`inspect_gguf`].
pub fn inspect(path: &Path) -> Result<String> {
    if !path.exists() {
        anyhow::bail!(
            "{} does not exist; expected a checkpoint folder, a weights file (.safetensors, \
             .bin) or a .gguf file",
            path.display()
        );
    }
    let gguf = if path.is_dir() && !path.join("config.json").is_file() {
        let found: Vec<_> = std::fs::read_dir(path)
            .with_context(|| format!("cannot read the folder {}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "gguf"))
            .collect();
        match found.as_slice() {
            [one] => Some(one.clone()),
            [] => None,
            _ => anyhow::bail!(
                "{}: {} .gguf files and no config.json; name the file to inspect",
                path.display(),
                found.len()
            ),
        }
    } else {
        path.extension()
            .is_some_and(|e| e == "gguf")
            .then(|| path.to_owned())
    };
    if let Some(file) = gguf {
        return inspect_gguf(&file);
    }
    if path.is_dir() && path.join(models::ADAPTER_CONFIG).is_file() {
        return inspect_adapter(path);
    }
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
    tensor_table(&tensors, &mut out)?;
    Ok(out)
}

/// A PEFT adapter folder (as a LoRA cell writes it with `save_model = true`): what its
/// `adapter_config.json` says, then its tensors.
fn inspect_adapter(dir: &Path) -> Result<String> {
    let config = models::PeftConfig::read(dir)?;
    let mut out = String::new();
    writeln!(
        out,
        "PEFT LoRA adapter: task {}, r {}, alpha {}, targets {}, modules_to_save [{}], base model {}",
        config.task.map_or("(none)", |t| t.as_str()),
        config.rank,
        config.alpha,
        config.targets.join(", "),
        config.modules_to_save.join(", "),
        config.base_model.as_deref().unwrap_or("(not named)")
    )?;
    let weights = dir.join(models::ADAPTER_WEIGHTS);
    let tensors =
        TensorMap::open(&weights).with_context(|| format!("reading {}", weights.display()))?;
    tensor_table(&tensors, &mut out)?;
    Ok(out)
}

/// The file, the parameter count and one line per tensor (key, dtype, shape).
fn tensor_table(tensors: &TensorMap, out: &mut String) -> Result<()> {
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
    Ok(())
}

/// A text report of a GGUF file: format version, architecture (from the `<arch>.*` metadata),
/// every metadata key (long arrays as their length), the parameter count by quantisation type,
/// and every tensor with its GGML type and shape.
pub fn inspect_gguf(path: &Path) -> Result<String> {
    let file = models::gguf::GgufFile::open(path)?;
    let mut out = String::new();
    writeln!(
        out,
        "file: {} (GGUF version {})",
        path.display(),
        file.version
    )?;
    let meta_u64 = |key: &str| file.meta(key).and_then(|v| v.as_u64());
    if let Some(arch) = file.meta("general.architecture").and_then(|v| v.as_str()) {
        let get = |k: &str| {
            meta_u64(&format!("{arch}.{k}")).map_or_else(|| "?".into(), |v| v.to_string())
        };
        let vocab = file
            .meta("tokenizer.ggml.tokens")
            .and_then(|v| v.as_array())
            .map_or_else(|| "?".into(), |a| a.len().to_string());
        writeln!(
            out,
            "architecture: {arch} ({} layers, hidden {}, {} heads ({} key/value), FFN {}, \
             context {}, vocab {vocab})",
            get("block_count"),
            get("embedding_length"),
            get("attention.head_count"),
            get("attention.head_count_kv"),
            get("feed_forward_length"),
            get("context_length"),
        )?;
    }
    writeln!(out, "metadata: {} keys", file.metadata.len())?;
    for (key, value) in &file.metadata {
        writeln!(out, "  {key:<44} {}", meta_text(value))?;
    }
    let mut by_type: std::collections::BTreeMap<String, (usize, usize)> = Default::default();
    for t in &file.tensors {
        let e = by_type.entry(t.type_name()).or_default();
        e.0 += 1;
        e.1 += t.shape.iter().product::<usize>();
    }
    let n_params: usize = by_type.values().map(|(_, n)| n).sum();
    let types: Vec<String> = by_type
        .iter()
        .map(|(ty, (count, n))| format!("{ty}: {count} tensors, {:.1} M", *n as f64 / 1e6))
        .collect();
    writeln!(
        out,
        "parameters: {n_params} ({:.1} M) in {} tensors ({})",
        n_params as f64 / 1e6,
        file.tensors.len(),
        types.join("; ")
    )?;
    for t in &file.tensors {
        writeln!(out, "  {:<60} {:<6} {:?}", t.name, t.type_name(), t.shape)?;
    }
    Ok(out)
}

/// A metadata value for the report: long arrays as their length and first items.
fn meta_text(v: &models::gguf::MetaValue) -> String {
    use models::gguf::MetaValue as M;
    match v {
        M::Uint(x) => x.to_string(),
        M::Int(x) => x.to_string(),
        M::Float(x) => x.to_string(),
        M::Bool(x) => x.to_string(),
        M::String(s) if s.chars().count() > 80 => {
            let head: String = s.chars().take(77).collect();
            format!("{:?}… ({} characters)", head, s.chars().count())
        }
        M::String(s) => format!("{s:?}"),
        M::Array(a) if a.len() > 8 => {
            let head: Vec<String> = a.iter().take(3).map(meta_text).collect();
            format!("[{}, …] ({} items)", head.join(", "), a.len())
        }
        M::Array(a) => format!(
            "[{}]",
            a.iter().map(meta_text).collect::<Vec<_>>().join(", ")
        ),
    }
}
