//! Mondal et al. (soumenkm/LSN): the `outputs/lang_neurons/<model>/<method>/lang_neuron_data.pkl`
//! file `LangNeuron` writes (`code/lang_neurons.py`) and the fine-tuning scripts read
//! (`lora_cls_finetune.py`: `lang_neuron["lang_to_neuron"][lang]`, `["L"]`, `["int_d"]`).
//!
//! The file is `pickle.dump(self.__dict__)` (protocol 4): a dict with `device`, `model_name`,
//! `model_name_srt`, `method`, `cwd`, `lang_neuron_path`, `lang_list`, `quant_config`, `L` (layers),
//! `int_d` (FFN width), `m` (the neuron budget) and `lang_to_neuron`, a dict from language to an
//! int64 tensor of `[layer, neuron]` rows (`(N, 2)`; a language with no neuron is
//! `torch.tensor([])`, a float tensor of shape `(0,)`). A tensor inside a plain pickle is
//! `_rebuild_tensor_v2(torch.storage._load_from_bytes(blob), …)`, where `blob` is a storage in
//! torch's legacy (pre-zip) serialization: five pickles (magic number, protocol 1001, system info,
//! the storage's persistent id, its key list), then per storage its element count (u64) and data.
//! No scores are stored; the `act_prob_*` methods' rows come in top-k order, which a set drops.
//!
//! [`write`] writes the same dict; `m` is computed as `LangNeuron` does from `L` and `int_d`
//! (1 % of all neurons for the LAPE methods, 0.125 % otherwise), `device` is the CPU and the
//! paths are the written file's.

use std::collections::BTreeMap;
use std::path::Path;

use super::pickle::{self, Value};
use super::tang::{int, long_tensor};
use super::{OfficialError, Storage, indices, rebuild_tensor};
use crate::{LanguageSets, NeuronRow, NeuronSet};

/// What a Mondal file says of its model and method besides the sets.
#[derive(Debug, Clone, PartialEq)]
pub struct MondalInfo {
    /// `model_name` (the HF id, e.g. `meta-llama/Meta-Llama-3.1-8B`).
    pub model_name: String,
    /// `method` (`lape`, `act_prob_zero`, `act_prob_90p`, …).
    pub method: String,
    /// `L`: the model's layers.
    pub n_layers: usize,
    /// `int_d`: neurons per layer.
    pub width: usize,
}

/// A Mondal file read: the sets, its `lang_list` order and its model facts.
#[derive(Debug, Clone, PartialEq)]
pub struct MondalFile {
    /// The neurons of each language.
    pub sets: LanguageSets,
    /// `lang_list`, in the file's order.
    pub languages: Vec<String>,
    /// Model and method.
    pub info: MondalInfo,
}

/// The legacy serialization's magic number, 0x1950a86a20f9469cfc6c, as pickle's `LONG1` bytes.
const LEGACY_MAGIC: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];

/// Read a `lang_neuron_data.pkl`.
///
/// # Errors
/// If the file is not a pickle of that dict, a tensor cannot be rebuilt, or a neuron lies
/// outside `L` × `int_d` (the error names the file, the key and the language).
pub fn read(path: &Path) -> Result<MondalFile, OfficialError> {
    let bytes = std::fs::read(path).map_err(|e| OfficialError::io(path, e))?;
    let bad = |m: String| OfficialError::layout(path, m);
    let (value, _) = pickle::read(&bytes).map_err(&bad)?;
    if !matches!(value, Value::Dict(_)) {
        return Err(bad(format!(
            "a pickled dict (LangNeuron.__dict__) was expected, found a {}",
            value.kind()
        )));
    }
    let key = |k: &str| {
        value
            .get(k)
            .ok_or_else(|| bad(format!("the dict has no key {k:?}")))
    };
    let string = |k: &str| match key(k)? {
        Value::Str(s) => Ok(s.clone()),
        other => Err(bad(format!("{k:?} is a {}, not a str", other.kind()))),
    };
    let count = |k: &str| match key(k)? {
        Value::Int(i) if *i >= 0 => Ok(usize::try_from(*i).expect("non-negative")),
        other => Err(bad(format!("{k:?} is {other:?}, not a count"))),
    };
    let info = MondalInfo {
        model_name: string("model_name")?,
        method: string("method")?,
        n_layers: count("L")?,
        width: count("int_d")?,
    };
    let languages = match key("lang_list")? {
        Value::List(l) => l
            .iter()
            .map(|v| match v {
                Value::Str(s) => Ok(s.clone()),
                other => Err(bad(format!("lang_list holds a {}", other.kind()))),
            })
            .collect::<Result<Vec<_>, _>>()?,
        other => Err(bad(format!("lang_list is a {}", other.kind())))?,
    };
    let Value::Dict(by_lang) = key("lang_to_neuron")? else {
        return Err(bad("lang_to_neuron is not a dict".into()));
    };
    let mut sets = BTreeMap::new();
    for (lang, t) in by_lang {
        let Value::Str(lang) = lang else {
            return Err(bad(format!("lang_to_neuron has a key of {}", lang.kind())));
        };
        let at = |e: String| bad(format!("lang_to_neuron[{lang:?}]: {e}"));
        let tensor = rebuild_tensor(t, &mut legacy_storage).map_err(at)?;
        let values = indices(&tensor.values).map_err(at)?;
        let rows = match tensor.shape[..] {
            [_, 2] => values
                .chunks_exact(2)
                .map(|c| (c[0], c[1]))
                .collect::<Vec<_>>(),
            [0] => Vec::new(),
            _ => {
                return Err(at(format!(
                    "a tensor of shape {:?}; (N, 2) rows of [layer, neuron] were expected",
                    tensor.shape
                )));
            }
        };
        if let Some(&(l, n)) = rows
            .iter()
            .find(|(l, n)| *l >= info.n_layers || *n >= info.width)
        {
            return Err(at(format!(
                "neuron ({l}, {n}) is outside the file's L = {} layers of int_d = {} neurons",
                info.n_layers, info.width
            )));
        }
        let set = NeuronSet::from_rows(rows.into_iter().map(|(layer, neuron)| NeuronRow {
            layer,
            neuron,
            language: Some(lang.clone()),
            score: None,
        }));
        sets.insert(lang.clone(), set);
    }
    Ok(MondalFile {
        sets: LanguageSets::new(sets),
        languages,
        info,
    })
}

/// The elements of `torch.storage._load_from_bytes(blob)`.
fn legacy_storage(arg: &Value) -> Result<Vec<i64>, String> {
    let Value::Call(func, args) = arg else {
        return Err(format!("a storage was expected, found {}", arg.kind()));
    };
    let (Some(("torch.storage", "_load_from_bytes")), [Value::Bytes(blob)]) =
        (func.global(), &args[..])
    else {
        return Err(format!(
            "a storage (torch.storage._load_from_bytes(bytes)) was expected, found a call of {}",
            func.kind()
        ));
    };
    let mut pos = 0;
    let mut next = |what: &str| -> Result<Value, String> {
        let (v, used) =
            pickle::read(&blob[pos..]).map_err(|e| format!("legacy storage ({what}): {e}"))?;
        pos += used;
        Ok(v)
    };
    if next("magic number")? != Value::Bytes(LEGACY_MAGIC.to_vec()) {
        return Err("a legacy storage blob without torch's magic number".into());
    }
    if next("protocol")? != Value::Int(1001) {
        return Err("a legacy storage blob of a protocol other than 1001".into());
    }
    let info = next("system info")?;
    if info.get("little_endian") != Some(&Value::Bool(true)) {
        return Err("a big-endian legacy storage blob".into());
    }
    let root = next("storage")?;
    let Value::Persistent(pid) = &root else {
        return Err(format!(
            "a legacy blob holding a {}, not one storage",
            root.kind()
        ));
    };
    let (class, key) = match &**pid {
        Value::Tuple(t) => match &t[..] {
            [Value::Str(tag), class, Value::Str(key), ..] if tag == "storage" => {
                let name = class.global().map(|(_, n)| n).unwrap_or_default();
                let s = Storage::from_class(name).ok_or_else(|| {
                    format!("storage class {} is not an index type", class.kind())
                })?;
                (s, key.clone())
            }
            _ => return Err("a legacy persistent id that is not ('storage', …)".into()),
        },
        other => return Err(format!("a legacy persistent id of {}", other.kind())),
    };
    let Value::List(keys) = next("storage keys")? else {
        return Err("a legacy blob without its storage key list".into());
    };
    let mut found = None;
    for k in keys {
        let numel = blob
            .get(pos..pos + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
            .ok_or("a legacy blob cut before a storage's size")?;
        let n = usize::try_from(numel)
            .ok()
            .and_then(|n| n.checked_mul(class.size()))
            .filter(|n| pos + 8 + n <= blob.len())
            .ok_or_else(|| format!("a legacy storage of {numel} elements past the blob's end"))?;
        let data = &blob[pos + 8..pos + 8 + n];
        pos += 8 + n;
        if k == Value::Str(key.clone()) {
            found = Some(class.decode(data)?);
        }
    }
    found.ok_or_else(|| format!("the legacy blob lacks the data of storage {key}"))
}

/// A legacy storage blob of int64 `values`, as `torch.save(storage,
/// _use_new_zipfile_serialization=False)` writes it.
fn legacy_blob(values: &[i64]) -> Vec<u8> {
    let pickled = |v: &Value| {
        let mut w = pickle::Writer::new(2);
        w.value(v);
        w.finish()
    };
    let mut out = {
        let mut w = pickle::Writer::new(2);
        w.raw(&[0x8a, 10]);
        w.raw(&LEGACY_MAGIC);
        w.finish()
    };
    out.extend(pickled(&Value::Int(1001)));
    let s = |x: &str| Value::Str(x.into());
    out.extend(pickled(&Value::Dict(vec![
        (s("protocol_version"), Value::Int(1001)),
        (s("little_endian"), Value::Bool(true)),
        (
            s("type_sizes"),
            Value::Dict(vec![
                (s("short"), Value::Int(2)),
                (s("int"), Value::Int(4)),
                (s("long"), Value::Int(4)),
            ]),
        ),
    ])));
    out.extend(pickled(&Value::Persistent(Box::new(Value::Tuple(vec![
        s("storage"),
        Value::Global("torch".into(), "LongStorage".into()),
        s("0"),
        s("cpu"),
        int(values.len()),
        Value::None,
    ])))));
    out.extend(pickled(&Value::List(vec![s("0")])));
    out.extend_from_slice(&(values.len() as u64).to_le_bytes());
    out.extend(values.iter().flat_map(|v| v.to_le_bytes()));
    out
}

/// Write `sets` as a Mondal `lang_neuron_data.pkl`, languages in `languages` order.
///
/// # Errors
/// If a language of `languages` is not in `sets`, a neuron lies outside `info`'s shape, or the
/// file cannot be written.
pub fn write(
    sets: &LanguageSets,
    languages: &[String],
    info: &MondalInfo,
    path: &Path,
) -> Result<(), OfficialError> {
    let s = |x: &str| Value::Str(x.into());
    let mut by_lang = Vec::new();
    for lang in languages {
        let set = sets.sets.get(lang).ok_or_else(|| {
            OfficialError::layout(path, format!("the sets hold no language {lang}"))
        })?;
        set.check(info.n_layers, info.width).map_err(|e| {
            OfficialError::layout(path, format!("language {lang}: {e} (--layers / --width)"))
        })?;
        let values: Vec<i64> = set
            .rows()
            .iter()
            .flat_map(|r| [r.layer, r.neuron])
            .map(|v| i64::try_from(v).expect("index fits i64"))
            .collect();
        let storage = Value::Call(
            Box::new(Value::Global(
                "torch.storage".into(),
                "_load_from_bytes".into(),
            )),
            vec![Value::Bytes(legacy_blob(&values))],
        );
        by_lang.push((s(lang), long_tensor(storage, &[set.len(), 2])));
    }
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let posix = |p: &Path| {
        let parts: Vec<Value> = p
            .components()
            .map(|c| Value::Str(c.as_os_str().to_string_lossy().into_owned()))
            .collect();
        Value::Call(
            Box::new(Value::Global("pathlib".into(), "PosixPath".into())),
            parts,
        )
    };
    let cwd = absolute
        .parent()
        .map_or_else(|| absolute.clone(), Path::to_path_buf);
    let share = if info.method.contains("lape") {
        0.01
    } else {
        0.00125
    };
    #[allow(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss
    )]
    let m = (share * (info.n_layers * info.width) as f64).round() as usize;
    let short = info
        .model_name
        .rsplit('/')
        .next()
        .unwrap_or(&info.model_name);
    let dict = Value::Dict(vec![
        (
            s("device"),
            Value::Call(
                Box::new(Value::Global("torch".into(), "device".into())),
                vec![s("cpu")],
            ),
        ),
        (s("model_name"), s(&info.model_name)),
        (s("model_name_srt"), s(short)),
        (s("method"), s(&info.method)),
        (s("cwd"), posix(&cwd)),
        (s("lang_neuron_path"), posix(&absolute)),
        (
            s("lang_list"),
            Value::List(languages.iter().map(|l| s(l)).collect()),
        ),
        (s("quant_config"), Value::None),
        (s("L"), int(info.n_layers)),
        (s("int_d"), int(info.width)),
        (s("m"), int(m)),
        (s("lang_to_neuron"), Value::Dict(by_lang)),
    ]);
    let mut w = pickle::Writer::new(4);
    w.value(&dict);
    std::fs::write(path, w.finish()).map_err(|e| OfficialError::io(path, e))
}
