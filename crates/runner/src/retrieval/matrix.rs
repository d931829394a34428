//! Passage-vector matrices on disk: a folder of shards, each a safetensors file holding one
//! tensor `embeddings` `[rows, dim]` (f32 or f16) beside a text file of its passage ids (one per
//! line), and `matrix.json`, the manifest listing the finished shards.
//!
//! ```text
//! DIR/matrix.json            {"dim": 384, "dtype": "f16", "shard_rows": 65536, "shards": [...]}
//!     shard-00000.safetensors, shard-00000.ids
//!     shard-00001.safetensors, shard-00001.ids
//!     .lock                  held by the process writing the matrix
//! ```
//!
//! A shard is written under a temporary name and renamed, and the manifest is rewritten (also by
//! rename) only after both of its files are in place, so a killed writer leaves a matrix whose
//! manifest names only whole shards: [`MatrixWriter::open`] resumes after the last of them and
//! removes the killed writer's temporary files. A writer holds the folder's lock (`DIR/.lock`)
//! while it lives, so a second `corpus embed` or `import` on the same folder is refused.
//! The files open anywhere (`safetensors.numpy.load_file`, `torch`), in the order the shards
//! are listed.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};

use crate::harness::lock::{RunLock, clean_staging};
use crate::harness::results::write_atomic;

/// The manifest's file name.
pub const MANIFEST: &str = "matrix.json";
/// The tensor's name in every shard.
const TENSOR: &str = "embeddings";

/// How vectors are stored (they are always read as f32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum VectorDtype {
    /// 4 bytes a number.
    F32,
    /// 2 bytes a number (IEEE half; inner products lose about 3 significant digits).
    F16,
}

/// One finished shard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardInfo {
    /// The safetensors file, relative to the folder.
    pub file: String,
    /// The ids file, relative to the folder.
    pub ids: String,
    /// Its rows.
    pub rows: usize,
}

/// `matrix.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The vectors' length.
    pub dim: usize,
    /// The storage type.
    pub dtype: VectorDtype,
    /// Rows per shard (the last may hold fewer).
    pub shard_rows: usize,
    /// What made the vectors (the encoder's folder, pooling), for the reader's information.
    #[serde(default)]
    pub source: String,
    /// The finished shards, in order.
    pub shards: Vec<ShardInfo>,
}

impl Manifest {
    /// Rows in all finished shards.
    pub fn rows(&self) -> usize {
        self.shards.iter().map(|s| s.rows).sum()
    }
}

/// A matrix folder opened for reading.
#[derive(Debug, Clone)]
pub struct Matrix {
    dir: PathBuf,
    /// Its manifest.
    pub manifest: Manifest,
}

/// One shard read: its ids and its vectors, row-major `[ids.len(), dim]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Shard {
    /// The passage ids.
    pub ids: Vec<String>,
    /// The vectors as f32.
    pub vectors: Vec<f32>,
}

fn read_manifest(dir: &Path) -> Result<Option<Manifest>> {
    let path = dir.join(MANIFEST);
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let m: Manifest = serde_json::from_str(&text)
        .with_context(|| format!("{}: not a matrix manifest", path.display()))?;
    ensure!(m.dim > 0, "{}: dim must be positive", path.display());
    Ok(Some(m))
}

impl Matrix {
    /// Open the folder `dir`.
    ///
    /// # Errors
    /// No `matrix.json` there, or a malformed one.
    pub fn open(dir: &Path) -> Result<Self> {
        let manifest = read_manifest(dir)?.with_context(|| {
            format!(
                "{} holds no {MANIFEST}: not a passage matrix (write one with `neuronlab corpus embed`)",
                dir.display()
            )
        })?;
        Ok(Self {
            dir: dir.to_path_buf(),
            manifest,
        })
    }

    /// The vectors' length.
    pub fn dim(&self) -> usize {
        self.manifest.dim
    }

    /// All rows.
    pub fn len(&self) -> usize {
        self.manifest.rows()
    }

    /// Whether it holds no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The passage ids of shard `i` alone (its vectors are not read).
    ///
    /// # Errors
    /// A missing ids file, or one whose count disagrees with the manifest.
    pub fn shard_ids(&self, i: usize) -> Result<Vec<String>> {
        let info = &self.manifest.shards[i];
        let ids_path = self.dir.join(&info.ids);
        let text = std::fs::read_to_string(&ids_path)
            .with_context(|| format!("cannot read {}", ids_path.display()))?;
        let ids: Vec<String> = text.lines().map(str::to_string).collect();
        ensure!(
            ids.len() == info.rows,
            "{}: {} ids, the manifest says {} rows",
            ids_path.display(),
            ids.len(),
            info.rows
        );
        Ok(ids)
    }

    /// Read shard `i` (in manifest order).
    ///
    /// # Errors
    /// A missing file, or a shard whose tensor or id count disagrees with the manifest (named).
    pub fn shard(&self, i: usize) -> Result<Shard> {
        let info = &self.manifest.shards[i];
        let path = self.dir.join(&info.file);
        let bytes =
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let file = safetensors::SafeTensors::deserialize(&bytes)
            .with_context(|| format!("{}: not a safetensors file", path.display()))?;
        let t = file
            .tensor(TENSOR)
            .with_context(|| format!("{}: no tensor {TENSOR:?}", path.display()))?;
        let want = [info.rows, self.manifest.dim];
        ensure!(
            t.shape() == want,
            "{}: tensor {TENSOR:?} has shape {:?}, the manifest says {want:?}",
            path.display(),
            t.shape()
        );
        let vectors: Vec<f32> = match (t.dtype(), self.manifest.dtype) {
            (safetensors::Dtype::F32, VectorDtype::F32) => t
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            (safetensors::Dtype::F16, VectorDtype::F16) => t
                .data()
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            (found, want) => bail!(
                "{}: tensor {TENSOR:?} is {found:?}, the manifest says {want:?}",
                path.display()
            ),
        };
        let ids = self.shard_ids(i)?;
        Ok(Shard { ids, vectors })
    }
}

/// Writes a matrix shard by shard, resuming one left unfinished.
#[derive(Debug)]
pub struct MatrixWriter {
    dir: PathBuf,
    manifest: Manifest,
    /// The folder's lock, held while this writer lives: two writers would write every shard
    /// twice.
    _lock: RunLock,
}

impl MatrixWriter {
    /// Create the folder `dir`, or resume the matrix already there (its settings must match).
    ///
    /// # Errors
    /// A matrix there with another `dim`, `dtype` or `shard_rows` (named), or an unwritable
    /// folder.
    pub fn open(
        dir: &Path,
        dim: usize,
        dtype: VectorDtype,
        shard_rows: usize,
        source: &str,
    ) -> Result<Self> {
        ensure!(
            dim > 0 && shard_rows > 0,
            "dim and shard_rows must be positive"
        );
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let Some(lock) = RunLock::try_acquire(dir)? else {
            bail!(
                "{}: another process is writing this matrix (corpus embed or import); let it \
                 finish, or write to another --output",
                dir.display()
            );
        };
        // What a killed writer was writing (a shard of up to hundreds of MB) goes.
        clean_staging(dir, true);
        let manifest = match read_manifest(dir)? {
            Some(m) => {
                for (key, found, want) in [
                    ("dim", m.dim.to_string(), dim.to_string()),
                    ("dtype", format!("{:?}", m.dtype), format!("{dtype:?}")),
                    (
                        "shard_rows",
                        m.shard_rows.to_string(),
                        shard_rows.to_string(),
                    ),
                    ("source", m.source.clone(), source.to_string()),
                ] {
                    ensure!(
                        found == want,
                        "{}: the matrix there has {key} {found}, this run writes {want}; \
                         use another --output or the same settings",
                        dir.join(MANIFEST).display()
                    );
                }
                m
            }
            None => Manifest {
                dim,
                dtype,
                shard_rows,
                source: source.to_string(),
                shards: Vec::new(),
            },
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            manifest,
            _lock: lock,
        })
    }

    /// Rows in the finished shards (a resumed run starts after them).
    pub fn rows(&self) -> usize {
        self.manifest.rows()
    }

    /// The manifest so far.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Write the next shard: `ids` and their vectors, row-major `[ids.len(), dim]`.
    ///
    /// # Errors
    /// A shape that does not fit, an id with a line break, or a file that cannot be written.
    pub fn write_shard(&mut self, ids: &[String], vectors: &[f32]) -> Result<()> {
        let dim = self.manifest.dim;
        ensure!(!ids.is_empty(), "a shard needs at least one passage");
        ensure!(
            vectors.len() == ids.len() * dim,
            "{} vectors for {} ids of dim {dim}",
            vectors.len() / dim.max(1),
            ids.len()
        );
        if let Some(bad) = ids.iter().find(|id| id.contains(['\n', '\r'])) {
            bail!("passage id {bad:?} holds a line break");
        }
        let n = self.manifest.shards.len();
        let (file, ids_file) = (
            format!("shard-{n:05}.safetensors"),
            format!("shard-{n:05}.ids"),
        );
        let (dtype, bytes): (safetensors::Dtype, Vec<u8>) = match self.manifest.dtype {
            VectorDtype::F32 => (
                safetensors::Dtype::F32,
                vectors.iter().flat_map(|x| x.to_le_bytes()).collect(),
            ),
            VectorDtype::F16 => (
                safetensors::Dtype::F16,
                vectors
                    .iter()
                    .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
                    .collect(),
            ),
        };
        let view = safetensors::tensor::TensorView::new(dtype, vec![ids.len(), dim], &bytes)
            .context("a shard tensor")?;
        let data = safetensors::serialize([(TENSOR, view)], None).context("a shard tensor")?;
        write_atomic(&self.dir.join(&file), &data)?;
        let mut text = ids.join("\n");
        text.push('\n');
        write_atomic(&self.dir.join(&ids_file), text.as_bytes())?;
        self.manifest.shards.push(ShardInfo {
            file,
            ids: ids_file,
            rows: ids.len(),
        });
        let json = serde_json::to_string_pretty(&self.manifest).expect("JSON") + "\n";
        write_atomic(&self.dir.join(MANIFEST), json.as_bytes())
    }
}

/// The passage ids of a matrix's source, line by line, refusing a repeated one: a passage
/// twice in the matrix would be ranked twice by every search.
#[derive(Debug, Default)]
pub struct DistinctIds {
    lines: std::collections::HashMap<Box<str>, usize>,
}

impl DistinctIds {
    /// Note `id` from line `line` (1-based) of `source`; an id seen before is an error naming
    /// both lines.
    pub fn note(&mut self, id: &str, line: usize, source: &Path) -> Result<()> {
        if let Some(first) = self.lines.insert(id.into(), line) {
            bail!(
                "{}, line {line}: passage id {id} again (first on line {first}); each passage \
                 needs its own id, or search ranks it twice",
                source.display()
            );
        }
        Ok(())
    }
}
