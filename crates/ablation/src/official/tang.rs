//! Tang et al. (2024), "Language-Specific Neurons: The Key to Multilingual Capabilities in Large
//! Language Models" (RUCAIBox/Language-Specific-Neurons): the `activation_mask/<model>` file
//! `identify.py` writes and `ppl.py` / `generation.py` read.
//!
//! The file is `torch.save(final_indice)`: a zip checkpoint whose `data.pkl` is a list over
//! languages of lists over layers of 1-D `LongTensor`s, the neuron indices of that language in
//! that layer (sorted; an empty layer is a tensor of shape `(0,)`). It names no language: the
//! released files list `en, zh, fr, es, vi, id, ja` ([`super::TANG_LANGUAGES`]), and files of
//! another count need the order from the user. Indices only: no scores.
//!
//! [`write`] writes what `torch.save` writes for that list (a protocol-2 `data.pkl`, one
//! storage record `data/<i>` per tensor, `byteorder`, `version`), which `torch.load` opens with
//! its default `weights_only=True`.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;

use super::pickle::{self, Value};
use super::{OfficialError, Storage, TANG_LANGUAGES, indices, rebuild_tensor};
use crate::{LanguageSets, NeuronRow, NeuronSet};

/// A Tang mask file read: the sets and the number of layers its lists cover.
#[derive(Debug, Clone, PartialEq)]
pub struct TangFile {
    /// The neurons of each language.
    pub sets: LanguageSets,
    /// Layers per language list (the model's layer count).
    pub n_layers: usize,
}

/// Read a mask file. `languages` names its lists in order; without it a file of seven lists is
/// read in Tang's order and any other count is an error asking for the names.
///
/// # Errors
/// If the file is not a zip checkpoint of that layout (the error names the file and the entry),
/// `languages` does not match the number of lists, or the lists cover different layer counts.
pub fn read(path: &Path, languages: Option<&[String]>) -> Result<TangFile, OfficialError> {
    let file = std::fs::File::open(path).map_err(|e| OfficialError::io(path, e))?;
    let mut zip = zip::ZipArchive::new(file).map_err(|e| {
        OfficialError::layout(
            path,
            format!("not a torch.save zip checkpoint (Tang's activation_mask format): {e}"),
        )
    })?;
    let pkl = (0..zip.len())
        .filter_map(|i| zip.name_for_index(i).map(str::to_string))
        .find(|n| n.ends_with("/data.pkl") || n == "data.pkl")
        .ok_or_else(|| OfficialError::layout(path, "the zip holds no data.pkl"))?;
    let prefix = pkl.trim_end_matches("data.pkl").to_string();
    let entry = |zip: &mut zip::ZipArchive<std::fs::File>, name: &str| {
        let mut out = Vec::new();
        zip.by_name(name)
            .map_err(|e| OfficialError::layout(path, format!("entry {name}: {e}")))?
            .read_to_end(&mut out)
            .map_err(|e| OfficialError::io(path, e))?;
        Ok::<_, OfficialError>(out)
    };
    if zip.index_for_name(&format!("{prefix}byteorder")).is_some() {
        let order = entry(&mut zip, &format!("{prefix}byteorder"))?;
        if order != b"little" {
            return Err(OfficialError::layout(
                path,
                format!(
                    "byteorder is {:?}; only little-endian checkpoints are read",
                    String::from_utf8_lossy(&order)
                ),
            ));
        }
    }
    let bytes = entry(&mut zip, &pkl)?;
    let (value, _) =
        pickle::read(&bytes).map_err(|e| OfficialError::layout(path, format!("{pkl}: {e}")))?;
    let Value::List(langs) = value else {
        return Err(OfficialError::layout(
            path,
            format!(
                "{pkl} holds a {}; a list over languages was expected",
                value.kind()
            ),
        ));
    };
    let names: Vec<String> = match languages {
        Some(l) if l.len() == langs.len() => l.to_vec(),
        Some(l) => {
            return Err(OfficialError::layout(
                path,
                format!(
                    "the file holds {} language lists, --languages names {} ({})",
                    langs.len(),
                    l.len(),
                    l.join(",")
                ),
            ));
        }
        None if langs.len() == TANG_LANGUAGES.len() => {
            TANG_LANGUAGES.iter().map(|s| (*s).to_string()).collect()
        }
        None => {
            return Err(OfficialError::layout(
                path,
                format!(
                    "the file holds {} language lists and names none; pass --languages in the \
                     order identify.py used (the released 7-language files are {})",
                    langs.len(),
                    TANG_LANGUAGES.join(",")
                ),
            ));
        }
    };
    let mut sets = BTreeMap::new();
    let mut n_layers = None;
    for (li, (lang, layers)) in names.iter().zip(langs).enumerate() {
        let Value::List(layers) = layers else {
            return Err(OfficialError::layout(
                path,
                format!(
                    "language list {li} ({lang}) is a {}, not a list over layers",
                    layers.kind()
                ),
            ));
        };
        if *n_layers.get_or_insert(layers.len()) != layers.len() {
            return Err(OfficialError::layout(
                path,
                format!(
                    "language {lang} has {} layer tensors, the first language {}",
                    layers.len(),
                    n_layers.unwrap_or_default()
                ),
            ));
        }
        let mut rows = Vec::new();
        for (layer, t) in layers.iter().enumerate() {
            let tensor = rebuild_tensor(t, &mut |pid| {
                let (class, key) = persistent_storage(pid)?;
                let data =
                    entry(&mut zip, &format!("{prefix}data/{key}")).map_err(|e| e.to_string())?;
                class.decode(&data)
            })
            .map_err(|e| {
                OfficialError::layout(path, format!("language {lang}, layer {layer}: {e}"))
            })?;
            if tensor.shape.len() != 1 {
                return Err(OfficialError::layout(
                    path,
                    format!(
                        "language {lang}, layer {layer}: a tensor of shape {:?}; 1-D indices were expected",
                        tensor.shape
                    ),
                ));
            }
            let neurons = indices(&tensor.values).map_err(|e| {
                OfficialError::layout(path, format!("language {lang}, layer {layer}: {e}"))
            })?;
            rows.extend(neurons.into_iter().map(|neuron| NeuronRow {
                layer,
                neuron,
                language: Some(lang.clone()),
                score: None,
            }));
        }
        if sets
            .insert(lang.clone(), NeuronSet::from_rows(rows))
            .is_some()
        {
            return Err(OfficialError::layout(
                path,
                format!("--languages names {lang} twice"),
            ));
        }
    }
    Ok(TangFile {
        sets: LanguageSets::new(sets),
        n_layers: n_layers.unwrap_or(0),
    })
}

/// The storage class and record key of a zip checkpoint's persistent id
/// `('storage', torch.LongStorage, key, location, numel)`.
fn persistent_storage(pid: &Value) -> Result<(Storage, String), String> {
    let Value::Persistent(inner) = pid else {
        return Err(format!(
            "a storage reference was expected, found {}",
            pid.kind()
        ));
    };
    match &**inner {
        Value::Tuple(t) => match &t[..] {
            [Value::Str(tag), class, Value::Str(key), ..] if tag == "storage" => {
                let Some(("torch", name)) = class.global() else {
                    return Err(format!("storage of class {}", class.kind()));
                };
                let storage = Storage::from_class(name)
                    .ok_or_else(|| format!("storage class torch.{name} is not an index type"))?;
                Ok((storage, key.clone()))
            }
            _ => Err("a persistent id that is not ('storage', class, key, …)".into()),
        },
        other => Err(format!("a persistent id of {}", other.kind())),
    }
}

/// Write `sets` as a Tang mask file: one list per language of `languages` (in that order), each
/// with `n_layers` index tensors.
///
/// # Errors
/// If a language of `languages` is not in `sets`, a neuron's layer is not below `n_layers`, or
/// the file cannot be written.
pub fn write(
    sets: &LanguageSets,
    languages: &[String],
    n_layers: usize,
    path: &Path,
) -> Result<(), OfficialError> {
    let mut tensors: Vec<Vec<Vec<i64>>> = Vec::new();
    for lang in languages {
        let set = sets.sets.get(lang).ok_or_else(|| {
            OfficialError::layout(path, format!("the sets hold no language {lang}"))
        })?;
        let mut layers = vec![Vec::new(); n_layers];
        for r in set.rows() {
            let slot = layers.get_mut(r.layer).ok_or_else(|| {
                OfficialError::layout(
                    path,
                    format!(
                        "language {lang} has neuron ({}, {}) but the file is written with \
                         {n_layers} layers (--layers)",
                        r.layer, r.neuron
                    ),
                )
            })?;
            slot.push(i64::try_from(r.neuron).expect("neuron index fits i64"));
        }
        tensors.push(layers);
    }
    let mut storages = Vec::new();
    let list = Value::List(
        tensors
            .into_iter()
            .map(|layers| {
                Value::List(
                    layers
                        .into_iter()
                        .map(|idx| {
                            let key = storages.len().to_string();
                            let numel = idx.len();
                            storages.push(idx);
                            long_tensor(
                                Value::Persistent(Box::new(Value::Tuple(vec![
                                    Value::Str("storage".into()),
                                    Value::Global("torch".into(), "LongStorage".into()),
                                    Value::Str(key),
                                    Value::Str("cpu".into()),
                                    int(numel),
                                ]))),
                                &[numel],
                            )
                        })
                        .collect(),
                )
            })
            .collect(),
    );
    let mut w = pickle::Writer::new(2);
    w.value(&list);
    let pkl = w.finish();

    let prefix = archive_name(path);
    let file = std::fs::File::create(path).map_err(|e| OfficialError::io(path, e))?;
    let mut zip = zip::ZipWriter::new(file);
    let stored = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .with_alignment(64);
    let io =
        |e: zip::result::ZipError| OfficialError::layout(path, format!("writing the zip: {e}"));
    let record = |zip: &mut zip::ZipWriter<std::fs::File>, name: String, bytes: &[u8]| {
        zip.start_file(format!("{prefix}/{name}"), stored)
            .map_err(io)?;
        zip.write_all(bytes).map_err(|e| OfficialError::io(path, e))
    };
    record(&mut zip, "data.pkl".into(), &pkl)?;
    record(&mut zip, ".format_version".into(), b"1")?;
    record(&mut zip, ".storage_alignment".into(), b"64")?;
    record(&mut zip, "byteorder".into(), b"little")?;
    for (i, idx) in storages.iter().enumerate() {
        let bytes: Vec<u8> = idx.iter().flat_map(|v| v.to_le_bytes()).collect();
        record(&mut zip, format!("data/{i}"), &bytes)?;
    }
    record(&mut zip, "version".into(), b"3\n")?;
    zip.finish().map_err(io)?;
    Ok(())
}

/// `torch._utils._rebuild_tensor_v2(storage, 0, shape, contiguous stride, False, OrderedDict())`.
pub(crate) fn long_tensor(storage: Value, shape: &[usize]) -> Value {
    let mut stride = vec![1; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        stride[d] = stride[d + 1] * shape[d + 1];
    }
    Value::Call(
        Box::new(Value::Global(
            "torch._utils".into(),
            "_rebuild_tensor_v2".into(),
        )),
        vec![
            storage,
            Value::Int(0),
            Value::Tuple(shape.iter().map(|&d| int(d)).collect()),
            Value::Tuple(stride.into_iter().map(int).collect()),
            Value::Bool(false),
            Value::Call(
                Box::new(Value::Global("collections".into(), "OrderedDict".into())),
                Vec::new(),
            ),
        ],
    )
}

pub(crate) fn int(n: usize) -> Value {
    Value::Int(i64::try_from(n).expect("size fits i64"))
}

/// The archive folder `torch.save` would use: the file's name without its extension.
fn archive_name(path: &Path) -> String {
    let stem: String = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .collect();
    if stem.is_empty() {
        "archive".into()
    } else {
        stem
    }
}
