//! LoL's passage matrices into [`super::matrix`] folders: a `torch.save`d dense 2-D tensor
//! (the official `matrix/*.pt`, f16 or f32, rows in the order of a pids file with one id per
//! line, as `util.load_pids` reads it), streamed out of the checkpoint's zip a shard at a time,
//! so a matrix of the whole MS MARCO collection never sits in memory. Resumable as
//! `corpus embed` is: a rerun continues after the last whole shard.
//!
//! Only dense, row-major tensors are read (the dense ANCE matrices); the sparse COO matrices of
//! LoL's uniCOIL runs are refused with a message saying so.

use std::io::Read;
use std::path::Path;

use ablation::official::pickle::{self, Value};
use anyhow::{Context, Result, bail, ensure};
use serde::Serialize;

use super::matrix::{MatrixWriter, VectorDtype};

/// What an import did.
#[derive(Debug, Serialize)]
pub struct ImportSummary {
    /// Rows in the matrix.
    pub passages: usize,
    /// Rows already there from an earlier, interrupted import.
    pub resumed_after: usize,
    /// Vector length.
    pub dim: usize,
    /// The tensor's element type in the file.
    pub source_dtype: String,
}

/// The tensor of a checkpoint: its storage entry, element size and layout.
struct TensorInfo {
    entry: String,
    half: bool,
    offset: usize,
    rows: usize,
    dim: usize,
}

/// Import `tensor` (rows named by `pids`) into the matrix folder `output`, calling `progress`
/// after each shard with the rows done and in all.
///
/// # Errors
/// A file that is not a `torch.save` of one dense 2-D f16/f32 tensor (what it holds is named), a
/// pids file whose line count differs from the rows, or a matrix folder with other settings.
pub fn import(
    tensor: &Path,
    pids: &Path,
    output: &Path,
    (dtype, shard_rows): (VectorDtype, usize),
    mut progress: impl FnMut(usize, usize),
) -> Result<ImportSummary> {
    let file =
        std::fs::File::open(tensor).with_context(|| format!("cannot read {}", tensor.display()))?;
    let mut zip = zip::ZipArchive::new(file)
        .with_context(|| format!("{}: not a torch.save zip checkpoint", tensor.display()))?;
    let info = tensor_info(&mut zip).map_err(|e| anyhow::anyhow!("{}: {e}", tensor.display()))?;
    ensure!(
        info.rows > 0 && info.dim > 0,
        "{}: the tensor is empty ({} rows of {} values): no passage to import",
        tensor.display(),
        info.rows,
        info.dim
    );
    let ids: Vec<String> = std::fs::read_to_string(pids)
        .with_context(|| format!("cannot read {}", pids.display()))?
        .lines()
        .map(|l| l.trim().to_string())
        .collect();
    ensure!(
        ids.len() == info.rows,
        "{}: {} ids, but the tensor in {} has {} rows",
        pids.display(),
        ids.len(),
        tensor.display(),
        info.rows
    );
    if let Some(i) = ids.iter().position(String::is_empty) {
        bail!("{}, line {}: an empty passage id", pids.display(), i + 1);
    }
    let mut distinct = super::matrix::DistinctIds::default();
    for (i, id) in ids.iter().enumerate() {
        distinct.note(id, i + 1, pids)?;
    }
    drop(distinct);
    let source = format!("{} (rows: {})", tensor.display(), pids.display());
    let mut writer = MatrixWriter::open(output, info.dim, dtype, shard_rows, &source)?;
    let resumed_after = writer.rows();
    let elem = if info.half { 2 } else { 4 };
    let mut reader = zip
        .by_name(&info.entry)
        .with_context(|| format!("{}: entry {}", tensor.display(), info.entry))?;
    let skip = (info.offset + resumed_after * info.dim) * elem;
    std::io::copy(&mut (&mut reader).take(skip as u64), &mut std::io::sink())
        .with_context(|| format!("{}: reading {}", tensor.display(), info.entry))?;
    let mut start = resumed_after;
    let mut bytes = Vec::new();
    while start < info.rows {
        let n = shard_rows.min(info.rows - start);
        bytes.resize(n * info.dim * elem, 0);
        reader.read_exact(&mut bytes).with_context(|| {
            format!(
                "{}: the storage {} ends before row {} of {}",
                tensor.display(),
                info.entry,
                start + n,
                info.rows
            )
        })?;
        let vectors: Vec<f32> = if info.half {
            bytes
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect()
        } else {
            bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect()
        };
        writer.write_shard(&ids[start..start + n], &vectors)?;
        start += n;
        progress(start, info.rows);
    }
    Ok(ImportSummary {
        passages: info.rows,
        resumed_after,
        dim: info.dim,
        source_dtype: if info.half { "f16" } else { "f32" }.into(),
    })
}

/// Find the one tensor of the checkpoint and check that it is dense, 2-D and row-major.
fn tensor_info(zip: &mut zip::ZipArchive<std::fs::File>) -> Result<TensorInfo, String> {
    let pkl = (0..zip.len())
        .filter_map(|i| zip.name_for_index(i).map(str::to_string))
        .find(|n| n.ends_with("/data.pkl") || n == "data.pkl")
        .ok_or("the zip holds no data.pkl")?;
    let prefix = pkl.trim_end_matches("data.pkl").to_string();
    if let Ok(mut order) = zip.by_name(&format!("{prefix}byteorder")) {
        let mut text = String::new();
        let _ = order.read_to_string(&mut text);
        if text != "little" {
            return Err(format!(
                "byteorder is {text:?}; only little-endian files are read"
            ));
        }
    }
    let mut bytes = Vec::new();
    zip.by_name(&pkl)
        .map_err(|e| e.to_string())?
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    let (value, _) = pickle::read(&bytes).map_err(|e| format!("{pkl}: {e}"))?;
    let Value::Call(func, args) = &value else {
        return Err(format!(
            "it holds a {}; one tensor (torch.save(matrix)) was expected",
            value.kind()
        ));
    };
    match func.global() {
        Some(("torch._utils", "_rebuild_tensor_v2")) => {}
        Some(("torch._utils", "_rebuild_sparse_tensor")) => {
            return Err(
                "it holds a sparse tensor (LoL's uniCOIL matrices); only dense \
                        matrices (ANCE's) are read"
                    .into(),
            );
        }
        _ => return Err(format!("it holds a {}, not a tensor", value.kind())),
    }
    let [
        Value::Persistent(storage),
        Value::Int(offset),
        Value::Tuple(size),
        Value::Tuple(stride),
        ..,
    ] = &args[..]
    else {
        return Err("a tensor without (storage, offset, size, stride)".into());
    };
    let (class, key) = match &**storage {
        Value::Tuple(t) => match &t[..] {
            [Value::Str(tag), class, Value::Str(key), ..] if tag == "storage" => {
                (class.global().map(|(_, n)| n.to_string()), key.clone())
            }
            _ => return Err("a storage reference that is not ('storage', class, key, …)".into()),
        },
        other => return Err(format!("a storage reference of {}", other.kind())),
    };
    let half = match class.as_deref() {
        Some("HalfStorage") => true,
        Some("FloatStorage") => false,
        other => {
            return Err(format!(
                "a tensor of {}; f16 or f32 vectors were expected",
                other.unwrap_or("an unknown storage")
            ));
        }
    };
    let ints = |t: &[Value]| -> Option<Vec<usize>> {
        t.iter()
            .map(|v| match v {
                Value::Int(i) => usize::try_from(*i).ok(),
                _ => None,
            })
            .collect()
    };
    let (Some(size), Some(stride)) = (ints(size), ints(stride)) else {
        return Err("a tensor size or stride that is not a tuple of integers".into());
    };
    let [rows, dim] = size[..] else {
        return Err(format!(
            "a tensor of size {size:?}; a 2-D [passages, dim] matrix was expected"
        ));
    };
    if stride != [dim, 1] {
        return Err(format!(
            "a tensor of size {size:?} with stride {stride:?}; save it contiguous \
             (matrix.contiguous()) to be read"
        ));
    }
    Ok(TensorInfo {
        entry: format!("{prefix}data/{key}"),
        half,
        offset: usize::try_from(*offset).map_err(|_| "a negative storage offset")?,
        rows,
        dim,
    })
}
