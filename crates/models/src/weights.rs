//! Checkpoint tensors on the host, read from HF files and checked strictly.
//!
//! Sources: `model.safetensors`, a sharded `model.safetensors.index.json`, or a PyTorch
//! `pytorch_model.bin` (several paper checkpoints ship only that). Every float tensor is cast to
//! f32 on read (F16, BF16 and F64 included). Old BERT checkpoints name LayerNorm parameters
//! `gamma`/`beta`; they are renamed to `weight`/`bias` on read, as `transformers` does.
//!
//! The model takes tensors out by key with [`TensorMap::take`], which checks the shape; what is
//! left at the end is reported by [`TensorMap::finish`], so missing, mis-shaped and unexpected
//! tensors are all errors that name the key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};

use crate::error::{ModelError, Result, io_err};

/// A float tensor on the host, row-major, in checkpoint (HF) layout.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    /// The shape.
    pub shape: Vec<usize>,
    /// The values, row-major.
    pub data: Vec<f32>,
}

impl HostTensor {
    /// A tensor from its parts.
    ///
    /// # Panics
    /// If the number of values does not match the shape.
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Self {
        let numel: usize = shape.iter().product();
        assert_eq!(numel, data.len(), "shape {shape:?} needs {numel} values");
        Self { shape, data }
    }

    /// The transpose of a matrix (`[r, c]` to `[c, r]`).
    pub fn transposed(&self) -> Self {
        assert_eq!(
            self.shape.len(),
            2,
            "transpose needs a matrix, got {:?}",
            self.shape
        );
        let (r, c) = (self.shape[0], self.shape[1]);
        let mut out = vec![0.0; r * c];
        for i in 0..r {
            for j in 0..c {
                out[j * r + i] = self.data[i * c + j];
            }
        }
        Self::new(vec![c, r], out)
    }
}

/// A non-float tensor (an integer buffer such as `embeddings.position_ids`).
#[derive(Debug, Clone, PartialEq)]
pub struct Buffer {
    /// The dtype, as the file names it.
    pub dtype: String,
    /// The shape.
    pub shape: Vec<usize>,
}

/// The tensors of a checkpoint, by HF key.
#[derive(Debug, Default)]
pub struct TensorMap {
    source: PathBuf,
    tensors: BTreeMap<String, HostTensor>,
    buffers: BTreeMap<String, Buffer>,
}

/// File names tried, in order, when a checkpoint directory is given.
pub const CHECKPOINT_FILES: [&str; 3] = [
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
];

impl TensorMap {
    /// An empty map, for building checkpoints in code.
    pub fn new(source: impl Into<PathBuf>) -> Self {
        Self {
            source: source.into(),
            ..Default::default()
        }
    }

    /// Read a checkpoint file, or the first of [`CHECKPOINT_FILES`] found in a directory.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        if path.is_dir() {
            return Self::open(checkpoint_file(path)?);
        }
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let mut map = Self::new(path);
        if name.ends_with(".index.json") {
            map.read_sharded(path)?;
        } else if name.ends_with(".safetensors") {
            map.read_safetensors(path)?;
        } else if name.ends_with(".bin") || name.ends_with(".pt") || name.ends_with(".pth") {
            map.read_pytorch(path)?;
        } else if !path.exists() {
            return Err(ModelError::not_found(path, "a checkpoint file"));
        } else {
            return Err(ModelError::Format {
                path: path.to_path_buf(),
                message: "unknown checkpoint format; expected .safetensors, \
                          .safetensors.index.json or a PyTorch .bin"
                    .into(),
            });
        }
        Ok(map)
    }

    /// The file the tensors came from (used in error messages).
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// Float tensor keys, sorted.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// All tensors (float and buffers) with their shapes, sorted by key.
    pub fn shapes(&self) -> Vec<(String, String, Vec<usize>)> {
        let mut out: Vec<_> = self
            .tensors
            .iter()
            .map(|(k, t)| (k.clone(), "F32".to_string(), t.shape.clone()))
            .chain(
                self.buffers
                    .iter()
                    .map(|(k, b)| (k.clone(), b.dtype.clone(), b.shape.clone())),
            )
            .collect();
        out.sort();
        out
    }

    /// Whether a float tensor is present.
    pub fn contains(&self, key: &str) -> bool {
        self.tensors.contains_key(key)
    }

    /// Add a tensor (used when building checkpoints in code and when saving).
    pub fn insert(&mut self, key: impl Into<String>, tensor: HostTensor) {
        self.tensors.insert(key.into(), tensor);
    }

    /// The float tensors, by key (to split, transform or write them elsewhere).
    pub fn into_tensors(self) -> BTreeMap<String, HostTensor> {
        self.tensors
    }

    /// Take the tensor at `key`, checking that its shape is `expected` (HF layout).
    pub fn take(&mut self, key: &str, expected: &[usize]) -> Result<HostTensor> {
        let tensor = self
            .tensors
            .remove(key)
            .ok_or_else(|| ModelError::MissingTensor {
                source_file: self.source.clone(),
                key: key.to_string(),
                expected: expected.to_vec(),
            })?;
        if tensor.shape != expected {
            return Err(ModelError::ShapeMismatch {
                source_file: self.source.clone(),
                key: key.to_string(),
                expected: expected.to_vec(),
                found: tensor.shape,
            });
        }
        Ok(tensor)
    }

    /// Take the tensor at `key` if present (optional parameters such as a task head).
    pub fn take_optional(&mut self, key: &str, expected: &[usize]) -> Result<Option<HostTensor>> {
        if self.tensors.contains_key(key) {
            self.take(key, expected).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Drop every tensor whose key starts with `prefix`; returns the keys dropped.
    pub fn discard_prefix(&mut self, prefix: &str) -> Vec<String> {
        let keys: Vec<String> = self
            .tensors
            .keys()
            .chain(self.buffers.keys())
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect();
        for k in &keys {
            self.tensors.remove(k);
            self.buffers.remove(k);
        }
        keys
    }

    /// Remove a non-float buffer (such as `embeddings.position_ids`) if present.
    pub fn take_buffer(&mut self, key: &str) -> Option<Buffer> {
        self.buffers.remove(key)
    }

    /// Rename every key that starts with `from` so it starts with `to` instead.
    pub fn rename_prefix(&mut self, from: &str, to: &str) {
        let rename = |k: &String| format!("{to}{}", &k[from.len()..]);
        let keys: Vec<String> = self
            .tensors
            .keys()
            .filter(|k| k.starts_with(from))
            .cloned()
            .collect();
        for k in keys {
            let t = self.tensors.remove(&k).expect("key listed above");
            self.tensors.insert(rename(&k), t);
        }
        let keys: Vec<String> = self
            .buffers
            .keys()
            .filter(|k| k.starts_with(from))
            .cloned()
            .collect();
        for k in keys {
            let b = self.buffers.remove(&k).expect("key listed above");
            self.buffers.insert(rename(&k), b);
        }
    }

    /// Succeed only if every tensor was used.
    pub fn finish(self) -> Result<()> {
        if self.tensors.is_empty() && self.buffers.is_empty() {
            return Ok(());
        }
        let keys = self
            .tensors
            .iter()
            .map(|(k, t)| format!("{k} {:?}", t.shape))
            .chain(
                self.buffers
                    .iter()
                    .map(|(k, b)| format!("{k} {:?} {}", b.shape, b.dtype)),
            )
            .collect();
        Err(ModelError::UnexpectedTensors {
            source_file: self.source,
            keys,
        })
    }

    fn add(&mut self, key: String, tensor: HostTensor) {
        self.tensors.insert(normalize_key(key), tensor);
    }

    fn read_safetensors(&mut self, path: &Path) -> Result<()> {
        let bytes = std::fs::read(path).map_err(io_err(path))?;
        let st = SafeTensors::deserialize(&bytes).map_err(|e| ModelError::Format {
            path: path.to_path_buf(),
            message: format!("not a valid safetensors file: {e}"),
        })?;
        for (key, view) in st.tensors() {
            let shape = view.shape().to_vec();
            let data = view.data();
            let floats = match view.dtype() {
                Dtype::F32 => data
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
                Dtype::F16 => data
                    .chunks_exact(2)
                    .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                    .collect(),
                Dtype::BF16 => data
                    .chunks_exact(2)
                    .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                    .collect(),
                Dtype::F64 => data
                    .chunks_exact(8)
                    .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32)
                    .collect(),
                other => {
                    self.buffers.insert(
                        normalize_key(key),
                        Buffer {
                            dtype: format!("{other:?}"),
                            shape,
                        },
                    );
                    continue;
                }
            };
            self.add(key, HostTensor::new(shape, floats));
        }
        Ok(())
    }

    fn read_sharded(&mut self, index: &Path) -> Result<()> {
        let (weight_map, shards) = read_index(index)?;
        for shard in shards {
            self.read_safetensors(&shard)?;
        }
        for key in weight_map.keys() {
            let key = normalize_key(key.clone());
            if !self.tensors.contains_key(&key) && !self.buffers.contains_key(&key) {
                return Err(ModelError::Format {
                    path: index.to_path_buf(),
                    message: format!("the index lists {key:?} but its shard does not hold it"),
                });
            }
        }
        Ok(())
    }

    fn read_pytorch(&mut self, path: &Path) -> Result<()> {
        use burn::tensor::DType;
        use burn_store::pytorch::PytorchReader;
        if !path.exists() {
            return Err(ModelError::not_found(path, "a checkpoint file"));
        }
        let reader = PytorchReader::new(path).map_err(|e| ModelError::Format {
            path: path.to_path_buf(),
            message: format!("not a readable PyTorch checkpoint: {e}"),
        })?;
        for (key, snapshot) in reader.into_tensors() {
            let shape = snapshot.shape.to_vec();
            match snapshot.dtype {
                DType::F32 | DType::F16 | DType::BF16 | DType::F64 => {
                    let data = snapshot.to_data().map_err(|e| ModelError::Format {
                        path: path.to_path_buf(),
                        message: format!("tensor {key:?}: {e:?}"),
                    })?;
                    let floats = data.convert::<f32>().into_vec::<f32>().map_err(|e| {
                        ModelError::Format {
                            path: path.to_path_buf(),
                            message: format!("tensor {key:?}: {e:?}"),
                        }
                    })?;
                    self.add(key, HostTensor::new(shape, floats));
                }
                other => {
                    self.buffers.insert(
                        normalize_key(key),
                        Buffer {
                            dtype: format!("{other:?}"),
                            shape,
                        },
                    );
                }
            }
        }
        Ok(())
    }

    /// Write the float tensors as one safetensors file (f32).
    pub fn write_safetensors(&self, path: &Path) -> Result<()> {
        let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = self
            .tensors
            .iter()
            .map(|(k, t)| {
                let b: Vec<u8> = t.data.iter().flat_map(|x| x.to_le_bytes()).collect();
                (k.clone(), b, t.shape.clone())
            })
            .collect();
        let views = bytes
            .iter()
            .map(|(k, b, s)| {
                safetensors::tensor::TensorView::new(Dtype::F32, s.clone(), b)
                    .map(|v| (k.clone(), v))
            })
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| ModelError::Format {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        let mut meta = std::collections::HashMap::new();
        meta.insert("format".to_string(), "pt".to_string());
        safetensors::serialize_to_file(views, Some(meta), path).map_err(|e| ModelError::Format {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }
}

/// `LayerNorm.gamma` / `LayerNorm.beta` (TF-converted BERT) to `weight` / `bias`.
/// The first of [`CHECKPOINT_FILES`] in `dir`.
fn checkpoint_file(dir: &Path) -> Result<PathBuf> {
    CHECKPOINT_FILES
        .iter()
        .map(|name| dir.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| ModelError::NoCheckpoint {
            dir: dir.to_path_buf(),
            expected: CHECKPOINT_FILES.join(", "),
        })
}

/// A shard index (`model.safetensors.index.json`): its key → shard map, and the shard files
/// (each once, sorted).
fn read_index(index: &Path) -> Result<(BTreeMap<String, String>, Vec<PathBuf>)> {
    #[derive(serde::Deserialize)]
    struct Index {
        weight_map: BTreeMap<String, String>,
    }
    let text = std::fs::read_to_string(index).map_err(io_err(index))?;
    let parsed: Index = serde_json::from_str(&text).map_err(|e| ModelError::Format {
        path: index.to_path_buf(),
        message: format!("invalid shard index: {e}"),
    })?;
    let dir = index.parent().unwrap_or(Path::new("."));
    let mut shards: Vec<PathBuf> = parsed.weight_map.values().map(|s| dir.join(s)).collect();
    shards.sort();
    shards.dedup();
    Ok((parsed.weight_map, shards))
}

/// The shapes of a checkpoint's tensors (HF keys, as [`TensorMap`] names them) from the
/// safetensors headers alone, without reading the data: for checks before anything runs. A
/// header that does not parse, a tensor whose byte range does not fit its dtype and shape, or a
/// file shorter or longer than its header says (a truncated download) is an error naming the
/// file. `None` for a PyTorch `.bin`, whose layout has no header to read cheaply.
pub fn header_shapes(path: &Path) -> Result<Option<BTreeMap<String, Vec<usize>>>> {
    let file = if path.is_dir() {
        checkpoint_file(path)?
    } else {
        path.to_path_buf()
    };
    let name = file
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let mut shapes = BTreeMap::new();
    if name.ends_with(".index.json") {
        for shard in read_index(&file)?.1 {
            shapes.extend(safetensors_header(&shard)?);
        }
    } else if name.ends_with(".safetensors") {
        shapes = safetensors_header(&file)?;
    } else {
        return Ok(None);
    }
    Ok(Some(shapes))
}

/// The tensor shapes of one safetensors file from its header, checked against the file's size.
fn safetensors_header(path: &Path) -> Result<BTreeMap<String, Vec<usize>>> {
    use std::io::Read;
    let bad = |message: String| ModelError::Format {
        path: path.to_path_buf(),
        message,
    };
    let mut f = std::fs::File::open(path).map_err(io_err(path))?;
    let size = f.metadata().map_err(io_err(path))?.len();
    let mut n = [0u8; 8];
    f.read_exact(&mut n)
        .map_err(|_| bad(format!("not a safetensors file: {size} bytes, no header")))?;
    let n = u64::from_le_bytes(n);
    if n > size.saturating_sub(8) || n > 100_000_000 {
        return Err(bad(format!(
            "not a safetensors file: a header of {n} bytes in a file of {size}"
        )));
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header).map_err(io_err(path))?;
    let header: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(&header).map_err(|e| {
            bad(format!(
                "not a safetensors file: its header is not JSON ({e})"
            ))
        })?;
    let mut shapes = BTreeMap::new();
    let mut end = 0u64;
    for (key, info) in header {
        if key == "__metadata__" {
            continue;
        }
        let shape: Option<Vec<usize>> = info["shape"]
            .as_array()
            .and_then(|a| a.iter().map(|d| d.as_u64().map(|d| d as usize)).collect());
        let offsets: Option<Vec<u64>> = info["data_offsets"]
            .as_array()
            .and_then(|a| a.iter().map(|d| d.as_u64()).collect());
        let width = match info["dtype"].as_str() {
            Some("F64" | "I64" | "U64") => Some(8),
            Some("F32" | "I32" | "U32") => Some(4),
            Some("F16" | "BF16" | "I16" | "U16") => Some(2),
            Some("I8" | "U8" | "BOOL" | "F8_E4M3" | "F8_E5M2") => Some(1),
            _ => None,
        };
        let (Some(shape), Some(offsets), Some(width)) = (shape, offsets, width) else {
            return Err(bad(format!(
                "the header's entry for {key:?} is malformed: {info}"
            )));
        };
        let [from, to] = offsets[..] else {
            return Err(bad(format!(
                "the header's entry for {key:?} is malformed: {info}"
            )));
        };
        let bytes = shape.iter().product::<usize>() as u64 * width;
        if to < from || to - from != bytes {
            return Err(bad(format!(
                "tensor {key:?} of shape {shape:?} needs {bytes} bytes, its range holds {}",
                to.saturating_sub(from)
            )));
        }
        end = end.max(to);
        shapes.insert(normalize_key(key), shape);
    }
    if 8 + n + end != size {
        return Err(bad(format!(
            "the header describes {} bytes, the file has {size} (a truncated or corrupt file)",
            8 + n + end
        )));
    }
    Ok(shapes)
}

fn normalize_key(key: String) -> String {
    if let Some(stem) = key.strip_suffix(".gamma") {
        format!("{stem}.weight")
    } else if let Some(stem) = key.strip_suffix(".beta") {
        format!("{stem}.bias")
    } else {
        key
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpose_moves_elements() {
        let t = HostTensor::new(vec![2, 3], vec![0., 1., 2., 3., 4., 5.]);
        assert_eq!(
            t.transposed(),
            HostTensor::new(vec![3, 2], vec![0., 3., 1., 4., 2., 5.])
        );
    }

    #[test]
    fn take_checks_shape_and_finish_reports_leftovers() {
        let mut map = TensorMap::new("x.safetensors");
        map.insert("a.weight", HostTensor::new(vec![2], vec![1., 2.]));
        map.insert("b.weight", HostTensor::new(vec![1], vec![1.]));
        let err = map.take("a.weight", &[3]).unwrap_err().to_string();
        assert!(
            err.contains("\"a.weight\" has shape [2], the model expects [3]"),
            "{err}"
        );
        let err = map.take("c.weight", &[3]).unwrap_err().to_string();
        assert!(
            err.contains("missing tensor \"c.weight\" (expected shape [3])"),
            "{err}"
        );
        let err = map.finish().unwrap_err().to_string();
        assert!(err.contains("b.weight [1]"), "{err}");
    }

    #[test]
    fn legacy_layer_norm_names_are_renamed() {
        assert_eq!(
            normalize_key("x.LayerNorm.gamma".into()),
            "x.LayerNorm.weight"
        );
        assert_eq!(normalize_key("x.LayerNorm.beta".into()), "x.LayerNorm.bias");
    }
}
