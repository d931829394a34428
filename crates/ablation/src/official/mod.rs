//! The official codes' own neuron-set files, read into [`LanguageSets`] and (where the format
//! can hold a set) written from them, so a published set can be compared with one of ours and
//! ours can be fed to the official scripts.
//!
//! | format | official code | file | holds |
//! |---|---|---|---|
//! | [`tang`] | RUCAIBox/Language-Specific-Neurons (`identify.py`) | `activation_mask/<model>`, a `torch.save` zip | per language, per layer, the neuron indices; no language names |
//! | [`mondal`] | soumenkm/LSN (`lang_neurons.py`) | `lang_neuron_data.pkl`, a `pickle.dump` of a dict | per language an `(N, 2)` tensor of `[layer, neuron]` rows, with the model's shape |
//! | [`kojima`] | kojima-takeshi188/lang_neuron (`selfcond/expertise.py`) | `expertise*.csv`, one per language | one row per unit: module name, unit, AP and the response statistics (read only) |
//!
//! Neuron indices mean the same in all of them: the layer of `model.layers.{i}` and the row of
//! the FFN's first projection (`mlp.gate_proj`, `fc1`, `dense_h_to_4h`), as in the workspace.
//! Scores: only Kojima's files carry one (the unit's AP, kept as the row's score).

pub mod kojima;
pub mod mondal;
pub mod pickle;
pub mod tang;

use std::path::Path;

pub use kojima::KojimaFile;
pub use mondal::{MondalFile, MondalInfo};
use pickle::Value;
pub use tang::TangFile;

use crate::LanguageSets;

/// Why an official file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum OfficialError {
    /// The file could not be opened, read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not in the layout its format expects, or the sets do not fit it.
    #[error("{path}: {message}")]
    Layout {
        /// The file.
        path: String,
        /// What was expected and what was found.
        message: String,
    },
}

impl OfficialError {
    pub(crate) fn layout(path: &Path, message: impl Into<String>) -> Self {
        Self::Layout {
            path: path.display().to_string(),
            message: message.into(),
        }
    }

    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

/// The language order of Tang et al.'s released masks (`identify.py`'s `lang` list). Their
/// files name no language; a file of seven lists is read in this order.
pub const TANG_LANGUAGES: [&str; 7] = ["en", "zh", "fr", "es", "vi", "id", "ja"];

/// An integer tensor rebuilt from a pickle: its shape and its values in row-major order.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexTensor {
    /// The tensor's shape.
    pub shape: Vec<usize>,
    /// Its values, row-major.
    pub values: Vec<i64>,
}

/// A storage's element type, from the storage class a pickle names (`torch.LongStorage`, …).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Storage {
    /// Signed integers of this many bytes.
    Int(usize),
    /// `uint8`.
    Byte,
    /// Floats (an empty `torch.tensor([])` is a float tensor).
    Float(usize),
}

impl Storage {
    pub(crate) fn from_class(name: &str) -> Option<Self> {
        Some(match name {
            "LongStorage" => Self::Int(8),
            "IntStorage" => Self::Int(4),
            "ShortStorage" => Self::Int(2),
            "CharStorage" => Self::Int(1),
            "ByteStorage" => Self::Byte,
            "FloatStorage" => Self::Float(4),
            "DoubleStorage" => Self::Float(8),
            "HalfStorage" | "BFloat16Storage" => Self::Float(2),
            _ => return None,
        })
    }

    pub(crate) fn size(self) -> usize {
        match self {
            Self::Int(n) | Self::Float(n) => n,
            Self::Byte => 1,
        }
    }

    /// Decode little-endian elements as integers; float storages must be empty.
    pub(crate) fn decode(self, bytes: &[u8]) -> Result<Vec<i64>, String> {
        let n = self.size();
        match self {
            Self::Float(_) if bytes.is_empty() => Ok(Vec::new()),
            Self::Float(_) => Err("a float tensor where neuron indices (integers) belong".into()),
            Self::Byte => Ok(bytes.iter().map(|&b| i64::from(b)).collect()),
            Self::Int(_) => Ok(bytes
                .chunks_exact(n)
                .map(|c| {
                    let fill = if c[n - 1] & 0x80 != 0 { 0xff } else { 0 };
                    let mut buf = [fill; 8];
                    buf[..n].copy_from_slice(c);
                    i64::from_le_bytes(buf)
                })
                .collect()),
        }
    }
}

/// Rebuild a `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, …)` call, asking
/// `storage` for the elements of the pickle's storage argument (a persistent id in a zip
/// checkpoint, a `_load_from_bytes` call in a plain pickle).
pub(crate) fn rebuild_tensor(
    value: &Value,
    storage: &mut dyn FnMut(&Value) -> Result<Vec<i64>, String>,
) -> Result<IndexTensor, String> {
    let Value::Call(func, args) = value else {
        return Err(format!("a tensor was expected, found {}", value.kind()));
    };
    if func.global() != Some(("torch._utils", "_rebuild_tensor_v2")) {
        return Err(format!(
            "a tensor (torch._utils._rebuild_tensor_v2) was expected, found a call of {}",
            func.kind()
        ));
    }
    let [
        store,
        Value::Int(offset),
        Value::Tuple(size),
        Value::Tuple(stride),
        ..,
    ] = &args[..]
    else {
        return Err("a _rebuild_tensor_v2 call without (storage, offset, size, stride)".into());
    };
    let dims = |t: &[Value]| -> Result<Vec<usize>, String> {
        t.iter()
            .map(|v| match v {
                Value::Int(i) => usize::try_from(*i).map_err(|_| format!("negative size {i}")),
                other => Err(format!("a tensor size of {}", other.kind())),
            })
            .collect()
    };
    let (shape, stride) = (dims(size)?, dims(stride)?);
    if shape.len() != stride.len() {
        return Err(format!("tensor size {shape:?} with stride {stride:?}"));
    }
    let data = storage(store)?;
    let numel: usize = shape.iter().product();
    let mut values = Vec::with_capacity(numel);
    let offset = usize::try_from(*offset).map_err(|_| "a negative storage offset".to_string())?;
    for flat in 0..numel {
        let (mut rest, mut at) = (flat, offset);
        for (d, s) in shape.iter().zip(&stride).rev() {
            at += (rest % d) * s;
            rest /= d;
        }
        let v = data.get(at).ok_or_else(|| {
            format!(
                "tensor of size {shape:?} (stride {stride:?}, offset {offset}) reads past its \
                 storage of {} elements",
                data.len()
            )
        })?;
        values.push(*v);
    }
    Ok(IndexTensor { shape, values })
}

/// Index values as `usize`, naming a negative one.
pub(crate) fn indices(values: &[i64]) -> Result<Vec<usize>, String> {
    values
        .iter()
        .map(|&v| usize::try_from(v).map_err(|_| format!("negative neuron index {v}")))
        .collect()
}

/// The languages of `sets` in the order an official file lists them: Tang's order for the
/// languages it has (then any others, sorted), or `order` when given (which must name every
/// language of the sets exactly once).
///
/// # Errors
/// If `order` leaves out a language of the sets, names one twice or names one they lack.
pub fn language_order(
    sets: &LanguageSets,
    order: Option<&[String]>,
) -> Result<Vec<String>, String> {
    let have: Vec<&String> = sets.sets.keys().collect();
    if let Some(order) = order {
        let mut seen = std::collections::BTreeSet::new();
        for l in order {
            if !seen.insert(l) {
                return Err(format!("--languages names {l} twice"));
            }
            if !sets.sets.contains_key(l) {
                return Err(format!(
                    "--languages names {l}, which the sets do not hold (they hold {})",
                    join(&have)
                ));
            }
        }
        if let Some(missing) = have.iter().find(|l| !seen.contains(*l)) {
            return Err(format!(
                "--languages leaves out {missing}, which the sets hold (they hold {})",
                join(&have)
            ));
        }
        return Ok(order.to_vec());
    }
    let mut out: Vec<String> = TANG_LANGUAGES
        .iter()
        .filter(|l| sets.sets.contains_key(**l))
        .map(|l| (*l).to_string())
        .collect();
    out.extend(
        have.into_iter()
            .filter(|l| !TANG_LANGUAGES.contains(&l.as_str()))
            .cloned(),
    );
    Ok(out)
}

fn join(items: &[&String]) -> String {
    items
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}
